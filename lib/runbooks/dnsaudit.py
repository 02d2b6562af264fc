"""dns-audit, ExternalDNS side: what each provider holds against what ExternalDNS should have written.

ExternalDNS reads its sources (Ingresses, Services) through its own flags and writes
each hostname into one provider with TXT registry records naming the owner id and the
Kubernetes resource; it never touches a name whose TXT owner is not its own. This module
does the same comparison from the outside, per hostname and provider:

* **desired**: the hostnames and targets the ExternalDNS Deployment's own flags select
  (``--source``, ``--domain-filter``, ``--txt-owner-id``, ``--txt-prefix``, ``--policy``);
* **held**: the provider's records, through its own protocol (PowerDNS HTTP API, AXFR
  with TSIG for RFC 2136), and the authoritative answer, queried directly;
* **verdict**: ``ok``, ``missing``, ``stale`` (target differs), ``orphaned`` (ours, no
  source wants it), ``blocked`` (another owner id holds it), ``unowned`` (no TXT owner:
  ExternalDNS skips it), ``clash`` (a CNAME needs its old-format TXT at the same name:
  set ``--txt-prefix``), ``ttl`` (far above the zone's norm).

The plan fixes only what we own or what nobody holds: missing records are created
with their TXT owner records, stale targets of records we own are corrected, orphaned
records we own are deleted. Every change carries the RRsets it was planned against
and is sent with them as prerequisites (RFC 2136) or checked against them just before
(PowerDNS), so a record that changed owner in between is never overwritten.

What ExternalDNS wants and owns (its instances, desired endpoints, the TXT registry) is
:mod:`runbooks.externaldns`; this module audits, plans and verifies.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field, field_validator

from . import dns, kube, podview
from .errors import InvalidInput, RunbookError
from .externaldns import (
    ADDRESS_TYPES,
    Endpoint,
    Instance,
    Ownership,
    desired,
    instances,
    ownership,
    txt_names,
    txt_value,
)
from .externaldns import HERITAGE as HERITAGE  # kept as dnsaudit's names for callers
from .externaldns import HOSTNAME_ANNOTATION as HOSTNAME_ANNOTATION
from .externaldns import TARGET_ANNOTATION as TARGET_ANNOTATION
from .externaldns import TTL_ANNOTATION as TTL_ANNOTATION
from .externaldns import parse_instance as parse_instance
from .externaldns import parse_txt as parse_txt
from .model import Finding
from .parameters import MutatingParams
from .params import check_namespaces
from .plans import Change, register_target

if TYPE_CHECKING:
    from .runbook import Run

VERDICTS = ("ok", "missing", "stale", "orphaned", "blocked", "unowned", "clash", "ttl")
FIXABLE = ("missing", "stale", "orphaned")
SEVERITY = {"missing": "critical", "stale": "critical", "blocked": "critical", "clash": "critical",
            "orphaned": "warning", "unowned": "warning", "ttl": "warning"}
COLOURS = {"ok": "#d4edda", "missing": "#f8d7da", "stale": "#f8d7da", "blocked": "#f5c6cb", "clash": "#f5c6cb",
           "orphaned": "#fff3cd", "unowned": "#fff3cd", "ttl": "#ffeeba", "": "#ffffff"}

IMAGE_REF = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*"
                       r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?")
DEFAULT_QUERIES = {
    "coredns_nxdomain_ratio": 'sum(rate(coredns_dns_responses_total{rcode="NXDOMAIN"}[5m])) '
                              '/ sum(rate(coredns_dns_responses_total[5m]))',
    "coredns_servfail_ratio": 'sum(rate(coredns_dns_responses_total{rcode="SERVFAIL"}[5m])) '
                              '/ sum(rate(coredns_dns_responses_total[5m]))',
    "coredns_p99_seconds": "histogram_quantile(0.99, sum by (le) "
                           "(rate(coredns_dns_request_duration_seconds_bucket[5m])))",
    "externaldns_last_sync": "max by (namespace, pod) (external_dns_controller_last_sync_timestamp_seconds)",
    "externaldns_registry_errors": "sum by (namespace, pod) (increase(external_dns_registry_errors_total[1h]))",
    "externaldns_source_errors": "sum by (namespace, pod) (increase(external_dns_source_errors_total[1h]))",
}


# ---- parameters -------------------------------------------------------------------------------


class DnsAuditParams(MutatingParams):
    """Parameters of notebooks/dns-audit.ipynb."""

    namespaces: list[str] = Field(default_factory=list)
    cluster_domain: str = "cluster.local"
    cluster_dns_server: str | None = None
    dns_providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    externaldns_image: str = "external-dns"
    hostnames: list[str] = Field(default_factory=list)
    ttl_factor: float = Field(default=10.0, gt=1)
    query_concurrency: int = Field(default=64, ge=1, le=5000)
    query_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    fix: list[Literal["missing", "stale", "orphaned"]] = Field(default_factory=lambda: list(FIXABLE))
    jvm_ttl_properties: list[str] = Field(default_factory=lambda: ["networkaddress.cache.ttl",
                                                                   "sun.net.inetaddr.ttl"])
    prometheus_url: str | None = None
    verify_tls: bool = True
    queries: dict[str, str] = Field(default_factory=dict)
    nxdomain_ratio_warning: float = Field(default=0.5, ge=0, le=1)
    servfail_ratio_warning: float = Field(default=0.01, ge=0, le=1)
    latency_p99_warning_seconds: float = Field(default=0.25, gt=0)
    sync_age_warning_seconds: float = Field(default=600, gt=0)
    in_cluster_view: Literal["auto", "exec", "local", "off"] = "auto"
    probe_namespace: str = "default"
    probe_image: str = podview.DEFAULT_IMAGE
    probe_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    resolv_conf: str = podview.RESOLV_CONF

    EXISTING_NAMESPACES = ("namespaces", "probe_namespace")

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        return check_namespaces(value)

    @field_validator("in_cluster_view", mode="before")
    @classmethod
    def _off_is_a_word(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads an unquoted off as false

    @field_validator("probe_namespace")
    @classmethod
    def _valid_probe_namespace(cls, value: str) -> str:
        return check_namespaces([value])[0]

    @field_validator("probe_image")
    @classmethod
    def _valid_image(cls, value: str) -> str:
        if len(value) > 512 or not IMAGE_REF.fullmatch(value):
            raise ValueError(f"probe_image {value!r} is not an image reference (registry/name:tag or @sha256:...)")
        return value

    @field_validator("cluster_domain")
    @classmethod
    def _valid_domain(cls, value: str) -> str:
        return dns.check_dns_name(value, "cluster_domain")

    @field_validator("hostnames")
    @classmethod
    def _valid_hostnames(cls, value: list[str]) -> list[str]:
        return [dns.check_dns_name(h, "hostname") for h in value]

    @field_validator("cluster_dns_server")
    @classmethod
    def _valid_server(cls, value: str | None) -> str | None:
        if value:
            dns.parse_server(value)
        return value

    @field_validator("dns_providers")
    @classmethod
    def _valid_providers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, settings in value.items():
            dns.provider(name, settings)  # type, zones, addresses, algorithm: InvalidInput names the bad one
        return value

    @field_validator("queries")
    @classmethod
    def _known_queries(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(DEFAULT_QUERIES))
        if unknown:
            raise ValueError(f"unknown queries {unknown}; known: {', '.join(DEFAULT_QUERIES)}")
        return value


# ---- the audit -------------------------------------------------------------------------------------


@dataclass
class Row:
    hostname: str
    provider: str
    verdict: str
    detail: str = ""
    instance: str = ""
    owner: str = ""
    resource: str = ""
    desired: str = ""
    held: str = ""
    ttl: int | None = None
    answer: str = ""
    zone: str = ""


@dataclass
class ProviderAudit:
    name: str
    provider: dns.Provider
    instance: Instance | None
    records: dict[str, dns.Records]
    owners: dict[str, dict[str, Ownership]]
    desired: dict[str, Endpoint]
    rows: list[Row]
    norm_ttl: dict[str, float]


def _held(records: dns.Records, host: str) -> dns.RRset | None:
    for t in ADDRESS_TYPES:
        rr = records.get((host, t))
        if rr is not None:
            return rr
    return None


def _norm(values: Iterable[str]) -> list[str]:
    return sorted(v.rstrip(".").lower() for v in values)


def match_instance(name: str, prov: dns.Provider, insts: list[Instance]) -> Instance | None:
    """The ExternalDNS instance writing this provider: ``instance`` in its settings, else by ``--provider``."""
    wanted = prov.settings.get("instance")
    if wanted:
        found = next((i for i in insts if i.id == wanted), None)
        if found is None:
            raise InvalidInput(f"DNS provider {name!r}: instance {wanted!r} is not an ExternalDNS Deployment; "
                               f"found: {', '.join(i.id for i in insts) or 'none'}")
        return found
    for inst in insts:
        if inst.provider == prov.kind and any(inst.wants(z) or any(d.endswith(z) for d in inst.domains)
                                              for z in prov.zones):
            return inst
    return None


def audit_provider(name: str, prov: dns.Provider, inst: Instance | None, ingresses: list[dict],
                   services: list[dict], *, hostnames: Iterable[str] = (), ttl_factor: float = 10.0) -> ProviderAudit:
    """Verdicts for every hostname of one provider (without the authoritative answers)."""
    only = set(hostnames)
    records = {z: prov.records(z) for z in prov.zones}
    prefix = inst.prefix if inst else ""
    owners = {z: ownership(r, prefix) for z, r in records.items()}
    want = desired(inst, ingresses, services) if inst else {}
    want = {h: e for h, e in want.items() if prov.zone_of(h) and (not only or h in only)}
    norm = {}
    for z, recs in records.items():
        ttls = [rr.ttl for (n, t), rr in recs.items() if t in ADDRESS_TYPES]
        norm[z] = statistics.median(ttls) if ttls else 300
    rows: list[Row] = []
    ours = inst.owner if inst else None
    for host, ep in sorted(want.items()):
        zone = prov.zone_of(host) or ""
        recs, own = records[zone], owners[zone].get(host)
        held = _held(recs, host)
        row = Row(host, name, "ok", instance=inst.id if inst else "", resource=ep.resource, zone=zone,
                  desired=f"{ep.rtype} {', '.join(ep.targets)}",
                  held=f"{held.rdtype} {', '.join(held.values)}" if held else "",
                  ttl=held.ttl if held else None, owner=own.owner if own else "")
        old_txt, _ = txt_names(host, ep.rtype, prefix)
        if ep.rtype == "CNAME" and old_txt == host and (held is None or held.rdtype == "CNAME"):
            row.verdict = "clash"
            row.detail = (f"a CNAME cannot coexist with the TXT registry record ExternalDNS writes at the same name "
                          f"({host}): set --txt-prefix on {row.instance}")
        elif own and own.owner != ours:
            row.verdict = "blocked"
            row.detail = f"owned by owner id {own.owner!r} ({own.resource}); ExternalDNS {ours!r} will not touch it"
        elif held is None:
            row.verdict = "missing"
            row.detail = f"no record in {name}; {ep.resource} wants {ep.rtype} {', '.join(ep.targets)}"
        elif own is None:
            row.verdict = "unowned"
            row.detail = "the record has no TXT owner record: ExternalDNS skips it (created by hand?)"
        elif held.rdtype != ep.rtype or _norm(held.values) != _norm(ep.targets):
            row.verdict = "stale"
            row.detail = f"points at {', '.join(held.values)}; {ep.resource} wants {', '.join(ep.targets)}"
        elif held.ttl > ttl_factor * norm[zone]:
            row.verdict = "ttl"
            row.detail = (f"TTL {held.ttl}s is {held.ttl / norm[zone]:.0f}× the zone's norm ({norm[zone]:g}s): "
                          "changes take that long to reach resolvers")
        rows.append(row)
    if inst is not None:
        for zone, own_map in owners.items():
            for host, own in sorted(own_map.items()):
                if host in want or own.owner != ours or (only and host not in only):
                    continue
                held = _held(records[zone], host)
                policy = " (policy upsert-only: ExternalDNS never deletes it)" if inst.policy == "upsert-only" else ""
                rows.append(Row(host, name, "orphaned", instance=inst.id, owner=own.owner, resource=own.resource,
                                zone=zone, held=f"{held.rdtype} {', '.join(held.values)}" if held else "TXT only",
                                ttl=held.ttl if held else None,
                                detail=f"owned by us ({own.owner}) for {own.resource}, which no longer asks "
                                       f"for it{policy}"))
    return ProviderAudit(name, prov, inst, records, owners, want, rows, norm)


@dataclass
class Audit:
    """The whole ExternalDNS audit: instances, one ProviderAudit per provider, findings."""

    instances: list[Instance]
    providers: dict[str, ProviderAudit]
    findings: list[Finding]

    @property
    def rows(self) -> list[Row]:
        return [r for pa in self.providers.values() for r in pa.rows]

    def table(self) -> pd.DataFrame:
        """One row per hostname and provider."""
        cols = ["hostname", "provider", "verdict", "desired", "held", "answer", "ttl", "owner", "resource", "detail"]
        return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in self.rows], columns=cols)

    def matrix(self) -> pd.DataFrame:
        """Hostnames × providers, each cell the verdict."""
        df = self.table()
        if df.empty:
            return pd.DataFrame(columns=["hostname"])
        return df.pivot_table(index="hostname", columns="provider", values="verdict", aggfunc="first",
                              fill_value="").reset_index()

    def instances_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"instance": i.id, "provider": i.provider, "owner id": i.owner, "policy": i.policy,
                              "registry": i.registry, "txt-prefix": i.prefix, "sources": ", ".join(i.sources),
                              "domain filters": ", ".join(i.domains)} for i in self.instances])


def connect_providers(settings: dict[str, dict[str, Any]]) -> dict[str, dns.Provider]:
    """Providers from settings; each checked (reachable, key accepted, zones served).

    Raises:
        InvalidInput: a bad setting, a zone the server does not serve (exit 2).
        Forbidden: a wrong API key or TSIG key. Unavailable: the server does not answer.
    """
    out = {name: dns.provider(name, s) for name, s in settings.items()}
    for prov in out.values():
        prov.checked = prov.check()
    return out


def check_providers(settings: dict[str, dict[str, Any]], run: Run | None = None) -> dict[str, dns.Provider]:
    """:func:`connect_providers` for the preflight: every failure is bad configuration (exit 2).

    With ``run``, each provider is recorded as a data source of the run (summary.json).
    """
    from .errors import PreflightFailed

    try:
        providers = connect_providers(settings)
    except RunbookError as exc:
        raise PreflightFailed(f"DNS providers: {exc}") from exc
    for name, prov in providers.items():
        if run is not None:
            run.source(f"dns:{name}", True, prov.checked)
    return providers


def owner_findings(insts: list[Instance]) -> list[Finding]:
    """Owner ids must be unique per provider and domain: two writers with one id delete each other's records."""
    out = []
    for i, a in enumerate(insts):
        if a.registry == "txt" and a.owner == "default":
            out.append(Finding(id=f"externaldns-default-owner/{a.id}", severity="warning",
                               title=f"ExternalDNS {a.id} uses the default owner id",
                               detail="--txt-owner-id is not set: every cluster that forgets it shares the id "
                                      "'default' and they delete each other's records", resource=a.id))
        for b in insts[i + 1:]:
            overlap = (not a.domains or not b.domains
                       or any(x == y or x.endswith("." + y) or y.endswith("." + x) for x in a.domains for y in b.domains))
            if a.owner == b.owner and a.provider == b.provider and overlap:
                out.append(Finding(id=f"externaldns-owner-shared/{a.owner}", severity="critical",
                                   title=f"owner id {a.owner!r} is used by {a.id} and {b.id} on provider {a.provider}",
                                   detail="two ExternalDNS instances with one owner id over the same domains each "
                                          "delete the other's records (policy sync)", resource=a.id))
    return out


