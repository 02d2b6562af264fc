"""Aggregations: date_histogram, terms, top_hits, filters and metrics, nested to any depth."""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .common import (
    _EPOCH,
    _MISSING,
    MAX_BUCKETS,
    TIME_FIELD,
    EsError,
    _fielddata,
    _illegal,
    _parsing,
    _xcontent,
)
from .dates import _add_months, _DateFormatter, _parse_tz, _to_ms, fmt_ms, parse_date
from .index import _NO_TS, _NUMERIC, Docs, Index, _as_text, _sorted_positions, _values
from .query import Ctx, compile_query
from .search import HitFormatter, _check_sorts, _rank, parse_sort, select_hits

# -- aggregations ----------------------------------------------------------------------------


class AggCtx:
    def __init__(self, ctx: Ctx, typed_keys: bool):
        self.ctx, self.typed_keys = ctx, typed_keys
        self.buckets = 0

    def count_buckets(self, n: int) -> None:
        self.buckets += n
        if self.buckets > MAX_BUCKETS:
            raise EsError(400, "too_many_buckets_exception",
                          f"Trying to create too many buckets. Must be less than or equal to: [{MAX_BUCKETS}] "
                          f"but this number of buckets was exceeded. This limit can be set by changing the "
                          f"[search.max_buckets] cluster level setting.", phase=True, max_buckets=MAX_BUCKETS)


class Agg:
    type = ""
    params: set[str] = set()

    def __init__(self, name: str, body: dict, subs: dict[str, Agg], ctx: Ctx):
        unknown = set(body) - self.params
        if unknown:
            raise _xcontent(f"[{self.type}] unknown field [{sorted(unknown)[0]}]")
        self.name, self.body, self.subs, self.ctx = name, body, subs, ctx

    def run(self, docs: Docs, actx: AggCtx) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def run_subs(self, docs: Docs, actx: AggCtx) -> dict:
        return run_aggs(self.subs, docs, actx)

    def field_kind(self, ix: Index, field: str, allow_text: bool = False) -> str | None:
        path, kind = ix.field_type(field)
        if kind == "text" and not allow_text:
            raise _fielddata(field, ix.name)
        return kind


def run_aggs(aggs: dict[str, Agg], docs: Docs, actx: AggCtx) -> dict:
    out = {}
    for name, agg in aggs.items():
        key = f"{agg.type}#{name}" if actx.typed_keys else name
        out[key] = agg.run(docs, actx)
    return out


def compile_aggs(spec, ctx: Ctx) -> dict[str, Agg]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise _parsing("Expected [START_OBJECT] under [aggregations]")
    out = {}
    for name, body in spec.items():
        if not isinstance(body, dict):
            raise _parsing(f"Expected [START_OBJECT] under [{name}], but got a {type(body).__name__}")
        subs_spec = body.get("aggs", body.get("aggregations"))
        kinds = [k for k in body if k not in ("aggs", "aggregations", "meta")]
        if len(kinds) != 1:
            raise _parsing(f"Expected exactly one aggregation type for [{name}], found {len(kinds)}"
                           if kinds else f"Missing definition for aggregation [{name}]")
        kind = kinds[0]
        cls = _AGGS.get(kind)
        if cls is None:
            raise _xcontent(f"Unknown aggregation type [{kind}] for aggregation [{name}]; supported: "
                            f"{', '.join(sorted(_AGGS))}")
        if not isinstance(body[kind], dict):
            raise _parsing(f"[{kind}] aggregation [{name}] must be an object")
        subs = compile_aggs(subs_spec, ctx)
        if subs and cls.metric:
            raise EsError(400, "aggregation_initialization_exception",
                          f"Aggregator [{name}] of type [{kind}] cannot accept sub-aggregations")
        out[name] = cls(name, body[kind], subs, ctx)
    return out


def _need_field(agg: str, body: dict) -> str:
    field = body.get("field")
    if not isinstance(field, str) or not field:
        raise _illegal("Required one of fields [field, script], but none were specified.")
    return field


