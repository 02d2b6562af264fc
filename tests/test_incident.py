"""Incident investigation logic on plain data, and the rollback plan against the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from runbooks import incident, metrics, rollouts
from runbooks.errors import InvalidInput
from runbooks.parameters import validate_params
from runbooks_sandbox.patch import apply_merge_patch

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def params(**kw):
    return validate_params(incident.IncidentParams, kw)


@pytest.mark.parametrize("src, dst", [
    ({"a": 1, "b": {"c": 2, "d": [1, 2]}}, {"a": 1, "b": {"d": [3]}, "e": "x"}),
    ({"metadata": {"annotations": {"fail": "OOMKilled"}, "labels": {"app": "x"}}},
     {"metadata": {"labels": {"app": "x"}}}),
    ({}, {"spec": {"containers": [{"name": "a", "image": "i:1"}]}}),
])
def test_merge_patch_turns_src_into_dst(src, dst):
    assert apply_merge_patch(src, incident.merge_patch(src, dst)) == dst


def test_window_from_lookback_or_start_end():
    assert incident.resolve_window(params(lookback="2h"), NOW) == (NOW - timedelta(hours=2), NOW)
    p = params(start="2026-03-01T08:00:00Z", end="2026-03-01T09:30:00+00:00")
    assert incident.resolve_window(p, NOW) == (datetime(2026, 3, 1, 8, tzinfo=UTC),
                                               datetime(2026, 3, 1, 9, 30, tzinfo=UTC))


@pytest.mark.parametrize("values, named", [
    ({"namespace": "Shop"}, "Shop"),
    ({"service": "check_out"}, "check_out"),
    ({"lookback": "soon"}, "soon"),
    ({"lookback": "0s"}, "0s"),
    ({"start": "yesterday"}, "yesterday"),
    ({"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T09:00:00Z"}, "must be before"),
    ({"queries": {"error_rate": "up"}}, "error_rate"),
    ({"mitigation": "restart"}, "mitigation"),
    ({"prometheus_token": "x"}, "prometheus_token"),
])
def test_bad_parameters_name_the_value(values, named):
    with pytest.raises(InvalidInput) as err:
        params(**values)
    assert named in str(err.value)


def alerts_frame(*names, state="active"):
    return pd.DataFrame([{"alertname": n, "state": state, "severity": "critical", "startsAt": NOW,
                          "summary": "", "labels": {}} for n in names])


def test_silence_matchers():
    assert incident.silence_matchers(alerts_frame("KubePodCrashLooping"), "shop", "checkout", None) == [
        'alertname="KubePodCrashLooping"', 'namespace="shop"']
    both = incident.silence_matchers(alerts_frame("A", "B", "Watchdog"), "shop", "checkout", None)
    assert both[0] == 'alertname=~"(A|B)"'
    assert incident.silence_matchers(alerts_frame(), "shop", "checkout", "Named")[0] == 'alertname="Named"'
    with pytest.raises(InvalidInput, match="nothing to silence"):
        incident.silence_matchers(alerts_frame("Watchdog"), "shop", "checkout", None)


def test_bad_rollout_ranks_first_with_a_plain_sentence():
    rollout = NOW - timedelta(hours=2)
    history = [{"revision": 6, "replicaset": "c-old", "created": NOW - timedelta(days=20), "images": ["c:1.8.2"]},
               {"revision": 7, "replicaset": "c-new", "created": rollout, "images": ["c:1.9.0"]}]
    pods = [{"pod": "c-old-1", "revision": 6, "restarts": 0, "waiting_reason": "", "last_termination_reason": ""},
            {"pod": "c-new-1", "revision": 7, "restarts": 25, "waiting_reason": "CrashLoopBackOff",
             "last_termination_reason": "OOMKilled"}]
    anomaly = metrics.Anomaly(start=pd.Timestamp(rollout + timedelta(minutes=3)), end=None,
                              peak_time=pd.Timestamp(rollout + timedelta(minutes=30)), peak=0.3, baseline=0.002,
                              threshold=0.02, direction="up")
    sig = incident.Signals(pd.DataFrame(), pd.DataFrame(), {"error_ratio": anomaly})
    top = pd.DataFrame([{"pattern": "could not connect to database: connection refused (payments-db:<n>)",
                         "count": 150, "pods": "c-new-1"}])
    causes = incident.likely_causes(params(), history=history, pods=pods, sig=sig, alerts_df=alerts_frame("X"),
                                    changes_df=pd.DataFrame(columns=["time", "kind", "what", "detail"]),
                                    top_errors=top, window_start=NOW - timedelta(hours=6))
    first = causes[0]
    assert first["cause"] == "bad rollout" and first["rank"] == 1
    assert first["sentence"].startswith("the 5xx error ratio rose 3 min after checkout revision 7 (c:1.9.0)")
    assert "OOMKilled" in first["sentence"]
    assert [c["cause"] for c in causes][1:3] == ["memory limit", "errors in the logs"]
    findings = incident.incident_findings(params(), causes, sig, alerts_frame("X"), pods)
    assert {f.id for f in findings} >= {"incident/shop/checkout", "alert/X/shop/checkout",
                                        "pod-crashloopbackoff/shop/c-new-1", "likely-cause/1/bad-rollout"}


def test_no_incident_when_everything_is_quiet():
    sig = incident.Signals(pd.DataFrame(), pd.DataFrame(), {})
    pods = [{"pod": "cart-1", "revision": 3, "restarts": 0, "waiting_reason": "", "last_termination_reason": ""}]
    findings = incident.incident_findings(params(service="cart"), [], sig, alerts_frame(), pods)
    assert [(f.id, f.severity) for f in findings] == [("incident/shop/cart", "ok")]


def test_a_crash_looping_pod_read_while_it_runs_between_crashes_still_crashes():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    row = {"pod": "c-new-1", "revision": 7, "restarts": 25, "waiting_reason": "", "ready": False,
           "last_termination_reason": "OOMKilled", "last_finished": now - timedelta(minutes=4)}
    assert rollouts.crash_reason(row, now) == "CrashLoopBackOff"  # the kubelet restarted it; it will die again
    assert rollouts.crash_reason({**row, "last_finished": now - timedelta(minutes=11)}, now) == ""  # back-off reset
    assert rollouts.crash_reason({**row, "restarts": 0, "last_termination_reason": "", "last_finished": None}) == ""
    [finding] = incident.pod_findings("shop", [{**row, "last_finished": datetime.now(UTC) - timedelta(minutes=4)}])
    assert finding.id == "pod-crashloopbackoff/shop/c-new-1" and "OOMKilled" in finding.title


def test_rollback_plan_targets_the_previous_template(cluster):
    (change,) = incident.rollback(cluster, "shop", "checkout")
    assert change.kind == "Deployment" and change.precondition["to_revision"] == 6
    template = change.body["spec"]["template"]
    assert template["spec"]["containers"][0]["image"].endswith(":1.8.2")
    assert template["metadata"]["annotations"]["sandbox.kube-runbooks.io/fail"] is None  # removed
    assert "pod-template-hash" not in (template["metadata"].get("labels") or {})
    with pytest.raises(InvalidInput, match="revision 99"):
        incident.rollback(cluster, "shop", "checkout", to_revision=99)
    assert incident.rollback(cluster, "shop", "checkout", to_revision=7) == []  # already running it
