"""``metrics.k8s.io/v1beta1``: NodeMetrics and PodMetrics as metrics-server serves them.

Why this module exists: ``kubectl top pods|nodes`` and HPAs read the resource
metrics API, and a runbook checking "what is using the memory" reads it too.
Values are the scenario's usage profile -- the same per-container CPU and
working set the generated cAdvisor series centre on (``promgen.usage_profile``)
-- so ``kubectl top`` and Prometheus tell one story. Only running pods have
metrics (metrics-server reports nothing for pending or finished ones); a node's
usage is its pods' plus a fixed system share. Quantities are written as
metrics-server writes them: CPU in nanocores (``"12345678n"``), memory in
kibibytes (``"123456Ki"``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .store import ApiError, rfc3339

if TYPE_CHECKING:
    from .server import ApiServer, Request, Route

API_VERSION = "metrics.k8s.io/v1beta1"
SYSTEM_CPU = 0.12  # cores a node's kubelet, runtime and system daemons use
SYSTEM_MEMORY = 640 * 2**20
JSON = "application/json"


def _cpu(cores: float) -> str:
    return f"{round(cores * 1e9)}n"


def _memory(size: float) -> str:
    return f"{round(size / 1024)}Ki"


def _workload(pod: dict, replicasets: dict[tuple[str, str], dict]) -> str:
    meta = pod["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None:
        return meta["name"]
    if owner.get("kind") == "ReplicaSet":
        rs = replicasets.get((meta["namespace"], owner.get("name", "")))
        rs_owner = next(iter(((rs or {}).get("metadata") or {}).get("ownerReferences") or []), None)
        return rs_owner["name"] if rs_owner else owner.get("name", "")
    return owner.get("name", "")


def pod_usage(pod: dict, workload: str) -> list[tuple[str, float, float]]:
    """(container, cores, bytes) of a running pod."""
    from .promgen import usage_profile

    meta = pod["metadata"]
    return [(c["name"], *usage_profile(meta["namespace"], workload, c["name"], c.get("resources")))
            for c in (pod.get("spec") or {}).get("containers") or []]


def _running(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")


def pod_metrics(api: ApiServer, namespace: str | None) -> list[dict]:
    registry, store = api.registry, api.store
    pods_rt, rs_rt = registry.by_kind_any_version("Pod", ""), registry.by_kind_any_version("ReplicaSet", "apps")
    assert pods_rt is not None and rs_rt is not None
    replicasets = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in store.items(rs_rt, namespace)}
    now = rfc3339(store.clock())
    out = []
    for pod in store.items(pods_rt, namespace):
        if not _running(pod):
            continue
        meta = pod["metadata"]
        out.append({
            "kind": "PodMetrics", "apiVersion": API_VERSION,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "creationTimestamp": now,
                         **({"labels": meta["labels"]} if meta.get("labels") else {})},
            "timestamp": now, "window": "15s",
            "containers": [{"name": n, "usage": {"cpu": _cpu(cpu), "memory": _memory(mem)}}
                           for n, cpu, mem in pod_usage(pod, _workload(pod, replicasets))],
        })
    return out


def node_metrics(api: ApiServer) -> list[dict]:
    registry, store = api.registry, api.store
    nodes_rt, pods_rt = registry.by_kind_any_version("Node", ""), registry.by_kind_any_version("Pod", "")
    rs_rt = registry.by_kind_any_version("ReplicaSet", "apps")
    assert nodes_rt is not None and pods_rt is not None and rs_rt is not None
    replicasets = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in store.items(rs_rt)}
    totals: dict[str, list[float]] = {}
    for pod in store.items(pods_rt):
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or not _running(pod):
            continue
        acc = totals.setdefault(node, [0.0, 0.0])
        for _, cpu, mem in pod_usage(pod, _workload(pod, replicasets)):
            acc[0] += cpu
            acc[1] += mem
    now = rfc3339(store.clock())
    out = []
    for node in store.items(nodes_rt):
        meta = node["metadata"]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        if not ready:
            continue  # metrics-server cannot scrape a NotReady kubelet
        cpu, mem = totals.get(meta["name"], [0.0, 0.0])
        out.append({
            "kind": "NodeMetrics", "apiVersion": API_VERSION,
            "metadata": {"name": meta["name"], "creationTimestamp": now,
                         **({"labels": meta["labels"]} if meta.get("labels") else {})},
            "timestamp": now, "window": "20s",
            "usage": {"cpu": _cpu(cpu + SYSTEM_CPU), "memory": _memory(mem + SYSTEM_MEMORY)},
        })
    return out


def respond(api: ApiServer, req: Request, r: Route):
    """GET (list or one) of nodes or pods metrics, with label and field selectors."""
    if req.method != "GET":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")
    if req.q_bool("watch"):
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                       "resource (watch)")
    items = node_metrics(api) if r.rt.kind == "NodeMetrics" else pod_metrics(api, r.namespace)
    match = api.matcher(req, r.rt)
    if match is not None:
        items = [i for i in items if match(i)]
    if r.name:
        found = next((i for i in items if i["metadata"]["name"] == r.name), None)
        if found is None:
            raise ApiError(404, "NotFound", f'{r.rt.plural}.metrics.k8s.io "{r.name}" not found',
                           {"name": r.name, "group": "metrics.k8s.io", "kind": r.rt.plural})
        items = [found]
    if req.wants_table:
        from . import tables

        return 200, tables.to_table(r.rt, items, now=datetime.now(UTC),
                                    include_object=req.q("includeObject") or "Metadata"), JSON
    if r.name:
        return 200, items[0], JSON
    return 200, {"kind": r.rt.list_kind, "apiVersion": API_VERSION, "metadata": {}, "items": items}, JSON
