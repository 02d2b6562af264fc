"""report.html: the executed notebook as a self-contained report, and the index of runs.

:func:`render_html` turns the executed notebook into a report: a header
(runbook, env, kube context, time window, status), what happened and the
findings table first, then the narrative, with no code cells and no prompts.
Every figure becomes a ``<div>`` plus its JSON, and plotly.js is embedded once,
gzip-compressed and base64-encoded, and decompressed by the browser
(``DecompressionStream``), so the report works offline and stays well under
5 MB (plotly.min.js alone is nearly 5 MB). Nothing is loaded from a CDN:
require.js, MathJax, mermaid and the widget manager are left out of the
template. :func:`index_html` is ``outputs/index.html``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import gzip
import html
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runbooks.model import RECORD_MIME, SEVERITIES
from runbooks.report import PLOTLY_MIME, SEVERITY_COLOURS, cell_html, format_time, scroll_box

WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
MAX_REPORT_BYTES = 5_000_000
STATUS_COLOURS = {
    "ok": "ok", "findings": "critical", "rejected": "warning", "failed": "critical",
    "leaked": "critical",
}


REPORT_CSS = """
<style type="text/css">
body.jp-Notebook { max-width: 1200px; margin: 0 auto; }
.kr-header { font-family: var(--jp-ui-font-family, sans-serif); margin: 1em 0 2em 0; }
.kr-header h1 { margin-bottom: .2em; }
.kr-meta { border-collapse: collapse; margin: .5em 0 1em 0; }
.kr-meta th { padding: 2px 12px 2px 0; color: #555; font-weight: normal !important; }
.kr-meta td { padding: 2px 12px 2px 0; }
.kr-status { display: inline-block; padding: 1px 10px; border-radius: 10px; font-weight: bold; }
table.kr-table, table.kr-findings { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
table.kr-table th, table.kr-table td, table.kr-findings th, table.kr-findings td,
table.kr-meta th, table.kr-meta td {
  text-align: left !important; vertical-align: top !important; }
table.kr-table th, table.kr-table td, table.kr-findings th, table.kr-findings td {
  border: 1px solid #ddd; padding: 3px 8px; }
table.kr-table caption, table.kr-findings caption { text-align: left; font-weight: bold; padding: 4px 0; }
.kr-plot { width: 100%; }
details.kr-evidence summary, details.kr-fold summary { cursor: pointer; }
details.kr-evidence summary { color: #555; }
.kr-scroll { overflow-x: auto; max-width: 100%; }
table.kr-table th, table.kr-findings th { cursor: pointer; user-select: none; }
th.kr-sorted-asc::after { content: " ▲"; font-size: 70%; }
th.kr-sorted-desc::after { content: " ▼"; font-size: 70%; }
.kr-story { font-size: 15px; max-width: 60em; }
</style>
<script type="text/javascript">
// Sortable tables: click a column heading to sort by it (again to reverse); numbers sort as numbers.
document.addEventListener('DOMContentLoaded', function () {
  document.querySelectorAll('table.kr-table, table.kr-findings').forEach(function (table) {
    var head = table.tHead, body = table.tBodies[0];
    if (!head || !body) { return; }
    var ths = head.rows[head.rows.length - 1].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.title = 'sort by this column';
      th.addEventListener('click', function () {
        var asc = !th.classList.contains('kr-sorted-asc');
        Array.prototype.forEach.call(ths, function (o) { o.classList.remove('kr-sorted-asc', 'kr-sorted-desc'); });
        th.classList.add(asc ? 'kr-sorted-asc' : 'kr-sorted-desc');
        var rows = Array.prototype.slice.call(body.rows);
        var key = function (row) { var c = row.cells[col]; return c ? c.textContent.trim() : ''; };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny) && /^[-+]?[0-9.]/.test(x) && /^[-+]?[0-9.]/.test(y))
            ? nx - ny : x.localeCompare(y);
          return asc ? r : -r;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
});
</script>
"""

PLOTLY_LOADER = """
<script type="text/javascript">
(function () {
  function plots() { return document.querySelectorAll('div.kr-plot'); }
  function say(text) { plots().forEach(function (div) { div.textContent = text; }); }
  function render() {
    plots().forEach(function (div) {
      var spec = JSON.parse(document.getElementById(div.id + '-data').textContent);
      var config = Object.assign({responsive: true, displaylogo: false}, spec.config || {});
      window.Plotly.newPlot(div, spec.data || [], spec.layout || {}, config);
    });
  }
  async function load() {
    var text = document.getElementById('kr-plotly-js').textContent.trim();
    var raw = atob(text);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { bytes[i] = raw.charCodeAt(i); }
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    var code = await new Response(stream).text();
    var saved = window.define;  // keep an AMD loader, if any, from capturing plotly.js
    window.define = undefined;
    var script = document.createElement('script');
    script.textContent = code;
    document.head.appendChild(script);
    window.define = saved;
  }
  document.addEventListener('DOMContentLoaded', function () {
    if (typeof DecompressionStream === 'undefined') {
      say('This browser cannot show the interactive charts (no DecompressionStream).');
      return;
    }
    load().then(render).catch(function (e) { say('The charts could not be drawn: ' + e); });
  });
})();
</script>
"""

TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}{{ resources.kr_head }}{%- endblock html_head_css -%}
"""


def cache_dir() -> Path:
    """Where derived files are kept between runs: $RUNBOOKS_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("RUNBOOKS_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kube-runbooks"


@functools.lru_cache(maxsize=1)
def plotly_js_blob() -> str:
    """plotly.min.js (from the installed plotly package), gzip-compressed, base64-encoded.

    Compressing 4.8 MB takes a noticeable part of a short run, so the result is
    kept in :func:`cache_dir` per plotly version, and used again only when it
    decompresses to exactly the installed plotly.min.js (so a damaged or
    tampered file is never embedded); otherwise, or when the cache cannot be
    written, it is compressed again.
    """
    import plotly
    from plotly.offline import get_plotlyjs

    data = get_plotlyjs().encode("utf-8")
    cached = cache_dir() / f"plotly-{plotly.__version__}.min.js.gz.b64"
    try:
        blob = cached.read_text(encoding="ascii")
        if gzip.decompress(base64.b64decode(blob, validate=True)) == data:
            return blob
    except (OSError, ValueError, EOFError, zlib.error):
        pass
    blob = base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode("ascii")
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(blob, encoding="ascii")
        os.replace(tmp, cached)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return blob


def _json_for_script(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def findings_html(findings: Sequence[Mapping[str, Any]]) -> str:
    """The findings table of the report header (worst first, evidence folded)."""
    if not findings:
        return "<p>No findings.</p>"
    rows = []
    for f in findings:
        fg, bg = SEVERITY_COLOURS.get(f.get("severity", ""), ("inherit", "inherit"))
        evidence = f.get("evidence")
        ev = ""
        if evidence not in (None, "", [], {}):
            ev = (
                "<details class='kr-evidence'><summary>evidence</summary><pre>"
                + _esc(json.dumps(evidence, indent=1, default=str)[:4000])
                + "</pre></details>"
            )
        rows.append(
            f"<tr><td style='color:{fg};background-color:{bg};font-weight:bold'>"
            f"{_esc(f.get('severity'))}</td><td>{_esc(f.get('title'))}</td>"
            f"<td>{_esc(f.get('resource'))}</td><td>{cell_html(f.get('detail'))}{ev}</td>"
            f"<td><code>{_esc(f.get('id'))}</code></td></tr>"
        )
    return (
        "<table class='kr-findings'><caption>Findings</caption><thead><tr><th>severity</th>"
        "<th>title</th><th>resource</th><th>detail</th><th>id</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )


def what_happened(summary: Mapping[str, Any]) -> str:
    """A short paragraph above the findings: the window, the top finding or likely cause, what was done."""
    window = summary.get("window") or {}
    start = window.get("start") or summary.get("start")
    end = window.get("end") or summary.get("end")
    parts = [f"Between {format_time(start, False)} and {format_time(end, False)}"]
    findings = list(summary.get("findings") or [])
    counts = summary.get("counts") or {}
    worst = next((f for f in findings if str(f.get("id", "")).startswith("incident/")
                  and f.get("severity") != "ok"), None) or next(
        (f for f in findings if f.get("severity") == "critical"), None) or next(
        (f for f in findings if f.get("severity") == "warning"), None)
    if worst is None:
        parts[0] += ": nothing needed attention" + (" (no findings)." if not findings else ".")
    else:
        parts[0] += f": {worst.get('title')}" + ("" if str(worst.get("title", "")).endswith(".") else ".")
        parts.append(f"{counts.get('critical', 0)} critical and {counts.get('warning', 0)} warning finding(s).")
    cause = next((f for f in findings if str(f.get("id", "")).startswith("likely-cause/1/")), None)
    if cause is not None:
        sentence = str(cause.get("title", "")).split(": ", 1)[-1]
        parts.append(f"Most likely cause: {sentence}" + ("" if sentence.endswith(".") else "."))
    plan = summary.get("plan")
    if plan and plan.get("applied"):
        parts.append(f"Plan {plan.get('id')} was applied ({len(plan.get('changes') or [])} change(s); "
                     "see audit.jsonl).")
    elif plan and plan.get("changes"):
        parts.append(f"Plan {plan.get('id')} ({len(plan['changes'])} change(s)) was computed as a dry run; "
                     "nothing was changed.")
    else:
        parts.append("Nothing was changed.")
    if summary.get("error"):
        parts.append(f"The run stopped early: {summary['error'].get('message')}")
    return " ".join(parts)


def header_html(summary: Mapping[str, Any]) -> str:
    """Runbook, env, kube context, time window, status; then the findings table."""
    status = summary.get("status", "unknown")
    fg, bg = SEVERITY_COLOURS.get(STATUS_COLOURS.get(status, "info"), ("inherit", "inherit"))
    window = summary.get("window") or {}
    window_text = (
        f"{format_time(window.get('start'), False)} → {format_time(window.get('end'), False)}" if window
        else f"{format_time(summary.get('start'), False)} → {format_time(summary.get('end'), False)} (run time)"
    )
    counts = summary.get("counts") or {}
    plan = summary.get("plan")
    rows = [
        ("Runbook", summary.get("runbook")),
        ("Environment", summary.get("env")),
        ("Kube context", summary.get("kube_context") or "—"),
        ("API server", summary.get("server") or "—"),
        ("Time window", window_text),
        ("Run", f"{summary.get('run_id')} ({summary.get('duration_s', '?')} s)"),
        ("Findings", ", ".join(f"{counts.get(s, 0)} {s}" for s in reversed(SEVERITIES))),
    ]
    if plan:
        rows.append(("Plan", f"{plan.get('id')}: {len(plan.get('changes') or [])} change(s), "
                     + ("applied" if plan.get("applied") else "not applied")))
    sources = summary.get("data_sources") or {}
    if sources:
        rows.append(("Data sources", ", ".join(f"{k}: {v.get('state')}" for k, v in sources.items())))
    error = summary.get("error")
    meta = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    err = f"<p><b>Error:</b> {_esc(error.get('message'))}</p>" if error else ""
    return (
        f"<div class='kr-header'><h1>{_esc(summary.get('runbook'))} — {_esc(summary.get('env'))}</h1>"
        f"<p><span class='kr-status' style='color:{fg};background-color:{bg}'>status: {_esc(status)}"
        f" (exit {_esc(summary.get('exit_code'))})</span></p>"
        f"<table class='kr-meta'>{meta}</table>{err}"
        f"<h2>What happened</h2><p class='kr-story'>{_esc(what_happened(summary))}</p>"
        f"{scroll_box(findings_html(summary.get('findings') or []))}</div>"
    )


def _prepare(nb: Any, summary: Mapping[str, Any]) -> tuple[Any, int]:
    """Copy of the notebook as the report shows it, and how many figures it has."""
    import nbformat

    nb = copy.deepcopy(nb)
    figures = 0
    cells = []
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & {"parameters", "injected-parameters"}:
            continue
        if cell.cell_type == "code":
            outputs = []
            for output in cell.get("outputs", []):
                data = output.get("data")
                if data is not None:
                    if RECORD_MIME in data or any(m in data for m in WIDGET_MIMES):
                        continue
                    if PLOTLY_MIME in data:
                        spec = data[PLOTLY_MIME]
                        if isinstance(spec, str):
                            spec = json.loads(spec)
                        div = f"kr-plot-{figures}"
                        figures += 1
                        output["data"] = {
                            "text/html": (
                                f"<div class='kr-plot' id='{div}'></div>"
                                f"<script type='application/json' id='{div}-data'>"
                                f"{_json_for_script(spec)}</script>"
                            )
                        }
                    elif set(data) == {"text/plain"} and not "".join(data["text/plain"]).strip():
                        continue
                outputs.append(output)
            cell.outputs = outputs
        cells.append(cell)
    header = nbformat.v4.new_code_cell(source="")
    header.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": header_html(summary)})
    ]
    nb.cells = [header, *cells]
    nb.metadata.pop("widgets", None)
    nb.metadata["title"] = f"{summary.get('runbook')} — {summary.get('env')} — {summary.get('run_id')}"
    return nb, figures


def without_plotly_js(text: str) -> str:
    """A report as the secret scan reads it: without the plotly.js that :func:`render_html` embeds.

    That script is the installed plotly.min.js, compressed (:func:`plotly_js_blob`): the same 2 MB
    in every report with a figure, nothing a run wrote, and scanning it took a third of a second of
    such a run. Only exactly that blob, as the whole content of the ``kr-plotly-js`` script, is left
    out; any other text (also a look-alike script in an output) is scanned.
    """
    if not plotly_js_blob.cache_info().currsize:  # no figure was rendered: the library is not embedded
        return text
    blob = plotly_js_blob()
    at = text.find(blob)
    tag = text[text.rfind("<script", 0, at):at] if at > 0 else ""
    if not (tag.endswith(">") and tag.count(">") == 1 and "kr-plotly-js" in tag
            and text.startswith("</script>", at + len(blob))):
        return text
    return text[:at] + text[at + len(blob):]


def render_html(nb: Any, summary: Mapping[str, Any]) -> str:
    """The report of an executed notebook: header and findings, then the narrative.

    Args:
        nb: the executed notebook (``nbformat.NotebookNode``).
        summary: the run's summary.json content.

    Returns:
        A self-contained HTML document: no code, no prompts, plotly.js embedded
        once (compressed) when there is at least one figure.
    """
    prepared, figures = _prepare(nb, summary)
    head = REPORT_CSS
    if figures:
        head += (
            "<script type='application/octet-stream' id='kr-plotly-js'>"
            + plotly_js_blob() + "</script>" + PLOTLY_LOADER
        )
    body, _ = _exporter().from_notebook_node(prepared, resources={"kr_head": head})
    return body


@functools.lru_cache(maxsize=1)
def _exporter() -> Any:
    """The report's exporter, made once per process: its templates compile on its first render, and
    a fleet's runs, forked after :func:`runbooks.fleet.warm` rendered once, share them."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"runbooks-report.html.j2": TEMPLATE})],
        template_file="runbooks-report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def index_html(summaries: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """``outputs/index.html``: every run, newest first, linking to its report.

    Args:
        summaries: ``(run directory relative to outputs/, summary)`` pairs.
    """
    rows = []
    for rel, s in summaries:
        status = s.get("status", "?")
        fg, bg = SEVERITY_COLOURS.get(STATUS_COLOURS.get(status, "info"), ("inherit", "inherit"))
        counts = s.get("counts") or {}
        link = f"{rel}/report.html" if s.get("report") else f"{rel}/summary.json"
        rows.append(
            f"<tr><td>{_esc(s.get('start'))}</td><td>{_esc(s.get('env'))}</td>"
            f"<td>{_esc(s.get('runbook'))}</td>"
            f"<td style='color:{fg};background-color:{bg}'>{_esc(status)} ({_esc(s.get('exit_code'))})</td>"
            f"<td>{counts.get('critical', 0)}</td><td>{counts.get('warning', 0)}</td>"
            f"<td>{_esc((s.get('plan') or {}).get('id', ''))}</td>"
            f"<td><a href='{html.escape(link, quote=True)}'>{_esc(rel)}</a></td></tr>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>kube-runbooks runs</title>"
        + REPORT_CSS
        + "</head><body style='font-family:sans-serif;margin:2em'><h1>Runbook runs</h1>"
        "<table class='kr-table'><thead><tr><th>start (UTC)</th><th>env</th><th>runbook</th>"
        "<th>status (exit)</th><th>critical</th><th>warning</th><th>plan</th><th>run</th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
    )
