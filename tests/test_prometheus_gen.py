"""The sandbox's metric history (promgen): OpenMetrics shape, agreement with the cluster, live samples.

No Prometheus needed: these read the generated text and the model directly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from runbooks_sandbox import promgen
from runbooks_sandbox.controllers import crash_history
from runbooks_sandbox.observability import sandbox_objects

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+) (\d+)$')
HISTORY = timedelta(hours=8)  # short: enough for the incident two hours back, quick to generate


@pytest.fixture(scope="module")
def objects(sandbox):
    return sandbox_objects(sandbox)


@pytest.fixture(scope="module")
def now(sandbox):
    return sandbox.store.clock()


@pytest.fixture(scope="module")
def text(objects, now):
    return promgen.generate_openmetrics(objects, now, history=HISTORY)


@pytest.fixture(scope="module")
def series(text):
    """{(name, labels text): [(ts, value)]} in file order."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, f"not an OpenMetrics sample line: {line[:200]}"
        out[(m.group(1), m.group(2) or "")].append((int(m.group(4)), float(m.group(3))))
    return out


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', text))


def _pods(objects, namespace=None, prefix=""):
    return [o for o in objects if o["kind"] == "Pod" and (namespace is None or o["metadata"]["namespace"] == namespace)
            and o["metadata"]["name"].startswith(prefix)]


def _failing_checkout(objects):
    return next(p for p in _pods(objects, "shop", "checkout-")
                if (p["metadata"].get("annotations") or {}).get("sandbox.kube-runbooks.io/fail") == "OOMKilled")


def test_openmetrics_shape(text, now):
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    lines = text.splitlines()
    assert all(line.strip() for line in lines), "no blank lines"
    # each family contiguous: a TYPE line once, and its samples right after it
    families = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))
    current = None
    for line in lines[:-1]:
        if line.startswith("# TYPE "):
            current = line.split()[2]
            continue
        name = LINE.match(line).group(1)
        assert name == current or name.startswith(current + "_"), f"{name} outside its family {current}"
    # timestamps in whole seconds, never after "now"
    limit = int(now.timestamp())
    for line in lines[:-1]:
        if not line.startswith("#"):
            ts = int(line.rsplit(" ", 1)[1])
            assert ts <= limit and ts > limit - 10**6


def test_samples_in_time_order_and_series_contiguous(text, series):
    seen_done: set[tuple[str, str]] = set()
    previous = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        key = (m.group(1), m.group(2) or "")
        if key != previous:
            assert key not in seen_done, f"series {key[0]}{key[1][:80]} is split in the file"
            if previous:
                seen_done.add(previous)
            previous = key
    for key, samples in series.items():
        ts = [t for t, _ in samples]
        assert ts == sorted(ts) and len(ts) == len(set(ts)), f"{key[0]} samples out of order"


def test_real_metric_names_are_present(series):
    names = {name for name, _ in series}
    for name in ("nginx_ingress_controller_requests", "nginx_ingress_controller_request_duration_seconds_bucket",
                 "nginx_ingress_controller_request_duration_seconds_sum",
                 "nginx_ingress_controller_request_duration_seconds_count",
                 "kube_pod_container_status_restarts_total", "kube_pod_container_status_waiting_reason",
                 "kube_pod_container_status_last_terminated_reason", "kube_pod_status_phase",
                 "kube_deployment_status_replicas_available", "kube_pod_container_resource_limits",
                 "container_cpu_usage_seconds_total", "container_cpu_cfs_throttled_periods_total",
                 "container_cpu_cfs_periods_total", "container_memory_working_set_bytes",
                 "certmanager_certificate_expiration_timestamp_seconds", "certmanager_certificate_ready_status",
                 "probe_ssl_earliest_cert_expiry"):
        assert name in names, name


def test_counters_monotonic_except_where_a_container_restarts(series, objects):
    failing = _failing_checkout(objects)["metadata"]["name"]
    resets = set()
    for (name, labels), samples in series.items():
        if not (name.endswith("_total") or name.endswith("_bucket") or name.endswith("_count")
                or name.endswith("_sum") or name == "nginx_ingress_controller_requests"):
            continue
        values = [v for _, v in samples]
        if any(b < a for a, b in zip(values, values[1:], strict=False)):
            resets.add((name, _labels(labels).get("pod")))
    assert resets <= {("container_cpu_usage_seconds_total", failing), ("container_cpu_cfs_periods_total", failing),
                      ("container_cpu_cfs_throttled_periods_total", failing)}, resets
    assert resets, "the crash-looping container's counters restart with it"


