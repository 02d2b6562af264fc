"""An Elasticsearch-compatible log store for the sandbox: in memory, standard library only.

The runbooks talk to Elasticsearch with the official ``elasticsearch`` client,
and the sandbox must exercise that same code path, so this module speaks
enough of the Elasticsearch HTTP API that the client (8.x and 9.x) works
unchanged: it answers with ``X-Elastic-Product: Elasticsearch``, accepts the
``application/vnd.elasticsearch+json; compatible-with=8|9`` media types and
echoes them, and reports errors in Elasticsearch's JSON shape with the same
types and status codes (``index_not_found_exception``, ``parsing_exception``,
``x_content_parse_exception``, ``illegal_argument_exception``, a
``search_phase_execution_exception`` around query-time failures).

Supported (everything else is answered with a 400 that names it):

* ``GET|HEAD /``, ``/_cluster/health``, ``/_cat/indices`` (text, ``v``, ``h``,
  ``s``, ``bytes``, ``format=json``), ``/<target>/_mapping``, ``_field_caps``;
* ``_bulk`` (``index``, ``create``, ``delete``), ``/<index>/_doc[/<id>]``,
  ``GET /<index>/_doc/<id>``, index create/delete/exists, ``_refresh``;
* ``_search`` and ``_count`` on comma lists and ``*`` wildcards of indices
  (``-`` exclusions, ``ignore_unavailable``, ``allow_no_indices``), point in
  time (``POST /<index>/_pit``, ``DELETE /_pit``);
* queries: ``bool`` (must/filter/should/must_not, ``minimum_should_match``),
  ``match_all``, ``match_none``, ``term``, ``terms``, ``ids``, ``exists``,
  ``prefix``, ``wildcard``, ``regexp``, ``range`` (date math such as
  ``now-2h``, ``now-1d/d``, ``2024-01-01||+1d``, ISO dates, epoch millis,
  ``format``, ``time_zone``), ``match``, ``match_phrase``, ``multi_match``,
  ``query_string``, ``simple_query_string``, ``constant_score``;
* ``sort`` (fields, ``_doc``, ``_shard_doc``, ``_score``; ``missing``,
  ``unmapped_type``), ``from``/``size`` (result window 10,000),
  ``search_after``, ``track_total_hits``, ``_source`` filtering, ``fields``,
  ``post_filter``, ``version``, ``seq_no_primary_term``, ``typed_keys``;
* aggregations ``date_histogram`` (``fixed_interval``, ``calendar_interval``,
  ``min_doc_count``, ``extended_bounds``, ``hard_bounds``, ``offset``,
  ``format``, fixed-offset ``time_zone``), ``terms`` (``size``, ``order``,
  ``min_doc_count``, ``missing``, ``include``/``exclude``), ``top_hits``,
  ``filter``, ``filters``, ``missing``, ``min``, ``max``, ``avg``, ``sum``,
  ``value_count``, ``cardinality``, ``stats``, nested to any depth.

Mapping is Elasticsearch's dynamic mapping: ``@timestamp`` and strings that
look like ISO dates are ``date``; other strings are ``text`` with a
``.keyword`` sub-field (``ignore_above: 256``), so aggregations and sorting
need ``field.keyword`` exactly as on a real cluster.  Deliberate
simplifications: ``term`` on a ``text`` field compares the whole value
(keyword semantics) instead of analysed tokens; every hit scores 1.0; the
analyser approximates the standard one (lower-cased word tokens).

Speed: each index keeps its documents sorted by ``@timestamp``, so a range on
``@timestamp`` is two bisections and a ``date_histogram`` on it bisects
bucket boundaries; keyword columns and postings are built on first use.

The sandbox store is unauthenticated and listens on 127.0.0.1 only;
``runbooks.logs`` supports API keys and basic auth (from environment
variables) and TLS for real clusters.
"""

from __future__ import annotations

import base64
import bisect
import calendar
import fnmatch
import gzip
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

VERSION = "9.1.0"
LUCENE_VERSION = "10.2.2"
MAX_RESULT_WINDOW = 10_000
MAX_BUCKETS = 65_536
IGNORE_ABOVE = 256
DEFAULT_TRACK_TOTAL = 10_000
TIME_FIELD = "@timestamp"
_MISSING = object()
_SHARDS_ONE = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- errors -------------------------------------------------------------------------


class EsError(Exception):
    """An error answered in Elasticsearch's shape: ``{"error": {...}, "status": N}``."""

    def __init__(self, status: int, type_: str, reason: str, *, phase: bool = False,
                 index: str | None = None, **extra):
        super().__init__(reason)
        self.status, self.type, self.reason, self.phase, self.index = status, type_, reason, phase, index
        self.extra = extra

    def body(self) -> dict:
        cause = {"type": self.type, "reason": self.reason, **self.extra}
        if not self.phase:
            return {"error": {"root_cause": [cause], **cause}, "status": self.status}
        shard = {"shard": 0, "index": self.index or "_na_", "node": NODE_ID, "reason": cause}
        return {"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
                          "reason": "all shards failed", "phase": "query", "grouped": True,
                          "failed_shards": [shard], "caused_by": cause}, "status": self.status}


def _parsing(reason: str) -> EsError:
    return EsError(400, "parsing_exception", reason, line=1, col=1)


def _xcontent(reason: str) -> EsError:
    return EsError(400, "x_content_parse_exception", f"[1:1] {reason}")


def _illegal(reason: str, *, phase: bool = False, index: str | None = None) -> EsError:
    return EsError(400, "illegal_argument_exception", reason, phase=phase, index=index)


def _index_not_found(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]",
                   **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


def _fielddata(field: str, index: str) -> EsError:
    return _illegal(
        f"Fielddata is disabled on [{field}] in [{index}]. Text fields are not optimised for operations "
        "that require per-document field data like aggregations and sorting, so these operations are "
        f"disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on "
        f"[{field}] in order to load field data by uninverting the inverted index. Note that this can "
        "use significant memory.", phase=True, index=index)


