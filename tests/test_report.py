"""runbooks.report: the HTML report and the table helpers (no kernel)."""

from __future__ import annotations

import base64
import gzip
import html as html_lib
import json
import re

import nbformat
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from runbooks import charts, model, report, reporthtml

SUMMARY = {
    "runbook": "cluster-health", "env": "sandbox", "run_id": "20250101T000000Z",
    "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:09Z", "duration_s": 9.0,
    "status": "findings", "exit_code": 1, "kube_context": "sandbox",
    "server": "https://127.0.0.1:6443",
    "window": {"start": "2024-12-31T00:00:00Z", "end": "2025-01-01T00:00:00Z"},
    "findings": [
        {"id": "node/n2", "severity": "critical", "title": "Node n2 is NotReady",
         "detail": "kubelet stopped posting status", "resource": "Node/n2", "evidence": {"since": "1h"}},
        {"id": "pod/x", "severity": "warning", "title": "<b>escaped</b>", "detail": "",
         "resource": None, "evidence": None},
    ],
    "counts": {"ok": 0, "info": 0, "warning": 1, "critical": 1},
    "plan": None, "data_sources": {"kubernetes": {"state": "ok", "detail": ""}}, "error": None,
}


def figure_output(title: str):
    spec = json.loads(pio.to_json(go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": title})))
    return nbformat.v4.new_output("display_data", data={report.PLOTLY_MIME: spec, "text/plain": title})


def executed_notebook(figures: int = 2):
    params = nbformat.v4.new_code_cell("SECRET_SOURCE_PARAMS = 1", metadata={"tags": ["parameters"]})
    code = nbformat.v4.new_code_cell("UNIQUE_CODE_MARKER = run.something()")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="narrative output line\n"),
        nbformat.v4.new_output("display_data", data={
            model.RECORD_MIME: {"kind": "finding", "data": {"id": "RECORD_MARKER"}}, "text/plain": ""}),
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                         "version_minor": 0},
            "text/plain": "Button(description='WIDGET_MARKER')"}),
    ]
    charts = nbformat.v4.new_code_cell("for f in figs: report.show_figure(f)")
    charts.outputs = [figure_output(f"chart {i}") for i in range(figures)]
    cells = [nbformat.v4.new_markdown_cell("# Cluster health\n\n**Meaning**: the daily check."),
             params, code, nbformat.v4.new_markdown_cell("## Charts"), charts]
    nb = nbformat.v4.new_notebook(cells=cells)
    return nbformat.reads(nbformat.writes(nb), as_version=4)


@pytest.fixture(scope="module")
def html():
    return reporthtml.render_html(executed_notebook(), SUMMARY)


def test_report_has_no_code_and_no_prompts(html):
    for marker in ("UNIQUE_CODE_MARKER", "SECRET_SOURCE_PARAMS", "run.something", "show_figure"):
        assert marker not in html
    assert 'class="jp-InputPrompt' not in html and 'class="jp-OutputPrompt' not in html
    assert "jp-CodeMirrorEditor" not in html.split("</style>")[-1]
    assert "narrative output line" in html and "Meaning" in html


def test_report_strips_records_and_widgets(html):
    assert "RECORD_MARKER" not in html and model.RECORD_MIME not in html
    assert "WIDGET_MARKER" not in html


def test_report_header_then_findings_then_narrative(html):
    body = html[html.index("<body"):]
    for text in ("cluster-health", "sandbox", "https://127.0.0.1:6443", "status: findings",
                 "2024-12-31 00:00 UTC", "Node n2 is NotReady", "Node/n2", "1 critical, 1 warning"):
        assert text in body
    assert body.index("Node n2 is NotReady") < body.index("Cluster health")
    assert "<b>escaped</b>" not in body and "&lt;b&gt;escaped&lt;/b&gt;" in body


def test_plotly_is_embedded_once_offline_and_small(html):
    assert len(re.findall(r"<script[^>]*id=.kr-plotly-js", html)) == 1
    blob = re.search(r"<script[^>]*id=.kr-plotly-js.[^>]*>([^<]+)</script>", html).group(1)
    code = gzip.decompress(base64.b64decode(blob)).decode()
    assert "plotly.js" in code[:300] and len(code) > 1_000_000
    assert len(re.findall(r"<div class=.kr-plot. id=.kr-plot-\d+.>", html)) == 2
    assert "Plotly.newPlot" in html
    assert not re.search(r"<script[^>]+src=", html)  # nothing from a CDN
    assert len(html.encode()) < reporthtml.MAX_REPORT_BYTES



