"""TLS certificates across every layer: Secret, cert-manager Certificate, Ingress, and what is served.

Certificate outages come from the gaps between layers: cert-manager renewed
but the ingress still serves the old certificate; the Secret is fine but an
Ingress host is missing from its SANs; a hand-managed Secret nobody renews; a
Certificate stuck on a DNS-01 challenge while its Secret runs out. No single
object shows this, so this module links them. It works on plain objects and
does not talk to the Kubernetes API (:mod:`runbooks.rotation` lists them and
rotates):

* **Parsing** (``cryptography``): the whole chain of each ``kubernetes.io/tls``
  Secret (subject, SANs, issuer, serial, SHA-256 fingerprint, validity, key
  type and size, signature algorithm), whether the key matches and whether
  the chain is complete and in order.
* **Inventory** (:func:`build_inventory`): TLS Secrets, cert-manager
  Certificates with their latest CertificateRequest and failing ACME
  Challenge, and the Ingresses that reference each Secret, linked. It takes
  iterables, so each Secret is parsed as its page arrives and only the facts
  are kept: 10,000 Secrets fit in little memory.
* **Served certificates** (:func:`probe_served`): a TLS handshake with SNI per
  host against the ingress endpoint, concurrently with a bound and a timeout.
* **Findings** (:meth:`Inventory.findings`): expired/expiring, not Ready (with
  cert-manager's message and the failing challenge), renewal overdue, Secret
  missing or not matching, key mismatch, broken chain, Ingress host not covered,
  served ≠ stored, weak key or signature, self-signed on a public host.

Private keys are parsed only to compare their public half with the
certificate; reports show SHA-256 fingerprints.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import socket
import ssl
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from .errors import InvalidInput, Unavailable, cut
from .kube import SecretKeys, condition
from .model import Finding

if TYPE_CHECKING:
    import pandas as pd

TLS_TYPE = "kubernetes.io/tls"
CM_CERTIFICATE_NAME = "cert-manager.io/certificate-name"
CM_ISSUER_NAME = "cert-manager.io/issuer-name"
BACKUP_OF = "kube-runbooks.io/backup-of"
"""Label on a backup Secret: the name of the Secret it copies (same namespace)."""
ROTATED_AT = "kube-runbooks.io/rotated-at"
"""Annotation set on a Secret whose data a rotation replaced (the apply time, see runbooks.rotation)."""
WEAK_SIGNATURES = ("md5", "sha1")
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
STUCK_AFTER_SECONDS = 30 * 60
_ENDPOINT = re.compile(r"^(https://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?\Z")


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass
class CertInfo:
    """Facts about one X.509 certificate (nothing secret)."""

    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: datetime
    not_after: datetime
    dns_names: list[str] = field(default_factory=list)
    is_ca: bool = False
    self_signed: bool = False
    key_type: str = ""
    key_size: int = 0
    signature_algorithm: str = ""

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def common_name(self) -> str:
        """The CN of the subject (for tables), else the whole subject."""
        return _cn(self.subject)


def _cn(rfc4514: str) -> str:
    for part in rfc4514.split(","):
        if part.startswith("CN="):
            return part[3:]
    return rfc4514


def parse_chain(pem: bytes | str) -> list[CertInfo]:
    """Every certificate in a PEM bundle, in file order (leaf first in a well-formed chain)."""
    return [describe(c) for c in load_chain(pem)]


def load_chain(pem: bytes | str) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; InvalidInput if there is none or it is not PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise InvalidInput(f"not a PEM certificate bundle: {e}") from None


class _Cert:
    """A certificate with its extensions looked up once (the bulk inventory checks each several times)."""

    __slots__ = ("_subject", "cert", "ext")

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert
        self.ext = {e.oid: e.value for e in cert.extensions}
        self._subject = ""

    @property
    def subject_text(self) -> str:
        if not self._subject:
            self._subject = self.cert.subject.rfc4514_string()
        return self._subject

    @property
    def is_ca(self) -> bool:
        basic = self.ext.get(ExtensionOID.BASIC_CONSTRAINTS)
        return bool(basic is not None and basic.ca)

    def issued_by(self, parent: _Cert) -> bool:
        if self.cert.issuer != parent.cert.subject:
            return False
        aki = self.ext.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        ski = parent.ext.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        if aki is not None and ski is not None and aki.key_identifier is not None:
            return bool(aki.key_identifier == ski.digest)
        return True


def key_facts(key: Any) -> tuple[str, int]:
    """("RSA", 2048), ("EC secp256r1", 256), ("Ed25519", 256) ... of a public or private key."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