NODE_ID = "sandbox-node-0"


# -- dates ----------------------------------------------------------------------------

_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_MATH = re.compile(r"([+-])(\d+)([yMwdhHms])|/([yMwdhHms])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "H": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_MINUTE_CACHE: dict[str, int] = {}


def fmt_ms(ms: int | float, tz: tzinfo | None = None) -> str:
    """Epoch milliseconds as Elasticsearch prints dates: ``2024-01-02T03:04:05.678Z``."""
    ms = int(ms)
    seconds, millis = divmod(ms, 1000)
    moment = _EPOCH + timedelta(seconds=seconds)
    if tz is None or tz is UTC:
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    local = moment.astimezone(tz)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%dT%H:%M:%S}.{millis:03d}{offset[:3]}:{offset[3:]}"


def iso_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 date (fast path for ``...T..:..:..mmmZ``)."""
    if len(text) == 24 and text[10] == "T" and text[23] == "Z" and text[19] == ".":
        base = _MINUTE_CACHE.get(text[:16])
        if base is None:
            if len(_MINUTE_CACHE) > 200_000:
                _MINUTE_CACHE.clear()
            base = _MINUTE_CACHE[text[:16]] = calendar.timegm(
                (int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]), 0)) * 1000
        return base + int(text[17:19]) * 1000 + int(text[20:23])
    return _parse_iso(text, None, False)


def _parse_iso(text: str, tz: tzinfo | None, round_up: bool) -> int:
    """ISO dates with optional time, fraction (any digits) and offset; partial dates round as ES does."""
    s = text.strip()
    m = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", s)
    if m:  # yyyy or yyyy-MM
        year, month = int(m.group(1)), int(m.group(2) or 0)
        start = datetime(year, month or 1, 1, tzinfo=tz or UTC)
        if round_up:
            end = datetime(year + 1, 1, 1, tzinfo=tz or UTC) if not month else _add_months(start, 1)
            return _to_ms(end) - 1
        return _to_ms(start)
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?)?"
                     r"(Z|[+-]\d{2}(?::?\d{2})?)?", s)
    if not m:
        raise ValueError(text)
    day, hh, mi, ss, frac, off = m.groups()
    zone = tz or UTC
    if off:
        zone = _parse_tz("+00:00" if off == "Z" else off)
    base = datetime.fromisoformat(day).replace(tzinfo=zone)
    ms = _to_ms(base)
    precision = 86_400_000
    if hh is not None:
        base = base.replace(hour=int(hh))
        ms, precision = _to_ms(base), 3_600_000
        if mi is not None:
            ms, precision = ms + int(mi) * 60_000, 60_000
            if ss is not None:
                ms, precision = ms + int(ss) * 1000, 1000
                if frac is not None:
                    ms, precision = ms + int((frac + "000")[:3]), 1
    return ms + precision - 1 if round_up and precision > 1 else ms


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _parse_tz(value: str | None) -> tzinfo:
    if not value or value in ("UTC", "Z", "utc", "Etc/UTC", "GMT"):
        return UTC
    m = re.fullmatch(r"([+-])(\d{1,2})(?::?(\d{2}))?", value)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return timezone(-delta if m.group(1) == "-" else delta)
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(value)
    except Exception:
        raise _illegal(f"time_zone must be UTC, an offset like +01:00 or a region like Europe/Paris; "
                       f"got [{value}]") from None


def _round(ms: int, unit: str, tz: tzinfo, up: bool) -> int:
    """Round down to the start of ``unit`` (or, ``up``, to its last millisecond)."""
    local = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)
    if unit == "y":
        start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = start.replace(year=start.year + 1)
    elif unit == "M":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        nxt = _add_months(start, 1)
    elif unit == "w":
        start = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = start + timedelta(days=7)
    elif unit == "d":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = start + timedelta(days=1)
    elif unit in ("h", "H"):
        start = local.replace(minute=0, second=0, microsecond=0)
        nxt = start + timedelta(hours=1)
    elif unit == "m":
        start = local.replace(second=0, microsecond=0)
        nxt = start + timedelta(minutes=1)
    else:
        start = local.replace(microsecond=0)
        nxt = start + timedelta(seconds=1)
    return _to_ms(nxt) - 1 if up else _to_ms(start)


def parse_date(value, now_ms: int, *, round_up: bool = False, fmt: str | None = None,
               tz: tzinfo | None = None) -> int:
    """A date (math) expression as epoch milliseconds, the way a ``range`` query reads it.

    ``round_up`` is for ``gt``/``lte`` bounds: ``now/d`` is then the day's last
    millisecond, and a date without a time is the end of that day.
    """
    tz = tz or UTC
    formats = [f.strip() for f in (fmt or "strict_date_optional_time||epoch_millis").split("||")]
    if isinstance(value, bool) or value is None:
        raise EsError(400, "parse_exception", f"failed to parse date field [{value}]")
    if isinstance(value, (int, float)):
        return int(value * 1000) if "epoch_second" in formats else int(value)
    text = str(value).strip()
    if text.startswith("now"):
        anchor, math_part = now_ms, text[3:]
    elif "||" in text:
        anchor_text, math_part = text.split("||", 1)
        anchor = _parse_formatted(anchor_text, formats, tz, False)
    else:
        return _parse_formatted(text, formats, tz, round_up)
    pos = 0
    ms = anchor
    for m in _MATH.finditer(math_part):
        if m.start() != pos:
            break
        pos = m.end()
        if m.group(4):
            ms = _round(ms, m.group(4), tz, round_up)
            continue
        sign, amount, unit = m.group(1), int(m.group(2)), m.group(3)
        amount = amount if sign == "+" else -amount
        if unit in _UNIT_MS:
            ms += amount * _UNIT_MS[unit]
        else:
            moment = (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)
            moment = _add_months(moment, amount * (12 if unit == "y" else 1))
            ms = _to_ms(moment)
    if pos != len(math_part):
        raise EsError(400, "parse_exception", f"failed to parse date field [{text}]: "
                      f"unrecognized date math [{math_part[pos:]}] (use e.g. now-2h, now-1d/d, 2024-01-01||+1M)")
    return ms


def _parse_formatted(text: str, formats: list[str], tz: tzinfo, round_up: bool) -> int:
    for f in formats:
        try:
            if f == "epoch_millis" and re.fullmatch(r"-?\d+(\.\d+)?", text):
                return int(float(text))
            if f == "epoch_second" and re.fullmatch(r"-?\d+(\.\d+)?", text):
                return int(float(text) * 1000)
            if f in ("strict_date_optional_time", "date_optional_time", "strict_date_optional_time_nanos",
                     "date_time", "strict_date_time", "date", "strict_date", "iso8601"):
                return _parse_iso(text, tz, round_up)
            if "y" in f or "H" in f:
                moment = datetime.strptime(text, _java_to_strftime(f))
                return _to_ms(moment.replace(tzinfo=moment.tzinfo or tz))
        except (ValueError, OverflowError):
            continue
    raise EsError(400, "parse_exception",
                  f"failed to parse date field [{text}] with format [{'||'.join(formats)}]")


_JAVA_TOKENS = [("yyyy", "%Y"), ("uuuu", "%Y"), ("yy", "%y"), ("MMMM", "%B"), ("MMM", "%b"), ("MM", "%m"),
                ("dd", "%d"), ("HH", "%H"), ("hh", "%I"), ("mm", "%M"), ("ss", "%S"), ("SSS", "%f"),
                ("EEEE", "%A"), ("EEE", "%a"), ("a", "%p"), ("XXX", "%z"), ("ZZ", "%z"), ("Z", "%z"),
                ("M", "%m"), ("d", "%d"), ("H", "%H")]
_NAMED_FORMATS = {
    "strict_date_optional_time": None, "date_optional_time": None, "strict_date_time": None, "date_time": None,
    "date": "yyyy-MM-dd", "strict_date": "yyyy-MM-dd", "basic_date": "yyyyMMdd",
    "date_hour_minute": "yyyy-MM-dd'T'HH:mm", "date_hour": "yyyy-MM-dd'T'HH",
    "hour_minute": "HH:mm", "strict_hour_minute": "HH:mm", "year_month": "yyyy-MM", "year": "yyyy",
}


def _java_to_strftime(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "'":
            j = pattern.index("'", i + 1) if "'" in pattern[i + 1:] else len(pattern)
            out.append(pattern[i + 1:j].replace("%", "%%"))
            i = j + 1
            continue
        for token, directive in _JAVA_TOKENS:
            if pattern.startswith(token, i):
                out.append(directive)
                i += len(token)
                break
        else:
            out.append(pattern[i].replace("%", "%%"))
            i += 1
    return "".join(out)


class _DateFormatter:
    """Formats bucket keys and date values (``key_as_string``, ``value_as_string``)."""

    def __init__(self, fmt: str | None, tz: tzinfo):
        self.tz = tz
        first = (fmt or "strict_date_optional_time").split("||")[0].strip()
        self.epoch = first in ("epoch_millis", "epoch_second")
        self.first = first
        pattern = _NAMED_FORMATS.get(first, first)
        self.pattern = None if pattern is None or self.epoch else _java_to_strftime(pattern)

    def __call__(self, ms: int | float) -> str:
        if self.first == "epoch_millis":
            return str(int(ms))
        if self.first == "epoch_second":
            return str(int(ms) // 1000)
        if self.pattern is None:
            return fmt_ms(ms, self.tz)
        moment = (_EPOCH + timedelta(milliseconds=int(ms))).astimezone(self.tz)
        return moment.strftime(self.pattern.replace("%f", f"{int(ms) % 1000:03d}"))


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
                kind = "date" if path == TIME_FIELD and isinstance(item, (str, int)) else _leaf_type(item)
                if kind is None:
                    continue
                known = self.mapping.get(path)
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
            if self.mapping.get(base) == "text":
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


# -- queries -------------------------------------------------------------------------------


class Ctx:
    """What a request's compilation and evaluation share: the clock, the request's indices."""

    def __init__(self, now_ms: int):
        self.now_ms = now_ms


class Node:
    """A compiled query: ``eval`` returns the matching positions of an index within ``within``."""

    cheap = True  # answered from postings/bisects (else: tests each candidate)

    def eval(self, ix: Index, within):  # pragma: no cover - interface
        raise NotImplementedError


class MatchAll(Node):
    def eval(self, ix, within):
        return within


class MatchNone(Node):
    def eval(self, ix, within):
        return set()


class Bool(Node):
    def __init__(self, must, filter_, should, must_not, msm):
        self.required = sorted(must + filter_, key=lambda n: not n.cheap)
        self.should, self.must_not, self.msm = should, must_not, msm
        self.cheap = all(n.cheap for n in self.required + should + must_not)

    def eval(self, ix, within):
        cur = within
        for node in self.required:
            if not cur:
                return set()
            cur = node.eval(ix, cur)
        if not cur:
            return set()
        for node in sorted(self.must_not, key=lambda n: not n.cheap):
            cur = _diff(cur, node.eval(ix, cur))
            if not cur:
                return set()
        if self.should:
            need = _resolve_msm(self.msm, len(self.should), default=0 if self.required else 1)
            if need > len(self.should):
                return set()
            if need == 1:
                cur = _union([node.eval(ix, cur) for node in self.should])
            elif need > 1:
                counts: Counter = Counter()
                for node in self.should:
                    counts.update(node.eval(ix, cur))
                cur = {p for p, n in counts.items() if n >= need}
        return cur


def _resolve_msm(spec, clauses: int, default: int) -> int:
    if spec is None:
        return default
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            n = math.floor(clauses * abs(pct) / 100)
            return clauses - n if pct < 0 else n
        n = int(text)
    except ValueError:
        raise _illegal(f"unsupported minimum_should_match [{spec}]; use a number, a negative number or "
                       "a percentage like 75%") from None
    return max(clauses + n, 0) if n < 0 else n


def _coerce_for(kind: str, value, now_ms: int, field: str):
    """A query value in the column's representation (None: cannot match)."""
    if kind in ("keyword", "text"):
        return _as_text(value)
    if kind in _NUMERIC:
        if isinstance(value, bool):
            raise _query_shard(f"failed to create query: For input string: \"{value}\"", field)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _query_shard(f"failed to create query: For input string: \"{value}\"", field) from None
        return int(number) if number.is_integer() else number
    if kind == "date":
        return parse_date(value, now_ms)
    if kind == "boolean":
        if value in (True, "true"):
            return True
        if value in (False, "false", ""):
            return False
        raise _query_shard(f"failed to create query: Can't parse boolean value [{value}], "
                           "expected [true] or [false]", field)
    return value