class DateHistogram(Agg):
    type = "date_histogram"
    metric = False
    params = {"field", "fixed_interval", "calendar_interval", "min_doc_count", "extended_bounds",
              "hard_bounds", "offset", "format", "time_zone", "keyed", "order"}
    _CALENDAR = {"1m": "m", "minute": "m", "1h": "h", "hour": "h", "1d": "d", "day": "d", "1w": "w",
                 "week": "w", "1M": "M", "month": "M", "1q": "q", "quarter": "q", "1y": "y", "year": "y"}

    def __init__(self, name, body, subs, ctx):
        if "interval" in body:
            raise _xcontent("[date_histogram] unknown field [interval] (removed in 8.0: use fixed_interval "
                            "or calendar_interval)")
        super().__init__(name, body, subs, ctx)
        self.field = _need_field(self.type, body)
        fixed, cal = body.get("fixed_interval"), body.get("calendar_interval")
        if (fixed is None) == (cal is None):
            raise _illegal("Invalid interval specified, must be non-null and non-empty" if fixed is None else
                           "Cannot use [fixed_interval] with [calendar_interval] configuration option.")
        self.tz = _parse_tz(body.get("time_zone"))
        self.unit = None
        if cal is not None:
            self.unit = self._CALENDAR.get(str(cal))
            if self.unit is None:
                raise _illegal(f"The supplied interval [{cal}] could not be parsed as a calendar interval.")
            self.step = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}.get(self.unit)
        else:
            self.step = _fixed_ms(str(fixed))
        self.offset = _offset_ms(body.get("offset"))
        self.min_doc_count = int(body.get("min_doc_count", 0))
        self.formatter = _DateFormatter(body.get("format"), self.tz)
        self.keyed = bool(body.get("keyed", False))
        order = body.get("order", {"_key": "asc"})
        order = order[0] if isinstance(order, list) and order else order
        if not isinstance(order, dict) or len(order) != 1:
            raise _illegal("[date_histogram] order must be an object like {\"_key\": \"asc\"}")
        self.order_key, self.order_dir = next(iter(order.items()))

    def _zone_offset(self) -> int:
        if self.tz is UTC:
            return 0
        now = _EPOCH + timedelta(milliseconds=self.ctx.now_ms)
        return int(now.astimezone(self.tz).utcoffset().total_seconds() * 1000)

    def key_of(self, t: int) -> int:
        shift = self._zoff - self.offset
        if self.step is not None:
            if self.unit == "w":  # weeks start on Monday; 1970-01-01 was a Thursday
                return (t + shift + 3 * 86_400_000) // self.step * self.step - 3 * 86_400_000 - shift
            return (t + shift) // self.step * self.step - shift
        day = (t + shift) // 86_400_000
        key = self._month_cache.get(day)
        if key is None:
            moment = _EPOCH + timedelta(days=day)
            month = moment.month if self.unit == "M" else (moment.month - 1) // 3 * 3 + 1 if self.unit == "q" else 1
            key = self._month_cache[day] = _to_ms(datetime(moment.year, month, 1, tzinfo=UTC)) - shift
        return key

    def next_key(self, key: int) -> int:
        if self.step is not None:
            return key + self.step
        shift = self._zoff - self.offset
        moment = _EPOCH + timedelta(milliseconds=key + shift)
        months = {"M": 1, "q": 3, "y": 12}[self.unit]
        return _to_ms(_add_months(moment, months)) - shift

    def run(self, docs, actx):
        self._zoff = self._zone_offset()
        self._month_cache: dict[int, int] = {}
        buckets: dict[int, list] = {}
        for ix, positions in docs:
            kind = self.field_kind(ix, self.field)
            if kind is None or not positions:
                continue
            if kind not in ("date", *_NUMERIC):
                raise _illegal(f"Field [{self.field}] of type [{kind}] is not supported for aggregation "
                               f"[date_histogram]", phase=True, shard_index=ix.name)
            path, _ = ix.field_type(self.field)
            if path == TIME_FIELD:
                self._split_sorted(ix, positions, buckets)
            else:
                col = ix.column(self.field)
                for p in positions:
                    for v in _values(col[p]):
                        buckets.setdefault(self.key_of(int(v)), []).append((ix, p))
        keys = sorted(buckets)
        lo, hi = (keys[0], keys[-1]) if keys else (None, None)
        bounds = self.body.get("extended_bounds")
        if bounds and self.min_doc_count == 0:
            if bounds.get("min") is not None:
                kmin = self.key_of(parse_date(bounds["min"], self.ctx.now_ms))
                lo = kmin if lo is None else min(lo, kmin)
            if bounds.get("max") is not None:
                kmax = self.key_of(parse_date(bounds["max"], self.ctx.now_ms, round_up=True))
                hi = kmax if hi is None else max(hi, kmax)
        hard = self.body.get("hard_bounds")
        hard_lo = parse_date(hard["min"], self.ctx.now_ms) if hard and hard.get("min") is not None else None
        hard_hi = parse_date(hard["max"], self.ctx.now_ms) if hard and hard.get("max") is not None else None
        if self.min_doc_count == 0 and lo is not None:
            all_keys = []
            key = lo
            while key <= hi:
                all_keys.append(key)
                key = self.next_key(key)
                if len(all_keys) > MAX_BUCKETS:
                    actx.count_buckets(len(all_keys))
        else:
            all_keys = keys
        if hard_lo is not None or hard_hi is not None:
            all_keys = [k for k in all_keys if (hard_lo is None or self.next_key(k) > hard_lo)
                        and (hard_hi is None or k <= hard_hi)]
        out = []
        for key in all_keys:
            members = buckets.get(key, [])
            count = _docs_len(members)
            if count < self.min_doc_count:
                continue
            bucket = {"key_as_string": self.formatter(key), "key": key, "doc_count": count}
            if self.subs:
                bucket.update(self.run_subs(_as_docs(members), actx))
            out.append(bucket)
        actx.count_buckets(len(out))
        if self.order_key == "_count":
            out.sort(key=lambda b: (b["doc_count"], b["key"]), reverse=self.order_dir == "desc")
        elif self.order_dir == "desc":
            out.reverse()
        if self.keyed:
            return {"buckets": {b["key_as_string"]: b for b in out}}
        return {"buckets": out}

    def _split_sorted(self, ix: Index, positions: Sequence[int], buckets: dict) -> None:
        """Bucket time-sorted positions by bisecting each bucket boundary."""
        ts = ix.ts
        key = ts.__getitem__
        i = bisect.bisect_right(positions, _NO_TS, key=key)
        n = len(positions)
        while i < n:
            k = self.key_of(ts[positions[i]])
            j = bisect.bisect_left(positions, self.next_key(k), i, n, key=key)
            buckets.setdefault(k, []).append((ix, positions[i:j]))
            i = j


