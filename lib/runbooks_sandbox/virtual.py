"""Requests that are answered rather than stored: reviews, metrics, evictions, tokens, bindings.

Why this module exists: a real API server has resources with no storage of
their own -- the access reviews, ``metrics.k8s.io`` (served by metrics-server
through the aggregator), ``componentstatuses`` -- and POST-only subresources
that act on another object (``pods/eviction`` honouring PodDisruptionBudgets,
``pods/binding``, ``serviceaccounts/token``). The resource table marks them
(``ResourceType.handler``, :data:`SUBRESOURCES`) and this module answers
them, so server.py only routes and checks access.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .store import ApiError, rfc3339

if TYPE_CHECKING:
    from .server import ApiServer, Request, Route

SUBRESOURCES = ("eviction", "binding", "token", "approval", "finalize")
JSON = "application/json"


def _success(code: int = 201) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code}


def _post_only(req: Request) -> None:
    if req.method != "POST":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")


def handle(api: ApiServer, req: Request, r: Route):
    from . import auth

    if r.sub == "token":
        return auth.token_request(api, req, r)
    if r.sub == "eviction":
        return evict(api, req, r)
    if r.sub == "binding" or r.rt.plural == "bindings":
        return bind(api, req, r)
    if r.sub in ("approval", "finalize"):
        return approve_or_finalize(api, req, r)
    if r.rt.handler == "review":
        return auth.handle_review(api, req, r, req.user)
    if r.rt.handler == "metrics":
        from . import metrics

        return metrics.respond(api, req, r)
    if r.rt.handler == "componentstatus":
        return component_statuses(api, req, r)
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


# ---- certificatesigningrequests/approval, namespaces/finalize ------------------------------------


def approve_or_finalize(api: ApiServer, req: Request, r: Route):
    """Subresources that change one field: a CSR's Approved/Denied conditions, a Namespace's finalizers."""
    obj = api.store.get(r.rt, r.namespace, r.name or "")
    if req.method == "GET":
        return 200, obj, JSON
    if req.method != "PUT":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")
    body = req.json_body()
    new = copy.deepcopy(obj)
    rv = (body.get("metadata") or {}).get("resourceVersion")
    if rv:
        new["metadata"]["resourceVersion"] = rv
    if r.sub == "approval":
        conditions = [c for c in (body.get("status") or {}).get("conditions") or []
                      if c.get("type") in ("Approved", "Denied")]
        now = rfc3339(api.store.clock())
        for c in conditions:
            c.setdefault("lastUpdateTime", now)
            c.setdefault("lastTransitionTime", now)
        kept = [c for c in (new.get("status") or {}).get("conditions") or []
                if c.get("type") not in ("Approved", "Denied")]
        new.setdefault("status", {})["conditions"] = kept + conditions
        return 200, api.store.update(r.rt, new, subresource="status", dry_run=req.dry_run), JSON
    new.setdefault("spec", {})["finalizers"] = list((body.get("spec") or {}).get("finalizers") or [])
    return 200, api.store.update(r.rt, new, dry_run=req.dry_run), JSON


# ---- pods/binding ----------------------------------------------------------------------


def bind(api: ApiServer, req: Request, r: Route):
    """Binding: what the scheduler POSTs to place a pod on a node."""
    _post_only(req)
    body = req.json_body()
    name = r.name or (body.get("metadata") or {}).get("name", "")
    pods = api.registry.by_kind_any_version("Pod", "")
    assert pods is not None
    pod = api.store.get(pods, r.namespace, name)
    target = (body.get("target") or {}).get("name", "")
    if not target:
        raise ApiError(422, "Invalid", f'Binding "{name}" is invalid: target.name: Required value',
                       {"name": name, "kind": "Binding", "causes": [
                           {"reason": "FieldValueRequired", "field": "target.name", "message": "Required value"}]})
    if (pod.get("spec") or {}).get("nodeName"):
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                       f'already assigned to node "{pod["spec"]["nodeName"]}"')
    new = copy.deepcopy(pod)
    new["spec"]["nodeName"] = target
    if not req.dry_run:
        api.store.update(pods, new, check_rv=False)
    return 201, _success(), JSON


# ---- pods/eviction -----------------------------------------------------------------------


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        n = total * pct
        return -(-n // 100) if round_up else n // 100
    return int(value)


def pdb_status(pdb: dict, pods: list[dict], now: str) -> dict:
    """The disruption controller's view of a PDB over the pods it selects."""
    from .validate import selector_matches

    spec = pdb.get("spec") or {}
    selector = spec.get("selector")
    matching = [p for p in pods if selector is not None and selector_matches(selector, p["metadata"].get("labels") or {})
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                and not p["metadata"].get("deletionTimestamp")]
    healthy = sum(1 for p in matching if _ready(p))
    expected = len(matching)
    if spec.get("minAvailable") is not None:
        desired = _int_or_percent(spec["minAvailable"], expected, True)
    elif spec.get("maxUnavailable") is not None:
        desired = max(0, expected - _int_or_percent(spec["maxUnavailable"], expected, True))
    else:
        desired = expected
    allowed = max(0, healthy - desired)
    old = pdb.get("status") or {}
    ok = allowed > 0
    prev = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None)
    reason = "SufficientPods" if ok else "InsufficientPods"
    cond = {"type": "DisruptionAllowed", "status": "True" if ok else "False", "reason": reason, "message": "",
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "lastTransitionTime": prev["lastTransitionTime"] if prev and prev.get("status") == (
                "True" if ok else "False") else now}
    status = {"observedGeneration": pdb["metadata"].get("generation", 1), "disruptionsAllowed": allowed,
              "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
              "conditions": [cond]}
    if old.get("disruptedPods"):
        status["disruptedPods"] = old["disruptedPods"]
    return status


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def evict(api: ApiServer, req: Request, r: Route):
    """policy/v1 Eviction: delete the pod unless a PodDisruptionBudget forbids it (429)."""
    from .validate import selector_matches

    _post_only(req)
    body = req.json_body() if req.body else {}
    store, registry = api.store, api.registry
    pods_rt = registry.by_kind_any_version("Pod", "")
    pdb_rt = registry.by_kind_any_version("PodDisruptionBudget", "policy")
    assert pods_rt is not None and pdb_rt is not None
    name = r.name or ""
    if (body.get("metadata") or {}).get("name") not in (None, "", name):
        raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
    pod = store.get(pods_rt, r.namespace, name)
    options = body.get("deleteOptions") or {}
    dry_run = req.dry_run or options.get("dryRun") == ["All"]
    phase = (pod.get("status") or {}).get("phase")
    labels = pod["metadata"].get("labels") or {}
    pdbs = [p for p in store.items(pdb_rt, r.namespace)
            if (p.get("spec") or {}).get("selector") is not None
            and selector_matches(p["spec"]["selector"], labels)]
    if phase in ("Succeeded", "Failed", "Pending") or not pdbs:
        if not dry_run:
            api.after_delete(pods_rt, store.delete(pods_rt, r.namespace, name), "Background")
        return 201, _success(), JSON
    if len(pdbs) > 1:
        raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, which the eviction "
                       "subresource does not support.")
    pdb = pdbs[0]
    now = rfc3339(store.clock())
    status = pdb_status(pdb, store.items(pods_rt, r.namespace), now)
    if not _ready(pod) and (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        status["disruptionsAllowed"] = max(status["disruptionsAllowed"], 1)
    if status["disruptionsAllowed"] <= 0:
        raise ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                       {"causes": [{"reason": "DisruptionBudget", "message":
                                    f"The disruption budget {pdb['metadata']['name']} needs "
                                    f"{status['desiredHealthy']} healthy pods and has {status['currentHealthy']} "
                                    "currently"}]})
    if not dry_run:
        new = copy.deepcopy(pdb)
        status["disruptionsAllowed"] -= 1
        status["disruptedPods"] = {**(status.get("disruptedPods") or {}), name: now}
        new["status"] = status
        store.update(pdb_rt, new, subresource="status", check_rv=False)
        api.after_delete(pods_rt, store.delete(pods_rt, r.namespace, name), "Background")
    return 201, _success(), JSON