def _query_shard(reason: str, index: str | None = None) -> EsError:
    return EsError(400, "query_shard_exception", reason, phase=True, index=index)


class Term(Node):
    def __init__(self, field: str, values: list, ctx: Ctx, case_insensitive: bool = False):
        self.field, self.values, self.ctx, self.ci = field, values, ctx, case_insensitive
        self.cheap = True

    def eval(self, ix, within):
        if self.field == "_index":
            names = {str(v) for v in self.values}
            return within if ix.name in names or any(fnmatch.fnmatchcase(ix.name, n) for n in names) else set()
        if self.field == "_id":
            wanted = {str(v) for v in self.values}
            return _inter({p for p, i in enumerate(ix.ids) if i in wanted}, within)
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        keys = {_coerce_for(kind, v, self.ctx.now_ms, ix.name) for v in self.values}
        if kind == "text":  # keyword semantics on the whole value; no postings for free text
            col = ix.column(self.field)
            if self.ci:
                keys = {k.lower() for k in keys}
                return {p for p in within if _any_value(col[p], lambda v: v.lower() in keys)}
            return {p for p in within if _any_value(col[p], keys.__contains__)}
        post = ix.postings(self.field)
        if self.ci and kind == "keyword":
            lowered = {k.lower() for k in keys}
            keys = {k for k in post if k.lower() in lowered}
        found = _union([set(post[k]) for k in keys if k in post]) if len(keys) > 1 else \
            set(post.get(next(iter(keys)), ())) if keys else set()
        return _inter(found, within)


