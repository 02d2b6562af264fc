"""X.509 facts from TLS Secrets: what a certificate covers, who issued it, when it expires.

Parsing uses `cryptography` on the PEM in `tls.crt`; the private key in
`tls.key` is only ever used to check that it matches the certificate, and
nothing derived from it other than that yes/no leaves this module.
Fingerprints (SHA-256) identify certificates in reports.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .errors import InvalidInput

TLS_TYPE = "kubernetes.io/tls"


@dataclass
class CertInfo:
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


def parse_chain(pem: bytes | str) -> list[CertInfo]:
    """Every certificate in a PEM bundle, in file order (leaf first in a well-formed chain)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise InvalidInput(f"not a PEM certificate bundle: {e}") from None
    return [describe(c) for c in certs]


def describe(cert: x509.Certificate) -> CertInfo:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = list(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = []
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key_type, key_size = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_type, key_size = f"EC {key.curve.name}", key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key_type, key_size = "Ed25519", 256
    else:
        key_type, key_size = type(key).__name__, 0
    sig = cert.signature_hash_algorithm
    return CertInfo(
        subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        dns_names=dns, is_ca=is_ca, self_signed=cert.subject == cert.issuer,
        key_type=key_type, key_size=key_size,
        signature_algorithm=(sig.name if sig else "none"),
    )


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Does the private key belong to the first certificate? (Only the answer leaves here.)"""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, IndexError):
        return False
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt)


def _decode(secret: dict, key: str) -> bytes:
    value = (secret.get("data") or {}).get(key)
    if not value:
        return b""
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        return b""


def tls_secret_summary(secret: dict, now: datetime | None = None) -> dict:
    """One row about a `kubernetes.io/tls` Secret: leaf facts, days left, problems. No key material."""
    meta = secret["metadata"]
    row: dict = {"namespace": meta.get("namespace"), "name": meta["name"], "hosts": [], "issuer": "",
                 "not_after": None, "days_left": None, "self_signed": False, "sha256": "",
                 "chain_length": 0, "key_matches": None, "error": ""}
    crt = _decode(secret, "tls.crt")
    if not crt:
        row["error"] = "tls.crt is missing or empty"
        return row
    try:
        chain = parse_chain(crt)
    except InvalidInput as e:
        row["error"] = str(e)
        return row
    leaf = chain[0]
    row.update(hosts=leaf.dns_names, issuer=leaf.issuer, not_after=leaf.not_after,
               days_left=round(leaf.days_left(now), 1), self_signed=leaf.self_signed, sha256=leaf.sha256,
               chain_length=len(chain))
    key = _decode(secret, "tls.key")
    row["key_matches"] = key_matches(crt, key) if key else None
    return row
