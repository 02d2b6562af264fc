"""Ingress semantics as ingress-nginx applies them: host and path matching, the class of an
Ingress, which rule claims a request, which Deployments run a class's controller.

Pure functions on Ingress, IngressClass and Deployment objects (plain dicts), so that
the rule selection is tested on data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
INGRESS_NGINX_CONTROLLER = "k8s.io/ingress-nginx"


def host_matches(pattern: str, host: str) -> bool:
    """Ingress host matching: exact, or ``*.example.com`` covering exactly one more label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix) and "." not in host[: -len(suffix)]
    return pattern == host


def path_matches(path_type: str, want: str, path: str, annotations: Mapping[str, str] | None = None) -> bool:
    """Does a request path match an Ingress path, as ingress-nginx matches it?

    ``Exact``: the same string. ``Prefix``: element-wise (``/foo`` matches ``/foo`` and
    ``/foo/bar``, not ``/foobar``). ``ImplementationSpecific``: an nginx location, a plain
    string prefix, or a case-insensitive regular expression anchored at the start when the
    Ingress has ``use-regex`` or ``rewrite-target``.

    >>> path_matches("Prefix", "/api", "/api/v1"), path_matches("Prefix", "/api", "/apix")
    (True, False)
    >>> path_matches("ImplementationSpecific", "/api", "/apix")
    True
    """
    annotations = annotations or {}
    if path_type == "Exact":
        return path == want
    if path_type == "Prefix":
        base = want.rstrip("/")
        return want == "/" or path == base or path.startswith(base + "/")
    if annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true" or \
            "nginx.ingress.kubernetes.io/rewrite-target" in annotations:
        try:
            return re.match(want, path, re.IGNORECASE) is not None
        except re.error:
            return False
    return path.startswith(want)


def qualified_name(o: dict) -> str:
    """``namespace/name`` of an object."""
    return f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"


def ingress_class_of(ing: dict, classes: Mapping[str, dict]) -> str | None:
    """``spec.ingressClassName``, else the legacy annotation, else the default IngressClass."""
    cls = (ing.get("spec") or {}).get("ingressClassName") or \
        (ing["metadata"].get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if cls:
        return cls
    defaults = [n for n, c in classes.items()
                if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    return defaults[0] if len(defaults) == 1 else None


@dataclass
class Claim:
    """One Ingress path that claims the host and path."""

    ingress: dict
    path: str
    path_type: str
    backend: dict  # backend.service
    rank: tuple[int, int]

    @property
    def key(self) -> str:
        return qualified_name(self.ingress)

    @property
    def created(self) -> str:
        return self.ingress["metadata"].get("creationTimestamp") or ""


def claims(ingresses: Iterable[dict], host: str, path: str) -> list[Claim]:
    """Ingress paths claiming host+path, best first (longest, Exact before prefix, then oldest)."""
    out = []
    for ing in ingresses:
        annotations = ing["metadata"].get("annotations") or {}
        for rule in (ing.get("spec") or {}).get("rules") or []:
            if not rule.get("host") or not host_matches(rule["host"], host):
                continue
            for p in (rule.get("http") or {}).get("paths") or []:
                want, kind = p.get("path") or "/", p.get("pathType") or "ImplementationSpecific"
                svc = (p.get("backend") or {}).get("service")
                if svc and path_matches(kind, want, path, annotations):
                    exact_host = 1 if not rule["host"].startswith("*.") else 0
                    out.append(Claim(ing, want, kind, svc, (exact_host, len(want), 1 if kind == "Exact" else 0)))
    out.sort(key=lambda c: (tuple(-x for x in c.rank), c.created, c.key))
    return out


def controllers_for(class_obj: dict, deployments: Iterable[dict]) -> list[dict]:
    """Deployments running the controller an IngressClass names (``--controller-class``;
    ingress-nginx's default is ``k8s.io/ingress-nginx``)."""
    want = (class_obj.get("spec") or {}).get("controller") or ""
    out = []
    for d in deployments:
        for c in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            args = [*(c.get("command") or []), *(c.get("args") or [])]
            named = [a.split("=", 1)[1] for a in args if a.startswith("--controller-class=")]
            is_nginx = any("nginx-ingress-controller" in a for a in args) or "ingress-nginx/controller" in \
                (c.get("image") or "")
            if want in named or (not named and is_nginx and want == INGRESS_NGINX_CONTROLLER):
                out.append(d)
                break
    return out
