"""Certificates for the sandbox: CAs, TLS leaves and the API server's serving cert.

The sandbox plants real X.509 certificates (valid, expiring, expired,
self-signed) so that the certificate runbooks parse and verify exactly what
they would find in a real cluster.  Everything is generated at start-up,
relative to "now", with the ``cryptography`` package.

Speed matters because a scenario starts in well under a second: CAs and
serving certs use EC P-256 keys (microseconds to generate).  RSA keys cost
~50 ms each, so callers that want RSA reuse keys from a process-wide pool
(:func:`pooled_key`) instead of generating fresh ones at every start.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_TYPES = ("ec", "rsa")
RSA_KEY_SIZES = (2048, 3072, 4096)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate with its private key, both parsed and as PEM."""

    cert: x509.Certificate
    key: PrivateKey
    cert_pem: bytes
    key_pem: bytes

    @property
    def common_name(self) -> str:
        """The subject's CN (empty if the subject has none)."""
        names = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else ""


def generate_key(key_type: str = "ec", key_size: int = 2048) -> PrivateKey:
    """A fresh private key: EC P-256, or RSA of ``key_size`` bits."""
    _check_key_type(key_type, key_size)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


_POOL: dict[tuple[str, int], list[PrivateKey]] = {}
_POOL_LOCK = threading.Lock()


def pooled_key(key_type: str = "rsa", key_size: int = 2048, slot: int = 0) -> PrivateKey:
    """The key in ``slot`` of a process-wide pool, generated on first use.

    Distinct slots give distinct keys, and the same slot gives the same key
    for the life of the process, so a sandbox restarted in one process (as
    the tests do) pays for RSA key generation only once.
    """
    _check_key_type(key_type, key_size)
    if slot < 0:
        raise ValueError(f"key pool slot must be >= 0, got {slot}")
    with _POOL_LOCK:
        keys = _POOL.setdefault((key_type, key_size), [])
        while len(keys) <= slot:
            keys.append(generate_key(key_type, key_size))
        return keys[slot]


def new_ca(
    common_name: str,
    *,
    not_before: datetime,
    not_after: datetime,
    key_type: str = "ec",
    organization: str | None = None,
) -> CertKey:
    """A self-signed root CA."""
    return issue(
        None,
        common_name=common_name,
        organization=organization,
        not_before=not_before,
        not_after=not_after,
        key_type=key_type,
        is_ca=True,
    )


def issue(
    ca: CertKey | None,
    *,
    common_name: str,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    not_before: datetime,
    not_after: datetime,
    key_type: str = "rsa",
    key_size: int = 2048,
    is_ca: bool = False,
    path_length: int | None = None,
    server_auth: bool = True,
    organization: str | None = None,
    key: PrivateKey | None = None,
) -> CertKey:
    """Issue a certificate signed by ``ca`` (``None``: self-signed).

    Extensions follow what public CAs and cert-manager produce: SAN,
    BasicConstraints, KeyUsage, ExtendedKeyUsage (leaves only: serverAuth,
    or clientAuth when ``server_auth`` is false), SKI and AKI.  An
    intermediate CA usually has ``path_length=0``.  Pass ``key``
    to reuse a key (e.g. from :func:`pooled_key`); otherwise a fresh one of
    ``key_type``/``key_size`` is generated.
    """
    not_before, not_after = _utc(not_before, "not_before"), _utc(not_after, "not_after")
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after.isoformat()}) must be later than not_before ({not_before.isoformat()})")
    if key is None:
        key = generate_key(key_type, key_size)
    dns_names = list(dns_names)
    ips = [_parse_ip(text) for text in ip_addresses]

    subject = _name(common_name, organization)
    issuer_name = ca.cert.subject if ca else subject
    signing_key = ca.key if ca else key
    public_key = key.public_key()

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
        .add_extension(_key_usage(is_ca, public_key), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca is not None:
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    builder = builder.add_extension(aki, critical=False)
    if not is_ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns_names or ips:
        sans = [x509.DNSName(name) for name in dns_names] + [x509.IPAddress(ip) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)

    cert = builder.sign(signing_key, hashes.SHA256())
    return _certkey(cert, key)


def serving_cert_for_loopback(
    ca: CertKey,
    *,
    now: datetime | None = None,
    valid_for: timedelta = timedelta(days=365),
) -> CertKey:
    """The sandbox API server's HTTPS cert: 127.0.0.1, ::1 and localhost (EC P-256).

    The in-cluster names of the ``kubernetes`` Service are included too, as
    a real kube-apiserver certificate has them.
    """
    now = _utc(now or datetime.now(UTC), "now")
    return issue(
        ca,
        common_name="kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", "::1"),
        not_before=now - timedelta(hours=1),  # tolerate small clock skew
        not_after=now + valid_for,
        key_type="ec",
    )


def chain_pem(leaf: CertKey, *intermediates: CertKey) -> bytes:
    """The PEM bundle a server presents: the leaf first, then its intermediates."""
    return b"".join(item.cert_pem for item in (leaf, *intermediates))


def csr_pem(key: PrivateKey, *, common_name: str, dns_names: Sequence[str] = ()) -> bytes:
    """A PEM certificate signing request, as cert-manager puts in a CertificateRequest."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, None))
    if dns_names:
        sans = x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names])
        builder = builder.add_extension(sans, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """PEM of a private key in the traditional form cert-manager writes (PKCS#1 / SEC1)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


# -- CA keys of the sandbox's issuers ------------------------------------------------

_CAS: dict[bytes, CertKey] = {}
_CAS_LOCK = threading.Lock()


def remember_ca(ca: CertKey) -> None:
    """Keep a CA (certificate and key) in this process, found again by :func:`known_ca`.

    The scenario loader creates the CA behind a ClusterIssuer (its ``sandbox.ca``) but
    only plants certificates in the cluster; the sandbox cert-manager controller
    (:mod:`runbooks_sandbox.certmanager`) recognises the CA in an issued Secret's chain
    and signs renewals with the same key, so old and new leaves chain to one root.
    """
    fingerprint = ca.cert.fingerprint(hashes.SHA256())
    with _CAS_LOCK:
        _CAS[fingerprint] = ca


def known_ca(cert: x509.Certificate) -> CertKey | None:
    """The CA remembered for this certificate (by SHA-256 fingerprint), if any."""
    with _CAS_LOCK:
        return _CAS.get(cert.fingerprint(hashes.SHA256()))


def _certkey(cert: x509.Certificate, key: PrivateKey) -> CertKey:
    return CertKey(
        cert=cert,
        key=key,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem(key),
    )


def _name(common_name: str, organization: str | None) -> x509.Name:
    if not common_name:
        raise ValueError("common_name must not be empty")
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _key_usage(is_ca: bool, public_key: object) -> x509.KeyUsage:
    # RSA leaves also allow key encipherment (RSA key exchange); EC leaves do not.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not is_ca and isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )


def _check_key_type(key_type: str, key_size: int) -> None:
    if key_type not in KEY_TYPES:
        raise ValueError(f"key_type {key_type!r} is not supported; use one of {', '.join(KEY_TYPES)}")
    if key_type == "rsa" and key_size not in RSA_KEY_SIZES:
        raise ValueError(f"RSA key_size {key_size} is not supported; use one of {RSA_KEY_SIZES}")


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"ip_addresses entry {text!r} is not an IPv4 or IPv6 address") from None


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)
