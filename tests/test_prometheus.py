"""The real Prometheus and Alertmanager of the sandbox, and metrics.py against them.

These run the Debian `prometheus` and `prometheus-alertmanager` binaries. Without
them the server tests skip, naming what to install; with
RUNBOOKS_REQUIRE_OBSERVABILITY=1 (CI) a missing binary fails instead.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from runbooks import alerts, metrics
from runbooks.errors import InvalidInput
from runbooks_sandbox import observability
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import (
    MissingBinary,
    Observability,
    missing_binaries,
    sandbox_objects,
)

MISSING = missing_binaries()
REQUIRED = os.environ.get("RUNBOOKS_REQUIRE_OBSERVABILITY") == "1"
needs_servers = pytest.mark.skipif(
    bool(MISSING) and not REQUIRED,
    reason="needs the real Prometheus and Alertmanager (apt-get install --no-install-recommends prometheus "
           "prometheus-alertmanager): " + "; ".join(MISSING))


def _owner(pod):
    """The name of a pod's owner ("" for a bare pod, like the scenario's node-exporter-debug)."""
    return (pod["metadata"].get("ownerReferences") or [{}])[0].get("name", "")


def _rollout(objects, workload="checkout"):
    """The creation time of the workload's newest ReplicaSet: when its rollout began."""
    rss = [o for o in objects if o["kind"] == "ReplicaSet" and o["metadata"]["namespace"] == "shop"
           and o["metadata"]["name"].startswith(workload + "-")]
    rs = max(rss, key=lambda r: int(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
    return rs, datetime.strptime(rs["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if MISSING:
        pytest.fail("RUNBOOKS_REQUIRE_OBSERVABILITY=1 but: " + "; ".join(MISSING))
    box = Sandbox(tmp_path_factory.mktemp("prom-sandbox"), "default", tick=1.0).start()
    obs = Observability(tmp_path_factory.mktemp("observability"), lambda: sandbox_objects(box), box.store.clock())
    try:
        urls = obs.start()
        yield SimpleNamespace(box=box, obs=obs, prom=urls["prometheus"], am=urls["alertmanager"],
                              objects=sandbox_objects(box))
    finally:
        obs.stop()
        box.stop()


def _poll(fn, timeout=120.0, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if (value is not None and value is not False) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@needs_servers
def test_servers_listen_on_loopback_and_answer(stack):
    assert stack.prom.startswith("http://127.0.0.1:") and stack.am.startswith("http://127.0.0.1:")
    assert metrics.check(stack.prom)["version"].startswith("2.")
    assert alerts.check(stack.am)["cluster"] == "disabled"  # no gossip listener on 0.0.0.0:9094
    assert 200_000 < stack.obs.stats["samples"] < 3_500_000  # grows with the scenario's pods
    state = observability.read_state(stack.obs.state_dir)
    assert state["prometheus"]["pid"] == stack.obs.procs["prometheus"].pid


@needs_servers
def test_backfilled_series_are_queryable(stack):
    for name in ("nginx_ingress_controller_requests", "nginx_ingress_controller_request_duration_seconds_bucket",
                 "kube_pod_container_status_restarts_total", "kube_pod_status_phase",
                 "kube_deployment_status_replicas_available", "kube_pod_container_resource_limits",
                 "container_cpu_usage_seconds_total", "container_cpu_cfs_throttled_periods_total",
                 "container_memory_working_set_bytes", "certmanager_certificate_expiration_timestamp_seconds",
                 "certmanager_certificate_ready_status", "probe_ssl_earliest_cert_expiry"):
        assert len(metrics.query(stack.prom, f"{name} offset 2d")) > 0, name
    # the oldest tier (150 s apart) still supports rate() over 5 minutes
    df = metrics.query(stack.prom, 'sum(rate(nginx_ingress_controller_requests{ingress="cart"}[5m] offset 2d))')
    assert df["value"].iloc[0] > 0


@needs_servers
def test_metrics_agree_with_the_cluster(stack):
    pods = {o["metadata"]["name"]: o for o in stack.objects if o["kind"] == "Pod"}
    info = metrics.query(stack.prom, "kube_pod_info")
    assert set(info["pod"]) == set(pods)
    rs, _ = _rollout(stack.objects)
    (failing,) = [p for p in pods.values() if _owner(p) == rs["metadata"]["name"]]
    name = failing["metadata"]["name"]
    api_restarts = stack.box.store.get(stack.box.registry.by_kind_any_version("Pod"), "shop", name)[
        "status"]["containerStatuses"][0]["restartCount"]
    prom_restarts = metrics.query(stack.prom, f'kube_pod_container_status_restarts_total{{pod="{name}"}}')
    assert abs(prom_restarts["value"].iloc[0] - api_restarts) <= 1
    oom = metrics.query(stack.prom, 'kube_pod_container_status_last_terminated_reason{reason="OOMKilled"}')
    assert list(oom["pod"]) == [name]
    limit = metrics.query(stack.prom, f'kube_pod_container_resource_limits{{pod="{name}", resource="memory"}}')
    assert limit["value"].iloc[0] == 256 * 2**20
    available = metrics.query(stack.prom, 'kube_deployment_status_replicas_available{deployment="checkout"}')
    dep = next(o for o in stack.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "checkout")
    assert available["value"].iloc[0] == dep["status"]["availableReplicas"]
    for cert in (o for o in stack.objects if o["kind"] == "Certificate" and o["status"].get("notAfter")):
        df = metrics.query(stack.prom, 'certmanager_certificate_expiration_timestamp_seconds'
                                       f'{{name="{cert["metadata"]["name"]}"}}')
        want = datetime.strptime(cert["status"]["notAfter"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert df["value"].iloc[0] == want.timestamp()


@needs_servers
def test_counters_reset_only_where_a_container_restarted(stack):
    assert len(metrics.query(stack.prom, "resets(nginx_ingress_controller_requests[3d]) > 0")) == 0
    assert len(metrics.query(stack.prom, "resets(nginx_ingress_controller_request_duration_seconds_bucket[3d]) > 0")) \
        == 0
    reset_pods = set(metrics.query(stack.prom, "resets(container_cpu_usage_seconds_total[3d]) > 0")["pod"])
    rs, _ = _rollout(stack.objects)
    assert reset_pods == {p["metadata"]["name"] for p in stack.objects if p["kind"] == "Pod"
                          and _owner(p) == rs["metadata"]["name"]}


@needs_servers
def test_checkout_spike_found_near_the_rollout(stack):
    _, rollout = _rollout(stack.objects)
    end = datetime.now(UTC)
    start = end - timedelta(hours=6)
    for name, params in (("error_ratio", {}), ("latency_quantile", {"quantile": 0.99})):
        a = metrics.find_anomaly(stack.prom, name, start, end, namespace="shop", service="checkout", **params)
        assert a is not None, name
        assert abs((a.start - rollout).total_seconds()) <= 120, (name, a, rollout)
        assert a.ongoing  # the bad revision still runs
    red = metrics.red(stack.prom, "shop", "checkout", start, end)
    assert set(red["signal"]) == {"request_rate", "error_ratio", "latency_p50", "latency_p95", "latency_p99"}
    after = red[(red["signal"] == "error_ratio") & (red["timestamp"] > pd_ts(rollout + timedelta(minutes=10)))]
    before = red[(red["signal"] == "error_ratio") & (red["timestamp"] < pd_ts(rollout - timedelta(minutes=10)))]
    assert after["value"].median() > 0.05 > 0.01 > before["value"].median()
    p99 = red[red["signal"] == "latency_p99"]
    assert p99[p99["timestamp"] > pd_ts(rollout + timedelta(minutes=10))]["value"].median() > 2.0


def pd_ts(t):
    import pandas as pd

    return pd.Timestamp(t)


@needs_servers
def test_ingress_signals_name_the_failing_host(stack):
    """service-reachability's live-probe hop: ingress-nginx's 5xx ratio and p99 per host over the last
    15 minutes, from the real Prometheus; checkout's bad revision shows, cart's host does not."""
    from runbooks import ingresssignals

    prom = metrics.connect(stack.prom)
    one = ingresssignals.ingress_metrics(prom, ["checkout.shop.example.com"])
    assert set(one) == {"checkout.shop.example.com"}
    assert one["checkout.shop.example.com"]["ratio_5xx"] > 0.05
    assert one["checkout.shop.example.com"]["p99"] > 2.0
    every = ingresssignals.ingress_metrics(prom, ["checkout.shop.example.com", "cart.shop.example.com"])
    assert {"checkout.shop.example.com", "cart.shop.example.com"} <= set(every)
    assert every["cart.shop.example.com"]["ratio_5xx"] < 0.01
    assert every["cart.shop.example.com"]["p99"] < every["checkout.shop.example.com"]["p99"]


@needs_servers
def test_cart_is_healthy(stack):
    end = datetime.now(UTC)
    start = end - timedelta(hours=6)
    # Errors and latency only: cart's request rate follows the daily traffic curve, which rises
    # up to 3x between 04:00 and 16:00 UTC, so a 6-hour window may hold a ramp whatever the hour
    for name, params in (("error_ratio", {}), ("latency_quantile", {"quantile": 0.99})):
        assert metrics.find_anomaly(stack.prom, name, start, end, namespace="shop", service="cart", **params) is None
    rate = metrics.signal(stack.prom, "request_rate", start, end, namespace="shop", service="cart")
    assert len(rate) > 100 and (rate["value"] > 0).all()
    use = metrics.use(stack.prom, "shop", "cart", start, end)
    assert set(use["pod"]) == {o["metadata"]["name"] for o in stack.objects
                               if o["kind"] == "Pod" and o["metadata"]["name"].startswith("cart-")}
    by = use.groupby("signal")["value"]
    assert by.max()["restarts"] == 0 and by.max()["memory_ratio"] < 0.9 and by.max()["cpu_throttling"] < 0.1


@needs_servers
def test_checkout_saturation(stack):
    rs, rollout = _rollout(stack.objects)
    end = datetime.now(UTC)
    use = metrics.use(stack.prom, "shop", "checkout", end - timedelta(hours=6), end)
    new = use["pod"].str.startswith(rs["metadata"]["name"] + "-")
    peak = use[new].groupby("signal")["value"].max()
    assert peak["memory_ratio"] >= 0.95  # climbs to the 256Mi limit before each OOM kill
    assert peak["cpu_throttling"] >= 0.25
    assert peak["restarts"] >= 20
    old = use[~new].groupby("signal")["value"].max()
    assert old["cpu_throttling"] < 0.1 and old["restarts"] == 0 and old["memory_ratio"] < 0.9
    # the new pods exist only since the rollout
    assert use[new]["timestamp"].min() >= pd_ts(rollout - timedelta(seconds=60))


@needs_servers
def test_alerts_come_through_the_real_pipeline(stack):
    rs, _ = _rollout(stack.objects)

    def firing():
        got = alerts.alert_dicts(stack.am)
        names = {(a["alertname"], a["labels"].get("ingress") or a["labels"].get("pod", "")) for a in got}
        want = {("Watchdog", ""), ("NginxIngressHigh5xxRatio", "checkout"), ("NginxIngressHighLatency", "checkout")}
        crash = any(a["alertname"] == "KubePodCrashLooping" and a["labels"]["pod"].startswith(rs["metadata"]["name"])
                    for a in got)
        others = {"KubeDeploymentRolloutStuck", "CertManagerCertExpirySoon", "CertManagerCertNotReady"}
        return got if want <= names and crash and others <= {a["alertname"] for a in got} else None

    got = _poll(firing, timeout=120)
    assert got, f"alerts never arrived: {alerts.alert_dicts(stack.am)}"
    assert all(a["state"] == "active" for a in got)
    for a in got:  # nothing about the cart service, its ingress or its pods
        labels = a["labels"]
        assert "cart" not in (labels.get("ingress"), labels.get("service"), labels.get("deployment")), a
        assert not labels.get("pod", "").startswith("cart-"), a
    crash = next(a for a in got if a["alertname"] == "KubePodCrashLooping")
    assert crash["severity"] == "warning" and crash["summary"] == "Pod is crash looping."
    assert "CrashLoopBackOff" in crash["description"]
    names = {a["alertname"] for a in got}
    assert {"KubeDeploymentRolloutStuck", "CertManagerCertExpirySoon", "CertManagerCertNotReady",
            "NginxIngressHighLatency"} <= names
    assert "KubeDeploymentReplicasMismatch" not in names  # checkout keeps 3 of 3 available (old revision)
    df = alerts.alerts(stack.am, {"alertname": "NginxIngressHigh5xxRatio"})
    assert list(df["labels"].map(lambda x: x["ingress"])) == ["checkout"]


@needs_servers
def test_live_samples_continue_after_the_backfill(stack):
    up = _poll(lambda: len(metrics.query(stack.prom, 'up{job="sandbox-exporter"} == 1')) > 0, timeout=90)
    assert up, "Prometheus never scraped the sandbox exporter"
    df = _poll(lambda: (lambda d: d if len(d) and d["value"].min() > stack.obs.model.end else None)(
        metrics.query(stack.prom, 'timestamp(nginx_ingress_controller_requests{ingress="cart"})')), timeout=90)
    assert df is not None
    # the live sample continues the counter: no reset at the seam
    assert len(metrics.query(stack.prom, "resets(nginx_ingress_controller_requests[15m]) > 0")) == 0


@needs_servers
def test_long_window_is_chunked_and_merged_gap_free(stack, monkeypatch):
    prom = metrics.connect(stack.prom)
    requests = []
    original = prom.custom_query_range

    def recording(query, start_time, end_time, step, **kw):
        requests.append((start_time, end_time, float(step)))
        return original(query, start_time=start_time, end_time=end_time, step=step, **kw)

    monkeypatch.setattr(prom, "custom_query_range", recording)
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(days=2, hours=12)  # 14,401 points at 15 s: two requests
    q = 'sum by (ingress) (rate(nginx_ingress_controller_requests{namespace="shop", ingress="cart"}[10m]))'
    df = metrics.range_query(prom, q, start, end, 15)
    assert len(requests) == 2
    assert all(metrics.points(a, b, s) <= metrics.MAX_POINTS for a, b, s in requests)
    ts = df["timestamp"]
    assert ts.is_monotonic_increasing and ts.is_unique
    assert set(ts.diff().dropna().dt.total_seconds()) == {15.0}
    plan = metrics.plan_chunks(start, end, 15)
    assert len(df) == sum(metrics.points(a, b, s) for a, b, s in plan)
    assert df["value"].notna().all() and (df["value"] > 0).all()
    # chunked and unchunked answers are the same
    requests.clear()
    day = (end - timedelta(days=1), end)
    small = metrics.range_query(prom, q, *day, 30, max_points=1000)
    whole = metrics.range_query(prom, q, *day, 30)
    assert len(requests) == 4
    assert small.equals(whole)


@needs_servers
def test_prometheus_errors_are_mapped(stack):
    with pytest.raises(InvalidInput, match="parse error"):
        metrics.query(stack.prom, "sum(")
    prom = metrics.connect(stack.prom)
    end = datetime.now(UTC)
    with pytest.raises(InvalidInput, match="11,000"):  # what the planner avoids
        metrics._call(prom, "custom_query_range", "up", start_time=end - timedelta(days=1), end_time=end, step="1")


@needs_servers
def test_stop_ends_only_its_own_processes(stack, tmp_path):
    obs = Observability(tmp_path / "obs", stack.objects, datetime.now(UTC), history=timedelta(hours=1))
    obs.start()
    pids = [p.pid for p in obs.procs.values()]
    assert all(_alive(pid) for pid in pids)
    assert set(observability.stop_recorded(tmp_path / "obs")) == set(pids)
    assert _poll(lambda: not any(_alive(pid) for pid in pids), timeout=20, interval=0.2)
    obs.stop()  # already gone: still fine
    assert observability.read_state(tmp_path / "obs") is None
    assert all(p.poll() is None for p in stack.obs.procs.values())  # the module's servers still run


@needs_servers
def test_a_port_taken_meanwhile_is_retried(stack, tmp_path, monkeypatch):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    real = observability.free_port
    monkeypatch.setattr(observability, "free_port", lambda: ports.pop() if ports else real())
    obs = Observability(tmp_path / "obs", stack.objects, history=timedelta(minutes=30))
    try:
        urls = obs.start()
        assert not urls["alertmanager"].endswith(f":{taken.getsockname()[1]}")
        assert alerts.check(urls["alertmanager"])["ok"]
        assert "address already in use" in (tmp_path / "obs" / "alertmanager" / "alertmanager.failed.log").read_text()
    finally:
        obs.stop()
        taken.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@needs_servers
def test_rules_pass_promtool_check():
    import subprocess

    files = sorted(str(f) for f in observability.RULES_DIR.glob("*.yaml"))
    assert len(files) >= 4
    out = subprocess.run([observability.find_binary("promtool"), "check", "rules", *files],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Watchdog" in "".join(open(f).read() for f in files)


def test_missing_binaries_are_named_with_their_package(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOKS_PROMETHEUS_BIN", str(tmp_path / "no-such-prometheus"))
    with pytest.raises(MissingBinary, match="RUNBOOKS_PROMETHEUS_BIN"):
        Observability(tmp_path, []).start()
    monkeypatch.delenv("RUNBOOKS_PROMETHEUS_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    for var in ("RUNBOOKS_PROMTOOL_BIN", "RUNBOOKS_ALERTMANAGER_BIN"):
        monkeypatch.delenv(var, raising=False)
    messages = missing_binaries()
    assert len(messages) == 3
    assert any("apt-get install --no-install-recommends prometheus-alertmanager" in m for m in messages)
    with pytest.raises(MissingBinary, match="apt-get install --no-install-recommends prometheus"):
        Observability(tmp_path, []).start()
    assert isinstance(MissingBinary("x"), observability.Unavailable)
