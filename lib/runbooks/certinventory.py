"""The certificate inventory: TLS Secrets, cert-manager Certificates and Ingresses, linked, and its findings.

Certificate outages come from the gaps between layers, which no single object
shows: cert-manager renewed but the ingress still serves the old certificate;
an Ingress host is missing from the Secret's SANs; a hand-managed Secret nobody
renews; a Certificate stuck on a DNS-01 challenge while its Secret runs out.

* **Inventory** (:func:`build_inventory`): TLS Secrets (parsed by
  :mod:`runbooks.certs`), cert-manager Certificates with their latest
  CertificateRequest and failing ACME Challenge, and the Ingresses that
  reference each Secret. It takes iterables, so each Secret is parsed as its
  page arrives and only the facts are kept: 10,000 Secrets fit in little memory.
* **Served** (:meth:`Inventory.probe`): what the ingress serves for each host.
* **Findings** (:func:`evaluate`, :meth:`Inventory.findings`): expired/expiring,
  not Ready (with cert-manager's message and the failing challenge), renewal
  overdue, Secret missing or not matching, key mismatch, broken chain, Ingress
  host not covered, served ≠ stored, weak key or signature, self-signed on a
  public host. One small check per layer (``_check_*``) adds to the verdicts.

Like :mod:`runbooks.certs` it works on plain objects and does not talk to the
Kubernetes API (:mod:`runbooks.rotation` lists them and rotates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .certs import (
    BACKUP_OF,
    CM_CERTIFICATE_NAME,
    TLS_TYPE,
    WEAK_SIGNATURES,
    CertInfo,
    Served,
    TlsSecret,
    common_name,
    expiry_finding,
    host_covered,
    parse_time,
    probe_served,
    read_tls_secret,
    weak_key,
)
from .errors import Unavailable, cut
from .kube import SecretKeys, condition
from .model import Finding

if TYPE_CHECKING:
    import pandas as pd

STUCK_AFTER_SECONDS = 30 * 60
"""An Issuing condition True for longer than this is "stuck"."""


# --------------------------------------------------------------------------
# cert-manager Certificates and Ingresses
# --------------------------------------------------------------------------


@dataclass
class CmCertificate:
    """A cert-manager Certificate, its latest CertificateRequest and any failing ACME challenge."""

    namespace: str
    name: str
    secret_name: str
    dns_names: list[str]
    issuer: str  # "ClusterIssuer/letsencrypt-prod"
    renew_before: str = ""
    generation: int | None = None
    ready: dict = field(default_factory=dict)  # the Ready condition
    issuing: dict = field(default_factory=dict)  # the Issuing condition
    conditions: list[dict] = field(default_factory=list)
    not_after: datetime | None = None
    renewal_time: datetime | None = None
    revision: int = 0
    failed_attempts: int = 0
    last_failure: datetime | None = None
    request: dict = field(default_factory=dict)  # name, revision, reason, message
    challenge: dict = field(default_factory=dict)  # name, dns_name, state, reason

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def is_ready(self) -> bool:
        return self.ready.get("status") == "True"

    @property
    def is_issuing(self) -> bool:
        return self.issuing.get("status") == "True"

    def issuing_for(self, now: datetime) -> float:
        """Seconds the Issuing condition has been True (0 when it is not)."""
        since = parse_time(self.issuing.get("lastTransitionTime")) if self.is_issuing else None
        return (now - since).total_seconds() if since else 0.0

    def why_failing(self) -> str:
        """cert-manager's own words: Issuing message, request state, challenge reason."""
        parts = []
        message = self.issuing.get("message", "")
        if message and message != self.ready.get("message") and (self.issuing.get("reason") == "Failed"
                                                                  or self.is_issuing):
            parts.append(f"Issuing: {message}")
        if self.request and self.request.get("reason") not in ("Issued", None, ""):
            parts.append(f"CertificateRequest {self.request['name']}: {self.request.get('reason')}: "
                         f"{self.request.get('message', '')}")
        if self.challenge:
            parts.append(f"{self.challenge.get('type', 'ACME')} challenge for {self.challenge['dns_name']} "
                         f"({self.challenge.get('state') or 'pending'}): {self.challenge.get('reason', '')}")
        return " — ".join(" ".join(p.split()) for p in parts)


