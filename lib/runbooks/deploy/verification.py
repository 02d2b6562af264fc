"""Verification of a release: the Deployment available, endpoints ready, the ingress answering, the certificate served."""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from .. import kube, resolution
from ..errors import InvalidInput, NotFound, Unavailable, cut
from ..helm import Helm
from ..model import Finding
from ..plans import Plan
from .apply import ApplyResult
from .plan import namespace_exists
from .release import ReleaseSpec
from .rollout import rollout_status

CERTIFICATE_APPEARS = 10.0  # seconds verification waits for cert-manager to create the Certificate


@dataclass
class Probe:
    """One HTTP(S) request through the ingress endpoint."""

    url: str
    host: str
    status: int | None = None
    body: str = ""
    error: str = ""
    certificate: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def http_probe(base_url: str, host: str, path: str = "/", *, ca_file: str | None = None,
               timeout: float = 5.0) -> Probe:
    """GET ``path`` from ``base_url`` with ``Host: host`` (and SNI ``host`` over HTTPS, verified).

    TLS verification is on: against ``ca_file`` when given, else the system trust store.
    """
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    probe = Probe(url=f"{parts.scheme}://{host}{path} via {parts.hostname}:{port}", host=host)
    started = time.monotonic()
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_file)
            sock = ctx.wrap_socket(sock, server_hostname=host)
            probe.certificate = _peer(sock)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request("GET", path, headers={"Host": host, "User-Agent": "kube-runbooks/provision-service"})
        resp = conn.getresponse()
        probe.status = resp.status
        probe.body = resp.read(4096).decode("utf-8", "replace")
        conn.close()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        probe.error = f"{type(exc).__name__}: {cut(str(exc), 200)}"
    probe.seconds = round(time.monotonic() - started, 3)
    return probe


def _peer(sock: ssl.SSLSocket) -> dict[str, Any]:
    cert = sock.getpeercert() or {}
    subject = dict(x[0] for x in cert.get("subject", ()))
    issuer = dict(x[0] for x in cert.get("issuer", ()))
    der = sock.getpeercert(binary_form=True) or b""
    return {"subject": subject.get("commonName", ""), "issuer": issuer.get("commonName", ""),
            "not_after": cert.get("notAfter", ""), "dns_names": [v for k, v in cert.get("subjectAltName", ())
                                                                if k == "DNS"],
            "sha256": hashlib.sha256(der).hexdigest()}


def ingress_address(cluster: Any, spec: ReleaseSpec) -> str | None:
    """``https://ADDRESS[:PORT]`` from the Ingress's load balancer status, if it has one."""
    try:
        ing = kube.request(cluster, "GET",
                             f"/apis/networking.k8s.io/v1/namespaces/{spec.namespace}/ingresses/{spec.release}")
    except NotFound:
        return None
    for lb in ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        addr = lb.get("hostname") or lb.get("ip")
        if not addr:
            continue
        ports = {p.get("port") for p in lb.get("ports") or []}
        scheme = "https" if spec.tls_secret else "http"
        default = 443 if scheme == "https" else 80
        port = default if not ports or default in ports else sorted(ports)[0]
        return f"{scheme}://{addr}" + ("" if port == default else f":{port}")
    return None


def recheck(cluster: Any, spec: ReleaseSpec, plan: Plan, result: ApplyResult,
            findings: Iterable[Finding]) -> list[Finding]:
    """After an applied plan, the preflight's finding about the namespace as it is now.

    The dry run says "namespace NS will be created"; once the approved plan
    created it, that describes a state that is gone: the finding is recorded
    again as it is now ("namespace NS exists") so the run reports no stale plan.
    """
    if not result.applied:
        return []
    key = f"preflight/namespace/{spec.namespace}"
    before = [f for f in findings if f.id == key]
    after = [Finding(id=key, severity="ok", title=f"namespace {spec.namespace} exists (created by plan {plan.id})",
                        resource=f"Release/{spec.namespace}/{spec.release}")] \
        if namespace_exists(cluster, spec.namespace) else []
    return resolution.reevaluate(before, after, {f.resource for f in before if f.resource}, plan.id)