def audit_providers(providers: dict[str, dns.Provider], matched: dict[str, Instance | None], ingresses: list[dict],
                    services: list[dict], *, hostnames: Iterable[str] = (), ttl_factor: float = 10.0
                    ) -> dict[str, ProviderAudit]:
    """:func:`audit_provider` for every provider at once (one thread each: their servers work in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    hostnames = list(hostnames)
    with ThreadPoolExecutor(max_workers=max(1, len(providers))) as pool:
        futures = {name: pool.submit(audit_provider, name, prov, matched.get(name), ingresses, services,
                                     hostnames=hostnames, ttl_factor=ttl_factor)
                   for name, prov in providers.items()}
        return {name: f.result() for name, f in futures.items()}


def audit(cluster: kube.Cluster, providers: dict[str, dns.Provider], *, image: str = "external-dns",
          hostnames: Iterable[str] = (), ttl_factor: float = 10.0) -> Audit:
    """Every provider's verdicts plus the instance findings (no authoritative queries: see :func:`answers`)."""
    insts = instances(cluster, image)
    ingresses = kube.list_objects(cluster, "ingresses")
    services = kube.list_objects(cluster, "services")
    findings = owner_findings(insts)
    matched = {name: match_instance(name, prov, insts) for name, prov in providers.items()}
    for name, inst in matched.items():
        if inst is None:
            findings.append(Finding(id=f"externaldns-no-instance/{name}", severity="warning",
                                    title=f"no ExternalDNS instance writes provider {name} ({providers[name].kind})",
                                    detail="its records were read but nothing is desired from it; set `instance` "
                                           "in its settings if the Deployment is unusual", resource=name))
    audits = audit_providers(providers, matched, ingresses, services, hostnames=hostnames, ttl_factor=ttl_factor)
    configured = {p.kind for p in providers.values()}
    for inst in insts:
        if inst.provider not in configured:
            findings.append(Finding(id=f"externaldns-provider-not-audited/{inst.id}", severity="info",
                                    title=f"ExternalDNS {inst.id} writes provider {inst.provider or '?'}, "
                                          "which has no connection settings",
                                    detail="add it to dns_providers to audit it", resource=inst.id))
    return Audit(insts, audits, findings)