def _docs_len(members: list) -> int:
    return sum(len(m[1]) if not isinstance(m[1], int) else 1 for m in members)


def _as_docs(members: list) -> Docs:
    """Bucket members ((ix, positions) or (ix, position)) as (ix, sorted positions) pairs."""
    grouped: dict[int, tuple[Index, list]] = {}
    for ix, part in members:
        grouped.setdefault(id(ix), (ix, []))[1].append(part)
    out = []
    for ix, parts in grouped.values():
        if len(parts) == 1 and not isinstance(parts[0], int):
            out.append((ix, parts[0]))
        elif all(isinstance(part, int) for part in parts):
            out.append((ix, sorted(set(parts))))
        else:
            merged: set = set()
            for part in parts:
                merged.update([part] if isinstance(part, int) else part)
            out.append((ix, sorted(merged)))
    return out


def _fixed_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text.strip())
    if not m or int(m.group(1)) <= 0:
        raise _illegal(f"failed to parse setting [date_histogram.fixedInterval] with value [{text}] as a time "
                       "value: unit is missing or unrecognized (use e.g. 30s, 5m, 1h, 1d; months and years "
                       "need calendar_interval)")
    return int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]


def _offset_ms(value) -> int:
    if value in (None, "", 0):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    sign = -1 if text.startswith("-") else 1
    return sign * _fixed_ms(text.lstrip("+-"))


