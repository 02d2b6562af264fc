"""alerts.py: matchers and silence plans (no server), then the real Alertmanager fed by Prometheus."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from runbooks import alerts
from runbooks.errors import InvalidInput, NotFound, Unavailable
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import Observability, missing_binaries, sandbox_objects

MISSING = missing_binaries()
REQUIRED = os.environ.get("RUNBOOKS_REQUIRE_OBSERVABILITY") == "1"
needs_servers = pytest.mark.skipif(
    bool(MISSING) and not REQUIRED,
    reason="needs the real Prometheus and Alertmanager (apt-get install --no-install-recommends prometheus "
           "prometheus-alertmanager): " + "; ".join(MISSING))


# ---- without a server --------------------------------------------------------------


def test_parse_matchers_in_every_form():
    want = [{"name": "alertname", "value": "KubePodCrashLooping", "isRegex": False, "isEqual": True},
            {"name": "pod", "value": "checkout-.*", "isRegex": True, "isEqual": True},
            {"name": "severity", "value": "info", "isRegex": False, "isEqual": False},
            {"name": "ns", "value": 'a"b', "isRegex": False, "isEqual": True}]
    text = 'alertname="KubePodCrashLooping", pod=~"checkout-.*", severity!="info", ns="a\\"b"'
    assert alerts.parse_matchers(text) == want
    assert alerts.parse_matchers("{" + text + "}") == want
    assert alerts.parse_matchers(['alertname="KubePodCrashLooping"', 'pod=~"checkout-.*"']) == want[:2]
    assert alerts.parse_matchers({"alertname": "KubePodCrashLooping"}) == want[:1]
    assert alerts.parse_matchers([want[1]]) == want[1:2]
    assert alerts.parse_matchers(None) == []
    assert [alerts.matcher_text(m) for m in want] == \
        ['alertname="KubePodCrashLooping"', 'pod=~"checkout-.*"', 'severity!="info"', 'ns="a\\"b"']
    assert alerts.matcher_text({"name": "x", "value": "y", "isRegex": True, "isEqual": False}) == 'x!~"y"'
    for bad in ('alertname=', 'alertname="x" pod="y"', "9x=\"y\"", 'pod=~"("', 42):
        with pytest.raises(InvalidInput):
            alerts.parse_matchers(bad)


def test_build_silence_validates_and_sets_times():
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    s = alerts.build_silence({"alertname": "X", "namespace": "shop"}, "2h", " rollback ", "sre@example.com",
                             starts_at=start)
    assert s["startsAt"] == "2026-05-01T10:00:00.000Z" and s["endsAt"] == "2026-05-01T12:00:00.000Z"
    assert s["comment"] == "rollback" and len(s["matchers"]) == 2
    assert alerts.build_silence("alertname=\"X\"", timedelta(minutes=30), "c", "me", starts_at=start)["endsAt"] \
        == "2026-05-01T10:30:00.000Z"
    for args, match in ((({}, "1h", "c", "me"), "at least one matcher"),
                        (('x=~".*"', "1h", "c", "me"), "every alert"),
                        (({"a": "b"}, "0s", "c", "me"), "positive"),
                        (({"a": "b"}, "90d", "c", "me"), "at most"),
                        (({"a": "b"}, "soon", "c", "me"), "not a duration"),
                        (({"a": "b"}, "1h", "", "me"), "comment"),
                        (({"a": "b"}, "1h", "c", " "), "created_by")):
        with pytest.raises(InvalidInput, match=match):
            alerts.build_silence(*args)


def test_silence_plan_entry_is_stable_plain_data():
    a = alerts.silence_plan_entry({"namespace": "shop", "alertname": "X"}, "2h", "why", "me")
    b = alerts.silence_plan_entry('alertname="X", namespace="shop"', timedelta(hours=2), "why", "me")
    assert a["name"] == b["name"] and a["name"].startswith("silence-")
    assert a["operation"] == "create" and a["kind"] == "Silence" and a["namespace"] is None
    assert {"path": "duration", "from": None, "to": "2h"} in a["diff"]
    assert {"path": "matchers", "from": None, "to": 'alertname="X", namespace="shop"'} in a["diff"]
    assert "startsAt" not in a["body"] and a["body"]["duration_seconds"] == 7200
    c = alerts.silence_plan_entry({"alertname": "X"}, "3h", "why", "me")
    assert c["name"] != a["name"]
    import json

    json.dumps(a)  # plain data


def test_unreachable_alertmanager_is_unavailable():
    with pytest.raises(Unavailable, match="unreachable"):
        alerts.check("http://127.0.0.1:9")
    with pytest.raises(InvalidInput):
        alerts.connect("localhost:9093")
    with pytest.raises(InvalidInput, match="UUID"):
        alerts.get_silence("http://127.0.0.1:9", "not-an-id")


def test_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALERTMANAGER_TOKEN", "t0ken")
    c = alerts.connect("https://am.example.invalid")
    assert c.session.headers["Authorization"] == "Bearer t0ken" and c.session.verify is True
    monkeypatch.delenv("ALERTMANAGER_TOKEN")
    monkeypatch.setenv("ALERTMANAGER_USERNAME", "u")
    monkeypatch.setenv("ALERTMANAGER_PASSWORD", "p")
    assert alerts.connect("https://am.example.invalid", verify=False).session.auth == ("u", "p")


# ---- against the real Alertmanager -------------------------------------------------


@pytest.fixture(scope="module")
def am(tmp_path_factory):
    if MISSING:
        pytest.fail("RUNBOOKS_REQUIRE_OBSERVABILITY=1 but: " + "; ".join(MISSING))
    box = Sandbox(tmp_path_factory.mktemp("am-sandbox"), "default", tick=1.0).start()
    obs = Observability(tmp_path_factory.mktemp("am-observability"), lambda: sandbox_objects(box),
                        box.store.clock())
    try:
        url = obs.start()["alertmanager"]
        want = {"KubePodCrashLooping", "CPUThrottlingHigh", "NginxIngressHigh5xxRatio", "Watchdog"}
        deadline = time.monotonic() + 120
        while not want <= {a["alertname"] for a in alerts.alert_dicts(url)}:
            assert time.monotonic() < deadline, f"{want} never all reached Alertmanager"
            time.sleep(1)
        yield url
    finally:
        obs.stop()
        box.stop()


def _crash_state(am_url):
    (a,) = alerts.alert_dicts(am_url, {"alertname": "KubePodCrashLooping", "namespace": "shop"})
    return a


@needs_servers
def test_alerts_by_matchers(am):
    df = alerts.alerts(am, 'namespace="shop", pod=~"checkout-.*"')
    assert set(df["alertname"]) >= {"KubePodCrashLooping", "CPUThrottlingHigh"}
    assert list(df.columns) == alerts.ALERT_COLUMNS
    assert df["startsAt"].notna().all() and (df["state"] == "active").all()
    assert alerts.alerts(am, {"namespace": "nowhere"}).empty
    assert set(alerts.alerts(am, 'severity!="none"')["alertname"]).isdisjoint({"Watchdog"})
    watchdog = alerts.alert_dicts(am, {"alertname": "Watchdog"})
    assert len(watchdog) == 1 and watchdog[0]["severity"] == "none"


@needs_servers
def test_silence_lifecycle_suppresses_then_expires(am):
    assert _crash_state(am)["state"] == "active"
    silence = alerts.build_silence({"alertname": "KubePodCrashLooping", "namespace": "shop"}, "1h",
                                   "checkout rollback under way", "test@example.com")
    sid = alerts.create_silence(am, silence)
    try:
        listed = alerts.silences(am, {"alertname": "KubePodCrashLooping"})
        row = listed[listed["id"] == sid].iloc[0]
        assert row["state"] == "active" and row["createdBy"] == "test@example.com"
        assert row["matchers"] == 'alertname="KubePodCrashLooping", namespace="shop"'
        # (Alertmanager moves a start in the past to its own "now")
        assert abs((row["endsAt"] - row["startsAt"]) - timedelta(hours=1)) < timedelta(seconds=2)
        crash = _crash_state(am)
        assert crash["state"] == "suppressed" and crash["silencedBy"] == [sid]
        # other alerts are not affected
        assert all(a["state"] == "active" for a in alerts.alert_dicts(am, {"alertname": "NginxIngressHigh5xxRatio"}))
        # hidden when silenced ones are not wanted
        assert alerts.alert_dicts(am, {"alertname": "KubePodCrashLooping"}, silenced=False) == []
    finally:
        assert alerts.expire_silence(am, sid) is True
    assert alerts.expire_silence(am, sid) is False  # idempotent
    expired = alerts.silences(am, state="expired")
    assert sid in set(expired["id"])
    assert alerts.get_silence(am, sid)["status"]["state"] == "expired"
    assert _crash_state(am)["state"] == "active"


@needs_servers
def test_silence_through_plan_entries_is_idempotent(am):
    matchers = {"alertname": "KubePodCrashLooping", "namespace": "shop"}
    entries = alerts.plan_silence(am, matchers, "30m", "planned silence", "runbook")
    assert len(entries) == 1
    first = alerts.apply_entry(am, entries[0])
    assert first["result"] == "created"
    again = alerts.apply_entry(am, entries[0])  # a re-run after an interruption
    assert again == {"id": first["id"], "result": "exists"}
    assert alerts.plan_silence(am, matchers, "30m", "planned silence", "runbook") == []
    assert _crash_state(am)["state"] == "suppressed"
    (expire,) = alerts.plan_expire(am, first["id"])
    assert expire["operation"] == "delete" and expire["name"] == first["id"]
    assert expire["diff"] == [{"path": "status.state", "from": "active", "to": "expired"}]
    assert alerts.apply_entry(am, expire) == {"id": first["id"], "result": "expired"}
    assert alerts.apply_entry(am, expire) == {"id": first["id"], "result": "already expired"}
    assert alerts.plan_expire(am, first["id"]) == []
    assert _crash_state(am)["state"] == "active"


@needs_servers
def test_unknown_silence_is_not_found(am):
    # Alertmanager answers DELETE of an unknown silence with 500; we look it up first
    with pytest.raises(NotFound):
        alerts.expire_silence(am, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(NotFound):
        alerts.plan_expire(am, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(InvalidInput):
        alerts.create_silence(am, {"matchers": [], "startsAt": "2026-01-01T00:00:00Z",
                                   "endsAt": "2026-01-01T01:00:00Z", "createdBy": "x", "comment": "y"})
