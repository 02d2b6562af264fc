"""Kubernetes access for runbooks: connect, list fast, read pods, events and logs.

Connections come from a kubeconfig context or the in-cluster service account,
never from parameters carrying credentials. Large lists go through
:func:`iter_objects`, which asks for raw JSON pages (`_preload_content=False`,
`limit`/`continue`) and yields plain dicts page by page: the official
client's model deserialisation is an order of magnitude slower and holds
every object twice. Results are plain data; nothing here draws.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .errors import Conflict, Forbidden, InvalidInput, NotFound, RunbookError, Unavailable, cut

PAGE_SIZE = 500

# resource plural -> (API path prefix, namespaced); the few kinds runbooks list in bulk
RESOURCES: dict[str, tuple[str, bool]] = {
    "namespaces": ("/api/v1", False),
    "nodes": ("/api/v1", False),
    "pods": ("/api/v1", True),
    "services": ("/api/v1", True),
    "endpoints": ("/api/v1", True),
    "events": ("/api/v1", True),
    "secrets": ("/api/v1", True),
    "configmaps": ("/api/v1", True),
    "deployments": ("/apis/apps/v1", True),
    "replicasets": ("/apis/apps/v1", True),
    "statefulsets": ("/apis/apps/v1", True),
    "daemonsets": ("/apis/apps/v1", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", True),
    "ingresses": ("/apis/networking.k8s.io/v1", True),
    "ingressclasses": ("/apis/networking.k8s.io/v1", False),
    "certificates": ("/apis/cert-manager.io/v1", True),
    "certificaterequests": ("/apis/cert-manager.io/v1", True),
    "issuers": ("/apis/cert-manager.io/v1", True),
    "clusterissuers": ("/apis/cert-manager.io/v1", False),
}


@dataclass
class Cluster:
    """A connection to one cluster: the API client and the context it came from."""

    api_client: client.ApiClient
    context: str
    server: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """Connect with a kubeconfig context (default: $KUBECONFIG / ~/.kube/config), else in-cluster.

    Example:
        >>> cluster = connect(".sandbox/kubeconfig", "sandbox")  # doctest: +SKIP
        >>> cluster.context
        'sandbox'
    """
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    in_cluster = not kubeconfig and not os.path.exists(path) and os.environ.get("KUBERNETES_SERVICE_HOST")
    cfg = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)
        return Cluster(client.ApiClient(cfg), "in-cluster", cfg.host)
    if not os.path.exists(path):
        raise InvalidInput(f"kubeconfig {path!r} does not exist; pass an existing file "
                           "(for the sandbox: start it with `runbooks sandbox up`)")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except Exception as e:
        raise InvalidInput(f"kubeconfig {path!r} cannot be read: {cut(str(e))}") from e
    names = [c["name"] for c in contexts]
    name = context or (active or {}).get("name")
    if name not in names:
        raise InvalidInput(f"context {name!r} is not in kubeconfig {path!r}; available: {', '.join(names)}")
    try:
        config.load_kube_config(config_file=path, context=name, client_configuration=cfg,
                                persist_config=False)
    except Exception as e:
        raise InvalidInput(f"context {name!r} in {path!r} cannot be loaded: {cut(str(e))}") from e
    return Cluster(client.ApiClient(cfg), name, cfg.host)


def translate(e: Exception, what: str = "") -> RunbookError:
    """Map a client exception to this package's errors, keeping the cause and cutting the body."""
    prefix = f"{what}: " if what else ""
    if isinstance(e, ApiException):
        message = cut(e.body)
        try:
            message = json.loads(e.body).get("message", message)
        except (TypeError, ValueError, AttributeError):
            pass
        if e.status in (401, 403):
            return Forbidden(f"{prefix}the API server refused the credentials (HTTP {e.status}: {cut(message)})")
        if e.status == 404:
            return NotFound(f"{prefix}{cut(message)}")
        if e.status == 409:
            return Conflict(f"{prefix}{cut(message)}")
        if e.status in (400, 422):
            return InvalidInput(f"{prefix}{cut(message)}")
        return Unavailable(f"{prefix}HTTP {e.status} from the API server: {cut(message)}")
    if isinstance(e, (urllib3.exceptions.HTTPError, OSError)):
        return Unavailable(f"{prefix}the API server cannot be reached: {cut(str(e))}")
    return RunbookError(f"{prefix}{cut(str(e))}")


