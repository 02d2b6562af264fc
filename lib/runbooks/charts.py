"""Charts: the plotly figures runbooks draw (cluster health, certificates, incidents).

Each function takes plain data (a DataFrame from a job module) and returns a
``plotly.graph_objects.Figure``; a notebook displays it with
``report.show_figure``. With no data a chart says why instead of drawing empty
axes. plotly is imported inside each function, so runbooks that draw nothing
never pay for importing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runbooks.report import SEVERITY_COLOURS


def empty_figure(title: str, text: str) -> Any:
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
        return empty_figure(title, "No container restarted.")
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
        return empty_figure(title, "No readable TLS certificate.")
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


def cert_timeline_chart(df: Any, days: int = 90, warning_days: int = 30, critical_days: int = 7,
                        now: Any = None) -> Any:
    """When each certificate expires over the next ``days`` days, with the thresholds and today.

    Args:
        df: columns ``certificate``, ``kind`` ("stored" or "served on HOST"),
            ``not_after``, ``days_left``, ``state`` (``certinventory.Inventory.expiries()``).
            Certificates beyond the window sit at its right edge (▶), long-expired
            ones at its left edge (◀); a served certificate that differs from the
            stored one is an open marker on the same row.
    """
    import datetime as dt

    import plotly.graph_objects as go

    title = f"TLS certificates expiring in the next {days} days"
    if df is None or len(df) == 0:
        return empty_figure(title, "No readable TLS certificate.")
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


def golden_signals_chart(red: Any, anomaly: Any = None, title: str = "Golden signals",
                         missing: str | None = None) -> Any:
    """Request rate, 5xx error ratio and latency quantiles, stacked, with the anomaly shaded.

    Args:
        red: the long frame of :func:`runbooks.metrics.red` (timestamp, signal, labels, value).
        anomaly: a :class:`runbooks.metrics.Anomaly` (or None).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if red is None or len(red) == 0:
        return empty_figure(title, missing or "Prometheus returned no ingress traffic for this service.")
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


def saturation_chart(use: Any, anomaly: Any = None, title: str = "Saturation", missing: str | None = None) -> Any:
    """CPU throttling ratio, memory working set / limit, and restarts per pod."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if use is None or len(use) == 0:
        return empty_figure(title, missing or "Prometheus returned no container metrics for this workload.")
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


def label_positions(times: Sequence[Any], start: Any, end: Any, near: float = 0.1,
                    edge: float = 0.12) -> list[str]:
    """Plotly ``textposition`` for each label of one lane so that labels neither overlap nor leave the plot.

    Labels closer than ``near`` (share of the window) to the previous one alternate above and
    below their marker; within ``edge`` of either end they lean inwards (``top right`` at the
    left edge, ``top left`` at the right edge).
    """
    import pandas as pd

    ts = [pd.Timestamp(t) for t in times]
    if not ts:
        return []
    lo = pd.Timestamp(start) if start is not None else min(ts)
    hi = pd.Timestamp(end) if end is not None else max(ts)
    span = max((hi - lo).total_seconds(), 1.0)
    order = sorted(range(len(ts)), key=lambda i: ts[i])
    out = [""] * len(ts)
    last_x, flip = None, False
    for i in order:
        x = (ts[i] - lo).total_seconds() / span
        flip = (not flip) if last_x is not None and x - last_x < near else False
        vertical = "bottom" if flip else "top"
        horizontal = "right" if x < edge else "left" if x > 1 - edge else "center"
        out[i] = f"{vertical} {horizontal}"
        last_x = x
    return out


def cluster_events(lane: Any, start: Any, end: Any, near: float = 0.03) -> Any:
    """Events of one lane closer than ``near`` (share of the window) become one marker.

    Its label is the first event's and ``+N``; its hover text lists every event. Five alerts
    firing within a minute would otherwise print five labels over one another.
    """
    import pandas as pd

    g = lane.sort_values("time")
    if len(g) < 2:
        return g
    lo = pd.Timestamp(start) if start is not None else g["time"].min()
    hi = pd.Timestamp(end) if end is not None else g["time"].max()
    gap = pd.Timedelta(seconds=max((pd.Timestamp(hi) - pd.Timestamp(lo)).total_seconds(), 1.0) * near)
    groups: list[list[Any]] = []
    last = None
    for row in g.itertuples(index=False):
        t = pd.Timestamp(row.time)
        if last is None or t - last > gap:
            groups.append([])
        groups[-1].append(row)
        last = t
    rows = []
    for rows_in in groups:
        first = rows_in[0]
        label = str(first.label) if len(rows_in) == 1 else f"{first.label} +{len(rows_in) - 1}"
        detail = (str(first.detail) if len(rows_in) == 1 else
                  "<br>".join(f"{r.label}: {r.detail}" for r in rows_in))
        rows.append({**first._asdict(), "label": label, "detail": detail})
    return pd.DataFrame(rows, columns=list(g.columns))


def timeline_chart(events: Any, anomaly: Any = None, window: tuple[Any, Any] | None = None,
                   title: str = "Timeline: changes, alerts and the anomaly") -> Any:
    """One lane per kind (rollout, scaling, config, event, alert, anomaly); hover for details.

    Labels of one lane alternate above and below their markers where they are close, lean
    inwards at the edges, and are not clipped by the plot area.
    """
    import plotly.graph_objects as go

    if events is None or len(events) == 0:
        fig = empty_figure(title, "Nothing changed and no alert fired in the window.")
    else:
        fig = go.Figure()
        lo, hi = (window if window is not None else (events["time"].min(), events["time"].max()))
        for lane, g in events.groupby("lane", sort=False):
            g = cluster_events(g, lo, hi)
            fig.add_trace(go.Scatter(
                x=g["time"], y=[lane] * len(g), mode="markers+text", name=lane, text=g["label"],
                textposition=label_positions(list(g["time"]), lo, hi), cliponaxis=False,
                textfont={"size": 11},
                marker={"size": 13, "color": LANE_COLOURS.get(lane, "#7f7f7f"),
                        "symbol": "diamond" if lane in ("rollout", "config") else "circle"},
                customdata=g["detail"], hovertemplate="%{x}<br>%{text}<br>%{customdata}<extra></extra>"))
        lanes = events["lane"].nunique()
        fig.update_layout(height=160 + 70 * lanes, showlegend=False, title={"text": title},
                          margin={"l": 10, "r": 30, "t": 60, "b": 40})
        fig.update_yaxes(range=[-0.7, lanes - 0.3])
    _shade(fig, anomaly, until=window[1] if window is not None else None)
    if window is not None:
        fig.update_xaxes(range=list(window))
    return fig


def log_volume_chart(hist: Any, by: str = "level", title: str = "Log lines", missing: str | None = None) -> Any:
    """Stacked bars of log lines per time bucket, by level (or pod)."""
    import plotly.graph_objects as go

    if hist is None or len(hist) == 0:
        return empty_figure(title, missing or "No log lines for this workload in the window.")
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