def describe(cert: x509.Certificate, ext: Mapping[x509.ObjectIdentifier, Any] | None = None) -> CertInfo:
    """The facts about one certificate (``ext``: its extensions by OID, when already looked up)."""
    if ext is None:
        ext = _Cert(cert).ext
    sans = ext.get(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    basic = ext.get(ExtensionOID.BASIC_CONSTRAINTS)
    key_type, key_size = key_facts(cert.public_key())
    sig = cert.signature_hash_algorithm
    subject, issuer = cert.subject, cert.issuer
    return CertInfo(
        subject=subject.rfc4514_string(), issuer=issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        dns_names=list(sans.get_values_for_type(x509.DNSName)) if sans is not None else [],
        is_ca=bool(basic.ca) if basic is not None else False, self_signed=subject == issuer,
        key_type=key_type, key_size=key_size, signature_algorithm=(sig.name if sig else "none"),
    )


def load_private_key(pem: bytes) -> Any:
    """A private key from PEM (unencrypted); ValueError if it is not one.

    RSA keys skip the expensive consistency check: the key is only used to
    compare its public half with a certificate, never to sign.
    """
    try:
        return serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (TypeError, ValueError, binascii.Error) as e:
        raise ValueError(f"not an unencrypted PEM private key ({type(e).__name__})") from None


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Does the private key belong to the first certificate? (Only the answer leaves here.)"""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = load_private_key(key_pem)
    except (ValueError, TypeError, IndexError):
        return False
    return same_key(cert, key)


def same_key(cert: x509.Certificate, key: Any) -> bool:
    """Whether a private key is the certificate's (their public halves are equal)."""
    try:
        return bool(cert.public_key() == key.public_key())
    except TypeError:  # different key kinds
        return False


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Names chain (and key identifiers agree when both are present); no signature check."""
    return _Cert(child).issued_by(_Cert(parent))


@lru_cache(maxsize=1)
def _system_roots() -> tuple[_Cert, ...]:
    with warnings.catch_warnings():  # some system roots predate RFC 5280's serial rules
        warnings.simplefilter("ignore")
        return tuple(_Cert(c) for c in system_roots())


@lru_cache(maxsize=1)
def system_roots() -> tuple[x509.Certificate, ...]:
    """The system's trusted roots (OpenSSL's default CA file), for "is the chain complete"."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.exists(path):
            try:
                with warnings.catch_warnings():  # some system roots predate RFC 5280's serial rules
                    warnings.simplefilter("ignore")
                    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))
            except (OSError, ValueError):
                continue
    return ()


@dataclass
class ChainCheck:
    """Is a chain in order (leaf first, each certificate issued by the next) and complete?"""

    in_order: bool
    complete: bool
    problem: str = ""


