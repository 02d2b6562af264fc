"""One index: documents sorted by ``@timestamp``, dynamic mapping, columns, postings and position sets."""

from __future__ import annotations

import base64
import re
import uuid
from collections import defaultdict
from collections.abc import Sequence

from .common import _MISSING, IGNORE_ABOVE, TIME_FIELD, EsError
from .dates import _DATE_LIKE, iso_ms, parse_date

# -- text analysis -----------------------------------------------------------------------

_TOKEN = re.compile(r"\w+(?:[.'](?=\w)\w+)*")


def analyze(text) -> list[str]:
    """Lower-cased word tokens, close to Elasticsearch's ``standard`` analyser."""
    return _TOKEN.findall(str(text).lower())


# -- field values ------------------------------------------------------------------------


def extract(source: dict, path: str):
    """The value at a dotted ``path``, through nested objects and dotted keys alike.

    Arrays of objects are flattened (a list of the values found); ``_MISSING``
    when absent.
    """
    if path in source:
        return source[path]
    if "." not in path:
        return _MISSING
    parts = path.split(".")
    for cut in range(1, len(parts)):
        head = ".".join(parts[:cut])
        if head not in source:
            continue
        inner, rest = source[head], ".".join(parts[cut:])
        if isinstance(inner, dict):
            value = extract(inner, rest)
            if value is not _MISSING:
                return value
        elif isinstance(inner, list):
            found = []
            for item in inner:
                if isinstance(item, dict):
                    value = extract(item, rest)
                    if value is not _MISSING:
                        found.extend(value if isinstance(value, list) else [value])
            if found:
                return found
    return _MISSING


def _values(value) -> list:
    """A field value as a list of scalars (``[]`` when missing or null)."""
    if value is _MISSING or value is None:
        return []
    if isinstance(value, list):
        out = []
        for item in value:
            out.extend(_values(item))
        return out
    return [value]


def _leaf_type(value) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "date" if _DATE_LIKE.match(value) else "text"
    return None


_NUMERIC = ("long", "float", "double", "integer", "short", "byte", "scaled_float", "half_float")


class Index:
    """One index: documents sorted by ``@timestamp`` plus lazily built columns and postings."""

    def __init__(self, name: str, created_ms: int):
        self.name = name
        self.uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[:22]
        self.created_ms = created_ms
        self.sources: list[dict] = []
        self.ids: list[str] = []
        self.ts: list[int] = []  # @timestamp in ms; _NO_TS when missing (sorts first)
        self.seqs: list[int] = []
        self.versions: list[int] = []
        self.mapping: dict[str, str] = {}  # leaf path -> type; objects are implied by prefixes
        self.by_id: dict[str, int] = {}  # id -> seq of the live document
        self.size_bytes = 0
        self.deleted = 0
        self._pending: list[tuple] = []
        self._dead: set[int] = set()
        self._columns: dict[str, list] = {}
        self._postings: dict[str, dict] = {}
        self._objects: set[str] = set()
        self.no_keyword: set[str] = set()  # text fields mapped explicitly without a .keyword sub-field

    # ---- writing ----

    def put(self, doc_id: str, source: dict, ts: int, seq: int, size: int, version: int) -> None:
        old = self.by_id.get(doc_id)
        if old is not None:
            self._dead.add(old)
            self.deleted += 1
        self.by_id[doc_id] = seq
        self._pending.append((ts, seq, doc_id, source, version))
        self.size_bytes += size

    def delete(self, doc_id: str) -> bool:
        seq = self.by_id.pop(doc_id, None)
        if seq is None:
            return False
        self._dead.add(seq)
        self.deleted += 1
        return True

    def learn_mapping(self, source: dict, memo: dict | None = None) -> str | None:
        """Add the document's new fields to the mapping; a conflict's description, else None."""
        return self._learn(source, "", memo if memo is not None else {})

    def _learn(self, obj: dict, prefix: str, memo: dict) -> str | None:
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                if path in self.mapping:
                    return f"object mapping for [{path}] tried to parse field [{path}] as object, " \
                           f"but found a concrete value"
                marker = (id(value), path)
                if marker in memo:
                    continue
                memo[marker] = value  # keep it alive so the id stays unique during this batch
                self._objects.add(path)
                problem = self._learn(value, path + ".", memo)
                if problem:
                    return problem
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    problem = self._learn(item, path + ".", memo)
                    if problem:
                        return problem
                    self._objects.add(path)
                    continue
                known = self.mapping.get(path)
                if known == "text" or known == "keyword" or path == TIME_FIELD and known == "date":
                    continue  # anything can be indexed as text; @timestamp was parsed by the caller
                if known == "date" and isinstance(item, str) and _DATE_LIKE.match(item):
                    continue
                kind = "date" if path == TIME_FIELD and isinstance(item, (str, int)) else _leaf_type(item)
                if kind is None:
                    continue
                if known is None:
                    if path in self._objects:
                        return f"can't merge a non object mapping [{path}] with an object mapping"
                    self.mapping[path] = kind
                elif known != kind:
                    problem = _coerce_problem(path, known, item)
                    if problem:
                        return problem
        return None

    def flush(self) -> None:
        """Merge pending writes (keeping @timestamp order) and drop replaced documents."""
        if not self._pending and not self._dead:
            return
        rows = list(zip(self.ts, self.seqs, self.ids, self.sources, self.versions, strict=True))
        if self._dead:
            rows = [row for row in rows if row[1] not in self._dead]
            pending = [row for row in self._pending if row[1] not in self._dead]
            self._dead.clear()
        else:
            pending = self._pending
        pending.sort(key=lambda row: (row[0], row[1]))
        if rows and pending and pending[0][:2] < rows[-1][:2]:
            rows = list(_merge_sorted(rows, pending))
        else:
            rows.extend(pending)
        self._pending = []
        if rows:
            self.ts, self.seqs, self.ids, self.sources, self.versions = (list(col) for col in zip(*rows, strict=True))
        else:
            self.ts, self.seqs, self.ids, self.sources, self.versions = [], [], [], [], []
        self._columns.clear()
        self._postings.clear()

    def __len__(self) -> int:
        return len(self.sources)

    # ---- reading ----

    def field_type(self, field: str) -> tuple[str, str | None]:
        """(source path, type) for a queried field name; ``.keyword`` sub-fields of text resolve here."""
        kind = self.mapping.get(field)
        if kind is not None:
            return field, kind
        if field.endswith(".keyword"):
            base = field[: -len(".keyword")]
            if self.mapping.get(base) == "text" and base not in self.no_keyword:
                return base, "keyword"
        return field, None

    def column(self, field: str) -> list:
        """Values by position: a scalar, a list (multi-valued) or None; typed per the mapping."""
        col = self._columns.get(field)
        if col is not None:
            return col
        path, kind = self.field_type(field)
        if kind is None:
            col = [None] * len(self.sources)
        elif path == TIME_FIELD:
            col = [None if t == _NO_TS else t for t in self.ts]
        else:
            col = []
            append = col.append
            memo: dict[int, object] = {}
            head, _, rest = path.partition(".")
            for src in self.sources:
                value = src.get(path, _MISSING)
                if value is _MISSING and rest:
                    inner = src.get(head)
                    if isinstance(inner, dict):  # shared sub-objects (one per container) are read once
                        key = id(inner)
                        typed = memo.get(key, _MISSING)
                        if typed is _MISSING:
                            found = extract(inner, rest)
                            typed = memo[key] = _typed(found, kind) if found is not _MISSING else _MISSING
                        if typed is not _MISSING:
                            append(typed)
                            continue
                    value = extract(src, path)
                append(_typed(value, kind))
        self._columns[field] = col
        return col

    def postings(self, field: str) -> dict:
        """value -> sorted positions, for exact-value queries on any field."""
        post = self._postings.get(field)
        if post is not None:
            return post
        post = defaultdict(list)
        for pos, value in enumerate(self.column(field)):
            if value is None:
                continue
            if isinstance(value, list):
                for item in set(value):
                    post[item].append(pos)
            else:
                post[value].append(pos)
        post = dict(post)
        self._postings[field] = post
        return post

    def is_object(self, field: str) -> bool:
        return field in self._objects or any(key.startswith(field + ".") for key in self.mapping)


