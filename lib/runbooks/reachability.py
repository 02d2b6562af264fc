"""service-reachability: follow one host from DNS to the pods and name the broken link.

"https://checkout.shop.example.com is down" can break at any link of one chain:
DNS (records ExternalDNS registers) → load balancer → ingress-nginx (name-based
routing, TLS termination) → Service → ready endpoints → pods. Each part is
checked elsewhere (cluster-health, certificate-rotation); this module walks the
chain for one host, in order, and keeps going after a broken hop so one run
shows everything that is wrong. The first red hop is the headline.

The cluster is read once (:func:`snapshot`: raw paginated lists of the kinds the
chain touches, listed concurrently), then each host is judged in memory; the
network checks (DNS queries, one HTTPS request per host through the ingress,
which also yields the certificate presented for the SNI) run concurrently with
a bound. Prometheus (5xx ratio and p99 per host) and the log store (the
controller's upstream errors) are asked once for all hosts. Nothing is changed:
each red hop names the object, the fix and the next runbook to run.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import certs, kube
from .errors import SOURCE_ERRORS, InvalidInput, cut
from .model import Finding

HOPS: tuple[str, ...] = ("dns", "ingress", "tls", "backend", "probe")
"""The hops, in the order a request crosses them."""

MANY_HOSTS = 20
"""Above this many hosts, reachable hosts share one ``ok`` finding and the chain shows broken hosts only."""

HOP_TITLES = {"dns": "DNS", "ingress": "Ingress", "tls": "TLS", "backend": "Backend", "probe": "Live probe"}

ROUTING_ANNOTATIONS = (
    "nginx.ingress.kubernetes.io/rewrite-target",
    "nginx.ingress.kubernetes.io/use-regex",
    "nginx.ingress.kubernetes.io/ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/backend-protocol",
    "nginx.ingress.kubernetes.io/app-root",
    "nginx.ingress.kubernetes.io/permanent-redirect",
    "nginx.ingress.kubernetes.io/temporal-redirect",
)
"""ingress-nginx annotations that change where or how a request is routed (listed per host)."""

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
INGRESS_NGINX_CONTROLLER = "k8s.io/ingress-nginx"

FIVE_XX_QUERY = (
    '(sum by (host) (rate(nginx_ingress_controller_requests{{status=~"5..",{sel}}}[15m]))'
    ' or sum by (host) (rate(nginx_ingress_controller_requests{{{sel}}}[15m])) * 0)'
    ' / sum by (host) (rate(nginx_ingress_controller_requests{{{sel}}}[15m]))'
)
P99_QUERY = (
    "histogram_quantile(0.99, sum by (host, le) "
    "(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{sel}}}[15m])))"
)


# ---- the cluster, read once -------------------------------------------------------------


@dataclass
class Snapshot:
    """The objects the chain touches, listed once (plain dicts)."""

    ingresses: list[dict]
    classes: dict[str, dict]
    services: dict[tuple[str, str], dict]
    slices: dict[tuple[str, str], list[dict]]  # (namespace, service) → EndpointSlices
    pods: dict[tuple[str, str], dict]
    secrets: dict[tuple[str, str], Any]  # kube.SecretKeys (certificates only) or Secret dicts
    deployments: list[dict]
    events: dict[tuple[str, str], list[dict]]  # (namespace, pod) → recent Warning events
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def hosts(self) -> list[str]:
        """Every host an Ingress rule names (sorted)."""
        return sorted({r["host"].lower() for i in self.ingresses for r in (i.get("spec") or {}).get("rules") or []
                       if r.get("host")})


def snapshot(cluster: kube.Cluster, *, event_window_hours: int = 1, workers: int = 8) -> Snapshot:
    """List Ingresses, IngressClasses, Services, EndpointSlices, pods, TLS Secrets, Deployments and
    recent Warning events, concurrently (raw, paginated)."""
    lists: dict[str, Callable[[], Any]] = {
        "ingresses": lambda: list(kube.iter_objects(cluster, "ingresses")),
        "classes": lambda: list(kube.iter_objects(cluster, "ingressclasses")),
        "services": lambda: list(kube.iter_objects(cluster, "services")),
        "slices": lambda: list(kube.iter_objects(cluster, "endpointslices")),
        "pods": lambda: list(kube.iter_objects(cluster, "pods")),
        "secrets": lambda: list(kube.iter_secret_keys(cluster, keys=kube.CERTIFICATE_KEYS,  # certificates only
                                                      field_selector=f"type={certs.TLS_TYPE}")),
        "deployments": lambda: list(kube.iter_objects(cluster, "deployments")),
        "events": lambda: kube.events(cluster, None, since=timedelta(hours=event_window_hours),
                                      warnings_only=True),
    }
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {k: pool.submit(fn) for k, fn in lists.items()}
        got = {k: f.result() for k, f in futures.items()}

    def key(o: dict) -> tuple[str, str]:
        return (o["metadata"].get("namespace") or "", o["metadata"]["name"])

    slices: dict[tuple[str, str], list[dict]] = {}
    for s in got["slices"]:
        svc = (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            slices.setdefault((s["metadata"].get("namespace") or "", svc), []).append(s)
    events: dict[tuple[str, str], list[dict]] = {}
    for e in got["events"]:  # kube.events rows: namespace, reason, object "Kind/name"
        kind, _, name = str(e.get("object") or "").partition("/")
        if kind == "Pod":
            events.setdefault((e.get("namespace") or "", name), []).append(e)
    return Snapshot(
        ingresses=got["ingresses"], classes={c["metadata"]["name"]: c for c in got["classes"]},
        services={key(s): s for s in got["services"]}, slices=slices, pods={key(p): p for p in got["pods"]},
        secrets={(s.namespace, s.name): s for s in got["secrets"]}, deployments=got["deployments"], events=events,
    )


# ---- results -----------------------------------------------------------------------------


@dataclass
class Hop:
    """The verdict on one hop for one host: ``ok`` True (green), False (red) or None (not checked)."""

    name: str
    ok: bool | None
    reason: str
    resource: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostResult:
    """One host's walk down the chain."""

    host: str
    path: str
    hops: dict[str, Hop]
    findings: list[Finding]

    @property
    def first_broken(self) -> Hop | None:
        return next((self.hops[h] for h in HOPS if h in self.hops and self.hops[h].ok is False), None)

    @property
    def verdict(self) -> str:
        hop = self.first_broken
        return "reachable" if hop is None else f"broken at {HOP_TITLES[hop.name]}: {hop.reason}"