def check_chain(chain: list[x509.Certificate] | list[_Cert], roots: Iterable[x509.Certificate] = (),
                verify_signatures: bool = False) -> ChainCheck:
    """Check the order and completeness of a chain as a server would present it.

    In order: the leaf comes first and each certificate is issued by the next
    one. Complete: every certificate that is neither a CA nor self-signed has
    its issuer in the chain or among ``roots`` (e.g. the Secret's ``ca.crt``,
    the replacement's CA file, the system roots); clients hold the root, so a
    chain may end at an intermediate. ``verify_signatures`` also checks each
    signature (used for replacement files; the bulk inventory compares names
    and key identifiers only).
    """
    if not chain:
        return ChainCheck(False, False, "no certificate")
    certs_ = [c if isinstance(c, _Cert) else _Cert(c) for c in chain]

    def cn(c: _Cert) -> str:
        return _cn(c.cert.subject.rfc4514_string())

    for i, cert in enumerate(certs_[:-1]):
        parent = certs_[i + 1]
        if i == 0 and cert.is_ca and any(not c.is_ca for c in certs_[1:]):
            return ChainCheck(False, True, f"certificate 1 of {len(chain)} is a CA ({cn(cert)}); "
                                           "the leaf must come first")
        if not cert.issued_by(parent):
            elsewhere = any(cert.issued_by(c) for c in certs_ if c is not cert and c is not parent)
            what = "comes later in the file" if elsewhere else "is not in the file"
            return ChainCheck(False, True, f"certificate {i + 2} ({cn(parent)}) did not issue certificate "
                                           f"{i + 1} ({cn(cert)}); its issuer {what}")
        if verify_signatures:
            try:
                cert.cert.verify_directly_issued_by(parent.cert)
            except (ValueError, TypeError, x509.InvalidSignature) as e:
                return ChainCheck(False, True, f"the signature on certificate {i + 1} does not verify with "
                                               f"certificate {i + 2}'s key ({type(e).__name__})")
    for cert in certs_:
        if cert.is_ca or cert.cert.subject == cert.cert.issuer:
            continue
        if any(cert.issued_by(c) for c in certs_ if c is not cert):
            continue
        if any(cert.issued_by(_Cert(r)) for r in roots) or any(cert.issued_by(r) for r in _system_roots()):
            continue
        return ChainCheck(True, False, f"{cn(cert)} was issued by {_cn(cert.cert.issuer.rfc4514_string())}, "
                                       "whose certificate is missing (append the intermediate certificate "
                                       "after the leaf)")
    return ChainCheck(True, True)


def weak_key(info: CertInfo) -> str:
    """Why the key is weak ("" if it is not)."""
    if info.key_type == "RSA" and info.key_size < MIN_RSA_BITS:
        return f"RSA key of {info.key_size} bits (at least {MIN_RSA_BITS} expected)"
    if info.key_type.startswith("EC ") and info.key_size < MIN_EC_BITS:
        return f"EC key of {info.key_size} bits (at least {MIN_EC_BITS} expected)"
    if info.key_type == "DSA":
        return "DSA key (no longer accepted by browsers)"
    return ""


def host_covered(host: str, sans: Iterable[str]) -> bool:
    """Does a SAN cover the host (``*.example.com`` covers exactly one more label)?"""
    host = host.lower().rstrip(".")
    for san in sans:
        san = san.lower().rstrip(".")
        if san == host:
            return True
        if san.startswith("*.") and host.endswith(san[1:]) and "." not in host[: -len(san) + 1]:
            return True
        if host.startswith("*.") and san == host:
            return True
    return False


# --------------------------------------------------------------------------
# TLS Secrets
# --------------------------------------------------------------------------


def secret_bytes(secret: dict, key: str) -> bytes:
    """One decoded value of a Secret's data (empty when missing or not base64)."""
    value = (secret.get("data") or {}).get(key)
    if not value:
        return b""
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        return b""


def parse_time(text: str | None) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339), or None when missing or malformed."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def data_changed_at(secret: dict) -> datetime | None:
    """When the Secret's data was last written: managedFields touching data, else rotated-at, else creation."""
    meta = secret.get("metadata") or {}
    times = [t for m in meta.get("managedFields") or []
             if "f:data" in (m.get("fieldsV1") or {}) and (t := parse_time(m.get("time")))]
    rotated = parse_time((meta.get("annotations") or {}).get(ROTATED_AT))
    if rotated:
        times.append(rotated)
    return max(times) if times else parse_time(meta.get("creationTimestamp"))