def check_api(cluster: Cluster, timeout: float = 5.0) -> dict:
    """Prove the API answers and accepts our credentials; return its version."""
    try:
        # raw GETs: the generated API classes cost a second to import, a preflight needs none
        version = json.loads(get_raw(cluster, "/version", timeout=timeout))
        # /version is public on most clusters: also make one authenticated call
        get_raw(cluster, "/api/v1/namespaces", [("limit", 1)], timeout=timeout)
    except Exception as e:
        raise translate(e, f"API server {cluster.server}") from e
    return {"gitVersion": version.get("gitVersion", ""), "platform": version.get("platform", "")}


def get_raw(cluster: Cluster, path: str, query: list[tuple[str, Any]] | None = None,
            timeout: float = 60.0) -> bytes:
    """GET an API path and return the response body unparsed (no model deserialisation).

    Uses the client's own request building (auth, TLS, proxy settings from the
    kubeconfig) and reads the raw bytes, as `_preload_content=False` does for
    the generated API methods; non-2xx answers raise ApiException with the body.
    """
    api = cluster.api_client
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=list(query or []), header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers, _request_timeout=timeout)
    resp.read()
    if not 200 <= resp.status <= 299:
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = resp.data.decode("utf-8", "replace") if resp.data else ""
        raise err
    return resp.data


def _path(resource: str, namespace: str | None, api_path: str | None = None) -> str:
    if api_path:
        prefix, namespaced = api_path, namespace is not None
    else:
        if resource not in RESOURCES:
            raise InvalidInput(f"resource {resource!r} is not known; pass api_path= or use one of: "
                               f"{', '.join(sorted(RESOURCES))}")
        prefix, namespaced = RESOURCES[resource]
    if namespace and namespaced:
        return f"{prefix}/namespaces/{namespace}/{resource}"
    return f"{prefix}/{resource}"


def iter_pages(cluster: Cluster, resource: str, namespace: str | None = None, *,
               label_selector: str = "", field_selector: str = "", page_size: int = PAGE_SIZE,
               api_path: str | None = None, timeout: float = 60.0) -> Iterator[list[dict]]:
    """Raw JSON pages of a list, following `continue` tokens; one page in memory at a time."""
    path = _path(resource, namespace, api_path)
    token = ""
    while True:
        query = [("limit", page_size)]
        if token:
            query.append(("continue", token))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        try:
            data = json.loads(get_raw(cluster, path, query, timeout))
        except RunbookError:
            raise
        except Exception as e:
            raise translate(e, f"listing {resource}") from e
        yield data.get("items") or []
        token = (data.get("metadata") or {}).get("continue") or ""
        if not token:
            return


def iter_objects(cluster: Cluster, resource: str, namespace: str | None = None, **kw: Any) -> Iterator[dict]:
    """Every object of a list as a plain dict, fetched page by page (see :func:`iter_pages`).

    Example:
        >>> sum(1 for _ in iter_objects(cluster, "pods"))  # doctest: +SKIP
        42
    """
    for page in iter_pages(cluster, resource, namespace, **kw):
        yield from page


def list_objects(cluster: Cluster, resource: str, namespaces: list[str] | None = None, **kw: Any) -> list[dict]:
    """All objects in the given namespaces (None: all namespaces)."""
    if not namespaces:
        return list(iter_objects(cluster, resource, None, **kw))
    out: list[dict] = []
    for ns in namespaces:
        out.extend(iter_objects(cluster, resource, ns, **kw))
    return out


