"""Tables and notebook display: what a runbook shows in its notebook.

:func:`show_table`, :func:`show_findings`, :func:`show_plan` and
:func:`show_figure` display pandas-styled tables and plotly figures. Figures
travel as plotly JSON (``application/vnd.plotly.v1+json``, the
``plotly_mimetype`` renderer), which JupyterLab renders natively and which
keeps the executed notebook free of any JavaScript. The figures themselves are
drawn by :mod:`runbooks.charts`, the interactive controls live in
:mod:`runbooks.widgets`, and :mod:`runbooks.reporthtml` turns the executed
notebook into ``report.html``. Cells are formatted here (:func:`format_value`)
for the notebook and the report alike.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runbooks.model import SEVERITIES

PLOTLY_MIME = "application/vnd.plotly.v1+json"
MAX_TABLE_ROWS = 200

SEVERITY_COLOURS = {
    "critical": ("#b71c1c", "#ffebee"),
    "warning": ("#8a5300", "#fff4e0"),
    "info": ("#0d47a1", "#e8f0fe"),
    "ok": ("#1b5e20", "#e8f5e9"),
}


def setup_notebook() -> None:
    """Make ``fig.show()`` emit plotly JSON (called by ``runbook.start``)."""
    # plotly reads PLOTLY_RENDERER when plotly.io is first imported, so runbooks that draw
    # nothing never pay for importing it; if it is already imported, set the default directly.
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"
    pio = sys.modules.get("plotly.io")
    if pio is not None:
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


FOLD_CHARS = 160
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?$")
_RATIO_COLUMN = re.compile(r"(ratio|share|percent|fraction|throttl)", re.I)


def format_time(value: Any, seconds: bool | None = None) -> str:
    """``2026-12-02 20:54 UTC``: UTC, minutes; seconds only when they matter.

    ``seconds=None`` shows them when the time has any (a log line's time), ``False``
    never, ``True`` always. Text that is not a time is returned unchanged.
    """
    import pandas as pd

    if isinstance(value, str):
        if not _ISO_TIME.match(value.strip()):
            return value
        value = value.strip().replace("Z", "+00:00")
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        return str(value)
    if pd.isna(t):
        return ""
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    if seconds is None:
        seconds = bool(t.second or t.microsecond)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def format_value(value: Any, column: str = "") -> str:
    """One table cell as a person reads it (plain text, not escaped).

    Times as :func:`format_time`; ratios (a column named like ``error_ratio``) as
    percentages; lists as comma-separated text; mappings as ``key=value`` pairs;
    no ``nan``/``None``.
    """
    import datetime as _dt

    import pandas as pd

    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, (pd.Timestamp, _dt.datetime)):
        return format_time(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if _RATIO_COLUMN.search(column) and -10 <= value <= 10:
            return f"{value:.1%}"
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, str):
        return format_time(value)
    return str(value)


def cell_html(value: Any, column: str = "", fold: int = FOLD_CHARS) -> str:
    """A formatted, escaped cell; a long text (a log line) folds, the full line one click away."""
    text = format_value(value, column)
    if len(text) <= fold and "\n" not in text:
        return html.escape(text)
    first = text.splitlines()[0] if text.strip() else text
    short = first[:fold].rstrip() + "…"
    return (f"<details class='kr-fold'><summary>{html.escape(short)}</summary>"
            f"<pre style='white-space:pre-wrap;word-break:break-all;margin:0'>{html.escape(text)}</pre></details>")


def display_frame(df: Any) -> Any:
    """The frame with every cell formatted and escaped (:func:`cell_html`), ready for a Styler."""
    shown = df.copy()
    for col in shown.columns:
        shown[col] = [cell_html(v, str(col)) for v in shown[col]]
    return shown


TABLE_STYLES = [
    {"selector": "th, td", "props": "text-align: left; vertical-align: top; padding: 3px 8px;"},
    {"selector": "caption", "props": "text-align: left; font-weight: bold; padding: 4px 0;"},
]


def table(df: Any, caption: str | None = None, max_rows: int = MAX_TABLE_ROWS) -> Any:
    """A pandas Styler for a DataFrame: no index, a caption, at most ``max_rows`` rows, cells formatted."""
    shown = display_frame(df.head(max_rows))
    if len(df) > max_rows:
        caption = f"{caption + ' — ' if caption else ''}first {max_rows} of {len(df)} rows"
    styler = (shown.style.hide(axis="index").set_table_attributes('class="kr-table"')
              .set_table_styles(TABLE_STYLES))
    if caption:
        styler = styler.set_caption(caption)
    return styler


def scroll_box(inner_html: str) -> str:
    """A wide table scrolls inside its own box instead of widening the page."""
    return f"<div class='kr-scroll' style='overflow-x:auto;max-width:100%'>{inner_html}</div>"


def show_table(df: Any, caption: str | None = None, max_rows: int = MAX_TABLE_ROWS,
               empty: str | None = None) -> None:
    """Display a DataFrame as a styled table (an empty one says so, or says ``empty``: why)."""
    if len(df) == 0:
        _display_markdown(f"*{caption + ': ' if caption else ''}{empty or 'nothing to show'}.*"
                          .replace("..*", ".*"))
        return
    _display_styler(table(df, caption, max_rows))


def _display_styler(styler: Any) -> None:
    from IPython.display import HTML

    _display(HTML(scroll_box(styler.to_html())))


def show_coloured(df: Any, colours: Mapping[str, str], caption: str | None = None,
                  max_rows: int = MAX_TABLE_ROWS) -> None:
    """A table whose cells are coloured by their value (e.g. a verdict per hostname and provider)."""
    if len(df) == 0:
        _display_markdown(f"*{caption + ': ' if caption else ''}nothing to show.*")
        return
    styler = table(df, caption, max_rows)
    styler = styler.map(lambda v: f"background-color: {colours[v]}" if isinstance(v, str) and v in colours else "")
    _display(styler)


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
        _display_styler(findings_table(findings))


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


def table_frame(rows: Any, columns: Sequence[str] | None = None) -> Any:
    """A DataFrame from a list of dicts (all columns, or the named ones), for show_table."""
    import pandas as pd

    df = pd.DataFrame(list(rows))
    if columns is not None:
        df = df.reindex(columns=list(columns))
    return df


CHAIN_COLOURS = {"green": ("#ffffff", "#2e7d32"), "red": ("#ffffff", "#c62828"), "grey": ("#333333", "#e0e0e0")}


def chain_table(df: Any, caption: str = "The chain, hop by hop") -> Any:
    """A Styler of reachability hops (host, hop, status, reason...): status cells green, red or grey,
    the first broken hop of each host in bold."""
    def colour(value: str) -> str:
        fg, bg = CHAIN_COLOURS.get(value, ("inherit", "inherit"))
        return f"color: {fg}; background-color: {bg}; font-weight: bold; text-align: center"

    def first(row: Any) -> list[str]:
        return ["font-weight: bold" if row.get("first_broken") else "" for _ in row]

    return table(df, caption, max_rows=5000).apply(first, axis=1).map(colour, subset=["status"])


def show_chain(df: Any, headline: str = "", caption: str = "The chain, hop by hop") -> None:
    """The headline (first red hop) and the chain picture: one row per hop, green or red, with the reason."""
    if headline:
        _display_markdown(headline)
    if len(df) == 0:
        _display_markdown("*No host to show.*")
        return
    _display(chain_table(df, caption))