# ---- componentstatuses -------------------------------------------------------------------


def component_statuses(api: ApiServer, req: Request, r: Route):
    if req.method != "GET":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")
    req.warnings.append("v1 ComponentStatus is deprecated in v1.19+")
    items = []
    for name, message in (("controller-manager", "ok"), ("scheduler", "ok"),
                          ("etcd-0", '{"health":"true","reason":""}')):
        items.append({"kind": "ComponentStatus", "apiVersion": "v1",
                      "metadata": {"name": name, "creationTimestamp": None},
                      "conditions": [{"type": "Healthy", "status": "True", "message": message}]})
    if r.name:
        found = next((i for i in items if i["metadata"]["name"] == r.name), None)
        if found is None:
            raise ApiError(404, "NotFound", f'componentstatuses "{r.name}" not found',
                           {"name": r.name, "kind": "componentstatuses"})
        return _maybe_table(api, req, r, [found], single=True)
    return _maybe_table(api, req, r, items)


def _maybe_table(api: ApiServer, req: Request, r: Route, items: list[dict], single: bool = False):
    if req.wants_table:
        from . import tables

        return 200, tables.to_table(r.rt, items, now=datetime.now(UTC), include_object=req.q("includeObject")
                                    or "Metadata", resource_version=api.store.resource_version), JSON
    if single:
        return 200, items[0], JSON
    return 200, {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version, "metadata": {}, "items": items}, JSON