@dataclass
class Probe:
    """One HTTPS request through the ingress: status, latency and the certificate presented."""

    host: str
    status: int | None = None
    latency_ms: float | None = None
    body: str = ""
    sha256: str = ""
    subject: str = ""
    issuer: str = ""
    not_after: datetime | None = None
    error: str = ""


@dataclass
class DnsAnswer:
    """What one server answers for a host: addresses and CNAME targets, or an error/NXDOMAIN."""

    server: str
    addresses: list[str] = field(default_factory=list)
    cnames: list[str] = field(default_factory=list)
    status: str = "NOERROR"
    error: str = ""


@dataclass(frozen=True)
class AuthServer:
    """The authoritative server of one of dns-audit's ``dns_providers``, and the zones it serves."""

    provider: str
    nameserver: str
    zones: tuple[str, ...]

    def serves(self, host: str) -> bool:
        return any(host == z or host.endswith("." + z) for z in self.zones)

    @property
    def label(self) -> str:
        return f"{self.provider} ({self.nameserver})"


def auth_servers(providers: Mapping[str, Mapping[str, Any]]) -> list[AuthServer]:
    """The authoritative servers of dns-audit's provider settings (read with dns-audit's own parser)."""
    from . import dns

    out = []
    for name, settings in providers.items():
        prov = dns.provider(name, dict(settings))
        out.append(AuthServer(name, prov.nameserver, tuple(prov.zones)))
    return out


@dataclass
class Context:
    """What a host's checks need besides the snapshot: settings and the shared network results."""

    env: str = "this environment"
    ingress_url: str = ""
    dns_resolver: str | None = None
    dns_providers: Sequence[AuthServer] = ()
    dns: Mapping[str, list[DnsAnswer]] = field(default_factory=dict)
    probes: Mapping[str, Probe] = field(default_factory=dict)
    metrics: Mapping[str, dict[str, float]] | None = None  # host → {"ratio_5xx", "p99"}; None: not configured
    metrics_error: str = ""
    log_errors: Mapping[str, dict[str, Any]] | None = None  # upstream_errors(); None: not configured
    log_lookback: str = "15m"
    max_5xx_ratio: float = 0.05
    max_p99_seconds: float = 2.0


# ---- Ingress semantics --------------------------------------------------------------------


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


def _name(o: dict) -> str:
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
        return _name(self.ingress)

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


# ---- hops -------------------------------------------------------------------------------------


