"""Warning events, grouped by reason and object: symptoms, reported as info."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import pandas as pd

from .. import kube
from ..model import Finding
from .core import Check, frame


def check_events(events: Iterable[dict], *, top: int = 20) -> Check:
    """Warning events grouped by reason and object (one info finding per reason)."""
    rows = [e for e in events if e.get("type") == "Warning"]
    if not rows:
        return Check(frame([], ["namespace", "reason", "object", "count", "last_seen", "message"]), [])
    df = pd.DataFrame(rows)
    grouped = (df.groupby(["namespace", "reason", "object"], as_index=False)
               .agg(count=("count", "sum"), last_seen=("last_seen", "max"), message=("message", "last"))
               .sort_values(["count", "last_seen"], ascending=False))
    findings = []
    for reason, g in grouped.groupby("reason"):
        objects = g["object"].nunique()
        findings.append(Finding(id=f"warning-events/{reason}", severity="info",
                                title=f"{int(g['count'].sum())} Warning events '{reason}' on {objects} object(s)",
                                detail=str(g.iloc[0]["message"])[:300],
                                evidence={"objects": sorted(g["object"].unique().tolist())[:10]}))
    return Check(grouped.head(top).reset_index(drop=True), findings)


def warning_events(cluster: kube.Cluster, namespaces: list[str] | None, hours: int) -> list[dict]:
    """Warning events of the last `hours` in the given namespaces (all when empty)."""
    out: list[dict] = []
    for ns in namespaces or [None]:
        out.extend(kube.events(cluster, ns, since=timedelta(hours=hours), warnings_only=True))
    return out