class Terms(Agg):
    type = "terms"
    metric = False
    params = {"field", "size", "order", "min_doc_count", "missing", "include", "exclude", "shard_size",
              "execution_hint", "collect_mode", "show_term_doc_count_error", "shard_min_doc_count",
              "value_type", "format"}

    def __init__(self, name, body, subs, ctx):
        super().__init__(name, body, subs, ctx)
        self.field = _need_field(self.type, body)
        self.size = int(body.get("size", 10))
        if self.size < 1:
            raise _illegal(f"[size] must be greater than 0. Found [{self.size}] in [{name}]")
        self.min_doc_count = int(body.get("min_doc_count", 1))
        order = body.get("order", [{"_count": "desc"}, {"_key": "asc"}])
        order = order if isinstance(order, list) else [order]
        self.order = []
        for item in order:
            if not isinstance(item, dict) or len(item) != 1:
                raise _illegal("[terms] order must be objects like {\"_count\": \"desc\"}")
            key, direction = next(iter(item.items()))
            if direction not in ("asc", "desc"):
                raise _illegal(f"Unknown order direction [{direction}]; use asc or desc")
            if key not in ("_count", "_key", "_term") and key.split(".")[0].split(">")[0] not in subs:
                raise EsError(400, "aggregation_execution_exception",
                              f"Invalid aggregator order path [{key}]. The provided aggregation [{key}] "
                              f"either does not exist, or is a pipeline aggregation and cannot be used "
                              f"to sort the buckets.")
            self.order.append((key, direction == "desc"))
        if not any(k in ("_key", "_term") for k, _ in self.order):
            self.order.append(("_key", False))
        self.include = _term_filter(body.get("include"))
        self.exclude = _term_filter(body.get("exclude"))

    def run(self, docs, actx):
        groups: dict = {}
        kind_seen = None
        missing = self.body.get("missing", _MISSING)
        for ix, positions in docs:
            kind = self.field_kind(ix, self.field)
            if kind is None:
                if missing is not _MISSING and positions:
                    groups.setdefault(missing, []).append((ix, positions))
                continue
            kind_seen = kind_seen or kind
            col = ix.column(self.field)
            if not self.subs:
                counts = Counter()
                for p in positions:
                    v = col[p]
                    if v is None:
                        if missing is not _MISSING:
                            counts[missing] += 1
                    elif isinstance(v, list):
                        counts.update(set(v))
                    else:
                        counts[v] += 1
                for key, n in counts.items():
                    groups.setdefault(key, []).append((ix, n))
                continue
            local: dict = defaultdict(list)
            for p in positions:
                v = col[p]
                if v is None:
                    if missing is not _MISSING:
                        local[missing].append(p)
                elif isinstance(v, list):
                    for item in set(v):
                        local[item].append(p)
                else:
                    local[v].append(p)
            for key, ps in local.items():
                groups.setdefault(key, []).append((ix, ps))
        if self.min_doc_count == 0:
            for ix, _ in docs:
                if ix.field_type(self.field)[1] is not None:
                    for key in ix.postings(self.field):
                        groups.setdefault(key, [])
        rows = []
        for key, parts in groups.items():
            if not self._wanted(key):
                continue
            count = sum(n if isinstance(n, int) else len(n) for _, n in parts)
            if count < self.min_doc_count:
                continue
            rows.append([key, count, parts, None])
        needs_subs = any(k not in ("_count", "_key", "_term") for k, _ in self.order)
        if needs_subs:
            for row in rows:
                row[3] = self.run_subs(_as_docs(row[2]), actx)
        for key, desc in reversed(self.order):
            rows.sort(key=lambda r, k=key: self._order_value(r, k), reverse=desc)
        top, rest = rows[: self.size], rows[self.size:]
        actx.count_buckets(len(top))
        buckets = []
        for key, count, parts, subs in top:
            bucket = {"key": 1 if key is True else 0 if key is False else key, "doc_count": count}
            if kind_seen == "date" and isinstance(key, int):
                bucket["key_as_string"] = fmt_ms(key)
            elif kind_seen == "boolean" and isinstance(key, bool):
                bucket["key_as_string"] = "true" if key else "false"
            if self.subs:
                bucket.update(subs if subs is not None else self.run_subs(_as_docs(parts), actx))
            buckets.append(bucket)
        return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": sum(r[1] for r in rest),
                "buckets": buckets}

    def _wanted(self, key) -> bool:
        text = _as_text(key)
        if self.include is not None and not self.include(text):
            return False
        return not (self.exclude is not None and self.exclude(text))

    def _order_value(self, row, key):
        if key == "_count":
            return row[1]
        if key in ("_key", "_term"):
            return _rank(row[0])
        name, _, metric = key.replace(">", ".").partition(".")
        result = row[3].get(name) if row[3] else None
        if result is None and row[3]:
            result = next((v for k, v in row[3].items() if k.endswith("#" + name)), None)
        value = (result or {}).get(metric or "value")
        if value is None and result and "doc_count" in result and not metric:
            value = result["doc_count"]
        return (0, 0) if value is None else (1, value)


