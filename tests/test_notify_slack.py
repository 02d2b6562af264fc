"""Notifications: Slack Block Kit inside Slack's limits, the Alertmanager-shaped webhook, noise
control, retries after 429 and no secret in any message; sent by the real slack_sdk and requests
clients to a local HTTP receiver, and end to end through `runbooks run`."""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from runbooks import notify, serve
from runbooks.cli import main
from runbooks.errors import InvalidInput, Unavailable

from helpers import HttpReceiver

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def receiver():
    box = HttpReceiver()
    yield box
    box.stop()


def summary(status="findings", counts=None, findings=None, **extra):
    counts = {"ok": 0, "info": 0, "warning": 2, "critical": 1, **(counts or {})}
    base = {"runbook": "cluster-health", "env": "prod", "run_id": "20260101T000000Z",
            "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:01:00Z", "status": status,
            "exit_code": {"ok": 0, "findings": 1}.get(status, 3), "kube_context": "prod-admin",
            "server": "https://10.0.0.1:6443", "counts": counts, "parameters": {}, "plan": None,
            "findings": findings if findings is not None else [
                {"severity": "critical", "title": "checkout is crash-looping", "resource": "Deployment/shop/checkout",
                 "detail": "OOMKilled 12 times"},
                {"severity": "warning", "title": "PVC nearly full", "resource": "PersistentVolumeClaim/db/data"},
                {"severity": "warning", "title": "no limits", "resource": "Deployment/web/www"}],
            "report": "report.html", "error": None}
    base.update(extra)
    return base


def check_limits(body):
    blocks = body["blocks"]
    assert 0 < len(blocks) <= notify.SLACK_MAX_BLOCKS
    for block in blocks:
        assert block["type"] in ("header", "section", "divider", "context", "actions")
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "context":
            assert all(len(e["text"]) <= 2000 for e in block["elements"])
    assert len(body["text"]) <= 3000


# ---- unit: message shapes ------------------------------------------------------------


def test_block_kit_message_has_status_environment_counts_findings_and_the_report_link():
    message = notify.run_message(summary(), "s3://reports/prod/cluster-health/20260101T000000Z",
                                 report_url="https://reports.example.org/prod/cluster-health/x/report.html")
    body = message.slack(secrets=[])
    check_limits(body)
    header = body["blocks"][0]["text"]["text"]
    assert header == "cluster-health on prod: findings"
    fields = " ".join(f["text"] for b in body["blocks"] for f in b.get("fields", []))
    assert "*Environment*\nprod" in fields and "prod-admin (https://10.0.0.1:6443)" in fields
    assert "1 critical" in fields and "2 warning" in fields
    texts = json.dumps(body["blocks"])
    assert "checkout is crash-looping" in texts and "`Deployment/shop/checkout`" in texts
    buttons = [b["accessory"] for b in body["blocks"] if "accessory" in b]
    assert buttons == [{"type": "button", "text": {"type": "plain_text", "text": "Report"},
                        "url": "https://reports.example.org/prod/cluster-health/x/report.html"}]


def test_block_kit_stays_inside_slack_limits_whatever_the_findings():
    huge = [{"severity": ["critical", "warning", "info"][i % 3], "title": "T<&>" * 900,
             "resource": "Pod/ns/" + "p" * 5000, "detail": "&<>" * 4000} for i in range(500)]
    s = summary(findings=huge, counts={"critical": 167, "warning": 167, "info": 166},
                runbook="r" * 400, env="e" * 300, kube_context="c" * 3000,
                error={"message": "boom & <bang> " * 1000},
                plan={"id": "abcdef012345", "changes": [{}] * 3, "applied": False})
    message = notify.run_message(s, None, report_url="https://reports.example.org/" + "x" * 2900, limit=400)
    body = message.slack(secrets=[])
    check_limits(body)
    text = json.dumps(body)
    assert "more finding(s) in the report" in text
    for block in body["blocks"]:  # escaping never leaves half an entity behind a cut
        for t in [block.get("text", {}).get("text", "")] + [f["text"] for f in block.get("fields", [])]:
            assert not t.rstrip("…").endswith(("&", "&a", "&am", "&l", "&g")), t[-10:]
            assert "<" not in t.replace("<https://", "") or block.get("accessory")


