"""incident-investigation end to end against the full sandbox: real Prometheus, Alertmanager, log store."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from runbooks import alerts, kube, metrics, rollouts
from runbooks_sandbox import promgen, stack
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import missing_binaries

from helpers import wait_for

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600),
              pytest.mark.skipif(bool(missing_binaries()), reason=f"not installed: {missing_binaries()}")]
ROOT = Path(__file__).resolve().parents[1]
ASSERTED_ALERTS = {"KubePodCrashLooping", "NginxIngressHigh5xxRatio"}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default scenario with Prometheus, Alertmanager and the log store on free ports."""
    box = Sandbox(tmp_path_factory.mktemp("incident-sandbox"), "default", tick=1.0)
    stack.attach(box, stack.StackOptions(certificates=False))
    box.start()
    try:
        # the tests assert these alerts: wait until Alertmanager holds them (rules evaluate on their own
        # schedule, Alertmanager shows an alert after its group_wait; a loaded machine is slower)
        wait_for(lambda: ASSERTED_ALERTS <= {a["alertname"] for a in alerts.alert_dicts(box.urls["alertmanager"])},
                 timeout=300, interval=1, what=f"{sorted(ASSERTED_ALERTS)} in Alertmanager")
        yield box
    finally:
        box.stop()


def dead_url() -> str:
    """A URL on a port nothing listens on (a data source that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def project(full, tmp_path_factory):
    root = tmp_path_factory.mktemp("incident-project")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "incident-investigation.ipynb").write_bytes(
        (ROOT / "notebooks" / "incident-investigation.ipynb").read_bytes())
    (root / "parameters" / "sandbox").mkdir(parents=True)
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(stack.env_settings(full)))
    (root / "outputs").mkdir()
    return root


def run(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, Path | None]:
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run",
                           "incident-investigation", "--env", "sandbox", "--no-progress", *args],
                          capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    runs = sorted((root / "outputs" / "sandbox" / "incident-investigation").glob("*/summary.json"),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        return proc, {}, None
    return proc, json.loads(runs[-1].read_text()), runs[-1].parent


def explain(proc: subprocess.CompletedProcess, summary: dict) -> str:
    """What a failed assertion shows: exit code, the run's error (cell, exception), stderr and stdout."""
    return (f"exit {proc.returncode}; error: {json.dumps(summary.get('error'))}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}\n--- stdout ---\n{proc.stdout[-2000:]}")


def onset_context(box: Sandbox, planted: datetime) -> str:
    """What a wrong onset shows beside the evidence: the onset the metric history was generated with, and
    checkout's error ratio and p99 latency from Prometheus around the planted one (the window's step)."""
    obs = next((a.obs for a in box.addons if isinstance(a, stack.ObservabilityAddon)), None)
    generated = [(i.workload, i.rollout.isoformat(), i.onset.isoformat()) for i in (obs.model.incidents if obs else [])]
    lines = [f"history generated with incidents {generated}, ending {obs.model.end if obs else None}"]
    for name, extra in (("error_ratio", {}), ("latency_quantile", {"quantile": 0.99})):
        df = metrics.signal(box.urls["prometheus"], name, planted - timedelta(minutes=6),
                            planted + timedelta(minutes=8), 15, namespace="shop", service="checkout", **extra)
        pairs = zip(df["timestamp"], df["value"], strict=True)
        lines.append(f"{name}: " + " ".join(f"{t:%H:%M:%S}={v:.4g}" for t, v in pairs))
    return "\n".join(lines)


def by_id(summary: dict) -> dict[str, dict]:
    return {f["id"]: f for f in summary["findings"]}


def test_checkout_incident_is_explained(full, project):
    cluster = kube.connect(str(full.kubeconfig), "sandbox")
    rollout = rollouts.rollout_history(cluster, "shop", "checkout")[-1]["created"]
    proc, summary, run_dir = run(project, "-p", "namespace", "shop", "-p", "service", "checkout")
    assert proc.returncode == 1, explain(proc, summary)
    found = by_id(summary)
    incident = found["incident/shop/checkout"]
    onset = datetime.fromisoformat(incident["evidence"]["anomaly"]["start"])
    planted = rollout + timedelta(seconds=promgen.INCIDENT_DELAY)  # when the scenario's error spike starts
    assert abs(onset - planted) <= timedelta(minutes=2), \
        f"onset {onset}, planted {planted}, evidence {incident['evidence']}\n{onset_context(full, planted)}"
    causes = sorted((f for f in summary["findings"] if f["id"].startswith("likely-cause/")),
                    key=lambda f: int(f["id"].split("/")[1]))
    assert causes[0]["id"] == "likely-cause/1/bad-rollout" and "revision 7" in causes[0]["title"]
    assert "OOMKilled" in causes[0]["title"]
    assert any("could not connect to database" in c["title"] for c in causes)
    crash = [f for f in summary["findings"] if f["id"].startswith("pod-crashloopbackoff/shop/checkout-")]
    assert crash and "OOMKilled" in crash[0]["title"], summary["findings"]
    firing = {i.split("/")[1] for i in found if i.startswith("alert/")}
    assert {"KubePodCrashLooping", "NginxIngressHigh5xxRatio"} <= firing
    assert all(s["state"] == "ok" for s in summary["data_sources"].values())
    html = (run_dir / "report.html").read_text()
    assert len(re.findall(r"class=[\"']kr-plot[\"']", html)) >= 4  # signals, saturation, timeline, logs
    assert "Timeline" in html and "Likely causes" in html


