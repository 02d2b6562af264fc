"""Generated pod logs: kubectl's options behave as against a kubelet, and output is deterministic."""

from __future__ import annotations

import collections
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from runbooks_sandbox.podlogs import (
    DEFAULT_TAIL,
    FAIL_ANNOTATION,
    MAX_LINES,
    format_timestamp,
    load_log_templates,
    log_lines,
    render_logs,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$")
NGINX = re.compile(r'^\S+ - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "[A-Z]+ \S+ HTTP/[\d.]+" \d{3} \d+ ')


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_pod(app, *, started=NOW - timedelta(days=30), image="registry.example.com/x/app:1.0.0", uid="uid-1",
             label="app", annotations=None, status=None, container="main"):
    """A pod as the sandbox controllers leave it (running since `started` unless `status` says otherwise)."""
    if status is None:
        status = {"containerStatuses": [{"name": container, "restartCount": 0, "state": {"running": {"startedAt": rfc3339(started)}}}]}
    return {
        "metadata": {"name": f"{app}-7d4b9c8f6d-x2x9q", "namespace": "shop", "uid": uid, "labels": {label: app},
                     "annotations": annotations or {}, "creationTimestamp": rfc3339(started)},
        "spec": {"nodeName": "node-1", "containers": [{"name": container, "image": image}]},
        "status": status,
    }


def crashlooping_checkout(started: datetime, finished: datetime, *, uid="uid-crash"):
    """A checkout 1.9.0 pod waiting in CrashLoopBackOff after an OOMKilled run."""
    status = {"containerStatuses": [{
        "name": "main", "restartCount": 12,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                     "startedAt": rfc3339(started), "finishedAt": rfc3339(finished)}},
    }]}
    return make_pod("checkout", image="registry.example.com/shop/checkout:1.9.0", uid=uid,
                    annotations={FAIL_ANNOTATION: "OOMKilled"}, status=status)


# -- options -------------------------------------------------------------------------


def test_default_is_the_last_500_lines_of_a_long_running_pod():
    pod = make_pod("frontend")
    text = render_logs(pod, "main", now=NOW)
    assert text.endswith("\n")
    assert len(text.splitlines()) == DEFAULT_TAIL


def test_tail_lines_is_the_end_of_the_log():
    pod = make_pod("cart")
    long = render_logs(pod, "main", now=NOW, tail_lines=200).splitlines()
    short = render_logs(pod, "main", now=NOW, tail_lines=20).splitlines()
    assert len(long) == 200 and short == long[-20:]
    assert render_logs(pod, "main", now=NOW, tail_lines=0) == ""


def test_since_seconds_limits_the_window():
    pod = make_pod("frontend")  # 40 lines per minute
    lines = log_lines(pod, "main", now=NOW, since_seconds=600)
    assert 380 <= len(lines) <= 420
    cutoff = NOW - timedelta(seconds=600)
    assert all(cutoff <= line.time <= NOW for line in lines)
    assert len(log_lines(pod, "main", now=NOW, since_seconds=600, tail_lines=5)) == 5


def test_generation_is_capped():
    pod = make_pod("ingress-nginx", label="app.kubernetes.io/name")  # 120 lines per minute for 30 days
    assert len(log_lines(pod, "main", now=NOW, since_seconds=30 * 86400)) == MAX_LINES
    assert len(log_lines(pod, "main", now=NOW, tail_lines=10 * MAX_LINES)) == MAX_LINES


def test_timestamps_prefix_each_line():
    pod = make_pod("frontend")
    plain = render_logs(pod, "main", now=NOW, tail_lines=50).splitlines()
    stamped = render_logs(pod, "main", now=NOW, tail_lines=50, timestamps=True).splitlines()
    times = []
    for line, bare in zip(stamped, plain, strict=True):
        match = STAMP.match(line)
        assert match, line
        assert match.group(2) == bare
        times.append(match.group(1))
    assert times == sorted(times)
    assert times[-1] <= "2026-01-02T03:04:05.000000000Z"
    assert format_timestamp(1_767_323_045_123_456_789) == "2026-01-02T03:04:05.123456789Z"


@pytest.mark.parametrize(("kwargs", "message"), [({"tail_lines": -1}, "tail_lines"), ({"since_seconds": 0}, "since_seconds")])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_logs(make_pod("cart"), "main", now=NOW, **kwargs)


# -- determinism -------------------------------------------------------------------------


def test_same_request_same_lines():
    pod = make_pod("checkout", image="registry.example.com/shop/checkout:1.8.2")
    first = render_logs(pod, "main", now=NOW, tail_lines=100, timestamps=True)
    assert render_logs(pod, "main", now=NOW, tail_lines=100, timestamps=True) == first


def test_later_requests_only_append():
    pod = make_pod("frontend")
    earlier = log_lines(pod, "main", now=NOW, since_seconds=600)
    later = log_lines(pod, "main", now=NOW + timedelta(seconds=90), since_seconds=690)
    assert [line for line in later if line.time_ns <= earlier[-1].time_ns] == earlier
    assert len(later) > len(earlier)


def test_other_pods_log_other_lines():
    one = render_logs(make_pod("cart", uid="a"), "main", now=NOW, tail_lines=20)
    two = render_logs(make_pod("cart", uid="b"), "main", now=NOW, tail_lines=20)
    assert one != two


# -- container instances -------------------------------------------------------------------


def test_young_container_starts_with_its_startup_lines():
    started = NOW - timedelta(seconds=30)
    pod = make_pod("checkout", started=started, image="registry.example.com/shop/checkout:1.8.2")
    lines = log_lines(pod, "main", now=NOW)
    assert lines[0].text == "Picked up JAVA_TOOL_OPTIONS: -XX:MaxRAMPercentage=75.0"
    assert lines[0].stream == "stderr"
    assert "Starting CheckoutApplication v1.8.2" in lines[1].text
    assert all(started <= line.time <= NOW for line in lines)
    assert any("Started CheckoutApplication" in line.text for line in lines)


