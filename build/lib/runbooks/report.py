"""Tables, figures and the HTML report: the only module that draws.

Two audiences, one module:

- **In the notebook** (kernel side): :func:`show_table`, :func:`show_findings`,
  :func:`show_plan` and :func:`show_figure` display pandas-styled tables and
  plotly figures. Figures travel as plotly JSON
  (``application/vnd.plotly.v1+json``, the ``plotly_mimetype`` renderer), which
  JupyterLab renders natively and which keeps the executed notebook free of
  any JavaScript.
- **After the run** (CLI side): :func:`render_html` turns the executed notebook
  into a self-contained report: a header (runbook, env, kube context, time
  window, status) and the findings table first, then the narrative, with no
  code cells and no prompts. Every figure becomes a ``<div>`` plus its JSON,
  and plotly.js is embedded once, gzip-compressed and base64-encoded, and
  decompressed by the browser (``DecompressionStream``), so the report works
  offline and stays well under 5 MB (plotly.min.js alone is nearly 5 MB).
  Nothing is loaded from a CDN: require.js, MathJax, mermaid and the widget
  manager are left out of the template.
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runbooks.model import RECORD_MIME, SEVERITIES, headless

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
MAX_REPORT_BYTES = 5_000_000
MAX_TABLE_ROWS = 200

SEVERITY_COLOURS = {
    "critical": ("#b71c1c", "#ffebee"),
    "warning": ("#8a5300", "#fff4e0"),
    "info": ("#0d47a1", "#e8f0fe"),
    "ok": ("#1b5e20", "#e8f5e9"),
}
STATUS_COLOURS = {
    "ok": "ok", "findings": "critical", "rejected": "warning", "failed": "critical",
    "leaked": "critical",
}


# --------------------------------------------------------------------------
# Kernel side: what notebooks display
# --------------------------------------------------------------------------


def setup_notebook() -> None:
    """Make ``fig.show()`` emit plotly JSON (called by ``runbook.start``)."""
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype"


def _display(obj: Any, **kw: Any) -> None:
    from IPython.display import display

    display(obj, **kw)


def show_figure(fig: Any) -> None:
    """Display a plotly figure as plotly JSON (rendered in JupyterLab and in the report)."""
    import plotly.io as pio

    spec = json.loads(pio.to_json(fig, validate=False))
    title = ((spec.get("layout") or {}).get("title") or {})
    title = title.get("text", "") if isinstance(title, dict) else str(title)
    _display({PLOTLY_MIME: spec, "text/plain": f"<figure {title}>"}, raw=True)


def _empty_figure(title: str, text: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(layout={"title": {"text": title}, "height": 200,
                            "xaxis": {"visible": False}, "yaxis": {"visible": False}})
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def restarts_chart(df: Any, top: int = 20) -> Any:
    """Bar chart of container restarts per workload, most first.

    Args:
        df: columns ``namespace``, ``workload``, ``restarts`` (e.g.
            ``health.restarts_by_workload(pods)``).
        top: how many workloads to show.
    """
    import plotly.graph_objects as go

    title = "Container restarts by workload"
    if df is None or len(df) == 0:
        return _empty_figure(title, "No container restarted.")
    rows = df.sort_values("restarts", ascending=False).head(top).iloc[::-1]
    labels = [f"{ns}/{w}" for ns, w in zip(rows["namespace"], rows["workload"], strict=True)]
    fig = go.Figure(go.Bar(x=list(rows["restarts"]), y=labels, orientation="h",
                           marker_color=SEVERITY_COLOURS["warning"][0],
                           hovertemplate="%{y}: %{x} restarts<extra></extra>"))
    fig.update_layout(title={"text": title}, xaxis_title="restarts",
                      height=max(250, 60 + 28 * len(rows)), margin={"l": 10})
    fig.update_yaxes(automargin=True)
    return fig


def cert_expiry_chart(df: Any, warning_days: int = 30, critical_days: int = 7) -> Any:
    """Days left per TLS certificate, coloured by severity, with the two thresholds.

    Args:
        df: columns ``namespace``, ``name``, ``days_left`` and optionally
            ``not_after`` (e.g. ``health.check_tls_secrets(...).table``); rows
            without ``days_left`` (unreadable certificates) are left out.
    """
    import pandas as pd
    import plotly.graph_objects as go

    title = "TLS certificates: days until expiry"
    rows = df[pd.to_numeric(df["days_left"], errors="coerce").notna()] if df is not None and len(df) else df
    if rows is None or len(rows) == 0:
        return _empty_figure(title, "No readable TLS certificate.")
    rows = rows.sort_values("days_left", ascending=False)
    days = [float(d) for d in rows["days_left"]]

    def colour(d: float) -> str:
        level = "critical" if d <= critical_days else "warning" if d <= warning_days else "ok"
        return SEVERITY_COLOURS[level][0]

    labels = [f"{ns}/{n}" for ns, n in zip(rows["namespace"], rows["name"], strict=True)]
    expiry = [str(x) for x in rows["not_after"]] if "not_after" in rows else [""] * len(rows)
    fig = go.Figure(go.Bar(x=days, y=labels, orientation="h", marker_color=[colour(d) for d in days],
                           customdata=expiry,
                           hovertemplate="%{y}: %{x:.0f} days (until %{customdata})<extra></extra>"))
    for limit, level in ((warning_days, "warning"), (critical_days, "critical")):
        fig.add_vline(x=limit, line_dash="dash", line_color=SEVERITY_COLOURS[level][0],
                      annotation_text=f"{level}: {limit} d", annotation_position="top")
    fig.update_layout(title={"text": title}, xaxis_title="days left (negative: expired)",
                      height=max(250, 80 + 28 * len(rows)), margin={"l": 10})
    fig.update_yaxes(automargin=True)
    return fig


def table(df: Any, caption: str | None = None, max_rows: int = MAX_TABLE_ROWS) -> Any:
    """A pandas Styler for a DataFrame: no index, a caption, at most ``max_rows`` rows."""
    shown = df.head(max_rows)
    if len(df) > max_rows:
        caption = f"{caption + ' — ' if caption else ''}first {max_rows} of {len(df)} rows"
    styler = shown.style.hide(axis="index").set_table_attributes('class="kr-table"')
    if caption:
        styler = styler.set_caption(caption)
    return styler


def show_table(df: Any, caption: str | None = None, max_rows: int = MAX_TABLE_ROWS) -> None:
    """Display a DataFrame as a styled table (an empty one says so)."""
    if len(df) == 0:
        _display_markdown(f"*{caption + ': ' if caption else ''}nothing to show.*")
        return
    _display(table(df, caption, max_rows))


def _display_markdown(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))


def _finding_dict(f: Any) -> dict[str, Any]:
    return f.to_json() if hasattr(f, "to_json") else dict(f)


def findings_frame(findings: Iterable[Any]) -> Any:
    """Findings (objects or dicts) as a DataFrame, worst first."""
    import pandas as pd

    rows = [_finding_dict(f) for f in findings]
    rows.sort(key=lambda r: (-SEVERITIES.index(r["severity"]), str(r["id"])))
    cols = ["severity", "title", "resource", "detail", "id"]
    return pd.DataFrame([{c: r.get(c) or "" for c in cols} for r in rows], columns=cols)


def findings_table(findings: Iterable[Any], caption: str = "Findings") -> Any:
    """A Styler of findings with severity colours."""
    df = findings_frame(findings)

    def colour(value: str) -> str:
        fg, bg = SEVERITY_COLOURS.get(value, ("inherit", "inherit"))
        return f"color: {fg}; background-color: {bg}; font-weight: bold"

    return table(df, caption, max_rows=1000).map(colour, subset=["severity"])


def show_findings(findings: Sequence[Any]) -> None:
    """Display the counts by severity and the findings table."""
    counts = {s: 0 for s in SEVERITIES}
    for f in findings:
        counts[_finding_dict(f)["severity"]] += 1
    line = ", ".join(f"{counts[s]} {s}" for s in reversed(SEVERITIES))
    _display_markdown(f"**Findings:** {line}")
    if findings:
        _display(findings_table(findings))


def plan_html(plan: Any, hint: str = "") -> str:
    """HTML for a plan: its id, each change and its diff, the dry-run result."""
    rows = []
    for change in plan.changes:
        diff = "<br>".join(
            f"<code>{html.escape(str(d.get('path', '')))}</code>: "
            f"{html.escape(json.dumps(d.get('from')))} → {html.escape(json.dumps(d.get('to')))}"
            for d in change.diff
        )
        rows.append(
            f"<tr><td>{html.escape(change.operation)}</td><td>{html.escape(change.resource)}</td>"
            f"<td>{diff}</td></tr>"
        )
    body = (
        "<table class='kr-table'><thead><tr><th>operation</th><th>object</th><th>change</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows else "<p>No change is needed.</p>"
    )
    checked = "validated by a server-side dry run" if plan.validated else "not validated"
    return (
        f"<div class='kr-plan'><p><b>Plan <code>{plan.id}</code></b>: "
        f"{len(plan.changes)} change(s), {checked}.</p>{body}"
        f"<p>{html.escape(hint)}</p></div>"
    )


def show_plan(plan: Any, hint: str = "") -> None:
    """Display a plan (see :func:`plan_html`)."""
    from IPython.display import HTML

    _display(HTML(plan_html(plan, hint)))


# --------------------------------------------------------------------------
# CLI side: the report
# --------------------------------------------------------------------------

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
details.kr-evidence summary { cursor: pointer; color: #555; }
</style>
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
            f"<td>{_esc(f.get('resource'))}</td><td>{_esc(f.get('detail'))}{ev}</td>"
            f"<td><code>{_esc(f.get('id'))}</code></td></tr>"
        )
    return (
        "<table class='kr-findings'><caption>Findings</caption><thead><tr><th>severity</th>"
        "<th>title</th><th>resource</th><th>detail</th><th>id</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table>"
    )


def header_html(summary: Mapping[str, Any]) -> str:
    """Runbook, env, kube context, time window, status; then the findings table."""
    status = summary.get("status", "unknown")
    fg, bg = SEVERITY_COLOURS.get(STATUS_COLOURS.get(status, "info"), ("inherit", "inherit"))
    window = summary.get("window") or {}
    window_text = (
        f"{window.get('start')} → {window.get('end')}" if window
        else f"{summary.get('start')} → {summary.get('end')} (run time)"
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
        f"{findings_html(summary.get('findings') or [])}</div>"
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


def render_html(nb: Any, summary: Mapping[str, Any]) -> str:
    """The report of an executed notebook: header and findings, then the narrative.

    Args:
        nb: the executed notebook (``nbformat.NotebookNode``).
        summary: the run's summary.json content.

    Returns:
        A self-contained HTML document: no code, no prompts, plotly.js embedded
        once (compressed) when there is at least one figure.
    """
    import jinja2
    from nbconvert import HTMLExporter

    prepared, figures = _prepare(nb, summary)
    head = REPORT_CSS
    if figures:
        head += (
            "<script type='application/octet-stream' id='kr-plotly-js'>"
            + plotly_js_blob() + "</script>" + PLOTLY_LOADER
        )
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"runbooks-report.html.j2": TEMPLATE})],
        template_file="runbooks-report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(prepared, resources={"kr_head": head})
    return body


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


# --------------------------------------------------------------------------
# Kernel side: deploys (provision-service)
# --------------------------------------------------------------------------


def rollout_progress(title: str = "Rollout") -> Any:
    """A progress display for a rollout: returns ``callback(status)`` for ``deploy.apply_release``.

    ``status`` is a ``deploy.rollout_status`` dict (desired, updated, ready,
    available, complete, reason, seconds). Interactively a progress bar
    follows the available pods; headless (the executed notebook, the report)
    one line is printed each time the counts change, so the record stays short.
    """

    last: list[tuple[Any, ...]] = []
    bar: dict[str, Any] = {}

    def line(s: Mapping[str, Any]) -> str:
        state = "complete" if s.get("complete") else (s.get("reason") or "progressing")
        return (f"{title}: {s.get('available', 0)}/{s.get('desired', 0)} available, "
                f"{s.get('updated', 0)} updated, {s.get('ready', 0)} ready — {state} "
                f"({s.get('seconds', 0):.0f}s)")

    def callback(s: Mapping[str, Any]) -> None:
        key = (s.get("desired"), s.get("updated"), s.get("ready"), s.get("available"), s.get("complete"))
        if headless():
            if not last or last[-1] != key:
                print(line(s))
            last.append(key)
            return
        import ipywidgets as widgets

        if not bar:
            bar["progress"] = widgets.IntProgress(min=0, max=max(1, int(s.get("desired") or 1)),
                                                  description=title, layout=widgets.Layout(width="50%"))
            bar["label"] = widgets.Label()
            _display(widgets.VBox([bar["progress"], bar["label"]]))
        bar["progress"].max = max(1, int(s.get("desired") or 1))
        bar["progress"].value = min(int(s.get("available") or 0), bar["progress"].max)
        bar["progress"].bar_style = "success" if s.get("complete") else ""
        bar["label"].value = line(s)
        last.append(key)

    return callback


def approval_button(plan: Any, apply: Any, label: str = "Apply plan") -> None:
    """A button naming the plan id; clicking it calls ``apply()`` once and prints the outcome.

    For plans that are not applied through ``Run.apply`` (a Helm release): the
    caller keeps the approval rules (``deploy.apply_release``).
    """
    import ipywidgets as widgets

    button = widgets.Button(description=f"{label} {plan.id}", button_style="danger",
                            tooltip=f"Apply the {len(plan.changes)} change(s) of plan {plan.id}",
                            layout=widgets.Layout(width="auto"))
    out = widgets.Output()

    def on_click(_: Any) -> None:
        button.disabled = True
        with out:
            try:
                result = apply()
                print(f"Applied plan {plan.id}: {result}")
            except Exception as exc:  # shown to the person who clicked; nothing more is applied
                print(f"Plan {plan.id} was not applied: {type(exc).__name__}: {exc}")

    button.on_click(on_click)
    _display(widgets.VBox([button, out]))


def show_rollout(result: Any) -> None:
    """A short account of a helm upgrade or rollback (``deploy.ApplyResult``)."""
    if not getattr(result, "applied", False):
        _display_markdown("*Nothing was applied.*")
        return
    verdict = "succeeded" if result.ok else "**failed**"
    r = result.rollout or {}
    text = (f"Helm {result.action} {verdict} in {result.seconds:.0f}s: release revision "
            f"{result.revision} is *{result.status}*; {r.get('available', 0)}/{r.get('desired', 0)} pods "
            f"available, {r.get('updated', 0)} updated.")
    if result.message:
        text += f"\n\n```\n{result.message}\n```"
    _display_markdown(text)


def show_rollback(plan: Any, hint: str = "") -> None:
    """A rollback plan (see :func:`show_plan`), or a line saying that none is needed."""
    if plan is None:
        _display_markdown("*No rollback is needed (or there is no earlier good revision to go back to).*")
        return
    show_plan(plan, hint)


# --------------------------------------------------------------------------
# Certificate rotation (notebooks/certificate-rotation.ipynb)
# --------------------------------------------------------------------------


def cert_timeline_chart(df: Any, days: int = 90, warning_days: int = 30, critical_days: int = 7,
                        now: Any = None) -> Any:
    """When each certificate expires over the next ``days`` days, with the thresholds and today.

    Args:
        df: columns ``certificate``, ``kind`` ("stored" or "served on HOST"),
            ``not_after``, ``days_left``, ``state`` (``certs.Inventory.expiries()``).
            Certificates beyond the window sit at its right edge (▶), long-expired
            ones at its left edge (◀); a served certificate that differs from the
            stored one is an open marker on the same row.
    """
    import datetime as dt

    import plotly.graph_objects as go

    title = f"TLS certificates expiring in the next {days} days"
    if df is None or len(df) == 0:
        return _empty_figure(title, "No readable TLS certificate.")
    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(days=7), now + dt.timedelta(days=days)
    order = (df[df["kind"] == "stored"].sort_values("not_after", ascending=False)["certificate"].tolist()
             or df["certificate"].unique().tolist())

    def level(d: float) -> str:
        return "critical" if d <= critical_days else "warning" if d <= warning_days else "ok"

    fig = go.Figure()
    for kind, symbol_in, opacity in (("stored", "circle", 1.0), ("served", "circle-open", 1.0)):
        rows = df[df["kind"] == "stored"] if kind == "stored" else df[df["kind"] != "stored"]
        if not len(rows):
            continue
        xs, symbols, colours, texts = [], [], [], []
        inside = (rows["not_after"] >= start) & (rows["not_after"] <= end)
        rows = rows.assign(_inside=inside).sort_values("_inside", ascending=False)  # the legend shows the first
        for _, r in rows.iterrows():
            when = r["not_after"].to_pydatetime() if hasattr(r["not_after"], "to_pydatetime") else r["not_after"]
            x, symbol = when, symbol_in
            if when > end:
                x, symbol = end, "triangle-right" if kind == "stored" else "triangle-right-open"
            elif when < start:
                x, symbol = start, "triangle-left" if kind == "stored" else "triangle-left-open"
            xs.append(x)
            symbols.append(symbol)
            colours.append(SEVERITY_COLOURS[level(float(r["days_left"]))][0])
            texts.append(f"{r['kind']}: until {when:%Y-%m-%d %H:%M} UTC ({float(r['days_left']):.0f} days); "
                         f"{r['state']}")
        fig.add_trace(go.Scatter(
            x=xs, y=list(rows["certificate"]), mode="markers", name=kind,
            marker={"symbol": symbols, "size": 13, "color": colours, "opacity": opacity,
                    "line": {"width": 2, "color": colours}},
            customdata=texts, hovertemplate="%{y}<br>%{customdata}<extra></extra>"))
    for offset, label, colour in ((0, "today", "#555555"),
                                  (critical_days, f"critical: {critical_days} d", SEVERITY_COLOURS["critical"][0]),
                                  (warning_days, f"warning: {warning_days} d", SEVERITY_COLOURS["warning"][0])):
        x = now + dt.timedelta(days=offset)
        fig.add_shape(type="line", x0=x, x1=x, y0=0, y1=1, yref="paper",
                      line={"dash": "dash" if offset else "solid", "color": colour, "width": 1})
        fig.add_annotation(x=x, y=1, yref="paper", text=label, showarrow=False, yanchor="bottom",
                           font={"color": colour, "size": 11})
    fig.update_layout(title={"text": title}, height=max(260, 110 + 32 * len(order)), margin={"l": 10, "t": 70},
                      legend={"orientation": "h", "y": -0.15}, xaxis={"range": [start, end], "title": "expires"})
    fig.update_yaxes(categoryorder="array", categoryarray=order, automargin=True)  # soonest on top
    return fig



# ---- incident investigation ------------------------------------------------------------

LANE_COLOURS = {"rollout": "#1f77b4", "scaling": "#17becf", "config": "#9467bd", "event": "#ff7f0e",
                "alert": "#d62728", "anomaly": "#8c564b"}


def epoch_ms(times: Any) -> Any:
    """Timestamps as float milliseconds since the epoch, for an x axis of type ``date``.

    Plotly sends a float array as one compact binary block, where timestamps
    become a list of ISO strings: for a 6 h window at a 15 s step this is
    several times smaller and faster to build, serialise and save, with the
    same axis and hover labels (plotly reads numbers on a date axis as epoch ms).
    """
    import pandas as pd

    return pd.DatetimeIndex(times).as_unit("ms").asi8.astype("float64")


def _add_traces(fig: Any, traces: Sequence[Any], rows: Sequence[int]) -> None:
    """Add all traces at once (plotly copies the figure's data on every add) on a date x axis."""
    if traces:
        fig.add_traces(list(traces), rows=list(rows), cols=[1] * len(rows))
    fig.update_xaxes(type="date")


def _shade(fig: Any, anomaly: Any, rows: int = 1, until: Any = None) -> None:
    """Shade the anomaly window: start to end, or, while it is ongoing, start to ``until`` (the data's end)."""
    if anomaly is None:
        return
    end = anomaly.end if anomaly.end is not None else until
    for r in range(1, rows + 1):
        kw = {"row": r, "col": 1} if rows > 1 else {}
        if anomaly.end is None:
            fig.add_vline(x=anomaly.start, line_color="#d62728", line_dash="dot", **kw)
        if end is not None and end > anomaly.start:
            fig.add_vrect(x0=anomaly.start, x1=end, fillcolor="#d62728", opacity=0.12, line_width=0, **kw)


def golden_signals_chart(red: Any, anomaly: Any = None, title: str = "Golden signals") -> Any:
    """Request rate, 5xx error ratio and latency quantiles, stacked, with the anomaly shaded.

    Args:
        red: the long frame of :func:`runbooks.metrics.red` (timestamp, signal, labels, value).
        anomaly: a :class:`runbooks.metrics.Anomaly` (or None).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if red is None or len(red) == 0:
        return _empty_figure(title, "Prometheus returned no ingress traffic for this service.")
    panels = [("request_rate", "requests/s"), ("error_ratio", "5xx ratio"), ("latency", "latency (s)")]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[p[1] for p in panels])
    traces, rows = [], []
    for i, (sig, _) in enumerate(panels, 1):
        if sig == "latency":  # one line per quantile (latency_p50, latency_p95, latency_p99)
            groups = list(red[red["signal"].str.startswith("latency")].groupby("signal"))
        else:
            groups = [(sig, red[red["signal"] == sig])]
        for name, g in groups:
            series = g.groupby("timestamp")["value"].max()
            traces.append(go.Scatter(x=epoch_ms(series.index), y=series.values, mode="lines",
                                     name=str(name).replace("latency_", ""), showlegend=sig == "latency"))
            rows.append(i)
    _add_traces(fig, traces, rows)
    _shade(fig, anomaly, rows=3, until=red["timestamp"].max())
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(title={"text": title}, height=620, margin={"l": 10}, legend={"orientation": "h"})
    return fig


def saturation_chart(use: Any, anomaly: Any = None, title: str = "Saturation") -> Any:
    """CPU throttling ratio, memory working set / limit, and restarts per pod."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if use is None or len(use) == 0:
        return _empty_figure(title, "Prometheus returned no container metrics for this workload.")
    panels = [("cpu_throttling", "CPU throttled (share of CFS periods)"), ("memory_ratio", "memory / limit"),
              ("restarts", "restarts")]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[p[1] for p in panels])
    traces, panel_of = [], []
    for i, (sig, _) in enumerate(panels, 1):
        rows = use[use["signal"] == sig]
        if not len(rows):
            continue
        key = "pod" if "pod" in rows else "signal"
        for pod, g in rows.groupby(key):
            series = g.groupby("timestamp")["value"].max()
            traces.append(go.Scatter(x=epoch_ms(series.index), y=series.values, mode="lines", name=str(pod),
                                     legendgroup=str(pod), showlegend=i == 2))
            panel_of.append(i)
    _add_traces(fig, traces, panel_of)
    fig.add_hline(y=1.0, line_dash="dash", line_color="#d62728", row=2, col=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    _shade(fig, anomaly, rows=3, until=use["timestamp"].max())
    fig.update_layout(title={"text": title}, height=620, margin={"l": 10}, legend={"orientation": "h"})
    return fig


def timeline_chart(events: Any, anomaly: Any = None, window: tuple[Any, Any] | None = None,
                   title: str = "Timeline: changes, alerts and the anomaly") -> Any:
    """One lane per kind (rollout, scaling, config, event, alert, anomaly); hover for details."""
    import plotly.graph_objects as go

    if events is None or len(events) == 0:
        fig = _empty_figure(title, "Nothing changed and no alert fired in the window.")
    else:
        fig = go.Figure()
        for lane, g in events.groupby("lane", sort=False):
            fig.add_trace(go.Scatter(
                x=g["time"], y=[lane] * len(g), mode="markers+text", name=lane, text=g["label"],
                textposition="top center", marker={"size": 13, "color": LANE_COLOURS.get(lane, "#7f7f7f"),
                                                   "symbol": "diamond" if lane in ("rollout", "config") else
                                                   "circle"},
                customdata=g["detail"], hovertemplate="%{x}<br>%{text}<br>%{customdata}<extra></extra>"))
        fig.update_layout(height=140 + 45 * events["lane"].nunique(), showlegend=False, title={"text": title},
                          margin={"l": 10})
    _shade(fig, anomaly, until=window[1] if window is not None else None)
    if window is not None:
        fig.update_xaxes(range=list(window))
    return fig


def log_volume_chart(hist: Any, by: str = "level", title: str = "Log lines") -> Any:
    """Stacked bars of log lines per time bucket, by level (or pod)."""
    import plotly.graph_objects as go

    if hist is None or len(hist) == 0:
        return _empty_figure(title, "No log lines for this workload in the window.")
    fig = go.Figure()
    colours = {"error": "#d62728", "fatal": "#7f0000", "warn": "#ff7f0e", "warning": "#ff7f0e", "info": "#1f77b4",
               "debug": "#7f7f7f"}
    for key, g in hist.groupby(by):
        series = g.groupby("time")["count"].sum()
        fig.add_trace(go.Bar(x=series.index, y=series.values, name=str(key),
                             marker_color=colours.get(str(key).lower())))
    fig.update_layout(barmode="stack", title={"text": f"{title} by {by}"}, height=320, margin={"l": 10},
                      legend={"orientation": "h"})
    return fig


def service_picker(run: Any, choices: Mapping[str, Sequence[str]]) -> None:
    """Interactive only: pick namespace and workload; the cells below read `run.params`.

    Headless runs (papermill, `runbooks run`) show nothing: the parameters decide.
    """

    if headless() or not choices:
        return
    import ipywidgets as widgets
    from IPython.display import display

    params = run.params
    namespaces = sorted(choices)
    ns = widgets.Dropdown(options=namespaces, value=params.namespace if params.namespace in choices
                          else namespaces[0], description="namespace")
    svc = widgets.Dropdown(options=list(choices[ns.value]), description="workload")
    if params.service in choices[ns.value]:
        svc.value = params.service
    note = widgets.HTML()

    def update(_: Any = None) -> None:
        if svc.value:
            run.params = run.params.model_copy(update={"namespace": ns.value, "service": svc.value})
            note.value = f"Investigating <b>{ns.value}/{svc.value}</b>: run the cells below."

    def on_namespace(_: Any) -> None:
        svc.options = list(choices[ns.value])
        update()

    ns.observe(on_namespace, names="value")
    svc.observe(update, names="value")
    update()
    display(widgets.VBox([widgets.HBox([ns, svc]), note]))


def table_frame(rows: Any, columns: Sequence[str] | None = None) -> Any:
    """A DataFrame from a list of dicts (all columns, or the named ones), for show_table."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    if columns is not None:
        df = df.reindex(columns=list(columns))
    return df
