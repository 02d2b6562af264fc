"""Reads that get 429/5xx are retried a bounded number of times with backoff; writes are sent once.

The server here is a fault injector on a free loopback port (it answers 503 a given number of
times, then 200); the client is the product's own request path, unchanged."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from runbooks import errors, kube


class Faulty(BaseHTTPRequestHandler):
    failures = 0
    seen: list[tuple[str, float]] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append((self.command, time.monotonic()))
        if type(self).failures > 0:
            type(self).failures -= 1
            body, status = json.dumps({"kind": "Status", "message": "etcd is busy"}).encode(), 503
        else:
            body, status = json.dumps({"kind": "ConfigMap", "metadata": {"name": "x"}}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Faulty)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Faulty.seen = []
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def cluster_for(httpd):
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    return kube.Cluster(client.ApiClient(cfg), "faulty", cfg.host)


@pytest.mark.timeout(30)
def test_a_read_is_retried_with_backoff_until_it_succeeds(server):
    Faulty.failures = 2
    obj = kube.request(cluster_for(server), "GET", "/api/v1/namespaces/a/configmaps/x")
    assert obj["metadata"]["name"] == "x"
    times = [t for m, t in Faulty.seen if m == "GET"]
    assert len(times) == 3
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= kube.BACKOFF_S * 0.9 and gaps[1] >= 2 * kube.BACKOFF_S * 0.9  # backing off


@pytest.mark.timeout(30)
def test_read_retries_are_bounded(server):
    Faulty.failures = 100
    with pytest.raises(errors.Unavailable, match="HTTP 503"):
        kube.request(cluster_for(server), "GET", "/api/v1/namespaces/a/configmaps/x")
    assert len(Faulty.seen) == kube.READ_ATTEMPTS
    Faulty.seen, Faulty.failures = [], 100
    with pytest.raises(errors.Unavailable):
        list(kube.iter_pages(cluster_for(server), "configmaps", "a"))
    assert len(Faulty.seen) == kube.READ_ATTEMPTS


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
def test_a_write_is_never_sent_twice(server, method):
    Faulty.failures = 1
    with pytest.raises(errors.Unavailable, match="HTTP 503"):
        kube.request(cluster_for(server), method, "/api/v1/namespaces/a/configmaps" +
                     ("" if method == "POST" else "/x"), body={} if method != "DELETE" else None,
                     content_type="application/merge-patch+json" if method == "PATCH" else "application/json")
    assert [m for m, _ in Faulty.seen] == [method]