def _any_value(value, test: Callable) -> bool:
    if value is None:
        return False
    if isinstance(value, list):
        return any(test(v) for v in value)
    return test(value)


class Pattern(Node):
    """prefix / wildcard / regexp on exact values (the whole value; ``case_insensitive``)."""

    def __init__(self, field: str, kind: str, pattern: str, case_insensitive: bool = False):
        self.field, self.kind, self.pattern, self.ci = field, kind, pattern, case_insensitive
        flags = re.IGNORECASE if case_insensitive else 0
        if kind == "prefix":
            self.regex = re.compile(re.escape(pattern), flags)
            self.test = (lambda v: v.lower().startswith(pattern.lower())) if case_insensitive else \
                (lambda v: v.startswith(pattern))
        else:
            source = _wildcard_regex(pattern) if kind == "wildcard" else pattern
            try:
                self.regex = re.compile(source, flags | re.DOTALL)
            except re.error as e:
                raise _illegal(f"invalid {kind} pattern [{pattern}]: {e}") from None
            self.test = lambda v: self.regex.fullmatch(v) is not None

    def eval(self, ix, within):
        test = self.test
        if self.field == "_index":
            return within if test(ix.name) else set()
        if self.field == "_id":
            return {p for p in within if test(ix.ids[p])}
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        if kind == "text":
            col = ix.column(self.field)
            return {p for p in within if _any_value(col[p], test)}
        post = ix.postings(self.field)
        return _inter(_union([set(post[k]) for k in post if test(_as_text(k))]), within)


def _wildcard_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return "".join(out)


class Range(Node):
    def __init__(self, field: str, bounds: dict, ctx: Ctx, fmt: str | None, tz: tzinfo):
        self.field, self.bounds, self.ctx, self.fmt, self.tz = field, bounds, ctx, fmt, tz
        self._dates: tuple | None = None
        self.cheap = field == TIME_FIELD

    def _date_bounds(self) -> tuple:
        if self._dates is None:
            b, now = self.bounds, self.ctx.now_ms
            lo = lo_incl = hi = hi_incl = None
            if b.get("gte") is not None:
                lo, lo_incl = parse_date(b["gte"], now, fmt=self.fmt, tz=self.tz), True
            if b.get("gt") is not None:
                lo, lo_incl = parse_date(b["gt"], now, round_up=True, fmt=self.fmt, tz=self.tz), False
            if b.get("lte") is not None:
                hi, hi_incl = parse_date(b["lte"], now, round_up=True, fmt=self.fmt, tz=self.tz), True
            if b.get("lt") is not None:
                hi, hi_incl = parse_date(b["lt"], now, fmt=self.fmt, tz=self.tz), False
            self._dates = (lo, lo_incl, hi, hi_incl)
        return self._dates

    def eval(self, ix, within):
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        if kind == "date":
            lo, lo_incl, hi, hi_incl = self._date_bounds()
            if path == TIME_FIELD:
                ts = ix.ts
                start = bisect.bisect_right(ts, _NO_TS)  # documents without @timestamp never match
                if lo is not None:
                    start = max(start, bisect.bisect_left(ts, lo) if lo_incl else bisect.bisect_right(ts, lo))
                stop = len(ts)
                if hi is not None:
                    stop = bisect.bisect_right(ts, hi) if hi_incl else bisect.bisect_left(ts, hi)
                return _inter(range(start, max(start, stop)), within)
            test = _bounds_test(lo, lo_incl, hi, hi_incl)
        else:
            b, now = self.bounds, self.ctx.now_ms
            lo = hi = None
            lo_incl = hi_incl = True
            for key in ("gte", "gt"):
                if b.get(key) is not None:
                    lo, lo_incl = _coerce_for(kind, b[key], now, ix.name), key == "gte"
            for key in ("lte", "lt"):
                if b.get(key) is not None:
                    hi, hi_incl = _coerce_for(kind, b[key], now, ix.name), key == "lte"
            test = _bounds_test(lo, lo_incl, hi, hi_incl)
        col = ix.column(self.field)
        return {p for p in within if _any_value(col[p], test)}


