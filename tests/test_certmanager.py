"""The sandbox cert-manager: planted states stay put, manual renewals issue, stuck stays stuck."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509 import verification

from runbooks import kube
from runbooks.errors import NotFound
from runbooks_sandbox.certmanager import CertManager, backoff
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("certmanager"), "default", tick=0.5)
    sandbox.add(CertManager(sandbox, tick=0.2))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def api(box):
    return kube.connect(str(box.kubeconfig), "sandbox")


def cert(api, name, ns="shop"):
    return kube.get_object(api, "certificates", ns, name)


def conds(obj):
    return {c["type"]: c for c in obj["status"].get("conditions") or []}


def chain(api, name, ns="shop"):
    data = kube.get_object(api, "secrets", ns, name)["data"]
    return (x509.load_pem_x509_certificates(base64.b64decode(data["tls.crt"])),
            x509.load_pem_x509_certificates(base64.b64decode(data["ca.crt"])))


def renew(api, name, ns="shop"):
    """What `cmctl renew` does: Issuing=True through the status subresource."""
    obj = cert(api, name, ns)
    conditions = [c for c in obj["status"].get("conditions") or [] if c["type"] != "Issuing"]
    conditions.append({"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                       "message": "Certificate re-issuance manually triggered",
                       "lastTransitionTime": "2026-01-01T00:00:00Z"})
    kube.request(api, "PATCH", f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates/{name}/status",
                   body={"status": {"conditions": conditions}}, content_type="application/merge-patch+json")


def test_backoff_doubles_from_one_hour_to_32():
    assert [backoff(n) for n in (0, 1, 2, 4)] == [timedelta(0), timedelta(hours=1), timedelta(hours=2),
                                                  timedelta(hours=8)]
    assert backoff(12) == timedelta(hours=32)


def test_planted_states_stay_put(api):
    """cart and checkout are backing off after failures; legacy-api is stuck on its challenge."""
    import time

    time.sleep(1.0)  # a few controller passes
    cart = cert(api, "cart-tls")
    assert cart["status"]["revision"] == 5 and conds(cart)["Issuing"]["reason"] == "Failed"
    checkout = cert(api, "checkout-tls")
    assert conds(checkout)["Ready"]["reason"] == "Expired" and checkout["status"]["revision"] == 5
    stuck = cert(api, "legacy-api-tls")
    assert conds(stuck)["Issuing"]["status"] == "True" and "revision" not in stuck["status"]
    names = [r["metadata"]["name"] for r in kube.iter_objects(api, "certificaterequests", "shop")]
    assert names == ["legacy-api-tls-1"]
    assert cert(api, "shop-frontend-tls")["status"]["revision"] == 6


def test_manual_renewal_issues_a_new_revision_from_the_same_ca(api):
    old_leaf = chain(api, "cart-tls")[0][0]
    renew(api, "cart-tls")
    obj = wait_for(lambda: (c := cert(api, "cart-tls"))["status"].get("revision") == 6
                   and (conds(c).get("Ready") or {}).get("status") == "True" and c, what="revision 6, Ready")
    assert conds(obj)["Ready"]["status"] == "True" and "Issuing" not in conds(obj)
    assert "failedIssuanceAttempts" not in obj["status"]
    leaves, roots = chain(api, "cart-tls")
    new = leaves[0]
    assert new.serial_number != old_leaf.serial_number
    assert obj["status"]["notAfter"] == new.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert new.not_valid_after_utc - new.not_valid_before_utc == timedelta(days=90)
    assert new.issuer == old_leaf.issuer  # R11 (sandbox): the scenario's CA signed it
    store = verification.Store(roots)
    verifier = (verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("cart.shop.example.com")))
    verifier.verify(new, leaves[1:])
    request = kube.get_object(api, "certificaterequests", "shop", "cart-tls-6")
    assert conds(request)["Ready"]["reason"] == "Issued"
    reasons = [e["reason"] for e in kube.events(api, "shop", object_name="cart-tls", kind="Certificate")]
    assert "Requested" in reasons and "Issuing" in reasons


def test_deleted_secret_is_issued_again(api, box):
    kube.request(api, "DELETE", "/api/v1/namespaces/shop/secrets/shop-frontend-tls")
    obj = wait_for(lambda: (c := cert(api, "shop-frontend-tls"))["status"].get("revision") == 7
                   and (conds(c).get("Ready") or {}).get("status") == "True" and c,
                   what="re-issue after the Secret was deleted, Ready")
    assert conds(obj)["Ready"]["status"] == "True"
    leaves, _ = chain(api, "shop-frontend-tls")
    sans = leaves[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["shop.example.com"]
    secret = kube.get_object(api, "secrets", "shop", "shop-frontend-tls")
    assert secret["metadata"]["annotations"]["cert-manager.io/issuer-name"] == "letsencrypt-prod"


def test_stuck_certificate_stays_stuck_when_renewed(api):
    import time

    renew(api, "legacy-api-tls")
    time.sleep(1.0)
    stuck = cert(api, "legacy-api-tls")
    assert conds(stuck)["Issuing"]["status"] == "True" and "revision" not in stuck["status"]
    assert conds(stuck)["Ready"]["reason"] == "DoesNotExist"
    with pytest.raises(NotFound):
        kube.get_object(api, "secrets", "shop", "legacy-api-tls")
