"""Prometheus: golden signals (RED) and saturation (USE) as tidy DataFrames, and anomaly windows.

Every query is a PromQL template in :data:`DEFAULT_QUERIES`; pass ``queries={name:
template}`` to override any of them (real clusters name and label things
differently). Templates are ``str.format`` strings, so literal PromQL braces are
doubled (``{{`` and ``}}``). Placeholders:

``{namespace}``       Kubernetes namespace (exact).
``{service}``         backend Service of the ingress (regex; ingress-nginx ``service`` label).
``{ingress}``         Ingress name (regex, default ``.+``).
``{workload}``        Deployment/StatefulSet/DaemonSet name.
``{pod_regex}``       pods of the workload (default: ``<workload>-<hash>-<suffix>``,
                      ``<workload>-<ordinal>`` or ``<workload>-<suffix>``).
``{container}``       container name (regex, default ``.+``).
``{rate_window}``     range of ``rate()``/``increase()`` (default: 5m, or 4 x step when larger).
``{quantile}``        for latency quantiles (0.5, 0.95, 0.99 ...).
``{by}``              grouping labels (RED: ``namespace, ingress, service``; USE:
                      ``namespace, pod, container``).
``{ingress_selector}`` ``namespace="...", service=~"...", ingress=~"..."`` built from the above.
``{pod_selector}``    ``namespace="...", pod=~"...", container=~"...", container!="", container!="POD"``.

Range queries never ask Prometheus for more than :data:`MAX_POINTS` points per
series: :func:`plan_chunks` picks the step and splits long windows; the chunks
are merged into one gap-free frame. Frames are tidy: ``timestamp`` (UTC), one
column per label, ``value``.

Connections verify TLS by default (``verify=False`` or a CA bundle path to
change that); credentials only come from the environment: ``$PROMETHEUS_TOKEN``
(bearer) or ``$PROMETHEUS_USERNAME`` / ``$PROMETHEUS_PASSWORD`` (basic auth).
Errors: :class:`~runbooks.errors.Unavailable` when Prometheus cannot be reached,
:class:`~runbooks.errors.InvalidInput` for a query it rejects (with its message),
:class:`~runbooks.errors.Forbidden` for refused credentials.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from .durations import parse_duration
from .errors import Forbidden, InvalidInput, Unavailable, cut, request_failed
from .secrets import check_transport

MAX_POINTS = 11_000
"""Prometheus refuses range queries of more than 11,000 points per series."""
TARGET_POINTS = 1_500
"""Points per series an automatic step aims at (enough for charts and anomaly detection)."""
MIN_STEP = 15
NICE_STEPS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

RED_BY = "namespace, ingress, service"
USE_BY = "namespace, pod, container"

DEFAULT_QUERIES: dict[str, str] = {
    # RED per ingress/service (ingress-nginx)
    "request_rate":
        'sum by ({by}) (rate(nginx_ingress_controller_requests{{{ingress_selector}}}[{rate_window}]))',
    "error_ratio":
        '(sum by ({by}) (rate(nginx_ingress_controller_requests{{{ingress_selector}, status=~"5.."}}[{rate_window}]))'
        ' or 0 * sum by ({by}) (rate(nginx_ingress_controller_requests{{{ingress_selector}}}[{rate_window}])))'
        ' / sum by ({by}) (rate(nginx_ingress_controller_requests{{{ingress_selector}}}[{rate_window}]))',
    "latency_quantile":
        'histogram_quantile({quantile}, sum by ({by}, le) '
        '(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{ingress_selector}}}[{rate_window}])))',
    # USE per workload (cAdvisor and kube-state-metrics)
    "cpu_usage":
        'sum by ({by}) (rate(container_cpu_usage_seconds_total{{{pod_selector}}}[{rate_window}]))',
    "cpu_limit":
        'max by ({by}) (kube_pod_container_resource_limits{{{pod_selector}, resource="cpu"}})',
    "cpu_throttling":
        'sum by ({by}) (increase(container_cpu_cfs_throttled_periods_total{{{pod_selector}}}[{rate_window}]))'
        ' / sum by ({by}) (increase(container_cpu_cfs_periods_total{{{pod_selector}}}[{rate_window}]))',
    "memory_working_set":
        'max by ({by}) (container_memory_working_set_bytes{{{pod_selector}}})',
    "memory_limit":
        'max by ({by}) (kube_pod_container_resource_limits{{{pod_selector}, resource="memory"}})',
    "memory_ratio":
        'max by ({by}) (container_memory_working_set_bytes{{{pod_selector}}})'
        ' / max by ({by}) (kube_pod_container_resource_limits{{{pod_selector}, resource="memory"}})',
    "restarts":
        'max by ({by}) (kube_pod_container_status_restarts_total{{{pod_selector}}})',
    "restarts_increase":
        'sum by ({by}) (increase(kube_pod_container_status_restarts_total{{{pod_selector}}}[{rate_window}]))',
    "oom_killed":
        'max by ({by}) (kube_pod_container_status_last_terminated_reason{{{pod_selector}, reason="OOMKilled"}})',
    "crash_looping":
        'max by ({by}) (kube_pod_container_status_waiting_reason{{{pod_selector}, reason="CrashLoopBackOff"}})',
}
"""PromQL templates by signal name (see the module docstring for placeholders)."""

RED_SIGNALS = ("request_rate", "error_ratio", "latency_quantile")
USE_SIGNALS = ("cpu_usage", "cpu_throttling", "memory_working_set", "memory_limit", "memory_ratio", "restarts")

DETECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "error_ratio": {"min_delta": 0.01},  # a rise of less than 1 percentage point is noise
    "latency_quantile": {"rel_floor": 0.5},  # and less than +50% latency
    "request_rate": {"k": 8.0, "rel_floor": 0.5, "direction": "both"},
    "cpu_throttling": {"min_delta": 0.05},
    "memory_ratio": {"min_delta": 0.1},
    "restarts_increase": {"min_delta": 0.5},
}
"""Anomaly-detector settings per signal name (overridable in :func:`find_anomaly`)."""

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_SAFE = "[b-df-hj-np-tv-z2-9]"  # the alphabet of Kubernetes generated name suffixes (no vowels)


# ---- connection --------------------------------------------------------------------


def connect(url: str, *, verify: bool | str = True, timeout: float = 30.0, retries: int = 2,
            token_env: str = "PROMETHEUS_TOKEN", username_env: str = "PROMETHEUS_USERNAME",
            password_env: str = "PROMETHEUS_PASSWORD") -> Any:
    """A ``prometheus_api_client.PrometheusConnect`` for `url`.

    `verify`: True (system CAs), False, or a CA bundle path. Credentials are read from
    the environment variables named by `token_env` (bearer) or `username_env` and
    `password_env` (basic auth), never from parameters.
    """
    import requests
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise InvalidInput(f"Prometheus URL {url!r} is not an http(s) URL (e.g. http://127.0.0.1:9090)")
    check_transport(url, "Prometheus")
    session = requests.Session()
    session.verify = verify
    headers = {}
    token = os.environ.get(token_env)
    auth = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif os.environ.get(username_env):
        auth = (os.environ[username_env], os.environ.get(password_env, ""))
    retry = Retry(total=retries, connect=retries, read=0, status=retries, backoff_factor=0.2,
                  status_forcelist=(502, 503, 504), allowed_methods=("GET", "POST"), raise_on_status=False)
    return PrometheusConnect(url=url.rstrip("/"), headers=headers or None, session=session, auth=auth,
                             retry=retry, timeout=timeout)


def _prom(prom: Any) -> Any:
    return connect(prom) if isinstance(prom, str) else prom


def _call(prom: Any, fn: str, *args: Any, **kwargs: Any) -> Any:
    import requests
    from prometheus_api_client.exceptions import PrometheusApiClientException

    url = getattr(prom, "url", "?")
    try:
        return getattr(prom, fn)(*args, **kwargs)
    except PrometheusApiClientException as exc:
        status, message = _api_error(str(exc))
        if status in (400, 422):
            raise InvalidInput(f"Prometheus rejected the query: {message}") from None
        if status in (401, 403):
            raise Forbidden(f"Prometheus at {url} refused the credentials (HTTP {status}): {message}") from None
        raise Unavailable(f"Prometheus at {url} answered HTTP {status}: {message}") from None
    except requests.exceptions.RequestException as exc:
        raise request_failed("Prometheus", url, exc) from None
    except ValueError as exc:  # a body that is not JSON: not Prometheus
        raise Unavailable(f"Prometheus at {url} answered something else than its API: {cut(str(exc))}") from None


def _api_error(text: str) -> tuple[int, str]:
    m = re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.S)
    if not m:
        return 0, cut(text)
    status, body = int(m.group(1)), m.group(2)
    try:
        raw = ast.literal_eval(body)
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        data = json.loads(body)
        return status, cut(data.get("error") or body)
    except (ValueError, SyntaxError, AttributeError):
        return status, cut(body)


def check(url: str | Any, **kwargs: Any) -> dict[str, Any]:
    """Preflight: is Prometheus there and answering its API? Returns url and version.

    Raises Unavailable (unreachable, not Prometheus) or Forbidden (credentials refused).
    """
    prom = connect(url, **kwargs) if isinstance(url, str) else url
    import requests

    try:
        resp = prom._session.get(f"{prom.url}/api/v1/status/buildinfo", headers=prom.headers, auth=prom.auth,
                                 timeout=prom._timeout)
    except requests.exceptions.RequestException as exc:
        raise request_failed("Prometheus", prom.url, exc) from None
    if resp.status_code in (401, 403):
        raise Forbidden(f"Prometheus at {prom.url} refused the credentials (HTTP {resp.status_code})")
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code != 200 or data.get("status") != "success":
        raise Unavailable(f"{prom.url} is not a Prometheus API (HTTP {resp.status_code}: {cut(resp.text)})")
    return {"ok": True, "url": prom.url, "version": data["data"].get("version", "")}


# ---- time, steps and chunks ---------------------------------------------------------


def to_datetime(value: Any) -> datetime:
    """datetime (naive = UTC), pandas Timestamp, epoch seconds or ISO 8601 text -> aware UTC datetime."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            return to_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise InvalidInput(f"{value!r} is not a time (use a datetime, epoch seconds or ISO 8601 text)")