@dataclass
class TlsSecret:
    """One ``kubernetes.io/tls`` Secret: its certificate facts and how it is used (no key material)."""

    namespace: str
    name: str
    leaf: CertInfo | None = None
    intermediates: list[str] = field(default_factory=list)  # subjects after the leaf
    chain_in_order: bool = True
    chain_complete: bool = True
    chain_problem: str = ""
    key_matches: bool | None = None
    error: str = ""
    managed_by: str = "hand"  # "cert-manager" when a Certificate owns it
    certificate: str = ""  # the cert-manager Certificate writing it
    issuer_ref: str = ""  # cert-manager issuer named in its annotations
    ingresses: list[str] = field(default_factory=list)  # "namespace/name" of Ingresses using it
    ingress_hosts: list[str] = field(default_factory=list)
    changed_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def sha256(self) -> str:
        return self.leaf.sha256 if self.leaf else ""

    def uncovered_hosts(self) -> list[str]:
        if self.leaf is None:
            return []
        return [h for h in self.ingress_hosts if not host_covered(h, self.leaf.dns_names)]


def read_tls_secret(secret: dict | SecretKeys, *, check_key: bool = True) -> TlsSecret:
    """Parse a ``kubernetes.io/tls`` Secret into facts; problems go to ``error``, nothing raises.

    ``secret`` is what :func:`runbooks.kube.read_secret_keys` / ``iter_secret_keys`` return (the
    certificates, and whether the key matches: the key itself never reaches this module), or a
    Secret object with its data (a manifest, a test fixture).
    """
    if isinstance(secret, SecretKeys):
        keys = secret
        secret = keys.object
    else:
        keys = None
    meta = secret.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    out = TlsSecret(namespace=meta.get("namespace") or "", name=meta.get("name", ""),
                    certificate=annotations.get(CM_CERTIFICATE_NAME, ""),
                    issuer_ref=annotations.get(CM_ISSUER_NAME, ""), changed_at=data_changed_at(secret))
    if out.certificate:
        out.managed_by = "cert-manager"
    crt = keys.certificate("tls.crt") if keys is not None else secret_bytes(secret, "tls.crt")
    if not crt:
        out.error = "tls.crt is missing or empty"
        return out
    try:
        wrapped = _load_bundle(crt)
    except ValueError as e:
        out.error = f"tls.crt is not a PEM certificate bundle: {cut(str(e), 120)}"
        return out
    chain = [c.cert for c in wrapped]
    out.leaf = describe(chain[0], wrapped[0].ext)
    out.intermediates = [c.subject_text for c in wrapped[1:]]
    roots: list[x509.Certificate] = []
    if not wrapped[-1].is_ca and chain[-1].subject != chain[-1].issuer:  # only then can ca.crt matter
        ca = keys.certificate("ca.crt") if keys is not None else secret_bytes(secret, "ca.crt")
        try:
            roots = x509.load_pem_x509_certificates(ca) if ca else []
        except ValueError:
            roots = []
    check = check_chain(wrapped, roots)
    out.chain_in_order, out.chain_complete, out.chain_problem = check.in_order, check.complete, check.problem
    if check_key and keys is not None:
        out.key_matches = keys.key_matches("tls.crt", "tls.key")
    elif check_key:
        key = secret_bytes(secret, "tls.key")
        if key:
            try:
                out.key_matches = same_key(chain[0], load_private_key(key))
            except ValueError:
                out.key_matches = False
    return out


_PEM_END = b"-----END CERTIFICATE-----"
_SHARED: dict[bytes, _Cert] = {}  # intermediates by PEM block: the same few appear in thousands of Secrets


def _load_bundle(pem: bytes) -> list[_Cert]:
    """The certificates of a bundle; certificates after the first are parsed once per process."""
    head, sep, rest = pem.partition(_PEM_END)
    if not sep or b"-----BEGIN CERTIFICATE-----" not in rest:
        return [_Cert(c) for c in x509.load_pem_x509_certificates(pem)]
    out = [_Cert(x509.load_pem_x509_certificates(head + sep)[0])]
    for block in rest.split(_PEM_END)[:-1]:
        block = block.strip() + b"\n" + _PEM_END
        cert = _SHARED.get(block)
        if cert is None:
            cert = _Cert(x509.load_pem_x509_certificates(block)[0])
            if len(_SHARED) < 1024:
                _SHARED[block] = cert
        out.append(cert)
    if rest.split(_PEM_END)[-1].strip():  # trailing garbage: let the strict parser say what is wrong
        x509.load_pem_x509_certificates(pem)
    return out


