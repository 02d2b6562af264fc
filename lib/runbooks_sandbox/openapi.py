"""OpenAPI documents for the sandbox API: exactly what ``kubectl`` needs, nothing it ignores.

Why this module exists: ``kubectl apply`` and ``kubectl create`` validate by
default, and without OpenAPI they stop with "failed to download openapi ...
turn validation off with --validate=false". A runbook must never need that flag
(nobody should learn to type it against a test bed), so the sandbox publishes
OpenAPI v3 the way kube-apiserver does, generated from the resource registry and
the real Kubernetes schemas (the ones ``kubernetes-validate`` ships, see
``validate.py``) plus each CRD's ``openAPIV3Schema``.

What kubectl 1.32 requests (observed with ``-v=8`` against the sandbox; the
``/version`` call is the version dispatcher choosing the 1.32 binary):

* ``apply --server-side -f``, ``apply -f``, ``create -f`` (``--validate=strict``
  is the default):
    1. ``GET /openapi/v3`` (Accept ``application/json, */*``): the index, a map of
       group-version paths (``api/v1``, ``apis/apps/v1``) to ``serverRelativeURL``
       ``/openapi/v3/apis/apps/v1?hash=<SHA-512 hex>``.
    2. ``GET /openapi/v3/apis/apps/v1?hash=...`` (Accept ``application/json``): the
       group-version document. kubectl's query-param verifier
       (cli-runtime ``resource/query_param_verifier_v3.go``) walks ``paths`` for
       the first PATCH operation whose ``x-kubernetes-group-version-kind``
       *object* equals the manifest's GVK and looks for a parameter named
       ``fieldValidation`` (inline, not a ``$ref``). Found: kubectl skips
       client-side schema validation and sends ``?fieldValidation=Strict``, so the
       server does the checking (validate.py). Paths are a Go map, so *every*
       PATCH operation carrying a GVK (main resource and ``/status``) has the
       parameter. For a group-version missing from the index kubectl lists CRDs
       (``GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions``) and, if
       it is one, checks Namespace's PATCH instead; CRD group-versions are
       published here anyway, as kube-apiserver does.
    3. Only if step 1 or 2 fails does kubectl fall back to ``GET /openapi/v2``
       with ``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``
       (the gnostic protobuf) and validate client-side from it. With v3 served it
       never gets there, so ``/openapi/v2`` answers 404 (see :func:`respond`);
       serving protobuf would be a large encoder for a path kubectl 1.32 does not take.
    4. Then discovery (``/api``, ``/apis``, aggregated or per group-version), the
       object GET and the write (``PATCH`` with ``application/apply-patch+yaml``
       and ``fieldManager=kubectl&fieldValidation=Strict&force=false`` for
       server-side apply; ``POST ...?fieldManager=kubectl-client-side-apply&
       fieldValidation=Strict`` or a strategic-merge ``PATCH`` for client-side
       apply; ``POST ...?fieldManager=kubectl-create&fieldValidation=Strict`` for create).
* Client-side ``apply`` of an existing object (and ``kubectl diff``, ``set image``)
  computes a three-way strategic merge patch. kubectl first checks that the
  kind's PATCH operation accepts ``application/strategic-merge-patch+json``
  (``gvkSupportsPatchOpenAPIV3``), then looks the kind up in the v3 document
  (the ``components.schemas`` entry whose ``x-kubernetes-group-version-kind``
  list holds the GVK) to read ``x-kubernetes-patch-strategy`` /
  ``x-kubernetes-patch-merge-key`` on lists (containers merge by ``name``). So
  schemas keep those extensions and ``$ref`` with siblings is wrapped as
  ``allOf: [{$ref}]`` the way kube-openapi writes it. Custom resources list no
  strategic merge patch (as on a real server); kubectl then tries
  ``GET /openapi/v2`` (404 here, protobuf there: no SMP either way) and sends a
  JSON merge patch.
* ``apply --dry-run=server`` / ``create --dry-run=server``: the same verifier,
  for the ``dryRun`` parameter, then the write with ``dryRun=All``.
* No OpenAPI at all for ``get`` (a Table: ``Accept: application/json;as=Table;
  v=v1;g=meta.k8s.io,...``, see tables.py), ``describe`` (the object with
  ``Accept: application/vnd.kubernetes.protobuf,application/json`` — JSON is
  fine — then events by ``involvedObject.name/namespace/kind/uid`` field
  selector and the ReplicaSets by label selector), ``scale`` (GET the object,
  merge-patch ``.../scale``; the answer must be an ``autoscaling/v1`` Scale),
  ``rollout status`` (GET, then list + watch with ``fieldSelector=metadata.name=``),
  ``logs``, ``delete``, ``label``, ``annotate``, ``patch``.
* ``explain`` reads the same v3 documents (``components.schemas`` by GVK).

Caching contract (kube-openapi ``handler3``): the index carries an ``Etag`` and
honours ``If-None-Match``; a group-version document requested with the current
``hash`` gets ``Cache-Control: public, immutable`` and a one-year ``Expires``
(kubectl's HTTP cache keeps it on disk), a stale ``hash`` a ``301`` to the
current URL, no ``hash`` a plain answer with an ``Etag``. The hash is the
uppercase hex SHA-512 of the document bytes, so it changes exactly when a CRD
is added or changed.

Example:
    >>> from runbooks_sandbox.resources import Registry
    >>> from runbooks_sandbox.openapi import v3_index
    >>> v3_index(Registry())["paths"]["apis/apps/v1"]["serverRelativeURL"][:30]
    '/openapi/v3/apis/apps/v1?hash='
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from .resources import SERVER_VERSION, STREAMING, Registry, ResourceType
from .validate import definition_name, definitions

__all__ = ["respond", "v3_document", "v3_index"]

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_JSON_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")

# ---- schema conversion (kubernetes-validate JSON Schema -> OpenAPI 3.0 as kube-openapi writes it)


def _convert(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_convert(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref":
            continue
        if key == "type":
            types = [value] if isinstance(value, str) else [t for t in value if t != "null"]
            if types:
                out["type"] = types[0]
        elif key == "enum":
            continue  # only apiVersion/kind carry enums in these schemas; the real document has none
        elif key == "oneOf":
            out["oneOf"] = [b for b in (_convert(x) for x in value) if b.get("type")]
        elif key in ("properties", "patternProperties"):
            out[key] = {k: _convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _convert(value)
        elif key in ("allOf", "anyOf"):
            out[key] = [_convert(x) for x in value]
        else:
            out[key] = value
    if "$ref" in schema:
        ref = {"$ref": "#/components/schemas/" + schema["$ref"].rsplit("/", 1)[-1]}
        if not out:
            return ref
        out = {"allOf": [ref], **out}
    return out


def _refs(schema: Any, into: set[str]) -> None:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            into.add(ref.rsplit("/", 1)[-1])
        for value in schema.values():
            _refs(value, into)
    elif isinstance(schema, list):
        for value in schema:
            _refs(value, into)


def _closure(roots: list[str]) -> list[str]:
    defs = definitions(False)
    seen: list[str] = []
    todo = [r for r in roots if r in defs]
    done: set[str] = set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        seen.append(name)
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(sorted(n for n in found if n in defs and n not in done))
    return sorted(seen)


# ---- naming like kube-apiserver's OpenAPI builder -------------------------------


def _camel(group: str) -> str:
    if not group:
        return "Core"
    group = group.removesuffix(".k8s.io")
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[.-]", group) if p)


def _tag(group: str, version: str) -> str:
    camel = _camel(group)
    return f"{camel[:1].lower()}{camel[1:]}_{version}"


def _crd_schema_name(rt: ResourceType, kind: str) -> str:
    reversed_group = ".".join(reversed(rt.group.split(".")))
    return f"{reversed_group}.{rt.version}.{kind}"


def _str_param(name: str, where: str, description: str, required: bool = False, kind: str = "string") -> dict:
    p = {"name": name, "in": where, "description": description,
         "schema": {"type": kind, "uniqueItems": True}}
    if required:
        p["required"] = True
    return p


_P = {
    "pretty": _str_param("pretty", "query", "If 'true', then the output is pretty printed."),
    "dryRun": _str_param("dryRun", "query", "When present, indicates that modifications should not be "
                         "persisted. Valid values are: - All: all dry run stages will be processed"),
    "fieldManager": _str_param("fieldManager", "query", "fieldManager is a name associated with the actor "
                               "or entity that is making these changes."),
    "fieldValidation": _str_param("fieldValidation", "query", "fieldValidation instructs the server on how "
                                  "to handle objects in the request containing unknown or duplicate fields. "
                                  "Valid values are: - Ignore - Warn - Strict"),
    "force": _str_param("force", "query", "Force is going to \"force\" Apply requests.", kind="boolean"),
    "allowWatchBookmarks": _str_param("allowWatchBookmarks", "query", "allowWatchBookmarks requests watch "
                                      "events with type \"BOOKMARK\".", kind="boolean"),
    "continue": _str_param("continue", "query", "The continue option should be set when retrieving more "
                           "results from the server."),
    "fieldSelector": _str_param("fieldSelector", "query", "A selector to restrict the list of returned "
                                "objects by their fields. Defaults to everything."),
    "labelSelector": _str_param("labelSelector", "query", "A selector to restrict the list of returned "
                                "objects by their labels. Defaults to everything."),
    "limit": _str_param("limit", "query", "limit is a maximum number of responses to return for a list call.",
                        kind="integer"),
    "resourceVersion": _str_param("resourceVersion", "query", "resourceVersion sets a constraint on what "
                                  "resource versions a request may be served from."),
    "resourceVersionMatch": _str_param("resourceVersionMatch", "query", "resourceVersionMatch determines "
                                       "how resourceVersion is applied to list calls."),
    "sendInitialEvents": _str_param("sendInitialEvents", "query", "`sendInitialEvents=true` may be set "
                                    "together with `watch=true`.", kind="boolean"),
    "timeoutSeconds": _str_param("timeoutSeconds", "query", "Timeout for the list/watch call.",
                                 kind="integer"),
    "watch": _str_param("watch", "query", "Watch for changes to the described resources and return them "
                        "as a stream of add, update, and remove notifications.", kind="boolean"),
    "gracePeriodSeconds": _str_param("gracePeriodSeconds", "query", "The duration in seconds before the "
                                     "object should be deleted.", kind="integer"),
    "ignoreStoreReadErrorWithClusterBreakingPotential": _str_param(
        "ignoreStoreReadErrorWithClusterBreakingPotential", "query",
        "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion "
        "flow fails with a corrupt object error.", kind="boolean"),
    "orphanDependents": _str_param("orphanDependents", "query", "Deprecated: please use the "
                                   "PropagationPolicy.", kind="boolean"),
    "propagationPolicy": _str_param("propagationPolicy", "query", "Whether and how garbage collection "
                                    "will be performed."),
    "container": _str_param("container", "query", "The container for which to stream logs."),
    "follow": _str_param("follow", "query", "Follow the log stream of the pod.", kind="boolean"),
    "limitBytes": _str_param("limitBytes", "query", "If set, the number of bytes to read from the server "
                             "before terminating the log output.", kind="integer"),
    "previous": _str_param("previous", "query", "Return previous terminated container logs.", kind="boolean"),
    "sinceSeconds": _str_param("sinceSeconds", "query", "A relative time in seconds before the current "
                               "time from which to show logs.", kind="integer"),
    "tailLines": _str_param("tailLines", "query", "If set, the number of lines from the end of the logs "
                            "to show.", kind="integer"),
    "timestamps": _str_param("timestamps", "query", "If true, add an RFC3339 timestamp at the beginning "
                             "of every line of log output.", kind="boolean"),
}
_LIST_PARAMS = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
                "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMS = ("dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential",
                  "orphanDependents", "propagationPolicy")
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
                "application/merge-patch+json", "application/strategic-merge-patch+json")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict, types: tuple[str, ...] = _JSON_TYPES) -> dict:
    return {t: {"schema": schema} for t in types}


def _responses(schema_name: str, codes: tuple[str, ...] = ("200",)) -> dict:
    words = {"200": "OK", "201": "Created", "202": "Accepted"}
    out = {c: {"description": words[c], "content": _content(_ref(schema_name))} for c in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(action: str, op_id: str, description: str, gvk: dict, tag: str, *,
               params: tuple[str, ...] = (), response: str, codes: tuple[str, ...] = ("200",),
               body: dict | None = None) -> dict:
    op: dict[str, Any] = {
        "tags": [tag], "description": description, "operationId": op_id,
        "parameters": [dict(_P[p]) for p in params],
        "responses": _responses(response, codes),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(gvk),
    }
    if body is not None:
        op["requestBody"] = body
    if not op["parameters"]:
        del op["parameters"]
    return op


def _paths_for(rt: ResourceType, kind_schema: str, list_schema: str) -> dict[str, dict]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    tag = _tag(rt.group, rt.version)
    gv = _camel(rt.group) + rt.version[:1].upper() + rt.version[1:]
    gvk = {"group": rt.group, "kind": rt.kind, "version": rt.version}
    scope = "Namespaced" if rt.namespaced else ""
    status = _META + "Status"
    ns_param = _str_param("namespace", "path", "object name and auth scope, such as for teams and projects",
                          required=True)
    name_param = _str_param("name", "path", f"name of the {rt.kind}", required=True)
    body_kind = {"content": {"*/*": {"schema": _ref(kind_schema)}}, "required": True}
    delete_body = {"content": {"*/*": {"schema": _ref(_META + "DeleteOptions")}}}
    # Custom resources take no strategic merge patch; kubectl reads its absence here and falls
    # back to a JSON merge patch for client-side apply (kubectl apply/patcher.go).
    patch_types = [t for t in _PATCH_TYPES if not (rt.crd and "strategic" in t)]
    patch_body = {"content": {t: {"schema": _ref(_META + "Patch")} for t in patch_types}, "required": True}
    paths: dict[str, dict] = {}

    collection = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
    item = collection + "/{name}"
    scope_params = [ns_param] if rt.namespaced else []
    verbs = set(rt.verbs)

    col: dict[str, Any] = {}
    if "list" in verbs:
        col["get"] = _operation("list", f"list{gv}{scope}{rt.kind}", f"list or watch objects of kind {rt.kind}",
                                gvk, tag, params=_LIST_PARAMS, response=list_schema)
    if "create" in verbs:
        col["post"] = _operation("post", f"create{gv}{scope}{rt.kind}", f"create a {rt.kind}", gvk, tag,
                                 params=_WRITE_PARAMS, response=kind_schema, codes=("200", "201", "202"),
                                 body=body_kind)
    if "deletecollection" in verbs:
        col["delete"] = _operation("deletecollection", f"delete{gv}Collection{scope}{rt.kind}",
                                   f"delete collection of {rt.kind}", gvk, tag,
                                   params=_LIST_PARAMS + _DELETE_PARAMS, response=status, body=delete_body)
    if col:
        col["parameters"] = scope_params + [_P["pretty"]]
        paths[collection] = col

    one: dict[str, Any] = {}
    if "get" in verbs:
        one["get"] = _operation("get", f"read{gv}{scope}{rt.kind}", f"read the specified {rt.kind}", gvk, tag,
                                response=kind_schema)
    if "update" in verbs:
        one["put"] = _operation("put", f"replace{gv}{scope}{rt.kind}", f"replace the specified {rt.kind}",
                                gvk, tag, params=_WRITE_PARAMS, response=kind_schema, codes=("200", "201"),
                                body=body_kind)
    if "patch" in verbs:
        one["patch"] = _operation("patch", f"patch{gv}{scope}{rt.kind}", f"partially update the specified "
                                  f"{rt.kind}", gvk, tag, params=_WRITE_PARAMS + ("force",),
                                  response=kind_schema, codes=("200", "201"), body=patch_body)
    if "delete" in verbs:
        one["delete"] = _operation("delete", f"delete{gv}{scope}{rt.kind}", f"delete a {rt.kind}", gvk, tag,
                                   params=_DELETE_PARAMS, response=status, codes=("200", "202"),
                                   body=delete_body)
    if one:
        one["parameters"] = [name_param] + scope_params + [_P["pretty"]]
        paths[item] = one

    if rt.namespaced and "list" in verbs:
        paths[f"{prefix}/{rt.plural}"] = {
            "get": _operation("list", f"list{gv}{rt.kind}ForAllNamespaces",
                              f"list or watch objects of kind {rt.kind}", gvk, tag, params=_LIST_PARAMS,
                              response=list_schema),
            "parameters": [_P["pretty"]],
        }

    for sub in rt.subresources:
        if sub in STREAMING:  # connect operations: nothing a client validates against
            continue
        sub_path = f"{item}/{sub}"
        suffix = sub.capitalize()
        params = [name_param] + scope_params
        if sub == "log":
            op = _operation("get", f"read{gv}{scope}{rt.kind}Log", f"read log of the specified {rt.kind}",
                            gvk, tag, params=("container", "follow", "limitBytes", "previous",
                                              "sinceSeconds", "tailLines", "timestamps"),
                            response=kind_schema)
            op["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
            paths[sub_path] = {"get": op, "parameters": params + [_P["pretty"]]}
            continue
        if sub == "scale":
            sub_gvk = {"group": "autoscaling", "kind": "Scale", "version": "v1"}
            sub_schema = "io.k8s.api.autoscaling.v1.Scale"
            sub_body = {"content": {"*/*": {"schema": _ref(sub_schema)}}, "required": True}
        else:
            sub_gvk, sub_schema, sub_body = gvk, kind_schema, body_kind
        paths[sub_path] = {
            "get": _operation("get", f"read{gv}{scope}{rt.kind}{suffix}",
                              f"read {sub} of the specified {rt.kind}", sub_gvk, tag, response=sub_schema),
            "put": _operation("put", f"replace{gv}{scope}{rt.kind}{suffix}",
                              f"replace {sub} of the specified {rt.kind}", sub_gvk, tag, params=_WRITE_PARAMS,
                              response=sub_schema, codes=("200", "201"), body=sub_body),
            "patch": _operation("patch", f"patch{gv}{scope}{rt.kind}{suffix}",
                                f"partially update {sub} of the specified {rt.kind}", sub_gvk, tag,
                                params=_WRITE_PARAMS + ("force",), response=sub_schema, codes=("200", "201"),
                                body=patch_body),
            "parameters": params + [_P["pretty"]],
        }
    return paths


# ---- custom resources -----------------------------------------------------------


def _crd_schemas(rt: ResourceType) -> dict[str, dict]:
    """The kind and list schemas of a CRD version, shaped as kube-apiserver publishes them."""
    kind_name, list_name = _crd_schema_name(rt, rt.kind), _crd_schema_name(rt, rt.list_kind)
    gvk = [{"group": rt.group, "kind": rt.kind, "version": rt.version}]
    base = json.loads(json.dumps(rt.schema)) if rt.schema else {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    props = dict(base.get("properties") or {})
    props["apiVersion"] = {"description": "APIVersion defines the versioned schema of this representation "
                           "of an object.", "type": "string"}
    props["kind"] = {"description": "Kind is a string value representing the REST resource this object "
                     "represents.", "type": "string"}
    props["metadata"] = {"allOf": [_ref(_META + "ObjectMeta")],
                         "description": "Standard object's metadata."}
    kind_schema = {**base, "type": "object", "properties": props, "x-kubernetes-group-version-kind": gvk}
    list_schema = {
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "type": "object", "required": ["items"],
        "properties": {
            "apiVersion": props["apiVersion"], "kind": props["kind"],
            "items": {"description": f"List of {rt.plural}.", "type": "array", "items": _ref(kind_name)},
            "metadata": {"allOf": [_ref(_META + "ListMeta")], "description": "Standard list metadata."},
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "kind": rt.list_kind, "version": rt.version}],
    }
    return {kind_name: kind_schema, list_name: list_schema}


# ---- documents --------------------------------------------------------------------


def _gv_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _build(types: list[ResourceType], group: str, version: str) -> dict:
    defs = definitions(False)
    tag = _tag(group, version)
    paths: dict[str, dict] = {}
    builtin_roots = [_META + n for n in ("APIResourceList", "DeleteOptions", "Patch", "Status", "WatchEvent")]
    custom: dict[str, dict] = {}
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths[prefix + "/"] = {"get": {
        "tags": [tag], "description": "get available resources",
        "operationId": f"get{_camel(group)}{version[:1].upper()}{version[1:]}APIResources",
        "responses": _responses(_META + "APIResourceList"),
    }}
    for rt in types:
        kind_def = None if rt.crd else definition_name(rt.api_version, rt.kind)
        list_def = None if rt.crd else definition_name(rt.api_version, rt.list_kind)
        if kind_def is None or list_def is None:
            crd = _crd_schemas(rt)
            custom.update(crd)
            kind_def, list_def = list(crd)
            builtin_roots += [_META + "ObjectMeta", _META + "ListMeta"]
        else:
            builtin_roots += [kind_def, list_def]
        if "scale" in rt.subresources:
            builtin_roots.append("io.k8s.api.autoscaling.v1.Scale")
        paths.update(_paths_for(rt, kind_def, list_def))
    schemas = {name: _convert(defs[name]) for name in _closure(builtin_roots)}
    schemas.update(custom)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                                "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    }


class _Cache:
    """Serialized documents keyed by what they are built from, so unchanged ones are never rebuilt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.docs: dict[str, tuple[str, bytes, str]] = {}  # gv key -> (fingerprint, bytes, etag)

    def get(self, registry: Registry, group: str, version: str) -> tuple[bytes, str] | None:
        types = [t for t in registry.all() if t.group == group and t.version == version]
        if not types:
            return None
        fingerprint = json.dumps([(t.plural, t.kind, t.namespaced, t.verbs, t.subresources, t.crd, t.schema)
                                  for t in types], sort_keys=True, default=str)
        key = _gv_key(group, version)
        with self.lock:
            hit = self.docs.get(key)
            if hit and hit[0] == fingerprint:
                return hit[1], hit[2]
        data = json.dumps(_build(types, group, version), separators=(",", ":")).encode()
        etag = hashlib.sha512(data).hexdigest().upper()
        with self.lock:
            self.docs[key] = (fingerprint, data, etag)
        return data, etag