def _lb_addresses(ing: dict) -> list[str]:
    return [x.get("ip") or x.get("hostname") or "" for x in
            ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


NOT_CONFIGURED_DNS = ("set dns_providers (the ExternalDNS providers dns-audit reads) and/or dns_resolver "
                      "(host:port or 'system') in parameters/{env}/env.yaml")


def check_dns(host: str, ing: dict | None, ctx: Context) -> Hop:
    """The authoritative answers (each configured provider serving the host's zone) and the
    resolver's, compared with the Ingress's ``status.loadBalancer`` address.

    A record that is missing is its own verdict (``details['problem'] == 'missing'``), and so is
    one that answers something else than the load balancer (``'mismatch'``) and a server that
    does not answer (``'unanswered'``). With no load-balancer address on the Ingress, ExternalDNS
    has nothing to publish: a missing record is then a consequence of the Ingress hop, not a
    DNS fault, and the hop stays unjudged.
    """
    if not ctx.dns_providers and not ctx.dns_resolver:
        return Hop("dns", None, f"not configured in env {ctx.env} (" + NOT_CONFIGURED_DNS.format(env=ctx.env) + ")")
    serving = [s.label for s in ctx.dns_providers if s.serves(host)]
    if not serving and not ctx.dns_resolver:
        zones = sorted({z for s in ctx.dns_providers for z in s.zones})
        return Hop("dns", None, f"no configured DNS provider serves a zone of {host} (zones: {', '.join(zones)}) "
                                "and no dns_resolver is set")
    answers = ctx.dns.get(host) or []
    if not answers:
        return Hop("dns", None, f"no DNS server was asked about {host}" + (" (a wildcard host names no record)"
                                                                          if host.startswith("*.") else ""))
    lb = _lb_addresses(ing) if ing else []
    details: dict[str, Any] = {"load_balancer": lb, "answers": [a.__dict__ for a in answers],
                               "authoritative": serving}
    problems: dict[str, list[str]] = {"missing": [], "mismatch": [], "unanswered": []}
    for a in answers:
        what = "the resolver" if a.server == "resolver" else f"authoritative server {a.server}"
        if a.error:
            problems["unanswered"].append(f"{what} did not answer: {a.error}")
        elif not a.addresses and not a.cnames:
            problems["missing"].append(f"{what} has no record for {host} ({a.status or 'NODATA'})")
        elif lb and not (set(lb) & (set(a.addresses) | {c.rstrip('.') for c in a.cnames})):
            problems["mismatch"].append(f"{what} answers {', '.join(a.cnames + a.addresses)}, not the Ingress's "
                                        f"load balancer {', '.join(lb)}")
    found = [k for k in ("missing", "mismatch", "unanswered") if problems[k]]
    if found and not lb and found == ["missing"]:
        why = "no Ingress serves it" if ing is None else (
            f"Ingress {_name(ing)} has no status.loadBalancer address for ExternalDNS to publish")
        return Hop("dns", None, f"{host} has no DNS record, and {why} (see the Ingress hop)", None, details)
    if found:
        details["problem"] = found[0]
        text = "; ".join(p for k in found for p in problems[k])
        if found[0] == "missing":
            text += (f". ExternalDNS publishes the Ingress's load balancer ({', '.join(lb)}): check that its "
                     "instance watches this Ingress and can write the zone")
        return Hop("dns", False, text, f"DNS/{host}", details)
    asked = ", ".join(a.server for a in answers)
    return Hop("dns", True, f"{host} → {', '.join(lb) or 'an address'} ({asked})"
               + ("" if lb else "; the Ingress publishes no load balancer address to compare"), None, details)


def check_ingress(host: str, path: str, snap: Snapshot, found: list[Claim]) -> Hop:
    """Which rules claim the host and path; duplicates; class → controller, ready; annotations."""
    if not found:
        defaults = [i for i in snap.ingresses if ((i.get("spec") or {}).get("defaultBackend") or {}).get("service")]
        others = sorted({_name(i) for i in snap.ingresses for rule in (i.get("spec") or {}).get("rules") or []
                         if rule.get("host") and host_matches(rule["host"], host)})
        why = (f"Ingress(es) {', '.join(others)} serve {host} but no path matches {path}" if others
               else f"no Ingress has a rule for host {host}")
        return Hop("ingress", False, why + (f"; it falls to a defaultBackend ({_name(defaults[0])})" if defaults
                                            else "; ingress-nginx answers 404"),
                   f"Ingress/{others[0]}" if others else f"Host/{host}", {"no_ingress": not others})
    win = found[0]
    ing = win.ingress
    ns, name = ing["metadata"].get("namespace", ""), ing["metadata"]["name"]
    annotations = ing["metadata"].get("annotations") or {}
    details: dict[str, Any] = {
        "ingress": f"{ns}/{name}", "path": win.path, "pathType": win.path_type,
        "backend": f"{win.backend.get('name')}:{_port_text(win.backend.get('port') or {})}",
        "annotations": {k: v for k, v in annotations.items() if k in ROUTING_ANNOTATIONS},
        "claims": [f"{c.key} {c.path} ({c.path_type})" for c in found],
    }
    default = (ing.get("spec") or {}).get("defaultBackend")
    if default:
        details["defaultBackend"] = (default.get("service") or {}).get("name")
    cls = ingress_class_of(ing, snap.classes)
    dup = [c for c in found[1:] if c.path == win.path and c.path_type == win.path_type and c.key != win.key
           and ingress_class_of(c.ingress, snap.classes) == cls]
    problems, resource = [], f"Ingress/{ns}/{name}"
    if dup:
        problems.append(f"{len(dup) + 1} Ingresses claim {host}{win.path}: {win.key} (older, served) and "
                        f"{', '.join(c.key for c in dup)} (ignored); delete or change one of them")
        details["duplicates"] = [c.key for c in dup]
    if cls is None:
        problems.append(f"Ingress {ns}/{name} has no ingressClassName and there is no single default "
                        "IngressClass: no controller serves it")
    elif cls not in snap.classes:
        problems.append(f"IngressClass {cls} (named by Ingress {ns}/{name}) does not exist")
        resource = f"IngressClass/{cls}"
    else:
        controller = (snap.classes[cls].get("spec") or {}).get("controller", "")
        runners = controllers_for(snap.classes[cls], snap.deployments)
        ready = [d for d in runners if ((d.get("status") or {}).get("readyReplicas") or 0) > 0]
        details["ingressClass"] = cls
        details["controller"] = controller
        details["controller_deployments"] = [_name(d) for d in runners]
        if not runners:
            problems.append(f"IngressClass {cls} names controller {controller}, which no Deployment runs: "
                            f"nothing serves Ingress {ns}/{name} (move it to a served class or deploy the "
                            "controller)")
            resource = f"IngressClass/{cls}"
        elif not ready:
            problems.append(f"the controller of IngressClass {cls} ({', '.join(_name(d) for d in runners)}) has "
                            "no ready replica")
            resource = f"Deployment/{_name(runners[0])}"
    if problems:
        return Hop("ingress", False, "; ".join(problems), resource, details)
    notes = ", ".join(f"{k.rsplit('/', 1)[1]}={v}" for k, v in details["annotations"].items())
    return Hop("ingress", True, f"{ns}/{name} {win.path} ({win.path_type}) → {details['backend']}, class {cls}"
               + (f"; {notes}" if notes else ""), resource, details)


def _port_text(port: Mapping[str, Any]) -> str:
    return str(port.get("name") or port.get("number") or "?")


def check_tls(host: str, ing: dict | None, snap: Snapshot, probe: Probe | None) -> Hop:
    """A TLS section covers the host; its Secret exists and holds a valid certificate whose SANs
    cover the host, with a complete chain; the ingress serves that certificate."""
    if ing is None:
        return Hop("tls", None, "no Ingress: nothing to check")
    ns, name = ing["metadata"].get("namespace", ""), ing["metadata"]["name"]
    sections = [t for t in (ing.get("spec") or {}).get("tls") or []
                if any(host_matches(h, host) for h in t.get("hosts") or [])]
    if not sections or not sections[0].get("secretName"):
        return Hop("tls", False, f"no TLS section of Ingress {ns}/{name} covers {host}: the ingress serves "
                                 "its default (fake) certificate; add the host to spec.tls",
                   f"Ingress/{ns}/{name}")
    secret_name = sections[0]["secretName"]
    resource = f"Secret/{ns}/{secret_name}"
    secret = snap.secrets.get((ns, secret_name))
    if secret is None:
        return Hop("tls", False, f"TLS Secret {ns}/{secret_name} does not exist: the ingress serves its "
                                 "default (fake) certificate", resource)
    info = certs.read_tls_secret(secret, check_key=False)
    details: dict[str, Any] = {"secret": f"{ns}/{secret_name}", "sha256": info.sha256}
    if info.error or info.leaf is None:
        return Hop("tls", False, f"TLS Secret {ns}/{secret_name}: {info.error}", resource, details)
    leaf, problems = info.leaf, []
    details.update(not_after=leaf.not_after.isoformat(), issuer=leaf.issuer, sans=leaf.dns_names)
    days = leaf.days_left(snap.now)
    if days < 0:
        problems.append(f"its certificate expired {-days:.0f} day(s) ago ({leaf.not_after:%Y-%m-%d})")
    elif leaf.not_before > snap.now:
        problems.append(f"its certificate is not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC")
    if not certs.host_covered(host, leaf.dns_names):
        problems.append(f"its SANs ({', '.join(leaf.dns_names) or 'none'}) do not cover {host}")
    if not info.chain_complete or not info.chain_in_order:
        problems.append(f"its chain is broken: {info.chain_problem}")
    if probe is not None and not probe.error and probe.sha256:
        details["served_sha256"] = probe.sha256
        if probe.sha256 != info.sha256:
            problems.append(f"the ingress serves another certificate for {host} ({certs.common_name(probe.subject)}, "
                            f"sha256 {probe.sha256[:16]}…) than the Secret holds ({info.sha256[:16]}…)")
    if problems:
        return Hop("tls", False, f"TLS Secret {ns}/{secret_name}: " + "; ".join(problems), resource, details)
    return Hop("tls", True, f"{ns}/{secret_name} valid for {days:.0f} more day(s), covers {host}"
               + (", served" if probe is not None and probe.sha256 else ""), resource, details)


def _find_port(pod: dict, target: Any, protocol: str = "TCP") -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and cp.get("protocol", "TCP") == protocol:
                return cp.get("containerPort")
    return None


def _selects(selector: Mapping[str, str], pod: dict) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _ready(pod: dict) -> bool:
    return kube.condition(pod, "Ready").get("status") == "True"


def check_backend(ns: str, backend: Mapping[str, Any] | None, snap: Snapshot) -> tuple[Hop, list[Finding]]:
    """The Service and its port, the targetPort against the pods' container ports, ready
    EndpointSlice endpoints, and the pods behind them (ready, restarts, Warning events)."""
    if not backend:
        return Hop("backend", None, "no backend to check"), []
    svc_name, want = backend.get("name", ""), backend.get("port") or {}
    resource = f"Service/{ns}/{svc_name}"
    svc = snap.services.get((ns, svc_name))
    if svc is None:
        return Hop("backend", False, f"Service {ns}/{svc_name} does not exist (the ingress answers 503)",
                   resource), []
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return Hop("backend", True, f"ExternalName Service → {spec.get('externalName')}", resource), []
    port = next((p for p in spec.get("ports") or [] if ("name" in want and p.get("name") == want["name"])
                 or ("number" in want and p.get("port") == want["number"])), None)
    if port is None:
        have = ", ".join(f"{p.get('name') or '-'}:{p.get('port')}" for p in spec.get("ports") or [])
        return Hop("backend", False, f"Service {ns}/{svc_name} has no port {_port_text(want)} (it has {have}); "
                                     "fix the Ingress backend's port or the Service", resource), []
    target = port.get("targetPort", port.get("port"))
    selector = spec.get("selector") or {}
    selected = [p for (pns, _), p in snap.pods.items() if pns == ns and _selects(selector, p)
                and (p.get("status") or {}).get("phase") in ("Running", "Pending")]
    details: dict[str, Any] = {"service_port": f"{port.get('name') or '-'}:{port.get('port')}",
                               "targetPort": target, "selected_pods": len(selected)}
    if selected and isinstance(target, str) and not target.isdigit():
        unresolved = [p for p in selected if _find_port(p, target, port.get("protocol", "TCP")) is None]
        if len(unresolved) == len(selected):
            names = sorted({f"{cp.get('name') or '-'}:{cp.get('containerPort')}" for p in selected
                            for c in p["spec"].get("containers") or [] for cp in c.get("ports") or []})
            return Hop("backend", False, f"Service {ns}/{svc_name} port {port.get('name') or port.get('port')} "
                                         f"targets port '{target}', which no container of its {len(selected)} "
                                         f"pod(s) declares (they have {', '.join(names) or 'no named ports'}); "
                                         "set targetPort to the container port's name or number",
                       resource, details), []
    elif selected and isinstance(target, int):
        declared = {cp.get("containerPort") for p in selected for c in p["spec"].get("containers") or []
                    for cp in c.get("ports") or []}
        if declared and target not in declared:
            details["note"] = f"targetPort {target} is not among the declared container ports {sorted(declared)}"
    slices = snap.slices.get((ns, svc_name), [])
    ready_pods, not_ready = [], []
    for s in slices:
        if not any((sp.get("name") or "") == (port.get("name") or "") for sp in s.get("ports") or []):
            continue
        for ep in s.get("endpoints") or []:
            ref = (ep.get("targetRef") or {}).get("name") or (ep.get("addresses") or [""])[0]
            (ready_pods if (ep.get("conditions") or {}).get("ready", True) else not_ready).append(ref)
    details.update(ready_endpoints=len(ready_pods), not_ready_endpoints=len(not_ready))
    findings: list[Finding] = []
    pods_info = []
    for name in sorted(set(ready_pods) | set(not_ready)):
        pod = snap.pods.get((ns, name))
        if pod is None:
            continue
        restarts = sum(s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])
        warnings = snap.events.get((ns, name), [])
        pods_info.append({"pod": name, "ready": _ready(pod), "restarts": restarts,
                          "warning_events": sorted({e.get("reason", "") for e in warnings})})
    details["pods"] = pods_info
    if not ready_pods:
        why = ("its selector matches no pod" if not selected else
               f"none of its {len(selected)} pod(s) is ready")
        if selected and not slices:
            why = "no EndpointSlice lists its pods"
        return Hop("backend", False, f"Service {ns}/{svc_name} has no ready endpoints ({why}): the ingress "
                                     "answers 503", resource, details), findings
    troubled = [p for p in pods_info if p["restarts"] or p["warning_events"] or not p["ready"]]
    text = f"{ns}/{svc_name}:{port.get('port')} → {len(ready_pods)} ready endpoint(s)"
    if not_ready:
        text += f", {len(not_ready)} not ready"
    if troubled:
        text += "; " + ", ".join(f"{p['pod']} ({p['restarts']} restarts"
                                 + (f", {'/'.join(p['warning_events'])}" if p["warning_events"] else "") + ")"
                                 for p in troubled[:3])
    return Hop("backend", True, text, resource, details), findings


