"""DNS client: bounded concurrent queries, and the two ExternalDNS provider protocols.

Plain data back, like every client here:

* :func:`query_many` asks one server many questions over a single UDP socket with a
  bounded window of queries in flight (TCP when an answer is truncated), so that
  ten thousand names cost one round trip per window, not one per name;
* :class:`PowerDNS` speaks PowerDNS Authoritative's HTTP API (``/api/v1/servers/<id>/zones``,
  ``X-API-Key``), as ExternalDNS's ``pdns`` provider does;
* :class:`Rfc2136` reads a zone by transfer (AXFR) and writes it with RFC 2136 UPDATE,
  both signed with TSIG, as ExternalDNS's ``rfc2136`` provider does. Its prerequisites
  make writes conditional, and an UPDATE carrying only prerequisites is a dry run the
  server evaluates without changing anything.

Secrets (the API key, the TSIG secret) are read from environment variables whose names
the settings carry; they never appear in errors or records.
"""

from __future__ import annotations

import os
import re
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update
import dns.xfr
import dns.zone
import requests

from .errors import Forbidden, InvalidInput, NotFound, Unavailable, cut

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
PROVIDER_TYPES = ("pdns", "rfc2136")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5")


def is_dns_name(text: Any) -> bool:
    """A hostname as DNS allows it: labels of a-z, 0-9, '-', '_' (1-63 chars), at most 253 in all."""
    if not isinstance(text, str):
        return False
    name = text.lower().rstrip(".")
    if not name or len(name) > 253:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def check_dns_name(text: Any, what: str = "hostname") -> str:
    if not is_dns_name(text):
        raise InvalidInput(f"{what} {text!r} is not a DNS name (labels of a-z, 0-9, '-', at most 63 "
                           "characters each, 253 in all)")
    return text.lower().rstrip(".")


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (address, port)."""
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"DNS server {text!r} is not host[:port]")
    m = re.fullmatch(r"\[([0-9a-fA-F:]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", text.strip())
    if not m:
        raise InvalidInput(f"DNS server {text!r} is not host[:port]")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4) or default_port)
    if not 0 < port < 65536:
        raise InvalidInput(f"DNS server {text!r}: port {port} is out of range")
    if not re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host):
        try:
            host = socket.gethostbyname(host)
        except OSError as exc:
            raise Unavailable(f"DNS server {text!r} cannot be resolved: {exc}") from exc
    return host, port


@dataclass
class Answer:
    """What a server answered for one question."""

    name: str
    rdtype: str
    rcode: str = "NOERROR"
    authoritative: bool = False
    records: list[tuple[str, str, int, str]] = field(default_factory=list)  # (owner, type, ttl, value)
    error: str = ""

    def values(self, rdtype: str | None = None) -> list[str]:
        t = rdtype or self.rdtype
        return sorted(v for _, rt, _, v in self.records if rt == t)

    def ttl(self, rdtype: str | None = None) -> int | None:
        t = rdtype or self.rdtype
        ttls = [ttl for _, rt, ttl, _ in self.records if rt == t]
        return min(ttls) if ttls else None


def _answer(name: str, rdtype: str, resp: dns.message.Message) -> Answer:
    out = Answer(name, rdtype, dns.rcode.to_text(resp.rcode()), bool(resp.flags & dns.flags.AA))
    for rrset in resp.answer:
        for rd in rrset:
            out.records.append((rrset.name.to_text(omit_final_dot=True).lower(),
                                dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, rd.to_text()))
    return out


def query_many(server: str, questions: Iterable[tuple[str, str]], *, concurrency: int = 200,
               timeout: float = 2.0, retries: int = 2) -> dict[tuple[str, str], Answer]:
    """Ask ``server`` every (name, type) question, at most ``concurrency`` in flight at a time.

    One UDP socket carries every query; answers are matched by message id and
    question. A question without an answer is retried ``retries`` times, then
    recorded with ``error='timeout'``; a truncated answer is asked again over TCP.

    Raises:
        Unavailable: nothing at all came back from the server (it is unreachable).
    """
    host, port = parse_server(server)
    todo = list(dict.fromkeys((n.lower().rstrip("."), t.upper()) for n, t in questions))
    results: dict[tuple[str, str], Answer] = {}
    if not todo:
        return results
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    pending: dict[int, tuple[tuple[str, str], float, int]] = {}  # id -> (question, sent at, attempt)
    queue = [(q, 0) for q in todo]
    queue.reverse()
    next_id = 1
    got_any = False
    truncated: list[tuple[str, str]] = []
    try:
        while queue or pending:
            while queue and len(pending) < concurrency:
                q, attempt = queue.pop()
                msg = dns.message.make_query(q[0] + ".", q[1], want_dnssec=False)
                msg.flags &= ~dns.flags.RD
                while next_id in pending:
                    next_id = next_id % 65535 + 1
                msg.id = next_id
                next_id = next_id % 65535 + 1
                try:
                    sock.sendto(msg.to_wire(), (host, port))
                except BlockingIOError:
                    queue.append((q, attempt))
                    break
                pending[msg.id] = (q, time.monotonic(), attempt)
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                while True:
                    try:
                        wire, _ = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except ConnectionRefusedError:
                        continue
                    try:
                        resp = dns.message.from_wire(wire)
                    except dns.exception.DNSException:
                        continue
                    entry = pending.get(resp.id)
                    if entry is None or not resp.question:
                        continue
                    q = entry[0]
                    if resp.question[0].name.to_text(omit_final_dot=True).lower() != q[0]:
                        continue
                    del pending[resp.id]
                    got_any = True
                    if resp.flags & dns.flags.TC:
                        truncated.append(q)
                    else:
                        results[q] = _answer(q[0], q[1], resp)
            now = time.monotonic()
            for mid, (q, sent, attempt) in list(pending.items()):
                if now - sent > timeout:
                    del pending[mid]
                    if attempt < retries:
                        queue.append((q, attempt + 1))
                    else:
                        results[q] = Answer(q[0], q[1], "", False, [], "timeout")
    finally:
        sock.close()
    if not got_any:
        raise Unavailable(f"DNS server {server} did not answer ({len(todo)} question(s), "
                          f"{retries + 1} tries of {timeout:g}s)")
    for q in truncated:
        msg = dns.message.make_query(q[0] + ".", q[1])
        msg.flags &= ~dns.flags.RD
        results[q] = _answer(q[0], q[1], dns.query.tcp(msg, host, port=port, timeout=timeout))
    return results


def query(server: str, name: str, rdtype: str, timeout: float = 2.0) -> Answer:
    """One question (see :func:`query_many`)."""
    return query_many(server, [(name, rdtype)], concurrency=1, timeout=timeout)[(name.lower().rstrip("."),
                                                                                   rdtype.upper())]


def query_sequential(server: str, questions: Iterable[tuple[str, str]], timeout: float = 2.0
                     ) -> dict[tuple[str, str], Answer]:
    """The plain loop (one query, wait, next): what :func:`query_many` is benchmarked against."""
    host, port = parse_server(server)
    out = {}
    for name, rdtype in questions:
        msg = dns.message.make_query(name + ".", rdtype)
        msg.flags &= ~dns.flags.RD
        out[(name, rdtype)] = _answer(name, rdtype, dns.query.udp(msg, host, port=port, timeout=timeout))
    return out


# ---- provider records ------------------------------------------------------------------------


@dataclass
class RRset:
    name: str
    rdtype: str
    ttl: int
    values: list[str]


Records = dict[tuple[str, str], RRset]


def _secret(env: str, what: str) -> str:
    if not env:
        raise InvalidInput(f"{what}: no environment variable is named for the secret")
    value = os.environ.get(env)
    if not value:
        raise InvalidInput(f"{what}: environment variable {env} is not set (the secret comes only from there)")
    return value


def _zone_of(name: str, zones: Iterable[str]) -> str | None:
    found = [z for z in zones if name == z or name.endswith("." + z)]
    return max(found, key=len) if found else None


class Provider:
    """One DNS provider as ExternalDNS writes it: settings from env.yaml / parameters."""

    kind = ""

    def __init__(self, name: str, settings: dict[str, Any]):
        self.name = name
        self.settings = dict(settings)
        zones = settings.get("zones") or []
        if not isinstance(zones, list) or not zones:
            raise InvalidInput(f"DNS provider {name!r}: `zones` must list the zones it serves (got {zones!r})")
        self.zones = [check_dns_name(z, f"DNS provider {name!r}: zone") for z in zones]
        self.nameserver = str(settings.get("nameserver") or "")
        if not self.nameserver:
            raise InvalidInput(f"DNS provider {name!r}: `nameserver` (host:port of its authoritative server) "
                               "is required")
        parse_server(self.nameserver)

    @property
    def identity(self) -> str:
        """What a plan id is bound to: the provider's kind, address and zones."""
        return f"{self.kind}:{self.nameserver}:{','.join(self.zones)}"

    def zone_of(self, name: str) -> str | None:
        return _zone_of(name, self.zones)

    def check(self) -> str:
        raise NotImplementedError

    def records(self, zone: str) -> Records:
        raise NotImplementedError

    def write(self, zone: str, change: dict[str, Any], *, dry_run: bool) -> str:
        raise NotImplementedError


