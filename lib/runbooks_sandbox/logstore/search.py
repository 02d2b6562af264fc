"""Sorting, ``search_after`` paging, hits and ``_source`` filtering."""

from __future__ import annotations

import bisect
import fnmatch
from datetime import UTC

from .common import TIME_FIELD, _fielddata, _illegal, _parsing
from .dates import _DateFormatter, parse_date
from .index import _NO_TS, _NUMERIC, Docs, Index, _values
from .query import _query_shard

# -- sorting and hits -------------------------------------------------------------------------

_LONG_MAX, _LONG_MIN = 2**63 - 1, -(2**63)


class SortSpec:
    def __init__(self, field: str, order: str, missing="_last", unmapped_type: str | None = None,
                 mode: str | None = None, fmt: str | None = None):
        if order not in ("asc", "desc"):
            raise _illegal(f"[sort] order must be [asc] or [desc], got [{order}]")
        self.field, self.order, self.missing, self.unmapped_type = field, order, missing, unmapped_type
        self.desc = order == "desc"
        self.mode = mode or ("max" if self.desc else "min")
        self.fmt = fmt


def parse_sort(spec) -> list[SortSpec]:
    """``sort`` as a request writes it: "f", "f:desc", {"f": "desc"}, {"f": {"order": ...}} or a list."""
    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if isinstance(item, str):
            for part in item.split(","):
                field, _, order = part.strip().partition(":")
                out.append(SortSpec(field, order or ("desc" if field == "_score" else "asc")))
        elif isinstance(item, dict) and len(item) == 1:
            field, opts = next(iter(item.items()))
            if isinstance(opts, str):
                out.append(SortSpec(field, opts.lower()))
            elif isinstance(opts, dict):
                unknown = set(opts) - {"order", "missing", "unmapped_type", "mode", "format", "numeric_type"}
                if unknown:
                    raise _parsing(f"[field_sort] unknown field [{sorted(unknown)[0]}]")
                default = "desc" if field == "_score" else "asc"
                out.append(SortSpec(field, str(opts.get("order", default)).lower(), opts.get("missing", "_last"),
                                    opts.get("unmapped_type"), opts.get("mode"), opts.get("format")))
            else:
                raise _parsing(f"[sort] malformed sort for [{field}]")
        else:
            raise _parsing("[sort] must be a field name, an object with one field, or an array of them")
    return out


def _check_sorts(specs: list[SortSpec], indices: list[Index]) -> None:
    for spec in specs:
        if spec.field in ("_doc", "_shard_doc", "_score"):
            continue
        if spec.field == "_id":
            raise _illegal("Fielddata access on the _id field is disallowed, you can re-enable it by updating "
                           "the dynamic cluster setting: indices.id_field_data.enabled", phase=True)
        mapped = False
        for ix in indices:
            path, kind = ix.field_type(spec.field)
            if kind == "text":
                raise _fielddata(spec.field, ix.name)
            mapped |= kind is not None
        if not mapped and not spec.unmapped_type and indices:
            raise _query_shard(f"No mapping found for [{spec.field}] in order to sort on", indices[0].name)


def _sort_value(ix: Index, pos: int, spec: SortSpec, cols: dict):
    field = spec.field
    if field in ("_doc", "_shard_doc"):
        return ix.seqs[pos]
    if field == "_score":
        return 1.0
    col = cols.get((id(ix), field))
    if col is None:
        col = cols[(id(ix), field)] = ix.column(field)
    value = col[pos]
    if isinstance(value, list):
        value = max(value) if spec.mode == "max" else min(value)
    if value is None and spec.missing not in ("_last", "_first"):
        return spec.missing
    return value


