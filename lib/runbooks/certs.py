"""TLS certificates: parse a Secret's chain, check it, and see what an endpoint serves.

The building blocks of the certificate checks, on plain objects (no Kubernetes
API calls):

* **Parsing** (``cryptography``): the whole chain of each ``kubernetes.io/tls``
  Secret (subject, SANs, issuer, serial, SHA-256 fingerprint, validity, key
  type and size, signature algorithm), whether the key matches and whether
  the chain is complete and in order (:func:`read_tls_secret`).
* **Served certificates** (:func:`probe_served`): a TLS handshake with SNI per
  host against the ingress endpoint, concurrently with a bound and a timeout.

:mod:`runbooks.certinventory` links TLS Secrets, cert-manager Certificates and
Ingresses into an inventory and evaluates it; :mod:`runbooks.rotation` lists
them from the cluster and rotates.

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
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from .errors import InvalidInput, cut
from .kube import SecretKeys
from .model import Finding

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
        return common_name(self.subject)


def common_name(rfc4514: str) -> str:
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
        return common_name(c.cert.subject.rfc4514_string())

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
        return ChainCheck(True, False, f"{cn(cert)} was issued by {common_name(cert.cert.issuer.rfc4514_string())}, "
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
