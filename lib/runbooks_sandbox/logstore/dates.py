"""Dates as Elasticsearch reads them: ISO forms, epoch millis, date math, formats and time zones."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from .common import _EPOCH, EsError, _illegal

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


