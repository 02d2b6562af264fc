"""Cluster DNS for the sandbox: Services and EndpointSlices as CoreDNS's kubernetes plugin answers them.

A controller thread computes, from the store, the records the kubernetes plugin
serves (https://github.com/kubernetes/dns/blob/master/docs/specification.md):

* ``<svc>.<ns>.svc.cluster.local`` A/AAAA → the ClusterIP(s); for a headless
  Service the ready endpoint addresses, and ``<hostname>.<svc>.<ns>.svc.cluster.local``
  (the endpoint's hostname, or its address with dashes) for each of them;
* ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV for each named port;
* ExternalName Services → CNAME to ``spec.externalName``;
* PTR for ClusterIPs and endpoint addresses (``in-addr.arpa`` / ``ip6.arpa``);

and sends the difference to the cluster-DNS ``named`` as RFC 2136 updates signed with
the ``cluster-dns-sync`` TSIG key, so a real DNS server answers with real protocol
semantics (NXDOMAIN, NODATA, TTL 30 as in the scenario's Corefile).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import Any

import dns.name
import dns.query
import dns.rcode
import dns.reversename
import dns.tsig
import dns.update

from .dnsservers import CLUSTER_KEY, CLUSTER_ZONES, TSIG_ALGORITHM

log = logging.getLogger(__name__)

TTL = 30
Records = dict[tuple[str, str], tuple[str, ...]]  # (owner name with trailing dot, type) -> sorted rdata texts


def _ready(endpoint: dict) -> bool:
    return (endpoint.get("conditions") or {}).get("ready", True) is not False


def desired_records(services: Iterable[dict], slices: Iterable[dict], domain: str = "cluster.local") -> Records:
    """The records the kubernetes plugin answers for these Services and EndpointSlices."""
    by_service: dict[tuple[str, str], list[dict]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        svc = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            by_service.setdefault((meta.get("namespace", ""), svc), []).append(s)
    out: dict[tuple[str, str], set[str]] = {}

    def add(name: str, rtype: str, value: str) -> None:
        out.setdefault((name, rtype), set()).add(value)

    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        base = f"{name}.{ns}.svc.{domain}."
        if spec.get("type") == "ExternalName":
            if spec.get("externalName"):
                add(base, "CNAME", spec["externalName"].rstrip(".") + ".")
            continue
        ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
        if ips:
            for ip in ips:
                add(base, "AAAA" if ":" in ip else "A", ip)
                add(dns.reversename.from_address(ip).to_text(), "PTR", base)
            for port in spec.get("ports") or []:
                if port.get("name"):
                    proto = (port.get("protocol") or "TCP").lower()
                    add(f"_{port['name']}._{proto}.{base}", "SRV", f"0 100 {port['port']} {base}")
            continue
        # headless: the ready endpoints
        for sl in by_service.get((ns, name), []):
            for ep in sl.get("endpoints") or []:
                if not _ready(ep):
                    continue
                for ip in ep.get("addresses") or []:
                    label = ep.get("hostname") or ip.replace(".", "-").replace(":", "-")
                    host = f"{label}.{base}"
                    rtype = "AAAA" if ":" in ip else "A"
                    add(base, rtype, ip)
                    add(host, rtype, ip)
                    add(dns.reversename.from_address(ip).to_text(), "PTR", host)
                    for port in sl.get("ports") or []:
                        if port.get("name"):
                            proto = (port.get("protocol") or "TCP").lower()
                            add(f"_{port['name']}._{proto}.{base}", "SRV", f"0 100 {port.get('port')} {host}")
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _zone_of(name: str, zones: Iterable[str]) -> str | None:
    best = None
    for zone in zones:
        z = zone.rstrip(".") + "."
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


class ClusterDNSSync:
    """Keeps the cluster-DNS server in step with the store: one thread, RFC 2136 updates with TSIG."""

    def __init__(self, sandbox: Any, port: int, secret: str, interval: float = 1.0,
                 zones: tuple[str, ...] = CLUSTER_ZONES):
        self.sandbox, self.port, self.interval, self.zones = sandbox, port, interval, zones
        self.key = dns.tsig.Key(CLUSTER_KEY, secret, TSIG_ALGORITHM)
        self.pushed: Records = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="sandbox-cluster-dns", daemon=True)

    def _objects(self, kind: str) -> list[dict]:
        rt = self.sandbox.registry.by_kind_any_version(kind)
        return list(self.sandbox.store.items(rt)) if rt is not None else []

    def sync(self) -> int:
        """Push the difference between the store and the server; returns the number of RRsets changed."""
        want = desired_records(self._objects("Service"), self._objects("EndpointSlice"))
        changed = [k for k in set(want) | set(self.pushed) if want.get(k) != self.pushed.get(k)]
        updates: dict[str, dns.update.UpdateMessage] = {}
        for name, rtype in changed:
            zone = _zone_of(name, self.zones)
            if zone is None:
                continue
            upd = updates.setdefault(zone, dns.update.UpdateMessage(zone, keyring=self.key))
            upd.delete(name, rtype)
            for value in want.get((name, rtype), ()):
                upd.add(name, TTL, rtype, value)
        for zone, upd in updates.items():
            resp = dns.query.tcp(upd, "127.0.0.1", port=self.port, timeout=5)
            if resp.rcode() != dns.rcode.NOERROR:
                raise RuntimeError(f"cluster DNS refused the update of {zone}: {dns.rcode.to_text(resp.rcode())}")
        self.pushed = want
        return len(changed)

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep syncing; the next tick retries
                log.exception("cluster DNS sync failed")

    def start(self) -> None:
        self.sync()
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