def format_duration(seconds: float) -> str:
    """Prometheus duration text for whole seconds ("5m", "90s", "2h")."""
    s = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0 and s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def auto_step(window: float, target_points: int = TARGET_POINTS, min_step: float = MIN_STEP) -> int:
    """The smallest 'nice' step that keeps `window` seconds within `target_points` points."""
    want = max(min_step, window / max(target_points - 1, 1))
    for s in NICE_STEPS:
        if s >= want:
            return s
    return int(math.ceil(want))


def plan_chunks(start: Any, end: Any, step_hint: Any = None, *, max_points: int = MAX_POINTS,
                target_points: int = TARGET_POINTS, min_step: float = MIN_STEP) -> list[tuple[datetime, datetime, int]]:
    """Split a range query into requests of at most `max_points` points per series.

    The step is `step_hint` (seconds, timedelta or "30s") when given, else
    :func:`auto_step`. The first point is `start` rounded down to a multiple of the
    step, so every chunk lies on one grid; chunk i+1 begins one step after chunk i
    ends (no duplicate timestamps, no gap). Returns ``[(start, end, step_seconds)]``.
    """
    t0, t1 = to_datetime(start), to_datetime(end)
    if t1 <= t0:
        raise InvalidInput(f"the window end {t1.isoformat()} is not after its start {t0.isoformat()}")
    if max_points < 2:
        raise InvalidInput(f"max_points must be at least 2, not {max_points}")
    window = (t1 - t0).total_seconds()
    if step_hint is None:
        step = auto_step(window, min(target_points, max_points), min_step)
    else:
        step = parse_duration(step_hint, "step")
        if step < 1:
            raise InvalidInput(f"step {step_hint!r} is below one second")
        step = int(round(step))
    first = math.floor(t0.timestamp() / step) * step
    last = first + math.floor((t1.timestamp() - first) / step) * step
    chunks = []
    cs = first
    while cs <= last:
        ce = min(cs + (max_points - 1) * step, last)
        chunks.append((datetime.fromtimestamp(cs, UTC), datetime.fromtimestamp(ce, UTC), step))
        cs = ce + step
    return chunks