def test_the_secret_scan_reads_all_of_the_report_but_the_embedded_plotly_js(html):
    from runbooks import secrets as sec

    scanned = reporthtml.without_plotly_js(html)
    assert reporthtml.plotly_js_blob() not in scanned and len(scanned) < len(html) - 1_000_000
    assert html.replace(reporthtml.plotly_js_blob(), "", 1) == scanned  # only the library's bytes are left out
    token = sec.Secret("api token", "tok-6f1c2e9a8b7d")
    leaked = html.replace("narrative output line", f"narrative output line {token.value}")
    assert [leak.kind for leak in sec.scan_text(reporthtml.without_plotly_js(leaked), [token], "report.html")] == [
        "api token"]
    # a script that only looks like the library's (other content) is scanned whole
    fake = html.replace(reporthtml.plotly_js_blob(), base64.b64encode(token.value.encode() * 3).decode(), 1)
    assert reporthtml.without_plotly_js(fake) == fake
    assert sec.scan_text(reporthtml.without_plotly_js(fake), [token], "report.html")
    no_figures = reporthtml.render_html(executed_notebook(figures=0), SUMMARY)
    assert reporthtml.without_plotly_js(no_figures) == no_figures


def test_compressed_plotly_js_is_cached_per_version_and_checked(tmp_path, monkeypatch):
    import plotly
    from plotly.offline import get_plotlyjs

    monkeypatch.setenv("RUNBOOKS_CACHE_DIR", str(tmp_path / "cache"))
    reporthtml.plotly_js_blob.cache_clear()
    blob = reporthtml.plotly_js_blob()
    cached = tmp_path / "cache" / f"plotly-{plotly.__version__}.min.js.gz.b64"
    assert cached.read_text() == blob
    assert gzip.decompress(base64.b64decode(blob)) == get_plotlyjs().encode()

    stale = base64.b64encode(gzip.compress(b"not plotly")).decode()  # another build, or a damaged file
    cached.write_text(stale)
    reporthtml.plotly_js_blob.cache_clear()
    assert reporthtml.plotly_js_blob() == blob and cached.read_text() == blob  # rebuilt and rewritten

    raw = bytearray(base64.b64decode(blob))
    raw[len(raw) // 2] ^= 0xFF  # damaged in the middle, trailer intact
    cached.write_text(base64.b64encode(bytes(raw)).decode())
    reporthtml.plotly_js_blob.cache_clear()
    assert reporthtml.plotly_js_blob() == blob and cached.read_text() == blob

    cached.write_text("%%% not base64 %%%")
    reporthtml.plotly_js_blob.cache_clear()
    assert reporthtml.plotly_js_blob() == blob

    monkeypatch.setenv("RUNBOOKS_CACHE_DIR", str(cached / "under-a-file"))  # cannot be created
    reporthtml.plotly_js_blob.cache_clear()
    assert reporthtml.plotly_js_blob() == blob
    reporthtml.plotly_js_blob.cache_clear()

def test_figure_json_is_script_safe():
    nb = executed_notebook(figures=0)
    out = figure_output("</script><script>alert(1)</script>")
    nb.cells[-1].outputs = [out]
    html = reporthtml.render_html(nb, SUMMARY)
    assert "</script><script>alert(1)" not in html


def test_no_plotly_without_figures():
    html = reporthtml.render_html(executed_notebook(figures=0), SUMMARY)
    assert "kr-plotly-js" not in html


def test_table_helpers():
    df = pd.DataFrame({"pod": [f"p{i}" for i in range(5)], "restarts": range(5)})
    html = report.table(df, "pods", max_rows=3).to_html()
    assert "kr-table" in html and "first 3 of 5 rows" in html and "p4" not in html
    findings = [model.Finding(id="a", severity="info", title="fyi"),
                model.Finding(id="b", severity="critical", title="bad")]
    frame = report.findings_frame(findings)
    assert list(frame["severity"]) == ["critical", "info"]
    styled = report.findings_table(findings).to_html()
    assert "#b71c1c" in styled


def test_index_lists_runs():
    html = reporthtml.index_html([("sandbox/cluster-health/20250101T000000Z", {**SUMMARY, "report": "report.html"})])
    assert "sandbox/cluster-health/20250101T000000Z/report.html" in html and "findings (1)" in html


def test_chart_helpers():
    restarts = pd.DataFrame({"namespace": ["shop", "shop"], "workload": ["Deployment/a", "Deployment/b"],
                             "restarts": [3, 12]})
    fig = charts.restarts_chart(restarts)
    assert list(fig.data[0].x) == [3, 12] and fig.data[0].y[-1] == "shop/Deployment/b"
    assert charts.restarts_chart(restarts.iloc[0:0]).layout.annotations[0].text == "No container restarted."
    certs = pd.DataFrame({"namespace": ["a", "b", "c", "d"], "name": ["x", "y", "z", "bad"],
                          "days_left": [90.0, 20.0, -2.0, None], "not_after": ["", "", "", ""]})
    fig = charts.cert_expiry_chart(certs, warning_days=30, critical_days=7)
    assert list(fig.data[0].x) == [90.0, 20.0, -2.0]
    assert list(fig.data[0].marker.color) == ["#1b5e20", "#8a5300", "#b71c1c"]
    assert charts.cert_expiry_chart(certs.iloc[3:]).layout.annotations[0].text.startswith("No readable")


def _signal_frame(signal_values: dict[str, list[float]], start="2025-01-01T00:00:00Z", pod=None):
    times = pd.date_range(start, periods=4, freq="15s", tz="UTC")
    rows = [{"timestamp": t, "signal": sig, "value": v, **({"pod": pod} if pod else {})}
            for sig, values in signal_values.items() for t, v in zip(times, values, strict=True)]
    return pd.DataFrame(rows), times


def test_signal_charts_put_epoch_ms_on_a_date_axis_and_shade_the_anomaly():
    from runbooks.metrics import Anomaly

    red, times = _signal_frame({"request_rate": [5, 5, 4, 4], "error_ratio": [0, 0, .2, .3],
                                "latency_p50": [.1] * 4, "latency_p99": [.2, .2, 3, 3]})
    anomaly = Anomaly(start=times[2], end=None, peak_time=times[3], peak=.3, baseline=0, threshold=.05,
                      direction="up")
    fig = charts.golden_signals_chart(red, anomaly)
    assert [t.name for t in fig.data] == ["request_rate", "error_ratio", "p50", "p99"]
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y3", "y3"]  # one panel per signal, quantiles together
    assert list(fig.data[1].x) == [t.value / 1e6 for t in times] and list(fig.data[1].y) == [0, 0, .2, .3]
    assert {fig.layout[a].type for a in ("xaxis", "xaxis2", "xaxis3")} == {"date"}
    spec = json.loads(pio.to_json(fig))
    assert "bdata" in spec["data"][0]["x"]  # a compact binary block, not a list of strings
    shaded = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(shaded) == 3  # every panel; ongoing, so from the onset to the end of the data
    assert {(pd.Timestamp(s.x0), pd.Timestamp(s.x1)) for s in shaded} == {(times[2], times[3])}

    use, _ = _signal_frame({"cpu_throttling": [0, 0, .5, .7], "memory_ratio": [.5, .6, .9, 1.0]}, pod="p-1")
    fig = charts.saturation_chart(use, Anomaly(start=times[1], end=times[2], peak_time=times[2], peak=1,
                                               baseline=.5, threshold=.8, direction="up"))
    assert [(t.name, t.yaxis) for t in fig.data] == [("p-1", "y"), ("p-1", "y2")]
    assert list(fig.data[0].x) == [t.value / 1e6 for t in times]
    assert {(pd.Timestamp(s.x0), pd.Timestamp(s.x1)) for s in fig.layout.shapes if s.type == "rect"} \
        == {(times[1], times[2])}
    assert not [s for s in fig.layout.shapes if s.type == "line" and s.line.dash == "dot"]  # ended: no onset line
    assert charts.golden_signals_chart(red.iloc[0:0]).layout.annotations[0].text.startswith("Prometheus returned")


# ---- what people read: times, percentages, lists, folded lines, the opening paragraph ---------


def test_cells_read_as_text_not_python():
    import pandas as pd

    assert report.format_time("2026-12-02T20:54:00Z") == "2026-12-02 20:54 UTC"
    assert report.format_time(pd.Timestamp("2026-12-02T20:54:07.5Z")) == "2026-12-02 20:54:07 UTC"
    assert report.format_time("2026-12-02T21:54:00+01:00", seconds=False) == "2026-12-02 20:54 UTC"
    assert report.format_time("not a time") == "not a time"
    assert report.format_value(0.1634, "error_ratio") == "16.3%"
    assert report.format_value(0.1634, "score") == "0.1634"
    assert report.format_value(["checkout-7d9f-abc", "checkout-7d9f-def"]) == "checkout-7d9f-abc, checkout-7d9f-def"
    assert report.format_value({"app": "checkout"}) == "app=checkout"
    assert report.format_value(None) == "" and report.format_value(float("nan")) == ""

    line = '{"level":"error","msg":"payment failed","order":"' + "x" * 300 + '"}'
    folded = report.cell_html(line)
    assert folded.startswith("<details class='kr-fold'><summary>") and "…</summary>" in folded
    assert html_lib.escape(line) in folded  # the full line, one click away
    assert report.cell_html("<b>short</b>") == "&lt;b&gt;short&lt;/b&gt;"

    df = pd.DataFrame({"pods": [["checkout-a", "checkout-b"]], "first": [pd.Timestamp("2026-12-02T20:54Z")],
                       "error_ratio": [0.25], "log": [line]})
    out = report.table(df, caption="t").to_html()
    assert "checkout-a, checkout-b" in out and "[&#x27;checkout" not in out and "['checkout" not in out
    assert "2026-12-02 20:54 UTC" in out and "25.0%" in out and "kr-fold" in out
    assert "overflow-x:auto" in report.scroll_box(out)


def test_the_report_opens_with_what_happened():
    summary = {
        "window": {"start": "2026-12-02T14:54:00+00:00", "end": "2026-12-02T20:54:00+00:00"},
        "counts": {"critical": 2, "warning": 1},
        "findings": [
            {"id": "incident/shop/checkout", "severity": "critical",
             "title": "the 5xx error ratio of shop/checkout left its baseline at 19:10 UTC"},
            {"id": "likely-cause/1/rollout", "severity": "info",
             "title": "Likely cause #1: revision 7 rolled out 4 minutes before the errors began"},
        ],
        "plan": {"id": "0123456789ab", "changes": [{}], "applied": True},
    }
    text = reporthtml.what_happened(summary)
    assert text.startswith("Between 2026-12-02 14:54 UTC and 2026-12-02 20:54 UTC: the 5xx error ratio")
    assert "Most likely cause: revision 7 rolled out 4 minutes before the errors began." in text
    assert "Plan 0123456789ab was applied" in text
    head = reporthtml.header_html(summary | {"runbook": "incident-investigation", "env": "sandbox"})
    assert head.index("What happened") < head.index("kr-findings")
    assert "Nothing was changed." in reporthtml.what_happened({"findings": []})


def test_timeline_labels_alternate_when_close_and_lean_inwards_at_the_edges():
    import pandas as pd

    t0 = pd.Timestamp("2026-12-02T14:00Z")
    times = [t0 + pd.Timedelta(minutes=m) for m in (1, 180, 185, 359)]
    pos = charts.label_positions(times, t0, t0 + pd.Timedelta(hours=6))
    assert pos == ["top right", "top center", "bottom center", "top left"]


def test_close_events_of_one_lane_share_one_marker_and_label():
    t0 = pd.Timestamp("2026-12-02T14:00Z")
    lane = pd.DataFrame({"time": [t0 + pd.Timedelta(minutes=m) for m in (300, 300.5, 301, 30)],
                         "lane": ["alert"] * 4, "label": ["A", "B", "C", "D"], "detail": ["a", "b", "c", "d"]})
    out = charts.cluster_events(lane, t0, t0 + pd.Timedelta(hours=6))
    assert list(out["label"]) == ["D", "A +2"]
    assert out["detail"].iloc[1] == "A: a<br>B: b<br>C: c"
