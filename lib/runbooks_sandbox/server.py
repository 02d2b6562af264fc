"""The sandbox Kubernetes API server: the REST protocol over HTTPS on 127.0.0.1.

It is a threaded standard-library HTTP server because the point is protocol
fidelity, not throughput: the official Python client and the real `kubectl`
talk to it exactly as they talk to a cluster (discovery, Tables, bearer token,
TLS verified against a CA in the kubeconfig, Status errors, watch streams).
Routing, content negotiation and admission (defaults, schema validation,
dry-run) live here; storage in store.py; the patch flavours in patch.py.
pods/exec, attach and portforward answer the WebSocket upgrade here and hand
the connection to streams.py (framing in websocket.py and spdy.py; what the
pod runs in tools.py and kubelet.py). Write answers follow the real registry: DELETE
returns the object for the stores that say so (`deleted_answer`), or the
object marked for deletion while finalizers remain.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from . import admission, virtual, websocket
from .kubelet import Kubelet
from .resources import SERVER_VERSION, STREAMING, Registry, ResourceType
from .store import ApiError, Store, rfc3339

log = logging.getLogger(__name__)

JSON = "application/json"
PATCH_ATTEMPTS = 5  # a PATCH is recomputed this often when other writers keep changing the object
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


class Request:
    """One parsed API request: path parts, query and body."""

    def __init__(self, method: str, raw_path: str, headers, body: bytes):
        self.method = method
        parts = urlsplit(raw_path)
        self.path = parts.path.rstrip("/") or "/"
        self.query_all = parse_qs(parts.query, keep_blank_values=True)  # repeated: command=, ports=
        self.query = {k: v[-1] for k, v in self.query_all.items()}
        self.headers = headers
        self.body = body
        self.warnings: list[str] = []  # sent back as `Warning: 299 - "..."` headers
        self.user = None  # auth.User, set once authenticated

    def q(self, name: str, default: str = "") -> str:
        return self.query.get(name, default)

    def q_int(self, name: str, default: int = 0) -> int:
        value = self.query.get(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, "BadRequest", f'invalid value for {name}: "{value}"') from None

    def q_bool(self, name: str) -> bool:
        return self.query.get(name, "false").lower() in ("1", "true")

    @property
    def dry_run(self) -> bool:
        value = self.query.get("dryRun")
        if value is None or value == "":
            return False
        if value != "All":
            raise ApiError(400, "BadRequest", f'Invalid dryRun value: "{value}": supported values: "All"')
        return True

    def json_body(self) -> dict:
        ctype = (self.headers.get("Content-Type") or JSON).split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":  # typed client-go clients (Helm, kubectl create)
            from . import protobuf

            try:
                return protobuf.decode(self.body or b"")
            except protobuf.ProtobufError as e:
                reason = "UnsupportedMediaType" if e.code == 415 else "BadRequest"
                raise ApiError(e.code, reason, str(e)) from None
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                data = yaml.safe_load(self.body or b"{}")
            else:
                data = json.loads(self.body or b"{}")
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {e}") from None
        if not isinstance(data, (dict, list)):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        return data

    @property
    def wants_table(self) -> bool:
        accept = self.headers.get("Accept") or ""
        return "as=Table" in accept.split(",")[0]

    @property
    def user_agent(self) -> str:
        return self.headers.get("User-Agent") or "unknown"


class Upgrade:
    """An accepted request to switch protocols: the handler answers 101, then `run(ws)` owns the stream."""

    def __init__(self, protocol: str | None, run):
        self.protocol, self.run = protocol, run


class Route:
    """Where a resource request points: type, namespace, name and subresource."""

    def __init__(self, rt: ResourceType, namespace: str | None, name: str | None, sub: str | None):
        self.rt, self.namespace, self.name, self.sub = rt, namespace, name, sub


# The checks kube-apiserver 1.32 registers, in its order; /livez and /healthz leave out the
# readiness-only ones. The sandbox passes them all.
POST_START_HOOKS = (
    "start-apiserver-admission-initializer", "generic-apiserver-start-informers",
    "priority-and-fairness-config-consumer", "priority-and-fairness-filter", "storage-object-count-tracker-hook",
    "start-apiextensions-informers", "start-apiextensions-controllers", "crd-informer-synced",
    "start-system-namespaces-controller", "start-cluster-authentication-info-controller",
    "start-kube-apiserver-identity-lease-controller", "start-kube-apiserver-identity-lease-garbage-collector",
    "start-legacy-token-tracking-controller", "start-service-ip-repair-controllers", "rbac/bootstrap-roles",
    "scheduling/bootstrap-system-priority-classes", "priority-and-fairness-config-producer",
    "bootstrap-controller", "aggregator-reload-proxy-client-cert", "start-kube-aggregator-informers",
    "apiservice-status-local-available-controller", "apiservice-status-remote-available-controller",
    "apiservice-registration-controller", "apiservice-discovery-controller", "kube-apiserver-autoregistration")
HEALTH_CHECKS = {
    "readyz": ("ping", "log", "etcd", "etcd-readiness", "informer-sync",
               *(f"poststarthook/{h}" for h in POST_START_HOOKS), "autoregister-completion",
               "poststarthook/apiservice-openapi-controller", "poststarthook/apiservice-openapiv3-controller",
               "shutdown"),
    "livez": ("ping", "log", "etcd", *(f"poststarthook/{h}" for h in POST_START_HOOKS), "autoregister-completion",
              "poststarthook/apiservice-openapi-controller", "poststarthook/apiservice-openapiv3-controller"),
}
HEALTH_CHECKS["healthz"] = HEALTH_CHECKS["livez"]


def health_endpoint(path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
    """``/readyz``, ``/livez``, ``/healthz`` as the API server answers them: ``ok``, or with
    ``?verbose`` one ``[+]check ok`` line per check (``?exclude=`` marks a check excluded),
    and ``/readyz/<check>`` for one check."""
    kind, _, single = path.strip("/").partition("/")
    checks = HEALTH_CHECKS[kind]
    if single:
        if single not in checks:
            return 404, b"404 page not found\n", "text/plain; charset=utf-8"
        return 200, b"ok", "text/plain; charset=utf-8"
    if "verbose" not in query:
        return 200, b"ok", "text/plain; charset=utf-8"
    excluded = set(query.get("exclude", []))
    lines = [f"[+]{c} excluded: ok" if c in excluded else f"[+]{c} ok" for c in checks]
    return 200, ("\n".join([*lines, f"{kind} check passed", ""])).encode(), "text/plain; charset=utf-8"


class ApiServer:
    """State and request handling; `serve()` binds it to a port."""

    def __init__(self, registry: Registry | None = None, store: Store | None = None,
                 token: str | None = None):
        self.registry = registry or Registry()
        self.store = store or Store(self.registry)
        self.token = token or secrets.token_urlsafe(32)
        self.stop_event = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.url = ""
        self.log_source = None  # callable(pod, container, options) -> str, set by the sandbox
        self.audit: list[dict] | None = None  # a list to record each request's authorization attributes into
        self.log_follower = None  # callable(pod, container, options, stop) -> Iterator[(stream, bytes)]
        self.kubelet = Kubelet(self.store, self.registry)

    # ---- lifecycle -------------------------------------------------------

    def serve(self, port: int = 0, certfile: Path | None = None, keyfile: Path | None = None) -> str:
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if certfile and keyfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(certfile), str(keyfile))
            ctx.set_alpn_protocols(["http/1.1"])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="sandbox-api", daemon=True)
        self.thread.start()
        return self.url

    def shutdown(self) -> None:
        self.stop_event.set()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    # ---- routing ---------------------------------------------------------

    def route(self, path: str) -> Route | None:
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Route(rt, namespace, name, sub)

    def handle(self, req: Request) -> tuple[int, dict | bytes | Iterator[bytes], str]:
        """Answer one request: (status code, body, content type)."""
        p = req.path
        if p.split("/")[1] in ("healthz", "livez", "readyz"):
            return health_endpoint(p, req.query_all)
        if p == "/version":
            return 200, SERVER_VERSION, JSON
        from . import auth

        user = req.user = auth.authenticate(self, req)  # 401, impersonation (403 if not allowed)
        if req.method == "GET" and p.startswith("/openapi/"):
            from . import openapi

            auth.check(self, req, None, user)

            code, headers, body = openapi.respond(self.registry, p, req.query, dict(req.headers.items()))
            return code, body, headers.pop("Content-Type", JSON), headers
        if req.method == "GET":
            doc = self.discovery(p)
            if doc is not None:
                auth.check(self, req, None, user)
                return 200, doc, JSON
        route = self.route(p)
        if route is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        auth.check(self, req, route, user)
        if route.rt.handler or route.sub in virtual.SUBRESOURCES:  # reviews, metrics, eviction, token...
            return virtual.handle(self, req, route)
        return self.resource(req, route)

    def discovery(self, path: str) -> dict | None:
        if path == "/api":
            return self.registry.api_versions()
        if path == "/apis":
            return self.registry.api_group_list()
        m = re.fullmatch(r"/api/([^/]+)", path)
        if m:
            return self.registry.resource_list("", m.group(1)) or _raise404()
        m = re.fullmatch(r"/apis/([^/]+)", path)
        if m:
            return self.registry.api_group(m.group(1)) or _raise404()
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)", path)
        if m:
            return self.registry.resource_list(m.group(1), m.group(2)) or _raise404()
        return None

    # ---- resources -------------------------------------------------------

    def resource(self, req: Request, r: Route):
        rt, m = r.rt, req.method
        if r.sub == "log":
            if m != "GET":
                raise _method_not_allowed(m)
            return self.pod_log(req, r)
        if r.sub == "scale":
            return self.scale(req, r)
        if r.sub in STREAMING:
            return self.connect(req, r)
        if r.sub == "ephemeralcontainers":
            return self.ephemeral_containers(req, r)
        if r.name is None:
            if m == "GET":
                if req.q_bool("watch"):
                    return 200, self.watch_stream(req, r), JSON
                return self.list(req, r)
            if m == "POST":
                return 201, self.create(req, r), JSON
            if m == "DELETE":
                return 200, self.delete_collection(req, r), JSON
            raise _method_not_allowed(m)
        if m == "GET":
            obj = self.store.get(rt, r.namespace, r.name)
            if req.wants_table:
                return 200, self.table(req, rt, [obj]), JSON
            return 200, obj, JSON
        if m == "PUT":
            return 200, self.update(req, r), JSON
        if m == "PATCH":
            return self.patch(req, r)
        if m == "DELETE":
            return 200, self.delete(req, r), JSON
        raise _method_not_allowed(m)

    def matcher(self, req: Request, rt: ResourceType):
        label = req.q("labelSelector")
        field = req.q("fieldSelector")
        if not label and not field:
            return None
        from . import selectors

        try:
            ls = selectors.parse_label_selector(label) if label else None
            fs = selectors.parse_field_selector(field, rt.kind, group=rt.group, custom=rt.crd,
                                                 cluster_scoped=not rt.namespaced) if field else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from None
        if ls is None and fs is None:
            return None
        return lambda o: (ls is None or ls.matches(o.get("metadata", {}).get("labels"))) and (
            fs is None or fs.matches(o))

    def list(self, req: Request, r: Route):
        _send_initial_events(req, watch=False)
        result = self.store.list(r.rt, r.namespace, self.matcher(req, r.rt), req.q_int("limit"),
                                 req.q("continue"))
        if req.wants_table:
            return 200, self.table(req, r.rt, [e.obj for e in result.entries], result), JSON
        meta = {"resourceVersion": result.resource_version}
        if result.continue_token:
            meta["continue"] = result.continue_token
            meta["remainingItemCount"] = result.remaining
        head = json.dumps({"kind": r.rt.list_kind, "apiVersion": r.rt.api_version, "metadata": meta},
                          separators=(",", ":"))
        body = head[:-1].encode() + b',"items":[' + b",".join(e.raw for e in result.entries) + b"]}"
        return 200, body, JSON

    def table(self, req: Request, rt: ResourceType, objs: list[dict], result=None) -> dict:
        from . import tables

        include = req.q("includeObject") or "Metadata"
        return tables.to_table(rt, objs, now=datetime.now(UTC), include_object=include,
                               resource_version=result.resource_version if result else
                               self.store.resource_version,
                               continue_token=result.continue_token if result else "",
                               remaining=result.remaining if result else None)

    def watch_stream(self, req: Request, r: Route) -> Iterator[bytes]:
        timeout = float(req.q_int("timeoutSeconds", 1800))
        match = self.matcher(req, r.rt)
        initial = _send_initial_events(req, watch=True)
        try:
            events = self.store.watch(r.rt, r.namespace, match, req.q("resourceVersion"), timeout,
                                      self.stop_event, send_initial_events=initial)
        except ApiError as e:
            if e.code != 410:
                raise
            # like the watch cache: the stream opens, then one ERROR event carries the 410 Status
            return iter([json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n"])
        return (b'{"type":"' + kind.encode() + b'","object":' + entry.raw + b"}\n" for kind, entry in events)

    def create(self, req: Request, r: Route) -> dict:
        rt = r.rt
        body = req.json_body()
        obj = admission.prepare_create(self, rt, body, r.namespace, req)
        created = self.store.create(rt, obj, dry_run=req.dry_run)
        if rt.kind == "CustomResourceDefinition" and not req.dry_run:
            created = self.crd_established(created)
        return created

    def update(self, req: Request, r: Route) -> dict:
        rt = r.rt
        body = req.json_body()
        old = self.store.get(rt, r.namespace, r.name)
        obj = admission.prepare_update(self, rt, body, old, r, req)
        new = self.store.update(rt, obj, dry_run=req.dry_run, subresource=r.sub)
        if rt.kind == "CustomResourceDefinition" and not req.dry_run:
            self.registry.install_crd(new)
        return self.finish_deletion(rt, new, req.dry_run)

    def patch(self, req: Request, r: Route):
        from . import patch as patches

        rt = r.rt
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        flavour = PATCH_TYPES.get(ctype)
        if flavour is None or (flavour == "strategic" and rt.crd):
            allowed = [t for t, f in PATCH_TYPES.items() if not (f == "strategic" and rt.crd)]
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                           f"format - accepted media types include: {', '.join(allowed)}")
        body = req.json_body()
        now = rfc3339()
        # Like the real server's GuaranteedUpdate: a patch applies to the object as it is when
        # written, so a write by someone else in between means patching again, not a 409 --
        # unless the patch itself names a resourceVersion (then it is a precondition).
        pinned = _names_resource_version(body)
        for attempt in range(PATCH_ATTEMPTS):
            live = self.store.find(rt, r.namespace, r.name)
            manager = req.q("fieldManager") or admission.default_manager(req.user_agent)
            if flavour == "apply":
                if not req.q("fieldManager"):
                    raise ApiError(400, "BadRequest", "PATCH /apply requires fieldManager to be set")
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "apply patch must be a YAML or JSON object")
                body.setdefault("metadata", {})
                body["metadata"].setdefault("name", r.name)
                if rt.namespaced:
                    body["metadata"].setdefault("namespace", r.namespace)
                try:
                    merged = patches.server_side_apply(live, body, manager=manager, force=req.q_bool("force"),
                                                       now=now, api_version=rt.api_version, subresource=r.sub)
                except patches.ApplyConflict as e:
                    raise ApiError(409, "Conflict", str(e), {"causes": e.causes}) from None
                except patches.PatchError as e:
                    raise _patch_error(rt, r.name, e) from None
                if live is None:
                    if r.sub:
                        raise self.not_found(r)
                    obj = admission.prepare_create(self, rt, merged, r.namespace, req, managed=False)
                    created = self.store.create(rt, obj, dry_run=req.dry_run)
                    if rt.kind == "CustomResourceDefinition" and not req.dry_run:
                        created = self.crd_established(created)
                    return 201, created, JSON
            else:
                if live is None:
                    raise self.not_found(r)
                try:
                    if flavour == "json":
                        if not isinstance(body, list):
                            raise patches.PatchError("json patch must be a list of operations", code=400)
                        merged = patches.apply_json_patch(live, body)
                    elif flavour == "merge":
                        merged = patches.apply_merge_patch(live, body)
                    else:
                        merged = patches.apply_strategic_merge_patch(live, body)
                except patches.PatchError as e:
                    raise _patch_error(rt, r.name, e) from None
            assert live is not None
            if merged.get("metadata", {}).get("name") != live["metadata"]["name"]:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            obj = admission.prepare_update(self, rt, merged, live, r, req, manager=manager,
                                           managed=flavour != "apply")
            try:
                new = self.store.update(rt, obj, dry_run=req.dry_run, subresource=r.sub)
            except ApiError as e:
                if e.code == 409 and not pinned and attempt + 1 < PATCH_ATTEMPTS:
                    continue
                raise
            break
        if rt.kind == "CustomResourceDefinition" and not req.dry_run:
            self.registry.install_crd(new)
        return 200, self.finish_deletion(rt, new, req.dry_run), JSON

    def not_found(self, r: Route) -> ApiError:
        from .store import not_found

        return not_found(r.rt, r.name or "")

    def delete(self, req: Request, r: Route) -> dict:
        rt = r.rt
        obj = self.store.get(rt, r.namespace, r.name)
        body = req.json_body() if req.body else {}
        pre = (body.get("preconditions") or {}) if isinstance(body, dict) else {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, "
                           f"UID in object meta: {obj['metadata']['uid']}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                           f"{obj['metadata']['resourceVersion']}")
        policy = req.q("propagationPolicy") or (body.get("propagationPolicy") if isinstance(body, dict) else "")
        dry_run = req.dry_run or _options_dry_run(body)
        if obj["metadata"].get("finalizers") and rt.kind != "Namespace":
            # deletion waits for the finalizers: the object stays, marked, and is what DELETE returns
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"]["deletionTimestamp"] = rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            return self.store.update(rt, marked, dry_run=dry_run, check_rv=False)
        gone = self.store.delete(rt, r.namespace, r.name, dry_run=dry_run)
        if not dry_run:
            self.after_delete(rt, gone, policy or "Background")
        return deleted_answer(rt, gone)

    def finish_deletion(self, rt: ResourceType, obj: dict, dry_run: bool) -> dict:
        """An object marked for deletion whose last finalizer went is removed (what an update returns)."""
        meta = obj.get("metadata") or {}
        if dry_run or not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return obj
        try:
            gone = self.store.delete(rt, meta.get("namespace"), meta["name"])
        except ApiError:
            return obj
        self.after_delete(rt, gone, "Background")
        return obj

    def after_delete(self, rt: ResourceType, obj: dict, policy: str) -> None:
        """Cascade like the garbage collector (Background/Foreground) or orphan dependents."""
        if rt.kind == "CustomResourceDefinition":
            for t in self.registry.remove_crd(obj["metadata"]["name"]):
                for o in self.store.items(t):
                    self._delete_if_there(t, o)
        if rt.kind == "Namespace":
            ns = obj["metadata"]["name"]
            for t in self.registry.all():
                if t.namespaced:
                    for o in self.store.items(t, ns):
                        self._delete_if_there(t, o)
            return
        uid = obj["metadata"]["uid"]
        ns = obj["metadata"].get("namespace")
        for t in self.registry.all():
            if not t.namespaced:
                continue
            for o in self.store.items(t, ns):
                refs = o["metadata"].get("ownerReferences") or []
                if not any(ref.get("uid") == uid for ref in refs):
                    continue
                if policy == "Orphan":
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = [x for x in refs if x.get("uid") != uid]
                    self.store.update(t, new, check_rv=False)
                else:
                    try:
                        gone = self.store.delete(t, ns, o["metadata"]["name"])
                    except ApiError:
                        continue
                    self.after_delete(t, gone, policy)

    def _delete_if_there(self, rt: ResourceType, obj: dict) -> None:
        """Delete a dependent unless something else (an event's TTL, a controller) just did."""
        try:
            self.store.delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        except ApiError as e:
            if e.code != 404:
                raise

    def delete_collection(self, req: Request, r: Route) -> dict:
        result = self.store.list(r.rt, r.namespace, self.matcher(req, r.rt))
        body = req.json_body() if req.body else {}
        dry_run = req.dry_run or _options_dry_run(body)
        policy = req.q("propagationPolicy") or (body.get("propagationPolicy") if isinstance(body, dict) else "")
        items = []
        for e in result.entries:
            meta = e.obj["metadata"]
            try:
                items.append(self.store.delete(r.rt, meta.get("namespace"), meta["name"], dry_run=dry_run))
            except ApiError:
                continue
            if not dry_run:
                self.after_delete(r.rt, items[-1], policy or "Background")
        return {"kind": r.rt.list_kind, "apiVersion": r.rt.api_version,
                "metadata": {"resourceVersion": self.store.resource_version}, "items": items}

    def crd_established(self, crd: dict) -> dict:
        """Serve the CRD's resources and report it Established, as the apiextensions server does."""
        self.registry.install_crd(crd)
        new = copy.deepcopy(crd)
        now = rfc3339()
        names = crd["spec"]["names"]
        new["status"] = {
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "acceptedNames": {k: v for k, v in names.items()},
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }
        rt = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rt is not None
        return self.store.update(rt, new, subresource="status", check_rv=False)

    # ---- subresources ------------------------------------------------------

    def scale(self, req: Request, r: Route):
        rt = r.rt
        obj = self.store.get(rt, r.namespace, r.name)
        if req.method == "GET":
            return 200, _scale_of(obj), JSON
        if req.method not in ("PUT", "PATCH"):
            raise _method_not_allowed(req.method)
        current = _scale_of(obj)
        body = req.json_body()
        if req.method == "PATCH":
            from . import patch as patches

            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip()
            flavour = PATCH_TYPES.get(ctype)
            if flavour == "json":
                new_scale = patches.apply_json_patch(current, body)
            elif flavour in ("merge", "strategic", "apply"):
                new_scale = patches.apply_merge_patch(current, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
        else:
            new_scale = body
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{r.name}" is invalid: spec.replicas: '
                           f"Invalid value: {replicas}: must be greater than or equal to 0",
                           {"causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                        "message": "must be greater than or equal to 0"}]})
        rv = (new_scale.get("metadata") or {}).get("resourceVersion")
        new = copy.deepcopy(obj)
        new["spec"]["replicas"] = replicas
        if rv and rv != obj["metadata"]["resourceVersion"]:
            new["metadata"]["resourceVersion"] = rv
        updated = self.store.update(rt, new, dry_run=req.dry_run)
        return 200, _scale_of(updated), JSON

    def pod_log(self, req: Request, r: Route):
        pod = self.store.get(r.rt, r.namespace, r.name)
        containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = req.q("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {r.name}, "
                               f"choose one of: [{' '.join(containers)}]")
            container = containers[0]
        init = [c["name"] for c in pod.get("spec", {}).get("initContainers", []) or []]
        ephemeral = [c["name"] for c in pod.get("spec", {}).get("ephemeralContainers", []) or []]
        if container not in containers + init + ephemeral:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {r.name}")
        if container in ephemeral:  # what its process wrote while attached (kubectl debug -i)
            return 200, self.kubelet.output(pod, container), "text/plain"
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", []) or []}
        st = statuses.get(container, {})
        waiting = (st.get("state") or {}).get("waiting")
        previous = req.q_bool("previous")
        if waiting and not previous and not (st.get("lastState") or {}).get("terminated"):
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{r.name}" is waiting to start: '
                           f"{waiting.get('message') or waiting.get('reason', 'ContainerCreating')}")
        if req.q_bool("follow") and self.log_follower is not None:
            try:
                chunks = self.log_follower(pod, container, clock=self.store.clock,
                                           tail_lines=_opt_int(req, "tailLines"),
                                           since_seconds=_opt_int(req, "sinceSeconds", minimum=1),
                                           timestamps=req.q_bool("timestamps"), previous=previous,
                                           stop=self.stop_event)
                first = next(chunks)  # the lines so far (and any LookupError) before the stream opens
            except LookupError as e:
                raise ApiError(400, "BadRequest", str(e).strip("'\"")) from None
            return 200, _chain(first[1], (data for _, data in chunks)), "text/plain"
        if self.log_source is None:
            return 200, b"", "text/plain"
        try:
            text = self.log_source(pod, container, now=self.store.clock(), tail_lines=_opt_int(req, "tailLines"),
                                   since_seconds=_opt_int(req, "sinceSeconds", minimum=1),
                                   timestamps=req.q_bool("timestamps"), previous=previous)
        except LookupError as e:  # the kubelet's own wording, e.g. previous terminated container not found
            raise ApiError(400, "BadRequest", str(e).strip("'\"")) from None
        return 200, text.encode(), "text/plain"


    # ---- streaming (exec, attach, portforward) and ephemeral containers ------------------------

    def connect(self, req: Request, r: Route):
        """pods/exec|attach|portforward: validate like the API server, then upgrade to a WebSocket."""
        from . import streams

        if req.method not in ("GET", "POST"):
            raise _method_not_allowed(req.method)
        pod = self.store.get(r.rt, r.namespace, r.name)
        if not websocket.is_upgrade(req.headers):
            if (req.headers.get("Upgrade") or "").lower().startswith("spdy/"):
                raise ApiError(400, "BadRequest", "unable to upgrade connection: SPDY is not served here; "
                               "use WebSockets (v5.channel.k8s.io, or SPDY/3.1+portforward.k8s.io tunnelled "
                               "in a WebSocket for port-forward)")
            raise ApiError(400, "BadRequest", "Upgrade request required")
        phase = (pod.get("status") or {}).get("phase")
        offered = websocket.offered_protocols(req.headers)
        if r.sub == "portforward":
            protocol = next((p for p in offered if p in streams.PORTFORWARD_PROTOCOLS), None)
            if protocol is None and offered:
                raise ApiError(400, "BadRequest", f"unable to upgrade: unsupported protocols {offered}")
            if phase in ("Succeeded", "Failed"):
                raise ApiError(400, "BadRequest", f"cannot port forward into a completed pod; current "
                               f"phase is {phase}")
            if protocol and protocol.startswith("SPDY/"):
                return 101, Upgrade(protocol, lambda ws: streams.serve_portforward_spdy(ws, self.kubelet, pod)), ""
            ports = [p for v in req.query_all.get("ports", []) for p in v.split(",") if p]
            if not ports:
                raise ApiError(400, "BadRequest", "query parameter \"port\" is required")
            try:
                numbers = [int(p) for p in ports]
            except ValueError:
                raise ApiError(400, "BadRequest", f"unable to parse \"{ports}\" as a port") from None
            return 101, Upgrade(protocol, lambda ws: streams.serve_portforward_channels(
                ws, self.kubelet, pod, numbers)), ""
        protocol = next((p for p in offered if p in streams.EXEC_PROTOCOLS), None)
        if protocol is None and offered:
            raise ApiError(400, "BadRequest", f"unable to upgrade: unsupported protocols {offered}")
        container = self._stream_container(req, r, pod)
        opts = {k: req.q_bool(k) for k in ("stdin", "stdout", "stderr", "tty")}
        if not (opts["stdin"] or opts["stdout"] or opts["stderr"]):
            raise ApiError(400, "BadRequest", "you must specify at least one of stdin, stdout, stderr")
        if phase in ("Succeeded", "Failed"):
            raise ApiError(400, "BadRequest", f"cannot {r.sub} into a container in a completed pod; current "
                           f"phase is {phase}")
        if r.sub == "exec":
            argv = req.query_all.get("command", [])
            if not argv:
                raise ApiError(400, "BadRequest", "you must specify at least 1 command")
            return 101, Upgrade(protocol, lambda ws: streams.serve_exec(ws, self.kubelet, pod, container, argv,
                                                                        opts)), ""
        output = None
        if self.log_follower is not None:
            def output(stop):
                return self.log_follower(pod, container, clock=self.store.clock, tail_lines=0, stop=stop)
        return 101, Upgrade(protocol, lambda ws: streams.serve_attach(ws, self.kubelet, pod, container, opts,
                                                                      output)), ""

    def _stream_container(self, req: Request, r: Route, pod: dict) -> str:
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        others = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("ephemeralContainers") or [])]
        container = req.q("container")
        if not container:
            if len(names) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {r.name}, "
                               f"choose one of: [{' '.join(names)}]")
            return names[0]
        if container not in names + others:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {r.name}")
        return container

    def ephemeral_containers(self, req: Request, r: Route):
        """pods/NAME/ephemeralcontainers: only spec.ephemeralContainers changes, and only by adding."""
        old = self.store.get(r.rt, r.namespace, r.name)
        if req.method == "GET":
            return 200, old, JSON
        if req.method == "PUT":
            new = self.update(req, r)
        elif req.method == "PATCH":
            _, new, _ = self.patch(req, r)
        else:
            raise _method_not_allowed(req.method)
        return 200, new, JSON


