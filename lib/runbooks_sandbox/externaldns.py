"""The sandbox plays ExternalDNS: it publishes Ingress and Service hostnames into the real providers.

For each ExternalDNS Deployment of the scenario whose ``--provider`` the sandbox runs
(``pdns``, ``rfc2136``), it reads the flags ExternalDNS reads (``--source``,
``--domain-filter``, ``--txt-owner-id``, ``--txt-prefix``, ``--registry=txt``) and
writes what ExternalDNS would write once: each hostname's A or CNAME record and its
TXT registry records (``heritage=external-dns,external-dns/owner=<id>,external-dns/resource=ingress/<ns>/<name>``),
both at the old name (``<prefix><hostname>``) and at the newer record-type-prefixed
name (``<prefix><type>-<first label>.<rest>``). The old-format TXT cannot sit beside a
CNAME at the same name, so it is not written there (the CNAME/TXT clash ExternalDNS
runs into without ``--txt-prefix``).

Then the drift of the scenario's ``dns.yaml`` is planted on top, through the same
protocols (PowerDNS HTTP API; RFC 2136 with TSIG), so that the providers hold what a
real, long-lived setup drifts into.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.query
import dns.rcode
import dns.tsig
import dns.update
import yaml

from .dnsservers import EXTERNAL_KEY, PDNS_SERVER_ID, TSIG_ALGORITHM

HOSTNAME_ANNOTATION = "external-dns.alpha.kubernetes.io/hostname"
TARGET_ANNOTATION = "external-dns.alpha.kubernetes.io/target"
TTL_ANNOTATION = "external-dns.alpha.kubernetes.io/ttl"
DEFAULT_TTL = 300


@dataclass
class Instance:
    namespace: str
    name: str
    provider: str
    owner: str = "default"
    domains: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    prefix: str = ""
    exclude: list[str] = field(default_factory=list)
    namespace_filter: str = ""  # --namespace: only this namespace's objects (default: all)

    def wants(self, host: str) -> bool:
        return _in_domains(host, self.domains) and not (self.exclude and _in_domains(host, self.exclude))


def parse_instance(deployment: dict) -> Instance | None:
    """ExternalDNS's flags from a Deployment (None when it is not an ExternalDNS Deployment)."""
    meta = deployment.get("metadata") or {}
    for c in ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        if "external-dns" not in (c.get("image") or ""):
            continue
        inst = Instance(meta.get("namespace", ""), meta.get("name", ""), "")
        for arg in c.get("args") or []:
            key, _, value = arg.partition("=")
            if key == "--provider":
                inst.provider = value
            elif key == "--txt-owner-id":
                inst.owner = value
            elif key == "--domain-filter":
                inst.domains.append(value.rstrip(".").lower())
            elif key == "--source":
                inst.sources.append(value)
            elif key == "--txt-prefix":
                inst.prefix = value
            elif key == "--exclude-domains":
                inst.exclude.append(value.rstrip(".").lower())
            elif key == "--namespace":
                inst.namespace_filter = value
        return inst
    return None


def _in_domains(host: str, domains: list[str]) -> bool:
    return not domains or any(host == d or host.endswith("." + d) for d in domains)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def desired(inst: Instance, ingresses: Iterable[dict], services: Iterable[dict]) -> list[dict]:
    """Endpoints ExternalDNS would publish: name, type, targets, ttl, resource."""
    out: dict[str, dict] = {}

    def add(host: str, targets: list[str], ann: dict, resource: str) -> None:
        host = host.rstrip(".").lower()
        if not host or not targets or not inst.wants(host) or host in out:
            return
        rtype = "A" if all(_is_ip(t) for t in targets) else "CNAME"
        out[host] = {"name": host, "type": rtype, "targets": sorted(targets)[: 1 if rtype == "CNAME" else None],
                     "ttl": int(ann.get(TTL_ANNOTATION) or DEFAULT_TTL), "resource": resource}

    def lb_targets(obj: dict, ann: dict) -> list[str]:
        if ann.get(TARGET_ANNOTATION):
            return [t.strip() for t in ann[TARGET_ANNOTATION].split(",") if t.strip()]
        lb = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [x.get("ip") or x.get("hostname") for x in lb if x.get("ip") or x.get("hostname")]

    if "ingress" in inst.sources:
        for ing in ingresses:
            meta = ing.get("metadata") or {}
            if inst.namespace_filter and meta.get("namespace") != inst.namespace_filter:
                continue
            ann = meta.get("annotations") or {}
            hosts = [r.get("host") for r in (ing.get("spec") or {}).get("rules") or [] if r.get("host")]
            hosts += [h.strip() for h in (ann.get(HOSTNAME_ANNOTATION) or "").split(",") if h.strip()]
            for h in hosts:
                add(h, lb_targets(ing, ann), ann, f"ingress/{meta.get('namespace')}/{meta.get('name')}")
    if "service" in inst.sources:
        for svc in services:
            meta = svc.get("metadata") or {}
            if inst.namespace_filter and meta.get("namespace") != inst.namespace_filter:
                continue
            ann = meta.get("annotations") or {}
            if (svc.get("spec") or {}).get("type") != "LoadBalancer" or not ann.get(HOSTNAME_ANNOTATION):
                continue
            for h in ann[HOSTNAME_ANNOTATION].split(","):
                add(h.strip(), lb_targets(svc, ann), ann, f"service/{meta.get('namespace')}/{meta.get('name')}")
    return sorted(out.values(), key=lambda e: e["name"])