def _term_filter(spec):
    if spec is None:
        return None
    if isinstance(spec, str):
        try:
            regex = re.compile(spec, re.DOTALL)
        except re.error as e:
            raise _illegal(f"invalid include/exclude regular expression [{spec}]: {e}") from None
        return lambda text: regex.fullmatch(text) is not None
    if isinstance(spec, list):
        values = {_as_text(v) for v in spec}
        return values.__contains__
    raise _illegal("include/exclude must be a regular expression or an array of values (partitions "
                   "are not supported)")


class TopHits(Agg):
    type = "top_hits"
    metric = True
    params = {"size", "from", "sort", "_source", "fields", "version", "seq_no_primary_term",
              "track_scores", "explain", "docvalue_fields", "stored_fields"}

    def __init__(self, name, body, subs, ctx):
        super().__init__(name, body, subs, ctx)
        self.size, self.start = int(body.get("size", 3)), int(body.get("from", 0))
        if self.size < 0 or self.start < 0 or self.size + self.start > 100:
            raise _illegal("Top hits result window is too large, the top hits aggregator [" + name + "]'s from + "
                           "size must be less than or equal to: [100] but was [" + str(self.size + self.start) +
                           "]. This limit can be set by changing the [index.max_inner_result_window] index "
                           "level setting.")
        self.specs = parse_sort(body.get("sort"))
        self.formatter = HitFormatter(self.specs, body.get("_source"), body.get("fields"),
                                      bool(body.get("version")), bool(body.get("seq_no_primary_term")))

    def run(self, docs, actx):
        _check_sorts(self.specs, [ix for ix, _ in docs])
        total = sum(len(p) for _, p in docs)
        rows = select_hits(docs, self.specs, self.start, self.size, None)
        hits = [self.formatter(ix, pos, values) for ix, pos, values in rows]
        return {"hits": {"total": {"value": total, "relation": "eq"},
                         "max_score": None if self.specs or not hits else 1.0, "hits": hits}}


class Metric(Agg):
    metric = True
    params = {"field", "missing", "format"}

    def __init__(self, name, body, subs, ctx):
        super().__init__(name, body, subs, ctx)
        self.field = _need_field(self.type, body)

    def values(self, docs: Docs, allow_keyword: bool = False) -> tuple[list, str | None]:
        out, kind_seen = [], None
        missing = self.body.get("missing")
        for ix, positions in docs:
            kind = self.field_kind(ix, self.field)
            if kind is None:
                if missing is not None:
                    out.extend([missing] * len(positions))
                continue
            if kind == "keyword" and not allow_keyword:
                raise _illegal(f"Field [{self.field}] of type [keyword] is not supported for aggregation "
                               f"[{self.type}]", phase=True, shard_index=ix.name)
            kind_seen = kind_seen or kind
            col = ix.column(self.field)
            for p in positions:
                v = col[p]
                if v is None:
                    if missing is not None:
                        out.append(missing)
                elif isinstance(v, list):
                    out.extend(v)
                else:
                    out.append(v)
        return out, kind_seen

    def single(self, value, kind) -> dict:
        result = {"value": value}
        if value is not None and kind == "date":
            result["value"] = float(value)
            result["value_as_string"] = _DateFormatter(self.body.get("format"), UTC)(value)
        elif isinstance(value, int) and not isinstance(value, bool) and self.type in ("min", "max", "sum", "avg"):
            result["value"] = float(value)
        return result


class Min(Metric):
    type = "min"

    def run(self, docs, actx):
        values, kind = self.values(docs)
        return self.single(min(values) if values else None, kind)


class Max(Metric):
    type = "max"

    def run(self, docs, actx):
        values, kind = self.values(docs)
        return self.single(max(values) if values else None, kind)


class Sum(Metric):
    type = "sum"

    def run(self, docs, actx):
        values, kind = self.values(docs)
        return {"value": float(sum(values))}


