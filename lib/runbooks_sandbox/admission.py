"""What happens to a write between decoding and storage: checks, defaults, validation.

The real API server defaults fields (so clients read back `strategy`,
`imagePullPolicy`, `clusterIP`...), validates against the type's schema and
answers 422 with field paths, folds Secret `stringData` into `data`, and
records managed fields. Keeping that here leaves server.py about routing.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
from typing import TYPE_CHECKING

from .resources import ResourceType
from .store import ApiError, rfc3339

if TYPE_CHECKING:
    from .server import ApiServer, Request, Route

# Dynamic ClusterIPs come from above the static band (the first 256 addresses), as the real allocator
# prefers, so they never collide with pinned ones such as the cluster DNS Service's 10.96.0.10.
_cluster_ips = itertools.count(0)


def default_manager(user_agent: str) -> str:
    """The field manager the API server derives from a User-Agent: its first path segment."""
    return (user_agent.split("/")[0] or "unknown")[:128]


def prepare_create(api: ApiServer, rt: ResourceType, body: dict, namespace: str | None, req: Request,
                   managed: bool = True) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be an object")
    _check_kind(rt, body)
    obj = copy.deepcopy(body)
    meta = obj.setdefault("metadata", {})
    if rt.namespaced:
        if meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                           "namespace sent on the request")
        meta["namespace"] = namespace or meta.get("namespace")
    obj = apply_defaults(rt, obj)
    _validate(api, rt, obj, req)
    if managed:
        obj = _record(obj, None, req, rt)
    return obj


def prepare_update(api: ApiServer, rt: ResourceType, body: dict, old: dict, r: Route, req: Request,
                   manager: str | None = None, managed: bool = True) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be an object")
    _check_kind(rt, body)
    obj = copy.deepcopy(body)
    meta = obj.setdefault("metadata", {})
    if meta.get("name") and meta["name"] != r.name:
        raise ApiError(400, "BadRequest", f'the name of the object ({meta["name"]}) does not match the '
                       f"name on the URL ({r.name})")
    meta["name"] = r.name
    if rt.namespaced:
        meta["namespace"] = r.namespace
    if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
        raise ApiError(409, "Conflict", f'Precondition failed: UID in precondition: {meta["uid"]}, '
                       f'UID in object meta: {old["metadata"]["uid"]}')
    if r.sub == "ephemeralcontainers":
        _check_ephemeral(rt, obj, old)
    if r.sub != "status":
        obj = apply_defaults(rt, obj, old)
        _validate(api, rt, obj, req)
    if managed:
        obj = _record(obj, old, req, rt, manager, r.sub)
    return obj


def _check_ephemeral(rt: ResourceType, obj: dict, old: dict) -> None:
    """Ephemeral containers can be added, never changed or removed (as pod validation says)."""
    new = {c.get("name"): c for c in (obj.get("spec") or {}).get("ephemeralContainers") or []}
    causes = []
    for c in (old.get("spec") or {}).get("ephemeralContainers") or []:
        if new.get(c["name"]) != c:
            causes.append({"reason": "FieldValueForbidden", "field": "spec.ephemeralContainers",
                           "message": f'Forbidden: existing ephemeral containers "{c["name"]}" may not be '
                                      "changed"})
    for name, c in new.items():
        if not c.get("image"):
            causes.append({"reason": "FieldValueRequired", "field": f"spec.ephemeralContainers[{name}].image",
                           "message": "Required value"})
    if causes:
        from .store import invalid

        raise invalid(rt, old["metadata"]["name"], causes)


def _check_kind(rt: ResourceType, body: dict) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind and kind != rt.kind:
        raise ApiError(400, "BadRequest", f"the API version in the data ({api_version}) does not match the "
                       f"expected API version ({rt.api_version})" if api_version != rt.api_version else
                       f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
    if api_version and api_version != rt.api_version:
        raise ApiError(400, "BadRequest", f"the API version in the data ({api_version}) does not match the "
                       f"expected API version ({rt.api_version})")
    body["kind"], body["apiVersion"] = rt.kind, rt.api_version


def _record(obj: dict, old: dict | None, req: Request, rt: ResourceType, manager: str | None = None,
            subresource: str | None = None) -> dict:
    manager = manager or req.q("fieldManager") or default_manager(req.user_agent)
    try:
        from . import patch

        return patch.record_update(old, obj, manager=manager, now=rfc3339(), api_version=rt.api_version,
                                   subresource=subresource)
    except Exception:  # managed fields are bookkeeping; never fail a write over them
        return obj


def _validate(api: ApiServer, rt: ResourceType, obj: dict, req: Request) -> None:
    """Schema and semantic validation (422), then field validation of unknown fields.

    `fieldValidation`: Strict refuses unknown fields (400), Warn (the default) drops
    them and answers with a `Warning` header per field, Ignore drops them silently.
    """
    from . import validate

    name = obj.get("metadata", {}).get("name") or obj.get("metadata", {}).get("generateName", "")
    if rt.crd:
        causes = validate.validate_custom(obj, rt.schema)
    else:
        causes = validate.validate(obj, rt.api_version, rt.kind)
    if causes:
        status = validate.invalid_status(rt.kind, rt.group, name, causes)
        raise ApiError(422, "Invalid", status["message"], status.get("details"))
    mode = req.q("fieldValidation") or "Warn"
    if mode not in ("Strict", "Warn", "Ignore"):
        raise ApiError(400, "BadRequest", f'fieldValidation must be one of "Ignore", "Warn" or "Strict", '
                       f'got "{mode}"')
    schema = rt.schema if rt.crd else None
    if rt.crd and schema is None:
        return
    if mode == "Strict":
        unknown = validate.unknown_fields(obj, rt.api_version, rt.kind, schema=schema)
        if unknown:
            raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(
                f'unknown field "{f}"' for f in unknown))
        return
    dropped = validate.prune(obj, rt.api_version, rt.kind, schema=schema)
    if mode == "Warn":
        req.warnings.extend(f'unknown field "{f}"' for f in dropped)


# ---- defaults ---------------------------------------------------------------


def apply_defaults(rt: ResourceType, obj: dict, old: dict | None = None) -> dict:
    """The subset of the API server's defaulting that clients visibly depend on."""
    fn = _DEFAULTS.get((rt.group, rt.kind))
    if fn:
        fn(obj, old)
    return obj


