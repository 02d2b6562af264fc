"""The sandbox's kubelet: what a pod sees of the cluster, computed from the store.

The sandbox has no containers, yet exec, attach and port-forward must answer
as a kubelet would. This module is the pod's view, read fresh from the
sandbox's store on every call: its environment (container env, ConfigMap,
Secret and field references, the Service links the kubelet injects), the
files the kubelet writes or mounts (resolv.conf from dnsPolicy/dnsConfig,
hosts, ConfigMap/Secret volumes), the pod's stub resolver (its resolv.conf's
search list and ndots, asking the sandbox's real cluster DNS server when the DNS
servers run, else answering from the Service table: ClusterIP, headless
endpoints, ExternalName), where a connection to an IP and
port lands (a Service's ready endpoint or a pod's declared port) and the
built-in HTTP responder every sandbox container answers with. The commands a
pod can run over this view, and their documented table, are in tools.py.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_DNS_IP = "10.96.0.10"
KUBERNETES_SERVICE_IP = "10.96.0.1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NODE_DNS_IP = "192.168.0.1"  # the node's resolver (dnsPolicy Default)
CLUSTER_DNS_ZONES = (CLUSTER_DOMAIN, "in-addr.arpa", "ip6.arpa")
DNS_TIMEOUT = 2.0


@dataclass
class DnsAnswer:
    """One DNS answer as a stub resolver sees it: rcode (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, or
    TIMEOUT when no server answered) and the answer section as (owner, ttl, type, rdata text)."""

    rcode: str
    records: list[tuple[str, int, str, str]] = field(default_factory=list)

    def values(self, rdtype: str) -> list[str]:
        return [text for _, _, t, text in self.records if t == rdtype]


class ContainerNotRunning(Exception):
    """exec/attach into a container that is not running (the kubelet's wording)."""


class Kubelet:
    """Every pod's environment, files, resolver, routing and responder, reading the sandbox's store."""

    def __init__(self, store, registry):
        self.store, self.registry = store, registry
        self._rr = itertools.count()
        self._output: dict[tuple[str, str], bytearray] = {}  # (pod uid, container) -> its log (ephemeral)
        self._output_lock = threading.Lock()
        self.dns_servers: dict[str, tuple[str, int]] = {}  # zone -> (address, port) of the real server

    def use_dns(self, servers: dict[str, tuple[str, int]] | None) -> None:
        """Answer the pods' DNS questions from real servers: zone -> (address, port).

        The cluster zones (``cluster.local``, ``in-addr.arpa``, ``ip6.arpa``) go to the cluster DNS
        server, every other zone to its authoritative server, as CoreDNS's ``forward`` plugin would
        send them upstream; a name in no known zone is NXDOMAIN (the sandbox has no Internet).
        None: back to the Service table.
        """
        self.dns_servers = dict(servers or {})

    def record(self, pod: dict, container: str, data: bytes) -> None:
        """Keep what an ephemeral container's process writes: its log, as the runtime would."""
        with self._output_lock:
            self._output.setdefault((pod["metadata"].get("uid", ""), container), bytearray()).extend(data)

    def output(self, pod: dict, container: str) -> bytes:
        with self._output_lock:
            return bytes(self._output.get((pod["metadata"].get("uid", ""), container), b""))

    # ---- cluster state -------------------------------------------------------------------

    def _items(self, kind: str, namespace: str | None = None) -> list[dict]:
        rt = self.registry.by_kind_any_version(kind)
        return self.store.items(rt, namespace) if rt is not None else []

    def _find(self, kind: str, namespace: str | None, name: str) -> dict | None:
        rt = self.registry.by_kind_any_version(kind)
        return self.store.find(rt, namespace, name) if rt is not None else None

    def dns_ip(self) -> str:
        svc = self._find("Service", "kube-system", "kube-dns")
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        return ip if ip and ip != "None" else DEFAULT_DNS_IP

    # ---- containers ----------------------------------------------------------------------

    @staticmethod
    def container_spec(pod: dict, name: str) -> dict | None:
        spec = pod.get("spec") or {}
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) + \
                (spec.get("ephemeralContainers") or []):
            if c.get("name") == name:
                return c
        return None

    @staticmethod
    def check_running(pod: dict, name: str) -> None:
        """Raise ContainerNotRunning unless the container is running now."""
        status = pod.get("status") or {}
        for st in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []) + \
                (status.get("ephemeralContainerStatuses") or []):
            if st.get("name") == name:
                if (st.get("state") or {}).get("running"):
                    return
                break
        raise ContainerNotRunning(f'container not found ("{name}")')

    # ---- exec ----------------------------------------------------------------------------

    def run(self, pod: dict, container: str, argv: list[str], io) -> int:
        """Run one command of the tool table in the container (tools.IO); returns its exit code."""
        from . import tools

        return tools.run(self, pod, container, argv, io)

    # ---- environment ---------------------------------------------------------------------

    def environment(self, pod: dict, container: str) -> list[tuple[str, str]]:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        c = self.container_spec(pod, container) or {}
        ns = meta.get("namespace", "default")
        env: dict[str, str] = {"PATH": PATH, "HOSTNAME": spec.get("hostname") or meta["name"]}
        services = []
        started = (pod.get("status") or {}).get("startTime") or meta.get("creationTimestamp") or ""
        master = self._find("Service", "default", "kubernetes")
        services.append(master or {"metadata": {"name": "kubernetes"}, "spec": {
            "clusterIP": KUBERNETES_SERVICE_IP, "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}})
        if spec.get("enableServiceLinks", True):
            for svc in sorted(self._items("Service", ns), key=lambda s: s["metadata"]["name"]):
                created = svc["metadata"].get("creationTimestamp") or ""
                if started and created and created > started:
                    continue  # created after the pod started: not in its environment
                if ns == "default" and svc["metadata"]["name"] == "kubernetes":
                    continue
                services.append(svc)
        for svc in services:
            env.update(_service_env(svc))
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = (self._find("ConfigMap", ns, src["configMapRef"].get("name", "")) or {}).get("data") or {}
            else:
                secret = self._find("Secret", ns, (src.get("secretRef") or {}).get("name", "")) or {}
                data = {k: _b64(v) for k, v in (secret.get("data") or {}).items()}
            for k, v in data.items():
                env[prefix + k] = v
        for e in c.get("env") or []:
            value = e.get("value")
            if value is None and "valueFrom" in e:
                value = self._value_from(pod, e["valueFrom"])
            if value is not None:
                env[e["name"]] = _expand_refs(str(value), env)
        env.setdefault("HOME", "/root")
        return list(env.items())

    def _value_from(self, pod: dict, src: dict) -> str | None:
        ns = pod["metadata"].get("namespace", "default")
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            return ((self._find("ConfigMap", ns, ref.get("name", "")) or {}).get("data") or {}).get(ref.get("key"))
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            raw = ((self._find("Secret", ns, ref.get("name", "")) or {}).get("data") or {}).get(ref.get("key"))
            return _b64(raw) if raw is not None else None
        if "fieldRef" in src:
            return _field(pod, src["fieldRef"].get("fieldPath", ""))
        return None

    # ---- files ---------------------------------------------------------------------------

    def files(self, pod: dict, container: str) -> tuple[dict[str, bytes], set[str]]:
        """(path -> content, directories) of what the kubelet writes or mounts into the container."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns = meta.get("namespace", "default")
        files = {"/etc/resolv.conf": self.resolv_conf(pod).encode(), "/etc/hosts": self.hosts(pod).encode(),
                 "/etc/hostname": (meta["name"] + "\n").encode()}
        dirs = {"/", "/etc", "/bin", "/tmp", "/var", "/var/run", "/root"}
        if spec.get("automountServiceAccountToken", True):
            files[f"{SA_DIR}/namespace"] = ns.encode()
            dirs.add(SA_DIR)
        volumes = {v.get("name"): v for v in spec.get("volumes") or []}
        c = self.container_spec(pod, container) or {}
        for mount in c.get("volumeMounts") or []:
            vol = volumes.get(mount.get("name")) or {}
            content = self._volume(ns, vol)
            base = mount.get("mountPath", "").rstrip("/")
            if mount.get("subPath"):
                if mount["subPath"] in content:
                    files[base] = content[mount["subPath"]]
                continue
            dirs.add(base)
            for rel, data in content.items():
                files[f"{base}/{rel}"] = data
        return files, dirs

    def _volume(self, ns: str, vol: dict) -> dict[str, bytes]:
        if "configMap" in vol:
            return self._source(ns, "ConfigMap", vol["configMap"].get("name", ""), vol["configMap"].get("items"))
        if "secret" in vol:
            return self._source(ns, "Secret", vol["secret"].get("secretName", ""), vol["secret"].get("items"))
        out: dict[str, bytes] = {}
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                out.update(self._source(ns, "ConfigMap", src["configMap"].get("name", ""), src["configMap"].get("items")))
            elif "secret" in src:
                out.update(self._source(ns, "Secret", src["secret"].get("name", ""), src["secret"].get("items")))
        return out

    def _source(self, ns: str, kind: str, name: str, items: list | None) -> dict[str, bytes]:
        obj = self._find(kind, ns, name) or {}
        if kind == "Secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        if items:
            return {i["path"]: data[i["key"]] for i in items if i.get("key") in data}
        return data

    def search_domains(self, pod: dict) -> tuple[list[str], list[str], list[str]]:
        """(nameservers, search domains, options) of the pod's resolv.conf."""
        spec = pod.get("spec") or {}
        ns = pod["metadata"].get("namespace", "default")
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        if policy == "ClusterFirst" and spec.get("hostNetwork"):
            policy = "Default"
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            servers = [self.dns_ip()]
            search = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
            options = ["ndots:5"]
        elif policy == "Default":
            servers, search, options = ["192.168.0.1"], [], []
        else:  # None: only dnsConfig
            servers, search, options = [], [], []
        cfg = spec.get("dnsConfig") or {}
        servers += [s for s in cfg.get("nameservers") or [] if s not in servers]
        search += [s for s in cfg.get("searches") or [] if s not in search]
        opts = {o.split(":")[0]: o for o in options}
        for o in cfg.get("options") or []:
            opts[o["name"]] = f"{o['name']}:{o['value']}" if o.get("value") is not None else o["name"]
        return servers[:3], search, list(opts.values())

    def resolv_conf(self, pod: dict) -> str:
        servers, search, options = self.search_domains(pod)
        lines = []
        if search:
            lines.append("search " + " ".join(search))
        lines += [f"nameserver {s}" for s in servers]
        if options:
            lines.append("options " + " ".join(options))
        return "\n".join(lines) + "\n"

    def hosts(self, pod: dict) -> str:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ip = (pod.get("status") or {}).get("podIP", "")
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
                 "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
        hostname = spec.get("hostname") or meta["name"]
        if spec.get("subdomain"):
            ns = meta.get("namespace", "default")
            lines.append(f"{ip}\t{hostname}.{spec['subdomain']}.{ns}.svc.{CLUSTER_DOMAIN}\t{hostname}")
        elif ip:
            lines.append(f"{ip}\t{hostname}")
        aliases = spec.get("hostAliases") or []
        if aliases:
            lines.append("")
            lines.append("# Entries added by HostAliases.")
            lines += [f"{a.get('ip')}\t" + "\t".join(a.get("hostnames") or []) for a in aliases]
        return "\n".join(lines) + "\n"

    # ---- DNS -----------------------------------------------------------------------------

    def lookup_fqdn(self, fqdn: str) -> tuple[str, list[str]] | None:
        """('A', ips) or ('CNAME', [target]) for a fully qualified cluster name, else None."""
        parts = fqdn.rstrip(".").lower().split(".")
        suffix = CLUSTER_DOMAIN.split(".")
        if parts[-len(suffix):] != suffix:
            return None
        rest = parts[:-len(suffix)]
        if len(rest) == 3 and rest[2] == "svc":
            svc = self._find("Service", rest[1], rest[0])
            if svc is None:
                return None
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName":
                return "CNAME", [spec.get("externalName", "")]
            if spec.get("clusterIP") in (None, "", "None"):
                return "A", self.ready_ips(rest[1], rest[0])
            return "A", [spec["clusterIP"]]
        if len(rest) == 3 and rest[2] == "pod":
            ip = rest[0].replace("-", ".")
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                return None
            return "A", [ip]
        return None

    def ready_ips(self, namespace: str, service: str) -> list[str]:
        return [ip for ip, _ in self.ready_endpoints(namespace, service)]

    def ready_endpoints(self, namespace: str, service: str) -> list[tuple[str, str]]:
        """(IP, pod name) of a Service's ready endpoints (EndpointSlices, else Endpoints)."""
        out: list[tuple[str, str]] = []
        for s in self._items("EndpointSlice", namespace):
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != service:
                continue
            for ep in s.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready", True):
                    for ip in ep.get("addresses") or []:
                        out.append((ip, (ep.get("targetRef") or {}).get("name", "")))
        if not out:
            eps = self._find("Endpoints", namespace, service) or {}
            for subset in eps.get("subsets") or []:
                for addr in subset.get("addresses") or []:
                    out.append((addr.get("ip", ""), (addr.get("targetRef") or {}).get("name", "")))
        return sorted(set(out))

    def ask(self, fqdn: str, rdtype: str = "A", nameserver: str | None = None) -> DnsAnswer:
        """One question to the server behind ``nameserver`` (default: the cluster DNS Service's IP).

        The cluster DNS IP reaches the cluster DNS server (cluster zones, other zones forwarded);
        the node's resolver (dnsPolicy Default) knows only the zones outside the cluster; any
        other address is not a DNS server the sandbox runs: the question times out. CNAMEs to
        another zone are followed, as a recursive server would.
        """
        nameserver = nameserver or self.dns_ip()
        if nameserver not in (self.dns_ip(), NODE_DNS_IP):
            return DnsAnswer("TIMEOUT")
        cluster_only = nameserver == NODE_DNS_IP
        if not self.dns_servers:  # the Service table knows cluster names only: no chasing
            return self._ask_once(fqdn.rstrip(".").lower(), rdtype, exclude_cluster=cluster_only)
        records: list[tuple[str, int, str, str]] = []
        name = fqdn.rstrip(".").lower()
        for _ in range(8):  # CNAME chain
            ans = self._ask_once(name, rdtype, exclude_cluster=cluster_only)
            records += ans.records
            if ans.rcode != "NOERROR":
                return DnsAnswer(ans.rcode, records)
            targets = ans.values("CNAME")
            if rdtype == "CNAME" or not targets or ans.values(rdtype):
                return DnsAnswer("NOERROR", records)
            name = targets[-1].rstrip(".").lower()
        return DnsAnswer("SERVFAIL", records)

    def _ask_once(self, name: str, rdtype: str, exclude_cluster: bool) -> DnsAnswer:
        cluster = any(name == z or name.endswith("." + z) for z in CLUSTER_DNS_ZONES)
        if exclude_cluster and cluster:
            return DnsAnswer("NXDOMAIN")
        if not self.dns_servers:
            return self._from_service_table(name, rdtype)
        zone = max((z for z in self.dns_servers if name == z or name.endswith("." + z)), key=len, default=None)
        if zone is None:
            return DnsAnswer("NXDOMAIN")
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
        import dns.rdatatype

        host, port = self.dns_servers[zone]
        try:
            resp = dns.query.udp(dns.message.make_query(name + ".", rdtype), host, port=port, timeout=DNS_TIMEOUT)
        except (dns.exception.Timeout, OSError):
            return DnsAnswer("TIMEOUT")
        records = [(rrset.name.to_text(), rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
                   for rrset in resp.answer for rd in rrset]
        return DnsAnswer(dns.rcode.to_text(resp.rcode()), records)

    def _from_service_table(self, name: str, rdtype: str) -> DnsAnswer:
        hit = self.lookup_fqdn(name)
        if hit is None:
            return DnsAnswer("NXDOMAIN")
        kind, values = hit
        if kind == "CNAME":
            return DnsAnswer("NOERROR", [(name + ".", 30, "CNAME", values[0].rstrip(".") + ".")])
        return DnsAnswer("NOERROR", [(name + ".", 30, "A", v) for v in values] if rdtype == "A" else [])

    def candidates(self, pod: dict, name: str) -> list[str]:
        """The names a stub resolver tries for NAME, in order: the search list first when NAME has
        fewer dots than ndots (resolv(5)), the name as given first otherwise; none for an absolute name."""
        _, search, options = self.search_domains(pod)
        ndots = next((int(o.split(":")[1]) for o in options if o.startswith("ndots:")), 1)
        if name.endswith("."):
            return [name.rstrip(".")]
        with_search = [f"{name}.{d}" for d in search]
        return ([name] + with_search) if name.count(".") >= ndots else (with_search + [name])

    def search(self, pod: dict, name: str, rdtype: str = "A", use_search: bool = True
               ) -> list[tuple[str, DnsAnswer]]:
        """What the pod's resolver asks for NAME, in order, up to the first answer with data:
        [(name asked, answer)]. NXDOMAIN and NODATA go on to the next candidate, as glibc and musl do."""
        servers = self.search_domains(pod)[0]
        tried: list[tuple[str, DnsAnswer]] = []
        for fqdn in self.candidates(pod, name) if use_search else [name.rstrip(".")]:
            ans = self.ask(fqdn, rdtype, servers[0] if servers else "")
            tried.append((fqdn, ans))
            if ans.rcode == "TIMEOUT" or (ans.rcode == "NOERROR" and ans.records):
                break
        return tried

    def resolve(self, pod: dict, name: str) -> tuple[str, str, list[str]] | None:
        """Resolve NAME through the pod's search list: (fqdn, type, values) or None (NXDOMAIN)."""
        tried = self.search(pod, name, "A")
        fqdn, ans = tried[-1]
        nodata = [f for f, a in tried if a.rcode == "NOERROR"]
        if ans.rcode != "NOERROR" or not ans.records:
            return (nodata[0], "A", []) if nodata else None
        addresses = ans.values("A")
        if addresses:
            return fqdn, "A", addresses
        return fqdn, "CNAME", [ans.values("CNAME")[0].rstrip(".")]

    # ---- HTTP ------------------------------------------------------------------------------

    def pod_by_ip(self, ip: str) -> dict | None:
        for p in self._items("Pod"):
            if (p.get("status") or {}).get("podIP") == ip:
                return p
        return None

    def service_by_ip(self, ip: str) -> dict | None:
        for s in self._items("Service"):
            if (s.get("spec") or {}).get("clusterIP") == ip:
                return s
        return None

    def connect(self, ip: str, port: int) -> tuple[dict, int, str] | str:
        """Where a TCP connection to ip:port lands: (pod, container port, service) or an error."""
        svc = self.service_by_ip(ip)
        if svc is not None:
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            sport = next((p for p in svc["spec"].get("ports") or [] if p.get("port") == port), None)
            eps = self.ready_endpoints(ns, name)
            if sport is None or not eps:
                return "Connection refused"
            ep_ip, pod_name = eps[next(self._rr) % len(eps)]
            pod = self._find("Pod", ns, pod_name) or self.pod_by_ip(ep_ip)
            if pod is None:
                return "Connection refused"
            target = sport.get("targetPort", port)
            if isinstance(target, str):
                target = next((p["containerPort"] for c in pod["spec"].get("containers") or []
                               for p in c.get("ports") or [] if p.get("name") == target), 0)
            return pod, int(target), f"{ns}/{name}"
        pod = self.pod_by_ip(ip)
        if pod is None:
            return "Connection timed out"
        if not self.listens(pod, port):
            return "Connection refused"
        return pod, port, ""

    def listens(self, pod: dict, port: int) -> bool:
        """Whether a running container of the pod declares this port."""
        statuses = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
        for c in (pod.get("spec") or {}).get("containers") or []:
            running = ((statuses.get(c["name"]) or {}).get("state") or {}).get("running")
            if running and any(p.get("containerPort") == port for p in c.get("ports") or []):
                return True
        return False

    def respond(self, pod: dict, port: int, method: str, path: str, host: str,
                service: str = "") -> tuple[int, dict]:
        """The pod's built-in responder: what every sandbox container answers over HTTP."""
        body = {"pod": pod["metadata"]["name"], "namespace": pod["metadata"].get("namespace", ""),
                "port": port, "method": method, "host": host, "path": path}
        if service:
            body["service"] = service
        return 200, body

    def http_response(self, pod: dict, port: int, request: bytes) -> tuple[bytes, bool]:
        """Answer one raw HTTP/1.x request: (response bytes, keep the connection open)."""
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", False
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        code, body = self.respond(pod, port, method, urlsplit(target).path or "/", headers.get("host", ""))
        data = (json.dumps(body) + "\n").encode()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        out = (f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
               f"Date: {datetime.now(UTC).strftime('%a, %d %b %Y %H:%M:%S GMT')}\r\n"
               f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode()
        return out + (b"" if method == "HEAD" else data), keep


def http_request_length(buf: bytes) -> int | None:
    """Length of the first complete HTTP request in buf, or None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:end])
    total = end + 4 + (int(m.group(1)) if m else 0)
    return total if len(buf) >= total else None


def _service_env(svc: dict) -> dict[str, str]:
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    ports = spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return {}
    name = svc["metadata"]["name"].upper().replace("-", "_")
    first = ports[0]
    env = {f"{name}_SERVICE_HOST": ip, f"{name}_SERVICE_PORT": str(first["port"])}
    for p in ports:
        if p.get("name"):
            env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
    proto = first.get("protocol", "TCP")
    env[f"{name}_PORT"] = f"{proto.lower()}://{ip}:{first['port']}"
    for p in ports:
        proto = p.get("protocol", "TCP")
        key = f"{name}_PORT_{p['port']}_{proto}"
        env[key] = f"{proto.lower()}://{ip}:{p['port']}"
        env[key + "_PROTO"] = proto.lower()
        env[key + "_PORT"] = str(p["port"])
        env[key + "_ADDR"] = ip
    return env


def _b64(value: str) -> str:
    return base64.b64decode(value).decode("utf-8", "replace")


def _field(pod: dict, path: str) -> str | None:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    return {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP")}.get(path)


def _expand_refs(value: str, env: dict[str, str]) -> str:
    """$(VAR) references in env values, as the kubelet expands them ($$ escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)