def tls_secret_summary(secret: dict | SecretKeys, now: datetime | None = None) -> dict:
    """One row about a `kubernetes.io/tls` Secret: leaf facts, days left, problems. No key material."""
    info = read_tls_secret(secret)
    row: dict = {"namespace": info.namespace, "name": info.name, "hosts": [], "issuer": "",
                 "not_after": None, "days_left": None, "self_signed": False, "sha256": "",
                 "chain_length": 0, "key_matches": info.key_matches, "error": info.error}
    if info.leaf is not None:
        leaf = info.leaf
        row.update(hosts=leaf.dns_names, issuer=leaf.issuer, not_after=leaf.not_after,
                   days_left=round(leaf.days_left(now), 1), self_signed=leaf.self_signed, sha256=leaf.sha256,
                   chain_length=1 + len(info.intermediates))
    return row


def expiry_finding(namespace: str, name: str, days_left: float, not_after: datetime, sha256: str,
                   hosts: list[str], *, warning_days: int, critical_days: int) -> Finding | None:
    """The expiry finding of a TLS Secret (shared with cluster-health): expired, or expiring soon."""
    resource = f"Secret/{namespace}/{name}"
    evidence = {"not_after": not_after.isoformat(), "days_left": days_left, "sha256": sha256, "hosts": hosts}
    if days_left < 0:
        return Finding(id=f"tls-expired/{namespace}/{name}", severity="critical",
                          title=f"TLS certificate {namespace}/{name} expired {abs(days_left):.0f} days ago",
                          detail=f"Clients reject {', '.join(hosts)}.", resource=resource, evidence=evidence)
    if days_left < critical_days or days_left < warning_days:
        return Finding(id=f"tls-expiring/{namespace}/{name}",
                          severity="critical" if days_left < critical_days else "warning",
                          title=f"TLS certificate {namespace}/{name} expires in {days_left:.0f} days",
                          resource=resource, evidence=evidence)
    return None


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
# Served certificates
# --------------------------------------------------------------------------


@dataclass
class Served:
    """The certificate a TLS endpoint presents for one SNI host."""

    host: str
    sha256: str = ""
    not_after: datetime | None = None
    subject: str = ""
    issuer: str = ""
    error: str = ""


def split_endpoint(endpoint: str, default_port: int = 443) -> tuple[str, int]:
    """``https://host:port``, ``host:port``, ``[::1]:port`` or ``host`` → (host, port)."""
    if not _ENDPOINT.fullmatch(endpoint or ""):
        raise InvalidInput(f"endpoint {endpoint!r} is not [https://]host[:port] (e.g. https://127.0.0.1:18443 "
                           "or lb.example.com)")
    endpoint = endpoint.removeprefix("https://").rstrip("/")
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        return host, int(rest[1:]) if rest else default_port
    host, _, port = endpoint.partition(":")
    return host, int(port) if port else default_port


def served_certificate(host: str, endpoint: str = "", *, port: int = 443, timeout: float = 5.0) -> Served:
    """Handshake with SNI ``host`` at ``endpoint`` (default: the host itself) and describe the leaf.

    Verification is off on purpose: the point is to see whatever is served,
    expired or self-signed included. Errors are returned, not raised.
    """
    address, dport = split_endpoint(endpoint, port) if endpoint else (host, port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, dport), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        return Served(host, error=f"{type(e).__name__}: {cut(str(e), 160)}")
    if not der:
        return Served(host, error="no certificate presented")
    cert = x509.load_der_x509_certificate(der)
    return Served(host, sha256=cert.fingerprint(hashes.SHA256()).hex(), not_after=cert.not_valid_after_utc,
                  subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string())