def deleted_answer(rt: ResourceType, gone: dict) -> dict:
    """What DELETE returns once the object is gone, as the real registry does.

    Stores with ReturnDeletedObject (pods, services, service accounts, custom
    resources...) return the object as it was; the others a Status. Namespaces
    always go through finalization, so they come back marked Terminating.
    """
    if rt.kind == "Namespace":
        out = copy.deepcopy(gone)
        out["metadata"].setdefault("deletionTimestamp", rfc3339())
        out.setdefault("status", {})["phase"] = "Terminating"
        return out
    if rt.crd or rt.kind in RETURN_DELETED_OBJECT:
        return gone
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": gone["metadata"]["name"], "group": rt.group, "kind": rt.plural,
                        "uid": gone["metadata"]["uid"]}}


#: Built-in kinds whose registry store sets ReturnDeletedObject (their generated clients expect the object).
RETURN_DELETED_OBJECT = frozenset({"Pod", "Service", "ServiceAccount", "PersistentVolume",
                                   "PersistentVolumeClaim", "PodTemplate", "ResourceQuota", "StorageClass",
                                   "VolumeAttachment", "CSIDriver", "CSINode"})


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _names_resource_version(body: Any) -> bool:
    """Whether a patch body sets metadata.resourceVersion (an optimistic-concurrency precondition)."""
    if isinstance(body, list):
        return any(isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in body)
    return isinstance(body, dict) and bool((body.get("metadata") or {}).get("resourceVersion"))