def check_probe(host: str, path: str, ctx: Context, upstream: str | None, service: str | None = None) -> Hop:
    """The live request through the ingress; with Prometheus, 5xx ratio and p99 over 15 minutes;
    with logs, the controller's upstream errors."""
    details: dict[str, Any] = {}
    problems, notes = [], []
    ok: bool | None = None
    probe = ctx.probes.get(host)
    if probe is None:
        notes.append(f"no ingress_url in env {ctx.env}: no live request")
    elif probe.error:
        problems.append(f"https://{host}{path} through {ctx.ingress_url} failed: {probe.error}")
    else:
        details.update(status=probe.status, latency_ms=probe.latency_ms, certificate=probe.subject,
                       sha256=probe.sha256)
        status = probe.status or 0
        if status >= 500 or status == 404 or status == 0:
            problems.append(f"https://{host}{path} answers {status} in {probe.latency_ms:.0f} ms"
                            + (f" ({cut(probe.body, 120)})" if probe.body else ""))
        else:
            ok = True
            notes.append(f"{status} in {probe.latency_ms:.0f} ms, certificate {certs.common_name(probe.subject) or '-'}")
    if ctx.metrics is None:
        notes.append(ctx.metrics_error or "Prometheus not configured")
    else:
        m = ctx.metrics.get(host) or {}
        ratio, p99 = m.get("ratio_5xx"), m.get("p99")
        details.update(ratio_5xx_15m=ratio, p99_seconds_15m=p99)
        if ratio is not None and ratio == ratio:  # not NaN
            if ratio > ctx.max_5xx_ratio:
                problems.append(f"5xx ratio {ratio:.1%} over the last 15 minutes (> {ctx.max_5xx_ratio:.0%})")
            else:
                notes.append(f"5xx {ratio:.2%}")
        if p99 is not None and p99 == p99:
            if p99 > ctx.max_p99_seconds:
                problems.append(f"p99 latency {p99:.2f} s over the last 15 minutes (> {ctx.max_p99_seconds} s)")
            else:
                notes.append(f"p99 {p99 * 1000:.0f} ms")
    if ctx.log_errors is not None:
        text, evidence = log_note(host, upstream, service, ctx.log_errors, ctx.log_lookback)
        details["upstream_errors"] = evidence
        (problems if evidence and problems else notes).append(text)
    if problems:
        return Hop("probe", False, "; ".join(problems), f"Host/{host}", details)
    if ok is None and not ctx.metrics:
        return Hop("probe", None, "; ".join(notes), None, details)
    return Hop("probe", True, "; ".join(notes), None, details)