def answers(result: Audit, *, concurrency: int = 64, timeout: float = 2.0) -> None:
    """Ask each provider's authoritative server about every audited hostname (bounded, concurrent).

    One A question per hostname: an authoritative server answers a CNAME owner with the CNAME.
    """
    from concurrent.futures import ThreadPoolExecutor

    def ask(pa: ProviderAudit) -> dict[tuple[str, str], dns.Answer]:
        return dns.query_many(pa.provider.nameserver, [(r.hostname, "A") for r in pa.rows],
                              concurrency=concurrency, timeout=timeout)

    with ThreadPoolExecutor(max_workers=max(1, len(result.providers))) as pool:
        replies = list(pool.map(ask, result.providers.values()))
    for pa, got in zip(result.providers.values(), replies, strict=True):
        for r in pa.rows:
            a = got.get((r.hostname, "A"))
            if a is None:
                continue
            cname = [v for owner, t, _, v in a.records if t == "CNAME" and owner == r.hostname]
            if a.error:
                r.answer = a.error
            elif cname:
                r.answer = "CNAME " + ", ".join(sorted(v.rstrip(".") for v in cname))
            elif a.values("A"):
                r.answer = "A " + ", ".join(a.values("A"))
            else:
                r.answer = a.rcode if a.rcode != "NOERROR" else "NODATA"