def _patch_error(rt: ResourceType, name: str | None, e) -> ApiError:
    """A PatchError as the Status the real server sends (400 malformed, 422 semantic)."""
    if e.code == 400:
        return ApiError(400, "BadRequest", str(e))
    causes = [{"reason": "FieldValueInvalid", "message": str(e), **({"field": e.field} if e.field else {})}]
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {e}',
                    {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})


def _send_initial_events(req: Request, watch: bool) -> bool | None:
    """`sendInitialEvents` of a watch-list, validated as ListOptions validation does."""
    if "sendInitialEvents" not in req.query:
        return None
    value = req.q_bool("sendInitialEvents")
    problems = []
    if not watch:
        problems.append(("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    if req.q("resourceVersionMatch") != "NotOlderThan":
        problems.append(("resourceVersionMatch",
                         "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
    if not req.q_bool("allowWatchBookmarks"):
        problems.append(("allowWatchBookmarks",
                         "sendInitialEvents requires setting allowWatchBookmarks to true"))
    if problems:
        causes = [{"reason": "FieldValueForbidden", "field": f, "message": f"Forbidden: {m}"}
                  for f, m in problems]
        text = ", ".join(f"{f}: Forbidden: {m}" for f, m in problems)
        raise ApiError(422, "Invalid", f'ListOptions.meta.k8s.io "" is invalid: {text}',
                       {"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes})
    return value


def _options_dry_run(body) -> bool:
    """`DeleteOptions.dryRun` from the body: client-go sends it there, not in the query."""
    values = body.get("dryRun") if isinstance(body, dict) else None
    if not values:
        return False
    if values != ["All"]:
        raise ApiError(400, "BadRequest", f'Invalid dryRun value: "{values}": supported values: "All"')
    return True


def _opt_int(req: Request, name: str, minimum: int = 0) -> int | None:
    value = req.q(name)
    if value == "":
        return None
    v = req.q_int(name)
    if v < minimum:
        bound = "greater than 0" if minimum == 1 else "greater than or equal to 0"
        raise ApiError(422, "Invalid", f'PodLogOptions "" is invalid: {name}: Invalid value: {v}: '
                       f"must be {bound}")
    return v


def _scale_of(obj: dict) -> dict:
    from . import selectors  # noqa: F401  (kept for symmetry with label selector strings)

    sel = (obj.get("spec") or {}).get("selector") or {}
    labels = sel.get("matchLabels") or {}
    meta = obj["metadata"]
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                     "resourceVersion": meta["resourceVersion"],
                     "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))},
    }


def _raise404():
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                    f"resource ({method})")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server_version = "sandbox-apiserver"
    api: ApiServer

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        log.debug("%s %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        started = time.monotonic()
        req = Request(self.command, self.path, self.headers, self._body())
        extra: dict[str, str] = {}
        try:
            answer = self.api.handle(req)
            if "protobuf" in (self.headers.get("Accept") or ""):  # protobuf-only clients get protobuf
                from . import protobuf

                answer = protobuf.negotiate(self.headers.get("Accept") or "", answer)
            code, body, ctype = answer[:3]
            if len(answer) > 3:
                extra = answer[3]
            if isinstance(body, Upgrade):
                self._upgrade(req, body)
                return
        except ApiError as e:
            code, body, ctype = e.code, e.status(), JSON
        except Exception as e:  # a bug in the sandbox: say so like the real server would
            log.exception("internal error on %s %s", self.command, self.path)
            code, body, ctype = 500, ApiError(500, "InternalError", f"Internal error occurred: {e}").status(), JSON
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode()
        if isinstance(body, bytes):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Audit-Id", secrets.token_hex(8))
            for k, v in extra.items():
                self.send_header(k, v)
            for w in req.warnings:
                self.send_header("Warning", f'299 - "{w}"' if '"' not in w else "299 - " + json.dumps(w))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self._stream(code, body, ctype)
        log.debug("%s %s -> %s in %.1f ms", self.command, self.path, code, (time.monotonic() - started) * 1e3)

    def _upgrade(self, req: Request, up: Upgrade) -> None:
        """Answer 101 and hand the connection to the stream session until it ends."""
        self.close_connection = True
        try:
            self.wfile.write(websocket.handshake(req.headers, up.protocol))
            self.wfile.flush()
            up.run(websocket.WebSocket(self.rfile, self.wfile, up.protocol))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError, websocket.Closed):
            pass
        except Exception:
            log.exception("stream session on %s failed", self.path)

    def _stream(self, code: int, chunks: Iterator[bytes], ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve
