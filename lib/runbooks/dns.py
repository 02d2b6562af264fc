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
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from .errors import Forbidden, InvalidInput, NotFound, Unavailable, cut

if TYPE_CHECKING:
    import dns.message
    import dns.tsig


def _dnspython() -> Any:
    """dnspython on first use (TCP, AXFR, UPDATE, PTR, system resolver): UDP queries and provider settings
    need none of it, and its import cost each service-reachability and dns-audit run 0.2 s twice."""
    import dns.message  # also exception, flags, name, rcode, rdata, rdataclass, rdataset, rdatatype
    import dns.query
    import dns.resolver
    import dns.reversename
    import dns.tsig
    import dns.update
    import dns.xfr
    import dns.zone

    return dns

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


def reverse_name(ip: str) -> str:
    """The PTR owner of an address: ``10.0.0.5`` → ``5.0.0.10.in-addr.arpa``."""
    dns = _dnspython()
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)


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


# ---- the wire format, the few parts this module reads ------------------------------------------
# dnspython builds and parses whole messages with rich objects; ten thousand answers (or a zone
# transfer of thirty thousand records) spend seconds there. Queries here are a header and one
# question; answers need owner, type, TTL and a text form of A, AAAA, CNAME, TXT, SRV ... only.

_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
          "TSIG": 250, "AXFR": 252, "ANY": 255}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
           7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