# ---- next runbook ---------------------------------------------------------------------------


def next_step(hop: Hop, host: str, env: str, backend_ns: str = "", backend_svc: str = "") -> str:
    """The next runbook to run for a red hop, as the exact command (read-only advice)."""
    if hop.name == "dns":
        return f"runbooks run dns-audit --env {env} -p hostnames '[\"{host}\"]'"
    if hop.name == "tls" and hop.resource and hop.resource.startswith("Secret/"):
        _, ns, name = hop.resource.split("/", 2)
        return f"runbooks run certificate-rotation --env {env} -p certificates '[\"{ns}/{name}\"]'"
    if hop.name in ("backend", "probe") and backend_ns and backend_svc:
        return f"runbooks run incident-investigation --env {env} -p namespace {backend_ns} -p service {backend_svc}"
    return ""


# ---- one host ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def check_host(host: str, path: str, snap: Snapshot, ctx: Context, *, per_host_ok: bool = True) -> HostResult:
    """Walk the chain for one host (every hop, even after a red one) and build its findings
    (``per_host_ok``: an ``ok`` finding when every hop is green)."""
    found = claims(snap.ingresses, host, path)
    win = found[0] if found else None
    ing = win.ingress if win else None
    hops: dict[str, Hop] = {}
    hops["dns"] = check_dns(host, ing, ctx)
    hops["ingress"] = check_ingress(host, path, snap, found)
    hops["tls"] = check_tls(host, ing, snap, ctx.probes.get(host))
    ns = ing["metadata"].get("namespace", "") if ing else ""
    backend = win.backend if win else None
    hops["backend"], extra = check_backend(ns, backend, snap)
    upstream = None
    if backend:
        upstream = f"{ns}-{backend.get('name')}-{_port_text(backend.get('port') or {})}"
    hops["probe"] = check_probe(host, path, ctx, upstream, f"{ns}/{backend.get('name')}" if backend else None)
    findings: list[Finding] = list(extra)
    first = next((h for h in HOPS if hops[h].ok is False), None)
    svc = (backend or {}).get("name", "")
    step = next_step(hops[first], host, ctx.env, ns, svc) if first else ""
    shown_path = path if path != "/" else ""
    for name in HOPS:
        hop = hops[name]
        if hop.ok is not False:
            continue
        code = "no-ingress" if name == "ingress" and hop.details.get("no_ingress") else name
        if name == "dns" and hop.details.get("problem"):
            code = f"dns-{hop.details['problem']}"
        lead = name == first
        findings.append(Finding(
            id=f"reachability/{_slug(host)}/{code}", severity="critical",
            title=f"{host}{shown_path}: {HOP_TITLES[name]} hop broken" + (" (first broken hop)" if lead else ""),
            detail=hop.reason + (f". Next: {step}" if lead and step else ""), resource=hop.resource,
            evidence={"hop": name, "first_broken": lead, "next": step if lead else "",
                      **{k: v for k, v in hop.details.items() if k in (
                          "duplicates", "controller", "sans", "targetPort", "status", "secret", "ready_endpoints",
                          "ingress", "problem", "load_balancer", "authoritative", "upstream_errors")}}))
    if first is None and per_host_ok:
        findings.append(Finding(id=f"reachability/{_slug(host)}", severity="ok",
                                title=f"{host}{shown_path}: reachable",
                                detail="; ".join(f"{HOP_TITLES[h]}: {hops[h].reason}" for h in HOPS),
                                resource=hops["ingress"].resource))
    return HostResult(host, path, hops, findings)


# ---- network checks for many hosts ---------------------------------------------------------------


