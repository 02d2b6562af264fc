"""The output scan finds secrets however they are encoded, and keys and tokens nobody declared."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from runbooks import secrets as sec

TOKEN = "s3cr3t-T0ken_value.0123456789"
KNOWN = [sec.Secret("kubeconfig bearer token", TOKEN)]


def kinds(text, secrets=KNOWN):
    return {leak.kind for leak in sec.scan_text(text, secrets, "output")}


def pem(key, fmt=serialization.PrivateFormat.PKCS8):
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def der(key, fmt=serialization.PrivateFormat.PKCS8):
    return key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1())}


@pytest.fixture(scope="module")
def certificate(keys):
    key = keys["ec"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert


def test_a_tls_secret_data_printed_base64_is_found(keys):
    """What printing a TLS Secret's .data shows: base64 of the PEM key."""
    data = {"tls.key": base64.b64encode(pem(keys["ec"]).encode()).decode()}
    assert "PEM private key (base64)" in kinds(str(data))
    assert "PEM private key (base64)" in kinds(json.dumps(data, indent=1))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_key_material_without_a_header_is_found(keys, kind, fmt):
    body = "".join(pem(keys[kind], fmt).splitlines()[1:-1])  # the PEM body, no BEGIN/END lines
    assert "DER private key (base64)" in kinds(f"key: {body}")
    folded = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))  # as it sits in a file
    assert "DER private key (base64)" in kinds(folded)
    assert "DER private key (base64)" in kinds(base64.b64encode(der(keys[kind], fmt)).decode())


def test_certificates_are_not_keys(certificate):
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert kinds(cert_pem) == set()
    assert kinds(base64.b64encode(cert_pem.encode()).decode()) == set()
    assert kinds(base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()) == set()
    floats = base64.b64encode(bytes(range(256)) * 3).decode()  # plotly-style binary arrays
    assert kinds(floats) == set()


def test_other_private_key_formats():
    assert "PGP private key" in kinds("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF...")
    assert "PuTTY private key" in kinds("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none")
    assert sec.PEM_KIND in kinds("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n")


@pytest.mark.parametrize(("text", "kind"), [
    ("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLWJ5dGVz", "JSON Web Token"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AWS access key id"),
    ("token ghp_" + "a1B2c3D4e5" * 4, "GitHub token"),
    ("xoxb-123456789012-abcdefABCDEF", "Slack token"),
])
def test_token_shapes(text, kind):
    assert kind in kinds(text, [])


@pytest.mark.parametrize("encode", [
    lambda t: t,
    lambda t: t.encode().hex(),
    lambda t: t.encode().hex().upper(),
    lambda t: quote(t, safe=""),
    lambda t: base64.b64encode(t.encode()).decode(),
    lambda t: base64.b64encode(b"x" + t.encode()).decode(),
    lambda t: base64.b64encode(b"xy" + t.encode()).decode(),
    lambda t: base64.b64encode(f"Bearer {t}".encode()).decode(),
    lambda t: base64.urlsafe_b64encode(t.encode()).decode(),
    lambda t: t[:10] + "\n" + t[10:],
    lambda t: json.dumps(t[:10] + "\n" + t[10:]),
], ids=["raw", "hex", "HEX", "url", "b64", "b64+1", "b64+2", "bearer-b64", "b64url", "split", "split-json"])
def test_a_known_secret_is_found_in_every_encoding(encode):
    assert "kubeconfig bearer token" in kinds(f"out: {encode(TOKEN)} end")


@pytest.mark.parametrize("name", ["VAULT_PW", "DB_PASS", "GITHUB_PAT", "dbpass", "auth_header"])
def test_secret_names(name):
    assert sec.is_secret_name(name)
    assert sec.env_secrets({name: "value-of-it-123"})


def test_in_cluster_and_client_tokens(tmp_path):
    from kubernetes import client

    token = tmp_path / "token"
    token.write_text("in-cluster-token-0123456789\n")
    (found,) = sec.in_cluster_secrets(str(token))
    assert found.value == "in-cluster-token-0123456789"
    cfg = client.Configuration()
    cfg.api_key = {"authorization": "Bearer exec-plugin-token-0123456789"}
    (found,) = sec.client_secrets(cfg)
    assert found.value == "exec-plugin-token-0123456789"
    assert found.kind in kinds("api_key: {'authorization': 'Bearer exec-plugin-token-0123456789'}", [found])


def test_redaction_removes_shapes_and_encoded_keys(keys):
    data = base64.b64encode(pem(keys["ec"]).encode()).decode()
    out = sec.redact({"a": data, "b": "AKIAIOSFODNN7EXAMPLE", "c": "fine"}, [])
    assert out == {"a": sec.REDACTED, "b": sec.REDACTED, "c": "fine"}


@pytest.mark.notebook
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["print", "raise"])
def test_a_printed_or_raised_tls_secret_fails_the_run(sandbox_env, mode):
    """Printing a TLS Secret's .data exits 3 with no report; so does an exception holding the Secret."""
    from pathlib import Path

    from click.testing import CliRunner

    from runbooks.cli import main

    fixtures = Path(__file__).parent / "fixtures" / "notebooks"
    result = CliRunner().invoke(main, [
        "--project-dir", str(sandbox_env), "--notebooks-dir", str(fixtures), "run", "leak-tls",
        "--env", "sandbox", "--no-progress", "-p", "mode", mode], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    run_dir = next((sandbox_env / "outputs" / "sandbox" / "leak-tls").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "leaked" and summary["secret_scan"]["clean"] is False
    assert not (run_dir / "report.html").exists()
    for text in (result.output, (run_dir / "summary.json").read_text(), (run_dir / "leak-tls.ipynb").read_text()):
        assert sec.encoded_key(sec.fold(text)) is None  # the key is gone (its certificate may stay)


def test_vault_values_are_known_to_the_scan(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import yaml

    from runbooks import deploy, execute

    monkeypatch.setenv("RB_TEST_VAULT_PASSWORD", "vault-pass-0123")
    (tmp_path / "vault.yml").write_text(deploy.encrypt_vault(yaml.safe_dump({"DB_URL": "postgres://u:pw-0123@db/x"}),
                                                             "vault-pass-0123"))
    prepared = SimpleNamespace(project=SimpleNamespace(root=tmp_path), validated=SimpleNamespace(
        vault_file="vault.yml", vault_password_env="RB_TEST_VAULT_PASSWORD"))
    found = execute.vault_secrets(prepared)
    assert [s.kind for s in found] == ["vault value DB_URL"]
    assert "vault value DB_URL" in kinds(base64.b64encode(b"postgres://u:pw-0123@db/x").decode(), found)
    monkeypatch.delenv("RB_TEST_VAULT_PASSWORD")
    assert execute.vault_secrets(prepared) == []  # cannot decrypt: nothing the run could print
