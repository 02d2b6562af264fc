"""Logs from Elasticsearch (Fluent-bit documents): volume, top errors, lines around a time.

Runbooks ask three questions of the log store for a namespace, a workload
and a time window: how much was logged, at which level, by which pod
(:func:`volume_histogram`); which error messages dominate once ids and
numbers are ignored (:func:`top_errors`); and what the log says around a
moment (:func:`sample_lines`).  :func:`check` is the preflight.  The connection
(:func:`connect`, :class:`LogSource`, credentials and error mapping) is
:mod:`runbooks.elastic`; its names are here too.

Design choices:

* **The server counts, not the client.**  Counts and histograms are
  Elasticsearch aggregations (``date_histogram`` and ``terms``), so a
  million-line window costs one request.  Top errors start from a ``terms``
  aggregation on the exact message; what that cannot cover (messages longer
  than the ``.keyword`` limit, more distinct messages than ``max_groups``) is
  read with a point-in-time ``search_after`` scan of *error documents only*,
  at most ``max_scan`` of them; the result says when that bound was hit
  (``attrs["complete"]``).  Nothing here pages through every document.
* **Every field name is a parameter** (:class:`LogFields`), defaulting to
  what Fluent-bit's kubernetes filter and ``Logstash_Format`` write
  (``logstash-*``, ``@timestamp``, ``log``, ``kubernetes.pod_name`` ...).  For
  exact matching and aggregations each field is resolved once through
  ``_field_caps``: a ``keyword`` field is used as is, a ``text`` field through
  its ``.keyword`` sub-field (Elasticsearch's dynamic mapping).
* **Levels**: documents whose app logs JSON carry a parsed ``level``; lines
  without one count as errors when their ``log`` mentions an error keyword
  (``error``, ``exception``, ``fatal``, ``panic``), so a plain-text stack
  trace header still shows up.  Both lists are parameters.
* **Credentials only from the environment**: ``ES_API_KEY`` (``id:key`` or
  the encoded form), or ``ES_USERNAME`` and ``ES_PASSWORD``, or
  ``ES_BEARER_TOKEN``; never parameters, which papermill writes into the
  output notebook.  TLS verification is on by default; ``ca_certs`` names a
  CA bundle.  Credentials are refused over plain ``http://`` except to
  loopback.

Results are plain data (pandas DataFrames with metadata in ``.attrs``, and
dicts); nothing here draws.

Example:
    >>> src = connect("http://127.0.0.1:9200")                       # doctest: +SKIP
    >>> volume_histogram(src, "shop", "checkout", lookback="6h")     # doctest: +SKIP
    >>> top_errors(src, "shop", "checkout", lookback="6h").head(5)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from .durations import positive_timedelta
from .elastic import DEFAULT_INDEX as DEFAULT_INDEX  # the connection's names, kept here for callers
from .elastic import LogFields, LogSource, call, exact_field
from .elastic import connect as connect
from .errors import Forbidden, InvalidInput, NotFound, RunbookError, Unavailable, cut

ERROR_LEVELS = (
    "error", "err", "fatal", "critical", "crit", "panic", "emerg", "alert", "severe",
    "ERROR", "Error", "ERR", "FATAL", "Fatal", "CRITICAL", "Critical", "CRIT", "PANIC", "EMERG",
    "ALERT", "SEVERE", "E", "F", "50", "60",
)  # fmt: skip
ERROR_KEYWORDS = ("error", "exception", "fatal", "panic")
MAX_GROUPS = 500
MAX_SCAN = 10_000
PAGE_SIZE = 1_000
MAX_BUCKETS = 240
_INTERVALS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


# -- parameters -------------------------------------------------------------------------------


def window(start: datetime | None = None, end: datetime | None = None, lookback: str | timedelta = "6h",
           now: datetime | None = None) -> tuple[datetime, datetime]:
    """The (start, end) a function works on: explicit times, or ``lookback`` before ``end``/now."""
    for name, value in (("start", start), ("end", end), ("now", now)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInput(f"{name} must be a timezone-aware datetime (UTC), got {value!r}")
    end = end or now or datetime.now(UTC)
    start = start or end - positive_timedelta(lookback, "lookback")
    if start >= end:
        raise InvalidInput(f"window start {start.isoformat()} must be before end {end.isoformat()}")
    return start.astimezone(UTC), end.astimezone(UTC)


def _check_names(namespace, workload, pod, labels) -> None:
    if namespace is not None and not (isinstance(namespace, str) and _DNS_LABEL.fullmatch(namespace)):
        raise InvalidInput(f"namespace {namespace!r} is not a Kubernetes namespace name "
                           "(lowercase letters, digits and '-', at most 63)")
    for name, value in (("workload", workload), ("pod", pod)):
        if value is not None and not (isinstance(value, str) and _DNS_NAME.fullmatch(value)):
            raise InvalidInput(f"{name} {value!r} is not a Kubernetes object name "
                               "(lowercase letters, digits, '-' and '.')")
    if labels is not None and (not isinstance(labels, Mapping) or
                               not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
        raise InvalidInput(f"labels must map label keys to values (strings), got {labels!r}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _time(ms) -> pd.Timestamp:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def _filters(src: LogSource, namespace, workload, labels, pod, start: datetime | None,
             end: datetime | None) -> list[dict]:
    _check_names(namespace, workload, pod, labels)
    f = src.fields
    out: list[dict] = []
    if start is not None or end is not None:
        bounds: dict[str, Any] = {"format": "strict_date_optional_time"}
        if start is not None:
            bounds["gte"] = _iso(start)
        if end is not None:
            bounds["lt"] = _iso(end)
        out.append({"range": {f.timestamp: bounds}})
    if namespace:
        out.append({"term": {exact_field(src, f.namespace): namespace}})
    if workload:
        out.append({"prefix": {exact_field(src, f.pod): f"{workload}-"}})
    if pod:
        out.append({"term": {exact_field(src, f.pod): pod}})
    for key, value in (labels or {}).items():
        out.append({"term": {exact_field(src, src.label_field(key)): value}})
    return out


def error_query(src: LogSource, levels=ERROR_LEVELS, keywords=ERROR_KEYWORDS) -> dict:
    """Documents at an error level, or without a level whose line mentions an error keyword."""
    f = src.fields
    should: list[dict] = [{"terms": {exact_field(src, f.level): list(levels)}}]
    if keywords:
        should.append({"bool": {"must_not": [{"exists": {"field": f.level}}],
                                "must": [{"match": {f.log: {"query": " ".join(keywords), "operator": "or"}}}]}})
    return {"bool": {"should": should, "minimum_should_match": 1}}


def choose_interval(start: datetime, end: datetime, max_buckets: int = MAX_BUCKETS) -> str:
    """The smallest usual interval (10s ... 1d) that keeps the window within ``max_buckets``."""
    seconds = (end - start).total_seconds()
    for step in _INTERVALS:
        if seconds / step <= max_buckets:
            return _interval_text(step)
    return f"{math.ceil(seconds / max_buckets / 86400)}d"


def _interval_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- volume -------------------------------------------------------------------------------------


INLINE_LEVELS = ("fatal", "error", "warn", "warning", "info", "debug", "trace")
"""Levels recognised inside an unparsed JSON line (``"level":"error"`` in the ``log`` field)."""


def volume_histogram(
    src: LogSource,
    namespace: str | None = None,
    workload: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    pod: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    lookback: str | timedelta = "6h",
    interval: str | None = None,
    max_levels: int = 10,
    max_pods: int = 50,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Log lines per time bucket, level and pod: one ``date_histogram`` > ``terms`` > ``terms`` request.

    Returns a tidy DataFrame with columns ``time`` (bucket start, UTC),
    ``level`` (lower-cased; ``unknown`` when the document has none), ``pod``
    and ``count``, one row per non-empty combination.  ``attrs`` holds
    ``interval``, ``start``, ``end``, ``buckets`` (every bucket start, empty
    ones included), ``total`` and ``other`` (documents in levels/pods beyond
    ``max_levels``/``max_pods``).  :func:`volume_by` pivots it.
    """
    start, end = window(start, end, lookback, now)
    if interval is None:
        interval = choose_interval(start, end)
    else:
        step = positive_timedelta(interval, "interval")
        if step.total_seconds() < 1 or step.total_seconds() % 1:
            raise InvalidInput(f"interval {interval!r} must be a whole number of seconds (e.g. 30s, 5m, 1h)")
        interval = _interval_text(int(step.total_seconds()))  # fixed_interval knows s, m, h, d
        if (end - start) / step > 10 * MAX_BUCKETS:
            raise InvalidInput(f"interval {interval!r} makes {int((end - start) / step)} buckets for this window; "
                               f"use a larger interval (at most {10 * MAX_BUCKETS} buckets)")
    f = src.fields
    body = {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": _filters(src, namespace, workload, labels, pod, start, end)}},
        "aggs": {"t": {
            "date_histogram": {"field": f.timestamp, "fixed_interval": interval, "min_doc_count": 0,
                               "extended_bounds": {"min": _ms(start), "max": _ms(end) - 1}},
            "aggs": {"level": {
                "terms": {"field": exact_field(src, f.level), "size": max_levels, "missing": "unknown"},
                "aggs": {"pod": {"terms": {"field": exact_field(src, f.pod), "size": max_pods}},
                         # documents without a parsed level: read it from the JSON line itself
                         "inline": {"filters": {"filters": {
                             lvl: {"match_phrase": {f.log: f'"level":"{lvl}"'}} for lvl in INLINE_LEVELS},
                             "other_bucket_key": "unknown"},
                             "aggs": {"pod": {"terms": {"field": exact_field(src, f.pod), "size": max_pods}}}}}}},
        }},
    }
    resp = call(src, "log volume histogram", src.client.search, index=src.index, ignore_unavailable=True,
                 allow_no_indices=True, **body)
    rows, buckets, other = [], [], 0
    for bucket in resp["aggregations"]["t"]["buckets"]:
        moment = _time(bucket["key"])
        buckets.append(moment)
        other += bucket["level"]["sum_other_doc_count"]
        for level in bucket["level"]["buckets"]:
            name = str(level["key"]).lower()
            parts = [(name, level)]
            inline = (level.get("inline") or {}).get("buckets") or {}
            if name == "unknown" and inline:  # e.g. Fluent-bit without Merge_Log: the level is in `log`
                parts = [(str(k).lower(), b) for k, b in inline.items() if b.get("doc_count")]
            for part, agg in parts:
                other += agg["pod"]["sum_other_doc_count"]
                for pod_bucket in agg["pod"]["buckets"]:
                    rows.append((moment, part, pod_bucket["key"], pod_bucket["doc_count"]))
                unattributed = agg["doc_count"] - sum(b["doc_count"] for b in agg["pod"]["buckets"]) \
                    - agg["pod"]["sum_other_doc_count"]
                if unattributed > 0:  # documents without a pod name
                    rows.append((moment, part, "", unattributed))
    df = pd.DataFrame(rows, columns=["time", "level", "pod", "count"])
    if not df.empty:
        df = df.groupby(["time", "level", "pod"], as_index=False)["count"].sum()
    df.attrs.update(interval=interval, start=start, end=end, buckets=buckets,
                    total=resp["hits"]["total"]["value"], other=other)
    return df


