"""service-reachability's DNS hop: what the authoritative servers and the resolver answer for a host,
compared with the load-balancer address its Ingress publishes (what ExternalDNS registers).

The answers are gathered beforehand for every host (:mod:`runbooks.hostprobes`); this judges them.
"""

from __future__ import annotations

from typing import Any

from .ingressrules import qualified_name
from .reachmodel import Context, Hop


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
            f"Ingress {qualified_name(ing)} has no status.loadBalancer address for ExternalDNS to publish")
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