def txt_names(host: str, rtype: str, prefix: str = "") -> tuple[str, str]:
    """(old-format, new-format) TXT registry names, as ExternalDNS's affix name mapper makes them."""
    first, _, rest = host.partition(".")
    rt = rtype.lower()
    if "%{record_type}" in prefix:
        new_first = prefix.replace("%{record_type}", rt) + first
        old = prefix.replace("%{record_type}", "") + host
    else:
        new_first = prefix + rt + "-" + first
        old = prefix + host
    return old, (new_first + "." + rest if rest else new_first)


def txt_value(owner: str, resource: str) -> str:
    return f'"heritage=external-dns,external-dns/owner={owner},external-dns/resource={resource}"'


def _zone_of(host: str, zones: Iterable[str]) -> str | None:
    found = [z for z in zones if host == z or host.endswith("." + z)]
    return max(found, key=len) if found else None


class Writer:
    """Writes RRsets into one provider through its own protocol."""

    def replace(self, zone: str, name: str, rtype: str, ttl: int, values: list[str]) -> None:
        raise NotImplementedError

    def delete(self, zone: str, name: str, rtype: str) -> None:
        raise NotImplementedError


class PdnsWriter(Writer):
    def __init__(self, pdns: Any):
        self.pdns = pdns

    def _patch(self, zone: str, rrset: dict) -> None:
        status, body = self.pdns.api("PATCH", f"/api/v1/servers/{PDNS_SERVER_ID}/zones/{zone}.", {"rrsets": [rrset]})
        if status != 204:
            raise RuntimeError(f"PowerDNS refused {rrset['changetype']} {rrset['name']} {rrset['type']}: "
                               f"{status} {body[:300]!r}")

    def replace(self, zone: str, name: str, rtype: str, ttl: int, values: list[str]) -> None:
        self._patch(zone, {"name": name + ".", "type": rtype, "ttl": ttl, "changetype": "REPLACE",
                           "records": [{"content": v, "disabled": False} for v in values]})

    def delete(self, zone: str, name: str, rtype: str) -> None:
        self._patch(zone, {"name": name + ".", "type": rtype, "changetype": "DELETE"})


class Rfc2136Writer(Writer):
    def __init__(self, port: int, secret: str):
        self.port = port
        self.key = dns.tsig.Key(EXTERNAL_KEY, secret, TSIG_ALGORITHM)

    def _send(self, upd: dns.update.UpdateMessage) -> None:
        resp = dns.query.tcp(upd, "127.0.0.1", port=self.port, timeout=5)
        if resp.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"BIND refused an update: {dns.rcode.to_text(resp.rcode())}")

    def replace(self, zone: str, name: str, rtype: str, ttl: int, values: list[str]) -> None:
        upd = dns.update.UpdateMessage(zone + ".", keyring=self.key)
        upd.delete(name + ".", rtype)
        for v in values:
            upd.add(name + ".", ttl, rtype, v)
        self._send(upd)

    def delete(self, zone: str, name: str, rtype: str) -> None:
        upd = dns.update.UpdateMessage(zone + ".", keyring=self.key)
        upd.delete(name + ".", rtype)
        self._send(upd)


def _fqdn_values(rtype: str, values: list[str]) -> list[str]:
    return [v.rstrip(".") + "." for v in values] if rtype == "CNAME" else values