def test_webhook_document_is_alertmanager_shaped_and_serve_accepts_it():
    firing = notify.run_message(summary(), "/runs/x", thread="t-1").payload(secrets=[])
    jsonschema.Draft202012Validator(serve.WEBHOOK_SCHEMA).validate(firing)
    assert firing["version"] == "4" and firing["status"] == "firing" and firing["receiver"] == "kube-runbooks"
    assert firing["groupLabels"] == {"runbook": "cluster-health", "env": "prod"}
    assert firing["commonLabels"] == {"alertname": "RunbookFindings", "runbook": "cluster-health", "env": "prod"}
    by_severity = {a["labels"]["severity"]: a for a in firing["alerts"]}
    assert set(by_severity) == {"critical", "warning"}
    critical = by_severity["critical"]
    assert critical["status"] == "firing" and critical["endsAt"] == "0001-01-01T00:00:00Z"
    assert critical["startsAt"] == "2026-01-01T00:00:00Z" and len(critical["fingerprint"]) == 16
    assert critical["annotations"]["summary"] == "1 critical finding(s) from cluster-health on prod"
    assert "checkout is crash-looping [Deployment/shop/checkout]" in critical["annotations"]["description"]
    # what `runbooks serve` and its receivers read stays at the top level
    assert firing["event"] == "run" and firing["thread"] == "t-1" and firing["run_status"] == "findings"
    assert firing["exit_code"] == 1 and firing["findings"][0]["title"] == "checkout is crash-looping"

    resolved = notify.run_message(summary("ok", counts={"critical": 0, "warning": 0}, findings=[]), None).payload(secrets=[])
    jsonschema.Draft202012Validator(serve.WEBHOOK_SCHEMA).validate(resolved)
    assert resolved["status"] == "resolved"
    assert {(a["labels"]["severity"], a["status"], a["endsAt"]) for a in resolved["alerts"]} == {
        ("critical", "resolved", "2026-01-01T00:01:00Z"), ("warning", "resolved", "2026-01-01T00:01:00Z")}

    failed = notify.run_message(summary("failed", error={"message": "cell 3 raised KeyError"}), None).payload(secrets=[])
    assert failed["status"] == "firing"
    assert [a["labels"]["alertname"] for a in failed["alerts"]][0] == "RunbookFailed"


@pytest.mark.parametrize("on, minimum, now, before, send", [
    ("always", "warning", summary("ok", counts={"critical": 0, "warning": 0}), None, True),
    ("severity", "warning", summary("ok", counts={"critical": 0, "warning": 0}), None, False),
    ("severity", "warning", summary("findings", counts={"critical": 0, "warning": 2}), None, True),
    ("severity", "critical", summary("findings", counts={"critical": 0, "warning": 2}), None, False),
    ("severity", "critical", summary("failed"), None, True),
    ("change", "warning", summary(), None, True),
    ("change", "warning", summary("ok", counts={"critical": 0, "warning": 0}), None, False),
    ("change", "warning", summary(), summary(), False),
    ("change", "warning", summary(counts={"critical": 0}), summary(), True),
    ("change", "critical", summary(counts={"critical": 0}), summary(counts={"critical": 0, "warning": 9}), False),
    ("change", "warning", summary("ok", counts={"critical": 0, "warning": 0}), summary(), True),
    ("change", "warning", summary("failed"), summary(), True),
])
def test_noise_control(on, minimum, now, before, send):
    decided, why = notify.decide(now, before, on, minimum)
    assert decided is send, why


def test_settings_take_urls_from_the_environment_only():
    with pytest.raises(InvalidInput, match=r"RUNBOOKS_SLACK_WEBHOOK_URL"):
        notify.Settings.from_env(["slack"], environ={})
    with pytest.raises(InvalidInput, match=r"must be an http:// or https:// URL"):
        notify.Settings.from_env(["webhook"], environ={"RUNBOOKS_WEBHOOK_URL": "ftp://x"})
    with pytest.raises(InvalidInput, match=r"--notify-on 'sometimes' is not one of always, change, severity"):
        notify.Settings.from_env([], on="sometimes")
    settings = notify.Settings.from_env(["slack", "webhook", "slack"], environ={
        "RUNBOOKS_SLACK_WEBHOOK_URL": "https://hooks.example/services/T0/B0/abc", "RUNBOOKS_WEBHOOK_URL": "http://x/h"})
    assert settings.kinds == ("slack", "webhook") and "abc" not in repr(settings)


