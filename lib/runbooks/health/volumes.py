"""Storage: PersistentVolumeClaims Pending or Lost, and volumes filling up (kubelet metrics
through Prometheus).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd

from .. import kube
from ..model import Finding
from .core import Check, age_minutes, frame, guarded

# ---- storage -------------------------------------------------------------------------------

PVC_COLUMNS = ["namespace", "claim", "phase", "storage_class", "requested", "reason", "message"]


def check_pvcs(claims: Iterable[dict], reasons: dict[tuple[str, str], dict] | None = None, *,
               pending_minutes: int = 10, now: datetime | None = None) -> Check:
    """PersistentVolumeClaims Pending (with the reason from their events) or Lost.

    Lost (its volume is gone) is critical: pods using it cannot start and the data may be
    lost. Pending longer than `pending_minutes` is a warning (the pods waiting on it stay
    Pending), except a claim waiting for its first consumer (``WaitForFirstConsumer``), which
    is normal. `reasons` maps (namespace, claim) to its latest event (reason, message).
    """
    now = now or datetime.now(UTC)
    reasons = reasons or {}
    rows, findings = [], []
    for c in claims:
        meta, spec, status = c["metadata"], c.get("spec") or {}, c.get("status") or {}
        ns, name, phase = meta.get("namespace") or "", meta["name"], status.get("phase", "")
        ev = reasons.get((ns, name)) or {}
        row = {"namespace": ns, "claim": name, "phase": phase, "storage_class": spec.get("storageClassName", ""),
               "requested": ((spec.get("resources") or {}).get("requests") or {}).get("storage", ""),
               "reason": ev.get("reason", ""), "message": ev.get("message", "")}
        resource = f"PersistentVolumeClaim/{ns}/{name}"
        if phase == "Lost":
            rows.append(row)
            findings.append(Finding(id=f"pvc-lost/{ns}/{name}", severity="critical",
                                    title=f"PersistentVolumeClaim {ns}/{name} is Lost",
                                    detail=f"Its volume {spec.get('volumeName', '')} no longer exists: pods "
                                           "using the claim cannot start.", resource=resource))
        elif phase == "Pending" and age_minutes(c, now) > pending_minutes \
                and ev.get("reason") != "WaitForFirstConsumer":
            rows.append(row)
            why = f"{ev['reason']}: {ev.get('message', '')}" if ev.get("reason") else "no event explains it"
            findings.append(Finding(
                id=f"pvc-pending/{ns}/{name}", severity="warning",
                title=f"PersistentVolumeClaim {ns}/{name} Pending for {int(age_minutes(c, now))} min",
                detail=f"{why[:300]}. Pods using it stay Pending.", resource=resource,
                evidence={"storage_class": row["storage_class"], "reason": ev.get("reason", "")}))
    return Check(frame(rows, PVC_COLUMNS), findings)


@guarded("PersistentVolumeClaims", PVC_COLUMNS)
def pvcs(cluster: kube.Cluster, namespaces: list[str] | None = None, *, pending_minutes: int = 10,
         max_events: int = 50) -> Check:
    """:func:`check_pvcs` over the cluster's claims; the events of (at most `max_events`) Pending ones."""
    bad: list[dict] = []
    for page in kube.pages(cluster, "persistentvolumeclaims", namespaces):
        bad.extend(c for c in page if (c.get("status") or {}).get("phase") in ("Pending", "Lost"))
    reasons = {}
    for c in bad[:max_events]:
        if (c.get("status") or {}).get("phase") != "Pending":
            continue
        ns, name = c["metadata"].get("namespace"), c["metadata"]["name"]
        evs = kube.events(cluster, ns, object_name=name, kind="PersistentVolumeClaim")
        if evs:
            reasons[(ns, name)] = evs[-1]
    return check_pvcs(bad, reasons, pending_minutes=pending_minutes)


# ---- volumes filling up (kubelet metrics through Prometheus) ---------------------------------

VOLUME_COLUMNS = ["namespace", "persistentvolumeclaim", "used_gib", "capacity_gib", "percent"]
VOLUME_QUERIES = {
    "used": "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes)",
    "capacity": "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes)",
}


def check_volumes(usage: pd.DataFrame, *, warning_percent: int = 85, critical_percent: int = 97) -> Check:
    """PersistentVolumeClaims whose volume is nearly full (kubelet_volume_stats_* per claim).

    `usage` has ``namespace``, ``persistentvolumeclaim``, ``used`` and ``capacity`` (bytes).
    At `critical_percent` writes are about to fail (databases stop, logs are lost): critical;
    at `warning_percent` a warning, as KubePersistentVolumeFillingUp does.
    """
    rows, findings = [], []
    gib = 2 ** 30
    for r in usage.to_dict("records"):
        if not r.get("capacity"):
            continue
        pct = round(100 * r["used"] / r["capacity"], 1)
        if pct < warning_percent:
            continue
        ns, name = r["namespace"], r["persistentvolumeclaim"]
        rows.append({"namespace": ns, "persistentvolumeclaim": name, "used_gib": round(r["used"] / gib, 2),
                     "capacity_gib": round(r["capacity"] / gib, 2), "percent": pct})
        findings.append(Finding(
            id=f"volume-filling-up/{ns}/{name}", severity="critical" if pct >= critical_percent else "warning",
            title=f"Volume of PersistentVolumeClaim {ns}/{name} is {pct:g}% full",
            detail=f"{r['used'] / gib:.1f} of {r['capacity'] / gib:.1f} GiB used; writes fail when it is full. "
                   "Expand the claim (allowVolumeExpansion) or free space.",
            resource=f"PersistentVolumeClaim/{ns}/{name}", evidence={"used_bytes": r["used"],
                                                                    "capacity_bytes": r["capacity"]}))
    rows.sort(key=lambda r: -r["percent"])
    return Check(frame(rows, VOLUME_COLUMNS), findings)


def volumes(prometheus_url: str | None, namespaces: list[str] | None = None, *, verify_tls: bool = True,
            warning_percent: int = 85, critical_percent: int = 97) -> Check:
    """:func:`check_volumes` from Prometheus; without a URL a note, with Prometheus down a warning.

    A Prometheus that cannot be reached empties this section and says so (``data-source-down/prometheus``,
    a warning): the rest of the report does not depend on it.
    """
    from .. import metrics
    from ..errors import SOURCE_ERRORS

    if not prometheus_url:
        return Check(frame([], VOLUME_COLUMNS), [], note="no Prometheus configured (prometheus_url)")
    try:
        prom = metrics.connect(prometheus_url, verify=verify_tls)
        frames = {k: metrics.query(prom, q) for k, q in VOLUME_QUERIES.items()}
    except SOURCE_ERRORS as e:
        return Check(frame([], VOLUME_COLUMNS), [Finding(
            id="data-source-down/prometheus", severity="warning", title="Prometheus cannot be reached: "
            "volume usage is not checked", detail=str(e), resource="prometheus")], note="Prometheus unreachable")
    keys = ["namespace", "persistentvolumeclaim"]
    parts = [f.reindex(columns=[*keys, "value"]).rename(columns={"value": k}) for k, f in frames.items()]
    usage = parts[0].merge(parts[1], on=keys, how="inner")
    if namespaces:
        usage = usage[usage.namespace.isin(namespaces)]
    return check_volumes(usage, warning_percent=warning_percent, critical_percent=critical_percent)