def probe(host: str, path: str, endpoint: str, *, timeout: float = 5.0) -> Probe:
    """One HTTPS GET with SNI and Host ``host`` to the ingress ``endpoint``: status, latency and
    the certificate presented. Verification is off on purpose: the point is to see what is
    served (the TLS hop judges it)."""
    address, port = certs.split_endpoint(endpoint)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = Probe(host)
    started = time.perf_counter()
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.sock = tls
            conn.request("GET", path, headers={"Host": host, "User-Agent": "kube-runbooks/service-reachability",
                                               "Connection": "close"})
            resp = conn.getresponse()
            out.body = resp.read(4096).decode("utf-8", "replace").strip()
            out.status = resp.status
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        out.error = f"{type(e).__name__}: {cut(str(e), 160)}"
        return out
    out.latency_ms = (time.perf_counter() - started) * 1000
    if der:
        cert = x509.load_der_x509_certificate(der)
        out.sha256 = cert.fingerprint(hashes.SHA256()).hex()
        out.subject, out.issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        out.not_after = cert.not_valid_after_utc
    return out


def _dns_answer(label: str, ans: Any) -> DnsAnswer:
    """A :class:`runbooks.dns.Answer` as this hop reads it: addresses and CNAME targets."""
    out = DnsAnswer(label, status=ans.rcode, error=ans.error)
    for _, rtype, _, value in ans.records:
        if rtype == "CNAME":
            target = value.rstrip(".")
            if target not in out.cnames:
                out.cnames.append(target)
        elif rtype in ("A", "AAAA") and value not in out.addresses:
            out.addresses.append(value)
    return out


def dns_queries(hosts: Sequence[str], ctx: Context, *, timeout: float = 3.0,
                concurrency: int = 64) -> list[tuple[str, Callable[[], dict[str, DnsAnswer]]]]:
    """One job per server: each provider's authoritative server asked (recursion off) about the
    hosts in its zones, and the resolver (recursion on) about every host, with dns-audit's
    bounded concurrent client (:func:`runbooks.dns.query_many`). A server that does not answer
    at all gives each of its hosts an ``error`` answer."""
    from . import dns
    from .errors import Unavailable

    def ask(server: str, label: str, names: list[str], recursive: bool) -> dict[str, DnsAnswer]:
        try:
            got = dns.query_many(server, [(h, "A") for h in names], concurrency=concurrency, timeout=timeout,
                                 recursive=recursive)
        except Unavailable as e:
            return {h: DnsAnswer(label, status="", error=cut(str(e), 160)) for h in names}
        return {h: _dns_answer(label, got[(h, "A")]) for h in names if (h, "A") in got}

    def system(names: list[str]) -> dict[str, DnsAnswer]:
        return {h: _dns_answer("resolver", dns.resolve_system(h, "A", timeout=timeout)) for h in names}

    names = [h for h in hosts if not h.startswith("*.")]
    jobs: list[tuple[str, Callable[[], dict[str, DnsAnswer]]]] = []
    for srv in ctx.dns_providers:
        mine = [h for h in names if srv.serves(h)]
        if mine:
            jobs.append((srv.label, lambda s=srv, m=mine: ask(s.nameserver, s.label, m, False)))
    if ctx.dns_resolver == "system":
        jobs.append(("resolver", lambda: system(names)))
    elif ctx.dns_resolver:
        jobs.append(("resolver", lambda: ask(ctx.dns_resolver or "", "resolver", names, True)))
    return jobs


def network_checks(hosts: Sequence[str], path: str, ctx: Context, *, timeout: float = 5.0,
                   concurrency: int = 16) -> None:
    """DNS queries and live probes for every host, concurrently with a bound (fills ``ctx``)."""
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    if ctx.ingress_url:
        jobs += [("probe", h, (lambda h=h: probe(h, path, ctx.ingress_url, timeout=timeout))) for h in hosts
                 if not h.startswith("*.")]
    jobs = [("dns", label, fn) for label, fn in dns_queries(hosts, ctx, timeout=min(timeout, 3.0))] + jobs
    probes: dict[str, Probe] = dict(ctx.probes)
    dns: dict[str, list[DnsAnswer]] = {h: list(v) for h, v in ctx.dns.items()}
    if jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs)))) as pool:
            for (kind, h, _), result in zip(jobs, pool.map(lambda j: j[2](), jobs), strict=True):
                if kind == "probe":
                    probes[h] = result
                else:
                    for host, answer in result.items():
                        dns.setdefault(host, []).append(answer)
    ctx.probes, ctx.dns = probes, dns


def ingress_metrics(prom: Any, hosts: Sequence[str]) -> dict[str, dict[str, float]]:
    """5xx ratio and p99 latency per host over the last 15 minutes (one query each, all hosts)."""
    from . import metrics

    if len(hosts) == 1:  # one host: only its series; none given: every host
        sel = f'host="{metrics._promql_string(hosts[0])}"'
    else:
        sel = 'host!=""'
    out: dict[str, dict[str, float]] = {}
    for key, promql in (("ratio_5xx", FIVE_XX_QUERY), ("p99", P99_QUERY)):
        df = metrics.query(prom, promql.format(sel=sel))
        if "host" not in df.columns:
            continue
        for row in df.itertuples():
            out.setdefault(str(row.host), {})[key] = float(row.value)
    return out


ACCESS_LINE = re.compile(
    r'^\S+ - \S+ \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) \d+ "[^"]*" "[^"]*" \d+ \S+ '
    r'\[(?P<upstream>[^\]]*)\] \[[^\]]*\] (?P<addr>\S+) \S+ \S+ (?P<upstream_status>\S+)')
"""ingress-nginx's default ``log-format-upstream``: ``$remote_addr - $remote_user [$time_local] "$request"
$status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time
[$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
$upstream_response_time $upstream_status $req_id``."""
ERROR_LINE = re.compile(r'\[error\] .*?(?P<what>upstream [^,]*|connect\(\) failed [^,]*|no live upstreams[^,]*),'
                        r'.*?, upstream: "(?P<upstream>[^"]*)", host: "(?P<host>[^"]+)"')
"""nginx's error log for a failed upstream (``... while connecting to upstream, client: ..., server: ...,
request: "...", upstream: "http://10.0.0.5:8080/", host: "shop.example.com"``)."""
NO_ENDPOINTS_LINE = re.compile(r'Service "(?P<service>[^"]+)" does not have any active Endpoint')
"""The controller's warning for a Service with no ready endpoint (it answers 503 for it)."""


