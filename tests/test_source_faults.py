"""A data source that dies after its check (Prometheus killed mid-query): its section empties, a
warning records it, and the investigation goes on.

The server is a fault injector on a free loopback port: it answers Prometheus's build-info check,
then drops every query connection without an answer, as a killed process does."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runbooks import incident, metrics, params
from runbooks import runbook as rb


class DiesMidQuery(BaseHTTPRequestHandler):
    queries = 0

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/api/v1/status/buildinfo"):
            body = json.dumps({"status": "success", "data": {"version": "2.42.0"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        type(self).queries += 1
        self.close_connection = True
        self.connection.shutdown(2)  # the process is gone: no status line, no body

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def prometheus():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DiesMidQuery)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    DiesMidQuery.queries = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(120)
def test_prometheus_dying_mid_query_degrades_its_section(prometheus):
    p = params.IncidentParams(prometheus_url=prometheus)
    run = rb.Run("incident-investigation", p)
    sources = incident.check_sources(run, {"prometheus": metrics.connect(prometheus, retries=0)})
    assert run.sources["prometheus"]["state"] == "ok"  # it passed its check
    end = datetime.now(UTC)
    got = incident.gather_signals(sources, p, end - timedelta(hours=1), end)
    assert DiesMidQuery.queries >= 1
    assert got.red.empty and got.use.empty and got.anomaly is None
    assert run.sources["prometheus"]["state"] == "down"
    finding = run.findings["data-source-down/prometheus"]
    assert finding.severity == "warning" and "went down during the run" in finding.title
    assert sources["prometheus"] is None  # later sections skip it
    # the rest of the investigation goes on with what it has
    events = incident.timeline(incident.pd.DataFrame(), incident.pd.DataFrame(columns=["alertname"]), got)
    assert events is not None
