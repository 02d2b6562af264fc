"""Rotation backups never keep the old private key where it would be shown: the run directory's
backup holds digests only, including the key kubectl left in last-applied-configuration, and the
in-cluster backup Secret copies none of the old Secret's annotations."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runbooks import plans, rotationtargets
from runbooks import secrets as sec


def tls_secret() -> tuple[dict, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pay.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=5))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    data = {"tls.crt": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            "tls.key": base64.b64encode(key_pem.encode()).decode()}
    applied = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "pay-tls", "namespace": "payments"}, "data": data}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "pay-tls", "namespace": "payments", "resourceVersion": "12",
                           "creationTimestamp": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "annotations": {sec.LAST_APPLIED: json.dumps(applied), "team": "payments"}},
              "data": data}
    return secret, key_pem


def leaks(text: str) -> list:
    return sec.scan_text(text, [], "backup")


def test_the_run_directory_backup_holds_no_key(tmp_path):
    secret, key_pem = tls_secret()
    change = plans.Change(target=rotationtargets.SECRET_TARGET, operation="patch", kind="Secret",
                          namespace="payments", name="pay-tls", body={"data": {}})
    audit = plans.AuditLog(tmp_path, runbook="certificate-rotation", run_id="r1")
    audit.backup(change, secret)
    (backup,) = (tmp_path / "backups").iterdir()
    text = backup.read_text()
    assert key_pem not in text and secret["data"]["tls.key"] not in text
    assert leaks(text) == []  # nor any encoding of it: not in data, not in last-applied-configuration
    stored = json.loads(text)
    assert stored["metadata"]["annotations"][sec.LAST_APPLIED] == sec.redacted_digest(
        secret["metadata"]["annotations"][sec.LAST_APPLIED])  # comparable, and no key
    assert stored["data"]["tls.key"] == sec.redacted_digest(secret["data"]["tls.key"])  # still comparable
    assert oct(backup.stat().st_mode & 0o777) == "0o600"


def test_the_in_cluster_backup_secret_copies_no_annotation():
    secret, _ = tls_secret()
    change = rotationtargets.backup_change(secret, rotationtargets.backup_name(secret))
    annotations = change.body["metadata"]["annotations"]
    assert sec.LAST_APPLIED not in annotations and "team" not in annotations
    assert set(annotations) == {rotationtargets.BACKUP_SHA, rotationtargets.BACKUP_TIME, rotationtargets.BACKUP_TYPE}
    # what the plan shows of it (summary.json, audit.jsonl, the report) holds no key either
    assert leaks(json.dumps(change.public())) == []
    assert all(d.get("from", sec.REDACTED) == sec.REDACTED for d in change.diff)