def read_certificate(cert: dict) -> CmCertificate:
    meta, spec, status = cert["metadata"], cert.get("spec") or {}, cert.get("status") or {}
    ref = spec.get("issuerRef") or {}
    return CmCertificate(
        namespace=meta.get("namespace", ""), name=meta["name"], secret_name=spec.get("secretName", ""),
        dns_names=list(spec.get("dnsNames") or []), issuer=f"{ref.get('kind', 'Issuer')}/{ref.get('name', '')}",
        renew_before=spec.get("renewBefore", ""), generation=meta.get("generation"),
        ready=condition(cert, "Ready"), issuing=condition(cert, "Issuing"),
        conditions=list(status.get("conditions") or []),
        not_after=parse_time(status.get("notAfter")), renewal_time=parse_time(status.get("renewalTime")),
        revision=int(status.get("revision") or 0), failed_attempts=int(status.get("failedIssuanceAttempts") or 0),
        last_failure=parse_time(status.get("lastFailureTime")),
    )


@dataclass
class IngressTls:
    """One TLS entry of an Ingress: which hosts a Secret must cover."""

    namespace: str
    ingress: str
    secret: str
    hosts: list[str]


def ingress_tls(ingress: dict) -> list[IngressTls]:
    meta, spec = ingress["metadata"], ingress.get("spec") or {}
    rule_hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    return [IngressTls(meta.get("namespace", ""), meta["name"], t["secretName"], list(t.get("hosts") or rule_hosts))
            for t in spec.get("tls") or [] if t.get("secretName")]


# --------------------------------------------------------------------------
# The inventory
# --------------------------------------------------------------------------