def _qname_wire(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def _query_wire(qid: int, name: str, rdtype: str, recursive: bool = False) -> bytes:
    flags = 0x0100 if recursive else 0  # RD: recursion desired
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + _qname_wire(name) + struct.pack("!HH", _TYPES[rdtype], 1)


def _read_name(buf: bytes, off: int) -> tuple[str, int]:
    labels, end, jumps = [], -1, 0
    while True:
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | buf[off + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(buf[off:off + n].decode("ascii", "replace").lower())
        off += n
    return ".".join(labels), (end if end >= 0 else off)


_PLAIN = re.compile(rb"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")  # printable ASCII but '"' and '\\'


def _txt_string(raw: bytes) -> str:
    """One character-string in zone-file form, escaped as dnspython and BIND write it."""
    if _PLAIN.match(raw):
        return '"' + raw.decode("ascii") + '"'
    out = []
    for b in raw:
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return '"' + "".join(out) + '"'


def _rdata_text(buf: bytes, rtype: int, off: int, length: int) -> str:
    end = off + length
    if rtype == 1:
        return socket.inet_ntop(socket.AF_INET, buf[off:end])
    if rtype == 28:
        return socket.inet_ntop(socket.AF_INET6, buf[off:end])
    if rtype in (2, 5, 12):
        return _read_name(buf, off)[0] + "."
    if rtype == 16:
        parts = []
        while off < end:
            n = buf[off]
            parts.append(_txt_string(buf[off + 1:off + 1 + n]))
            off += 1 + n
        return " ".join(parts)
    if rtype == 33:
        prio, weight, port = struct.unpack("!HHH", buf[off:off + 6])
        return f"{prio} {weight} {port} {_read_name(buf, off + 6)[0]}."
    if rtype == 15:
        return f"{struct.unpack('!H', buf[off:off + 2])[0]} {_read_name(buf, off + 2)[0]}."
    if rtype == 6:
        mname, o = _read_name(buf, off)
        rname, o = _read_name(buf, o)
        return f"{mname}. {rname}. " + " ".join(str(x) for x in struct.unpack("!IIIII", buf[o:o + 20]))
    return f"\\# {length} {buf[off:end].hex()}"


@dataclass
class _Parsed:
    id: int
    flags: int
    rcode: str
    qname: str
    records: list[tuple[str, str, int, str]]
    tsig_start: int = -1


def _parse(buf: bytes, *, skip_question: bool = False) -> _Parsed:
    """Header, question name and answer records of a message (TSIG position in the additional section)."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", buf[:12])
    off, qname = 12, ""
    for _ in range(qd):
        qname, off = _read_name(buf, off)
        off += 4
    records = []
    tsig_start = -1
    for i in range(an + ns + ar):
        start = off
        owner, off = _read_name(buf, off)
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
        off += 10
        if i < an:
            records.append((owner, _TYPE_NAMES.get(rtype, str(rtype)), ttl, _rdata_text(buf, rtype, off, rdlen)))
        elif rtype == 250:
            tsig_start = start
        off += rdlen
    return _Parsed(qid, flags, _RCODES.get(flags & 0xF, str(flags & 0xF)), qname, records, tsig_start)


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
    dns = _dnspython()
    out = Answer(name, rdtype, dns.rcode.to_text(resp.rcode()), bool(resp.flags & dns.flags.AA))
    for rrset in resp.answer:
        for rd in rrset:
            out.records.append((rrset.name.to_text(omit_final_dot=True).lower(),
                                dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, rd.to_text()))
    return out


def query_many(server: str, questions: Iterable[tuple[str, str]], *, concurrency: int = 64,
               timeout: float = 2.0, retries: int = 2, recursive: bool = False) -> dict[tuple[str, str], Answer]:
    """Ask ``server`` every (name, type) question, at most ``concurrency`` in flight at a time.

    Questions go to an authoritative server with recursion off; ``recursive`` sets the RD
    flag, for a resolver.

    One UDP socket carries every query; answers are matched by message id and
    question. ``timeout`` is the time one question may take in all: it is sent up to
    ``retries + 1`` times, each waiting its share, then recorded with ``error='timeout'``
    (a burst that overflows a server's queue recovers in a fraction of it); a truncated
    answer is asked again over TCP.

    Raises:
        Unavailable: nothing at all came back from the server (it is unreachable).
    """
    host, port = parse_server(server)
    todo = list(dict.fromkeys((n.lower().rstrip("."), t.upper()) for n, t in questions))
    results: dict[tuple[str, str], Answer] = {}
    if not todo:
        return results
    attempt_timeout = timeout / (retries + 1)
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
                while next_id in pending:
                    next_id = next_id % 65535 + 1
                qid, next_id = next_id, next_id % 65535 + 1
                try:
                    sock.sendto(_query_wire(qid, q[0], q[1], recursive), (host, port))
                except BlockingIOError:
                    queue.append((q, attempt))
                    break
                pending[qid] = (q, time.monotonic(), attempt)
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready and _receive(sock, pending, results, truncated):
                got_any = True
            now = time.monotonic()
            for mid, (q, sent, attempt) in list(pending.items()):
                if now - sent > attempt_timeout:
                    del pending[mid]
                    if attempt < retries:
                        queue.append((q, attempt + 1))
                    else:
                        results[q] = Answer(q[0], q[1], "", False, [], "timeout")
    finally:
        sock.close()
    if not got_any:
        raise Unavailable(f"DNS server {server} did not answer ({len(todo)} question(s), "
                          f"{retries + 1} tries in {timeout:g}s)")
    if truncated:
        dns = _dnspython()
    for q in truncated:
        msg = dns.message.make_query(q[0] + ".", q[1])
        if not recursive:
            msg.flags &= ~dns.flags.RD
        results[q] = _answer(q[0], q[1], dns.query.tcp(msg, host, port=port, timeout=timeout))
    return results


def _receive(sock: socket.socket, pending: dict[int, tuple[tuple[str, str], float, int]],
             results: dict[tuple[str, str], Answer], truncated: list[tuple[str, str]]) -> bool:
    """Read every datagram waiting on `sock`: an answer to a pending question goes to `results`
    (or `truncated`, to be asked again over TCP); anything else is dropped. Whether one matched."""
    matched = False
    while True:
        try:
            wire, _ = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return matched
        except ConnectionRefusedError:
            continue
        try:
            resp = _parse(wire)
        except (ValueError, IndexError, struct.error, OSError):
            continue
        entry = pending.get(resp.id)
        if entry is None or resp.qname != entry[0][0]:
            continue
        q = entry[0]
        del pending[resp.id]
        matched = True
        if resp.flags & 0x0200:  # TC: ask again over TCP
            truncated.append(q)
        else:
            results[q] = Answer(q[0], q[1], resp.rcode, bool(resp.flags & 0x0400), resp.records)


def query(server: str, name: str, rdtype: str, timeout: float = 2.0) -> Answer:
    """One question (see :func:`query_many`)."""
    return query_many(server, [(name, rdtype)], concurrency=1, timeout=timeout)[(name.lower().rstrip("."),
                                                                                   rdtype.upper())]


def resolve_system(name: str, rdtype: str = "A", timeout: float = 2.0) -> Answer:
    """What the system's resolver (``/etc/resolv.conf``) answers for one question, CNAMEs included."""
    dns = _dnspython()
    resolver = dns.resolver.Resolver()
    resolver.lifetime = timeout
    try:
        resp = resolver.resolve(name, rdtype, raise_on_no_answer=False).response
    except dns.resolver.NXDOMAIN:
        return Answer(name.lower().rstrip("."), rdtype, "NXDOMAIN")
    except (dns.exception.DNSException, OSError) as exc:
        return Answer(name.lower().rstrip("."), rdtype, "", error=f"{type(exc).__name__}: {cut(str(exc), 160)}")
    return _answer(name.lower().rstrip("."), rdtype, resp)


def query_sequential(server: str, questions: Iterable[tuple[str, str]], timeout: float = 2.0
                     ) -> dict[tuple[str, str], Answer]:
    """The plain loop (one query, wait, next): what :func:`query_many` is benchmarked against."""
    dns = _dnspython()
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
    best = None
    for z in zones:
        if (name == z or (name.endswith(z) and name[-len(z) - 1] == ".")) and (best is None or len(z) > len(best)):
            best = z
    return best


class Provider:
    """One DNS provider as ExternalDNS writes it: settings from env.yaml / parameters."""

    kind = ""
    checked = ""  # what check() found, once it ran

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
        dns = _dnspython()
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
            # an UPDATE carrying only a prerequisite that holds (the apex exists) proves the TSIG key and
            # the right to update the zone, and changes nothing
            self.write(zone, {"expect": [{"name": zone, "type": "SOA", "values": None}], "ops": []}, dry_run=True)
        return f"RFC 2136 server {self.nameserver}, zones {', '.join(self.zones)}"

    def records(self, zone: str) -> Records:
        """The zone by AXFR (signed with TSIG when a key is set; every answer's signature checked)."""
        dns = _dnspython()
        key = self._key()
        q, _ = dns.xfr.make_query(dns.zone.Zone(zone + "."), keyring=key)
        wire = q.to_wire()
        out: Records = {}
        sets: dict[tuple[str, str], RRset] = {}
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                sock.sendall(struct.pack("!H", len(wire)) + wire)
                reader = sock.makefile("rb")
                soa_seen, ctx, first = 0, None, True
                while soa_seen < 2:
                    head = reader.read(2)
                    if len(head) < 2:
                        raise EOFError("the server closed the transfer early")
                    msg = reader.read(struct.unpack("!H", head)[0])
                    parsed = _parse(msg)
                    if parsed.id != q.id:
                        raise InvalidInput(f"zone transfer of {zone!r} from {self.nameserver}: answer to another query")
                    if parsed.rcode != "NOERROR":
                        raise dns.xfr.TransferError(dns.rcode.from_text(parsed.rcode))
                    if key is not None:
                        ctx = self._verify(msg, parsed, key, q.mac, ctx, first)
                    first = False
                    for owner, t, ttl, value in parsed.records:
                        if t == "SOA" and owner == zone:
                            soa_seen += 1
                            if soa_seen == 2:
                                break
                        rr = sets.get((owner, t))
                        if rr is None:
                            rr = sets[(owner, t)] = RRset(owner, t, ttl, [])
                        rr.values.append(value)
                    if not parsed.records:
                        raise InvalidInput(f"zone transfer of {zone!r} from {self.nameserver}: an empty answer")
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.BadSignature,
                dns.message.UnknownTSIGKey, dns.tsig.PeerBadTime, dns.tsig.BadKey) as exc:
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
        for k, rr in sets.items():
            out[k] = RRset(rr.name, rr.rdtype, rr.ttl, sorted(set(rr.values)))
        return out

    @staticmethod
    def _verify(msg: bytes, parsed: _Parsed, key: dns.tsig.Key, request_mac: bytes, ctx: Any, first: bool) -> Any:
        """Check one answer's TSIG (RFC 8945, multi-message rules) with dnspython's validator."""
        dns = _dnspython()
        if parsed.tsig_start < 0:
            if first or ctx is None:
                raise dns.tsig.BadSignature("the first answer of the transfer is not signed")
            ctx.update(msg)
            return ctx
        owner, used = dns.name.from_wire(msg, parsed.tsig_start)
        off = parsed.tsig_start + used
        _, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        rdata = dns.rdata.from_wire(dns.rdataclass.ANY, dns.rdatatype.TSIG, msg, off + 10, rdlen)
        return dns.tsig.validate(msg, key, owner, rdata, int(time.time()), request_mac, parsed.tsig_start, ctx,
                                 True)

    def write(self, zone: str, change: dict[str, Any], *, dry_run: bool) -> str:
        """One UPDATE: prerequisites (each RRset as planned), then the updates; only the
        prerequisites when ``dry_run`` (the server checks them and TSIG, and changes nothing)."""
        dns = _dnspython()
        upd = dns.update.UpdateMessage(zone + ".", keyring=self._key())
        for exp in change.get("expect") or []:
            if exp["values"] is None:  # the RRset exists, whatever its values
                upd.present(exp["name"] + ".", exp["type"])
            elif exp["values"]:
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