def get_object(cluster: Cluster, resource: str, namespace: str | None, name: str,
               api_path: str | None = None) -> dict:
    path = _path(resource, namespace, api_path) + f"/{name}"
    try:
        return json.loads(get_raw(cluster, path))
    except Exception as e:
        raise translate(e, f"reading {resource} {namespace + '/' if namespace else ''}{name}") from e


# ---- pods, events, logs ----------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def container_problems(pod: dict) -> list[dict]:
    """One row per unhealthy container: waiting reason, last termination, restarts."""
    rows = []
    meta, status = pod["metadata"], pod.get("status") or {}
    for st in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (st.get("state") or {}).get("waiting") or {}
        last = (st.get("lastState") or {}).get("terminated") or {}
        if st.get("ready") and not waiting and not st.get("restartCount"):
            continue
        rows.append({
            "namespace": meta.get("namespace"), "pod": meta["name"], "container": st["name"],
            "ready": bool(st.get("ready")), "waiting_reason": waiting.get("reason", ""),
            "restarts": st.get("restartCount", 0), "last_termination_reason": last.get("reason", ""),
            "last_exit_code": last.get("exitCode"), "last_finished": last.get("finishedAt", ""),
            "node": (pod.get("spec") or {}).get("nodeName", ""),
        })
    return rows


def owner_workload(pod: dict) -> str:
    """`Deployment/checkout`-style owner of a pod (ReplicaSet names lose their hash)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            if ref["kind"] == "ReplicaSet":
                labels = pod["metadata"].get("labels") or {}
                h = labels.get("pod-template-hash")
                name = ref["name"][: -len(h) - 1] if h and ref["name"].endswith("-" + h) else ref["name"]
                return f"Deployment/{name}"
            return f"{ref['kind']}/{ref['name']}"
    return f"Pod/{pod['metadata']['name']}"


def events(cluster: Cluster, namespace: str | None = None, *, object_name: str = "", kind: str = "",
           since: timedelta | None = None, warnings_only: bool = False) -> list[dict]:
    """Events (newest last), optionally for one object, a type, and a time window."""
    fields = []
    if object_name:
        fields.append(f"involvedObject.name={object_name}")
    if kind:
        fields.append(f"involvedObject.kind={kind}")
    if warnings_only:
        fields.append("type=Warning")
    cutoff = datetime.now(UTC) - since if since else None
    out = []
    for ev in iter_objects(cluster, "events", namespace, field_selector=",".join(fields)):
        last = parse_time(ev.get("lastTimestamp") or ev.get("eventTime")
                          or ev["metadata"].get("creationTimestamp"))
        if cutoff and last and last < cutoff:
            continue
        io = ev.get("involvedObject") or {}
        out.append({
            "namespace": ev["metadata"].get("namespace"), "type": ev.get("type", ""),
            "reason": ev.get("reason", ""), "object": f"{io.get('kind', '')}/{io.get('name', '')}",
            "message": ev.get("message", ""), "count": ev.get("count", 1), "last_seen": last,
        })
    out.sort(key=lambda e: e["last_seen"] or datetime.min.replace(tzinfo=UTC))
    return out


def pod_logs(cluster: Cluster, namespace: str, pod: str, container: str | None = None, *,
             tail_lines: int | None = None, since_seconds: int | None = None, previous: bool = False,
             timestamps: bool = False) -> str:
    """A container's log text (the previous instance's with previous=True)."""
    kw: dict[str, Any] = {"previous": previous, "timestamps": timestamps}
    if container:
        kw["container"] = container
    if tail_lines is not None:
        kw["tail_lines"] = tail_lines
    if since_seconds is not None:
        kw["since_seconds"] = since_seconds
    try:
        return cluster.core.read_namespaced_pod_log(pod, namespace, **kw)
    except Exception as e:
        raise translate(e, f"logs of {namespace}/{pod}") from e


# ---- a summary for people -----------------------------------------------------------


# ---- what changed -------------------------------------------------------------------


def _selector_string(selector: dict | None) -> str:
    """A metav1.LabelSelector as the `labelSelector` query string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def rollout_history(cluster: Cluster, namespace: str, deployment: str) -> list[dict]:
    """A Deployment's ReplicaSets by revision (oldest first): images, creation time, replicas.

    The same facts `kubectl rollout history` shows, plus when each revision was
    created, which is when it was rolled out.
    """
    d = get_object(cluster, "deployments", namespace, deployment)
    uid = d["metadata"]["uid"]
    rows = []
    for rs in iter_objects(cluster, "replicasets", namespace, label_selector=_selector_string(
            (d.get("spec") or {}).get("selector"))):
        if not any(r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or []):
            continue
        ann = rs["metadata"].get("annotations") or {}
        spec = (rs.get("spec") or {}).get("template", {}).get("spec", {})
        tpl_ann = ((rs.get("spec") or {}).get("template", {}).get("metadata") or {}).get("annotations") or {}
        rows.append({
            "revision": int(ann.get("deployment.kubernetes.io/revision", "0")),
            "replicaset": rs["metadata"]["name"],
            "created": parse_time(rs["metadata"].get("creationTimestamp")),
            "images": [c.get("image", "") for c in spec.get("containers", [])],
            "replicas": (rs.get("spec") or {}).get("replicas", 0),
            "ready": (rs.get("status") or {}).get("readyReplicas", 0),
            "change_cause": ann.get("kubernetes.io/change-cause", ""),
            "pod_template_hash": (rs["metadata"].get("labels") or {}).get("pod-template-hash", ""),
            "restarted_at": tpl_ann.get("kubectl.kubernetes.io/restartedAt", ""),
        })
    rows.sort(key=lambda r: r["revision"])
    return rows