@dataclass
class Inventory:
    """TLS Secrets, cert-manager Certificates and Ingress TLS entries of a cluster, linked."""

    now: datetime
    secrets: dict[tuple[str, str], TlsSecret] = field(default_factory=dict)
    certificates: dict[tuple[str, str], CmCertificate] = field(default_factory=dict)
    ingresses: list[IngressTls] = field(default_factory=list)
    served: dict[str, Served] = field(default_factory=dict)
    probed: bool = False

    # -- lookups -------------------------------------------------------------------

    def certificate_for(self, namespace: str, secret: str) -> CmCertificate | None:
        """The cert-manager Certificate writing this Secret, if any."""
        found = [c for c in self.certificates.values() if c.namespace == namespace and c.secret_name == secret]
        return found[0] if found else None

    def hosts(self) -> list[str]:
        """Every TLS host of the Ingresses (what :meth:`probe` handshakes with)."""
        return sorted({h for t in self.ingresses for h in t.hosts})

    def hosts_of(self, namespace: str, secret: str) -> list[str]:
        return sorted({h for t in self.ingresses if (t.namespace, t.secret) == (namespace, secret) for h in t.hosts})

    def served_mismatch(self, namespace: str, secret: str) -> dict[str, Served]:
        """Hosts of this Secret whose served certificate is not the stored one."""
        info = self.secrets.get((namespace, secret))
        if info is None or info.leaf is None:
            return {}
        return {h: s for h in self.hosts_of(namespace, secret)
                if (s := self.served.get(h)) is not None and s.sha256 and s.sha256 != info.sha256}

    # -- served ----------------------------------------------------------------------

    def probe(self, endpoint: str = "", *, timeout: float = 5.0, concurrency: int = 16) -> str:
        """Handshake with every Ingress TLS host; Unavailable if the endpoint answers none of them."""
        hosts = self.hosts()
        served = probe_served(hosts, endpoint, timeout=timeout, concurrency=concurrency)
        self.served, self.probed = served, True
        ok = [s for s in served.values() if not s.error]
        if served and not ok:
            first = next(iter(served.values()))
            raise Unavailable(f"no TLS host answered at {endpoint or 'their DNS names'}: {first.error}")
        return f"{len(ok)}/{len(served)} TLS hosts answered at {endpoint or 'their DNS names, port 443'}"

    # -- tables ------------------------------------------------------------------------

    def table(self, labels: Mapping[tuple[str, str], list[str]] | None = None) -> pd.DataFrame:
        """One row per certificate (TLS Secret, or Certificate without a Secret), worst first."""
        labels = labels if labels is not None else self.states()
        rows = []
        for key, s in sorted(self.secrets.items()):
            leaf = s.leaf
            served = [self.served[h] for h in self.hosts_of(*key) if h in self.served]
            rows.append({
                "namespace": s.namespace, "name": s.name,
                "hosts": ", ".join(leaf.dns_names if leaf else []),
                "issuer": common_name(leaf.issuer) if leaf else "",
                "managed_by": s.managed_by if not s.certificate else f"cert-manager ({s.certificate})",
                "not_after": f"{leaf.not_after:%Y-%m-%d %H:%M} UTC" if leaf else "",
                "days_left": round(leaf.days_left(self.now)) if leaf else None,
                "state": ", ".join(labels.get(key) or ["valid"]),
                "served": _served_text(served, s.sha256) if self.probed else "not probed",
                "sha256": s.sha256[:16],
            })
        for _key, c in sorted(self.certificates.items()):
            if (c.namespace, c.secret_name) in self.secrets:
                continue
            rows.append({"namespace": c.namespace, "name": c.secret_name, "hosts": ", ".join(c.dns_names),
                         "issuer": c.issuer, "managed_by": f"cert-manager ({c.name})", "not_after": "",
                         "days_left": None, "state": ", ".join(labels.get((c.namespace, c.secret_name)) or ["no Secret"]),
                         "served": "", "sha256": ""})
        cols = ["namespace", "name", "hosts", "issuer", "managed_by", "not_after", "days_left", "state", "served",
                "sha256"]
        df = _frame(rows, columns=cols)
        df["days_left"] = df["days_left"].astype("Int64")
        # certificates without a Secret first, then the soonest to expire
        return df.sort_values(["days_left", "namespace", "name"], na_position="first").reset_index(drop=True)

    def expiries(self, labels: Mapping[tuple[str, str], list[str]] | None = None) -> pd.DataFrame:
        """Expiry dates for a timeline: one row per stored certificate, plus one per different served one."""
        labels = labels if labels is not None else self.states()
        rows = []
        for key, s in sorted(self.secrets.items()):
            if s.leaf is None:
                continue
            name = f"{key[0]}/{key[1]}"
            state = ", ".join(labels.get(key) or ["valid"])
            rows.append({"certificate": name, "kind": "stored", "not_after": s.leaf.not_after,
                         "days_left": round(s.leaf.days_left(self.now), 1), "state": state})
            for host, served in sorted(self.served_mismatch(*key).items()):
                if served.not_after is not None:
                    rows.append({"certificate": name, "kind": f"served on {host}", "not_after": served.not_after,
                                 "days_left": round((served.not_after - self.now).total_seconds() / 86400, 1),
                                 "state": "served ≠ stored"})
        return _frame(rows, columns=["certificate", "kind", "not_after", "days_left", "state"])

    def certificates_table(self) -> pd.DataFrame:
        """cert-manager Certificates: readiness, renewal, revision and cert-manager's message."""
        rows = []
        for c in sorted(self.certificates.values(), key=lambda c: c.key):
            rows.append({"namespace": c.namespace, "certificate": c.name, "secret": c.secret_name,
                         "issuer": c.issuer, "ready": f"{c.ready.get('status', '?')} ({c.ready.get('reason', '')})",
                         "issuing": (f"{c.issuing.get('status')} ({c.issuing.get('reason', '')})" if c.issuing else ""),
                         "revision": c.revision, "not_after": c.not_after, "renewal_time": c.renewal_time,
                         "message": cut(c.why_failing() or c.ready.get("message", ""), 240)})
        cols = ["namespace", "certificate", "secret", "issuer", "ready", "issuing", "revision", "not_after",
                "renewal_time", "message"]
        return _frame(rows, columns=cols)

    # -- findings ------------------------------------------------------------------------

    def states(self, **kw: Any) -> dict[tuple[str, str], list[str]]:
        """Short state labels per (namespace, secret name), from the findings."""
        return evaluate(self, **kw)[1]

    def findings(self, **kw: Any) -> list[Finding]:
        """Every finding (see :func:`evaluate` for the thresholds)."""
        return evaluate(self, **kw)[0]


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    import pandas as pd  # only tables need it (the bulk inventory does not)

    return pd.DataFrame(rows, columns=columns)


def _served_text(served: list[Served], stored: str) -> str:
    if not served:
        return "no Ingress host"
    out = []
    for s in served:
        if s.error:
            out.append(f"{s.host}: {cut(s.error, 60)}")
        elif s.sha256 == stored:
            out.append(f"{s.host}: same")
        else:
            out.append(f"{s.host}: DIFFERENT ({s.sha256[:16]}, until {s.not_after:%Y-%m-%d})")
    return "; ".join(out)