def _rank(value) -> tuple:
    """Comparable across types: numbers before strings."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, bool):
        return (0, int(value))
    return (1, str(value))


def _compare(a, b, spec: SortSpec) -> int:
    """-1 when ``a`` sorts before ``b`` under ``spec``; missing values per ``missing``."""
    if a is None or b is None:
        if a is None and b is None:
            return 0
        first = spec.missing == "_first"
        return (-1 if first else 1) if a is None else (1 if first else -1)
    ra, rb = _rank(a), _rank(b)
    if ra == rb:
        return 0
    less = ra < rb
    return (1 if less else -1) if spec.desc else (-1 if less else 1)


def _normalise_after(value, spec: SortSpec, date_field: bool):
    if value is None or value in (_LONG_MAX, _LONG_MIN) and date_field:
        return None
    if date_field and isinstance(value, str):
        return parse_date(value, 0, fmt="strict_date_optional_time||epoch_millis")
    return value


def select_hits(docs: Docs, specs: list[SortSpec], start: int, size: int, after: list | None) -> list[tuple]:
    """The page of (index, position, sort values) for ``from``/``size``/``search_after``."""
    want = start + size
    if want <= 0:
        return []
    if not specs:
        out = []
        for ix, positions in docs:
            for pos in positions[: want - len(out)]:
                out.append((ix, pos, None))
            if len(out) >= want:
                break
        return out[start:want]
    date_field = [s.field not in ("_doc", "_shard_doc", "_score") and
                  any(ix.field_type(s.field)[1] == "date" for ix, _ in docs) for s in specs]
    if after is not None:
        if len(after) != len(specs):
            raise _illegal(f"search_after has {len(after)} value(s) but sort has {len(specs)}")
        after = [_normalise_after(v, s, d) for v, s, d in zip(after, specs, date_field, strict=True)]
    candidates = _candidates(docs, specs, want, after)
    cols: dict = {}
    rows = [(ix, pos, [_sort_value(ix, pos, s, cols) for s in specs]) for ix, pos in candidates]
    if after is not None:
        rows = [row for row in rows if _is_after(row[2], after, specs)]
    for i in range(len(specs) - 1, -1, -1):  # stable sorts, last key first
        spec = specs[i]
        low, high = (0, 2) if spec.missing == "_first" else (2, 0)
        missing_key = (high, (0, 0)) if spec.desc else (low, (0, 0))
        rows.sort(key=lambda r, i=i, m=missing_key: (1, _rank(r[2][i])) if r[2][i] is not None else m,
                  reverse=spec.desc)
    return rows[start:want]


def _is_after(values: list, after: list, specs: list[SortSpec]) -> bool:
    for value, bound, spec in zip(values, after, specs, strict=True):
        c = _compare(value, bound, spec)
        if c:
            return c > 0
    return False


def _candidates(docs: Docs, specs: list[SortSpec], want: int, after: list | None) -> list[tuple]:
    """Every match, or, when the first sort key is @timestamp, only the ``want`` first per index
    (plus ties), found by bisecting the time-sorted positions."""
    head = specs[0]
    fast = head.field == TIME_FIELD and all(ix.field_type(TIME_FIELD)[1] == "date" for ix, _ in docs)
    out: list[tuple] = []
    for ix, positions in docs:
        if not fast:
            out.extend((ix, p) for p in positions)
            continue
        ts = ix.ts
        key = ts.__getitem__
        first_real = bisect.bisect_right(positions, _NO_TS, key=key)
        out.extend((ix, p) for p in positions[:first_real])  # no @timestamp: kept for the full sort
        lo, hi = first_real, len(positions)
        # Documents tied with the search_after value may or may not come after it (the
        # tie-breakers decide), so they are candidates on top of the `want` strictly after it.
        if after is not None and after[0] is not None:
            if head.desc:
                hi = bisect.bisect_right(positions, after[0], lo, hi, key=key)
                strict = bisect.bisect_left(positions, after[0], lo, hi, key=key)
            else:
                lo = bisect.bisect_left(positions, after[0], lo, hi, key=key)
                strict = bisect.bisect_right(positions, after[0], lo, hi, key=key)
        else:
            strict = hi if head.desc else lo
        if head.desc:
            cut = strict - want
            if cut <= lo:
                out.extend((ix, p) for p in positions[lo:hi])
                continue
            cut = bisect.bisect_left(positions, ts[positions[cut]], lo, hi, key=key)  # keep ties
            out.extend((ix, p) for p in positions[cut:hi])
        else:
            cut = strict + want
            if cut >= hi:
                out.extend((ix, p) for p in positions[lo:hi])
                continue
            cut = bisect.bisect_right(positions, ts[positions[cut - 1]], lo, hi, key=key)  # keep ties
            out.extend((ix, p) for p in positions[lo:cut])
    return out


def _display_sort_value(value, spec: SortSpec, is_date: bool):
    if value is None:
        if spec.field in ("_doc", "_shard_doc"):
            return value
        if is_date or spec.unmapped_type in _NUMERIC + ("date",):
            return _LONG_MAX if (spec.missing == "_last") != spec.desc else _LONG_MIN
        return None
    if isinstance(value, bool):
        return int(value)
    return value


def filter_source(source: dict, includes: list[str] | None, excludes: list[str] | None, prefix: str = "") -> dict:
    """``_source`` includes/excludes with ``*`` wildcards on dotted paths."""
    out = {}
    for key, value in source.items():
        path = prefix + key
        if excludes and any(fnmatch.fnmatchcase(path, pattern) for pattern in excludes):
            continue
        whole = not includes or any(fnmatch.fnmatchcase(path, pattern) for pattern in includes)
        if isinstance(value, dict):
            if whole:
                inner = filter_source(value, None, excludes, path + ".") if excludes else value
                if inner or not value:
                    out[key] = inner
            elif any(pattern.startswith(path + ".") or "*" in pattern for pattern in includes):
                inner = filter_source(value, includes, excludes, path + ".")
                if inner:
                    out[key] = inner
        elif whole:
            out[key] = value
    return out


def _source_options(spec) -> tuple[bool, list[str] | None, list[str] | None]:
    """(fetch?, includes, excludes) from a ``_source`` request value."""
    if spec is None or spec is True:
        return True, None, None
    if spec is False:
        return False, None, None
    if isinstance(spec, str):
        if spec in ("true", "false"):
            return spec == "true", None, None
        return True, [s.strip() for s in spec.split(",")], None
    if isinstance(spec, list):
        return True, [str(s) for s in spec], None
    if isinstance(spec, dict):
        unknown = set(spec) - {"includes", "excludes", "include", "exclude"}
        if unknown:
            raise _parsing(f"[_source] unknown key [{sorted(unknown)[0]}]")
        inc = spec.get("includes", spec.get("include"))
        exc = spec.get("excludes", spec.get("exclude"))
        inc = [inc] if isinstance(inc, str) else inc
        exc = [exc] if isinstance(exc, str) else exc
        return True, inc or None, exc or None
    raise _parsing("[_source] must be a boolean, a string, an array or an object")


class HitFormatter:
    """Turns (index, position, sort values) into hit objects."""

    def __init__(self, specs: list[SortSpec], source_spec, fields_spec=None, version: bool = False,
                 seq_no: bool = False, score: bool = True):
        self.specs = specs
        self.fetch, self.includes, self.excludes = _source_options(source_spec)
        self.fields = self._fields(fields_spec)
        self.version, self.seq_no, self.score = version, seq_no, score

    @staticmethod
    def _fields(spec) -> list[tuple[str, str | None]]:
        if not spec:
            return []
        out = []
        for item in spec:
            if isinstance(item, str):
                out.append((item, None))
            elif isinstance(item, dict) and "field" in item:
                out.append((item["field"], item.get("format")))
            else:
                raise _parsing("[fields] entries must be field names or {\"field\": ...} objects")
        return out

    def __call__(self, ix: Index, pos: int, sort_values) -> dict:
        hit = {"_index": ix.name, "_id": ix.ids[pos], "_score": 1.0 if self.score and not self.specs else None}
        if self.version:
            hit["_version"] = ix.versions[pos]
        if self.seq_no:
            hit["_seq_no"], hit["_primary_term"] = ix.seqs[pos], 1
        if self.fetch:
            src = ix.sources[pos]
            hit["_source"] = filter_source(src, self.includes, self.excludes) if (self.includes or self.excludes) else src
        if self.fields:
            hit["fields"] = self._field_values(ix, pos)
        if sort_values is not None and self.specs:
            hit["sort"] = [_display_sort_value(v, s, ix.field_type(s.field)[1] == "date")
                           for v, s in zip(sort_values, self.specs, strict=True)]
        return hit

    def _field_values(self, ix: Index, pos: int) -> dict:
        out = {}
        for pattern, fmt in self.fields:
            names = [pattern] if "*" not in pattern else sorted(
                f for f in list(ix.mapping) + [k + ".keyword" for k, t in ix.mapping.items() if t == "text"]
                if fnmatch.fnmatchcase(f, pattern))
            for name in names:
                path, kind = ix.field_type(name)
                if kind is None:
                    continue
                values = _values(ix.column(name)[pos])
                if not values:
                    continue
                if kind == "date":
                    formatter = _DateFormatter(fmt, UTC)
                    values = [formatter(v) for v in values]
                out[name] = values
        return out