def probe_served(hosts: Iterable[str], endpoint: str = "", *, port: int = 443, timeout: float = 5.0,
                 concurrency: int = 16) -> dict[str, Served]:
    """:func:`served_certificate` for many hosts, at most ``concurrency`` handshakes at a time."""
    todo = sorted({h for h in hosts if h and not h.startswith("*.")})
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo)))) as pool:
        results = pool.map(lambda h: served_certificate(h, endpoint, port=port, timeout=timeout), todo)
        return {s.host: s for s in results}


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
                "issuer": _cn(leaf.issuer) if leaf else "",
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
    now = inv.now
    findings: list[Finding] = []
    labels: dict[tuple[str, str], list[str]] = {}
    internal = list(internal_domains)

    def add(key: tuple[str, str], label: str, finding: Finding) -> None:
        findings.append(finding)
        labels.setdefault(key, [])
        if label not in labels[key]:
            labels[key].append(label)

    for key, s in sorted(inv.secrets.items()):
        ns, name = key
        resource = f"Secret/{ns}/{name}"
        if s.error or s.leaf is None:
            add(key, "unreadable", Finding(id=f"tls-unreadable/{ns}/{name}", severity="warning",
                                              title=f"TLS Secret {ns}/{name} cannot be parsed", detail=s.error,
                                              resource=resource))
            continue
        leaf = s.leaf
        days = round(leaf.days_left(now), 1)
        expiry = expiry_finding(ns, name, days, leaf.not_after, leaf.sha256, leaf.dns_names,
                                warning_days=warning_days, critical_days=critical_days)
        if expiry is not None:
            add(key, "expired" if days < 0 else f"expiring ({days:.0f} d)", expiry)
        if s.key_matches is False:
            add(key, "key mismatch", Finding(
                id=f"tls-key-mismatch/{ns}/{name}", severity="critical",
                title=f"TLS Secret {ns}/{name}: tls.key does not belong to the certificate",
                detail="The ingress cannot serve this pair; it falls back to its default certificate.",
                resource=resource, evidence={"sha256": leaf.sha256}))
        if not s.chain_in_order:
            add(key, "chain out of order", Finding(
                id=f"tls-chain-order/{ns}/{name}", severity="warning",
                title=f"TLS Secret {ns}/{name}: certificate chain out of order", detail=s.chain_problem,
                resource=resource, evidence={"chain": [leaf.subject, *s.intermediates]}))
        elif not s.chain_complete:
            add(key, "chain incomplete", Finding(
                id=f"tls-chain-incomplete/{ns}/{name}", severity="warning",
                title=f"TLS Secret {ns}/{name}: certificate chain incomplete",
                detail=f"{s.chain_problem}. Clients without the intermediate cached reject it.",
                resource=resource, evidence={"chain": [leaf.subject, *s.intermediates]}))
        weak = weak_key(leaf)
        if weak:
            add(key, "weak key", Finding(id=f"tls-weak-key/{ns}/{name}", severity="warning",
                                            title=f"TLS certificate {ns}/{name} has a weak key", detail=weak,
                                            resource=resource))
        if leaf.signature_algorithm in WEAK_SIGNATURES:
            add(key, "weak signature", Finding(
                id=f"tls-weak-signature/{ns}/{name}", severity="warning",
                title=f"TLS certificate {ns}/{name} is signed with {leaf.signature_algorithm.upper()}",
                detail="Browsers reject SHA-1 and MD5 signatures; reissue with SHA-256.", resource=resource))
        public = [h for h in s.ingress_hosts if _public_host(h, internal)]
        if leaf.self_signed and public:
            add(key, "self-signed", Finding(
                id=f"tls-self-signed/{ns}/{name}", severity="warning",
                title=f"TLS certificate {ns}/{name} is self-signed but serves public hosts",
                detail=f"Clients that verify certificates reject {', '.join(public)}; a public issuer is "
                       "expected (e.g. a cert-manager Certificate from letsencrypt-prod).",
                resource=resource, evidence={"hosts": public, "sha256": leaf.sha256}))
        for t in inv.ingresses:
            if (t.namespace, t.secret) != key:
                continue
            for host in t.hosts:
                if not host_covered(host, leaf.dns_names):
                    add(key, "host not covered", Finding(
                        id=f"tls-host-not-covered/{ns}/{t.ingress}/{host}", severity="critical",
                        title=f"Ingress {ns}/{t.ingress}: {host} is not in the SANs of {name}",
                        detail=f"The certificate covers {', '.join(leaf.dns_names) or 'no DNS name'}; clients "
                               f"connecting to {host} get a name mismatch.",
                        resource=f"Ingress/{ns}/{t.ingress}", evidence={"sans": leaf.dns_names}))
        mismatch = inv.served_mismatch(ns, name)
        if mismatch:
            soonest = min((m.not_after for m in mismatch.values() if m.not_after), default=None)
            served_days = (soonest - now).total_seconds() / 86400 if soonest else None
            severity = "critical" if served_days is not None and served_days < critical_days else "warning"
            when = f"; the served one expires in {served_days:.0f} days" if served_days is not None else ""
            add(key, "served ≠ stored", Finding(
                id=f"tls-served-mismatch/{ns}/{name}", severity=severity,
                title=f"{', '.join(sorted(mismatch))} serves another certificate than Secret {ns}/{name}{when}",
                detail="The ingress controller has not loaded the current Secret (for example after a renewal): "
                       "restart or reload it (this runbook's plan does), then check again.",
                resource=resource,
                evidence={"stored_sha256": leaf.sha256, "stored_not_after": leaf.not_after.isoformat(),
                          "served": {h: {"sha256": m.sha256, "not_after": m.not_after.isoformat()
                                         if m.not_after else None} for h, m in sorted(mismatch.items())}}))

    for key, c in sorted(inv.certificates.items()):
        ns, name = key
        skey = (ns, c.secret_name)
        resource = f"Certificate/{ns}/{name}"
        secret = inv.secrets.get(skey)
        evidence = {"revision": c.revision, "ready": c.ready, "issuing": c.issuing,
                    "request": c.request or None, "challenge": c.challenge or None}
        if not c.is_ready:
            stuck = c.issuing_for(now)
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
            add(skey, label, Finding(
                id=f"certificate-not-ready/{ns}/{name}", severity="critical",
                title=f"Certificate {ns}/{name} is not Ready: {what}",
                detail=f"{detail}{' — ' + why if why else ''}", resource=resource, evidence=evidence))
            continue
        if c.renewal_time is not None and c.renewal_time <= now:
            days = secret.leaf.days_left(now) if secret is not None and secret.leaf is not None else None
            severity = "critical" if days is not None and days < critical_days else "warning"
            add(skey, "renewal overdue", Finding(
                id=f"certificate-renewal-overdue/{ns}/{name}", severity=severity,
                title=f"Certificate {ns}/{name}: renewal overdue since {c.renewal_time:%Y-%m-%d %H:%M} UTC"
                      + (f" ({days:.0f} days left)" if days is not None else ""),
                detail=(c.why_failing() or "cert-manager has not renewed it yet.")
                + (f" Failed attempts: {c.failed_attempts}." if c.failed_attempts else ""),
                resource=resource, evidence=evidence))
        if secret is None:
            add(skey, "Secret missing", Finding(
                id=f"certificate-secret-missing/{ns}/{name}", severity="critical",
                title=f"Certificate {ns}/{name} is Ready but its Secret {c.secret_name} does not exist",
                resource=resource, evidence=evidence))
        elif secret.leaf is not None and sorted(secret.leaf.dns_names) != sorted(c.dns_names):
            add(skey, "SANs differ from Certificate", Finding(
                id=f"certificate-secret-mismatch/{ns}/{name}", severity="warning",
                title=f"Secret {ns}/{c.secret_name} does not match Certificate {name}'s dnsNames",
                detail=f"Secret: {', '.join(secret.leaf.dns_names)}; Certificate: {', '.join(c.dns_names)}.",
                resource=resource))
    for host, s in sorted(inv.served.items()):
        if s.error:
            findings.append(Finding(id=f"tls-served-error/{host}", severity="warning",
                                       title=f"No TLS handshake with {host}", detail=s.error,
                                       resource=f"Host/{host}"))
    return findings, labels


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 60:.0f} minutes"