class Avg(Metric):
    type = "avg"

    def run(self, docs, actx):
        values, kind = self.values(docs)
        return self.single(sum(values) / len(values) if values else None, kind)


class ValueCount(Metric):
    type = "value_count"

    def run(self, docs, actx):
        values, _ = self.values(docs, allow_keyword=True)
        return {"value": len(values)}


class Cardinality(Metric):
    type = "cardinality"
    params = {"field", "missing", "precision_threshold", "execution_hint"}

    def run(self, docs, actx):
        values, _ = self.values(docs, allow_keyword=True)
        return {"value": len(set(values))}


class Stats(Metric):
    type = "stats"

    def run(self, docs, actx):
        values, kind = self.values(docs)
        if not values:
            return {"count": 0, "min": None, "max": None, "avg": None, "sum": 0.0}
        out = {"count": len(values), "min": float(min(values)), "max": float(max(values)),
               "avg": sum(values) / len(values), "sum": float(sum(values))}
        if kind == "date":
            fmt = _DateFormatter(self.body.get("format"), UTC)
            out.update(min_as_string=fmt(out["min"]), max_as_string=fmt(out["max"]),
                       avg_as_string=fmt(out["avg"]))
        return out


class FilterAgg(Agg):
    type = "filter"
    metric = False

    def __init__(self, name, body, subs, ctx):
        self.name, self.body, self.subs, self.ctx = name, body, subs, ctx
        self.node = compile_query(body, ctx)

    def run(self, docs, actx):
        picked = [(ix, _sorted_positions(self.node.eval(ix, set(ps) if not isinstance(ps, range) else ps)))
                  for ix, ps in docs]
        return {"doc_count": sum(len(p) for _, p in picked), **self.run_subs(picked, actx)}


class FiltersAgg(Agg):
    type = "filters"
    metric = False
    params = {"filters", "other_bucket", "other_bucket_key", "keyed"}

    def __init__(self, name, body, subs, ctx):
        super().__init__(name, body, subs, ctx)
        filters = body.get("filters")
        if isinstance(filters, dict):
            self.named = True
            self.nodes = [(k, compile_query(q, ctx)) for k, q in filters.items()]
        elif isinstance(filters, list):
            self.named = False
            self.nodes = [(None, compile_query(q, ctx)) for q in filters]
        else:
            raise _parsing("[filters] must be an object of named queries or an array of queries")
        self.other = body.get("other_bucket_key") if "other_bucket_key" in body else (
            "_other_" if body.get("other_bucket") else None)

    def run(self, docs, actx):
        buckets = []
        matched_any = [set() for _ in docs]
        for key, node in self.nodes:
            picked = []
            for i, (ix, ps) in enumerate(docs):
                found = node.eval(ix, ps if isinstance(ps, range) else set(ps))
                matched_any[i] |= set(found)
                picked.append((ix, _sorted_positions(found)))
            buckets.append((key, {"doc_count": sum(len(p) for _, p in picked), **self.run_subs(picked, actx)}))
        if self.other:
            rest = [(ix, [p for p in ps if p not in matched_any[i]]) for i, (ix, ps) in enumerate(docs)]
            buckets.append((self.other, {"doc_count": sum(len(p) for _, p in rest), **self.run_subs(rest, actx)}))
        actx.count_buckets(len(buckets))
        if self.named and self.body.get("keyed", True):
            return {"buckets": dict(buckets)}
        return {"buckets": [b if key is None else {"key": key, **b} for key, b in buckets]}


class MissingAgg(Agg):
    type = "missing"
    metric = False
    params = {"field"}

    def run(self, docs, actx):
        field = _need_field(self.type, self.body)
        picked = []
        for ix, ps in docs:
            kind = ix.field_type(field)[1]
            if kind is None:
                picked.append((ix, ps))
                continue
            col = ix.column(field)
            picked.append((ix, [p for p in ps if col[p] is None]))
        return {"doc_count": sum(len(p) for _, p in picked), **self.run_subs(picked, actx)}


_AGGS: dict[str, type[Agg]] = {cls.type: cls for cls in (
    DateHistogram, Terms, TopHits, Min, Max, Sum, Avg, ValueCount, Cardinality, Stats, FilterAgg,
    FiltersAgg, MissingAgg)}