def _bounds_test(lo, lo_incl, hi, hi_incl) -> Callable:
    def test(v) -> bool:
        try:
            if lo is not None and (v < lo if lo_incl else v <= lo):
                return False
            if hi is not None and (v > hi if hi_incl else v >= hi):
                return False
        except TypeError:
            return False
        return True
    return test


class Exists(Node):
    def __init__(self, field: str):
        self.field = field

    def eval(self, ix, within):
        path, kind = ix.field_type(self.field)
        if kind is not None:
            col = ix.column(self.field)
            return {p for p in within if col[p] is not None}
        if ix.is_object(self.field):
            leaves = [f for f in ix.mapping if f.startswith(self.field + ".")]
            cols = [ix.column(f) for f in leaves]
            return {p for p in within if any(c[p] is not None for c in cols)}
        return set()


class Ids(Node):
    def __init__(self, values: list):
        self.values = {str(v) for v in values}

    def eval(self, ix, within):
        return _inter({p for p, i in enumerate(ix.ids) if i in self.values}, within)


class Match(Node):
    """match / match_phrase on a field (``*``: any field), analysed for text, exact otherwise."""

    cheap = False

    def __init__(self, fields: list[str], query, ctx: Ctx, *, operator: str = "or", msm=None,
                 phrase: bool = False, prefix_last: bool = False, zero_terms: str = "none"):
        self.fields, self.query, self.ctx = fields, query, ctx
        self.and_ = operator.lower() == "and"
        self.msm, self.phrase, self.prefix_last = msm, phrase, prefix_last
        self.tokens = analyze(query) if not isinstance(query, (bool, int, float)) else [str(query).lower()]
        self.zero_terms = zero_terms

    def eval(self, ix, within):
        if not self.tokens:
            return within if self.zero_terms == "all" else set()
        found: set = set()
        fields = self.fields
        if fields == ["*"]:
            fields = sorted(set(ix.mapping))
        else:
            expanded = []
            for f in fields:
                expanded.extend(sorted(k for k in ix.mapping if fnmatch.fnmatchcase(k, f)) if "*" in f else [f])
            fields = expanded
        for field in fields:
            rest = within if not found else _diff(within, found)
            if not rest:
                break
            found |= self._eval_field(ix, field, rest)
        return found

    def _eval_field(self, ix, field, within) -> set:
        path, kind = ix.field_type(field)
        if kind is None:
            return set()
        if kind != "text":
            try:
                key = _coerce_for(kind, self.query, self.ctx.now_ms, ix.name)
            except EsError:
                return set()
            if kind == "keyword":
                return Term(field, [key], self.ctx).eval(ix, within)
            col = ix.column(field)
            return {p for p in within if _any_value(col[p], lambda v: v == key)}
        col = ix.column(field)
        tokens = self.tokens
        out = set()
        if self.phrase:
            n = len(tokens)
            first = tokens[0]
            for p in within:
                for text in _values(col[p]):
                    low = text.lower()
                    if first not in low:
                        continue
                    doc = analyze(low)
                    if _has_phrase(doc, tokens, n, self.prefix_last):
                        out.add(p)
                        break
            return out
        need = len(tokens) if self.and_ else _resolve_msm(self.msm, len(tokens), default=1)
        wanted = set(tokens)
        for p in within:
            for text in _values(col[p]):
                low = text.lower()
                if need == 1 and not any(t in low for t in wanted):
                    continue
                if len(wanted & set(analyze(low))) >= need:
                    out.add(p)
                    break
        return out


def _has_phrase(doc: list[str], tokens: list[str], n: int, prefix_last: bool) -> bool:
    for i in range(len(doc) - n + 1):
        if doc[i:i + n - 1] == tokens[:-1] and (
                doc[i + n - 1].startswith(tokens[-1]) if prefix_last else doc[i + n - 1] == tokens[-1]):
            return True
    return False


class TokenPattern(Node):
    """A wildcard term of query_string on a text field: matches any token (lower-cased)."""

    cheap = False

    def __init__(self, fields: list[str], pattern: str):
        self.fields = fields
        self.regex = re.compile(_wildcard_regex(pattern.lower()), re.DOTALL)

    def eval(self, ix, within):
        out: set = set()
        fields = sorted(ix.mapping) if self.fields == ["*"] else self.fields
        for field in fields:
            path, kind = ix.field_type(field)
            if kind is None:
                continue
            col = ix.column(field)
            if kind == "text":
                test = lambda v: any(self.regex.fullmatch(t) for t in analyze(v))  # noqa: E731
            else:
                test = lambda v: self.regex.fullmatch(_as_text(v).lower()) is not None  # noqa: E731
            out |= {p for p in within if p not in out and _any_value(col[p], test)}
        return out


class Not(Node):
    def __init__(self, node: Node):
        self.node, self.cheap = node, node.cheap

    def eval(self, ix, within):
        return _diff(within, self.node.eval(ix, within))


_QUERY_TYPES = ("bool", "match_all", "match_none", "term", "terms", "ids", "exists", "prefix", "wildcard",
                "regexp", "range", "match", "match_phrase", "match_phrase_prefix", "multi_match",
                "query_string", "simple_query_string", "constant_score")


def compile_query(query, ctx: Ctx) -> Node:
    """Compile the ``query`` object of a request (parsing errors as Elasticsearch words them)."""
    if query is None:
        return MatchAll()
    if not isinstance(query, dict):
        raise _parsing(f"[_na] query malformed, must start with start_object, got [{type(query).__name__}]")
    if len(query) == 0:
        return MatchAll()
    if len(query) > 1:
        first, second = list(query)[:2]
        raise _parsing(f"[{first}] malformed query, expected [END_OBJECT] but found [FIELD_NAME]")
    kind, body = next(iter(query.items()))
    compiler = _COMPILERS.get(kind)
    if compiler is None:
        raise _parsing(f"unknown query [{kind}]")
    if not isinstance(body, dict):
        raise _parsing(f"[{kind}] query malformed, no start_object after query name")
    return compiler(body, ctx)