_CACHE = _Cache()


def _document_bytes(registry: Registry, group: str, version: str) -> tuple[bytes, str] | None:
    return _CACHE.get(registry, group, version)


def v3_document(registry: Registry, group: str, version: str) -> dict | None:
    """The OpenAPI v3 document of one group-version (``group=""`` for core), or None if not served."""
    found = _document_bytes(registry, group, version)
    return json.loads(found[0]) if found else None


def _server_relative_url(key: str, etag: str) -> str:
    return f"/openapi/v3/{key}?hash={etag}"


def v3_index(registry: Registry) -> dict:
    """The ``/openapi/v3`` index: every served group-version with its hashed URL."""
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            found = _document_bytes(registry, group, version)
            if found:
                key = _gv_key(group, version)
                paths[key] = {"serverRelativeURL": _server_relative_url(key, found[1])}
    return {"paths": dict(sorted(paths.items()))}


def _not_found(path: str) -> tuple[int, dict[str, str], bytes]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound",
            "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
            "code": 404}
    return 404, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _accepts_json(accept: str) -> bool:
    if not accept:
        return True
    for clause in accept.split(","):
        media = clause.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            return True
    return False


def respond(registry: Registry, path: str, query: str | dict = "", headers: dict | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
    """Answer ``GET /openapi/...``: ``(status, headers, body)`` with kube-openapi's caching headers.

    ``path`` is the URL path, ``query`` the raw query string (or parsed dict),
    ``headers`` the request headers (``Accept``, ``If-None-Match`` are read).
    """
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    params = parse_qs(query) if isinstance(query, str) else query
    hash_param = params.get("hash")
    wanted_hash = hash_param[0] if isinstance(hash_param, list) else hash_param
    path = path.rstrip("/") or "/"
    now = formatdate(usegmt=True)
    if path == "/openapi/v3":
        data = json.dumps(v3_index(registry), separators=(",", ":")).encode()
        etag = hashlib.sha512(data).hexdigest().upper()
        out = {"Content-Type": "application/json", "Etag": f'"{etag}"', "Last-Modified": now}
        if headers.get("if-none-match") == f'"{etag}"':
            return 304, {"Etag": f'"{etag}"'}, b""
        return 200, out, data
    if path.startswith("/openapi/v3/"):
        key = path[len("/openapi/v3/"):]
        parts = key.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return _not_found(path)
        found = _document_bytes(registry, group, version)
        if found is None:
            return _not_found(path)
        if not _accepts_json(headers.get("accept", "")):
            return 406, {"Content-Type": "text/plain"}, b"only application/json is served here\n"
        data, etag = found
        if wanted_hash and wanted_hash != etag:
            return 301, {"Location": _server_relative_url(key, etag), "Content-Type": "text/html"}, b""
        out = {"Content-Type": "application/json", "Etag": f'"{etag}"', "Vary": "Accept", "Last-Modified": now}
        if wanted_hash:
            out["Cache-Control"] = "public, immutable"
            out["Expires"] = formatdate(time.time() + 365 * 24 * 3600, usegmt=True)
        if headers.get("if-none-match") == f'"{etag}"':
            return 304, {k: v for k, v in out.items() if k != "Content-Type"}, b""
        return 200, out, data
    # /openapi/v2 (gnostic protobuf) is deliberately not served: kubectl 1.32 reads v3 first and
    # only falls back to v2 when v3 fails (see the module docstring).
    return _not_found(path)

