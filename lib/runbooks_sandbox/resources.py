"""What the sandbox API serves: resource types, and the discovery documents built from them.

One table of built-in types (group, version, plural, kind, scope, short names,
categories, subresources) drives routing, discovery, OpenAPI and Tables, so a
type is declared once. CustomResourceDefinitions add types at run time exactly
the way the real API server does: creating a CRD serves its resources.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

#: Connect subresources: upgraded to a stream (WebSocket), served by streams.py and kubelet.py.
STREAMING = {"exec": "PodExecOptions", "attach": "PodAttachOptions", "portforward": "PodPortForwardOptions"}
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class PrinterColumn:
    """A Table column: `json_path` for CRDs (additionalPrinterColumns), else computed by tables.py."""

    name: str
    type: str = "string"
    json_path: str = ""
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "log", STREAMING, "ephemeralcontainers"
    verbs: tuple[str, ...] = ALL_VERBS
    printer_columns: tuple[PrinterColumn, ...] = ()  # CRDs only
    schema: dict | None = field(default=None, compare=False, hash=False)  # CRD openAPIV3Schema
    crd: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: group and plural (one stored version per resource)."""
        return (self.group, self.plural)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


def _rt(api_version: str, plural: str, kind: str, namespaced: bool = True, **kw) -> ResourceType:
    group, _, version = api_version.rpartition("/")
    kw.setdefault("singular", kind.lower())
    return ResourceType(group, version, plural, kind, namespaced, **kw)


BUILTIN: tuple[ResourceType, ...] = (
    _rt("v1", "namespaces", "Namespace", False, short_names=("ns",), subresources=("status",)),
    _rt("v1", "nodes", "Node", False, short_names=("no",), subresources=("status",)),
    _rt("v1", "pods", "Pod", short_names=("po",), categories=("all",),
        subresources=("status", "log", "exec", "attach", "portforward", "ephemeralcontainers")),
    _rt("v1", "services", "Service", short_names=("svc",), categories=("all",), subresources=("status",)),
    _rt("v1", "endpoints", "Endpoints", short_names=("ep",), singular="endpoints"),
    _rt("v1", "events", "Event", short_names=("ev",)),
    _rt("v1", "secrets", "Secret"),
    _rt("v1", "configmaps", "ConfigMap", short_names=("cm",)),
    _rt("v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _rt("apps/v1", "deployments", "Deployment", short_names=("deploy",), categories=("all",),
        subresources=("status", "scale")),
    _rt("apps/v1", "replicasets", "ReplicaSet", short_names=("rs",), categories=("all",),
        subresources=("status", "scale")),
    _rt("apps/v1", "statefulsets", "StatefulSet", short_names=("sts",), categories=("all",),
        subresources=("status", "scale")),
    _rt("apps/v1", "daemonsets", "DaemonSet", short_names=("ds",), categories=("all",),
        subresources=("status",)),
    _rt("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
    _rt("networking.k8s.io/v1", "ingresses", "Ingress", short_names=("ing",), subresources=("status",)),
    _rt("networking.k8s.io/v1", "ingressclasses", "IngressClass", False),
    _rt("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", short_names=("hpa",),
        categories=("all",), subresources=("status",)),
    _rt("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",),
        subresources=("status",)),
    _rt("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        short_names=("crd", "crds"), categories=("api-extensions",), subresources=("status",)),
)


def from_crd(crd: dict) -> list[ResourceType]:
    """The resource types a CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    out = []
    for v in spec.get("versions", []):
        if not v.get("served", True):
            continue
        cols = tuple(
            PrinterColumn(
                name=c["name"], type=c.get("type", "string"), json_path=c.get("jsonPath", ""),
                description=c.get("description", ""), priority=c.get("priority", 0),
                format=c.get("format", ""),
            )
            for c in v.get("additionalPrinterColumns", [])
        )
        subs = tuple(s for s in ("status", "scale") if s in (v.get("subresources") or {}))
        out.append(ResourceType(
            group=spec["group"], version=v["name"], plural=names["plural"], kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", names["kind"].lower()),
            short_names=tuple(names.get("shortNames", [])), categories=tuple(names.get("categories", [])),
            subresources=subs, printer_columns=cols,
            schema=(v.get("schema") or {}).get("openAPIV3Schema"), crd=True,
        ))
    return out


class Registry:
    """The served resource types, looked up by URL parts or by apiVersion+kind."""

    def __init__(self, types: tuple[ResourceType, ...] = BUILTIN):
        self._lock = threading.Lock()
        self._types: list[ResourceType] = list(types)
        self._crd_types: dict[str, list[ResourceType]] = {}  # CRD name -> its types

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.all():
            if rt.group == group and rt.version == version and rt.plural == plural:
                return rt
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self.all():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def by_kind_any_version(self, kind: str, group: str | None = None) -> ResourceType | None:
        for rt in self.all():
            if rt.kind == kind and (group is None or rt.group == group):
                return rt
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """group -> served versions, in registration order ("" is the core group)."""
        out: dict[str, list[str]] = {}
        for rt in self.all():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def install_crd(self, crd: dict) -> None:
        name = crd["metadata"]["name"]
        new = from_crd(crd)
        with self._lock:
            old = self._crd_types.pop(name, [])
            self._types = [t for t in self._types if t not in old] + new
            self._crd_types[name] = new

    def remove_crd(self, name: str) -> list[ResourceType]:
        with self._lock:
            old = self._crd_types.pop(name, [])
            self._types = [t for t in self._types if t not in old]
            return old

    # ---- discovery documents -------------------------------------------------

    def api_versions(self) -> dict:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }

    def api_group_list(self) -> dict:
        groups = []
        for group, versions in self.group_versions().items():
            if not group:
                continue
            gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
            groups.append({"name": group, "versions": gvs, "preferredVersion": gvs[0]})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_group(self, group: str) -> dict | None:
        versions = self.group_versions().get(group)
        if not group or not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
                "preferredVersion": gvs[0]}

    def resource_list(self, group: str, version: str) -> dict | None:
        types = [t for t in self.all() if t.group == group and t.version == version]
        if not types:
            return None
        resources = []
        for t in types:
            entry = {
                "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
                "kind": t.kind, "verbs": list(t.verbs),
            }
            if t.short_names:
                entry["shortNames"] = list(t.short_names)
            if t.categories:
                entry["categories"] = list(t.categories)
            resources.append(entry)
            for sub in t.subresources:
                verbs = ["get"] if sub == "log" else ["create", "get"] if sub in STREAMING else \
                    ["get", "patch", "update"]
                kind = "Pod" if sub == "log" else "Scale" if sub == "scale" else STREAMING.get(sub, t.kind)
                sub_entry = {"name": f"{t.plural}/{sub}", "singularName": "", "namespaced": t.namespaced,
                             "kind": kind, "verbs": verbs}
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1")
                resources.append(sub_entry)
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
