"""Sandbox PKI: the certificates must be real enough for TLS clients and certificate runbooks."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runbooks_sandbox import pki

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def root():
    return pki.new_ca("Test Root", organization="Test Org", not_before=NOW - 365 * DAY, not_after=NOW + 3650 * DAY)


@pytest.fixture(scope="module")
def intermediate(root):
    return pki.issue(
        root, common_name="Test Intermediate", is_ca=True, path_length=0, key_type="ec",
        not_before=NOW - 100 * DAY, not_after=NOW + 1000 * DAY,
    )


def _ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def _verifier(roots, name, at=NOW):
    store = verification.Store([item.cert for item in roots])
    return verification.PolicyBuilder().store(store).time(at).build_server_verifier(name)


def test_new_ca_is_a_self_signed_ec_root(root):
    cert = root.cert
    assert cert.subject == cert.issuer
    assert root.common_name == "Test Root"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Test Org"
    cert.verify_directly_issued_by(cert)
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    assert root.key.curve.name == "secp256r1"
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.not_valid_before_utc == NOW - 365 * DAY
    assert cert.not_valid_after_utc == NOW + 3650 * DAY
    assert root.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert root.key_pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")


def test_leaf_has_sans_validity_and_extensions(root, intermediate):
    leaf = pki.issue(
        intermediate, common_name="shop.example.com", dns_names=["shop.example.com", "www.shop.example.com"],
        ip_addresses=["10.0.0.1"], not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY, key_type="ec",
    )
    cert = leaf.cert
    sans = _ext(cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["shop.example.com", "www.shop.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert cert.not_valid_after_utc - NOW == 60 * DAY
    assert cert.issuer == intermediate.cert.subject
    assert not _ext(cert, x509.BasicConstraints).value.ca
    assert _ext(cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(intermediate.cert, x509.SubjectKeyIdentifier).value.digest
    assert not _ext(cert, x509.KeyUsage).value.key_encipherment  # EC: signature only


def test_chain_verifies_and_hostname_is_checked(root, intermediate):
    leaf = pki.issue(
        intermediate, common_name="cart.shop.example.com", dns_names=["cart.shop.example.com"],
        not_before=NOW - DAY, not_after=NOW + 89 * DAY, key_type="ec",
    )
    bundle = pki.chain_pem(leaf, intermediate)
    parsed = x509.load_pem_x509_certificates(bundle)
    assert parsed == [leaf.cert, intermediate.cert]

    chain = _verifier([root], x509.DNSName("cart.shop.example.com")).verify(leaf.cert, [intermediate.cert])
    assert [cert.subject for cert in chain] == [leaf.cert.subject, intermediate.cert.subject, root.cert.subject]
    with pytest.raises(verification.VerificationError):
        _verifier([root], x509.DNSName("other.example.com")).verify(leaf.cert, [intermediate.cert])
    with pytest.raises(verification.VerificationError):  # without the intermediate there is no path
        _verifier([root], x509.DNSName("cart.shop.example.com")).verify(leaf.cert, [])


def test_expired_certificate_fails_verification(root, intermediate):
    leaf = pki.issue(
        intermediate, common_name="checkout.shop.example.com", dns_names=["checkout.shop.example.com"],
        not_before=NOW - 92 * DAY, not_after=NOW - 2 * DAY, key_type="ec",
    )
    name = x509.DNSName("checkout.shop.example.com")
    with pytest.raises(verification.VerificationError):
        _verifier([root], name).verify(leaf.cert, [intermediate.cert])
    _verifier([root], name, at=NOW - 10 * DAY).verify(leaf.cert, [intermediate.cert])


def test_self_signed_rsa_leaf(root):
    leaf = pki.issue(
        None, common_name="pay.example.com", dns_names=["pay.example.com"],
        not_before=NOW - 65 * DAY, not_after=NOW + 300 * DAY, key=pki.pooled_key("rsa", 2048, slot=0),
    )
    cert = leaf.cert
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    assert isinstance(leaf.key, rsa.RSAPrivateKey) and leaf.key.key_size == 2048
    assert _ext(cert, x509.KeyUsage).value.key_encipherment
    assert leaf.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    _verifier([leaf], x509.DNSName("pay.example.com")).verify(cert, [])
    with pytest.raises(verification.VerificationError):  # not trusted through the public-looking root
        _verifier([root], x509.DNSName("pay.example.com")).verify(cert, [])


def test_default_key_is_rsa_2048(root):
    leaf = pki.issue(root, common_name="client", not_before=NOW, not_after=NOW + DAY, server_auth=False)
    assert isinstance(leaf.key, rsa.RSAPrivateKey) and leaf.key.key_size == 2048
    assert _ext(leaf.cert, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def test_intermediate_path_length(intermediate, root):
    constraints = _ext(intermediate.cert, x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    intermediate.cert.verify_directly_issued_by(root.cert)


def test_serving_cert_for_loopback(root):
    serving = pki.serving_cert_for_loopback(root, now=NOW)
    sans = _ext(serving.cert, x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert isinstance(serving.key, ec.EllipticCurvePrivateKey)
    assert serving.cert.not_valid_before_utc <= NOW < serving.cert.not_valid_after_utc
    for name in (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")):
        _verifier([root], name).verify(serving.cert, [])


def test_serving_cert_passes_a_real_tls_handshake(root, tmp_path):
    """OpenSSL (what kubectl's Go TLS and the Python client rely on) accepts it for 127.0.0.1."""
    serving = pki.serving_cert_for_loopback(root)
    cert_file, key_file, ca_file = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "ca.crt"
    cert_file.write_bytes(serving.cert_pem)
    key_file.write_bytes(serving.key_pem)
    ca_file.write_bytes(root.cert_pem)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.recv(2) == b"ok"
        thread.join(timeout=10)


def test_pooled_keys_are_stable_per_slot():
    assert pki.pooled_key("ec", slot=0) is pki.pooled_key("ec", slot=0)
    assert pki.pooled_key("ec", slot=0) is not pki.pooled_key("ec", slot=1)


def test_csr_pem():
    key = pki.generate_key("ec")
    csr = x509.load_pem_x509_csr(pki.csr_pem(key, common_name="a.example.com", dns_names=["a.example.com"]))
    assert csr.is_signature_valid
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.example.com"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"not_before": NOW, "not_after": NOW}, "must be later than"),
        ({"not_before": NOW.replace(tzinfo=None), "not_after": NOW + DAY}, "timezone-aware"),
        ({"not_before": NOW, "not_after": NOW + DAY, "key_type": "dsa"}, "'dsa' is not supported"),
        ({"not_before": NOW, "not_after": NOW + DAY, "key_size": 1024}, "1024 is not supported"),
        ({"not_before": NOW, "not_after": NOW + DAY, "ip_addresses": ["localhost"]}, "not an IPv4 or IPv6"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pki.issue(None, common_name="x", **kwargs)