def build_inventory(secrets: Iterable[dict | SecretKeys], certificates: Iterable[dict] = (), requests: Iterable[dict] = (),
                    ingresses: Iterable[dict] = (), challenges: Iterable[dict] = (), *,
                    now: datetime | None = None, check_keys: bool = True) -> Inventory:
    """Link plain objects (as the API returns them) into an :class:`Inventory`.

    ``secrets`` may be a generator over pages: each Secret is parsed and dropped.
    Secrets that are not ``kubernetes.io/tls`` or carry the backup label are skipped.
    """
    inv = Inventory(now=now or datetime.now(UTC))
    for s in secrets:
        obj = s.object if isinstance(s, SecretKeys) else s
        if obj.get("type") != TLS_TYPE or ((obj.get("metadata") or {}).get("labels") or {}).get(BACKUP_OF):
            continue
        info = read_tls_secret(s, check_key=check_keys)
        inv.secrets[info.key] = info
    for c in certificates:
        info_c = read_certificate(c)
        inv.certificates[info_c.key] = info_c
    latest: dict[tuple[str, str], dict] = {}
    for r in requests:
        meta = r["metadata"]
        annotations = meta.get("annotations") or {}
        owner = annotations.get(CM_CERTIFICATE_NAME) or next(
            (o["name"] for o in meta.get("ownerReferences") or [] if o.get("kind") == "Certificate"), "")
        revision = int(annotations.get("cert-manager.io/certificate-revision") or 0)
        key = (meta.get("namespace", ""), owner)
        if owner and (key not in latest or revision >= latest[key]["revision"]):
            ready = condition(r, "Ready")
            latest[key] = {"name": meta["name"], "revision": revision, "reason": ready.get("reason", ""),
                           "message": ready.get("message", ""), "created": meta.get("creationTimestamp")}
    failing = [ch for ch in challenges if (ch.get("status") or {}).get("state") not in ("valid",)
               and ((ch.get("status") or {}).get("reason"))]
    for key, cert in inv.certificates.items():
        cert.request = latest.get(key, {})
        for ch in failing:
            spec, st = ch.get("spec") or {}, ch.get("status") or {}
            if ch["metadata"].get("namespace") == cert.namespace and spec.get("dnsName") in cert.dns_names:
                cert.challenge = {"name": ch["metadata"]["name"], "dns_name": spec.get("dnsName"),
                                  "type": spec.get("type", ""), "state": st.get("state", ""),
                                  "reason": st.get("reason", "")}
                break
        secret = inv.secrets.get((cert.namespace, cert.secret_name))
        if secret is not None:
            secret.managed_by, secret.certificate = "cert-manager", cert.name
    for ing in ingresses:
        for tls in ingress_tls(ing):
            inv.ingresses.append(tls)
            secret = inv.secrets.get((tls.namespace, tls.secret))
            if secret is not None:
                ref = f"{tls.namespace}/{tls.ingress}"
                if ref not in secret.ingresses:
                    secret.ingresses.append(ref)
                secret.ingress_hosts = sorted(set(secret.ingress_hosts) | set(tls.hosts))
    return inv


# --------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------


def _public_host(host: str, internal_domains: Iterable[str]) -> bool:
    return not any(host == d.lstrip(".") or host.endswith(d if d.startswith(".") else "." + d)
                   for d in internal_domains)


@dataclass
class _Verdicts:
    """Findings, and short state labels per (namespace, secret name) for the inventory's table."""

    findings: list[Finding] = field(default_factory=list)
    labels: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, key: tuple[str, str], label: str, finding: Finding) -> None:
        self.findings.append(finding)
        labels = self.labels.setdefault(key, [])
        if label not in labels:
            labels.append(label)


def evaluate(inv: Inventory, *, warning_days: int = 30, critical_days: int = 7,
             internal_domains: Iterable[str] = (".local", ".internal", ".svc", ".cluster.local", ".localhost"),
             stuck_after_seconds: float = STUCK_AFTER_SECONDS) -> tuple[list[Finding], dict[tuple[str, str], list[str]]]:
    """Findings for an inventory, and short state labels per (namespace, secret) for its table.

    Args:
        warning_days, critical_days: expiry thresholds (a served certificate
            expiring within ``critical_days`` makes served ≠ stored critical).
        internal_domains: hosts under these suffixes may use self-signed certificates.
        stuck_after_seconds: an Issuing condition True for longer is "stuck".
    """
    out = _Verdicts()
    internal = list(internal_domains)
    for key, s in sorted(inv.secrets.items()):
        if s.error or s.leaf is None:
            ns, name = key
            out.add(key, "unreadable", Finding(id=f"tls-unreadable/{ns}/{name}", severity="warning",
                                               title=f"TLS Secret {ns}/{name} cannot be parsed", detail=s.error,
                                               resource=f"Secret/{ns}/{name}"))
            continue
        _check_stored(out, key, s, s.leaf, inv.now, warning_days, critical_days, internal)
        _check_hosts(out, key, s.leaf, inv)
        _check_served(out, key, s.leaf, inv, critical_days)
    for _key, c in sorted(inv.certificates.items()):
        _check_certificate(out, c, inv, critical_days, stuck_after_seconds)
    for host, served in sorted(inv.served.items()):
        if served.error:
            out.findings.append(Finding(id=f"tls-served-error/{host}", severity="warning",
                                        title=f"No TLS handshake with {host}", detail=served.error,
                                        resource=f"Host/{host}"))
    return out.findings, out.labels