def verdict_findings(result: Audit) -> list[Finding]:
    out = list(result.findings)
    for r in result.rows:
        if r.verdict == "ok":
            continue
        title = {
            "missing": f"{r.hostname} is missing in {r.provider}",
            "stale": f"{r.hostname} in {r.provider} points at a stale target",
            "orphaned": f"{r.hostname} in {r.provider} is orphaned (ours, no source wants it)",
            "blocked": f"{r.hostname} in {r.provider} is blocked by owner {r.owner}",
            "unowned": f"{r.hostname} in {r.provider} has no TXT owner: ExternalDNS skips it",
            "clash": f"{r.hostname} in {r.provider}: CNAME/TXT clash",
            "ttl": f"{r.hostname} in {r.provider} has a TTL far above the zone's norm",
        }[r.verdict]
        out.append(Finding(id=f"dns-{r.verdict}/{r.provider}/{r.hostname}", severity=SEVERITY[r.verdict],
                           title=title, detail=r.detail, resource=f"{r.provider}:{r.hostname}",
                           evidence={"desired": r.desired, "held": r.held, "answer": r.answer, "ttl": r.ttl,
                                     "owner": r.owner, "resource": r.resource}))
    return out


# ---- the plan ------------------------------------------------------------------------------------

TARGETS = {"pdns": "powerdns-api", "rfc2136": "rfc2136"}


