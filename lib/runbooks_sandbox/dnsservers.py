"""The sandbox's real DNS servers: BIND 9 and PowerDNS Authoritative, on 127.0.0.1 only.

Three servers, each a real process with its own configuration and state under the
sandbox's state directory, on unprivileged ports:

* **cluster DNS** (``named``): the zones ``cluster.local``, ``in-addr.arpa`` and
  ``ip6.arpa`` that CoreDNS's kubernetes plugin answers, written with RFC 2136
  dynamic updates (TSIG key ``cluster-dns-sync``) by :mod:`.clusterdns`;
* **BIND 9 as an ExternalDNS provider** (``named``): the external zones, updated
  with RFC 2136 + TSIG the way ExternalDNS's ``rfc2136`` provider does, zone
  transfers (AXFR) allowed with the same key;
* **PowerDNS Authoritative** (``pdns_server`` with the gsqlite3 backend): the same
  external zones, written through its HTTP API (``X-API-Key``) the way ExternalDNS's
  ``pdns`` provider does.

Debian's packaged services (``named.service``, ``pdns.service``) are never used:
these processes read only their own files. Binaries come from ``$RUNBOOKS_NAMED_BIN``
and ``$RUNBOOKS_PDNS_BIN`` or the PATH (``/usr/sbin`` included).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import servers
from .servers import Binary, MissingBinary, Unavailable  # noqa: F401 - this module's errors

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
SBIN = "/usr/sbin:/usr/local/sbin"
PDNS_SCHEMA = (Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
               Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"))
CLUSTER_ZONES = ("cluster.local", "in-addr.arpa", "ip6.arpa")
CLUSTER_KEY = "cluster-dns-sync"
EXTERNAL_KEY = "externaldns-key"
TSIG_ALGORITHM = "hmac-sha256"
PDNS_SERVER_ID = "localhost"

BINARIES: dict[str, Binary] = {
    "named": Binary("RUNBOOKS_NAMED_BIN", ("named",), "bind9"),
    "pdns_server": Binary("RUNBOOKS_PDNS_BIN", ("pdns_server",), "pdns-server pdns-backend-sqlite3"),
}


def find_binary(name: str) -> str:
    return servers.find_binary(BINARIES, name, SBIN)


def missing_binaries() -> list[str]:
    """One message per missing DNS server binary (or the PowerDNS sqlite schema)."""
    out = servers.missing_binaries(BINARIES, SBIN)
    if not any(p.exists() for p in PDNS_SCHEMA):
        out.append("the PowerDNS sqlite3 schema is missing: apt-get install pdns-backend-sqlite3")
    return out


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise Unavailable("no free port on 127.0.0.1")


def new_tsig_secret() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _soa(zone: str) -> str:
    return (f"$TTL 300\n@ IN SOA ns1.{zone}. hostmaster.{zone}. ( 1 3600 600 86400 30 )\n"
            f"@ IN NS ns1.{zone}.\nns1.{zone}. IN A 127.0.0.1\n")


class _Process:
    """One server process: spawn, wait until it answers, stop (only this pid)."""

    def __init__(self, name: str, directory: Path):
        self.name, self.dir = name, directory
        self.proc: subprocess.Popen | None = None

    def spawn(self, argv: list[str]) -> None:
        log_file = open(self.dir / f"{self.name}.log", "ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, start_new_session=True, preexec_fn=servers.die_with_parent)
        finally:
            log_file.close()

    def wait(self, ready: Callable[[], bool]) -> None:
        assert self.proc is not None
        servers.wait_ready(self.proc, self.name, ready, self.dir / f"{self.name}.log", READY_TIMEOUT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        servers.stop(proc)


def soa_answers(port: int, zone: str) -> bool:
    """Whether the server on 127.0.0.1:port answers authoritatively for `zone`."""
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(zone, "SOA")
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
    except (OSError, dns.exception.Timeout):
        return False
    return r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AA)


class Named:
    """A BIND 9 ``named`` serving dynamic zones that one TSIG key may update and transfer."""

    def __init__(self, name: str, directory: Path, zones: tuple[str, ...], key_name: str, port: int = 0,
                 records: dict[str, str] | None = None):
        self.name, self.dir, self.zones, self.key_name = name, Path(directory).resolve(), zones, key_name
        self.port = port
        self.secret = new_tsig_secret()
        self.records = records or {}
        self.process = _Process("named", self.dir)

    def start(self) -> int:
        binary = find_binary("named")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.port = self.port or free_port()
        zones = []
        for zone in self.zones:
            path = self.dir / f"db.{zone}"
            path.write_text(_soa(zone) + self.records.get(zone, ""))
            zones.append(f'zone "{zone}" {{ type primary; file "{path}"; '
                         f'allow-update {{ key "{self.key_name}"; }}; allow-transfer {{ key "{self.key_name}"; }}; '
                         f'notify no; }};')
        d = self.dir
        conf = f"""