def _pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for c in itertools.chain(spec.get("containers") or [], spec.get("initContainers") or []):
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


def _pod(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    _pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("tolerations", [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 300},
    ])
    if old is None:
        obj.setdefault("status", {"phase": "Pending", "qosClass": _qos(spec)})


def _qos(spec: dict) -> str:
    res = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("limits") or r.get("requests") for r in res):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) and (r.get("requests") or {}).get(k, (r.get("limits") or {}).get(k))
        == (r.get("limits") or {}).get(k) for r in res for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def _template(obj: dict) -> None:
    tpl = obj.setdefault("spec", {}).setdefault("template", {})
    tpl.setdefault("metadata", {})
    _pod_spec(tpl.setdefault("spec", {}))


def _deployment(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    _template(obj)


def _replicaset(obj: dict, old: dict | None) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def _statefulset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    _template(obj)


def _daemonset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    _template(obj)


def _service(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if old and (old.get("spec") or {}).get("clusterIP"):
            spec.setdefault("clusterIP", old["spec"]["clusterIP"])
        if not spec.get("clusterIP"):
            n = next(_cluster_ips)
            spec["clusterIP"] = str(ipaddress.ip_address("10.96.1.0") + n)
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        else:
            spec.setdefault("clusterIPs", ["None"])
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    for i, p in enumerate(spec.get("ports") or []):
        p.setdefault("protocol", "TCP")
        if "port" in p:
            p.setdefault("targetPort", p["port"])
        if spec["type"] in ("NodePort", "LoadBalancer"):
            p.setdefault("nodePort", 30000 + (hash((obj["metadata"].get("name"), i)) % 2767))
    if old is None:
        obj.setdefault("status", {"loadBalancer": {}})


def _secret(obj: dict, old: dict | None) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _namespace(obj: dict, old: dict | None) -> None:
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj["status"] = (old or {}).get("status") or {"phase": "Active"}


def _ingress(obj: dict, old: dict | None) -> None:
    for rule in (obj.get("spec") or {}).get("rules") or []:
        for path in ((rule.get("http") or {}).get("paths")) or []:
            path.setdefault("pathType", "ImplementationSpecific")
    if old is None:
        obj.setdefault("status", {"loadBalancer": {}})


_DEFAULTS = {
    ("", "Pod"): _pod,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replicaset,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("", "Service"): _service,
    ("", "Secret"): _secret,
    ("", "Namespace"): _namespace,
    ("networking.k8s.io", "Ingress"): _ingress,
}