def test_histograms_are_consistent(series):
    by_set: dict[str, dict[str, list[float]]] = defaultdict(dict)
    for (name, labels), samples in series.items():
        if name.startswith("nginx_ingress_controller_request"):
            lab = _labels(labels)
            le = lab.pop("le", None)
            key = ",".join(f"{k}={v}" for k, v in sorted(lab.items()))
            by_set[key][f"{name}:{le}"] = [v for _, v in samples]
    assert by_set
    for key, parts in by_set.items():
        count = parts["nginx_ingress_controller_request_duration_seconds_count:None"]
        assert parts["nginx_ingress_controller_requests:None"] == count, key
        assert parts["nginx_ingress_controller_request_duration_seconds_bucket:+Inf"] == count, key
        les = sorted((float(k.split(":")[1]), v) for k, v in parts.items()
                     if k.startswith("nginx_ingress_controller_request_duration_seconds_bucket:")
                     and not k.endswith("+Inf"))
        for (_, lower), (_, upper) in zip(les, les[1:], strict=False):
            assert all(a <= b for a, b in zip(lower, upper, strict=True)), key


def test_restarts_and_reasons_agree_with_the_kubelet(series, objects, now):
    pod = _failing_checkout(objects)
    name = pod["metadata"]["name"]
    started = datetime.strptime(pod["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) \
        + timedelta(seconds=2)
    restarts = [s for (n, lab), s in series.items()
                if n == "kube_pod_container_status_restarts_total" and _labels(lab)["pod"] == name][0]
    last_ts, last_value = restarts[-1]
    expected = crash_history(started, datetime.fromtimestamp(last_ts, UTC))[0]
    assert last_value == expected
    assert last_value >= pod["status"]["containerStatuses"][0]["restartCount"] - 1
    keys = {(n, _labels(lab).get("reason")) for (n, lab) in series if _labels(lab).get("pod") == name}
    assert ("kube_pod_container_status_waiting_reason", "CrashLoopBackOff") in keys
    assert ("kube_pod_container_status_last_terminated_reason", "OOMKilled") in keys
    # the memory of each short life climbs to the 256Mi limit
    mem = [s for (n, lab), s in series.items()
           if n == "container_memory_working_set_bytes" and _labels(lab)["pod"] == name][0]
    assert max(v for _, v in mem) >= 0.99 * 256 * 2**20 and min(v for _, v in mem) < 0.7 * 256 * 2**20
    # healthy pods never restart
    for (n, lab), samples in series.items():
        if n == "kube_pod_container_status_restarts_total" and _labels(lab)["pod"] != name:
            assert {v for _, v in samples} == {0.0}


def test_incident_follows_the_failing_rollout(objects):
    (incident,) = promgen.incidents(objects)
    rs = next(o for o in objects if o["kind"] == "ReplicaSet" and o["metadata"]["name"] == incident.replicaset)
    assert (incident.namespace, incident.workload, incident.reason) == ("shop", "checkout", "OOMKilled")
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "7"
    assert incident.rollout == datetime.strptime(rs["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ") \
        .replace(tzinfo=UTC)
    assert timedelta(seconds=60) <= incident.onset - incident.rollout <= timedelta(minutes=3)
    assert incident.ingresses == ["checkout"] and incident.services == ["checkout"]


def test_error_ratio_rises_only_for_checkout(series, objects):
    (incident,) = promgen.incidents(objects)
    onset = incident.onset.timestamp()
    totals: dict[tuple[str, bool, bool], float] = defaultdict(float)
    for (name, labels), samples in series.items():
        if name != "nginx_ingress_controller_requests":
            continue
        lab = _labels(labels)
        before = [(t, v) for t, v in samples if t <= onset - 600]
        after = [(t, v) for t, v in samples if t >= onset + 600]
        five = lab["status"].startswith("5")
        totals[(lab["ingress"], five, False)] += before[-1][1] - before[0][1]
        totals[(lab["ingress"], five, True)] += after[-1][1] - after[0][1]
    for ingress in ("frontend", "cart", "checkout", "payments-api"):
        for after in (False, True):
            ratio = totals[(ingress, True, after)] / (totals[(ingress, True, after)] + totals[(ingress, False, after)])
            if ingress == "checkout" and after:
                assert 0.07 < ratio < 0.2, ratio
            else:
                assert ratio < 0.005, (ingress, after, ratio)


def test_certificates_agree_with_their_status(series, objects):
    certs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    expiry = {_labels(lab)["name"]: s[-1][1] for (n, lab), s in series.items()
              if n == "certmanager_certificate_expiration_timestamp_seconds"}
    ready = {(_labels(lab)["name"], _labels(lab)["condition"]): s[-1][1] for (n, lab), s in series.items()
             if n == "certmanager_certificate_ready_status"}
    for name, cert in certs.items():
        status = cert.get("status") or {}
        if status.get("notAfter"):
            want = datetime.strptime(status["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            assert expiry[name] == want
        else:
            assert name not in expiry
        cond = next(c for c in status["conditions"] if c["type"] == "Ready")["status"]
        assert ready[(name, cond)] == 1
        assert sum(v for (n, _), v in ready.items() if n == name) == 1


def test_deterministic(objects, now):
    a = promgen.generate_openmetrics(objects, now, history=timedelta(minutes=20))
    b = promgen.generate_openmetrics(objects, now, history=timedelta(minutes=20))
    assert a == b
    c = promgen.generate_openmetrics(objects, now, history=timedelta(minutes=20), seed=1)
    assert a != c


def test_live_samples_continue_the_history(objects, now):
    model = promgen.Model(objects, now, history=timedelta(minutes=30))
    last: dict[tuple[str, tuple], float] = {}
    for out in model.iter_history():
        if len(out.times):
            last[(out.name, out.labels)] = float(out.values[-1])
    text = model.exposition(model.end + 30)
    assert "# TYPE nginx_ingress_controller_requests counter" in text
    seen = 0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(\S+?)(\{.*\})? (\S+)$", line)
        name, value = m.group(1), float(m.group(3))
        if name == "nginx_ingress_controller_requests" or name.endswith("_bucket"):
            key = next((k for k in last if k[0] == name and _fmt(k[1]) == (m.group(2) or "")), None)
            assert key is not None
            assert value >= last[key]
            seen += 1
    assert seen > 50
    parser = pytest.importorskip("prometheus_client.parser")
    assert len(list(parser.text_string_to_metric_families(text))) > 20  # valid text format
    # scraped twice in the same second: the same samples again
    assert model.exposition(model.end + 30) == text


def _fmt(labels: tuple) -> str:
    return promgen._fmt_labels(labels)


def test_live_samples_follow_the_cluster(objects, now):
    model = promgen.Model(objects, now, history=timedelta(minutes=30))
    list(model.iter_history())
    failing = _failing_checkout(objects)["metadata"]["name"]
    rolled_back = [o for o in objects if not (o["kind"] == "Pod" and o["metadata"]["name"] == failing)]
    text = model.exposition(model.end + 60, rolled_back)
    assert failing not in text
    assert promgen.incidents(rolled_back) == []


def test_parse_quantity():
    assert promgen.parse_quantity("256Mi") == 256 * 2**20
    assert promgen.parse_quantity("500m") == 0.5
    assert promgen.parse_quantity("1") == 1.0
    assert promgen.parse_quantity("2G") == 2e9
    assert promgen.parse_quantity("lots") is None


def test_time_grid_stays_within_the_lookback():
    end = 1_800_000_000 // 30 * 30
    grid = promgen.time_grid(end - 4 * 86400, end, 30)
    gaps = set((grid[1:] - grid[:-1]).tolist())
    assert max(gaps) <= 150  # rate(x[5m]) always has two samples
    assert grid[-1] == end and (grid[-10:] % 30 == 0).all()
    recent = grid[grid > end - 6 * 3600]
    assert set((recent[1:] - recent[:-1]).tolist()) == {30}