def points(start: datetime, end: datetime, step: float) -> int:
    """Points Prometheus returns per series for one range request."""
    return int(math.floor((end - start).total_seconds() / step)) + 1


# ---- queries -----------------------------------------------------------------------


def _frame(result: list[dict], instant: bool = False) -> pd.DataFrame:
    """Prometheus matrix/vector results as a tidy frame: timestamp, labels..., value."""
    if not result:
        return pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns, UTC]"),
                             "value": pd.Series([], dtype=float)})
    labels = sorted({k for r in result for k in r.get("metric", {})})
    parts = []
    for r in result:
        pairs = [r["value"]] if instant else r.get("values", [])
        if not pairs:
            continue
        arr = np.array(pairs, dtype=object)
        part = pd.DataFrame({
            "timestamp": pd.to_datetime(arr[:, 0].astype(float), unit="s", utc=True).as_unit("ns"),
            "value": pd.to_numeric(pd.Series(arr[:, 1]), errors="coerce").to_numpy(dtype=float),
        })
        metric = r.get("metric", {})
        for k in labels:
            part[k] = metric.get(k, "")
        parts.append(part)
    if not parts:
        return _frame([])
    df = pd.concat(parts, ignore_index=True)
    return df[["timestamp", *labels, "value"]]


def query(prom: Any, promql: str, at: Any = None) -> pd.DataFrame:
    """Instant query (at `at`, default now) as a tidy frame."""
    prom = _prom(prom)
    params = {"time": to_datetime(at).timestamp()} if at is not None else None
    return _frame(_call(prom, "custom_query", promql, params=params), instant=True)