def volume_by(df: pd.DataFrame, by: str = "level") -> pd.DataFrame:
    """A :func:`volume_histogram` result as a wide table: one row per bucket (empty ones as 0),
    one column per ``level`` or ``pod``."""
    if by not in ("level", "pod"):
        raise InvalidInput(f"by must be 'level' or 'pod', got {by!r}")
    index = pd.DatetimeIndex(df.attrs.get("buckets") or sorted(df["time"].unique()), name="time")
    if df.empty:
        return pd.DataFrame(index=index)
    wide = df.pivot_table(index="time", columns=by, values="count", aggfunc="sum", fill_value=0)
    wide = wide.reindex(index, fill_value=0)
    wide.columns.name = by
    return wide.astype(int)


# -- top errors ---------------------------------------------------------------------------------

_NORMALISE = [
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"), "<time>"),
    (re.compile(r"\b\d{1,2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}(?: [+-]\d{4})?"), "<time>"),
    (re.compile(r"\b\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}"), "<time>"),
    (re.compile(r"(?<=\b[IWEF])\d{4} \d{2}:\d{2}:\d{2}\.\d+"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    (re.compile(r"\b(?:\d+(?:\.\d+)?(?:h|m|s|ms|µs|us|ns)){2,}\b"), "<duration>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|sec|secs|seconds|min|mins|minutes|h|hours)\b"), "<duration>"),
    (re.compile(r"\b\d+(?:[.,]\d+)*\b"), "<n>"),
    (re.compile(r"\s+"), " "),
]
MAX_PATTERN = 500


def normalise(message: str) -> str:
    """A message with its variable parts as placeholders, so that ids don't split groups.

    Times -> ``<time>``, UUIDs -> ``<uuid>``, IPv4/IPv6 (with port) -> ``<ip>``,
    hex ids (8+ hex digits with a letter and a digit, or ``0x...``) -> ``<hex>``,
    durations (``5000ms``, ``1.5 s``, ``5m0s``) -> ``<duration>``, other
    numbers -> ``<n>``.

    >>> normalise("Order 3f0c6b2e-1d2a-4c3b-9a8f-0e1d2c3b4a59 failed after 5000ms (10.244.1.7:8080)")
    'Order <uuid> failed after <duration> (<ip>)'
    """
    text = message
    for pattern, placeholder in _NORMALISE:
        text = pattern.sub(placeholder, text)
    text = text.strip()
    return text if len(text) <= MAX_PATTERN else text[:MAX_PATTERN] + "…"


def message_text(source: dict, fields: LogFields) -> str:
    """The message of a document: the parsed message, else the ``log`` line (its ``message``/
    ``msg`` when the line is JSON that nothing parsed)."""
    value = _get(source, fields.message)
    if isinstance(value, str) and value:
        return value
    line = _get(source, fields.log)
    line = line if isinstance(line, str) else "" if line is None else str(line)
    return _json_message(line)


def _json_message(line: str) -> str:
    text = line.strip()
    if text.startswith("{"):
        try:
            record = json.loads(text)
        except ValueError:
            return text
        if isinstance(record, dict):
            for key in ("message", "msg", "error", "err"):
                if isinstance(record.get(key), str):
                    return record[key]
    return text


def _get(source: dict, path: str):
    if path in source:
        return source[path]
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class _Group:
    __slots__ = ("count", "first", "last", "pods", "levels", "example", "example_time")

    def __init__(self):
        self.count, self.first, self.last = 0, None, None
        self.pods: Counter = Counter()
        self.levels: Counter = Counter()
        self.example, self.example_time = "", None

    def add(self, count: int, first, last, pods: Mapping, levels: Mapping, example: str, example_time) -> None:
        self.count += count
        self.first = first if self.first is None or (first is not None and first < self.first) else self.first
        self.last = last if self.last is None or (last is not None and last > self.last) else self.last
        self.pods.update(pods)
        self.levels.update(levels)
        if example and (self.example_time is None or (example_time is not None and example_time > self.example_time)):
            self.example, self.example_time = example, example_time


def top_errors(
    src: LogSource,
    namespace: str | None = None,
    workload: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    pod: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    lookback: str | timedelta = "6h",
    levels=ERROR_LEVELS,
    keywords=ERROR_KEYWORDS,
    limit: int = 20,
    max_groups: int = MAX_GROUPS,
    max_scan: int = MAX_SCAN,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Error messages grouped after :func:`normalise`, most frequent first.

    One aggregation request groups error documents by exact message
    (``max_groups`` distinct messages, with first/last seen, pods, levels and
    the latest line of each); groups that differ only in ids or numbers are
    merged.  Error documents the aggregation could not cover are read with
    a point-in-time ``search_after`` scan of at most ``max_scan`` documents.

    Returns columns ``pattern``, ``count``, ``share`` (of all error
    documents), ``first_seen``, ``last_seen``, ``pods`` (most active first),
    ``levels`` and ``example``; ``attrs``: ``total`` (error documents in the
    window), ``from_aggregation``, ``scanned``, ``scan_limit_hit`` and
    ``complete`` (every error document is counted).
    """
    if limit < 1 or max_groups < 1 or max_scan < 0:
        raise InvalidInput(f"limit and max_groups must be >= 1 and max_scan >= 0, got {limit}, {max_groups}, "
                           f"{max_scan}")
    start, end = window(start, end, lookback, now)
    errors = error_query(src, levels, keywords)
    base = _filters(src, namespace, workload, labels, pod, start, end) + [errors]
    exact = exact_field(src, src.fields.message), exact_field(src, src.fields.log)
    resp = call(src, "top error messages", src.client.search, index=src.index, ignore_unavailable=True,
                allow_no_indices=True, **_top_errors_request(src, base, *exact, max_groups))
    total = resp["hits"]["total"]["value"]
    groups: dict[str, _Group] = {}
    covered, keys = _group_buckets(src.fields, resp["aggregations"], groups)
    scanned, limit_hit = 0, False
    if covered < total and max_scan > 0:
        scanned = _scan_uncovered(src, base, exact, keys, groups, max_scan)
        limit_hit = covered + scanned < total
    df = _error_table(groups, total, limit)
    df.attrs.update(total=total, from_aggregation=covered, scanned=scanned, scan_limit_hit=limit_hit,
                    complete=covered + scanned >= total, max_scan=max_scan, start=start, end=end)
    return df


def _top_errors_request(src: LogSource, base: list[dict], msg_field: str, log_field: str,
                        max_groups: int) -> dict:
    """The one search of :func:`top_errors`: error documents by exact message (``msg``), and by
    exact line for those without a parsed message (``raw.log``), each bucket with its facts."""
    f = src.fields
    group_aggs = {
        "first": {"min": {"field": f.timestamp}},
        "last": {"max": {"field": f.timestamp}},
        "pods": {"terms": {"field": exact_field(src, f.pod), "size": 10}},
        "levels": {"terms": {"field": exact_field(src, f.level), "size": 3}},
        "example": {"top_hits": {"size": 1, "sort": [{f.timestamp: {"order": "desc"}}],
                                 "_source": [f.timestamp, f.log, f.message, f.pod]}},
    }
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": base}},
        "aggs": {
            "msg": {"terms": {"field": msg_field, "size": max_groups}, "aggs": group_aggs},
            "raw": {"filter": {"bool": {"must_not": [{"exists": {"field": f.message}}]}},
                    "aggs": {"log": {"terms": {"field": log_field, "size": max_groups}, "aggs": group_aggs}}},
        },
    }


def _group_buckets(f: LogFields, aggregations: dict,
                   groups: dict[str, _Group]) -> tuple[int, dict[str, list]]:
    """Add the aggregation's buckets to `groups`; the documents they cover and their keys."""
    covered = 0
    keys: dict[str, list] = {"msg": [], "log": []}
    for name, agg in (("msg", aggregations["msg"]), ("log", aggregations["raw"]["log"])):
        for bucket in agg["buckets"]:
            covered += bucket["doc_count"]
            keys[name].append(bucket["key"])
            hit = (bucket["example"]["hits"]["hits"] or [{}])[0]
            source = hit.get("_source") or {}
            text = bucket["key"] if name == "msg" else _json_message(str(bucket["key"]))
            example = _get(source, f.log) or text
            pattern = normalise(text)
            groups.setdefault(pattern, _Group()).add(
                bucket["doc_count"], bucket["first"].get("value"), bucket["last"].get("value"),
                {b["key"]: b["doc_count"] for b in bucket["pods"]["buckets"]},
                {str(b["key"]).lower(): b["doc_count"] for b in bucket["levels"]["buckets"]},
                str(example), bucket["last"].get("value"))
    return covered, keys


def _scan_uncovered(src: LogSource, base: list[dict], exact: tuple[str, str], keys: dict[str, list],
                    groups: dict[str, _Group], max_scan: int) -> int:
    """Scan the error documents no bucket covered (at most `max_scan`) into `groups`; how many."""
    f = src.fields
    msg_field, log_field = exact
    exclude = []
    if keys["msg"]:
        exclude.append({"terms": {msg_field: keys["msg"]}})
    if keys["log"]:
        exclude.append({"bool": {"must_not": [{"exists": {"field": f.message}}],
                                 "filter": [{"terms": {log_field: keys["log"]}}]}})
    query = {"bool": {"filter": base, "must_not": exclude}}
    scanned = 0
    for hit in scan(src, query, max_docs=max_scan, source=[f.timestamp, f.log, f.message, f.pod, f.level]):
        scanned += 1
        source = hit.get("_source") or {}
        moment = (hit.get("sort") or [None])[0]
        level = _get(source, f.level)
        groups.setdefault(normalise(message_text(source, f)), _Group()).add(
            1, moment, moment, {_get(source, f.pod) or "": 1},
            {str(level).lower(): 1} if level is not None else {}, str(_get(source, f.log) or ""), moment)
    return scanned


def _error_table(groups: dict[str, _Group], total: int, limit: int) -> pd.DataFrame:
    """The `limit` largest groups, most frequent (then latest) first."""
    rows = []
    for pattern, g in groups.items():
        rows.append({
            "pattern": pattern,
            "count": g.count,
            "share": g.count / total if total else 0.0,
            "first_seen": _time(g.first) if g.first is not None else pd.NaT,
            "last_seen": _time(g.last) if g.last is not None else pd.NaT,
            "pods": [p for p, _ in g.pods.most_common() if p],
            "levels": [lv for lv, _ in g.levels.most_common()],
            "example": g.example,
        })
    columns = ["pattern", "count", "share", "first_seen", "last_seen", "pods", "levels", "example"]
    df = pd.DataFrame(rows, columns=columns)
    if not df.empty:
        df = df.sort_values(["count", "last_seen"], ascending=[False, False], kind="stable")
        df = df.head(limit).reset_index(drop=True)
    return df


def lines_matching(src: LogSource, namespace: str | None, workload: str | None, words: str, *,
                   lookback: str | timedelta = "15m", max_docs: int = MAX_SCAN, now: datetime | None = None):
    """Yield the raw lines (``log``) of a workload's pods in the window that contain any of
    ``words`` (one ``match`` query on the analysed log field, so the caller parses the lines it
    gets), oldest first, at most ``max_docs``."""
    start, end = window(None, None, lookback, now)
    f = src.fields
    query = {"bool": {"filter": _filters(src, namespace, workload, None, None, start, end)
                      + [{"match": {f.log: {"query": words, "operator": "or"}}}]}}
    for hit in scan(src, query, max_docs=max_docs, source=[f.log]):
        line = _get(hit.get("_source") or {}, f.log)
        if line:
            yield str(line)


def scan(src: LogSource, query: dict, *, max_docs: int = MAX_SCAN, source: list[str] | None = None,
         page_size: int = PAGE_SIZE, descending: bool = False):
    """Yield the hits of ``query`` in time order, ``page_size`` at a time with ``search_after``,
    at most ``max_docs``.  Uses a point in time when the store allows it (consistent pages);
    otherwise sorts by time with the document order as tie-breaker."""
    if max_docs <= 0:
        return
    f = src.fields
    order = "desc" if descending else "asc"
    sort: list = [{f.timestamp: {"order": order}}]
    pit_id = None
    try:
        pit_id = call(src, "opening a point in time", src.client.open_point_in_time, index=src.index,
                       keep_alive="1m", ignore_unavailable=True)["id"]
    except (InvalidInput, Forbidden, NotFound):
        sort.append({"_doc": {"order": order}})
    seen, after = 0, None
    try:
        while seen < max_docs:
            body: dict[str, Any] = {"query": query, "size": min(page_size, max_docs - seen), "sort": sort,
                                    "track_total_hits": False}
            if source is not None:
                body["_source"] = source
            if after is not None:
                body["search_after"] = after
            if pit_id:
                body["pit"] = {"id": pit_id, "keep_alive": "1m"}
                resp = call(src, "scanning log documents", src.client.search, **body)
                pit_id = resp.get("pit_id", pit_id)
            else:
                resp = call(src, "scanning log documents", src.client.search, index=src.index,
                             ignore_unavailable=True, allow_no_indices=True, **body)
            hits = resp["hits"]["hits"]
            yield from hits
            seen += len(hits)
            if len(hits) < body["size"]:
                break
            after = hits[-1]["sort"]
    finally:
        if pit_id:
            try:
                src.client.close_point_in_time(id=pit_id)
            except Exception:  # noqa: BLE001 - best effort; it expires after keep_alive anyway
                pass


# -- sample lines ---------------------------------------------------------------------------------


def sample_lines(
    src: LogSource,
    namespace: str | None = None,
    workload: str | None = None,
    *,
    around: datetime,
    pod: str | None = None,
    labels: Mapping[str, str] | None = None,
    n: int = 50,
    within: str | timedelta = "1h",
    errors_only: bool = False,
) -> pd.DataFrame:
    """About ``n`` lines closest to ``around`` (half before, half after when both exist), in order.

    Returns columns ``time``, ``pod``, ``container``, ``stream``, ``level``
    and ``line``; only lines within ``within`` of ``around`` are considered.
    """
    if not isinstance(around, datetime) or around.tzinfo is None:
        raise InvalidInput(f"around must be a timezone-aware datetime (UTC), got {around!r}")
    if not isinstance(n, int) or n < 1 or n > 1000:
        raise InvalidInput(f"n must be between 1 and 1000, got {n!r}")
    span = positive_timedelta(within, "within")
    f = src.fields
    base = _filters(src, namespace, workload, labels, pod, None, None)
    if errors_only:
        base.append(error_query(src))
    source = [f.timestamp, f.log, f.stream, f.level, f.pod, f.container]

    def side(bounds: dict, order: str) -> list[dict]:
        query = {"bool": {"filter": base + [{"range": {f.timestamp: {**bounds,
                                                                       "format": "strict_date_optional_time"}}}]}}
        resp = call(src, "sample log lines", src.client.search, index=src.index, ignore_unavailable=True,
                     allow_no_indices=True, query=query, size=n, sort=[{f.timestamp: {"order": order}}],
                     _source=source, track_total_hits=False)
        return resp["hits"]["hits"]

    before = side({"lte": _iso(around), "gte": _iso(around - span)}, "desc")
    after = side({"gt": _iso(around), "lte": _iso(around + span)}, "asc")
    take_before = min(len(before), max(n // 2, n - len(after)))
    take_after = min(len(after), n - take_before)
    hits = list(reversed(before[:take_before])) + after[:take_after]
    rows = []
    for hit in hits:
        s = hit.get("_source") or {}
        moment = (hit.get("sort") or [None])[0]
        rows.append({
            "time": _time(moment) if isinstance(moment, (int, float)) else pd.Timestamp(_get(s, f.timestamp)),
            "pod": _get(s, f.pod), "container": _get(s, f.container), "stream": _get(s, f.stream),
            "level": _get(s, f.level), "line": _get(s, f.log),
        })
    df = pd.DataFrame(rows, columns=["time", "pod", "container", "stream", "level", "line"])
    df.attrs.update(around=around, within=span)
    return df


# -- preflight ----------------------------------------------------------------------------------


def check(src: LogSource, *, max_age: str | timedelta = "15m", now: datetime | None = None) -> dict:
    """Preflight: reachable, the index pattern matches indices, the newest document is recent.

    Never raises for an unreachable or refusing store: the result says so
    (``reachable``, ``ok``, ``problems``, ``error``) so that a runbook can
    degrade its log section.  Keys: ``url``, ``index``, ``version``,
    ``indices``, ``docs``, ``newest``, ``newest_age_s``, ``fields`` (the
    exact variants used for matching).
    """
    limit = positive_timedelta(max_age, "max_age")
    now = now or datetime.now(UTC)
    out: dict[str, Any] = {"url": src.url, "index": src.index, "reachable": False, "ok": False,
                           "version": None, "indices": 0, "docs": 0, "newest": None, "newest_age_s": None,
                           "fields": {}, "problems": [], "error": None}
    try:
        info = call(src, "connecting", src.client.info)
        out["reachable"] = True
        out["version"] = (info.get("version") or {}).get("number")
        rows = call(src, "listing indices", src.client.cat.indices, index=src.index, format="json",
                     h="index,docs.count")
        rows = rows.body if hasattr(rows, "body") else rows
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Unavailable(f"listing indices: unexpected answer from {src.url}: {cut(repr(rows))}")
        out["indices"] = len(rows)
        out["docs"] = sum(int(r.get("docs.count") or 0) for r in rows)
        if not rows:
            out["problems"].append(f"index pattern {src.index!r} matches no index")
        else:
            f = src.fields
            resp = call(src, "reading the newest document time", src.client.search, index=src.index,
                         size=0, track_total_hits=False, ignore_unavailable=True,
                         aggs={"newest": {"max": {"field": f.timestamp}}})
            value = resp["aggregations"]["newest"].get("value")
            if value is None:
                out["problems"].append(f"no document in {src.index!r} has a {f.timestamp!r} field")
            else:
                newest = datetime.fromtimestamp(value / 1000, UTC)
                out["newest"] = newest
                out["newest_age_s"] = round((now - newest).total_seconds(), 3)
                if now - newest > limit:
                    out["problems"].append(f"the newest document is {now - newest} old (more than {limit}): "
                                           "is the log shipper running?")
            for name in (f.namespace, f.pod, f.level, f.log, f.message):
                out["fields"][name] = exact_field(src, name)
    except RunbookError as e:
        out["problems"].append(str(e))
        out["error"] = type(e).__name__
    out["ok"] = out["reachable"] and not out["problems"]
    return out
