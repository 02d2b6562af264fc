"""The network checks of service-reachability, for many hosts at once: DNS queries and live probes.

Each provider's authoritative server and the resolver are asked about the hosts (dns-audit's
bounded concurrent client, :mod:`runbooks.dns`), and one HTTPS request per host goes through
the ingress with SNI (:func:`probe`), which also yields the certificate it serves. All run
concurrently with a bound; the results fill a :class:`runbooks.reachmodel.Context`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from . import certs
from .errors import cut
from .reachmodel import Context, DnsAnswer, Probe


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
