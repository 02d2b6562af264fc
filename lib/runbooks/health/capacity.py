"""Capacity: nodes (readiness, pressure, cordons), requests over a node's allocatable, and
ResourceQuotas near their limit.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .. import kube
from ..model import Finding
from .core import Check, frame, guarded, quantity

NODE_COLUMNS = ["node", "ready", "pressure", "cordoned", "kubelet", "cpu_allocatable", "memory_allocatable"]


def check_nodes(nodes: Iterable[dict]) -> Check:
    rows, findings = [], []
    for n in nodes:
        name = n["metadata"]["name"]
        ready = kube.condition(n, "Ready").get("status") == "True"
        pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                    if kube.condition(n, t).get("status") == "True"]
        cordoned = bool((n.get("spec") or {}).get("unschedulable"))
        info = (n.get("status") or {}).get("nodeInfo") or {}
        alloc = (n.get("status") or {}).get("allocatable") or {}
        rows.append({"node": name, "ready": ready, "pressure": ", ".join(pressure), "cordoned": cordoned,
                     "kubelet": info.get("kubeletVersion", ""), "cpu_allocatable": quantity(alloc.get("cpu")),
                     "memory_allocatable": quantity(alloc.get("memory"))})
        if not ready:
            findings.append(Finding(id=f"node-not-ready/{name}", severity="critical",
                                    title=f"Node {name} is NotReady",
                                    detail=kube.condition(n, "Ready").get("message", ""), resource=f"Node/{name}"))
        if pressure:
            findings.append(Finding(id=f"node-pressure/{name}", severity="warning",
                                    title=f"Node {name} reports {', '.join(pressure)}",
                                    resource=f"Node/{name}", evidence={"conditions": pressure}))
        if cordoned:
            findings.append(Finding(id=f"node-cordoned/{name}", severity="warning",
                                    title=f"Node {name} is cordoned (SchedulingDisabled)",
                                    detail="No new pods land on it; uncordon when maintenance is over.",
                                    resource=f"Node/{name}"))
    return Check(frame(rows, NODE_COLUMNS), findings)


@guarded("Nodes", NODE_COLUMNS)
def nodes(cluster: kube.Cluster) -> Check:
    """:func:`check_nodes` over the cluster's Nodes (a namespace-scoped identity may not list them)."""
    return check_nodes(kube.objects(cluster, "nodes"))


# ---- capacity ------------------------------------------------------------------------------

QUOTA_COLUMNS = ["namespace", "quota", "resource", "used", "hard", "percent"]


def check_quotas(quotas: Iterable[dict], *, percent: int = 90) -> Check:
    """ResourceQuota resources used at `percent` or more: the next pod or object is refused.

    A warning: running pods are fine, but rollouts, scale-ups and new objects in the
    namespace fail with "exceeded quota" once it is full.
    """
    rows, findings = [], []
    for q in quotas:
        meta, status = q["metadata"], q.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        used = status.get("used") or {}
        for res, hard in sorted((status.get("hard") or {}).items()):
            h, u = quantity(hard), quantity(used.get(res, 0))
            if h <= 0:
                continue
            pct = round(100 * u / h, 1)
            if pct < percent:
                continue
            rows.append({"namespace": ns, "quota": name, "resource": res, "used": used.get(res, "0"),
                         "hard": hard, "percent": pct})
            findings.append(Finding(
                id=f"quota-near-limit/{ns}/{name}/{res}", severity="warning",
                title=f"ResourceQuota {ns}/{name}: {res} at {pct:g}% ({used.get(res, '0')} of {hard})",
                detail="New pods or objects that need more are refused (exceeded quota); rollouts and "
                       "scale-ups in the namespace fail.", resource=f"ResourceQuota/{ns}/{name}",
                evidence={"resource": res, "used": used.get(res, "0"), "hard": hard}))
    return Check(frame(rows, QUOTA_COLUMNS), findings)


@guarded("ResourceQuotas", QUOTA_COLUMNS)
def quotas(cluster: kube.Cluster, namespaces: list[str] | None = None, *, percent: int = 90) -> Check:
    """:func:`check_quotas` over the cluster's quotas, streamed."""
    return check_quotas(kube.objects(cluster, "resourcequotas", namespaces),
                        percent=percent)


CAPACITY_COLUMNS = ["node", "pods", "cpu_requested", "cpu_allocatable", "memory_requested_gib",
                    "memory_allocatable_gib"]


def check_node_capacity(nodes: pd.DataFrame, requests: dict[str, dict[str, float]]) -> Check:
    """Nodes whose running pods request more than the node's allocatable CPU or memory.

    The scheduler never places pods that way, so it means the node's allocatable shrank
    (kubelet reservations, a resized machine) or pods were bound by hand: a warning, since
    those pods are the first evicted under pressure. `nodes` is :func:`check_nodes`' table,
    `requests` :attr:`PodScan.node_requests`.
    """
    rows, findings = [], []
    for n in nodes.to_dict("records"):
        req = requests.get(n["node"]) or {"cpu": 0.0, "memory": 0.0, "pods": 0}
        over = [r for r, a in (("cpu", n.get("cpu_allocatable")), ("memory", n.get("memory_allocatable")))
                if a and req[r] > a]
        if not over:
            continue
        gib = 2 ** 30
        rows.append({"node": n["node"], "pods": req["pods"], "cpu_requested": round(req["cpu"], 2),
                     "cpu_allocatable": n["cpu_allocatable"],
                     "memory_requested_gib": round(req["memory"] / gib, 2),
                     "memory_allocatable_gib": round(n["memory_allocatable"] / gib, 2)})
        findings.append(Finding(
            id=f"node-overcommitted/{n['node']}", severity="warning",
            title=f"Node {n['node']}: pod requests exceed allocatable {' and '.join(over)}",
            detail="The scheduler never does this: the node's allocatable shrank or pods were bound by hand. "
                   "Its pods are evicted first when it runs short.", resource=f"Node/{n['node']}",
            evidence={r: {"requested": req[r], "allocatable": n.get(f"{r}_allocatable")} for r in over}))
    return Check(frame(rows, CAPACITY_COLUMNS), findings)