def test_pod_without_status_logs_since_creation():
    pod = make_pod("cart", started=NOW - timedelta(minutes=2))
    del pod["status"]
    lines = log_lines(pod, "main", now=NOW)
    assert lines and lines[0].time >= NOW - timedelta(minutes=2)
    assert "starting cart service" in lines[0].text


def test_previous_is_the_last_terminated_instance_and_ends_with_the_crash():
    started, finished = NOW - timedelta(minutes=3, seconds=8), NOW - timedelta(minutes=3)
    pod = crashlooping_checkout(started, finished)
    previous = log_lines(pod, "main", now=NOW, previous=True)
    assert all(started <= line.time <= finished for line in previous)
    assert "Starting CheckoutApplication v1.9.0" in previous[1].text
    tail = [line.text for line in previous[-15:]]
    assert any("java.lang.OutOfMemoryError: Java heap space" in text for text in tail)
    assert any(text.startswith("\tat ") for text in tail)
    assert "Connection to payments-db:5432 refused" in previous[-1].text
    # waiting in CrashLoopBackOff: plain `kubectl logs` shows that same last run, like the kubelet
    assert log_lines(pod, "main", now=NOW) == previous


def test_previous_needs_a_restart():
    pod = make_pod("cart")
    with pytest.raises(LookupError) as info:
        render_logs(pod, "main", now=NOW, previous=True)
    assert str(info.value) == 'previous terminated container "main" in pod "cart-7d4b9c8f6d-x2x9q" not found'


def test_running_after_a_restart_has_both_instances():
    restarted = NOW - timedelta(hours=1)
    status = {"containerStatuses": [{
        "name": "main", "restartCount": 1, "state": {"running": {"startedAt": rfc3339(restarted)}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "startedAt": rfc3339(NOW - timedelta(days=3)),
                                     "finishedAt": rfc3339(restarted - timedelta(seconds=10))}},
    }]}
    pod = make_pod("cart", status=status)
    current = log_lines(pod, "main", now=NOW, tail_lines=5000)
    previous = log_lines(pod, "main", now=NOW, previous=True, tail_lines=10)
    assert current[0].time >= restarted
    assert previous[-1].time <= restarted - timedelta(seconds=10)


@pytest.mark.parametrize(
    ("waiting", "message"),
    [
        ({"reason": "ContainerCreating"}, "is waiting to start: ContainerCreating"),
        ({"reason": "ImagePullBackOff"}, "is waiting to start: trying and failing to pull image"),
    ],
)
def test_waiting_container_has_no_logs(waiting, message):
    pod = make_pod("cart", status={"containerStatuses": [{"name": "main", "restartCount": 0, "state": {"waiting": waiting}}]})
    with pytest.raises(LookupError, match=f'container "main" in pod "cart-7d4b9c8f6d-x2x9q" {message}'):
        render_logs(pod, "main", now=NOW)


def test_unknown_container():
    with pytest.raises(LookupError, match="container sidecar is not valid for pod cart-7d4b9c8f6d-x2x9q"):
        render_logs(make_pod("cart"), "sidecar", now=NOW)


# -- content --------------------------------------------------------------------------------


def test_db_connection_refused_is_the_most_frequent_checkout_error():
    errors = collections.Counter()
    for i in range(20):  # twenty 8-second runs of a crash-looping pod
        finished = NOW - timedelta(minutes=5 * i)
        pod = crashlooping_checkout(finished - timedelta(seconds=8), finished, uid=f"crash-{i}")
        for line in log_lines(pod, "main", now=NOW, previous=True):
            if line.text.startswith("{"):
                record = json.loads(line.text)
                if record["level"] == "ERROR":
                    errors[record["message"]] += 1
    top, _ = errors.most_common(1)[0]
    assert top == "could not connect to database: connection refused (payments-db:5432)"


@pytest.mark.parametrize("app", ["frontend", "cart", "checkout", "payments-api"])
def test_shop_services_log_json(app):
    started = NOW - timedelta(hours=2)
    pod = make_pod(app, started=started)
    lines = log_lines(pod, "main", now=NOW, since_seconds=3 * 3600)
    assert any(line.time - started < timedelta(seconds=20) for line in lines)  # startup included
    for line in lines:
        if line.stream == "stdout":
            json.loads(line.text)


def test_ingress_nginx_writes_access_logs():
    pod = make_pod("ingress-nginx", label="app.kubernetes.io/name")
    lines = render_logs(pod, "main", now=NOW, tail_lines=300).splitlines()
    access = [line for line in lines if NGINX.match(line)]
    assert len(access) > 0.9 * len(lines)
    assert any("[shop-checkout-80]" in line for line in access)


def test_every_profile_renders():
    templates = load_log_templates()
    apps = list(templates["apps"]) + ["no-such-app"]
    for app in apps:
        for extra in ({}, {FAIL_ANNOTATION: "OOMKilled"}):
            young = make_pod(app, started=NOW - timedelta(minutes=1), annotations=extra)
            assert render_logs(young, "main", now=NOW), app
            render_logs(make_pod(app, annotations=extra), "main", now=NOW, tail_lines=300)


def test_bad_templates_are_reported():
    templates = {"default": {"rate": 60, "lines": ["${nope}"]}, "apps": {}}
    with pytest.raises(ValueError, match=r"unknown log template placeholder \$\{nope\}"):
        render_logs(make_pod("cart"), "main", now=NOW, tail_lines=1, templates=templates)