def _rrset(records: dns.Records, name: str, rtype: str) -> list[str]:
    rr = records.get((name, rtype))
    return list(rr.values) if rr else []


def _fqdn(rtype: str, values: list[str]) -> list[str]:
    return [v.rstrip(".") + "." for v in values] if rtype == "CNAME" else list(values)


def changes_for(pa: ProviderAudit, fix: Iterable[str]) -> list[Change]:
    """The changes fixing one provider's fixable rows; never a record another owner (or nobody) owns."""
    fix = set(fix)
    inst, prov = pa.instance, pa.provider
    out: list[Change] = []
    if inst is None:
        return out
    for r in pa.rows:
        if r.verdict not in fix:
            continue
        recs = pa.records[r.zone]
        own = pa.owners[r.zone].get(r.hostname)
        settings = {k: v for k, v in prov.settings.items()}
        base = {"provider": pa.name, "settings": settings, "zone": r.zone}
        if r.verdict == "missing":
            ep = pa.desired[r.hostname]
            ttl = ep.ttl or 300
            old, new = txt_names(r.hostname, ep.rtype, inst.prefix)
            value = txt_value(inst.owner, ep.resource)
            ops = [{"op": "replace", "name": r.hostname, "type": ep.rtype, "ttl": ttl,
                    "values": _fqdn(ep.rtype, ep.targets)},
                   {"op": "replace", "name": new, "type": "TXT", "ttl": ttl, "values": [value]}]
            if not (ep.rtype == "CNAME" and old == r.hostname):
                ops.append({"op": "replace", "name": old, "type": "TXT", "ttl": ttl, "values": [value]})
            expect = [{"name": r.hostname, "type": t, "values": []} for t in ADDRESS_TYPES] + \
                     [{"name": n, "type": "TXT", "values": []} for n in sorted({old, new})]
            out.append(Change(operation="create", target=TARGETS[prov.kind], kind="DNSRecord", namespace=pa.name,
                              name=f"{r.hostname} {ep.rtype}", body={**base, "ops": ops, "expect": expect},
                              diff=[{"path": f"{r.hostname} {ep.rtype}", "from": None, "to": ep.targets},
                                    {"path": f"{new} TXT", "from": None, "to": value}],
                              precondition={"provider": prov.identity, "verdict": "missing", "owner": inst.owner}))
        elif r.verdict == "stale" and own is not None and own.owner == inst.owner:
            ep = pa.desired[r.hostname]
            held = _held(recs, r.hostname)
            assert held is not None
            ops = []
            if held.rdtype != ep.rtype:
                ops.append({"op": "delete", "name": r.hostname, "type": held.rdtype})
            ops.append({"op": "replace", "name": r.hostname, "type": ep.rtype, "ttl": held.ttl,
                        "values": _fqdn(ep.rtype, ep.targets)})
            expect = [{"name": r.hostname, "type": held.rdtype, "values": held.values}] + \
                     [{"name": n, "type": "TXT", "values": v} for n, v in sorted(own.txt.items())]
            out.append(Change(operation="patch", target=TARGETS[prov.kind], kind="DNSRecord", namespace=pa.name,
                              name=f"{r.hostname} {ep.rtype}", body={**base, "ops": ops, "expect": expect},
                              diff=[{"path": f"{r.hostname} {held.rdtype}", "from": held.values, "to": ep.targets}],
                              precondition={"provider": prov.identity, "verdict": "stale", "owner": inst.owner,
                                            "held": held.values}))
        elif r.verdict == "orphaned" and own is not None and own.owner == inst.owner:
            ops, expect, diff = [], [], []
            for t in ADDRESS_TYPES:
                values = _rrset(recs, r.hostname, t)
                if values:
                    ops.append({"op": "delete", "name": r.hostname, "type": t})
                    expect.append({"name": r.hostname, "type": t, "values": values})
                    diff.append({"path": f"{r.hostname} {t}", "from": values, "to": None})
            for n, v in sorted(own.txt.items()):
                ops.append({"op": "delete", "name": n, "type": "TXT"})
                expect.append({"name": n, "type": "TXT", "values": v})
                diff.append({"path": f"{n} TXT", "from": v, "to": None})
            out.append(Change(operation="delete", target=TARGETS[prov.kind], kind="DNSRecord", namespace=pa.name,
                              name=r.hostname, body={**base, "ops": ops, "expect": expect}, diff=diff,
                              precondition={"provider": prov.identity, "verdict": "orphaned", "owner": inst.owner,
                                            "resource": own.resource}))
    return out


