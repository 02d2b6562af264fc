"""The ingress controller's data plane on loopback: TLS by SNI, requests routed by Host.

Runbooks that check what users actually get (the certificate served for a
host, the Service and pod that answer it) need an endpoint that behaves like
ingress-nginx behind its load balancer. This add-on serves, on 127.0.0.1:

* **HTTPS**: for each TLS host of the cluster's Ingresses, the certificate of
  the Ingress's TLS Secret *as of the controller's last reload*, chosen by SNI;
  unknown hosts and clients without SNI get a self-signed "Kubernetes Ingress
  Controller Fake Certificate", as ingress-nginx serves.
* **HTTP(S) requests**: routed by ``Host`` and path through the Ingress rules
  (``Exact``, ``Prefix`` and ``ImplementationSpecific`` paths as ingress-nginx matches
  them, longest match, the older Ingress when two claim the same host and path,
  ``defaultBackend``) to the backend
  Service, then round-robin to one of its ready endpoints. A small built-in
  responder stands in for the pods and answers JSON such as
  ``{"service": "shop/frontend", "pod": "frontend-...", "host": ..., "path": ...}``;
  503 when the Service has no ready endpoint serving the backend's port, 404 when no
  rule of a served IngressClass matches, and a
  308 redirect from HTTP to HTTPS for TLS hosts (ingress-nginx's ``ssl-redirect``).

**Reloads.** Certificates are loaded when the endpoint starts and again each
time a new pod of the controller Deployment (default
``ingress-nginx/ingress-nginx-controller``) becomes ready, for example after a
``kubectl rollout restart``. Between reloads a renewed Secret is *not* served,
so "renewed but not served" can happen and be fixed by a restart; a Secret
first referenced after the last reload is loaded when a client first asks for
it. The Ingress annotation ``sandbox.kube-runbooks.io/served-certificate:
previous`` plants that state at start-up: the endpoint then serves the
certificate that preceded the Secret's (same names and issuer, issued one
renewal interval earlier) until the next reload.

Routing reads Ingresses, Services and EndpointSlices from the store on each
request, so rule changes apply at once (as ingress-nginx's dynamic
configuration does). Used as a sandbox add-on::

    box = Sandbox(state_dir, "default")
    ingress = box.add(IngressEndpoint(box))
    box.start()
    box.urls["ingress"]        # https://127.0.0.1:PORT
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from . import pki

log = logging.getLogger(__name__)

SERVED_ANNOTATION = "sandbox.kube-runbooks.io/served-certificate"
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"
INGRESS_CLASS = "nginx"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"


@dataclass
class Loaded:
    """A certificate the endpoint serves: its TLS context and facts for tests and logs."""

    context: ssl.SSLContext
    sha256: str
    not_after: datetime
    source: str  # "secret" or "previous" (planted)


def host_matches(pattern: str, host: str) -> bool:
    """Ingress host matching: exact, or ``*.example.com`` covering exactly one more label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and "." not in host[: -len(suffix)] and len(host) > len(suffix)
    return pattern == host