_NO_TS = -(2**62)


def _merge_sorted(a: list, b: list):
    import heapq

    return heapq.merge(a, b, key=lambda row: (row[0], row[1]))


def _coerce_problem(path: str, known: str, value) -> str | None:
    """Why ``value`` cannot go into a field mapped as ``known`` (None when ES would coerce it)."""
    if known in ("text", "keyword"):
        return None
    if known in _NUMERIC:
        if isinstance(value, bool):
            return f"failed to parse field [{path}] of type [{known}]"
        if isinstance(value, (int, float)):
            return None
        try:
            float(value)
            return None
        except (TypeError, ValueError):
            return f"failed to parse field [{path}] of type [{known}]"
    if known == "date":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                parse_date(value, 0)
                return None
            except EsError:
                pass
        return f"failed to parse field [{path}] of type [date]"
    if known == "boolean":
        return None if value in (True, False, "true", "false", "") else f"failed to parse field [{path}] of type [boolean]"
    return None


def _typed(value, kind: str):
    """A source value as the column holds it: dates in ms, numbers as numbers, keyword <= 256 chars."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, list):
        items = [v for v in (_typed(item, kind) for item in _values(value)) if v is not None]
        return items if len(items) > 1 else (items[0] if items else None)
    if kind == "keyword":
        text = value if isinstance(value, str) else _as_text(value)
        return text if len(text) <= IGNORE_ABOVE else None
    if kind == "text":
        return value if isinstance(value, str) else _as_text(value)
    if kind == "date":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        try:
            return iso_ms(value) if isinstance(value, str) else None
        except ValueError:
            try:
                return parse_date(value, 0)
            except EsError:
                return None
    if kind in _NUMERIC:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return value
        try:
            number = float(value)
            return int(number) if kind == "long" and number.is_integer() else number
        except (TypeError, ValueError):
            return None
    if kind == "boolean":
        return value if isinstance(value, bool) else (value == "true" if value in ("true", "false") else None)
    return value


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- position sets ----------------------------------------------------------------------
# A set of matching documents within one index is a `range` (contiguous positions, e.g.
# a time range) or a `set` of positions.


def _inter(a, b):
    if isinstance(a, range) and isinstance(b, range):
        return range(max(a.start, b.start), min(a.stop, b.stop))
    if isinstance(a, range):
        a, b = b, a
    if isinstance(b, range):
        if len(a) <= len(b):
            start, stop = b.start, b.stop
            return {p for p in a if start <= p < stop}
        return {p for p in b if p in a}
    return a & b if len(a) <= len(b) else b & a


def _diff(a, b):
    if not b or not a:
        return a
    if isinstance(b, range):
        start, stop = b.start, b.stop
        return {p for p in a if not start <= p < stop}
    if isinstance(a, range):
        return {p for p in a if p not in b}
    return a - b


def _union(parts: list):
    parts = [p for p in parts if p]
    if not parts:
        return set()
    if len(parts) == 1:
        return parts[0]
    out = set()
    for part in parts:
        out.update(part)
    return out


def _sorted_positions(found) -> Sequence[int]:
    return found if isinstance(found, range) else sorted(found)




Docs = list[tuple[Index, Sequence[int]]]
"""Documents of a request: each index with the positions that matched."""