def verify(cluster: Any, helm: Helm, spec: ReleaseSpec, *, ingress_url: str | None = None,
           ca_file: str | None = None, timeout: float = 60.0, path: str = "/",
           ) -> tuple[pd.DataFrame, list[Finding]]:
    """Prove the service works: Deployment available, Service endpoints ready, a request through the
    ingress answered, and (where cert-manager runs) the host's certificate issued and served.

    Each check waits up to ``timeout`` seconds in total. Returns a table (one row per check) and
    findings: ``ok`` when a check passed, ``critical`` when it failed, ``info`` when it could not run.
    """
    deadline = time.monotonic() + timeout
    res = f"Release/{spec.namespace}/{spec.release}"
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []

    def add(check: str, severity: str, title: str, detail: str = "", evidence: Any = None) -> None:
        rows.append({"check": check, "result": "passed" if severity == "ok" else
                     ("not checked" if severity == "info" else "FAILED"), "detail": title})
        findings.append(Finding(id=f"verify/{check}/{spec.namespace}/{spec.release}", severity=severity,
                                   title=title, detail=detail, resource=res, evidence=evidence))

    if not helm.history(spec.release, spec.namespace):
        add("release", "info", f"release {spec.release} is not installed: nothing to verify yet")
        return pd.DataFrame(rows, columns=["check", "result", "detail"]), findings

    status = _wait(lambda: rollout_status(cluster, spec), lambda s: s["complete"], deadline)
    if status["complete"]:
        add("deployment", "ok", f"Deployment available: {status['available']}/{status['desired']} pods, "
            "rollout complete", evidence=status)
    else:
        add("deployment", "critical", f"Deployment not available: {status['available']}/{status['desired']} "
            f"available, {status['updated']} updated ({status['reason'] or 'no progress'})", evidence=status)

    def endpoints() -> int:
        try:
            ep = kube.request(cluster, "GET", f"/api/v1/namespaces/{spec.namespace}/endpoints/{spec.release}")
        except NotFound:
            return 0
        return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])

    ready = _wait(endpoints, bool, deadline)
    if ready:
        add("endpoints", "ok", f"Service {spec.release} has {ready} ready endpoint(s)")
    else:
        add("endpoints", "critical", f"Service {spec.release} has no ready endpoint: every request fails")

    base = ingress_url or ingress_address(cluster, spec)
    probe: Probe | None = None
    if not base:
        add("http", "info", "request through the ingress not checked: no ingress_url and the Ingress has "
            "no load balancer address")
    else:
        probe = _wait(lambda: http_probe(base, spec.host, path, ca_file=ca_file),
                      lambda pr: pr.status is not None and 200 <= pr.status < 400, deadline)
        evidence = {"url": probe.url, "status": probe.status, "seconds": probe.seconds,
                    "body": cut(probe.body, 200), "certificate": probe.certificate}
        if probe.status is not None and 200 <= probe.status < 400:
            add("http", "ok", f"GET {probe.url} answered {probe.status}", cut(probe.body, 200), evidence)
        else:
            add("http", "critical", f"GET {probe.url} failed: {probe.error or f'HTTP {probe.status}'}",
                cut(probe.body, 200), evidence)
    _verify_certificate(cluster, spec, probe, deadline, add)
    return pd.DataFrame(rows, columns=["check", "result", "detail"]), findings


def _verify_certificate(cluster: Any, spec: ReleaseSpec, probe: Probe | None, deadline: float,
                        add: Callable[..., None]) -> None:
    if not spec.tls_secret:
        add("certificate", "info", "no TLS: cluster_issuer is empty")
        return
    path = f"/apis/cert-manager.io/v1/namespaces/{spec.namespace}/certificates/{spec.tls_secret}"

    def ready() -> dict[str, Any] | None:
        try:
            cert = kube.request(cluster, "GET", path)
        except (NotFound, InvalidInput, Unavailable):
            return None
        return cert if kube.condition(cert, "Ready").get("status") == "True" else {"pending": cert}

    # ingress-shim creates the Certificate within seconds of the Ingress: wait briefly for it to
    # appear (it never will without cert-manager), then up to the deadline for it to be issued
    cert = _wait(ready, lambda c: c is not None, min(deadline, time.monotonic() + CERTIFICATE_APPEARS))
    if cert is not None:
        cert = _wait(ready, lambda c: c is not None and "pending" not in c, deadline)
    if cert is None:
        add("certificate", "info", f"certificate not checked: no cert-manager Certificate {spec.tls_secret} "
            "(cert-manager is not running here, or has not seen the Ingress)")
        return
    if "pending" in cert:
        why = kube.condition(cert["pending"], "Ready").get("message", "not Ready")
        add("certificate", "critical", f"Certificate {spec.tls_secret} is not issued: {cut(why, 200)}")
        return
    served = (probe.certificate if probe else {}) or {}
    if served and spec.host not in served.get("dns_names", []):
        add("certificate", "critical", f"the certificate served for {spec.host} does not name it "
            f"(names {served.get('dns_names')})", evidence=served)
        return
    add("certificate", "ok", f"Certificate {spec.tls_secret} is issued"
        + (f" and served for {spec.host} (issuer {served.get('issuer')}, until {served.get('not_after')})"
           if served else ""), evidence=served or None)


def _wait(fetch: Callable[[], Any], good: Callable[[Any], bool], deadline: float, every: float = 1.0) -> Any:
    value = fetch()
    while not good(value) and time.monotonic() < deadline:
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
        value = fetch()
    return value