def _single_field(kind: str, body: dict, allowed: set[str]) -> tuple[str, dict]:
    """The (field, options) of a single-field query written either short or long."""
    fields = [k for k in body if k not in ("boost", "_name")]
    if not fields:
        raise _parsing(f"[{kind}] query requires a field name")
    if len(fields) > 1:
        raise _parsing(f"[{kind}] query doesn't support multiple fields, found [{fields[0]}] and [{fields[1]}]")
    field = fields[0]
    spec = body[field]
    if isinstance(spec, dict):
        for key in spec:
            if key not in allowed | {"boost", "_name"}:
                raise _parsing(f"[{kind}] query does not support [{key}]")
        return field, spec
    if isinstance(spec, list):
        raise _parsing(f"[{kind}] query does not support array of values")
    return field, {"value" if kind in ("term", "prefix", "wildcard", "regexp") else "query": spec}


def _c_bool(body: dict, ctx: Ctx) -> Node:
    clauses: dict[str, list[Node]] = {"must": [], "filter": [], "should": [], "must_not": []}
    for key, value in body.items():
        if key in clauses:
            items = value if isinstance(value, list) else [value]
            clauses[key] = [compile_query(item, ctx) for item in items]
        elif key not in ("minimum_should_match", "boost", "_name", "adjust_pure_negative"):
            raise _parsing(f"[bool] query does not support [{key}]")
    return Bool(clauses["must"], clauses["filter"], clauses["should"], clauses["must_not"],
                body.get("minimum_should_match"))


def _c_match_all(body, ctx):
    return MatchAll()


def _c_match_none(body, ctx):
    return MatchNone()


def _c_term(body, ctx):
    field, spec = _single_field("term", body, {"value", "case_insensitive"})
    if "value" not in spec:
        raise _parsing("[term] query requires a value")
    value = spec["value"]
    if isinstance(value, (dict, list)) or value is None:
        raise _parsing(f"[term] query does not support a value of type {type(value).__name__}")
    return Term(field, [value], ctx, bool(spec.get("case_insensitive")))


def _c_terms(body, ctx):
    fields = [k for k in body if k not in ("boost", "_name")]
    if len(fields) != 1:
        raise _parsing("[terms] query requires exactly one field" if not fields else
                       f"[terms] query does not support multiple fields, found [{fields[0]}] and [{fields[1]}]")
    values = body[fields[0]]
    if not isinstance(values, list):
        raise _parsing(f"[terms] query does not support [{fields[0]}]: expected an array of values")
    return Term(fields[0], values, ctx)


def _c_ids(body, ctx):
    values = body.get("values")
    if not isinstance(values, list):
        raise _parsing("[ids] query requires [values] as an array")
    return Ids(values)


def _c_exists(body, ctx):
    field = body.get("field")
    if not isinstance(field, str) or not field:
        raise _parsing("[exists] must be provided with a [field]")
    return Exists(field)


def _c_pattern(kind):
    def compile_(body, ctx):
        allowed = {"value", "case_insensitive", "rewrite", "flags", "max_determinized_states", "wildcard"}
        field, spec = _single_field(kind, body, allowed)
        value = spec.get("value", spec.get("wildcard"))
        if value is None:
            raise _parsing(f"[{kind}] query requires a value")
        return Pattern(field, kind, str(value), bool(spec.get("case_insensitive")))
    return compile_


def _c_range(body, ctx):
    allowed = {"gte", "gt", "lte", "lt", "format", "time_zone", "relation", "from", "to",
               "include_lower", "include_upper"}
    field, spec = _single_field("range", body, allowed)
    if not isinstance(body[field], dict):
        raise _parsing(f"[range] query malformed, no start_object after field [{field}]")
    bounds = {k: spec[k] for k in ("gte", "gt", "lte", "lt") if k in spec}
    if "from" in spec:
        bounds["gte" if spec.get("include_lower", True) else "gt"] = spec["from"]
    if "to" in spec:
        bounds["lte" if spec.get("include_upper", True) else "lt"] = spec["to"]
    node = Range(field, bounds, ctx, spec.get("format"), _parse_tz(spec.get("time_zone")))
    return node


def _c_match(phrase: bool, prefix: bool = False):
    name = "match_phrase_prefix" if prefix else "match_phrase" if phrase else "match"

    def compile_(body, ctx):
        allowed = {"query", "operator", "minimum_should_match", "analyzer", "fuzziness", "lenient",
                   "zero_terms_query", "slop", "prefix_length", "max_expansions", "auto_generate_synonyms_phrase_query",
                   "fuzzy_transpositions"}
        field, spec = _single_field(name, body, allowed)
        if "query" not in spec:
            raise _parsing(f"[{name}] query requires a [query]")
        return Match([field], spec["query"], ctx, operator=str(spec.get("operator", "or")),
                     msm=spec.get("minimum_should_match"), phrase=phrase, prefix_last=prefix,
                     zero_terms=str(spec.get("zero_terms_query", "none")))
    return compile_


def _c_multi_match(body, ctx):
    if "query" not in body:
        raise _parsing("[multi_match] requires a [query]")
    fields = [f.split("^")[0] for f in body.get("fields") or ["*"]]
    kind = body.get("type", "best_fields")
    return Match(fields, body["query"], ctx, operator=str(body.get("operator", "or")),
                 msm=body.get("minimum_should_match"), phrase=kind in ("phrase", "phrase_prefix"),
                 prefix_last=kind == "phrase_prefix")


def _c_constant_score(body, ctx):
    if "filter" not in body:
        raise _parsing("[constant_score] requires a 'filter' element")
    return compile_query(body["filter"], ctx)


