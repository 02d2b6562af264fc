"""Durations as people and Prometheus write them ("30s", "5m", "1h30m", "7d"), in seconds.

A module of its own because parameter models (checked by the CLI before a
kernel starts) need it without importing the metrics stack.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from .errors import InvalidInput

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from a number, a timedelta or a Prometheus duration ("30s", "5m", "1h30m").

    `what` names the value in the error (e.g. "lookback", "silence duration").
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value  # the whole value: no surrounding space or trailing newline
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        if text and _DURATION.sub("", text) == "":
            return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    raise InvalidInput(f"{what} {value!r} is not a duration (use seconds, a timedelta or text like 30s, 5m, "
                       "1h30m, 2d)")


def positive_timedelta(value: Any, what: str = "duration") -> timedelta:
    """A duration that must be longer than zero (a window, an interval), as a timedelta."""
    seconds = parse_duration(value, what)
    if seconds <= 0:
        raise InvalidInput(f"{what} must be positive, got {value!r}")
    return timedelta(seconds=seconds)
