"""What every cluster-health check shares: the `Check` result, its table builder, and the guard
that turns a list the cluster does not serve (404) or let us read (403) into a note.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from kubernetes.utils.quantity import parse_quantity

from .. import kube
from ..errors import Forbidden, NotFound, RunbookError
from ..model import Finding


@dataclass
class Check:
    """The outcome of one check: a table for people and findings for summary.json."""

    table: pd.DataFrame
    findings: list[Finding]
    note: str = ""

    def caption(self, title: str) -> str:
        """The table's caption: `title`, and the note when the check could not look (not served ...)."""
        return f"{title} ({self.note})" if self.note else title


def frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """A check's table: `rows` under `columns`, with the columns even when there is no row."""
    return pd.DataFrame(rows, columns=columns)


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``100m``, ``128Mi``, ``1.5``) as a float; 0 when absent or invalid."""
    if value in (None, ""):
        return 0.0
    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError):
        return 0.0


def slug(text: str) -> str:
    """`text` as a finding id part: lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---- checks that list for themselves: a resource the cluster does not serve is a note ------------


def not_served(title: str, columns: list[str], error: RunbookError) -> Check:
    """The empty check for a list that is not served (a note) or not readable (a note and an info finding)."""
    if isinstance(error, NotFound):
        return Check(frame([], columns), [], note="not served by this cluster")
    return Check(frame([], columns), [Finding(
        id=f"check-not-readable/{slug(title)}", severity="info", title=f"{title}: cannot be listed",
        detail=f"{error} (give the runbook's account list access to check them)")],
        note="not readable with these credentials")


def guarded(title: str, columns: list[str]) -> Callable[[Callable[..., Check]], Callable[..., Check]]:
    """A check over a list the cluster may not serve (404) or let us read (403): never a crash.

    404 on the list (an API group this cluster does not have) gives an empty table with the
    note "not served by this cluster" and no finding; 403 gives an info finding, since a
    check that silently never runs would read as a healthy cluster.
    """
    def wrap(fn: Callable[..., Check]) -> Callable[..., Check]:
        @functools.wraps(fn)
        def call(*args: Any, **kw: Any) -> Check:
            try:
                return fn(*args, **kw)
            except (NotFound, Forbidden) as e:
                return not_served(title, columns, e)
        return call
    return wrap


def age_minutes(obj: dict, now: datetime) -> float:
    """Minutes since `obj` was created (0 without a creationTimestamp)."""
    created = kube.parse_time(obj["metadata"].get("creationTimestamp")) or now
    return (now - created).total_seconds() / 60