def workload_pods(cluster: Cluster, namespace: str, deployment: str, history: list[dict] | None = None) -> list[dict]:
    """The pods of a Deployment (by its selector), each with its ReplicaSet's revision.

    Pass the Deployment's `history` (from :func:`rollout_history`) when you have it already.
    """
    d = get_object(cluster, "deployments", namespace, deployment)
    history = history if history is not None else rollout_history(cluster, namespace, deployment)
    revisions = {r["pod_template_hash"]: r["revision"] for r in history}
    out = []
    for pod in iter_objects(cluster, "pods", namespace,
                            label_selector=_selector_string((d.get("spec") or {}).get("selector"))):
        h = (pod["metadata"].get("labels") or {}).get("pod-template-hash", "")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        problems = container_problems(pod)
        out.append({
            "pod": pod["metadata"]["name"], "revision": revisions.get(h), "phase": (pod.get("status") or {})
            .get("phase", ""), "ready": all(s.get("ready") for s in statuses) if statuses else False,
            "restarts": sum(s.get("restartCount", 0) for s in statuses),
            "waiting_reason": next((p["waiting_reason"] for p in problems if p["waiting_reason"]), ""),
            "last_termination_reason": next((p["last_termination_reason"] for p in problems
                                             if p["last_termination_reason"]), ""),
            "node": (pod.get("spec") or {}).get("nodeName", ""),
            "created": parse_time(pod["metadata"].get("creationTimestamp")),
        })
    return sorted(out, key=lambda p: (p["revision"] or 0, p["pod"]))


def last_modified(obj: dict) -> datetime | None:
    """When an object was last written, from its managedFields (the API records it per manager)."""
    times = [parse_time(m.get("time")) for m in obj["metadata"].get("managedFields") or [] if m.get("time")]
    times = [t for t in times if t]
    return max(times) if times else parse_time(obj["metadata"].get("creationTimestamp"))