def test_healthy_service_reports_no_incident(project):
    proc, summary, _ = run(project, "-p", "namespace", "shop", "-p", "service", "cart")
    assert proc.returncode == 0, explain(proc, summary)
    assert by_id(summary)["incident/shop/cart"]["severity"] == "ok"
    assert not [f for f in summary["findings"] if f["severity"] in ("warning", "critical")]


@pytest.mark.parametrize("source, setting", [("prometheus", "prometheus_url"), ("logs", "elasticsearch_url")])
def test_a_source_that_is_down_degrades_only_its_section(project, source, setting):
    proc, summary, run_dir = run(project, "-p", setting, dead_url())
    assert proc.returncode in (0, 1), explain(proc, summary)  # completed, not crashed
    assert summary["data_sources"][source]["state"] == "down"
    assert by_id(summary)[f"data-source-down/{source}"]["severity"] == "warning"
    others = {k: v["state"] for k, v in summary["data_sources"].items() if k != source}
    assert set(others.values()) == {"ok"}
    html = (run_dir / "report.html").read_text()
    assert f"{source} is unavailable" in html
    assert "pod-crashloopbackoff" in html  # the Kubernetes sections still rendered


def test_silence_is_planned_then_applied_and_audited(full, project):
    am = full.urls["alertmanager"]
    proc, summary, _ = run(project, "-p", "mitigation", "silence", "-p", "alert_name", "KubePodCrashLooping")
    assert proc.returncode == 1 and "plan" in summary, explain(proc, summary)
    plan_id = summary["plan"]["id"]
    assert summary["plan"]["applied"] is False and summary["plan"]["changes"][0]["target"] == "alertmanager"
    assert not alerts.silence_dicts(am, state="active")  # the dry run changed nothing
    proc, summary, run_dir = run(project, "-p", "mitigation", "silence", "-p", "alert_name",
                                 "KubePodCrashLooping", "--approve", plan_id)
    assert proc.returncode == 1 and summary["plan"]["applied"] is True, explain(proc, summary)
    assert by_id(summary)["mitigation/silence/shop/checkout"]["severity"] == "ok"
    active = alerts.silence_dicts(am, state="active")
    assert len(active) == 1
    states = {a["alertname"]: a["state"] for a in alerts.alert_dicts(am, ['namespace="shop"'])}
    assert states["KubePodCrashLooping"] == "suppressed"
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["change"]["kind"] == "Silence" and audit[0]["result"] == "applied"
    # a stale approval applies nothing
    proc, _, _ = run(project, "-p", "mitigation", "silence", "-p", "alert_name", "KubePodCrashLooping",
                     "-p", "silence_duration", "3h", "--approve", plan_id)
    assert proc.returncode == 2 and len(alerts.silence_dicts(am, state="active")) == 1


def test_rollback_is_planned_then_applied_and_audited(full, project):
    cluster = kube.connect(str(full.kubeconfig), "sandbox")
    proc, summary, _ = run(project, "-p", "mitigation", "rollback")
    assert proc.returncode == 1 and "plan" in summary, explain(proc, summary)
    plan = summary["plan"]
    assert plan["applied"] is False and plan["changes"][0]["precondition"]["to_revision"] == 6
    image = kube.get_object(cluster, "deployments", "shop", "checkout")["spec"]["template"]["spec"]["containers"][0]
    assert image["image"].endswith(":1.9.0")  # the dry run changed nothing
    # verification waits for the rollout (its timeout is not part of the plan id: it changes what the
    # run reports, not what is applied); a loaded machine rolls out slower than the default allows for
    proc, summary, run_dir = run(project, "-p", "mitigation", "rollback", "-p", "verify_timeout_seconds", "600",
                                 "--approve", plan["id"])
    assert proc.returncode == 1 and summary["plan"]["applied"] is True, explain(proc, summary)
    d = kube.get_object(cluster, "deployments", "shop", "checkout")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.8.2")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "8"  # rev 6's template, re-rolled
    assert by_id(summary)["mitigation/rollback/shop/checkout"]["severity"] == "ok"
    pods = [f for f in summary["findings"] if f["id"].startswith("pod-crashloopbackoff/shop/checkout-")]
    assert pods and all(f["severity"] == "ok" and f["evidence"]["resolved_by_plan"] == plan["id"] for f in pods), \
        summary["findings"]
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["change"]["resource"] == "Deployment/shop/checkout" and audit[0]["result"] == "applied"
    assert (run_dir / "backups" / "Deployment_shop_checkout.json").exists()