key "{self.key_name}" {{ algorithm {TSIG_ALGORITHM}; secret "{self.secret}"; }};
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/named_dump.db";
    statistics-file "{d}/named.stats";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ 127.0.0.1; }};
    notify no;
    max-journal-size 64m;
    minimal-responses no;
}};
controls {{ }};
logging {{ category default {{ default_stderr; }}; category lame-servers {{ null; }}; }};
{chr(10).join(zones)}
"""
        (d / "named.conf").write_text(conf)
        os.chmod(d / "named.conf", 0o600)
        self.process.spawn([binary, "-g", "-4", "-n", "1", "-c", str(d / "named.conf")])
        self.process.wait(lambda: all(soa_answers(self.port, z) for z in self.zones))
        return self.port

    def stop(self) -> None:
        self.process.stop()


class PowerDNS:
    """PowerDNS Authoritative with the gsqlite3 backend, its HTTP API on a loopback port."""

    def __init__(self, directory: Path, zones: tuple[str, ...], port: int = 0, api_port: int = 0):
        self.dir, self.zones, self.port, self.api_port = Path(directory).resolve(), zones, port, api_port
        self.api_key = secrets.token_urlsafe(24)
        self.process = _Process("pdns_server", self.dir)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> int:
        binary = find_binary("pdns_server")
        schema = next((p for p in PDNS_SCHEMA if p.exists()), None)
        if schema is None:
            raise MissingBinary("the PowerDNS sqlite3 schema is missing: apt-get install pdns-backend-sqlite3")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        db = self.dir / "pdns.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.executescript(schema.read_text())
        self.port = self.port or free_port()
        self.api_port = self.api_port or free_port(socket.SOCK_STREAM)
        conf = "\n".join([
            "launch=gsqlite3", f"gsqlite3-database={db}", "local-address=127.0.0.1", f"local-port={self.port}",
            "api=yes", f"api-key={self.api_key}", "webserver=yes", "webserver-address=127.0.0.1",
            f"webserver-port={self.api_port}", "webserver-allow-from=127.0.0.0/8", f"socket-dir={self.dir}",
            "guardian=no", "daemon=no", "disable-syslog=yes", "loglevel=4", "receiver-threads=1",
            "distributor-threads=1",
            "zone-cache-refresh-interval=0", "primary=no", "secondary=no", "default-ttl=300", "",
        ])
        (self.dir / "pdns.conf").write_text(conf)
        os.chmod(self.dir / "pdns.conf", 0o600)
        self.process.spawn([binary, f"--config-dir={self.dir}"])
        self.process.wait(lambda: self.api("GET", "/api/v1/servers/localhost")[0] == 200)
        for zone in self.zones:
            status, body = self.api("POST", f"/api/v1/servers/{PDNS_SERVER_ID}/zones", {
                "name": zone + ".", "kind": "Native", "nameservers": [f"ns1.{zone}."],
                "rrsets": [{"name": f"ns1.{zone}.", "type": "A", "ttl": 300, "changetype": "REPLACE",
                            "records": [{"content": "127.0.0.1", "disabled": False}]}]})
            if status not in (201, 204):
                raise Unavailable(f"PowerDNS refused zone {zone}: {status} {body[:300]!r}")
        self.process.wait(lambda: all(soa_answers(self.port, z) for z in self.zones))
        return self.port

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        self.process.stop()
