"""certs on plain data: parsing, chain and key checks, replacement validation, inventory findings."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from runbooks import certinventory, certs, errors, health, rotation
from runbooks.errors import InvalidInput
from runbooks.parameters import validate_params
from runbooks_sandbox import pki

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def ca():
    root = pki.new_ca("Test Root", not_before=NOW - 400 * DAY, not_after=NOW + 4000 * DAY)
    inter = pki.issue(root, common_name="Test Intermediate", not_before=NOW - 300 * DAY,
                      not_after=NOW + 1000 * DAY, key_type="ec", is_ca=True, path_length=0)
    return root, inter


def leaf(ca, host="a.example.com", *, days_left=60, lifetime=90, sans=None, key=None, key_type="ec"):
    not_after = NOW + days_left * DAY
    not_before = min(not_after - lifetime * DAY, NOW - DAY)
    return pki.issue(ca, common_name=host, dns_names=sans or [host], not_before=not_before,
                     not_after=not_after, key_type=key_type, key=key)


def secret(name, cert_pem, key_pem, ns="app", ca_pem=None, annotations=None):
    data = {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}
    if ca_pem:
        data["ca.crt"] = base64.b64encode(ca_pem).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {},
                         "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": data}


def ingress(name, host, secret_name, ns="app"):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"tls": [{"hosts": [host], "secretName": secret_name}],
                     "rules": [{"host": host, "http": {"paths": [{"path": "/", "backend": {
                         "service": {"name": "web", "port": {"number": 80}}}}]}}]}}


def certificate(name, secret_name, hosts, ns="app", *, ready=("True", "Ready", "up to date"), issuing=None,
                renewal=NOW + 30 * DAY, revision=3):
    conds = [{"type": "Ready", "status": ready[0], "reason": ready[1], "message": ready[2],
              "lastTransitionTime": "2026-05-01T00:00:00Z"}]
    if issuing:
        conds.append({"type": "Issuing", "status": issuing[0], "reason": issuing[1], "message": issuing[2],
                      "lastTransitionTime": issuing[3]})
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"secretName": secret_name, "dnsNames": hosts,
                     "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt-prod"}},
            "status": {"conditions": conds, "revision": revision,
                       "renewalTime": renewal.strftime("%Y-%m-%dT%H:%M:%SZ")}}


# -- parsing and checks -------------------------------------------------------------------


def test_describe_facts(ca):
    _, inter = ca
    ck = leaf(inter, "shop.example.com", sans=["shop.example.com", "www.shop.example.com"])
    info = certs.parse_chain(ck.cert_pem + inter.cert_pem)
    assert [i.common_name for i in info] == ["shop.example.com", "Test Intermediate"]
    first = info[0]
    assert first.dns_names == ["shop.example.com", "www.shop.example.com"]
    assert first.sha256 == ck.cert.fingerprint(hashes.SHA256()).hex()
    assert (first.key_type, first.key_size, first.signature_algorithm) == ("EC secp256r1", 256, "sha256")
    assert first.not_after == NOW + 60 * DAY and not first.is_ca and not first.self_signed
    assert info[1].is_ca


def test_key_matches_rsa_and_ec(ca):
    _, inter = ca
    rsa_leaf = leaf(inter, key=pki.pooled_key("rsa", 2048, 0))
    ec_leaf = leaf(inter)
    assert certs.key_matches(rsa_leaf.cert_pem, rsa_leaf.key_pem)
    assert certs.key_matches(ec_leaf.cert_pem, ec_leaf.key_pem)
    assert not certs.key_matches(rsa_leaf.cert_pem, ec_leaf.key_pem)
    assert not certs.key_matches(ec_leaf.cert_pem, b"garbage")


def test_chain_order_and_completeness(ca):
    root, inter = ca
    ck = leaf(inter)
    load = x509.load_pem_x509_certificates
    assert certs.check_chain(load(ck.cert_pem + inter.cert_pem)) == certs.ChainCheck(True, True)
    assert certs.check_chain(load(ck.cert_pem + inter.cert_pem + root.cert_pem)).complete
    out_of_order = certs.check_chain(load(inter.cert_pem + ck.cert_pem))
    assert not out_of_order.in_order and "leaf must come first" in out_of_order.problem
    alone = certs.check_chain(load(ck.cert_pem))
    assert alone.in_order and not alone.complete and "Test Intermediate" in alone.problem
    # a leaf issued directly by a root the Secret's ca.crt holds is complete
    direct = pki.issue(root, common_name="b.example.com", dns_names=["b.example.com"],
                       not_before=NOW - DAY, not_after=NOW + DAY, key_type="ec")
    assert certs.check_chain(load(direct.cert_pem), [root.cert]).complete
    other = pki.new_ca("Other", not_before=NOW - DAY, not_after=NOW + DAY)
    wrong = certs.check_chain(load(ck.cert_pem + other.cert_pem))
    assert not wrong.in_order and "did not issue" in wrong.problem


@pytest.mark.parametrize("host, sans, covered", [
    ("a.example.com", ["a.example.com"], True),
    ("A.Example.com.", ["a.example.com"], True),
    ("x.example.com", ["*.example.com"], True),
    ("x.y.example.com", ["*.example.com"], False),
    ("example.com", ["*.example.com"], False),
    ("b.example.com", ["a.example.com"], False),
])
def test_host_covered(host, sans, covered):
    assert certs.host_covered(host, sans) is covered


def test_health_uses_the_same_expiry_rule(ca):
    _, inter = ca
    s = secret("soon", leaf(inter, days_left=3).cert_pem, b"")
    [finding] = health.check_tls_secrets([s], now=NOW).findings
    shared = certs.expiry_finding("app", "soon", 3.0, NOW + 3 * DAY, "x", ["a.example.com"],
                                  warning_days=30, critical_days=7)
    assert (finding.id, finding.severity, finding.title) == (shared.id, shared.severity, shared.title)


# -- replacement files ------------------------------------------------------------------------


def test_good_replacement_passes(ca):
    root, inter = ca
    new = leaf(inter, "pay.example.com", days_left=300)
    info, chain = rotation.validate_replacement(new.cert_pem + inter.cert_pem, new.key_pem, root.cert_pem,
                                             hosts=["pay.example.com"], current_not_after=NOW + 10 * DAY, now=NOW)
    assert info.sha256 == new.cert.fingerprint(hashes.SHA256()).hex() and len(chain) == 2


@pytest.mark.parametrize("case, check", [
    ("garbage", "PEM"),
    ("key-garbage", "PEM"),
    ("out-of-order", "chain order"),
    ("wrong-key", "key matches"),
    ("no-intermediate", "chain complete"),
    ("expired", "not expired"),
    ("not-later", "later notAfter"),
    ("sans", "SANs cover the hosts"),
])
def test_bad_replacement_names_the_failed_check(ca, case, check):
    root, inter = ca
    good = leaf(inter, "pay.example.com", days_left=300)
    other = leaf(inter, "pay.example.com", days_left=300)
    cert_pem, key_pem, ca_pem = good.cert_pem + inter.cert_pem, good.key_pem, root.cert_pem
    current = NOW + 10 * DAY
    if case == "garbage":
        cert_pem = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    elif case == "key-garbage":
        key_pem = b"hello"
    elif case == "out-of-order":
        cert_pem = inter.cert_pem + good.cert_pem
    elif case == "wrong-key":
        key_pem = other.key_pem
    elif case == "no-intermediate":
        cert_pem, ca_pem = good.cert_pem, None
    elif case == "expired":
        old = leaf(inter, "pay.example.com", days_left=-1)
        cert_pem, key_pem = old.cert_pem + inter.cert_pem, old.key_pem
    elif case == "not-later":
        current = NOW + 400 * DAY
    elif case == "sans":
        wrong = leaf(inter, "other.example.com", days_left=300)
        cert_pem, key_pem = wrong.cert_pem + inter.cert_pem, wrong.key_pem
    with pytest.raises(InvalidInput) as info:
        rotation.validate_replacement(cert_pem, key_pem, ca_pem, hosts=["pay.example.com"], current_not_after=current,
                                   now=NOW, target="payments/payments-tls")
    assert f"failed the check '{check}'" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


# -- inventory and findings ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(ca):
    """One object per finding kind, plus a healthy one."""
    root, inter = ca
    ok = leaf(inter, "ok.example.com")
    soon = leaf(inter, "soon.example.com", days_left=20)
    gone = leaf(inter, "gone.example.com", days_left=-1)
    self_signed = leaf(None, "pay.example.com", days_left=300)
    internal = leaf(None, "tool.internal", days_left=300)
    mismatch_a, mismatch_b = leaf(inter, "mix.example.com"), leaf(inter, "mix.example.com")
    weak = pki.issue(inter, common_name="weak.example.com", dns_names=["weak.example.com"],
                     not_before=NOW - DAY, not_after=NOW + 80 * DAY, key_type="rsa", key_size=2048)
    uncovered = leaf(inter, "one.example.com")
    secrets = [
        secret("ok-tls", ok.cert_pem + inter.cert_pem, ok.key_pem, ca_pem=root.cert_pem,
               annotations={certs.CM_CERTIFICATE_NAME: "ok"}),
        secret("soon-tls", soon.cert_pem + inter.cert_pem, soon.key_pem),
        secret("gone-tls", gone.cert_pem + inter.cert_pem, gone.key_pem),
        secret("pay-tls", self_signed.cert_pem, self_signed.key_pem),
        secret("tool-tls", internal.cert_pem, internal.key_pem),
        secret("mix-tls", mismatch_a.cert_pem + inter.cert_pem, mismatch_b.key_pem),
        secret("order-tls", inter.cert_pem + ok.cert_pem, ok.key_pem),
        secret("alone-tls", ok.cert_pem, ok.key_pem),
        secret("weak-tls", weak.cert_pem + inter.cert_pem, weak.key_pem),
        secret("uncovered-tls", uncovered.cert_pem + inter.cert_pem, uncovered.key_pem),
        secret("served-tls", ok.cert_pem + inter.cert_pem, ok.key_pem),
        {"metadata": {"name": "opaque", "namespace": "app"}, "type": "Opaque", "data": {}},
        {**secret("ok-tls-backup-1", ok.cert_pem, ok.key_pem),
         "metadata": {"name": "ok-tls-backup-1", "namespace": "app", "labels": {certs.BACKUP_OF: "ok-tls"}}},
    ]
    certificates = [
        certificate("ok", "ok-tls", ["ok.example.com"]),
        certificate("late", "soon-tls", ["soon.example.com"], renewal=NOW - 5 * DAY,
                    issuing=("False", "Failed", "AccessDenied on Route 53", "2026-05-31T00:00:00Z")),
        certificate("stuck", "stuck-tls", ["stuck.example.com"], ready=("False", "DoesNotExist", "no Secret"),
                    issuing=("True", "DoesNotExist", "no Secret", "2026-05-28T00:00:00Z"), revision=0),
    ]
    challenges = [{"metadata": {"name": "stuck-1-2-3", "namespace": "app"},
                   "spec": {"dnsName": "stuck.example.com", "type": "DNS-01"},
                   "status": {"state": "pending", "presented": False, "reason": "AccessDenied: route53"}}]
    ingresses = [ingress("ok", "ok.example.com", "ok-tls"), ingress("pay", "pay.example.com", "pay-tls"),
                 ingress("tool", "tool.internal", "tool-tls"),
                 ingress("two", "two.example.com", "uncovered-tls"),
                 ingress("served", "ok.example.com", "served-tls")]
    inv = certinventory.build_inventory(secrets, certificates, [], ingresses, challenges, now=NOW)
    inv.served = {"ok.example.com": certs.Served("ok.example.com", sha256="0" * 64, not_after=NOW + 2 * DAY)}
    inv.probed = True
    return inv


def test_inventory_finds_each_planted_problem_and_nothing_else(planted):
    found = {f.id: f.severity for f in planted.findings(warning_days=30, critical_days=7)}
    assert found == {
        "tls-expiring/app/soon-tls": "warning",
        "tls-expired/app/gone-tls": "critical",
        "tls-self-signed/app/pay-tls": "warning",
        "tls-key-mismatch/app/mix-tls": "critical",
        "tls-chain-order/app/order-tls": "warning",
        "tls-key-mismatch/app/order-tls": "critical",  # the first certificate is what the key must match
        "tls-chain-incomplete/app/alone-tls": "warning",
        "tls-host-not-covered/app/two/two.example.com": "critical",
        "tls-served-mismatch/app/ok-tls": "critical",  # both share ok.example.com; the served one expires in 2 days
        "tls-served-mismatch/app/served-tls": "critical",
        "certificate-renewal-overdue/app/late": "warning",
        "certificate-not-ready/app/stuck": "critical",
    }


def test_stuck_certificate_names_the_failing_challenge(planted):
    stuck = next(f for f in planted.findings() if f.id == "certificate-not-ready/app/stuck")
    assert "stuck issuing for 4 days" in stuck.title
    assert "AccessDenied: route53" in stuck.detail and "No Secret stuck-tls" in stuck.detail
    late = next(f for f in planted.findings() if f.id.startswith("certificate-renewal-overdue"))
    assert "AccessDenied on Route 53" in late.detail


def test_weak_rsa_1024_is_flagged(ca):
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

    _, inter = ca
    key = rsa_keys.generate_private_key(public_exponent=65537, key_size=1024)
    builder = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string("CN=old.example.com"))
               .issuer_name(x509.Name.from_rfc4514_string("CN=old.example.com")).public_key(key.public_key())
               .serial_number(1).not_valid_before(NOW - DAY).not_valid_after(NOW + 100 * DAY))
    cert = builder.sign(key, hashes.SHA256())  # cryptography no longer signs with SHA-1
    pem = cert.public_bytes(serialization.Encoding.PEM)
    inv = certinventory.build_inventory([secret("old-tls", pem, pki.key_pem(key))], now=NOW)
    weak = next(f for f in inv.findings() if f.id == "tls-weak-key/app/old-tls")
    assert "1024 bits" in weak.detail


def test_table_and_findings_hold_no_key_material(planted):
    text = planted.table().to_csv() + planted.certificates_table().to_csv() + repr(
        [f.to_json() for f in planted.findings()]) + repr(planted)
    assert "PRIVATE KEY" not in text and "LS0tLS1CRUdJTiBFQyBQUklWQVRF" not in text
    states = planted.states()
    assert states[("app", "pay-tls")] == ["self-signed"] and ("app", "tool-tls") not in states
    table = planted.table(states).set_index("name")
    assert table.loc["stuck-tls", "state"] == "stuck: not issued"
    assert table.loc["ok-tls", "state"] == "served ≠ stored" and "DIFFERENT" in table.loc["ok-tls", "served"]
    assert "ok-tls-backup-1" not in table.index  # backups are not inventoried


# -- parameters and selection -----------------------------------------------------------------


@pytest.mark.parametrize("values, problem", [
    ({"certificates": ["shop"]}, "not 'namespace/name'"),
    ({"replacement_files": {"Bad/x": {"cert": "a", "key": "b"}}}, "replacement_files key"),
    ({"replacement_files": {"a/b": {"cert": "a"}}}, "key"),
    ({"ingress_url": "http://x"}, "ingress_url"),
    ({"warning_days": 5, "critical_days": 10}, "critical_days"),
    ({"rollback_backup": "a/b", "certificates": ["a/c"]}, "rollback_backup"),
    ({"private_key": "x"}, "credential"),
])
def test_parameter_model_refuses_bad_values(values, problem):
    with pytest.raises(InvalidInput) as info:
        validate_params(rotation.CertificateRotationParams, values)
    assert problem in str(info.value)


def test_select_targets(planted):
    assert rotation.select_targets(planted, ["app/late"]) == ["app/soon-tls"]  # a Certificate means its Secret
    assert rotation.select_targets(planted, [], expiring_within_days=25) == ["app/gone-tls", "app/soon-tls"]
    with pytest.raises(errors.PlanInvalid) as info:
        rotation.select_targets(planted, ["app/nope"])
    assert "app/nope" in str(info.value) and "app/ok-tls" in str(info.value)


def test_split_endpoint():
    assert certs.split_endpoint("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert certs.split_endpoint("lb.example.com") == ("lb.example.com", 443)
    assert certs.split_endpoint("[::1]:9443") == ("::1", 9443)
    assert certs.split_endpoint("https://127.0.0.1:18443/") == ("127.0.0.1", 18443)
    with pytest.raises(InvalidInput):
        certs.split_endpoint("http://x")  # plain HTTP cannot serve a certificate


def test_probe_reports_unreachable_hosts_quickly():
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    served = certs.probe_served([f"h{i}.example.com" for i in range(20)], f"127.0.0.1:{port}", timeout=2,
                                concurrency=8)
    assert time.monotonic() - start < 5
    assert len(served) == 20 and all(s.error and not s.sha256 for s in served.values())


def test_timeline_chart_places_each_certificate(planted):
    from runbooks import charts

    fig = charts.cert_timeline_chart(planted.expiries(), days=90, now=NOW)
    names = {n for trace in fig.data for n in trace.y}
    assert {"app/ok-tls", "app/gone-tls", "app/pay-tls"} <= names
    stored, served = fig.data
    assert stored.name == "stored" and served.name == "served"
    assert "triangle-right" in stored.marker.symbol  # pay-tls expires after the 90-day window
    assert charts.cert_timeline_chart(planted.expiries().iloc[0:0]).layout.annotations  # "No readable ..."