def _check_stored(out: _Verdicts, key: tuple[str, str], s: TlsSecret, leaf: CertInfo, now: datetime,
                  warning_days: int, critical_days: int, internal: list[str]) -> None:
    """The stored certificate itself: expiry, key pair, chain, key and signature strength, self-signed."""
    ns, name = key
    resource = f"Secret/{ns}/{name}"
    days = round(leaf.days_left(now), 1)
    expiry = expiry_finding(ns, name, days, leaf.not_after, leaf.sha256, leaf.dns_names,
                            warning_days=warning_days, critical_days=critical_days)
    if expiry is not None:
        out.add(key, "expired" if days < 0 else f"expiring ({days:.0f} d)", expiry)
    if s.key_matches is False:
        out.add(key, "key mismatch", Finding(
            id=f"tls-key-mismatch/{ns}/{name}", severity="critical",
            title=f"TLS Secret {ns}/{name}: tls.key does not belong to the certificate",
            detail="The ingress cannot serve this pair; it falls back to its default certificate.",
            resource=resource, evidence={"sha256": leaf.sha256}))
    if not s.chain_in_order:
        out.add(key, "chain out of order", Finding(
            id=f"tls-chain-order/{ns}/{name}", severity="warning",
            title=f"TLS Secret {ns}/{name}: certificate chain out of order", detail=s.chain_problem,
            resource=resource, evidence={"chain": [leaf.subject, *s.intermediates]}))
    elif not s.chain_complete:
        out.add(key, "chain incomplete", Finding(
            id=f"tls-chain-incomplete/{ns}/{name}", severity="warning",
            title=f"TLS Secret {ns}/{name}: certificate chain incomplete",
            detail=f"{s.chain_problem}. Clients without the intermediate cached reject it.",
            resource=resource, evidence={"chain": [leaf.subject, *s.intermediates]}))
    weak = weak_key(leaf)
    if weak:
        out.add(key, "weak key", Finding(id=f"tls-weak-key/{ns}/{name}", severity="warning",
                                         title=f"TLS certificate {ns}/{name} has a weak key", detail=weak,
                                         resource=resource))
    if leaf.signature_algorithm in WEAK_SIGNATURES:
        out.add(key, "weak signature", Finding(
            id=f"tls-weak-signature/{ns}/{name}", severity="warning",
            title=f"TLS certificate {ns}/{name} is signed with {leaf.signature_algorithm.upper()}",
            detail="Browsers reject SHA-1 and MD5 signatures; reissue with SHA-256.", resource=resource))
    public = [h for h in s.ingress_hosts if _public_host(h, internal)]
    if leaf.self_signed and public:
        out.add(key, "self-signed", Finding(
            id=f"tls-self-signed/{ns}/{name}", severity="warning",
            title=f"TLS certificate {ns}/{name} is self-signed but serves public hosts",
            detail=f"Clients that verify certificates reject {', '.join(public)}; a public issuer is "
                   "expected (e.g. a cert-manager Certificate from letsencrypt-prod).",
            resource=resource, evidence={"hosts": public, "sha256": leaf.sha256}))


def _check_hosts(out: _Verdicts, key: tuple[str, str], leaf: CertInfo, inv: Inventory) -> None:
    """Every host an Ingress serves with this Secret is in the certificate's SANs."""
    ns, name = key
    for t in inv.ingresses:
        if (t.namespace, t.secret) != key:
            continue
        for host in t.hosts:
            if not host_covered(host, leaf.dns_names):
                out.add(key, "host not covered", Finding(
                    id=f"tls-host-not-covered/{ns}/{t.ingress}/{host}", severity="critical",
                    title=f"Ingress {ns}/{t.ingress}: {host} is not in the SANs of {name}",
                    detail=f"The certificate covers {', '.join(leaf.dns_names) or 'no DNS name'}; clients "
                           f"connecting to {host} get a name mismatch.",
                    resource=f"Ingress/{ns}/{t.ingress}", evidence={"sans": leaf.dns_names}))