def upstream_errors(src: Any, controller: str, *, lookback: str = "15m", max_docs: int = 20_000,
                    now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """What the ingress controller logged against each upstream in the window, from its own lines.

    Keys: the upstream name (``namespace-service-port``) with ``responses_5xx``, ``statuses``
    (5xx status → count), ``upstream_errors`` (nginx ``[error]`` lines: connect failures, timeouts)
    and an ``example`` line; ``host:<name>`` for error lines naming the request's host;
    ``service:<ns>/<name>`` with ``no_endpoints`` (the controller's "does not have any active
    Endpoint" warnings). One search narrows the controller's lines to the ones that can be
    errors; each is then parsed with the formats above.
    """
    from . import logs

    ns, _, name = controller.partition("/")
    out: dict[str, dict[str, Any]] = {}

    def entry(key: str) -> dict[str, Any]:
        return out.setdefault(key, {"responses_5xx": 0, "statuses": {}, "upstream_errors": 0, "no_endpoints": 0,
                                    "example": ""})

    words = " ".join(str(c) for c in range(500, 512)) + " error Endpoint"
    for line in logs.lines_matching(src, ns or None, name or None, words, lookback=lookback, max_docs=max_docs,
                                    now=now):
        m = ACCESS_LINE.match(line)
        if m:
            status = int(m.group("status"))
            if status >= 500:
                e = entry(m.group("upstream"))
                e["responses_5xx"] += 1
                e["statuses"][status] = e["statuses"].get(status, 0) + 1
                e["example"] = line
            continue
        m = ERROR_LINE.search(line)
        if m:
            e = entry(f"host:{m.group('host').lower()}")
            e["upstream_errors"] += 1
            e["example"] = line
            continue
        m = NO_ENDPOINTS_LINE.search(line)
        if m:
            e = entry(f"service:{m.group('service')}")
            e["no_endpoints"] += 1
            e["example"] = line
    return out


def log_note(host: str, upstream: str | None, service: str | None, log_errors: Mapping[str, dict[str, Any]],
             lookback: str) -> tuple[str, dict[str, Any]]:
    """The log check's sentence for one host, and its evidence (empty when nothing was logged)."""
    parts, evidence = [], {}
    up = log_errors.get(upstream or "") or {}
    if up.get("responses_5xx"):
        statuses = ", ".join(f"{n}× {code}" for code, n in sorted(up["statuses"].items()))
        parts.append(f"the controller logged {up['responses_5xx']} 5xx response(s) for upstream {upstream} "
                     f"({statuses})")
        evidence["responses_5xx"] = up["responses_5xx"]
        evidence["statuses"] = {str(k): v for k, v in up["statuses"].items()}
        evidence["example"] = cut(up["example"], 300)
    by_host = log_errors.get(f"host:{host}") or {}
    if by_host.get("upstream_errors"):
        parts.append(f"{by_host['upstream_errors']} upstream error(s) for host {host}")
        evidence["upstream_errors"] = by_host["upstream_errors"]
        evidence.setdefault("example", cut(by_host["example"], 300))
    svc = log_errors.get(f"service:{service}") or {}
    if svc.get("no_endpoints"):
        parts.append(f"{svc['no_endpoints']} \"Service {service} does not have any active Endpoint\" warning(s)")
        evidence["no_endpoints"] = svc["no_endpoints"]
    if not parts:
        return f"no controller errors logged for upstream {upstream or '-'} in {lookback}", {}
    evidence["upstream"] = upstream
    return "logs (" + lookback + "): " + "; ".join(parts), evidence


# ---- the runbook's entry points ------------------------------------------------------------------


def env_of(run_dir: str | None) -> str:
    """The environment a run belongs to (``outputs/<env>/<runbook>/<ts>``), else $RUNBOOKS_ENV."""
    import os
    from pathlib import Path

    if run_dir:
        parts = Path(run_dir).parts
        if len(parts) >= 3:
            return parts[-3]
    return os.environ.get("RUNBOOKS_ENV") or "this environment"


@dataclass
class Reachability:
    """Every host's result, with the shared context."""

    results: list[HostResult]
    ctx: Context
    extra: list[Finding] = field(default_factory=list)  # data sources that were down

    @property
    def findings(self) -> list[Finding]:
        out = [f for r in self.results for f in r.findings] + list(self.extra)
        if not self.ctx.dns_providers and not self.ctx.dns_resolver:
            out.append(Finding(id="reachability/dns-not-configured", severity="info",
                               title="DNS hop not checked: no DNS servers configured",
                               detail=f"not configured in env {self.ctx.env}: "
                                      + NOT_CONFIGURED_DNS.format(env=self.ctx.env)))
        return out

    def chain(self, only_broken: bool | None = None) -> pd.DataFrame:
        """One row per host and hop: status (green/red/grey) and reason.

        ``only_broken`` (default: when there are more than 20 hosts) leaves out the hosts whose
        every hop is green: their verdict is in :meth:`verdicts`.
        """
        if only_broken is None:
            only_broken = len(self.results) > MANY_HOSTS
        rows = []
        for r in self.results:
            first = r.first_broken
            if only_broken and first is None:
                continue
            for name in HOPS:
                hop = r.hops[name]
                rows.append({"host": r.host, "hop": HOP_TITLES[name],
                             "status": {True: "green", False: "red", None: "grey"}[hop.ok],
                             "first_broken": first is not None and first.name == name,
                             "reason": hop.reason, "object": hop.resource or ""})
        return pd.DataFrame(rows, columns=["host", "hop", "status", "first_broken", "reason", "object"])

    def verdicts(self) -> pd.DataFrame:
        """One row per host, broken ones first: its verdict (the first red hop) and the next command."""
        rows = []
        for r in self.results:
            first = r.first_broken
            step = ""
            if first is not None:
                f = next((f for f in r.findings if (f.evidence or {}).get("first_broken")), None)
                step = (f.evidence or {}).get("next", "") if f else ""
            rows.append({"host": r.host, "verdict": "reachable" if first is None else "broken",
                         "first_broken_hop": HOP_TITLES[first.name] if first else "",
                         "object": first.resource if first else "", "reason": first.reason if first else "",
                         "next": step})
        rows.sort(key=lambda row: (row["verdict"] != "broken", row["host"]))
        return pd.DataFrame(rows, columns=["host", "verdict", "first_broken_hop", "object", "reason", "next"])


def check(cluster: kube.Cluster, params: Any, *, sources: Mapping[str, Any] | None = None,
          on_source: Callable[[str, bool, str], None] | None = None) -> Reachability:
    """Run every hop for ``params.host`` (or every Ingress host with ``all``).

    ``sources`` holds clients, or :class:`Connector` s that make them (:func:`connect_sources`;
    None: not configured). The
    cluster read, the DNS queries and HTTPS probes, and each data source (checked, then
    queried once for all hosts) run concurrently; a data source that fails is reported through
    ``on_source(name, ok, detail)``, becomes a warning finding, and its part is skipped.
    """
    sources = dict(sources or {})
    single = params.host != "all"
    ctx = Context(env=env_of(params.run_dir), ingress_url=params.ingress_url or "",
                  dns_resolver=params.dns_resolver, dns_providers=auth_servers(params.dns_providers),
                  max_5xx_ratio=params.max_5xx_ratio, max_p99_seconds=params.max_p99_seconds,
                  log_lookback=params.log_lookback)
    probes = source_probes()
    down: list[Finding] = []

    def use(name: str, source: Any, query: Callable[[Any], Any]) -> Any:
        conn = source.connect() if isinstance(source, Connector) else source  # in this thread: imports overlap
        try:
            state = probes[name](conn)
            value = query(conn)
        except SOURCE_ERRORS as e:
            if on_source:
                on_source(name, False, f"{type(e).__name__}: {e}")
            down.append(Finding(id=f"data-source-down/{name}", severity="warning",
                                title=f"{name} is unavailable: its checks were skipped", detail=cut(str(e)),
                                resource=name))
            return None
        if on_source:
            on_source(name, True, "" if state is None else cut(str(state)))
        return value

    def net(hosts: Sequence[str]) -> None:
        network_checks(hosts, params.path, ctx, timeout=params.probe_timeout_seconds,
                       concurrency=params.concurrency)

    with ThreadPoolExecutor(max_workers=4) as pool:
        snap_f = pool.submit(snapshot, cluster, event_window_hours=params.event_window_hours)
        net_f = pool.submit(net, [params.host]) if single else None
        prom, log_source = sources.get("prometheus"), sources.get("logs")
        metrics_f = pool.submit(use, "prometheus", prom, lambda c: ingress_metrics(
            c, [params.host] if single else [])) if prom is not None else None
        logs_f = pool.submit(use, "logs", log_source, lambda c: upstream_errors(
            c, params.ingress_controller, lookback=params.log_lookback)) if log_source is not None else None
        snap = snap_f.result()
        hosts = [params.host] if single else snap.hosts()
        if not hosts:
            raise InvalidInput("host 'all': no Ingress in the cluster names a host")
        if net_f is None:
            net_f = pool.submit(net, hosts)
        net_f.result()
        if metrics_f is not None:
            ctx.metrics = metrics_f.result()
            if ctx.metrics is None:
                ctx.metrics_error = "Prometheus unavailable"
        if logs_f is not None:
            ctx.log_errors = logs_f.result()
    many = len(hosts) > MANY_HOSTS
    results = [check_host(h, params.path, snap, ctx, per_host_ok=not many) for h in hosts]
    out = Reachability(results, ctx)
    out.extra = down
    reachable = [r.host for r in results if r.first_broken is None]
    if many and reachable:  # one finding lists them, rather than hundreds of "ok" rows
        out.extra.append(Finding(id="reachability/reachable", severity="ok",
                                 title=f"{len(reachable)} of {len(hosts)} hosts reachable",
                                 detail="every hop green: " + ", ".join(reachable[:20])
                                        + (f" and {len(reachable) - 20} more" if len(reachable) > 20 else ""),
                                 evidence={"hosts": reachable}))
    return out


@dataclass
class Connector:
    """Makes one data source's client when :func:`check` needs it, in the thread that queries it, so
    that importing the client library overlaps the cluster read."""

    connect: Callable[[], Any]


def connect_sources(params: Any) -> dict[str, Connector | None]:
    """Connectors for the configured data sources (None where no URL is set); nothing is sent yet."""

    def prometheus() -> Any:
        from . import metrics

        return metrics.connect(params.prometheus_url, verify=params.verify_tls)

    def log_store() -> Any:
        from . import logs

        return logs.connect(params.elasticsearch_url, params.log_index, verify_certs=params.verify_tls)

    return {"prometheus": Connector(prometheus) if params.prometheus_url else None,
            "logs": Connector(log_store) if params.elasticsearch_url else None}


def source_probes() -> dict[str, Callable[[Any], Any]]:
    """How each data source is checked in preflight (each imports its client when it runs)."""
    from .errors import Unavailable

    def probe_metrics(src: Any) -> Any:
        from . import metrics

        return metrics.check(src)

    def probe_logs(src: Any) -> str:
        from . import logs

        state = logs.check(src)
        if not state["reachable"]:
            raise Unavailable(f"log store {src.url}: {state['error']}")
        return f"{state['docs']} documents in {state['indices']} indices"

    return {"prometheus": probe_metrics, "logs": probe_logs}


def headline(result: Reachability) -> str:
    """One line per host for the top of the report: the first red hop, or reachable."""
    lines = []
    for r in result.results:
        first = r.first_broken
        if first is None:
            lines.append(f"**{r.host}{r.path if r.path != '/' else ''}**: reachable, every hop green.")
        else:
            lines.append(f"**{r.host}{r.path if r.path != '/' else ''}**: broken at **{HOP_TITLES[first.name]}** "
                         f"({first.resource or ''}): {first.reason}")
    if len(lines) > 20:
        broken = sum(1 for r in result.results if r.first_broken is not None)
        return f"**{len(lines)} hosts: {broken} broken, {len(lines) - broken} reachable** (see the verdicts below)"
    return "\n\n".join(lines)