def range_query(prom: Any, promql: str, start: Any, end: Any, step: Any = None, *,
                max_points: int = MAX_POINTS, target_points: int = TARGET_POINTS) -> pd.DataFrame:
    """Range query as one tidy frame, chunked so no request exceeds `max_points` per series."""
    prom = _prom(prom)
    frames = []
    for cs, ce, st in plan_chunks(start, end, step, max_points=max_points, target_points=target_points):
        frames.append(_frame(_call(prom, "custom_query_range", promql, start_time=cs, end_time=ce, step=str(st))))
    frames = [f for f in frames if len(f)]
    if not frames:
        return _frame([])
    df = pd.concat(frames, ignore_index=True)
    labels = [c for c in df.columns if c not in ("timestamp", "value")]
    for c in labels:
        df[c] = df[c].fillna("")
    df = df.drop_duplicates(subset=[*labels, "timestamp"], keep="first")
    return df.sort_values([*labels, "timestamp"], kind="stable").reset_index(drop=True)[["timestamp", *labels, "value"]]


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 253:
        raise InvalidInput(f"{what} {value!r} is not a Kubernetes name (lowercase letters, digits and '-')")
    return value


def promql_string(value: str) -> str:
    """Escape a value for a double-quoted PromQL string."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def default_pod_regex(workload: str) -> str:
    """Pods of a Deployment (name-hash-suffix), StatefulSet (name-N) or DaemonSet (name-suffix)."""
    w = re.escape(_check_name("workload", workload))
    return f"{w}-({_SAFE}{{5,10}}-)?{_SAFE}{{5}}|{w}-[0-9]+"


def render_query(name: str, queries: Mapping[str, str] | None = None, **params: Any) -> str:
    """The PromQL of template `name` (from `queries` or :data:`DEFAULT_QUERIES`) with `params` filled in.

    For PromQL of your own, add it to `queries` under a name of your choice.
    """
    templates = {**DEFAULT_QUERIES, **(queries or {})}
    if name not in templates:
        raise InvalidInput(f"no query named {name!r}; known: {', '.join(sorted(templates))} "
                           "(add your own PromQL through queries={name: template})")
    template = templates[name]
    p = dict(params)
    p.setdefault("ingress", ".+")
    p.setdefault("container", ".+")
    p.setdefault("rate_window", "5m")
    p.setdefault("quantile", 0.99)
    p.setdefault("by", RED_BY if "service" in p else USE_BY)
    if "namespace" in p:
        _check_name("namespace", p["namespace"])
    if not re.fullmatch(r"\s*[a-zA-Z_][a-zA-Z0-9_]*(\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*)*\s*", str(p["by"])):
        raise InvalidInput(f"by {p['by']!r} is not a comma-separated list of label names")
    try:
        quantile = float(p["quantile"])
    except (TypeError, ValueError):
        quantile = -1.0
    if not 0 <= quantile <= 1:
        raise InvalidInput(f"quantile {p['quantile']!r} is not a number between 0 and 1")
    if p.get("workload") and not p.get("pod_regex"):
        p["pod_regex"] = default_pod_regex(p["workload"])
    if "service" in p and "ingress_selector" not in p:
        p["ingress_selector"] = (f'namespace="{promql_string(p.get("namespace", ""))}", '
                                 f'service=~"{promql_string(p["service"])}", '
                                 f'ingress=~"{promql_string(p["ingress"])}"')
    if "pod_regex" in p and "pod_selector" not in p:
        p["pod_selector"] = (f'namespace="{promql_string(p.get("namespace", ""))}", '
                             f'pod=~"{promql_string(p["pod_regex"])}", '
                             f'container=~"{promql_string(p["container"])}", container!="", container!="POD"')
    try:
        return template.format(**p)
    except KeyError as exc:
        raise InvalidInput(f"query {name!r} needs the parameter {exc.args[0]!r}; given: {', '.join(sorted(p))}") \
            from None
    except (IndexError, ValueError) as exc:
        raise InvalidInput(f"query template {name!r} is not a valid format string ({exc}); "
                           "double literal PromQL braces: {{ and }}") from None


def _rate_window(step: int, rate_window: Any) -> str:
    if rate_window:
        return format_duration(parse_duration(rate_window, "rate_window"))
    return format_duration(max(300, 4 * step))


def signal(prom: Any, name: str, start: Any, end: Any, step: Any = None, *,
           queries: Mapping[str, str] | None = None, rate_window: Any = None, **params: Any) -> pd.DataFrame:
    """One named signal over a window, as a tidy frame with a ``signal`` column."""
    plan = plan_chunks(start, end, step)
    promql = render_query(name, queries, rate_window=_rate_window(plan[0][2], rate_window), **params)
    df = range_query(prom, promql, start, end, plan[0][2])
    df.insert(1, "signal", name)
    return df


def _quantile_name(q: float) -> str:
    return f"latency_p{format(q * 100, 'g').replace('.', '_')}"


def red(prom: Any, namespace: str, service: str, start: Any, end: Any, step: Any = None, *,
        ingress: str = ".+", quantiles: Sequence[float] = (0.5, 0.95, 0.99), by: str = RED_BY,
        queries: Mapping[str, str] | None = None, rate_window: Any = None) -> pd.DataFrame:
    """Request rate, 5xx error ratio and latency quantiles of a service's ingress traffic.

    Long frame: ``timestamp, signal, <by labels>, value`` with signals ``request_rate``,
    ``error_ratio`` and ``latency_p50``/``latency_p95``/``latency_p99`` (per `quantiles`).
    """
    prom = _prom(prom)
    common = {"namespace": namespace, "service": service, "ingress": ingress, "by": by,
              "queries": queries, "rate_window": rate_window}
    calls = [partial(signal, prom, "request_rate", start, end, step, **common),
             partial(signal, prom, "error_ratio", start, end, step, **common)]
    calls += [partial(signal, prom, "latency_quantile", start, end, step, quantile=q, **common) for q in quantiles]
    frames = concurrently(calls)
    for q, f in zip(quantiles, frames[2:], strict=True):
        f["signal"] = _quantile_name(q)
    return _concat(frames)


def use(prom: Any, namespace: str, workload: str, start: Any, end: Any, step: Any = None, *,
        pod_regex: str | None = None, container: str = ".+", by: str = USE_BY,
        signals: Sequence[str] = USE_SIGNALS, queries: Mapping[str, str] | None = None,
        rate_window: Any = None) -> pd.DataFrame:
    """CPU usage and throttling, memory working set vs limit and restarts of a workload's pods.

    Long frame: ``timestamp, signal, <by labels>, value`` for each of `signals`.
    """
    prom = _prom(prom)
    common = {"namespace": namespace, "workload": workload, "pod_regex": pod_regex or default_pod_regex(workload),
              "container": container, "by": by}
    return _concat(concurrently([partial(signal, prom, s, start, end, step, queries=queries,
                                         rate_window=rate_window, **common) for s in signals]))


def concurrently(calls: Sequence[Callable[[], pd.DataFrame]], workers: int = 8) -> list[pd.DataFrame]:
    """Run independent queries at once (Prometheus answers each in its own goroutine), results in order.

    The first failure is raised, as it would be one query after another.
    """
    if len(calls) <= 1:
        return [c() for c in calls]
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        df = _frame([])
        df.insert(1, "signal", pd.Series([], dtype=object))
        return df
    df = pd.concat(frames, ignore_index=True)
    labels = [c for c in df.columns if c not in ("timestamp", "signal", "value")]
    for c in labels:
        df[c] = df[c].fillna("")
    return df[["timestamp", "signal", *labels, "value"]]


# ---- anomaly windows ---------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """When a signal left its baseline (`start`) and came back (`end`; None if it has not)."""

    start: pd.Timestamp
    end: pd.Timestamp | None
    peak_time: pd.Timestamp
    peak: float
    baseline: float
    threshold: float
    direction: str

    @property
    def ongoing(self) -> bool:
        return self.end is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("start", "end", "peak_time"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def _series(values: Any, reduce: str) -> pd.Series:
    """A float Series indexed by timestamp from a Series or a tidy frame (several series reduced)."""
    if isinstance(values, pd.Series):
        s = values.astype(float)
    elif isinstance(values, pd.DataFrame):
        if not {"timestamp", "value"} <= set(values.columns):
            raise InvalidInput("a frame for anomaly detection needs 'timestamp' and 'value' columns")
        grouped = values.groupby("timestamp")["value"]
        s = {"max": grouped.max, "min": grouped.min, "sum": grouped.sum, "mean": grouped.mean}[reduce]()
    else:
        raise InvalidInput(f"expected a pandas Series or tidy DataFrame, not {type(values).__name__}")
    s = s.sort_index()
    return s[np.isfinite(s.to_numpy(dtype=float))]


def detect_anomaly(values: Any, baseline: Any = None, *, direction: str = "up", k: float = 5.0,
                   min_points: int = 3, rel_floor: float = 0.1, min_delta: float = 0.0,
                   baseline_fraction: float = 1 / 3) -> Anomaly | None:
    """Find when `values` left its baseline and when it returned (robust, median/MAD).

    Args:
        values: a Series indexed by time, or a tidy frame (``timestamp``, ``value``); a frame
            with several series is reduced per timestamp (max for "up", min for "down").
        baseline: the same kind of data for a normal period (e.g. the window before);
            default: the first `baseline_fraction` of `values`.
        direction: "up", "down" or "both".
        k: how many robust standard deviations (1.4826 x MAD) count as leaving the baseline.
        min_points: consecutive points beyond the threshold needed to start (and, within the
            threshold, to end) an anomaly; shorter excursions are noise.
        rel_floor, min_delta: the threshold is at least `rel_floor` x |median| and `min_delta`
            away from the median (so a flat baseline does not make every wiggle an anomaly).

    Returns the anomaly with the most extreme point, or None.
    """
    if direction not in ("up", "down", "both"):
        raise InvalidInput(f"direction {direction!r} is not one of up, down, both")
    reduce = "min" if direction == "down" else "max"
    x = _series(values, reduce)
    if len(x) < min_points:
        return None
    if baseline is None:
        n = max(min_points, int(len(x) * baseline_fraction))
        b = x.iloc[:n]
    else:
        b = _series(baseline, reduce)
        if len(b) == 0:
            b = x.iloc[: max(min_points, int(len(x) * baseline_fraction))]
    bv = b.to_numpy(dtype=float)
    med = float(np.median(bv))
    dev = np.abs(bv - med)
    scale = 1.4826 * float(np.median(dev))
    if scale == 0:
        scale = 1.2533 * float(np.mean(dev))
    delta = max(k * scale, rel_floor * abs(med), min_delta)
    if delta == 0:
        delta = 1e-9 * max(1.0, abs(med))
    v = x.to_numpy(dtype=float)
    if direction == "up":
        out, score, base_score = v > med + delta, v - med, bv - med
    elif direction == "down":
        out, score, base_score = v < med - delta, med - v, med - bv
    else:
        out, score, base_score = np.abs(v - med) > delta, np.abs(v - med), dev
    runs = _runs(out, min_points)
    if not runs:
        return None
    # the run holding the most extreme point
    best = max(runs, key=lambda r: float(np.max(score[r[0]:r[1]])))
    i0, i1 = best
    first = _strong_start(out, score, i0, i1)
    # the walk back below may not reach into what was dropped
    floor = 0 if first == i0 else 1 + max(i for i in range(i0, first) if out[i])
    i0 = first
    # hysteresis: the anomaly began where the signal first left the baseline's noise,
    # which may be a point or two before it crossed the (deliberately high) threshold. The noise
    # includes what the baseline itself reaches now and then (its 99th percentile): a tail quantile
    # such as p99 latency jumps between histogram buckets far beyond its MAD, and walking back over
    # such jumps would date the anomaly minutes before the change that caused it.
    low = min(delta, max(delta / 4, 2 * scale, float(np.quantile(base_score, 0.99))))
    while i0 > floor and score[i0 - 1] > low:
        i0 -= 1
    j = i0 + int(np.argmax(score[i0:i1]))
    end = x.index[i1] if i1 < len(x) else None
    return Anomaly(start=pd.Timestamp(x.index[i0]), end=pd.Timestamp(end) if end is not None else None,
                   peak_time=pd.Timestamp(x.index[j]), peak=float(v[j]), baseline=med,
                   threshold=med + delta if direction != "down" else med - delta, direction=direction)


def _strong_start(out: np.ndarray, score: np.ndarray, i0: int, i1: int) -> int:
    """Where the run [i0, i1) really starts: its leading stretches beyond the threshold that never
    reach half its peak are dropped. A run merges gaps shorter than ``min_points``, so a signal
    wandering just over the threshold before the change (a p99 in the next histogram bucket as
    traffic rises through the day) would otherwise date the anomaly minutes too early."""
    peak = float(np.max(score[i0:i1]))
    i = i0
    while True:
        j = i
        while j < i1 and out[j]:
            j += 1
        if float(np.max(score[i:j])) >= peak / 2 or j >= i1:
            return i
        while j < i1 and not out[j]:
            j += 1
        if j >= i1:
            return i
        i = j


def _runs(mask: np.ndarray, min_points: int) -> list[tuple[int, int]]:
    """[start, stop) index ranges of True runs of at least `min_points`, merging gaps shorter than that."""
    runs: list[list[int]] = []
    i, n = 0, len(mask)
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            if runs and i - runs[-1][1] < min_points:
                runs[-1][1] = j
            else:
                runs.append([i, j])
            i = j
        else:
            i += 1
    return [(a, b) for a, b in runs if b - a >= min_points]


def find_anomaly(prom: Any, name: str, start: Any, end: Any, step: Any = None, *,
                 baseline: str = "previous", queries: Mapping[str, str] | None = None, rate_window: Any = None,
                 detector: Mapping[str, Any] | None = None, values: pd.DataFrame | None = None,
                 **params: Any) -> Anomaly | None:
    """Query a signal over [start, end] and find its anomaly window.

    `baseline`: "previous" (the window of the same length just before `start`), "day"
    (the same window a day earlier) or "leading" (the first third of the window).
    `detector` overrides :func:`detect_anomaly` settings (defaults per signal in
    :data:`DETECTION_DEFAULTS`). Other keyword arguments fill the query template.
    `values`: the signal over the window when already queried (e.g. a slice of :func:`red`),
    so only the baseline is queried.
    """
    t0, t1 = to_datetime(start), to_datetime(end)
    plan = plan_chunks(t0, t1, step)
    st = plan[0][2]
    if values is None:
        values = signal(prom, name, t0, t1, st, queries=queries, rate_window=rate_window, **params)
    if baseline == "leading":
        base = None
    elif baseline in ("previous", "day"):
        shift = (t1 - t0) if baseline == "previous" else timedelta(days=1)
        base = signal(prom, name, t0 - shift, t1 - shift if baseline == "day" else t0, st, queries=queries,
                      rate_window=rate_window, **params)
    else:
        raise InvalidInput(f"baseline {baseline!r} is not one of previous, day, leading")
    settings = {**DETECTION_DEFAULTS.get(name, {}), **(detector or {})}
    if not len(values):
        return None
    return detect_anomaly(values, base if base is not None and len(base) else None, **settings)