# ---- sending with the real clients ---------------------------------------------------


def test_slack_429_is_retried_after_retry_after(receiver):
    receiver.replies = [(429, {"Retry-After": "1"}, "rate_limited")]
    notify.post_slack(f"{receiver.base}/services/T0/B0/x", notify.run_message(summary(), None), secrets=[])
    assert [r["status"] for r in receiver.requests] == [429, 200]
    first, second = receiver.requests
    assert first["json"] == second["json"] and second["at"] - first["at"] >= 1.0
    assert first["headers"]["Content-Type"].startswith("application/json")
    check_limits(second["json"])


def test_slack_gives_up_on_an_answer_it_cannot_wait_for(receiver):
    receiver.replies = [(429, {"Retry-After": "3600"}, "rate_limited")]
    with pytest.raises(Unavailable, match=r"Slack answered 429"):
        notify.post_slack(f"{receiver.base}/services/T0/B0/x", notify.run_message(summary(), None), secrets=[])
    assert len(receiver.requests) == 1
    receiver.replies = [(404, {}, "no_service")]
    with pytest.raises(Unavailable, match=r"Slack answered 404: no_service") as err:
        notify.post_slack(f"{receiver.base}/services/T0/B0/hidden", notify.run_message(summary(), None), secrets=[])
    assert "hidden" not in str(err.value)


def test_a_secret_in_a_finding_never_reaches_the_receiver(receiver, monkeypatch):
    token = "s3cr3t-" + "z" * 24
    monkeypatch.setenv("KR_TEST_API_TOKEN", token)
    hook = f"{receiver.base}/services/T0/B0/hooksecret123"
    monkeypatch.setenv("RUNBOOKS_SLACK_WEBHOOK_URL", hook)
    monkeypatch.setenv("RUNBOOKS_WEBHOOK_URL", f"{receiver.base}/hook")
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlLXBsYW50ZWQ"
    planted = [{"severity": "critical", "title": f"leaky {token}", "resource": "Secret/a/b",
                "detail": ("x" * 290) + token + f" {jwt} {hook} " + base64.b64encode(token.encode()).decode()}]
    settings = notify.Settings.from_env(["slack", "webhook"])
    results = settings.send(notify.run_message(summary(findings=planted), None))
    assert results == [{"kind": "slack", "sent": True}, {"kind": "webhook", "sent": True}]
    raw = b"".join(r["raw"] for r in receiver.requests).decode()
    for value in (token, jwt, "hooksecret123", base64.b64encode(token.encode()).decode()[:20]):
        assert value not in raw
    assert "<redacted>" in raw


# ---- end to end through `runbooks run` -----------------------------------------------


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "parameters" / "test").mkdir(parents=True)
    (root / "notebooks").mkdir()
    return root


def invoke(project, *args, env=None):
    return CliRunner().invoke(main, ["--project-dir", str(project), "--notebooks-dir", str(FIXTURES), *args],
                              env=env, catch_exceptions=False)


