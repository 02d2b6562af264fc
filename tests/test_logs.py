"""runbooks.logs against the sandbox log store (official client over HTTP), fed from the
default scenario: the checkout incident must show in the logs, cart must not."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbooks import logs
from runbooks.errors import Forbidden, InvalidInput, Unavailable
from runbooks_sandbox import loggen, podlogs
from runbooks_sandbox.logstore import LogStore

pytestmark = pytest.mark.timeout(120)

REVISION = "deployment.kubernetes.io/revision"
TARGET = 30_000


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


class Env:
    """The scenario as the log tests see it."""

    def __init__(self, sandbox):
        self.objects = loggen.sandbox_objects(sandbox)
        self.now = sandbox.store.clock()
        self.docs = list(loggen.generate_documents(self.objects, self.now, target_docs=TARGET))
        self.store = LogStore(clock=sandbox.store.clock)
        self.store.add(self.docs)
        self.url = self.store.start()
        self.src = logs.connect(self.url)
        rs = [o for o in self.objects if o["kind"] == "ReplicaSet" and o["metadata"]["namespace"] == "shop"
              and o["metadata"]["name"].startswith("checkout-")]
        rs.sort(key=lambda o: int(o["metadata"]["annotations"][REVISION]))
        self.new_rs, self.old_rs = rs[-1], rs[-2]
        self.rollout = _parse(self.new_rs["metadata"]["creationTimestamp"])

        def pods_of(replicaset):
            return [o for o in self.objects if o["kind"] == "Pod" and any(
                ref["name"] == replicaset["metadata"]["name"] for ref in o["metadata"].get("ownerReferences", []))]

        self.new_pods = pods_of(self.new_rs)
        self.old_pods = pods_of(self.old_rs)


@pytest.fixture(scope="module")
def env(sandbox):
    e = Env(sandbox)
    yield e
    e.store.stop()


# -- the generated documents ------------------------------------------------------------------


def test_documents_have_the_fluent_bit_shape(env):
    assert 0.6 * TARGET < len(env.docs) < 1.4 * TARGET
    oldest = env.now - timedelta(days=7, seconds=1)
    pods = {o["metadata"]["name"]: o for o in env.objects if o["kind"] == "Pod"}
    for doc in random.Random(1).sample(env.docs, 500):
        k = doc["kubernetes"]
        pod = pods[k["pod_name"]]
        assert oldest <= _parse(doc["@timestamp"]) <= env.now
        assert doc["time"].startswith(doc["@timestamp"][:23]) and len(doc["time"]) == 30
        assert loggen.index_name(doc) == "logstash-" + doc["@timestamp"][:10].replace("-", ".")
        assert doc["stream"] in ("stdout", "stderr")
        assert k["namespace_name"] == pod["metadata"]["namespace"]
        assert k["pod_id"] == pod["metadata"]["uid"]
        assert k["host"] == pod["spec"]["nodeName"]
        assert k["container_image"] in [c["image"] for c in pod["spec"]["containers"]]
        assert k["labels"] == {key.replace(".", "_"): v for key, v in pod["metadata"]["labels"].items()}
        if "level" in doc:
            assert doc["log"].startswith("{")
            assert doc["level"] in ("trace", "debug", "info", "warn", "error", "fatal")
        else:
            assert "message" not in doc or doc["log"].startswith("{")
    # every running container contributes, the quiet ones included
    assert {d["kubernetes"]["pod_name"] for d in env.docs} >= {
        name for name, p in pods.items() if p["metadata"]["namespace"] in ("shop", "payments", "kube-system")}


def test_crash_loop_lines_are_what_kubectl_logs_previous_shows(env):
    pod = env.new_pods[0]
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    start, end = _parse(last["startedAt"]), _parse(last["finishedAt"])
    expected = podlogs.log_lines(pod, "checkout", now=env.now, previous=True)
    got = sorted((d for d in env.docs if d["kubernetes"]["pod_name"] == pod["metadata"]["name"]
                  and start <= _parse(d["time"]) <= end), key=lambda d: d["time"])
    assert len(expected) > 10
    assert [d["log"] for d in got] == [line.text for line in expected]
    assert [d["time"] for d in got] == [podlogs.format_timestamp(line.time_ns) for line in expected]
    assert [d["stream"] for d in got] == [line.stream for line in expected]
    # every life since the rollout is there, on the kubelet's back-off schedule
    starts = {d["time"] for d in env.docs if d["kubernetes"]["pod_name"] == pod["metadata"]["name"]
              and d["log"].startswith("Picked up JAVA_TOOL_OPTIONS")}
    assert len(starts) >= pod["status"]["containerStatuses"][0]["restartCount"]


def test_healthy_startup_lines_are_what_kubectl_logs_shows(env):
    pod = next(o for o in env.objects if o["kind"] == "Pod" and o["metadata"]["name"].startswith("frontend-"))
    started = _parse(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    assert started > env.now - timedelta(days=7)  # the scenario's frontend rolled out 6 days ago
    startup = len(podlogs.load_log_templates()["apps"]["frontend"]["startup"])
    expected = podlogs.log_lines(pod, "frontend", now=started + timedelta(seconds=1))[:startup]
    got = sorted((d for d in env.docs if d["kubernetes"]["pod_name"] == pod["metadata"]["name"]),
                 key=lambda d: d["time"])[:startup]
    assert [(d["time"], d["log"]) for d in got] == \
        [(podlogs.format_timestamp(line.time_ns), line.text) for line in expected]


def test_fast_renderer_renders_exactly_like_podlogs(env):
    templates = podlogs.load_log_templates()
    profiles = [templates["default"]] + list(templates["apps"].values())
    profiles += [p["failing"] for p in templates["apps"].values() if "failing" in p]
    pod = next(o for o in env.objects if o["kind"] == "Pod" and o["metadata"]["name"].startswith("frontend-"))
    spec = pod["spec"]["containers"][0]
    checked = 0
    for profile in profiles:
        fields = {**next((p.get("fields", {}) for p in templates["apps"].values() if p is profile
                          or p.get("failing") is profile), {}), **profile.get("fields", {})}
        slow, fast = podlogs._Context(pod, spec, fields), loggen._FastContext(pod, spec, fields)
        for entry in profile.get("lines", []) + profile.get("startup", []) + profile.get("crash", []):
            text = entry if isinstance(entry, str) else entry["text"]
            for seed in range(3):
                t = 1_700_000_000_123_456_789 + seed * 7_000_000_000
                assert fast.render(text, t, random.Random(seed), {}) == \
                    slow.render(text, t, random.Random(seed), {}), text
                checked += 1
    assert checked > 100


# -- the incident through runbooks.logs ----------------------------------------------------------


def test_checkout_incident_shows_as_an_error_burst_from_the_new_pods(env):
    df = logs.volume_histogram(env.src, "shop", "checkout", start=env.now - timedelta(hours=6), end=env.now,
                               interval="10m")
    assert df.attrs["interval"] == "10m" and len(df.attrs["buckets"]) in (36, 37)  # now is not aligned
    errors = df[df["level"] == "error"]
    before = errors[errors["time"] < env.rollout - timedelta(minutes=10)]["count"].sum()
    after = errors[errors["time"] >= env.rollout]["count"].sum()
    assert before == 0
    assert after >= 100
    new_names = {p["metadata"]["name"] for p in env.new_pods}
    assert set(errors["pod"]) <= new_names
    wide = logs.volume_by(df, "level")
    assert len(wide) == len(df.attrs["buckets"]) and wide["error"].sum() == errors["count"].sum()
    # the old ReplicaSet's pods keep serving normally
    old = df[df["pod"].isin({p["metadata"]["name"] for p in env.old_pods})]
    assert set(old["level"]) <= {"info", "warn"}
    by_pod = logs.volume_by(df, "pod")
    assert set(by_pod.columns) >= new_names


def test_top_error_is_the_database_connection_error(env):
    top = logs.top_errors(env.src, "shop", "checkout", lookback="6h", now=env.now)
    assert top.attrs["complete"] and top.attrs["total"] == top["count"].sum() or len(top) == 20
    first = top.iloc[0]
    assert first["pattern"] == "could not connect to database: connection refused (payments-db:<n>)"
    assert first["count"] > 2 * top.iloc[1]["count"] or first["count"] > 50
    assert set(first["pods"]) <= {p["metadata"]["name"] for p in env.new_pods}
    assert first["first_seen"] >= env.rollout
    assert first["last_seen"] <= env.now
    assert "payments-db:5432" in first["example"]
    patterns = " | ".join(top["pattern"])
    assert "OutOfMemoryError" in patterns  # a plain-text stack trace header, found by keyword
    assert "Failed to place order <uuid>" in patterns  # uuids don't split the group
    assert top.iloc[0]["levels"] == ["error"]


def test_healthy_service_shows_no_burst(env):
    df = logs.volume_histogram(env.src, "shop", "cart", lookback="6h", now=env.now)
    assert df.attrs["total"] > 20
    errors = df[df["level"] == "error"]["count"].sum()
    assert errors < 10
    top = logs.top_errors(env.src, "shop", "cart", lookback="2h", now=env.now)
    assert top["count"].sum() < 10
    assert not top["pattern"].str.contains("database").any()


def test_labels_select_the_same_workload(env):
    by_prefix = logs.volume_histogram(env.src, "shop", "checkout", lookback="3h", now=env.now)
    by_label = logs.volume_histogram(env.src, "shop", labels={"app.kubernetes.io/name": "checkout"},
                                     lookback="3h", now=env.now)
    assert by_prefix.attrs["total"] == by_label.attrs["total"] > 0


def test_scan_covers_what_aggregation_cannot(env):
    full = logs.top_errors(env.src, lookback="7d", now=env.now)
    assert full.attrs["scanned"] > 0  # cert-manager's errors are longer than the keyword limit
    assert full.attrs["complete"]
    narrow = logs.top_errors(env.src, lookback="7d", now=env.now, max_groups=1)
    assert narrow.attrs["from_aggregation"] < full.attrs["from_aggregation"]
    assert narrow.attrs["complete"]
    assert dict(zip(narrow["pattern"], narrow["count"], strict=True)) == \
        dict(zip(full["pattern"], full["count"], strict=True))
    bounded = logs.top_errors(env.src, lookback="7d", now=env.now, max_groups=1, max_scan=5)
    assert bounded.attrs["scanned"] == 5 and bounded.attrs["scan_limit_hit"] and not bounded.attrs["complete"]


def test_sample_lines_around_a_time(env):
    pod = env.new_pods[0]["metadata"]["name"]
    around = env.now - timedelta(minutes=30)
    lines = logs.sample_lines(env.src, "shop", "checkout", around=around, pod=pod, n=20)
    assert 0 < len(lines) <= 20
    assert list(lines["time"]) == sorted(lines["time"])
    assert set(lines["pod"]) == {pod}
    assert (abs(lines["time"] - around) <= timedelta(hours=1)).all()
    before = (lines["time"] <= around).sum()
    assert before >= min(10, len(lines) - (lines["time"] > around).sum())
    errors = logs.sample_lines(env.src, "shop", "checkout", around=around, n=10, errors_only=True)
    assert len(errors) and all(lvl == "error" or "Exception" in line
                               for lvl, line in zip(errors["level"], errors["line"], strict=True))


def test_check_preflight(env):
    ok = logs.check(env.src, now=env.now + timedelta(seconds=5))
    assert ok["ok"] and ok["reachable"] and ok["indices"] >= 7 and ok["docs"] == len(env.docs)
    assert ok["fields"]["kubernetes.pod_name"] == "kubernetes.pod_name.keyword"
    stale = logs.check(env.src, now=env.now + timedelta(hours=2))
    assert not stale["ok"] and "old" in stale["problems"][0]
    none = logs.check(logs.connect(env.url, "nothing-*"))
    assert not none["ok"] and "matches no index" in none["problems"][0]
    down = logs.check(logs.connect(_closed_port_url()))
    assert down["reachable"] is False and down["error"] == "Unavailable"


# -- errors and connections ---------------------------------------------------------------------


def _closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"


class FakeServer:
    """A tiny HTTP server answering one fixed response and recording request headers."""

    def __init__(self, status: int, body: dict, product: bool = True):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append({k.lower(): v for k, v in self.headers.items()})
                data = json.dumps(body).encode()
                self.send_response(status)
                if product:
                    self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_errors_are_translated():
    with pytest.raises(Unavailable, match="cannot reach the log store"):
        logs.volume_histogram(logs.connect(_closed_port_url()), "shop")
    for status in (401, 403):
        fake = FakeServer(status, {"error": {"root_cause": [{"type": "security_exception", "reason": "nope"}],
                                             "type": "security_exception", "reason": "nope"}, "status": status})
        try:
            with pytest.raises(Forbidden, match=f"HTTP {status}"):
                logs.top_errors(logs.connect(fake.url), "shop")
        finally:
            fake.close()
    fake = FakeServer(200, {"hello": "not elasticsearch"}, product=False)
    try:
        with pytest.raises(InvalidInput, match="does not answer as Elasticsearch"):
            logs.volume_histogram(logs.connect(fake.url), "shop")
    finally:
        fake.close()


def test_credentials_come_from_the_environment_only():
    fake = FakeServer(200, {"version": {"number": "9.1.0"}, "tagline": "You Know, for Search"})
    try:
        logs.check(logs.connect(fake.url, env={"ES_API_KEY": "key-id:key-secret"}))
        assert fake.requests[0]["authorization"] == "ApiKey " + base64.b64encode(b"key-id:key-secret").decode()
        logs.check(logs.connect(fake.url, env={"ES_USERNAME": "elastic", "ES_PASSWORD": "s3cret"}))
        assert fake.requests[-1]["authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()
        logs.check(logs.connect(fake.url, env={}))
        assert "authorization" not in fake.requests[-1]
    finally:
        fake.close()
    with pytest.raises(InvalidInput, match="plain http"):
        logs.connect("http://logs.example.com:9200", env={"ES_API_KEY": "abc"})
    with pytest.raises(InvalidInput, match="together"):
        logs.connect("https://logs.example.com:9200", env={"ES_USERNAME": "elastic"})
    with pytest.raises(InvalidInput, match="only one kind"):
        logs.connect("https://logs.example.com:9200", env={"ES_API_KEY": "a", "ES_USERNAME": "u",
                                                           "ES_PASSWORD": "p"})


@pytest.mark.parametrize("kwargs,message", [
    ({"url": "logs.example.com:9200"}, "must look like"),
    ({"url": "http://127.0.0.1:9200", "index": "logs with space"}, "index pattern"),
    ({"url": "http://127.0.0.1:9200", "timeout": 0}, "timeout"),
    ({"url": "https://127.0.0.1:9200", "ca_certs": "/nonexistent/ca.pem"}, "ca_certs"),
])
def test_connect_validates_parameters(kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        logs.connect(**kwargs, env={})


def test_parameters_are_validated(env):
    with pytest.raises(InvalidInput, match="namespace"):
        logs.volume_histogram(env.src, "Shop_1")
    with pytest.raises(InvalidInput, match="lookback"):
        logs.top_errors(env.src, "shop", lookback="6 hours")
    with pytest.raises(InvalidInput, match="timezone-aware"):
        logs.volume_histogram(env.src, "shop", start=datetime(2024, 1, 1))
    with pytest.raises(InvalidInput, match="before end"):
        logs.volume_histogram(env.src, "shop", start=env.now, end=env.now - timedelta(hours=1))
    with pytest.raises(InvalidInput, match="interval"):
        logs.volume_histogram(env.src, "shop", lookback="7d", interval="1s", now=env.now)
    for bad in ("500ms", "1.5s"):  # Elasticsearch's fixed_interval takes whole units
        with pytest.raises(InvalidInput, match=f"interval '{bad}' must be a whole number of seconds"):
            logs.volume_histogram(env.src, "shop", interval=bad, now=env.now)


@pytest.mark.parametrize("message,pattern", [
    ("could not connect to database: connection refused (payments-db:5432)",
     "could not connect to database: connection refused (payments-db:<n>)"),
    ("Order 3f0c6b2e-1d2a-4c3b-9a8f-0e1d2c3b4a59 placed for cart 4be1a0c9f3d2 (3 items, 41.20 EUR) in 87 ms",
     "Order <uuid> placed for cart <hex> (<n> items, <n> EUR) in <duration>"),
    ("HikariPool-1 - Connection is not available, request timed out after 5000ms (total=0, waiting=12)",
     "HikariPool-<n> - Connection is not available, request timed out after <duration> (total=<n>, waiting=<n>)"),
    ("read udp 10.244.1.7:53211->10.0.0.2:53: i/o timeout", "read udp <ip>-><ip>: i/o timeout"),
    ("back-off 5m0s restarting failed container", "back-off <duration> restarting failed container"),
    ("E1126 19:18:38.123456       1 controller.go:157] failed", "E<time> <n> controller.go:<n>] failed"),
    ("pointer 0x7ffd4a2c at 2026-11-26T19:18:38.123Z", "pointer <hex> at <time>"),
])
def test_normalise(message, pattern):
    assert logs.normalise(message) == pattern


def test_window_and_interval_helpers():
    end = datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert logs.window(end=end, lookback="6h") == (end - timedelta(hours=6), end)
    assert logs.choose_interval(end - timedelta(hours=6), end) == "2m"
    assert logs.choose_interval(end - timedelta(days=7), end) == "1h"
    assert logs.choose_interval(end - timedelta(minutes=5), end) == "10s"
    counts = Counter(logs.choose_interval(end - timedelta(hours=h), end) for h in range(1, 200))
    assert all(v for v in counts.values())


def test_incremental_generation_continues_the_same_story(env):
    every = loggen.sampling_step(env.objects, env.now, target_docs=TARGET)
    cut = env.now - timedelta(minutes=20)
    start = env.now - timedelta(hours=3)

    def key(d):
        return d["kubernetes"]["pod_name"], d["time"], d["log"]

    whole = sorted(map(key, loggen.generate_documents(env.objects, env.now, start=start, every=every)))
    first = list(loggen.generate_documents(env.objects, cut, start=start, every=every))
    second = list(loggen.generate_documents(env.objects, env.now, start=cut + timedelta(microseconds=1),
                                            every=every))
    assert second and first
    assert sorted(map(key, first + second)) == whole


def test_serve_next_to_the_sandbox(sandbox):
    served = loggen.serve(sandbox, follow=None, target_docs=5_000, days=1)
    try:
        assert served.store.indices() and sum(served.store.indices().values()) == served.documents > 1000
        src = logs.connect(served.url)
        assert logs.check(src)["ok"]
        assert served.step() >= 0 and served.every >= 1
    finally:
        served.stop()


def test_the_level_inside_an_unparsed_json_line_counts_as_that_level(sandbox):
    """Fluent-bit without Merge_Log ships the app's JSON as text in `log`: no `level` field."""
    now = sandbox.store.clock()
    docs = []
    for i, level in enumerate(["error", "error", "info", "warn"]):
        t = (now - timedelta(minutes=5 + i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        docs.append({"@timestamp": t, "stream": "stdout", "log": json.dumps({"level": level, "msg": f"m{i}"}),
                     "kubernetes": {"namespace_name": "shop", "pod_name": "checkout-abc",
                                    "container_name": "checkout", "labels": {"app": "checkout"}}})
    docs.append({"@timestamp": (now - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                 "stream": "stderr", "log": "plain text, no level",
                 "kubernetes": {"namespace_name": "shop", "pod_name": "checkout-abc",
                                "container_name": "checkout", "labels": {"app": "checkout"}}})
    store = LogStore(clock=sandbox.store.clock)
    store.add(docs)
    try:
        src = logs.connect(store.start())
        hist = logs.volume_histogram(src, "shop", pod="checkout-abc", lookback="1h", now=now)
        by_level = hist.groupby("level")["count"].sum().to_dict()
        assert by_level == {"error": 2, "info": 1, "warn": 1, "unknown": 1}
    finally:
        store.stop()
