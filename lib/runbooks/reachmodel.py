"""What service-reachability reports: a hop's verdict, a host's walk, and the network results it judges.

Plain data shared by the hops (:mod:`runbooks.reachability`), the network checks
(:mod:`runbooks.hostprobes`) and the notebook's chain display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .model import Finding

HOPS: tuple[str, ...] = ("dns", "ingress", "tls", "backend", "probe")
"""The hops, in the order a request crosses them."""
HOP_TITLES = {"dns": "DNS", "ingress": "Ingress", "tls": "TLS", "backend": "Backend", "probe": "Live probe"}


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