class PowerDNS(Provider):
    """PowerDNS Authoritative through its HTTP API (as ExternalDNS's pdns provider)."""

    kind = "pdns"

    def __init__(self, name: str, settings: dict[str, Any], timeout: float = 10.0):
        super().__init__(name, settings)
        self.api_url = str(settings.get("api_url") or "").rstrip("/")
        if not re.match(r"^https?://", self.api_url):
            raise InvalidInput(f"DNS provider {name!r}: api_url {self.api_url!r} must be an http(s) URL")
        self.server_id = str(settings.get("server_id") or "localhost")
        self.api_key_env = str(settings.get("api_key_env") or "PDNS_API_KEY")
        self.verify = settings.get("verify_tls", True)
        self.timeout = timeout
        self.session = requests.Session()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.api_url}/api/v1/servers/{self.server_id}{path}"
        key = _secret(self.api_key_env, f"DNS provider {self.name!r} (PowerDNS API key)")
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout, verify=self.verify,
                                        headers={"X-API-Key": key, "Accept": "application/json"})
        except requests.RequestException as exc:
            raise Unavailable(f"PowerDNS API of {self.name!r} at {self.api_url} is unreachable: "
                              f"{cut(str(exc).replace(key, '<redacted>'))}") from exc
        if resp.status_code in (401, 403):
            raise Forbidden(f"PowerDNS API of {self.name!r} refused the API key from ${self.api_key_env} "
                            f"(HTTP {resp.status_code})")
        if resp.status_code in (404, 422) and method == "GET":
            raise NotFound(f"PowerDNS {self.name!r} (server id {self.server_id!r}) has no {path}: "
                           f"HTTP {resp.status_code} {cut(resp.text)}")
        if resp.status_code >= 400:
            raise InvalidInput(f"PowerDNS {self.name!r} refused {method} {path}: HTTP {resp.status_code} "
                               f"{cut(resp.text)}")
        return resp.json() if resp.content else None

    def check(self) -> str:
        for zone in self.zones:
            try:
                self._request("GET", f"/zones/{zone}.?rrsets=false")
            except NotFound as exc:
                raise InvalidInput(f"DNS provider {self.name!r}: PowerDNS does not serve zone {zone!r}") from exc
        return f"PowerDNS API {self.api_url}, zones {', '.join(self.zones)}"

    def records(self, zone: str) -> Records:
        data = self._request("GET", f"/zones/{zone}.")
        out: Records = {}
        for rr in data.get("rrsets") or []:
            name = rr["name"].rstrip(".").lower()
            values = sorted(r["content"] for r in rr.get("records") or [] if not r.get("disabled"))
            if values:
                out[(name, rr["type"])] = RRset(name, rr["type"], int(rr.get("ttl") or 0), values)
        return out

    def write(self, zone: str, change: dict[str, Any], *, dry_run: bool) -> str:
        """Check that every RRset is as the plan saw it (``expect``), then PATCH the zone (not when dry)."""
        current = self.records(zone)
        for exp in change.get("expect") or []:
            have = current.get((exp["name"], exp["type"]))
            have_values = sorted(have.values) if have else []
            if have_values != sorted(exp["values"]):
                raise InvalidInput(f"PowerDNS {self.name!r}: {exp['name']} {exp['type']} is {have_values}, "
                                   f"the plan expected {sorted(exp['values'])}: it changed since it was planned")
        if dry_run:
            return "zone and RRsets as planned"
        rrsets = []
        for op in change["ops"]:
            if op["op"] == "delete":
                rrsets.append({"name": op["name"] + ".", "type": op["type"], "changetype": "DELETE"})
            else:
                rrsets.append({"name": op["name"] + ".", "type": op["type"], "ttl": op["ttl"],
                               "changetype": "REPLACE",
                               "records": [{"content": v, "disabled": False} for v in op["values"]]})
        self._request("PATCH", f"/zones/{zone}.", {"rrsets": rrsets})
        return "applied"