class IngressEndpoint:
    """The sandbox ingress endpoint (an add-on: ``start()`` returns its URLs, ``stop()``).

    Args:
        sandbox: the :class:`runbooks_sandbox.launch.Sandbox` whose store it reads.
        https_port, http_port: ports on 127.0.0.1 (0 picks free ones).
        controller: ``namespace/name`` of the controller Deployment whose new ready
            pods trigger a reload of the certificates.
        ingress_class: the IngressClass served (Ingresses without a class are served too
            when this class is the default one).
        poll: seconds between checks for new controller pods.
    """

    def __init__(self, sandbox: Any, *, https_port: int = 0, http_port: int = 0,
                 controller: str = "ingress-nginx/ingress-nginx-controller",
                 ingress_class: str = INGRESS_CLASS, poll: float = 0.2) -> None:
        self.sandbox = sandbox
        self.store, self.registry = sandbox.store, sandbox.registry
        self.https_port, self.http_port = https_port, http_port
        self.controller_ns, _, self.controller_name = controller.partition("/")
        self.ingress_class = ingress_class
        self.poll = poll
        self.reloads = 0  # how many times certificates were (re)loaded
        self.url = self.http_url = ""
        self._lock = threading.RLock()
        self._loaded: dict[tuple[str, str], Loaded] = {}
        self._seen_pods: set[str] = set()
        self._fake: Loaded | None = None
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._rr = itertools.count()
        self._tmp: Path | None = None

    # ---- add-on interface -----------------------------------------------------

    def start(self) -> dict[str, str]:
        self._stop.clear()
        self._tmp = Path(tempfile.mkdtemp(prefix="ingress-", dir=self._state_dir()))
        now = self.store.clock()
        fake = pki.issue(None, common_name=FAKE_CN, dns_names=["ingress.local"], organization="Acme Co",
                         not_before=now - timedelta(hours=1), not_after=now + timedelta(days=365),
                         key_type="ec")
        self._fake = self._context(fake.cert_pem, fake.key_pem, "fake")
        self._seen_pods = self._controller_pods()
        self.reload(initial=True)

        https = _Server(("127.0.0.1", self.https_port), _Handler, self, tls=True)
        http = _Server(("127.0.0.1", self.http_port), _Handler, self, tls=False)
        self._servers = [https, http]
        self.url = f"https://127.0.0.1:{https.server_address[1]}"
        self.http_url = f"http://127.0.0.1:{http.server_address[1]}"
        for server, name in ((https, "sandbox-ingress-https"), (http, "sandbox-ingress-http")):
            t = threading.Thread(target=server.serve_forever, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        watcher = threading.Thread(target=self._watch, name="sandbox-ingress-reload", daemon=True)
        watcher.start()
        self._threads.append(watcher)
        return {"ingress": self.url, "ingress-http": self.http_url}

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers, self._threads = [], []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the HTTPS listener (what a runbook's ``ingress_endpoint`` takes)."""
        return self.url.removeprefix("https://")

    def _state_dir(self) -> str | None:
        d = getattr(self.sandbox, "state_dir", None)
        if d is None:
            return None
        Path(d).mkdir(parents=True, exist_ok=True)
        return str(d)

    # ---- certificates -----------------------------------------------------------

    def reload(self, initial: bool = False) -> None:
        """Load the certificate of every Ingress TLS Secret as it is now (the controller's reload)."""
        loaded: dict[tuple[str, str], Loaded] = {}
        for ing in self._ingresses():
            ns = ing["metadata"].get("namespace", "")
            previous = initial and ((ing["metadata"].get("annotations") or {}).get(SERVED_ANNOTATION) == "previous")
            for tls in (ing.get("spec") or {}).get("tls") or []:
                secret = tls.get("secretName")
                if not secret or (ns, secret) in loaded:
                    continue
                item = self._load_secret(ns, secret, previous=previous)
                if item is not None:
                    loaded[(ns, secret)] = item
        with self._lock:
            self._loaded = loaded
            self.reloads += 1
        log.info("ingress endpoint: loaded %d certificate(s)", len(loaded))

    def served(self, namespace: str, secret: str) -> Loaded | None:
        """What is loaded for a Secret now (None: not loaded yet)."""
        with self._lock:
            return self._loaded.get((namespace, secret))

    def _load_secret(self, ns: str, name: str, previous: bool = False) -> Loaded | None:
        rt = self.registry.by_kind_any_version("Secret")
        secret = self.store.find(rt, ns, name)
        if secret is None:
            return None
        data = secret.get("data") or {}
        try:
            crt, key = base64.b64decode(data.get("tls.crt", "")), base64.b64decode(data.get("tls.key", ""))
            if previous:
                crt, key = previous_certificate(crt, key)
            return self._context(crt, key, "previous" if previous else "secret")
        except (ValueError, ssl.SSLError, IndexError) as e:
            log.warning("ingress endpoint: Secret %s/%s cannot be served: %s", ns, name, e)
            return None

    def _context(self, cert_pem: bytes, key_pem: bytes, source: str) -> Loaded:
        """An SSLContext holding one chain; the PEM goes through a private file removed at once."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        assert self._tmp is not None
        fd, path = tempfile.mkstemp(dir=self._tmp, suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem + b"\n" + cert_pem)
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
        return Loaded(ctx, leaf.fingerprint(hashes.SHA256()).hex(), leaf.not_valid_after_utc, source)

    def context_for(self, host: str | None) -> ssl.SSLContext:
        """The TLS context for an SNI name: its Ingress Secret's, else the fake certificate's."""
        assert self._fake is not None
        if not host:
            return self._fake.context
        ref = self._tls_secret_for(host)
        if ref is None:
            return self._fake.context
        with self._lock:
            item = self._loaded.get(ref)
        if item is None:  # first referenced since the last reload: load it now
            item = self._load_secret(*ref)
            if item is None:
                return self._fake.context
            with self._lock:
                item = self._loaded.setdefault(ref, item)
        return item.context

    # ---- reload trigger -------------------------------------------------------------

    def _controller_pods(self) -> set[str]:
        """UIDs of the controller Deployment's ready pods."""
        drt = self.registry.by_kind_any_version("Deployment")
        deploy = self.store.find(drt, self.controller_ns, self.controller_name) if self.controller_name else None
        if deploy is None:
            return set()
        want = ((deploy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        out = set()
        for pod in self.store.items(self.registry.by_kind_any_version("Pod"), self.controller_ns):
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in want.items()) and _ready(pod):
                out.add(pod["metadata"]["uid"])
        return out

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                pods = self._controller_pods()
                if pods - self._seen_pods:
                    self._seen_pods |= pods
                    self.reload()
            except Exception:  # the endpoint must keep serving
                log.exception("ingress endpoint: reload check failed")

    # ---- routing --------------------------------------------------------------------

    def _ingresses(self) -> list[dict]:
        rt = self.registry.by_kind_any_version("Ingress")
        classes = self.registry.by_kind_any_version("IngressClass")
        default = False
        if classes is not None:
            ic = self.store.find(classes, None, self.ingress_class)
            default = bool(ic) and (ic["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
        out = []
        for ing in self.store.items(rt):
            cls = (ing.get("spec") or {}).get("ingressClassName") or \
                (ing["metadata"].get("annotations") or {}).get("kubernetes.io/ingress.class")
            if cls == self.ingress_class or (cls is None and default):
                out.append(ing)
        return out

    def _tls_secret_for(self, host: str) -> tuple[str, str] | None:
        exact = wildcard = None
        for ing in self._ingresses():
            ns = ing["metadata"].get("namespace", "")
            for tls in (ing.get("spec") or {}).get("tls") or []:
                for pattern in tls.get("hosts") or []:
                    if tls.get("secretName") and host_matches(pattern, host):
                        if pattern.startswith("*."):
                            wildcard = wildcard or (ns, tls["secretName"])
                        else:
                            exact = exact or (ns, tls["secretName"])
        return exact or wildcard

    def route(self, host: str, path: str) -> tuple[dict | None, dict | None, bool]:
        """(Ingress, backend service ref, host has TLS) for a request.

        As ingress-nginx: the longest matching path wins, an ``Exact`` path before a prefix
        of the same length; when two Ingresses claim the same host and path, the older one
        (``creationTimestamp``, then namespace/name) serves it.
        """
        best: tuple[tuple[int, int], dict, dict] | None = None
        default: tuple[dict, dict] | None = None
        has_tls = self._tls_secret_for(host) is not None
        ingresses = sorted(self._ingresses(), key=lambda i: (i["metadata"].get("creationTimestamp", ""),
                                                              i["metadata"].get("namespace", ""),
                                                              i["metadata"]["name"]))
        for ing in ingresses:
            spec = ing.get("spec") or {}
            annotations = ing["metadata"].get("annotations") or {}
            for rule in spec.get("rules") or []:
                rule_host = rule.get("host", "")
                if rule_host and not host_matches(rule_host, host):
                    continue
                for p in (rule.get("http") or {}).get("paths") or []:
                    want = p.get("path") or "/"
                    kind = p.get("pathType", "Prefix")
                    backend = (p.get("backend") or {}).get("service")
                    rank = (len(want), 1 if kind == "Exact" else 0)
                    if backend and path_matches(kind, want, path, annotations) and (best is None or rank > best[0]):
                        best = (rank, ing, backend)
            if (spec.get("defaultBackend") or {}).get("service") and default is None:
                default = (ing, spec["defaultBackend"]["service"])
        if best is not None:
            return best[1], best[2], has_tls
        if default is not None:
            return default[0], default[1], has_tls
        return None, None, has_tls

    def endpoints(self, namespace: str, service: str, port: str | None = None) -> list[str]:
        """Names of the ready pods behind a Service (EndpointSlices, else Endpoints).

        With ``port`` (the Service port's name, "" when unnamed), only slices that list that
        port count, as ingress-nginx matches upstream ports: a targetPort no pod has leaves
        the slice without the port, and so without upstreams.
        """
        pods: list[str] = []
        slices = self.registry.by_kind_any_version("EndpointSlice")
        seen_slice = False
        if slices is not None:
            for s in self.store.items(slices, namespace):
                if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") != service:
                    continue
                seen_slice = True
                if port is not None and not any((sp.get("name") or "") == port for sp in s.get("ports") or []):
                    continue
                for ep in s.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready", True):
                        pods.append((ep.get("targetRef") or {}).get("name") or (ep.get("addresses") or [""])[0])
        if not pods and not seen_slice:
            eps = self.store.find(self.registry.by_kind_any_version("Endpoints"), namespace, service)
            for subset in (eps or {}).get("subsets") or []:
                for addr in subset.get("addresses") or []:
                    pods.append((addr.get("targetRef") or {}).get("name") or addr.get("ip", ""))
        return sorted(set(pods))

    def respond(self, host: str, path: str, scheme: str) -> tuple[int, dict, dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        ing, backend, has_tls = self.route(host, path)
        if ing is None or backend is None:
            return 404, {"error": "default backend - 404", "host": host, "path": path}, {}
        annotations = ing["metadata"].get("annotations") or {}
        redirect = annotations.get("nginx.ingress.kubernetes.io/force-ssl-redirect") == "true" or (
            has_tls and annotations.get("nginx.ingress.kubernetes.io/ssl-redirect", "true") == "true")
        if scheme == "http" and redirect:
            return 308, {"redirect": f"https://{host}{path}"}, {"Location": f"https://{host}{path}"}
        ns = ing["metadata"].get("namespace", "")
        service = backend.get("name", "")
        body = {"service": f"{ns}/{service}", "ingress": f"{ns}/{ing['metadata']['name']}",
                "host": host, "path": path, "scheme": scheme}
        svc = self.store.find(self.registry.by_kind_any_version("Service"), ns, service)
        if svc is None:
            return 503, {**body, "error": f"service {ns}/{service} does not exist"}, {}
        want = backend.get("port") or {}
        svc_port = next((sp for sp in (svc.get("spec") or {}).get("ports") or []
                         if ("name" in want and sp.get("name") == want["name"])
                         or ("number" in want and sp.get("port") == want["number"])), None)
        if svc_port is None:
            return 503, {**body, "error": f"service {ns}/{service} has no port {want.get('name', want.get('number'))}"}, {}
        pods = self.endpoints(ns, service, svc_port.get("name") or "")
        if not pods:
            return 503, {**body, "error": f"service {ns}/{service} has no ready endpoints"}, {}
        return 200, {**body, "pod": pods[next(self._rr) % len(pods)]}, {}


def path_matches(path_type: str, want: str, path: str, annotations: dict | None = None) -> bool:
    """Does a request path match an Ingress path, as ingress-nginx matches it?

    ``Exact``: the same string. ``Prefix``: element-wise (``/foo`` matches ``/foo`` and
    ``/foo/bar``, not ``/foobar``). ``ImplementationSpecific``: an nginx location, i.e. a
    plain string prefix, or a case-insensitive regular expression anchored at the start when
    the Ingress has ``use-regex`` or ``rewrite-target``.
    """
    annotations = annotations or {}
    if path_type == "Exact":
        return path == want
    if path_type == "Prefix":
        base = want.rstrip("/")
        return want == "/" or path == base or path.startswith(base + "/")
    if annotations.get("nginx.ingress.kubernetes.io/use-regex") == "true" or \
            "nginx.ingress.kubernetes.io/rewrite-target" in annotations:
        try:
            return re.match(want, path, re.IGNORECASE) is not None
        except re.error:
            return False
    return path.startswith(want)


def previous_certificate(chain_pem: bytes, key_pem: bytes) -> tuple[bytes, bytes]:
    """The certificate that preceded this one: same names and issuer, one renewal interval earlier.

    cert-manager renews at 2/3 of the lifetime, so the previous certificate was
    issued ``2/3 * lifetime`` before this one and expires ``1/3 * lifetime``
    after this one was issued. It is signed by the same CA when the sandbox
    knows its key (:func:`runbooks_sandbox.pki.known_ca`), else self-signed.
    """
    chain = x509.load_pem_x509_certificates(chain_pem)
    leaf = chain[0]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    not_before = leaf.not_valid_before_utc - lifetime * 2 / 3
    ca = next((c for c in (pki.known_ca(x) for x in chain[1:]) if c is not None), None)
    current_key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    if isinstance(current_key, rsa.RSAPrivateKey) and current_key.key_size in pki.RSA_KEY_SIZES:
        key = pki.generate_key("rsa", current_key.key_size)
    else:
        key = pki.generate_key("ec")
    try:
        sans = list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = []
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    old = pki.issue(ca, common_name=str(cn[0].value) if cn else (sans[0] if sans else "previous"),
                    dns_names=sans, not_before=not_before, not_after=not_before + lifetime, key=key)
    out_chain = old.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain[1:]) \
        if ca is not None else old.cert_pem
    return out_chain, old.key_pem


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or []) \
        and not pod["metadata"].get("deletionTimestamp")


class _Server(ThreadingHTTPServer):
    """A threading HTTP server; with ``tls`` each connection's handshake runs in its own thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, endpoint: IngressEndpoint, tls: bool) -> None:
        self.endpoint, self.tls = endpoint, tls
        super().__init__(address, handler)
        if tls:
            assert endpoint._fake is not None
            self.base_context = endpoint._fake.context

            def pick(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
                try:
                    sock.context = endpoint.context_for(server_name)
                except Exception:  # a bad Secret must not break other hosts' handshakes
                    log.exception("ingress endpoint: no certificate for %s", server_name)
                return None

            self.base_context.sni_callback = pick

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls:
            request.settimeout(10)
            try:
                request = self.base_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        self.RequestHandlerClass(request, client_address, self)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server_version = "nginx"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._answer()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        if not host and self.server.tls and isinstance(self.connection, ssl.SSLSocket):
            host = self.connection.server_hostname or ""
        path = self.path.split("?", 1)[0] or "/"
        scheme = "https" if self.server.tls else "http"
        code, body, headers = self.server.endpoint.respond(host, path, scheme)
        data = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Date", datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        log.debug("ingress %s - %s", self.address_string(), format % args)