def _c_query_string(body, ctx):
    if "query" not in body:
        raise _parsing("[query_string] must be provided with a [query]")
    fields = body.get("fields") or [body.get("default_field", "*")]
    fields = [f.split("^")[0] for f in fields]
    operator = str(body.get("default_operator", "or")).lower()
    return QueryStringParser(str(body["query"]), fields, operator, ctx).parse()


def _c_simple_query_string(body, ctx):
    if "query" not in body:
        raise _parsing("[simple_query_string] must be provided with a [query]")
    fields = [f.split("^")[0] for f in body.get("fields") or ["*"]]
    operator = str(body.get("default_operator", "or")).lower()
    return SimpleQueryParser(str(body["query"]), fields, operator, ctx).parse()


_COMPILERS: dict[str, Callable[[dict, Ctx], Node]] = {
    "bool": _c_bool, "match_all": _c_match_all, "match_none": _c_match_none, "term": _c_term,
    "terms": _c_terms, "ids": _c_ids, "exists": _c_exists, "prefix": _c_pattern("prefix"),
    "wildcard": _c_pattern("wildcard"), "regexp": _c_pattern("regexp"), "range": _c_range,
    "match": _c_match(False), "match_phrase": _c_match(True), "match_phrase_prefix": _c_match(True, True),
    "multi_match": _c_multi_match, "constant_score": _c_constant_score,
    "query_string": _c_query_string, "simple_query_string": _c_simple_query_string,
}


class QueryStringParser:
    """Lucene query syntax, the common part: ``field:value``, ``"phrases"``, ``AND``/``OR``/``NOT``,
    ``+``/``-``, parentheses, wildcards, ranges (``[a TO b]``, ``{a TO b}``, ``>=x``) and
    ``_exists_:field``.  Unsupported syntax is a 400 ``query_shard_exception``.
    """

    _SPECIAL = set('+-=&|><!(){}[]^"~*?:\\/ ')

    def __init__(self, text: str, fields: list[str], operator: str, ctx: Ctx):
        self.text, self.fields, self.and_default = text, fields, operator == "and"
        self.ctx = ctx
        self.tokens = self._lex(text)
        self.pos = 0

    def fail(self, why: str) -> EsError:
        return EsError(400, "query_shard_exception",
                       f"Failed to parse query [{self.text}]: {why}", phase=True)

    def _lex(self, text: str) -> list[tuple[str, str]]:
        out, i, n = [], 0, len(text)
        while i < n:
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "()":
                out.append((ch, ch))
                i += 1
            elif ch == '"':
                j, buf = i + 1, []
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j >= n:
                    raise self.fail("unterminated quoted phrase")
                out.append(("PHRASE", "".join(buf)))
                i = j + 1
            elif ch in "[{":
                j = text.find("]" if ch == "[" else "}", i)
                k = max(text.find("]", i), text.find("}", i))
                j = k if j < 0 else min(j, k) if k >= 0 else j
                if j < 0:
                    raise self.fail("unterminated range")
                out.append(("RANGE", text[i:j + 1]))
                i = j + 1
            elif ch in "+-!" and (i + 1 < n and not text[i + 1].isspace()):
                out.append(("OP", "NOT" if ch in "-!" else "MUST"))
                i += 1
            elif text.startswith("&&", i) or text.startswith("||", i):
                out.append(("OP", "AND" if ch == "&" else "OR"))
                i += 2
            else:
                buf, j = [], i
                while j < n:
                    c = text[j]
                    if c == "\\" and j + 1 < n:
                        buf.append(text[j + 1] if text[j + 1] not in "*?" else "\\" + text[j + 1])
                        j += 2
                        continue
                    if c.isspace() or c in '()"' or (c == ":" and buf) or c in "[{":
                        break
                    buf.append(c)
                    j += 1
                word = "".join(buf)
                if j < n and text[j] == ":" and word:
                    out.append(("FIELD", word))
                    j += 1
                elif word in ("AND", "OR", "NOT"):
                    out.append(("OP", word))
                elif word:
                    out.append(("WORD", word))
                else:
                    raise self.fail(f"unexpected character [{text[j]}]")
                i = j
        return out

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def parse(self) -> Node:
        if not self.tokens:
            return MatchNone()
        node = self._or()
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected [{self.peek()[1]}]")
        return node

    def _or(self) -> Node:
        groups = [[self._and()]]
        while True:
            kind, value = self.peek()
            if kind == "OP" and value == "OR":
                self.pos += 1
                groups.append([self._and()])
            elif kind in ("WORD", "PHRASE", "FIELD", "RANGE", "(") or (kind == "OP" and value in ("NOT", "MUST")):
                node = self._and()  # juxtaposition: the default operator
                if self.and_default:
                    groups[-1].append(node)
                else:
                    groups.append([node])
            else:
                break
        nodes = [g[0] if len(g) == 1 else Bool(g, [], [], [], None) for g in groups]
        return nodes[0] if len(nodes) == 1 else Bool([], [], nodes, [], None)

    def _and(self) -> Node:
        must, must_not = [], []
        node, negated = self._unary()
        (must_not if negated else must).append(node)
        while self.peek() == ("OP", "AND"):
            self.pos += 1
            node, negated = self._unary()
            (must_not if negated else must).append(node)
        if len(must) == 1 and not must_not:
            return must[0]
        return Bool(must or [MatchAll()], [], [], must_not, None)

    def _unary(self) -> tuple[Node, bool]:
        kind, value = self.peek()
        if kind == "OP" and value in ("NOT", "MUST"):
            self.pos += 1
            node, negated = self._unary()
            return node, (not negated) if value == "NOT" else negated
        return self._primary(self.fields), False

    def _primary(self, fields: list[str]) -> Node:
        kind, value = self.peek()
        if kind is None:
            raise self.fail("unexpected end of query")
        self.pos += 1
        if kind == "(":
            node = self._or()
            if self.peek()[0] != ")":
                raise self.fail("missing )")
            self.pos += 1
            return node
        if kind == "FIELD":
            field = value.replace("\\", "")
            if field == "_exists_":
                k, name = self.peek()
                self.pos += 1
                if k != "WORD":
                    raise self.fail("_exists_ needs a field name")
                return Exists(name)
            return self._primary([field])
        if kind == "PHRASE":
            return self._any(fields, lambda f: Match([f], value, self.ctx, phrase=True))
        if kind == "RANGE":
            return self._range(fields, value)
        if kind == "WORD":
            return self._word(fields, value)
        raise self.fail(f"unexpected [{value}]")

    def _any(self, fields: list[str], build: Callable[[str], Node]) -> Node:
        nodes = [build(f) for f in fields]
        return nodes[0] if len(nodes) == 1 else Bool([], [], nodes, [], None)

    def _range(self, fields: list[str], text: str) -> Node:
        m = re.fullmatch(r"([\[{])\s*(\S+)\s+TO\s+(\S+?)\s*([\]}])", text)
        if not m:
            raise self.fail(f"malformed range [{text}]")
        bounds = {}
        if m.group(2) != "*":
            bounds["gte" if m.group(1) == "[" else "gt"] = m.group(2).strip('"')
        if m.group(3) != "*":
            bounds["lte" if m.group(4) == "]" else "lt"] = m.group(3).strip('"')
        return self._any(fields, lambda f: Range(f, bounds, self.ctx, None, UTC))

    def _word(self, fields: list[str], word: str) -> Node:
        for op, key in ((">=", "gte"), ("<=", "lte"), (">", "gt"), ("<", "lt")):
            if word.startswith(op) and len(word) > len(op):
                return self._any(fields, lambda f, k=key, v=word[len(op):]: Range(f, {k: v}, self.ctx, None, UTC))
        has_wild = re.search(r"(?<!\\)[*?]", word) is not None
        if has_wild:
            if word == "*":
                return self._any(fields, lambda f: MatchAll() if f == "*" else Exists(f))
            return self._any(fields, lambda f: _FieldWildcard(f, word))
        plain = word.replace("\\", "")
        return self._any(fields, lambda f: Match([f], plain, self.ctx, phrase=len(analyze(plain)) > 1))


