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
                 shard_index: str | None = None, **extra):
        super().__init__(reason)
        self.status, self.type, self.reason, self.phase = status, type_, reason, phase
        self.shard_index = shard_index
        self.extra = extra

    def body(self) -> dict:
        cause = {"type": self.type, "reason": self.reason, **self.extra}
        if not self.phase:
            return {"error": {"root_cause": [cause], **cause}, "status": self.status}
        shard = {"shard": 0, "index": self.shard_index or "_na_", "node": NODE_ID, "reason": cause}
        return {"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
                          "reason": "all shards failed", "phase": "query", "grouped": True,
                          "failed_shards": [shard], "caused_by": cause}, "status": self.status}


def _parsing(reason: str) -> EsError:
    return EsError(400, "parsing_exception", reason, line=1, col=1)


def _xcontent(reason: str) -> EsError:
    return EsError(400, "x_content_parse_exception", f"[1:1] {reason}")


def _illegal(reason: str, *, phase: bool = False, shard_index: str | None = None) -> EsError:
    return EsError(400, "illegal_argument_exception", reason, phase=phase, shard_index=shard_index)


def _index_not_found(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]",
                   **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


def _fielddata(field: str, index: str) -> EsError:
    return _illegal(
        f"Fielddata is disabled on [{field}] in [{index}]. Text fields are not optimised for operations "
        "that require per-document field data like aggregations and sorting, so these operations are "
        f"disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on "
        f"[{field}] in order to load field data by uninverting the inverted index. Note that this can "
        "use significant memory.", phase=True, shard_index=index)


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
        # cheap clauses (postings, bisects) first, so expensive ones test fewer documents
        steps = [(n, False) for n in self.required if n.cheap] + [(n, True) for n in self.must_not if n.cheap] \
            + [(n, False) for n in self.required if not n.cheap] + [(n, True) for n in self.must_not if not n.cheap]
        for node, negate in steps:
            if not cur:
                return set()
            cur = _diff(cur, node.eval(ix, cur)) if negate else node.eval(ix, cur)
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
    return EsError(400, "query_shard_exception", reason, phase=True, shard_index=index)


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
        words = tuple(sorted(wanted))

        def maybe(low: str) -> bool:  # a cheap pre-check: substring search is C-fast
            for word in words:
                if word in low:
                    return True
            return False

        for p in within:
            value = col[p]
            for text in (value,) if isinstance(value, str) else _values(value):
                low = text.lower()
                if not maybe(low):
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
        node = self._query()
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected [{self.peek()[1]}]")
        return node

    def _query(self) -> Node:
        """Clauses with Lucene's occur rules: AND makes both sides required, OR optional,
        ``+``/``-``/``NOT`` mark one clause, bare clauses follow the default operator."""
        clauses: list[list] = []
        conj = None
        while True:
            kind, value = self.peek()
            if kind is None or kind == ")":
                break
            if kind == "OP" and value in ("AND", "OR"):
                if not clauses:
                    raise self.fail(f"{value} needs a clause before it")
                conj = value
                self.pos += 1
                continue
            modifier = None
            while kind == "OP" and value in ("NOT", "MUST"):
                modifier = modifier or value
                self.pos += 1
                kind, value = self.peek()
            node = self._primary(self.fields)
            if clauses and clauses[-1][0] != "must_not":
                if conj == "AND":
                    clauses[-1][0] = "must"
                elif conj == "OR" and self.and_default:
                    clauses[-1][0] = "should"
            if modifier == "NOT":
                occur = "must_not"
            elif modifier == "MUST" or conj == "AND":
                occur = "must"
            elif conj == "OR":
                occur = "should"
            else:
                occur = "must" if self.and_default else "should"
            clauses.append([occur, node])
            conj = None
        if conj is not None:
            raise self.fail(f"{conj} needs a clause after it")
        if not clauses:
            raise self.fail("empty group")
        must = [n for o, n in clauses if o == "must"]
        should = [n for o, n in clauses if o == "should"]
        must_not = [n for o, n in clauses if o == "must_not"]
        if len(clauses) == 1 and not must_not:
            return clauses[0][1]
        if not must and not should:
            must = [MatchAll()]
        return Bool(must, [], should, must_not, None)

    def _primary(self, fields: list[str]) -> Node:
        kind, value = self.peek()
        if kind is None:
            raise self.fail("unexpected end of query")
        self.pos += 1
        if kind == "(":
            node = self._query()
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
                bounds = {key: word[len(op):]}
                return self._any(fields, lambda f, b=bounds: Range(f, b, self.ctx, None, UTC))
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


# -- the store -------------------------------------------------------------------------------

_SEARCH_BODY = {"query", "aggs", "aggregations", "size", "from", "sort", "search_after", "track_total_hits",
                "_source", "fields", "post_filter", "version", "seq_no_primary_term", "pit", "timeout",
                "track_scores", "explain", "profile", "stats", "highlight", "min_score"}
_SEARCH_UNSUPPORTED = {"runtime_mappings", "collapse", "rescore", "suggest", "script_fields", "knn",
                       "indices_boost", "slice", "rank", "retriever", "docvalue_fields", "stored_fields",
                       "terminate_after", "ext", "scroll"}