class Rfc2136(Provider):
    """A server updated with RFC 2136 + TSIG and read by AXFR (as ExternalDNS's rfc2136 provider)."""

    kind = "rfc2136"

    def __init__(self, name: str, settings: dict[str, Any], timeout: float = 10.0):
        super().__init__(name, settings)
        self.key_name = str(settings.get("tsig_key_name") or "")
        self.algorithm = str(settings.get("tsig_algorithm") or "hmac-sha256").lower()
        if self.algorithm not in TSIG_ALGORITHMS:
            raise InvalidInput(f"DNS provider {name!r}: tsig_algorithm {self.algorithm!r} is not one of "
                               f"{', '.join(TSIG_ALGORITHMS)}")
        self.secret_env = str(settings.get("tsig_secret_env") or "RFC2136_TSIG_SECRET")
        if self.key_name:
            check_dns_name(self.key_name, f"DNS provider {name!r}: tsig_key_name")
        self.timeout = timeout
        self.host, self.port = parse_server(self.nameserver)

    def _key(self) -> dns.tsig.Key | None:
        if not self.key_name:
            return None
        secret = _secret(self.secret_env, f"DNS provider {self.name!r} (TSIG secret)")
        try:
            return dns.tsig.Key(self.key_name, secret, self.algorithm)
        except Exception as exc:  # noqa: BLE001 - base64 errors of a malformed secret
            raise InvalidInput(f"DNS provider {self.name!r}: the TSIG secret in ${self.secret_env} is not "
                               "base64") from exc

    def _tsig_error(self, exc: Exception) -> Forbidden:
        return Forbidden(f"DNS server {self.nameserver} of {self.name!r} refused TSIG key {self.key_name!r} "
                         f"(secret from ${self.secret_env}): {type(exc).__name__}")

    def check(self) -> str:
        for zone in self.zones:
            ans = query(self.nameserver, zone, "SOA", timeout=min(self.timeout, 2.0))
            if ans.error:
                raise Unavailable(f"DNS server {self.nameserver} of {self.name!r} did not answer")
            if ans.rcode != "NOERROR" or not ans.authoritative or not ans.values("SOA"):
                raise InvalidInput(f"DNS provider {self.name!r}: {self.nameserver} does not serve zone {zone!r} "
                                   f"(SOA query: {ans.rcode or ans.error}, authoritative={ans.authoritative})")
            self.records(zone)  # proves the TSIG key (AXFR is allowed only with it)
        return f"RFC 2136 server {self.nameserver}, zones {', '.join(self.zones)}"

    def records(self, zone: str) -> Records:
        key = self._key()
        try:
            z = dns.zone.Zone(zone + ".")
            q, _ = dns.xfr.make_query(z, keyring=key)
            dns.query.inbound_xfr(self.host, z, q, port=self.port, timeout=self.timeout, lifetime=self.timeout * 3)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.BadSignature,
                dns.message.UnknownTSIGKey, dns.tsig.PeerBadTime) as exc:
            raise self._tsig_error(exc) from exc
        except dns.xfr.TransferError as exc:
            if "NOTAUTH" in str(exc) or "REFUSED" in str(exc):
                if key is not None:
                    raise self._tsig_error(exc) from exc
                raise Forbidden(f"DNS server {self.nameserver} refused the zone transfer of {zone!r} "
                                f"({exc}); set tsig_key_name and tsig_secret_env") from exc
            raise InvalidInput(f"DNS provider {self.name!r}: transfer of zone {zone!r} failed: {exc}") from exc
        except (OSError, dns.exception.Timeout, EOFError) as exc:
            raise Unavailable(f"DNS server {self.nameserver} of {self.name!r} is unreachable: {exc}") from exc
        out: Records = {}
        for name, node in z.nodes.items():
            fq = name.derelativize(z.origin).to_text(omit_final_dot=True).lower()
            for rds in node.rdatasets:
                t = dns.rdatatype.to_text(rds.rdtype)
                out[(fq, t)] = RRset(fq, t, rds.ttl, sorted(r.to_text() for r in rds))
        return out

    def write(self, zone: str, change: dict[str, Any], *, dry_run: bool) -> str:
        """One UPDATE: prerequisites (each RRset as planned), then the updates; only the
        prerequisites when ``dry_run`` (the server checks them and TSIG, and changes nothing)."""
        upd = dns.update.UpdateMessage(zone + ".", keyring=self._key())
        for exp in change.get("expect") or []:
            if exp["values"]:
                rds = [dns.rdata.from_text(dns.rdataclass.IN, exp["type"], v) for v in exp["values"]]
                rdset = dns.rdataset.from_rdata_list(0, rds)
                upd.present(exp["name"] + ".", rdset)
            else:
                upd.absent(exp["name"] + ".", exp["type"])
        if not dry_run:
            for op in change["ops"]:
                upd.delete(op["name"] + ".", op["type"])
                if op["op"] != "delete":
                    for v in op["values"]:
                        upd.add(op["name"] + ".", op["ttl"], op["type"], v)
        try:
            resp = dns.query.tcp(upd, self.host, port=self.port, timeout=self.timeout)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.BadSignature,
                dns.message.UnknownTSIGKey) as exc:
            raise self._tsig_error(exc) from exc
        except (OSError, dns.exception.Timeout, EOFError) as exc:
            raise Unavailable(f"DNS server {self.nameserver} of {self.name!r} is unreachable: {exc}") from exc
        rcode = dns.rcode.to_text(resp.rcode())
        if rcode in ("NOTAUTH", "REFUSED") and self.key_name:
            raise self._tsig_error(RuntimeError(rcode))
        if rcode != "NOERROR":
            meaning = {"NXRRSET": "a record the plan expected is gone or different",
                       "YXRRSET": "a record the plan expected absent exists",
                       "NXDOMAIN": "a name the plan expected is gone", "YXDOMAIN": "a name exists"}.get(rcode, "")
            raise InvalidInput(f"DNS server {self.nameserver} of {self.name!r} refused the update of {zone!r}: "
                               f"{rcode}" + (f" ({meaning}: it changed since it was planned)" if meaning else ""))
        return "prerequisites hold" if dry_run else "applied"


PROVIDERS: dict[str, type[Provider]] = {"pdns": PowerDNS, "rfc2136": Rfc2136}


def provider(name: str, settings: Any) -> Provider:
    """A provider from its settings (``type``: ``pdns`` or ``rfc2136``)."""
    if not isinstance(settings, dict):
        raise InvalidInput(f"DNS provider {name!r}: settings must be a mapping, not {type(settings).__name__}")
    kind = settings.get("type")
    if kind not in PROVIDERS:
        raise InvalidInput(f"DNS provider {name!r}: type {kind!r} is not supported; supported: "
                           f"{', '.join(PROVIDERS)}")
    return PROVIDERS[kind](name, settings)