def only_run(project, name):
    (run_dir,) = sorted((project / "outputs" / "test" / name).glob("*/"))
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_run_notifies_slack_and_the_webhook(project, receiver):
    receiver.replies = [(429, {"Retry-After": "1"}, "rate_limited")]  # Slack is sent first: retried
    env = {"RUNBOOKS_SLACK_WEBHOOK_URL": f"{receiver.base}/services/T0/B0/x",
           "RUNBOOKS_WEBHOOK_URL": f"{receiver.base}/hook"}
    result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", "critical",
                    "--notify", "slack", "--notify", "webhook", "--notify-thread", "T-9", env=env)
    assert result.exit_code == 1, result.output
    assert "notification slack: sent" in result.output and "notification webhook: sent" in result.output
    slack = receiver.bodies("/services/T0/B0/x")
    assert len(slack) == 2 and slack[0] == slack[1]
    check_limits(slack[1])
    assert slack[1]["blocks"][0]["text"]["text"] == "findings on test: findings"
    assert "a critical finding" in json.dumps(slack[1])
    [hook] = receiver.bodies("/hook")
    jsonschema.Draft202012Validator(serve.WEBHOOK_SCHEMA).validate(hook)
    assert hook["status"] == "firing" and hook["thread"] == "T-9" and hook["exit_code"] == 1
    assert {a["labels"]["severity"] for a in hook["alerts"] if a["status"] == "firing"} == {"critical", "warning"}
    run_dir, s = only_run(project, "findings")
    assert s["notifications"] == [{"kind": "slack", "sent": True}, {"kind": "webhook", "sent": True}]
    assert "warnings" not in s and hook["run_dir"] == str(run_dir)


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_failed_notification_is_a_warning_and_keeps_the_exit_code(project):
    env = {"RUNBOOKS_WEBHOOK_URL": f"http://127.0.0.1:{closed_port()}/hook"}
    result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", "critical",
                    "--notify", "webhook", env=env)
    assert result.exit_code == 1, result.output
    assert "runbooks: notification webhook not sent: the webhook receiver" in result.output
    _, s = only_run(project, "findings")
    assert s["status"] == "findings" and s["exit_code"] == 1
    assert s["notifications"][0]["sent"] is False
    assert s["warnings"] == [f"notification webhook not sent: {s['notifications'][0]['error']}"]


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_planted_secret_never_reaches_slack_or_the_webhook(project, receiver):
    token = "planted-" + "q" * 24
    hook = f"{receiver.base}/services/T0/B0/hooksecret456"
    env = {"KR_TEST_API_TOKEN": token, "RUNBOOKS_SLACK_WEBHOOK_URL": hook,
           "RUNBOOKS_WEBHOOK_URL": f"{receiver.base}/hook"}
    result = invoke(project, "run", "secret-finding", "--env", "test", "--notify", "slack", "--notify", "webhook",
                    env=env)
    assert result.exit_code == 3, result.output  # the run's own secret scan caught it too
    assert len(receiver.requests) == 2
    raw = b"".join(r["raw"] for r in receiver.requests).decode()
    for value in (token, "hooksecret456", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi",
                  base64.b64encode(token.encode()).decode()[:20]):
        assert value not in raw
    [posted] = receiver.bodies("/hook")
    assert posted["run_status"] == "leaked" and "a planted secret" in raw


@pytest.mark.notebook
@pytest.mark.timeout(240)
def test_notify_on_change_compares_with_the_previous_run(project, receiver):
    env = {"RUNBOOKS_WEBHOOK_URL": f"{receiver.base}/hook"}

    def run(worst):
        result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", worst, "--notify", "webhook",
                        "--notify-on", "change", "--notify-min-severity", "critical", env=env)
        assert result.exit_code in (0, 1), result.output
        return result

    run("warning")  # first run, nothing at or above critical: not sent
    assert receiver.bodies() == []
    run("critical")  # ok -> critical
    run("critical")  # no change
    run("warning")   # critical -> ok: resolved
    posted = receiver.bodies("/hook")
    assert [(p["status"], p["change"]) for p in posted] == [("firing", "ok -> critical"), ("resolved", "critical -> ok")]
    runs = sorted((project / "outputs" / "test" / "findings").glob("*/"))
    skipped = json.loads((runs[2] / "summary.json").read_text())["notifications"]
    assert skipped[0]["sent"] is False and skipped[0]["skipped"].startswith("no change: critical")
    assert os.path.basename(runs[1]) in skipped[0]["skipped"]


def test_a_change_is_named_in_the_header():
    changed = notify.run_message(summary("ok", counts={"critical": 0, "warning": 0}, findings=[]), None,
                                 change="critical -> ok").slack(secrets=[])
    assert changed["blocks"][0]["text"]["text"] == "cluster-health on prod: ok (was critical)"
    first = notify.run_message(summary(), None, change="first run: critical").slack(secrets=[])
    assert first["blocks"][0]["text"]["text"] == "cluster-health on prod: findings"