class _FieldWildcard(Node):
    """A wildcard word: tokens of text fields, whole values of the others."""

    cheap = False

    def __init__(self, field: str, pattern: str):
        self.field, self.pattern = field, pattern
        self.tokens = TokenPattern([field], pattern)

    def eval(self, ix, within):
        return self.tokens.eval(ix, within)


class SimpleQueryParser(QueryStringParser):
    """``simple_query_string``: ``+`` and, ``|`` or, ``-`` not, ``"phrase"``, ``prefix*``, parentheses.

    It never fails: like Elasticsearch, odd syntax is read as words.
    """

    def _lex(self, text: str) -> list[tuple[str, str]]:
        out, i, n = [], 0, len(text)
        while i < n:
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "()":
                out.append((ch, ch))
                i += 1
            elif ch == "|":
                out.append(("OP", "OR"))
                i += 1
            elif ch == "+":
                out.append(("OP", "AND"))
                i += 1
            elif ch == "-" and (i == 0 or text[i - 1].isspace() or text[i - 1] in "(+|"):
                out.append(("OP", "NOT"))
                i += 1
            elif ch == '"':
                j = text.find('"', i + 1)
                j = n if j < 0 else j
                out.append(("PHRASE", text[i + 1:j]))
                i = j + 1
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] not in '()|+"':
                    j += 1
                word = text[i:j]
                word = re.sub(r"~\d*$", "", word)
                if word:
                    out.append(("WORD", word))
                i = max(j, i + 1)
        cleaned = []
        for tok in out:  # "a + -b": the binary AND then a NOT
            if tok == ("OP", "AND") and (not cleaned or cleaned[-1][0] in ("OP", "(")):
                continue
            cleaned.append(tok)
        while cleaned and cleaned[-1][0] == "OP":
            cleaned.pop()
        return cleaned

    def parse(self) -> Node:
        try:
            return super().parse()
        except EsError:
            words = [v for k, v in self.tokens if k in ("WORD", "PHRASE")]
            return Match(self.fields, " ".join(words), self.ctx)

    def _word(self, fields: list[str], word: str) -> Node:
        if word.endswith("*") and len(word) > 1:
            return self._any(fields, lambda f: _FieldWildcard(f, word))
        return self._any(fields, lambda f: Match([f], word, self.ctx))


# -- sorting and hits -------------------------------------------------------------------------

_LONG_MAX, _LONG_MIN = 2**63 - 1, -(2**63)
Docs = list[tuple[Index, Sequence[int]]]


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
        if after is not None and after[0] is not None:
            if head.desc:
                hi = bisect.bisect_right(positions, after[0], lo, hi, key=key)
            else:
                lo = bisect.bisect_left(positions, after[0], lo, hi, key=key)
        if hi - lo <= want:
            out.extend((ix, p) for p in positions[lo:hi])
            continue
        if head.desc:
            cut = hi - want
            edge = ts[positions[cut]]
            cut = bisect.bisect_left(positions, edge, lo, hi, key=key)
            out.extend((ix, p) for p in positions[cut:hi])
        else:
            cut = lo + want
            edge = ts[positions[cut - 1]]
            cut = bisect.bisect_right(positions, edge, lo, hi, key=key)
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
        raise _illegal(f"Required one of fields [field, script], but none were specified.")
    return field


class DateHistogram(Agg):
    type = "date_histogram"
    metric = False
    params = {"field", "fixed_interval", "calendar_interval", "min_doc_count", "extended_bounds",
              "hard_bounds", "offset", "format", "time_zone", "keyed", "order", "missing"}
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
                               f"[date_histogram]", phase=True, index=ix.name)
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
            bucket = {"key": _bucket_key(key, kind_seen), "doc_count": count}
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


def _bucket_key(key, kind):
    if isinstance(key, bool):
        return 1 if key else 0
    return key


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
                               f"[{self.type}]", phase=True, index=ix.name)
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
                       avg_as_string=fmt(out["avg"]), sum_as_string=fmt(out["sum"]))
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