def dns_changes(cluster: kube.Cluster, *, providers: dict[str, dict[str, Any]], image: str = "external-dns",
                hostnames: list[str] | None = None, ttl_factor: float = 10.0,
                fix: list[str] | None = None) -> list[Change]:
    """Plan builder (``run.plan(dnsaudit.dns_changes, **plan_arguments(p))``): audit again, fix what we own."""
    provs = connect_providers(providers)
    result = audit(cluster, provs, image=image, hostnames=hostnames or [], ttl_factor=ttl_factor)
    out: list[Change] = []
    for pa in result.providers.values():
        out += changes_for(pa, fix if fix is not None else FIXABLE)
    return out


def queries(p: DnsAuditParams) -> dict[str, str]:
    """The PromQL of the health checks: the defaults with the run's overrides."""
    return {**DEFAULT_QUERIES, **p.queries}


def plan_arguments(p: DnsAuditParams) -> dict[str, Any]:
    return {"providers": p.dns_providers, "image": p.externaldns_image, "hostnames": p.hostnames,
            "ttl_factor": p.ttl_factor, "fix": list(p.fix)}


class DnsTarget:
    """Plan target: one change = one write to one provider through its own protocol.

    ``dry_run`` validates without changing anything: RFC 2136 sends the prerequisites
    alone (the server checks them and the TSIG signature); PowerDNS reads the zone and
    checks every RRset the change expects. Applying writes with the same checks.
    """

    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any:
        body = change.body or {}
        prov = dns.provider(body["provider"], body["settings"])
        return prov.write(body["zone"], body, dry_run=dry_run)

    def current(self, run: Run, change: Change) -> Any:
        body = change.body or {}
        prov = dns.provider(body["provider"], body["settings"])
        recs = prov.records(body["zone"])
        names = {op["name"] for op in body.get("ops") or []}
        return {"provider": body["provider"], "zone": body["zone"],
                "rrsets": [{"name": n, "type": t, "ttl": rr.ttl, "values": rr.values}
                           for (n, t), rr in sorted(recs.items()) if n in names]}


