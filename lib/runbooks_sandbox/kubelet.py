"""What a sandbox pod can run: the kubelet's side of exec, attach and port-forward.

The sandbox has no containers, so nothing is really executed. The kubelet
answers exec with a small, explicit set of tools that behave as in a minimal
(busybox-like) image, computed from the sandbox's own state, so a runbook
that looks *inside* a pod (its environment, its resolver, what it can reach)
sees the same thing it would see on a cluster:

==============================  =================================================================
command                         answer
==============================  =================================================================
``env``, ``printenv [NAME]``    the container's env (``value``, ``valueFrom`` configMap/secret/
                                field refs, ``envFrom``), plus what the kubelet injects: PATH,
                                HOSTNAME, HOME, ``KUBERNETES_*`` and, with ``enableServiceLinks``
                                (the default), ``{SVC}_SERVICE_HOST``/``_PORT``/``_PORT_N_PROTO``...
                                for the Services of the pod's namespace that existed when it started
``cat FILE...``                 ``/etc/resolv.conf`` (from ``dnsPolicy``/``dnsConfig``; ClusterFirst:
                                ``search NS.svc.cluster.local svc.cluster.local cluster.local``, the
                                cluster DNS Service IP, ``options ndots:5``), ``/etc/hosts``,
                                ``/etc/hostname``, mounted ConfigMap/Secret files (also projected) and
                                ``/var/run/secrets/kubernetes.io/serviceaccount/namespace``;
                                no FILE: stdin
``nslookup NAME``, ``dig [+short]  answered from the Service table through the pod's search list
NAME``, ``getent hosts NAME``   (ClusterIP; headless: the ready endpoint IPs; ExternalName: a CNAME;
                                ``A-B-C-D.NS.pod.cluster.local``); anything else is NXDOMAIN
``wget [-q] [-O FILE] URL``,    an HTTP request routed as the cluster would: a Service's ClusterIP and
``curl [-sSfi] [-o FILE]        port to a ready endpoint's targetPort, or a pod IP and container
[-w FMT] [-X M] URL``           port, answered by the pod's built-in responder (JSON naming the pod,
                                port, host and path, like the ingress's); no ready endpoint: refused
``sh -c SCRIPT``, ``sh`` (stdin) a tiny shell over these tools: ``;``, ``&&``, ``||``, ``|``,
                                ``$VAR``, ``exit N``, ``echo``
``true``, ``false``,            as usual (``sleep`` really waits, until the client goes away)
``sleep N``, ``hostname``
==============================  =================================================================

Commands may be named by path (``/bin/sh``, ``/usr/bin/env``). Anything else
exits 127 with the container runtime's message (containerd/runc:
``OCI runtime exec failed: exec failed: unable to start container process:
exec: "foo": executable file not found in $PATH: unknown``). A container that
is not running (crash-looping, waiting for its image) cannot be exec'd into:
``unable to upgrade connection: container not found ("NAME")``.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import queue
import re
import shlex
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_DNS_IP = "10.96.0.10"
KUBERNETES_SERVICE_IP = "10.96.0.1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ContainerNotRunning(Exception):
    """exec/attach into a container that is not running (the kubelet's wording)."""


class Stdin:
    """A pipe from the client: feed() from the stream reader, read()/readline() by the tool."""

    def __init__(self, open_: bool = True):
        self._q: queue.Queue[bytes | None] = queue.Queue()
        self._buf = b""
        self._eof = not open_

    def feed(self, data: bytes) -> None:
        if data:
            self._q.put(data)

    def close(self) -> None:
        self._q.put(None)

    def _more(self) -> bool:
        if self._eof:
            return False
        item = self._q.get()
        if item is None:
            self._eof = True
            return False
        self._buf += item
        return True

    def readline(self) -> bytes:
        while b"\n" not in self._buf and self._more():
            pass
        line, sep, rest = self._buf.partition(b"\n")
        self._buf = rest
        return line + sep

    def read(self) -> bytes:
        while self._more():
            pass
        data, self._buf = self._buf, b""
        return data


class IO:
    """A tool's stdin, stdout and stderr, and the event set when the client has gone."""

    def __init__(self, stdin: Stdin | None = None, out: Callable[[bytes], None] | None = None,
                 err: Callable[[bytes], None] | None = None, cancel: threading.Event | None = None):
        self.stdin = stdin or Stdin(open_=False)
        self.out = out or (lambda b: None)
        self.err = err or (lambda b: None)
        self.cancel = cancel or threading.Event()

    def print(self, text: str = "") -> None:
        self.out((text + "\n").encode())

    def eprint(self, text: str) -> None:
        self.err((text + "\n").encode())


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def not_found_message(cmd: str) -> str:
    return (f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{cmd}": '
            "executable file not found in $PATH: unknown")


class Kubelet:
    """The tools, the resolver and the responder of every pod, reading the sandbox's store."""

    def __init__(self, store, registry):
        self.store, self.registry = store, registry
        self._rr = itertools.count()
        self._output: dict[tuple[str, str], bytearray] = {}  # (pod uid, container) -> its log (ephemeral)
        self._output_lock = threading.Lock()

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

    def run(self, pod: dict, container: str, argv: list[str], io: IO) -> int:
        """Run one command in the container; returns its exit code."""
        ctx = _Ctx(self, pod, container)
        try:
            return ctx.call(argv, io)
        except _Exit as e:
            return e.code

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

    def resolve(self, pod: dict, name: str) -> tuple[str, str, list[str]] | None:
        """Resolve NAME through the pod's search list: (fqdn, type, values) or None (NXDOMAIN)."""
        _, search, options = self.search_domains(pod)
        ndots = next((int(o.split(":")[1]) for o in options if o.startswith("ndots:")), 1)
        name = name.rstrip(".") if name.endswith(".") else name
        candidates = [name] if name.endswith(".") else []
        if not candidates:
            with_search = [f"{name}.{d}" for d in search]
            candidates = ([name] + with_search) if name.count(".") >= ndots else (with_search + [name])
        for fqdn in candidates:
            hit = self.lookup_fqdn(fqdn)
            if hit is not None:
                return fqdn.rstrip("."), hit[0], hit[1]
        return None

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


class _Ctx:
    """One container's view while running tools: env, files, resolver."""

    def __init__(self, kubelet: Kubelet, pod: dict, container: str):
        self.k, self.pod, self.container = kubelet, pod, container
        self.env = dict(kubelet.environment(pod, container))
        self.status = 0

    def call(self, argv: list[str], io: IO) -> int:
        if not argv:
            return 0
        cmd = argv[0]
        name = cmd.rsplit("/", 1)[-1] if "/" in cmd and cmd.rsplit("/", 1)[0] in BIN_DIRS else cmd
        tool = TOOLS.get(name)
        if tool is None:
            io.eprint(not_found_message(cmd) if "/" not in cmd else
                      not_found_message(cmd).replace("executable file not found in $PATH",
                                                     "no such file or directory"))
            return 127
        return tool(self, argv[1:], io)

    # ---- the shell -------------------------------------------------------------------------

    def shell(self, script: str, io: IO) -> int:
        for line in script.split("\n"):
            for cmds in _split_list(line):
                self.status = self._run_list(cmds, io)
        return self.status

    def _run_list(self, items: list[tuple[str, list[list[str]]]], io: IO) -> int:
        status = self.status
        for op, pipeline in items:
            if (op == "&&" and status != 0) or (op == "||" and status == 0):
                continue
            status = self._pipeline(pipeline, io)
            self.status = status
        return status

    def _pipeline(self, pipeline: list[list[str]], io: IO) -> int:
        stdin = io.stdin
        status = 0
        for i, words in enumerate(pipeline):
            argv = [w for word in words for w in _expand_word(word, self)]  # expanded as each command runs
            last = i == len(pipeline) - 1
            buf: list[bytes] = []
            sub = IO(stdin, io.out if last else buf.append, io.err, io.cancel)
            if argv and argv[0] == "exit":
                raise _Exit(int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else self.status)
            status = self.call(argv, sub)
            if not last:
                stdin = Stdin()
                stdin.feed(b"".join(buf))
                stdin.close()
        return status


def _split_list(line: str) -> list[list[tuple[str, list[list[str]]]]]:
    """One shell line as lists of (operator, pipeline of raw words); each list runs after the previous."""
    lex = shlex.shlex(line, posix=False, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError as e:
        raise _Exit(2) from e
    out: list[list[tuple[str, list[list[str]]]]] = [[]]
    op, pipeline, argv = "", [], []
    for tok in tokens + [";"]:
        if tok in (";", "&&", "||", "|", "&"):
            pipeline.append(argv)
            argv = []
            if tok == "|":
                continue
            if any(pipeline):
                out[-1].append((op, [a for a in pipeline if a]))
            pipeline = []
            if tok in (";", "&"):
                out.append([])
                op = ""
            else:
                op = tok
        else:
            argv.append(tok)
    return [x for x in out if x]


def _expand_word(word: str, ctx: _Ctx) -> list[str]:
    """A raw word after $NAME, ${NAME} and $? expansion (not inside single quotes) and quote removal."""
    out, quote, i = [], "", 0
    while i < len(word):
        ch = word[i]
        if ch == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif ch == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        elif ch == "$" and quote != "'":
            m = re.match(r"\$(\?|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})", word[i:])
            if m:
                key = m.group(1).strip("{}")
                value = str(ctx.status) if key == "?" else ctx.env.get(key, "")
                out.append(shlex.quote(value) if not quote and value else value)
                i += len(m.group(0))
                continue
        out.append(ch)
        i += 1
    try:
        return shlex.split("".join(out))
    except ValueError:
        return ["".join(out)]


# ---- the tools (argv without the command name) -----------------------------------------------

def _env(ctx: _Ctx, args: list[str], io: IO) -> int:
    while args and "=" in args[0] and not args[0].startswith("="):
        key, _, value = args[0].partition("=")
        ctx.env[key] = value
        args = args[1:]
    if args:  # env [NAME=VALUE]... COMMAND: run it with that environment
        return ctx.call(args, io)
    for k, v in ctx.env.items():
        io.print(f"{k}={v}")
    return 0


def _printenv(ctx: _Ctx, args: list[str], io: IO) -> int:
    if not args:
        return _env(ctx, [], io)
    status = 0
    for name in args:
        if name in ctx.env:
            io.print(ctx.env[name])
        else:
            status = 1
    return status


def _cat(ctx: _Ctx, args: list[str], io: IO) -> int:
    if not args or args == ["-"]:
        while True:
            line = io.stdin.readline()
            if not line:
                return 0
            io.out(line)
    files, dirs = ctx.k.files(ctx.pod, ctx.container)
    status = 0
    for path in args:
        if path in files:
            io.out(files[path])
        elif path.rstrip("/") in dirs or path == "/":
            io.eprint("cat: read error: Is a directory")
            status = 1
        else:
            io.eprint(f"cat: can't open '{path}': No such file or directory")
            status = 1
    return status


def _nslookup(ctx: _Ctx, args: list[str], io: IO) -> int:
    names = [a for a in args if not a.startswith("-")]
    if not names:
        io.eprint("BusyBox v1.36.1 (2023-05-18 22:34:17 UTC) multi-call binary.\n\n"
                  "Usage: nslookup [-type=QUERY_TYPE] [-debug] HOST [DNS_SERVER]")
        return 1
    server = ctx.k.search_domains(ctx.pod)[0][:1] or [DEFAULT_DNS_IP]
    io.print(f"Server:\t\t{server[0]}\nAddress:\t{server[0]}:53\n")
    hit = ctx.k.resolve(ctx.pod, names[0])
    if hit is None:
        io.print(f"** server can't find {names[0]}: NXDOMAIN\n")
        return 1
    fqdn, kind, values = hit
    if kind == "CNAME":
        io.print(f"{fqdn}\tcanonical name = {values[0]}\n")
        return 0
    if not values:
        io.print(f"*** Can't find {names[0]}: No answer\n")
        return 1
    for ip in values:
        io.print(f"Name:\t{fqdn}\nAddress: {ip}\n")
    return 0


def _dig(ctx: _Ctx, args: list[str], io: IO) -> int:
    short = "+short" in args
    search = "+search" in args
    names = [a for a in args if not a.startswith(("+", "-", "@")) and a.upper() not in ("A", "IN", "CNAME")]
    if not names:
        io.eprint("dig: no name given")
        return 1
    name = names[0]
    if search:
        hit = ctx.k.resolve(ctx.pod, name)
    else:
        found = ctx.k.lookup_fqdn(name)
        hit = (name.rstrip("."), *found) if found else None
    if short:
        if hit is not None:
            for v in hit[2]:
                io.print(v + ("." if hit[1] == "CNAME" else ""))
        return 0
    server = (ctx.k.search_domains(ctx.pod)[0] or [DEFAULT_DNS_IP])[0]
    status = "NOERROR" if hit is not None else "NXDOMAIN"
    io.print(f"; <<>> DiG 9.18 <<>> {name}\n;; global options: +cmd\n;; Got answer:\n"
             f";; ->>HEADER<<- opcode: QUERY, status: {status}, id: 1\n")
    io.print(f";; QUESTION SECTION:\n;{name.rstrip('.')}.\t\tIN\tA\n")
    if hit is not None and hit[2]:
        io.print(";; ANSWER SECTION:")
        for v in hit[2]:
            rtype = hit[1]
            io.print(f"{hit[0]}.\t30\tIN\t{rtype}\t{v}{'.' if rtype == 'CNAME' else ''}")
        io.print()
    io.print(f";; SERVER: {server}#53({server}) (UDP)\n")
    return 0


def _getent(ctx: _Ctx, args: list[str], io: IO) -> int:
    if len(args) < 2 or args[0] not in ("hosts", "ahosts"):
        io.eprint("Unknown database: " + (args[0] if args else ""))
        return 1
    hit = ctx.k.resolve(ctx.pod, args[1])
    if hit is None or not hit[2] or hit[1] != "A":
        return 2
    io.print(f"{hit[2][0]:<15} {hit[0]}")
    return 0


def _fetch(ctx: _Ctx, url: str, method: str = "GET") -> tuple[int, dict, str] | tuple[str, int]:
    """(status, JSON body, service) or (error kind, 0) for an HTTP request from this pod."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.IPv4Address(host)
        ip = host
    except ValueError:
        hit = ctx.k.resolve(ctx.pod, host)
        if hit is None or hit[1] != "A" or not hit[2]:
            return "resolve", 0
        ip = hit[2][0]
    target = ctx.k.connect(ip, port)
    if isinstance(target, str):
        return target, 0
    pod, pport, service = target
    if parts.scheme == "https":
        return "tls", 0
    code, body = ctx.k.respond(pod, pport, method, parts.path or "/", host if port == 80 else f"{host}:{port}",
                               service)
    return code, body, ip


def _wget(ctx: _Ctx, args: list[str], io: IO) -> int:
    quiet, out, url, spider = False, None, None, False
    it = iter(args)
    for a in it:
        if a in ("-q", "--quiet"):
            quiet = True
        elif a == "-qO-" or a == "-O-":
            quiet, out = quiet or a == "-qO-", "-"
        elif a in ("-O", "--output-document"):
            out = next(it, "-")
        elif a.startswith("-O"):
            out = a[2:]
        elif a == "--spider":
            spider = True
        elif a in ("-T", "--timeout", "-U", "--header"):
            next(it, None)
        elif not a.startswith("-"):
            url = a
    if url is None:
        io.eprint("wget: missing URL")
        return 1
    parts = urlsplit(url if "://" in url else "http://" + url)
    if not quiet:
        io.eprint(f"Connecting to {parts.netloc} ...")
    result = _fetch(ctx, url)
    if result[1] == 0 and isinstance(result[0], str):
        kind = result[0]
        if kind == "resolve":
            io.eprint(f"wget: bad address '{parts.hostname}'")
        elif kind == "tls":
            io.eprint("wget: error getting response: Connection reset by peer")
        else:
            io.eprint(f"wget: can't connect to remote host: {kind}")
        return 1
    code, body = result[0], result[1]
    data = (json.dumps(body) + "\n").encode()
    if spider:
        if not quiet:
            io.eprint("remote file exists")
        return 0
    if out in (None, "index.html") or (out and out not in ("-", "/dev/stdout")):
        if not quiet:
            io.eprint(f"saving to '{out or 'index.html'}'")
        return 0
    io.out(data)
    return 0 if code < 400 else 1


def _curl(ctx: _Ctx, args: list[str], io: IO) -> int:
    silent = show_error = fail = include = head = False
    out, fmt, url, method = None, "", None, "GET"
    it = iter(args)
    for a in it:
        if a in ("-o", "--output"):
            out = next(it, None)
        elif a in ("-w", "--write-out"):
            fmt = next(it, "")
        elif a in ("-X", "--request"):
            method = next(it, "GET")
        elif a in ("-H", "--header", "-m", "--max-time", "--connect-timeout", "-d", "--data", "-A"):
            next(it, None)
        elif a == "--silent":
            silent = True
        elif a == "--fail":
            fail = True
        elif a == "--include":
            include = True
        elif a == "--head":
            head = True
        elif a.startswith("-") and not a.startswith("--"):
            flags = a[1:]
            silent |= "s" in flags
            show_error |= "S" in flags
            fail |= "f" in flags
            include |= "i" in flags
            head |= "I" in flags
        elif not a.startswith("-"):
            url = a
    if url is None:
        io.eprint("curl: no URL specified!")
        return 2
    parts = urlsplit(url if "://" in url else "http://" + url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result = _fetch(ctx, url, "HEAD" if head else method)
    if result[1] == 0 and isinstance(result[0], str):
        kind = result[0]
        if kind == "resolve":
            code, msg = 6, f"Could not resolve host: {parts.hostname}"
        elif kind == "tls":
            code, msg = 35, "OpenSSL SSL_connect: SSL_ERROR_SYSCALL"
        elif kind == "Connection timed out":
            code, msg = 28, f"Failed to connect to {parts.hostname} port {port} after 10000 ms: Timeout was reached"
        else:
            code, msg = 7, f"Failed to connect to {parts.hostname} port {port} after 0 ms: Couldn't connect to server"
        if not silent or show_error:
            io.eprint(f"curl: ({code}) {msg}")
        if fmt:
            io.out(fmt.replace("%{http_code}", "000").encode().decode("unicode_escape").encode())
        return code
    status, body, ip = result
    data = (json.dumps(body) + "\n").encode()
    if fail and status >= 400:
        if not silent or show_error:
            io.eprint(f"curl: (22) The requested URL returned error: {status}")
        return 22
    if include or head:
        io.out(f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
               .encode())
    if not head and out in (None, "-"):
        io.out(data)
    if fmt:
        text = fmt.replace("%{http_code}", str(status)).replace("%{remote_ip}", ip) \
            .replace("%{size_download}", str(len(data)))
        io.out(text.encode().decode("unicode_escape").encode())
    return 0


def _sh(ctx: _Ctx, args: list[str], io: IO) -> int:
    if args and args[0] == "-c":
        if len(args) < 2:
            io.eprint("sh: -c requires an argument")
            return 2
        return ctx.shell(args[1], io)
    if args:
        io.eprint(f"sh: can't open '{args[0]}': No such file or directory")
        return 2
    while not io.cancel.is_set():  # a script on stdin, line by line (interactive: as typed)
        line = io.stdin.readline()
        if not line:
            break
        for cmds in _split_list(line.decode("utf-8", "replace").rstrip("\r\n")):
            ctx.status = ctx._run_list(cmds, io)
    return ctx.status


def _sleep(ctx: _Ctx, args: list[str], io: IO) -> int:
    try:
        seconds = sum(float(a.rstrip("s")) * {"m": 60, "h": 3600, "d": 86400}.get(a[-1], 1)
                      if a[-1] in "mhd" else float(a.rstrip("s")) for a in args) if args else None
    except ValueError:
        io.eprint(f"sleep: invalid number '{args[0]}'")
        return 1
    if seconds is None:
        io.eprint("sleep: missing operand")
        return 1
    io.cancel.wait(seconds if seconds != float("inf") else None)
    return 0


def _echo(ctx: _Ctx, args: list[str], io: IO) -> int:
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    io.out((" ".join(args) + ("\n" if newline else "")).encode())
    return 0


def _hostname(ctx: _Ctx, args: list[str], io: IO) -> int:
    io.print(ctx.env.get("HOSTNAME", ctx.pod["metadata"]["name"]))
    return 0


TOOLS: dict[str, Callable[[_Ctx, list[str], IO], int]] = {
    "env": _env, "printenv": _printenv, "cat": _cat, "nslookup": _nslookup, "dig": _dig,
    "getent": _getent, "wget": _wget, "curl": _curl, "sh": _sh, "sleep": _sleep, "echo": _echo,
    "hostname": _hostname, "true": lambda ctx, a, io: 0, "false": lambda ctx, a, io: 1,
}


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    """The Status the kubelet writes on the error channel when a command ends."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(argv)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