_COMMON_PARAMS = {"pretty", "human", "error_trace", "filter_path", "source", "source_content_type"}
_SEARCH_PARAMS = _COMMON_PARAMS | {
    "q", "df", "default_operator", "analyze_wildcard", "lenient", "size", "from", "sort", "track_total_hits",
    "_source", "_source_includes", "_source_excludes", "ignore_unavailable", "allow_no_indices",
    "expand_wildcards", "typed_keys", "rest_total_hits_as_int", "search_type", "request_cache", "preference",
    "routing", "timeout", "allow_partial_search_results", "batched_reduce_size", "ccs_minimize_roundtrips",
    "max_concurrent_shard_requests", "pre_filter_shard_size", "seq_no_primary_term", "version", "stats",
    "track_scores", "explain", "ignore_throttled", "include_named_queries_score"}
_INDEX_NAME_BAD = re.compile(r'[\\/*?"<>| ,#:A-Z]')


def _bool_param(value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    raise _illegal(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")


def _int_param(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _illegal(f"Failed to parse int parameter [{name}] with value [{value}]") from None


def _check_index_name(name: str) -> None:
    if (not name or _INDEX_NAME_BAD.search(name) or name[0] in "-_+" or name in (".", "..")
            or len(name.encode()) > 255):
        raise EsError(400, "invalid_index_name_exception",
                      f"Invalid index name [{name}], must be lowercase, must not contain \\, /, *, ?, \", <, >, |, "
                      f"' ', ',', #, :, and must not start with _, - or +", index=name, index_uuid="_na_")


def _duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(nanos|micros|ms|s|m|h|d)", str(text).strip())
    if not m:
        raise _illegal(f"failed to parse setting [keep_alive] with value [{text}] as a time value: unit is "
                       "missing or unrecognized")
    factor = {"nanos": 1e-6, "micros": 1e-3, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    return int(int(m.group(1)) * factor[m.group(2)])


class LogStore:
    """The in-memory store and its HTTP face.

    Example:
        >>> store = LogStore()
        >>> url = store.start()             # http://127.0.0.1:PORT
        >>> store.add(documents)            # doctest: +SKIP
        >>> store.stop()
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None, cluster_name: str = "sandbox-logs",
                 index_prefix: str = "logstash-"):
        self.clock = clock or (lambda: datetime.now(UTC))
        self.cluster_name = cluster_name
        self.index_prefix = index_prefix
        self.cluster_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[:22]
        self.url = ""
        self._indices: dict[str, Index] = {}
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._id_prefix = secrets.token_bytes(7)
        self._pits: dict[str, dict] = {}
        self._day_names: dict[int, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on ``host:port`` (0: a free port) in a background thread; returns the URL."""
        if self._server is not None:
            return self.url
        store = self

        class Handler(_Handler):
            pass

        Handler.store = store
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="logstore", daemon=True,
                                        kwargs={"poll_interval": 0.2})
        self._thread.start()
        self.url = f"http://{host}:{server.server_address[1]}"
        log.info("log store listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LogStore:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def now_ms(self) -> int:
        return _to_ms(self.clock())

    # ---- writing from Python ----

    def add(self, docs: Iterable[dict], index: str | None = None) -> int:
        """Index documents (``_source`` dicts); the index defaults to ``<prefix>YYYY.MM.DD`` of
        ``@timestamp``.  Returns how many were added; raises ValueError naming the first
        rejected document (the others are kept), as a bulk request would report it.
        """
        added = 0
        problems = []
        memos: dict[str, dict] = {}
        with self._lock:
            for doc in docs:
                try:
                    self._put(doc, index, None, memos, op="index", size=len(doc.get("log") or "") + 350)
                    added += 1
                except EsError as e:
                    problems.append(e.reason)
        if problems:
            raise ValueError(f"{len(problems)} document(s) rejected, first: {problems[0]}")
        return added

    def indices(self) -> dict[str, int]:
        """Index name -> number of documents."""
        with self._lock:
            return {name: len(ix.by_id) for name, ix in sorted(self._indices.items())}

    def _new_id(self) -> str:
        raw = self._id_prefix + next(self._ids).to_bytes(8, "big")
        return base64.urlsafe_b64encode(raw).decode()[:20]

    def _index_for(self, name: str | None, ts: int) -> Index:
        if name is None:
            day = (ts if ts != _NO_TS else self.now_ms()) // 86_400_000
            name = self._day_names.get(day)
            if name is None:
                name = self._day_names[day] = f"{self.index_prefix}{_EPOCH + timedelta(days=day):%Y.%m.%d}"
        ix = self._indices.get(name)
        if ix is None:
            _check_index_name(name)
            ix = self._indices[name] = Index(name, self.now_ms())
        return ix

    def _put(self, doc: dict, index: str | None, doc_id: str | None, memos: dict, *, op: str,
             size: int) -> tuple[Index, str, int, str]:
        if not isinstance(doc, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        raw_ts = doc.get(TIME_FIELD)
        if raw_ts is None:
            ts = _NO_TS
        elif isinstance(raw_ts, str):
            try:
                ts = iso_ms(raw_ts)
            except (ValueError, EsError):
                raise EsError(400, "document_parsing_exception",
                              f"[1:1] failed to parse field [{TIME_FIELD}] of type [date] in document with id "
                              f"'{doc_id}'. Preview of field's value: '{raw_ts}'") from None
        elif isinstance(raw_ts, (int, float)) and not isinstance(raw_ts, bool):
            ts = int(raw_ts)
        else:
            raise EsError(400, "document_parsing_exception",
                          f"[1:1] failed to parse field [{TIME_FIELD}] of type [date]")
        ix = self._index_for(index, ts)
        memo = memos.setdefault(ix.name, {})
        problem = ix.learn_mapping(doc, memo)
        if problem:
            raise EsError(400, "document_parsing_exception", f"[1:1] {problem}")
        existed = doc_id is not None and doc_id in ix.by_id
        if existed and op == "create":
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current version [1])",
                          index=ix.name, shard="0", index_uuid=ix.uuid)
        doc_id = doc_id or self._new_id()
        version = 1
        if existed:
            old_seq = ix.by_id[doc_id]
            version = 1 + next((v for s, v in zip(ix.seqs, ix.versions, strict=True) if s == old_seq),
                               next((row[4] for row in ix._pending if row[1] == old_seq), 1))
        seq = next(self._seq)
        ix.put(doc_id, doc, ts, seq, size, version)
        return ix, doc_id, seq, "updated" if existed else "created"

    # ---- reading ----

    def _resolve(self, expr: str | None, params: dict) -> list[Index]:
        ignore_unavailable = _bool_param(params.get("ignore_unavailable"), False)
        allow_no = _bool_param(params.get("allow_no_indices"), True)
        expand = str(params.get("expand_wildcards", "open"))
        names = sorted(self._indices)
        visible = names if "all" in expand or "hidden" in expand else [n for n in names if not n.startswith(".")]
        if expand == "none":
            visible = []
        if not expr or expr in ("_all", "*"):
            if not visible and not allow_no:
                raise _index_not_found(expr or "_all")
            return [self._indices[n] for n in visible]
        selected: list[str] = []
        wildcard_seen = False
        for part in (p.strip() for p in expr.split(",")):
            if not part:
                continue
            if part.startswith("-") and wildcard_seen:
                selected = [n for n in selected if not fnmatch.fnmatchcase(n, part[1:])]
                continue
            if "*" in part:
                wildcard_seen = True
                matches = [n for n in visible if fnmatch.fnmatchcase(n, part)]
                if not matches and not allow_no:
                    raise _index_not_found(part)
                selected.extend(n for n in matches if n not in selected)
            elif part in self._indices:
                if part not in selected:
                    selected.append(part)
            elif not ignore_unavailable:
                raise _index_not_found(part)
        if not selected and not allow_no:
            raise _index_not_found(expr)
        return [self._indices[n] for n in sorted(selected)]

    def search(self, target: str | None, body: dict | None, params: dict | None = None) -> dict:
        """``POST /<target>/_search`` in-process (the HTTP handler calls this too)."""
        started = time.perf_counter()
        body = dict(body or {})
        params = params or {}
        for key, value in body.items():
            if key in _SEARCH_UNSUPPORTED:
                raise _illegal(f"[{key}] is not supported by the sandbox log store")
            if key not in _SEARCH_BODY:
                what = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY" if isinstance(value, list) \
                    else "VALUE_STRING" if isinstance(value, str) else "VALUE_NUMBER"
                raise _parsing(f"Unknown key for a {what} in [{key}].")
        if "aggs" in body and "aggregations" in body:
            raise _parsing("Found two aggregation type definitions in [aggs] and [aggregations]")
        ctx = Ctx(self.now_ms())
        if body.get("query") is None and params.get("q") is not None:
            node = QueryStringParser(str(params["q"]), [params.get("df", "*")],
                                     str(params.get("default_operator", "or")).lower(), ctx).parse()
        else:
            node = compile_query(body.get("query"), ctx)
        post = compile_query(body["post_filter"], ctx) if body.get("post_filter") is not None else None
        aggs = compile_aggs(body.get("aggs", body.get("aggregations")), ctx)
        size = _int_param(body.get("size", params.get("size", 10)), "size")
        start = _int_param(body.get("from", params.get("from", 0)), "from")
        if size < 0:
            raise _illegal(f"[size] parameter cannot be negative, found [{size}]")
        if start < 0:
            raise _illegal(f"[from] parameter cannot be negative, found [{start}]")
        if start + size > MAX_RESULT_WINDOW:
            raise _illegal(f"Result window is too large, from + size must be less than or equal to: "
                           f"[{MAX_RESULT_WINDOW}] but was [{start + size}]. See the scroll api for a more "
                           "efficient way to request large data sets. This limit can be set by changing the "
                           "[index.max_result_window] index level setting.", phase=True)
        specs = parse_sort(body.get("sort", params.get("sort")))
        after = body.get("search_after")
        if after is not None:
            if not isinstance(after, list):
                raise _parsing("[search_after] must be an array")
            if start:
                raise _illegal("[from] parameter must be set to 0 when [search_after] is used")
            if not specs and not body.get("pit"):
                raise _illegal("Sort must contain at least one field when [search_after] is used")
        track = body.get("track_total_hits", params.get("track_total_hits", DEFAULT_TRACK_TOTAL))
        if isinstance(track, str):
            track = True if track == "true" else False if track == "false" else _int_param(track, "track_total_hits")
        include_src = params.get("_source_includes")
        exclude_src = params.get("_source_excludes")
        source_spec = body.get("_source", params.get("_source"))
        if include_src or exclude_src:
            source_spec = {"includes": include_src.split(",") if include_src else [],
                           "excludes": exclude_src.split(",") if exclude_src else []}
        pit = body.get("pit")
        with self._lock:
            max_seq = None
            if pit is not None:
                if target:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: [indices] cannot be used with point in time. Do not "
                                  "specify any index with point in time.;")
                indices, max_seq = self._pit(pit)
                if not any(s.field in ("_shard_doc", "_doc") for s in specs):
                    specs = specs + [SortSpec("_shard_doc", "asc")]
            else:
                indices = self._resolve(target, params)
            for ix in indices:
                ix.flush()
            _check_sorts(specs, indices)
            matched: Docs = []
            for ix in indices:
                within = range(len(ix))
                if max_seq is not None and ix.seqs and max(ix.seqs) > max_seq:
                    within = {p for p, s in enumerate(ix.seqs) if s <= max_seq}
                try:
                    found = node.eval(ix, within) if len(ix) else set()
                except EsError as e:
                    if e.phase and e.shard_index is None:
                        e.shard_index = ix.name
                    raise
                matched.append((ix, _sorted_positions(found)))
            aggregations = None
            if aggs:
                aggregations = run_aggs(aggs, matched, AggCtx(ctx, _bool_param(params.get("typed_keys"), False)))
            hit_docs = matched
            if body.get("min_score") is not None and float(body["min_score"]) > 1.0:  # every hit scores 1.0
                hit_docs = [(ix, []) for ix, _ in matched]
            if post is not None:
                hit_docs = [(ix, _sorted_positions(post.eval(ix, ps if isinstance(ps, range) else set(ps))))
                            for ix, ps in matched]
            formatter = HitFormatter(specs, source_spec, body.get("fields"),
                                     _bool_param(body.get("version", params.get("version")), False),
                                     _bool_param(body.get("seq_no_primary_term",
                                                          params.get("seq_no_primary_term")), False))
            rows = select_hits(hit_docs, specs, start, size, after)
            hits = [formatter(ix, pos, values) for ix, pos, values in rows]
            total = sum(len(ps) for _, ps in hit_docs)
        hits_obj: dict = {}
        if track is not False:
            limit = None if track is True else int(track)
            if limit is not None and total > limit:
                hits_obj["total"] = {"value": limit, "relation": "gte"}
            else:
                hits_obj["total"] = {"value": total, "relation": "eq"}
            if _bool_param(params.get("rest_total_hits_as_int"), False):
                hits_obj["total"] = hits_obj["total"]["value"]
        hits_obj["max_score"] = None if specs or not hits else 1.0
        hits_obj["hits"] = hits
        out = {"took": int((time.perf_counter() - started) * 1000), "timed_out": False,
               "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}, "hits": hits_obj}
        if pit is not None:
            out = {"pit_id": pit["id"], **out}
        if aggregations is not None:
            out["aggregations"] = aggregations
        return out

    def count(self, target: str | None, body: dict | None, params: dict | None = None) -> dict:
        body, params = body or {}, params or {}
        for key in body:
            if key != "query":
                raise _parsing(f"request does not support [{key}]")
        ctx = Ctx(self.now_ms())
        if body.get("query") is None and params.get("q") is not None:
            node = QueryStringParser(str(params["q"]), [params.get("df", "*")],
                                     str(params.get("default_operator", "or")).lower(), ctx).parse()
        else:
            node = compile_query(body.get("query"), ctx)
        with self._lock:
            indices = self._resolve(target, params)
            n = 0
            for ix in indices:
                ix.flush()
                if len(ix):
                    n += len(node.eval(ix, range(len(ix))))
        return {"count": n, "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}}

    # ---- point in time ----

    def open_pit(self, target: str, params: dict) -> dict:
        if "keep_alive" not in params:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: [keep_alive] is not specified;")
        keep = _duration_ms(params["keep_alive"])
        with self._lock:
            indices = self._resolve(target, params)
            pit_id = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
            max_seq = max((max(ix.seqs, default=-1) for ix in indices), default=-1)
            for ix in indices:
                ix.flush()
                max_seq = max(max_seq, max(ix.seqs, default=-1))
            self._pits[pit_id] = {"indices": indices, "max_seq": max_seq, "expires": time.monotonic() + keep / 1000}
            self._expire_pits()
        return {"id": pit_id, "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}}

    def _pit(self, pit) -> tuple[list[Index], int]:
        if not isinstance(pit, dict) or "id" not in pit:
            raise _parsing("[pit] requires an [id]")
        self._expire_pits()
        entry = self._pits.get(pit["id"])
        if entry is None:
            raise EsError(404, "search_context_missing_exception", f"No search context found for id [{pit['id']}]")
        if pit.get("keep_alive"):
            entry["expires"] = time.monotonic() + _duration_ms(pit["keep_alive"]) / 1000
        return entry["indices"], entry["max_seq"]

    def close_pit(self, body: dict) -> tuple[int, dict]:
        pit_id = (body or {}).get("id")
        if not pit_id:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no point in time id;")
        with self._lock:
            found = self._pits.pop(pit_id, None) is not None
        return (200 if found else 404), {"succeeded": True, "num_freed": 1 if found else 0}

    def _expire_pits(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._pits.items() if v["expires"] < now]:
            del self._pits[key]

    # ---- bulk and documents ----

    def bulk(self, data: bytes, default_index: str | None, params: dict) -> dict:
        started = time.perf_counter()
        lines = data.split(b"\n")
        items, errors = [], False
        memos: dict[str, dict] = {}
        i = 0
        with self._lock:
            while i < len(lines):
                raw = lines[i].strip()
                i += 1
                if not raw:
                    continue
                try:
                    action = json.loads(raw)
                except ValueError as e:
                    raise EsError(400, "x_content_parse_exception", f"[{i}:1] Malformed action/metadata line "
                                  f"[{i}]: {e}") from None
                if not isinstance(action, dict) or len(action) != 1:
                    raise EsError(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{i}], expected START_OBJECT or END_OBJECT "
                                  "but found [VALUE]")
                op, meta = next(iter(action.items()))
                if op not in ("index", "create", "delete", "update"):
                    raise _illegal(f"Malformed action/metadata line [{i}], expected field [create], [delete], "
                                   f"[index] or [update] but found [{op}]")
                meta = meta or {}
                name = meta.get("_index", default_index)
                doc_id = meta.get("_id")
                doc_id = None if doc_id is None else str(doc_id)
                if op in ("index", "create", "update"):
                    if i >= len(lines) or not lines[i].strip():
                        raise _illegal("The bulk request must be terminated by a newline [\\n]" if i >= len(lines)
                                       else f"Malformed action/metadata line [{i + 1}], expected a source")
                    source_raw = lines[i]
                    i += 1
                if name is None:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index is missing;")
                result = {"_index": name, "_id": doc_id}
                try:
                    if op == "update":
                        raise _illegal("the sandbox log store does not support [update] in _bulk; use index")
                    if op == "delete":
                        ix = self._indices.get(name)
                        if ix is None or doc_id is None or not ix.delete(doc_id):
                            result.update(_version=1, result="not_found", status=404, _shards=_write_shards())
                        else:
                            result.update(_version=1, result="deleted", status=200, _shards=_write_shards())
                        items.append({op: result})
                        continue
                    try:
                        source = json.loads(source_raw)
                    except ValueError as e:
                        raise EsError(400, "document_parsing_exception", f"[1:1] failed to parse: {e}") from None
                    _check_index_name(name)
                    ix, doc_id, seq, outcome = self._put(source, name, doc_id, memos, op=op, size=len(source_raw))
                    version = 1 if outcome == "created" else 2
                    result.update(_id=doc_id, _version=version, result=outcome, _shards=_write_shards(),
                                  _seq_no=seq, _primary_term=1, status=201 if outcome == "created" else 200)
                except EsError as e:
                    errors = True
                    result.update(status=e.status, error={"type": e.type, "reason": e.reason, **e.extra})
                items.append({op: result})
        return {"errors": errors, "took": int((time.perf_counter() - started) * 1000), "items": items}

    def index_doc(self, name: str, doc_id: str | None, source, op: str) -> tuple[int, dict]:
        _check_index_name(name)
        with self._lock:
            ix, doc_id, seq, outcome = self._put(source, name, doc_id, {}, op=op, size=len(json.dumps(source)))
        return (201 if outcome == "created" else 200), {
            "_index": ix.name, "_id": doc_id, "_version": 1 if outcome == "created" else 2, "result": outcome,
            "_shards": _write_shards(), "_seq_no": seq, "_primary_term": 1}

    def get_doc(self, name: str, doc_id: str) -> tuple[int, dict]:
        with self._lock:
            ix = self._indices.get(name)
            if ix is None:
                raise _index_not_found(name)
            ix.flush()
            seq = ix.by_id.get(doc_id)
            if seq is None:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            pos = ix.seqs.index(seq)
            return 200, {"_index": name, "_id": doc_id, "_version": ix.versions[pos], "_seq_no": seq,
                         "_primary_term": 1, "found": True, "_source": ix.sources[pos]}

    def delete_doc(self, name: str, doc_id: str) -> tuple[int, dict]:
        with self._lock:
            ix = self._indices.get(name)
            if ix is None:
                raise _index_not_found(name)
            found = ix.delete(doc_id)
        return (200 if found else 404), {"_index": name, "_id": doc_id, "_version": 1,
                                         "result": "deleted" if found else "not_found", "_shards": _write_shards()}

    # ---- indices ----

    def create_index(self, name: str, body: dict | None) -> dict:
        _check_index_name(name)
        body = body or {}
        with self._lock:
            if name in self._indices:
                raise EsError(400, "resource_already_exists_exception", f"index [{name}/{self._indices[name].uuid}] "
                              "already exists", index=name, index_uuid=self._indices[name].uuid)
            ix = Index(name, self.now_ms())
            props = (body.get("mappings") or {}).get("properties") or {}
            _apply_mapping(ix, props, "")
            self._indices[name] = ix
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete_index(self, expr: str, params: dict) -> dict:
        if "*" in expr or expr == "_all":  # action.destructive_requires_name defaults to true
            raise _illegal("Wildcard expressions or all indices are not allowed")
        with self._lock:
            for ix in self._resolve(expr, params):
                del self._indices[ix.name]
        return {"acknowledged": True}

    def mapping(self, expr: str | None, params: dict) -> dict:
        with self._lock:
            return {ix.name: {"mappings": _mapping_json(ix)} for ix in self._resolve(expr, params)}

    def field_caps(self, expr: str | None, fields: list[str], params: dict) -> dict:
        with self._lock:
            indices = self._resolve(expr, params)
            caps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
            for ix in indices:
                names = dict(ix.mapping)
                for path, kind in ix.mapping.items():
                    if kind == "text" and path not in ix.no_keyword:
                        names[path + ".keyword"] = "keyword"
                for name, kind in names.items():
                    if any(fnmatch.fnmatchcase(name, f) for f in fields):
                        caps[name][kind].append(ix.name)
            out: dict = {}
            for name, kinds in sorted(caps.items()):
                out[name] = {}
                for kind, where in kinds.items():
                    entry = {"type": kind, "metadata_field": False, "searchable": True,
                             "aggregatable": kind != "text"}
                    if len(kinds) > 1:
                        entry["indices"] = where
                    out[name][kind] = entry
            return {"indices": [ix.name for ix in indices], "fields": out}

    def cat_indices(self, expr: str | None, params: dict) -> list[dict]:
        with self._lock:
            rows = []
            for ix in self._resolve(expr, {**params, "expand_wildcards": params.get("expand_wildcards", "all")}):
                size = _human_bytes(ix.size_bytes, params.get("bytes"))
                rows.append({"health": "green", "status": "open", "index": ix.name, "uuid": ix.uuid, "pri": "1",
                             "rep": "0", "docs.count": str(len(ix.by_id)), "docs.deleted": str(ix.deleted),
                             "store.size": size, "pri.store.size": size, "dataset.size": size})
        return rows

    def info(self) -> dict:
        return {
            "name": NODE_ID, "cluster_name": self.cluster_name, "cluster_uuid": self.cluster_uuid,
            "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "0000000000000000000000000000000000000000",
                        "build_date": "2025-07-22T00:00:00.000000000Z", "build_snapshot": False,
                        "lucene_version": LUCENE_VERSION, "minimum_wire_compatibility_version": "8.19.0",
                        "minimum_index_compatibility_version": "8.0.0"},
            "tagline": "You Know, for Search",
        }

    def health(self) -> dict:
        n = len(self._indices)
        return {"cluster_name": self.cluster_name, "status": "green", "timed_out": False, "number_of_nodes": 1,
                "number_of_data_nodes": 1, "active_primary_shards": n, "active_shards": n,
                "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 0,
                "unassigned_primary_shards": 0, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
                "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0}


def _write_shards() -> dict:
    return {"total": 1, "successful": 1, "failed": 0}


def _human_bytes(n: int, unit: str | None) -> str:
    if unit:
        factor = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}.get(unit)
        if factor is None:
            raise _illegal(f"failed to parse [bytes] with value [{unit}]; use b, kb, mb or gb")
        return str(n // factor)
    for suffix, factor in (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return f"{n}b"


_EXPLICIT_TYPES = {"keyword", "text", "date", "long", "integer", "short", "byte", "double", "float",
                   "half_float", "scaled_float", "boolean", "match_only_text", "wildcard", "constant_keyword"}


def _apply_mapping(ix: Index, props: dict, prefix: str) -> None:
    for name, spec in props.items():
        path = prefix + name
        if not isinstance(spec, dict):
            raise EsError(400, "mapper_parsing_exception", f"Expected map for property [{path}]")
        kind = spec.get("type", "object" if "properties" in spec else None)
        if kind in ("object", "nested", "flattened"):
            ix._objects.add(path)
            _apply_mapping(ix, spec.get("properties") or {}, path + ".")
            continue
        if kind not in _EXPLICIT_TYPES:
            raise EsError(400, "mapper_parsing_exception",
                          f"No handler for type [{kind}] declared on field [{path}]")
        kind = {"match_only_text": "text", "wildcard": "keyword", "constant_keyword": "keyword",
                "integer": "long", "short": "long", "byte": "long"}.get(kind, kind)
        ix.mapping[path] = kind
        if kind == "text" and "keyword" not in (spec.get("fields") or {}):
            ix.no_keyword.add(path)


def _mapping_json(ix: Index) -> dict:
    root: dict = {}
    for path, kind in sorted(ix.mapping.items()):
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}).setdefault("properties", {})
        spec: dict = {"type": kind}
        if kind == "text" and path not in ix.no_keyword:
            spec["fields"] = {"keyword": {"type": "keyword", "ignore_above": IGNORE_ABOVE}}
        node[parts[-1]] = spec
    return {"properties": root}


def filter_path(obj, patterns: list[str]):
    """Elasticsearch's ``filter_path``: dotted patterns with ``*`` (within one key) and ``**`` (any
    depth); patterns starting with ``-`` exclude."""
    includes = [p.split(".") for p in patterns if p and not p.startswith("-")]
    excludes = [p[1:].split(".") for p in patterns if p.startswith("-")]

    def walk(value, path: list[str], selected: bool):
        if isinstance(value, list):
            kept = [walk(item, path, selected) for item in value]
            kept = [k for k in kept if k is not _MISSING]
            return kept if kept or selected else _MISSING
        if not isinstance(value, dict):
            return value if selected else _MISSING
        out = {}
        for key, item in value.items():
            sub = path + [key]
            if any(_full_match(e, sub) for e in excludes):
                continue
            if selected or any(_full_match(i, sub) for i in includes):
                out[key] = walk(item, sub, True) if excludes else item
            elif any(_partial_match(i, sub) for i in includes):
                kept = walk(item, sub, False)
                if kept is not _MISSING and kept != {}:
                    out[key] = kept
        return out

    return walk(obj, [], not includes)


def _full_match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return _full_match(pattern[1:], path) or (bool(path) and _full_match(pattern, path[1:]))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _full_match(pattern[1:], path[1:])


def _partial_match(pattern: list[str], path: list[str]) -> bool:
    if not path:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    return fnmatch.fnmatchcase(path[0], pattern[0]) and _partial_match(pattern[1:], path[1:])


# -- HTTP -------------------------------------------------------------------------------------

_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")
_NAME = r"(?P<index>[^/_][^/]*)"
_TARGET = r"(?P<index>[^/]+)"
_ROUTES: list[tuple[set[str], re.Pattern, str]] = [(set(m.split("|")), re.compile(p), h) for m, p, h in (
    ("GET|HEAD", r"^/$", "info"),
    ("POST|PUT", r"^/_bulk$", "bulk"),
    ("POST|PUT", rf"^/{_NAME}/_bulk$", "bulk"),
    ("GET|POST", r"^/_search$", "search"),
    ("GET|POST", rf"^/{_TARGET}/_search$", "search"),
    ("GET|POST", r"^/_count$", "count"),
    ("GET|POST", rf"^/{_TARGET}/_count$", "count"),
    ("POST", rf"^/{_TARGET}/_pit$", "open_pit"),
    ("DELETE", r"^/_pit$", "close_pit"),
    ("GET", r"^/_cat/indices(?:/(?P<index>[^/]+))?$", "cat_indices"),
    ("GET", r"^/_cluster/health(?:/(?P<index>[^/]+))?$", "health"),
    ("GET", r"^/_mapping$", "mapping"),
    ("GET", rf"^/{_TARGET}/_mapping$", "mapping"),
    ("GET|POST", r"^/_field_caps$", "field_caps"),
    ("GET|POST", rf"^/{_TARGET}/_field_caps$", "field_caps"),
    ("GET|POST", r"^/_refresh$", "refresh"),
    ("GET|POST", rf"^/{_TARGET}/_refresh$", "refresh"),
    ("POST", rf"^/{_NAME}/_doc$", "index_doc"),
    ("POST|PUT", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "index_doc"),
    ("POST|PUT", rf"^/{_NAME}/_create/(?P<id>[^/]+)$", "create_doc"),
    ("GET|HEAD", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "get_doc"),
    ("DELETE", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "delete_doc"),
    ("PUT", rf"^/{_NAME}$", "create_index"),
    ("DELETE", rf"^/{_TARGET}$", "delete_index"),
    ("HEAD", rf"^/{_TARGET}$", "index_exists"),
    ("GET", rf"^/{_TARGET}$", "get_index"),
)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server_version = "sandbox-logstore"
    store: LogStore

    def log_message(self, fmt: str, *args) -> None:  # requests go to the debug log, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_HEAD(self):
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        compat = None
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip" and raw:
                raw = gzip.decompress(raw)
            compat = self._compat()
            status, body, content_type = self.store_dispatch(method, raw)
        except EsError as e:
            status, body, content_type = e.status, e.body(), None
        except Exception as e:  # a bug here must still answer like a server, and be visible
            log.exception("log store failed on %s %s", method, self.path)
            err = EsError(500, "exception", f"sandbox log store error: {type(e).__name__}: {e}")
            status, body, content_type = 500, err.body(), None
        self._respond(method, status, body, content_type, compat)

    def _compat(self) -> int | None:
        versions = set()
        for header in ("Accept", "Content-Type"):
            value = self.headers.get(header) or ""
            m = _COMPAT.search(value)
            if m:
                versions.add(int(m.group(1)))
        if not versions:
            return None
        bad = sorted(v for v in versions if v not in (8, 9))
        if bad:
            raise EsError(400, "media_type_header_exception", "Invalid media-type value on headers [Accept, "
                          "Content-Type]", caused_by={"type": "status_exception", "reason":
                          f"Accept version must be either version 8 or 9, but found {bad[0]}. "
                          f"Accept={self.headers.get('Accept')}"})
        return max(versions)

    def store_dispatch(self, method: str, raw: bytes):
        parts = urlsplit(self.path)
        path = parts.path if len(parts.path) == 1 else parts.path.rstrip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        known_path = False
        for methods, pattern, handler in _ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            known_path = True
            if method not in methods:
                continue
            groups = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return getattr(self, "h_" + handler)(params, raw, **groups)
        if known_path:
            allowed = sorted({x for methods, pattern, _ in _ROUTES if pattern.match(path) for x in methods})
            raise EsError(405, "method_not_allowed",
                          f"Incorrect HTTP method for uri [{self.path}] and method [{method}], allowed: {allowed}")
        raise _illegal(f"no handler found for uri [{self.path}] and method [{method}]")

    def _json(self, raw: bytes):
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise EsError(400, "x_content_parse_exception", f"[1:1] Failed to parse object: {e}",
                          caused_by={"type": "json_parse_exception", "reason": str(e)}) from None

    def _respond(self, method, status, body, content_type, compat):
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            content_type = content_type or "text/plain; charset=UTF-8"
        else:
            if params.get("filter_path") and isinstance(body, dict) and status < 300:
                body = filter_path(body, params["filter_path"].split(","))
            indent = 2 if "pretty" in params and _bool_param(params["pretty"], False) else None
            data = json.dumps(body, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"),
                              default=str).encode()
            if compat is not None:
                content_type = f"application/vnd.elasticsearch+json;compatible-with={compat}"
            else:
                content_type = content_type or "application/json"
        self.send_response(status)
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if method == "HEAD" else str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    # ---- handlers ----

    def _check_params(self, params: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(params) - allowed - _COMMON_PARAMS)
        if unknown:
            raise _illegal(f"request [{where}] contains unrecognized parameter: [{unknown[0]}]")

    def h_info(self, params, raw):
        return 200, self.store.info(), None

    def h_health(self, params, raw, index=None):
        return 200, self.store.health(), None

    def h_bulk(self, params, raw, index=None):
        self._check_params(params, {"refresh", "timeout", "wait_for_active_shards", "routing", "pipeline",
                                    "require_alias", "_source", "_source_includes", "_source_excludes",
                                    "list_executed_pipelines", "require_data_stream"}, "/_bulk")
        if not raw.strip():
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        return 200, self.store.bulk(raw, index, params), None

    def h_search(self, params, raw, index=None):
        if "scroll" in params:
            raise _illegal("[scroll] is not supported by the sandbox log store: page with search_after "
                           "(and a point in time) instead")
        self._check_params(params, _SEARCH_PARAMS, "/_search")
        body = self._json(raw)
        if body is not None and not isinstance(body, dict):
            raise _parsing("request body must be an object")
        return 200, self.store.search(index, body, params), None

    def h_count(self, params, raw, index=None):
        self._check_params(params, {"q", "df", "default_operator", "analyze_wildcard", "lenient",
                                    "ignore_unavailable", "allow_no_indices", "expand_wildcards", "routing",
                                    "preference", "min_score", "terminate_after", "ignore_throttled"}, "/_count")
        body = self._json(raw)
        return 200, self.store.count(index, body, params), None

    def h_open_pit(self, params, raw, index):
        return 200, self.store.open_pit(index, params), None

    def h_close_pit(self, params, raw):
        status, body = self.store.close_pit(self._json(raw) or {})
        return status, body, None

    def h_cat_indices(self, params, raw, index=None):
        rows = self.store.cat_indices(index, params)
        columns = ["health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted",
                   "store.size", "pri.store.size", "dataset.size"]
        aliases = {"h": "health", "s": "status", "i": "index", "idx": "index", "id": "uuid", "p": "pri",
                   "r": "rep", "dc": "docs.count", "docsCount": "docs.count", "dd": "docs.deleted",
                   "ss": "store.size", "storeSize": "store.size"}
        if params.get("h"):
            columns = [aliases.get(c.strip(), c.strip()) for c in params["h"].split(",")]
            for column in columns:
                if rows and column not in rows[0]:
                    raise _illegal(f"header [{column}] is not supported; use one of {', '.join(rows[0])}")
        if params.get("s"):
            for spec in reversed(params["s"].split(",")):
                column, _, order = spec.partition(":")
                column = aliases.get(column, column)
                numeric = column in ("docs.count", "docs.deleted", "pri", "rep")
                rows.sort(key=lambda r, c=column, num=numeric: int(r.get(c, 0)) if num else r.get(c, ""),
                          reverse=order == "desc")
        fmt = params.get("format")
        if fmt == "json":
            return 200, [{c: r.get(c) for c in columns} for r in rows], None
        if fmt not in (None, "", "txt", "text"):
            raise _illegal(f"Unsupported format [{fmt}]; use json or leave it out for text")
        table = [[r.get(c, "") for c in columns] for r in rows]
        if "v" in params and _bool_param(params["v"], False):
            table.insert(0, columns)
        if not table:
            return 200, "", "text/plain; charset=UTF-8"
        widths = [max(len(str(row[i])) for row in table) for i in range(len(columns))]
        numeric = {i for i, c in enumerate(columns) if c in ("pri", "rep", "docs.count", "docs.deleted")}
        lines = [" ".join(str(v).rjust(widths[i]) if i in numeric else str(v).ljust(widths[i])
                          for i, v in enumerate(row)).rstrip() for row in table]
        return 200, "\n".join(lines) + "\n", "text/plain; charset=UTF-8"

    def h_mapping(self, params, raw, index=None):
        return 200, self.store.mapping(index, params), None

    def h_field_caps(self, params, raw, index=None):
        body = self._json(raw) or {}
        fields = params.get("fields") or body.get("fields")
        if not fields:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: specified fields can't be null or empty;")
        fields = fields.split(",") if isinstance(fields, str) else list(fields)
        return 200, self.store.field_caps(index, fields, params), None

    def h_refresh(self, params, raw, index=None):
        with self.store._lock:
            indices = self.store._resolve(index, params)
            for ix in indices:
                ix.flush()
        return 200, {"_shards": {"total": len(indices), "successful": len(indices), "failed": 0}}, None

    def h_index_doc(self, params, raw, index, id=None):
        body = self._json(raw)
        if not isinstance(body, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        op = "create" if params.get("op_type") == "create" else "index"
        status, out = self.store.index_doc(index, id, body, op)
        return status, out, None

    def h_create_doc(self, params, raw, index, id):
        body = self._json(raw)
        if not isinstance(body, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        status, out = self.store.index_doc(index, id, body, "create")
        return status, out, None

    def h_get_doc(self, params, raw, index, id):
        status, out = self.store.get_doc(index, id)
        return status, out, None

    def h_delete_doc(self, params, raw, index, id):
        status, out = self.store.delete_doc(index, id)
        return status, out, None

    def h_create_index(self, params, raw, index):
        return 200, self.store.create_index(index, self._json(raw)), None

    def h_delete_index(self, params, raw, index):
        return 200, self.store.delete_index(index, params), None

    def h_index_exists(self, params, raw, index):
        try:
            with self.store._lock:
                found = self.store._resolve(index, {**params, "allow_no_indices": "false"})
        except EsError:
            found = []
        return (200 if found else 404), {}, None

    def h_get_index(self, params, raw, index):
        with self.store._lock:
            indices = self.store._resolve(index, params)
            return 200, {ix.name: {"aliases": {}, "mappings": _mapping_json(ix), "settings": {"index": {
                "number_of_shards": "1", "number_of_replicas": "0", "uuid": ix.uuid,
                "creation_date": str(ix.created_ms), "provided_name": ix.name}}} for ix in indices}, None


def main(argv: list[str] | None = None) -> None:
    """``python -m runbooks_sandbox.logstore [--port N]``: an empty store, for trying the API."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    store = LogStore()
    print(store.start(args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        store.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