for _target in TARGETS.values():
    register_target(_target, DnsTarget())


# ---- verification --------------------------------------------------------------------------------


class VerificationFailed(RunbookError):
    """An applied DNS change is not what the authoritative server answers."""


def verify(providers: dict[str, dns.Provider], applied: list[dict], plan: Any, *, timeout: float = 2.0,
           concurrency: int = 64) -> list[Finding]:
    """Query the authoritative servers again for every applied change."""
    out: list[Finding] = []
    done = {(a["change"]["namespace"], a["change"]["name"]) for a in applied if a.get("result") == "applied"}
    for change in plan.changes:
        if (change.namespace, change.name) not in done:
            continue
        body = change.body or {}
        prov = providers.get(body.get("provider", ""))
        if prov is None:
            continue
        for op in body.get("ops") or []:
            if op["type"] not in ADDRESS_TYPES:
                continue
            ans = dns.query(prov.nameserver, op["name"], op["type"], timeout=timeout)
            got = _norm(ans.values(op["type"]))
            want = [] if op["op"] == "delete" else _norm(op["values"])
            ok = got == want and (ans.authoritative or ans.rcode == "NXDOMAIN")
            out.append(Finding(
                id=f"dns-verify/{prov.name}/{op['name']}/{op['type']}", severity="info" if ok else "critical",
                title=f"{op['name']} {op['type']} in {prov.name}: " + ("as planned" if ok else "NOT as planned"),
                detail=f"authoritative answer {got or ans.rcode}, planned {want or 'no record'}",
                resource=f"{prov.name}:{op['name']}"))
    return out


def fail_unless_verified(findings: Iterable[Finding]) -> None:
    bad = [f for f in findings if f.severity == "critical"]
    if bad:
        raise VerificationFailed("; ".join(f.title for f in bad))


def reevaluate(cluster: kube.Cluster, providers: dict[str, dns.Provider], before: Iterable[Finding],
               applied: list[dict], plan: Any, p: DnsAuditParams) -> list[Finding]:
    """After a verified plan: audit the changed hostnames again, so that a fixed verdict is recorded as
    resolved (:func:`runbooks.resolution.reevaluate`) and the run is not reported as still broken."""
    from . import resolution

    done = [a["change"] for a in applied if a.get("result") == "applied"]
    if not done:
        return []
    touched = {f"{c['namespace']}:{c['name'].split()[0]}" for c in done}
    hosts = sorted({t.split(":", 1)[1] for t in touched})
    after = verdict_findings(audit(cluster, providers, image=p.externaldns_image, hostnames=hosts,
                                   ttl_factor=p.ttl_factor))
    return resolution.reevaluate(before, after, touched, plan.id)
