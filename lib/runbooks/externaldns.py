"""ExternalDNS as its own Deployment configures it: instances, the endpoints they want, the TXT registry.

An ExternalDNS Deployment's flags (``--source``, ``--domain-filter``, ``--txt-owner-id``,
``--txt-prefix``, ``--policy``, ``--provider``) say which Ingresses and Services it reads and
which hostnames it writes; :func:`desired` turns those sources into the endpoints it should
have written. Next to each record it writes TXT registry records naming its owner id and the
Kubernetes resource (:func:`txt_names`, :func:`txt_value`), and it never touches a name whose
TXT owner is not its own: :func:`ownership` reads that back from a provider's records.
:mod:`runbooks.dnsaudit` compares all this with what the providers hold.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import dns, kube

HOSTNAME_ANNOTATION = "external-dns.alpha.kubernetes.io/hostname"
TARGET_ANNOTATION = "external-dns.alpha.kubernetes.io/target"
TTL_ANNOTATION = "external-dns.alpha.kubernetes.io/ttl"
HERITAGE = "heritage=external-dns"
ADDRESS_TYPES = ("A", "AAAA", "CNAME")


# ---- ExternalDNS instances and what they want --------------------------------------------------


@dataclass
class Instance:
    """One ExternalDNS Deployment and the flags that decide what it writes."""

    namespace: str
    name: str
    provider: str = ""
    owner: str = "default"
    domains: list[str] = field(default_factory=list)
    exclude_domains: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    policy: str = "sync"
    registry: str = "txt"
    prefix: str = ""
    ingress_classes: list[str] = field(default_factory=list)
    watch_namespace: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def wants(self, host: str) -> bool:
        if any(host == d or host.endswith("." + d) for d in self.exclude_domains):
            return False
        return not self.domains or any(host == d or host.endswith("." + d) for d in self.domains)


def parse_instance(deployment: dict, image: str = "external-dns") -> Instance | None:
    """ExternalDNS's flags from its Deployment; None when no container runs ExternalDNS."""
    meta = deployment.get("metadata") or {}
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in spec.get("containers") or []:
        if image not in (c.get("image") or ""):
            continue
        inst = Instance(meta.get("namespace", ""), meta.get("name", ""), args=list(c.get("args") or []))
        args = list(c.get("command") or [])[1:] + list(c.get("args") or [])
        i = 0
        while i < len(args):
            arg = args[i]
            key, eq, value = arg.partition("=")
            if not eq and i + 1 < len(args) and not args[i + 1].startswith("--") and key not in (
                    "--rfc2136-tsig-axfr", "--rfc2136-insecure", "--once", "--dry-run"):
                value, i = args[i + 1], i + 1
            i += 1
            if key == "--provider":
                inst.provider = value
            elif key == "--txt-owner-id":
                inst.owner = value
            elif key == "--domain-filter":
                inst.domains += [d.strip().rstrip(".").lower() for d in value.split(",") if d.strip()]
            elif key == "--exclude-domains":
                inst.exclude_domains += [d.strip().rstrip(".").lower() for d in value.split(",") if d.strip()]
            elif key == "--source":
                inst.sources.append(value)
            elif key == "--policy":
                inst.policy = value
            elif key == "--registry":
                inst.registry = value
            elif key == "--txt-prefix":
                inst.prefix = value
            elif key == "--ingress-class":
                inst.ingress_classes.append(value)
            elif key == "--namespace":
                inst.watch_namespace = value
        return inst
    return None


def instances(cluster: kube.Cluster, image: str = "external-dns") -> list[Instance]:
    """Every ExternalDNS Deployment of the cluster."""
    out = [parse_instance(d, image) for d in kube.list_objects(cluster, "deployments")]
    return sorted((i for i in out if i is not None), key=lambda i: i.id)