def publish(writer: Writer, inst: Instance, endpoints: list[dict], zones: list[str]) -> int:
    """Write each endpoint and its TXT registry records; returns the number of hostnames written."""
    n = 0
    for ep in endpoints:
        zone = _zone_of(ep["name"], zones)
        if zone is None:
            continue
        writer.replace(zone, ep["name"], ep["type"], ep["ttl"], _fqdn_values(ep["type"], ep["targets"]))
        old, new = txt_names(ep["name"], ep["type"], inst.prefix)
        value = txt_value(inst.owner, ep["resource"])
        writer.replace(zone, new, "TXT", ep["ttl"], [value])
        if not (ep["type"] == "CNAME" and old == ep["name"]):  # a TXT cannot sit beside a CNAME
            writer.replace(zone, old, "TXT", ep["ttl"], [value])
        n += 1
    return n


def plant(writer: Writer, inst: Instance, drift: dict, zones: list[str], endpoints: list[dict]) -> None:
    """Apply one drift instruction of dns.yaml to one provider."""
    by_name = {e["name"]: e for e in endpoints}

    def remove_all(name: str, rtype: str) -> None:
        zone = _zone_of(name, zones)
        assert zone, name
        writer.delete(zone, name, rtype)
        for txt in txt_names(name, rtype, inst.prefix):
            writer.delete(zone, txt, "TXT")

    if "remove" in drift:
        name = drift["remove"]
        remove_all(name, by_name[name]["type"] if name in by_name else "A")
    if "disown" in drift:
        name = drift["disown"]
        zone = _zone_of(name, zones)
        for txt in txt_names(name, by_name[name]["type"] if name in by_name else "A", inst.prefix):
            writer.delete(zone, txt, "TXT")
    if "set" in drift:
        s = drift["set"]
        zone = _zone_of(s["name"], zones)
        current = by_name.get(s["name"]) or {}
        rtype = s.get("type") or current.get("type", "A")
        writer.replace(zone, s["name"], rtype, int(s.get("ttl") or current.get("ttl") or DEFAULT_TTL),
                       _fqdn_values(rtype, s.get("values") or current.get("targets") or []))
    if "add" in drift:
        a = drift["add"]
        if a["name"] in by_name:
            remove_all(a["name"], by_name[a["name"]]["type"])
        ep = {"name": a["name"], "type": a.get("type", "A"), "targets": a["values"], "ttl": int(a.get("ttl", DEFAULT_TTL)),
              "resource": a.get("resource", "")}
        if a.get("owner"):
            publish(writer, Instance(inst.namespace, inst.name, inst.provider, a["owner"], inst.domains,
                                     inst.sources, inst.prefix), [ep], zones)
        else:
            zone = _zone_of(a["name"], zones)
            writer.replace(zone, a["name"], ep["type"], ep["ttl"], _fqdn_values(ep["type"], ep["targets"]))


def load_plan(text: str) -> dict:
    """The scenario's dns.yaml: ``zones`` (served by both servers), ``more_zones`` (each served by
    one server, ``rfc2136`` or ``pdns``, and read as its own provider) and ``drift`` (a list of
    instructions per provider)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data.get("zones"), list):
        raise ValueError("dns.yaml needs a list `zones`")
    for z in data.setdefault("more_zones", []):
        if z.get("server") not in ("rfc2136", "pdns") or not z.get("zone") or not z.get("provider"):
            raise ValueError(f"dns.yaml more_zones: {z!r} needs zone, provider and server (rfc2136 or pdns)")
    return data


def zones_of(plan: dict, server: str) -> list[str]:
    """The zones one server (``rfc2136`` or ``pdns``) serves."""
    return [z.rstrip(".").lower() for z in plan["zones"]] + [
        m["zone"].rstrip(".").lower() for m in plan.get("more_zones") or [] if m["server"] == server]


def _drift_name(drift: dict) -> str:
    for key in ("remove", "disown"):
        if key in drift:
            return drift[key]
    return (drift.get("set") or drift.get("add") or {}).get("name", "")


def run_once(objects: dict[str, list[dict]], writers: dict[str, Writer], plan: dict) -> dict[str, Any]:
    """Publish every instance's endpoints into its provider, then plant the drift; return what was done."""
    done: dict[str, Any] = {}
    for dep in objects.get("Deployment", []):
        inst = parse_instance(dep)
        if inst is None or inst.provider not in writers:
            continue
        endpoints = desired(inst, objects.get("Ingress", []), objects.get("Service", []))
        writer = writers[inst.provider]
        zones = zones_of(plan, inst.provider)
        done[f"{inst.namespace}/{inst.name}"] = {"provider": inst.provider, "owner": inst.owner,
                                                 "published": publish(writer, inst, endpoints, zones)}
        for drift in plan.get("drift") or []:
            providers = drift.get("provider")
            providers = providers if isinstance(providers, list) else [providers]
            if inst.provider in providers and inst.wants(_drift_name(drift)):
                plant(writer, inst, drift, zones, endpoints)
    return json.loads(json.dumps(done))