def _check_served(out: _Verdicts, key: tuple[str, str], leaf: CertInfo, inv: Inventory, critical_days: int) -> None:
    """What the ingress serves for this Secret's hosts is the stored certificate."""
    ns, name = key
    mismatch = inv.served_mismatch(ns, name)
    if not mismatch:
        return
    soonest = min((m.not_after for m in mismatch.values() if m.not_after), default=None)
    served_days = (soonest - inv.now).total_seconds() / 86400 if soonest else None
    severity = "critical" if served_days is not None and served_days < critical_days else "warning"
    when = f"; the served one expires in {served_days:.0f} days" if served_days is not None else ""
    out.add(key, "served ≠ stored", Finding(
        id=f"tls-served-mismatch/{ns}/{name}", severity=severity,
        title=f"{', '.join(sorted(mismatch))} serves another certificate than Secret {ns}/{name}{when}",
        detail="The ingress controller has not loaded the current Secret (for example after a renewal): "
               "restart or reload it (this runbook's plan does), then check again.",
        resource=f"Secret/{ns}/{name}",
        evidence={"stored_sha256": leaf.sha256, "stored_not_after": leaf.not_after.isoformat(),
                  "served": {h: {"sha256": m.sha256, "not_after": m.not_after.isoformat()
                                 if m.not_after else None} for h, m in sorted(mismatch.items())}}))


def _check_certificate(out: _Verdicts, c: CmCertificate, inv: Inventory, critical_days: int,
                       stuck_after_seconds: float) -> None:
    """A cert-manager Certificate: Ready (or why not), renewed on time, its Secret present and matching."""
    ns, name = c.key
    skey = (ns, c.secret_name)
    resource = f"Certificate/{ns}/{name}"
    secret = inv.secrets.get(skey)
    evidence = {"revision": c.revision, "ready": c.ready, "issuing": c.issuing,
                "request": c.request or None, "challenge": c.challenge or None}
    if not c.is_ready:
        stuck = c.issuing_for(inv.now)
        if c.is_issuing and stuck > stuck_after_seconds:
            what = f"stuck issuing for {_age(stuck)}"
            label = "stuck: not issued" if secret is None else "stuck"
        else:
            what = c.ready.get("reason") or "not Ready"
            label = "not ready"
        detail = c.ready.get("message", "")
        why = c.why_failing()
        if secret is None:
            detail = f"No Secret {c.secret_name} has been issued. " + detail
        out.add(skey, label, Finding(
            id=f"certificate-not-ready/{ns}/{name}", severity="critical",
            title=f"Certificate {ns}/{name} is not Ready: {what}",
            detail=f"{detail}{' — ' + why if why else ''}", resource=resource, evidence=evidence))
        return
    if c.renewal_time is not None and c.renewal_time <= inv.now:
        days = secret.leaf.days_left(inv.now) if secret is not None and secret.leaf is not None else None
        severity = "critical" if days is not None and days < critical_days else "warning"
        out.add(skey, "renewal overdue", Finding(
            id=f"certificate-renewal-overdue/{ns}/{name}", severity=severity,
            title=f"Certificate {ns}/{name}: renewal overdue since {c.renewal_time:%Y-%m-%d %H:%M} UTC"
                  + (f" ({days:.0f} days left)" if days is not None else ""),
            detail=(c.why_failing() or "cert-manager has not renewed it yet.")
            + (f" Failed attempts: {c.failed_attempts}." if c.failed_attempts else ""),
            resource=resource, evidence=evidence))
    if secret is None:
        out.add(skey, "Secret missing", Finding(
            id=f"certificate-secret-missing/{ns}/{name}", severity="critical",
            title=f"Certificate {ns}/{name} is Ready but its Secret {c.secret_name} does not exist",
            resource=resource, evidence=evidence))
    elif secret.leaf is not None and sorted(secret.leaf.dns_names) != sorted(c.dns_names):
        out.add(skey, "SANs differ from Certificate", Finding(
            id=f"certificate-secret-mismatch/{ns}/{name}", severity="warning",
            title=f"Secret {ns}/{c.secret_name} does not match Certificate {name}'s dnsNames",
            detail=f"Secret: {', '.join(secret.leaf.dns_names)}; Certificate: {', '.join(c.dns_names)}.",
            resource=resource))


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"