def _is_ip(text: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return True
        except OSError:
            continue
    return False


@dataclass
class Endpoint:
    """A hostname ExternalDNS should publish."""

    name: str
    rtype: str
    targets: list[str]
    ttl: int | None
    resource: str


def desired(inst: Instance, ingresses: Iterable[dict], services: Iterable[dict]) -> dict[str, Endpoint]:
    """Hostname → endpoint, as ExternalDNS's ingress and service sources build them."""
    out: dict[str, Endpoint] = {}

    def targets_of(obj: dict, ann: dict) -> list[str]:
        if ann.get(TARGET_ANNOTATION):
            return sorted(t.strip().rstrip(".") for t in ann[TARGET_ANNOTATION].split(",") if t.strip())
        lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return sorted({x.get("ip") or x.get("hostname") for x in lb if x.get("ip") or x.get("hostname")})

    def add(host: str, targets: list[str], ann: dict, resource: str) -> None:
        host = host.strip().rstrip(".").lower()
        if not host or not targets or not inst.wants(host) or host in out:
            return
        rtype = "A" if all(_is_ip(t) and ":" not in t for t in targets) else (
            "AAAA" if all(_is_ip(t) for t in targets) else "CNAME")
        ttl = ann.get(TTL_ANNOTATION)
        out[host] = Endpoint(host, rtype, targets[:1] if rtype == "CNAME" else targets,
                             int(ttl) if ttl and str(ttl).isdigit() else None, resource)

    if "ingress" in inst.sources:
        for ing in ingresses:
            meta, spec = ing.get("metadata") or {}, ing.get("spec") or {}
            if inst.watch_namespace and meta.get("namespace") != inst.watch_namespace:
                continue
            if inst.ingress_classes and spec.get("ingressClassName") not in inst.ingress_classes:
                continue
            ann = meta.get("annotations") or {}
            hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
            hosts += [h for h in (ann.get(HOSTNAME_ANNOTATION) or "").split(",") if h.strip()]
            for h in hosts:
                add(h, targets_of(ing, ann), ann, f"ingress/{meta.get('namespace')}/{meta.get('name')}")
    if "service" in inst.sources:
        for svc in services:
            meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
            ann = meta.get("annotations") or {}
            if inst.watch_namespace and meta.get("namespace") != inst.watch_namespace:
                continue
            if spec.get("type") != "LoadBalancer" or not ann.get(HOSTNAME_ANNOTATION):
                continue
            for h in ann[HOSTNAME_ANNOTATION].split(","):
                add(h, targets_of(svc, ann), ann, f"service/{meta.get('namespace')}/{meta.get('name')}")
    return out


# ---- the TXT registry ----------------------------------------------------------------------------


def txt_names(host: str, rtype: str, prefix: str = "") -> tuple[str, str]:
    """(old-format, new-format) TXT registry names for a record, as ExternalDNS's affix mapper makes them."""
    first, _, rest = host.partition(".")
    rt = rtype.lower()
    if "%{record_type}" in prefix:
        new_first, old = prefix.replace("%{record_type}", rt) + first, prefix.replace("%{record_type}", "") + host
    else:
        new_first, old = prefix + rt + "-" + first, prefix + host
    return old, new_first + ("." + rest if rest else "")


def txt_value(owner: str, resource: str) -> str:
    return f'"{HERITAGE},external-dns/owner={owner},external-dns/resource={resource}"'


def parse_txt(value: str) -> dict[str, str] | None:
    """The labels of an ExternalDNS registry TXT value; None for any other TXT."""
    if HERITAGE not in value:
        return None
    if value.startswith('"') and value.endswith('"') and '"' not in value[1:-1]:
        text = value[1:-1]
    else:
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', value)) or value
    labels = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        labels[k.strip()] = v.strip()
    return {"owner": labels.get("external-dns/owner", ""), "resource": labels.get("external-dns/resource", "")}


@dataclass
class Ownership:
    owner: str
    resource: str
    txt: dict[str, list[str]]  # TXT name -> its values (as held)


def ownership(records: dns.Records, prefix: str) -> dict[str, Ownership]:
    """Hostname → its registry owner, from old- and new-format TXT names under ``prefix``."""
    addresses = {name for (name, t) in records if t in ADDRESS_TYPES}
    out: dict[str, Ownership] = {}
    static = prefix.replace("%{record_type}", "")
    for (name, t), rr in records.items():
        if t != "TXT":
            continue
        labels = next((lab for lab in map(parse_txt, rr.values) if lab), None)
        if labels is None:
            continue
        candidates = []
        first, _, rest = name.partition(".")
        if first.startswith(static):
            stripped = first[len(static):]
            m = re.match(r"^(a|aaaa|cname|ns|mx|srv|txt)-(.+)$", stripped)
            if m:
                candidates.append(m.group(2) + ("." + rest if rest else ""))
            candidates.append(stripped + ("." + rest if rest else ""))
        host = next((c for c in candidates if c in addresses), candidates[0] if candidates else None)
        if host is None:
            continue
        entry = out.setdefault(host, Ownership(labels["owner"], labels["resource"], {}))
        entry.txt[name] = rr.values
    return out
