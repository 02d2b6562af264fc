"""`runbooks serve` fed by the sandbox's real Alertmanager.

The sandbox's Alertmanager is configured with a webhook receiver pointing at `runbooks serve`
(short group_wait/group_interval/repeat_interval so that it repeats itself quickly), and the
server posts what it does to a local receiver. Every wait is for the exact condition asserted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml

from runbooks_sandbox import stack
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import missing_binaries

from serve_helpers import TOKEN, Receiver, Serve, free_port

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(900),
              pytest.mark.skipif(bool(missing_binaries()), reason=f"not installed: {missing_binaries()}")]
ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 2
QUEUE = 4
ROUTES = {"routes": [
    {"name": "crash", "matchers": ['alertname="KubePodCrashLooping"', 'namespace="shop"'],
     "runbook": "incident-investigation",
     "parameters": {"namespace": {"label": "namespace"}, "service": {"workload": ["deployment", "pod"]},
                    "alert_name": {"label": "alertname"}}},
    {"name": "test-alerts", "matchers": ['alertname=~"ServeBurst|ServeResolved"'], "runbook": "trivial",
     "parameters": {"greeting": {"label": "instance"}}},
]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sandbox + Prometheus + Alertmanager → runbooks serve → a local receiver."""
    receiver = Receiver()
    port = free_port()
    box = Sandbox(tmp_path_factory.mktemp("serve-sandbox"), "default", tick=1.0)
    stack.attach(box, stack.StackOptions(
        certificates=False, alert_webhook=f"http://127.0.0.1:{port}/alertmanager", alert_webhook_token=TOKEN,
        alert_timing={"group_wait": "1s", "group_interval": "2s", "repeat_interval": "4s"}))
    box.start()
    root = tmp_path_factory.mktemp("serve-project")
    (root / "notebooks").mkdir()
    for src in (ROOT / "notebooks" / "incident-investigation.ipynb", ROOT / "tests" / "fixtures" / "notebooks" / "trivial.ipynb"):
        (root / "notebooks" / src.name).write_bytes(src.read_bytes())
    (root / "parameters" / "sandbox").mkdir(parents=True)
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(stack.env_settings(box)))
    (root / "outputs").mkdir()
    routes_file = root / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(ROUTES))
    server = None
    try:
        server = Serve(root, routes_file, receiver, "--concurrency", str(CONCURRENCY), "--queue-size", str(QUEUE),
                       port=port)
        yield box, server, receiver, root
    finally:
        if server is not None:
            server.stop()
        box.stop()
        receiver.stop()


def post_alerts(box: Sandbox, alerts: list[dict]) -> None:
    resp = requests.post(f"{box.urls['alertmanager']}/api/v2/alerts", json=alerts, timeout=10)
    assert resp.status_code == 200, resp.text


def test_a_firing_group_starts_exactly_one_investigation(world):
    box, server, receiver, root = world
    [message] = receiver.wait_for(lambda m: m.get("event") == "run" and m.get("runbook") == "incident-investigation",
                                  600)
    assert "for shop/checkout" in message["text"] and message["exit_code"] == 1, message
    summary = json.loads((Path(message["run_dir"]) / "summary.json").read_text())
    assert summary["parameters"]["namespace"] == "shop" and summary["parameters"]["service"] == "checkout"
    assert summary["parameters"]["alert_name"] == "KubePodCrashLooping"
    assert summary["parameters"]["dry_run"] is True
    assert (Path(message["run_dir"]) / "report.html").is_file()
    # the run posts its summary just before its process ends
    jobs = server.wait_jobs(lambda a: all(j["state"] == "done" for j in a["jobs"]
                                          if j["runbook"] == "incident-investigation"), 60)
    [job] = [j for j in jobs["jobs"] if j["runbook"] == "incident-investigation"]
    assert job["thread"] == message["thread"] and job["result"] == "findings"
    # Alertmanager keeps repeating the group (repeat_interval 4s): three more notifications, no new run
    seen = jobs["groups"][job["thread"]]["notifications"]
    later = server.wait_jobs(lambda a: a["groups"][job["thread"]]["notifications"] >= seen + 3, 120)
    assert later["groups"][job["thread"]]["alertnames"] == ["KubePodCrashLooping"]
    assert [j["id"] for j in later["jobs"] if j["runbook"] == "incident-investigation"] == [job["id"]]
    assert len(list((root / "outputs" / "sandbox" / "incident-investigation").glob("*/summary.json"))) == 1
    assert 'runbooks_serve_runs_total{result="findings",runbook="incident-investigation"} 1.0' in server.metrics()


def test_a_resolved_notification_closes_the_loop_and_runs_nothing(world):
    box, server, receiver, root = world
    now = datetime.now(UTC)
    labels = {"alertname": "ServeResolved", "namespace": "serve-test", "instance": "resolved-1"}
    post_alerts(box, [{"labels": labels, "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}])
    done = server.wait_jobs(lambda a: any(j["parameters"].get("greeting") == "resolved-1" and j["state"] == "done"
                                          for j in a["jobs"]), 300)
    [job] = [j for j in done["jobs"] if j["parameters"].get("greeting") == "resolved-1"]
    post_alerts(box, [{"labels": labels, "startsAt": now.isoformat(),
                       "endsAt": datetime.now(UTC).isoformat()}])
    [resolved] = receiver.wait_for(lambda m: m.get("event") == "resolved" and m.get("thread") == job["thread"], 120)
    assert "ServeResolved" in resolved["text"] and "no run started" in resolved["text"]
    after = server.jobs()
    assert after["groups"][job["thread"]]["status"] == "resolved"
    assert [j["id"] for j in after["jobs"] if j["parameters"].get("greeting") == "resolved-1"] == [job["id"]]


def max_overlap(jobs: list[dict]) -> int:
    edges = sorted([(j["started"], 1) for j in jobs] + [(j["ended"], -1) for j in jobs], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_a_burst_of_50_alerts_is_bounded_and_none_is_lost(world):
    box, server, receiver, root = world
    now = datetime.now(UTC)
    names = [f"burst-{i:02d}" for i in range(50)]
    post_alerts(box, [{"labels": {"alertname": "ServeBurst", "namespace": "serve-test", "instance": name},
                       "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
                      for name in names])

    def burst(answer: dict) -> list[dict]:
        return [j for j in answer["jobs"] if j["alertname"] == "ServeBurst"]

    done = server.wait_jobs(lambda a: len([j for j in burst(a) if j["state"] == "done"]) >= 50, 800)
    jobs = burst(done)
    assert sorted(j["parameters"]["greeting"] for j in jobs) == names  # each exactly once
    assert all(j["result"] == "ok" for j in jobs), [j for j in jobs if j["result"] != "ok"]
    every = [j for j in done["jobs"] if j["started"] is not None]
    assert max_overlap(every) <= CONCURRENCY
    runs = list((root / "outputs" / "sandbox" / "trivial").glob("*/summary.json"))
    greetings = [json.loads(p.read_text())["parameters"]["greeting"] for p in runs]
    assert sorted(g for g in greetings if g.startswith("burst-")) == names
    metrics = server.metrics()
    assert 'runbooks_serve_requests_total{code="503",path="/alertmanager"}' in metrics  # the queue filled up
    threads = {j["thread"] for j in jobs}
    posted = receiver.wait_for(lambda m: m.get("event") == "run" and m.get("thread") in threads, 60, count=50)
    assert len(posted) == 50 and all(m["run_status"] == "ok" for m in posted)
