"""The sandbox cert-manager: planted states stay put, manual renewals issue, stuck stays stuck."""

from __future__ import annotations

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
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def chain(api, name, ns="shop"):
    keys = kube.read_secret_keys(api, ns, name, kube.CERTIFICATE_KEYS)
    return (x509.load_pem_x509_certificates(keys.certificate("tls.crt")),
            x509.load_pem_x509_certificates(keys.certificate("ca.crt")))


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


def passes(box, count=2):
    """Wait until cert-manager has made ``count`` more passes over every Certificate."""
    (manager,) = [a for a in box.addons if isinstance(a, CertManager)]
    start = manager.passes
    wait_for(lambda: manager.passes >= start + count, what=f"{count} cert-manager passes")


def test_planted_states_stay_put(api, box):
    """cart and checkout are backing off after failures; legacy-api is stuck on its challenge."""
    passes(box)
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


def test_stuck_certificate_stays_stuck_when_renewed(api, box):
    renew(api, "legacy-api-tls")
    passes(box)
    stuck = cert(api, "legacy-api-tls")
    assert conds(stuck)["Issuing"]["status"] == "True" and "revision" not in stuck["status"]
    assert conds(stuck)["Ready"]["reason"] == "DoesNotExist"
    with pytest.raises(NotFound):
        kube.get_object(api, "secrets", "shop", "legacy-api-tls")


# ---- ingress-shim: annotated Ingresses get their Certificates --------------------------------------

SCENARIO_INGRESS_CERTS = ("shop-frontend-tls", "cart-tls", "checkout-tls", "assets-tls")


def ingress(name, tls, annotations, ns, labels=None):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations, "labels": labels or {}},
            "spec": {"ingressClassName": "nginx", "tls": tls,
                     "rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                         "service": {"name": name, "port": {"number": 80}}}}]}}
                               for entry in tls for h in entry.get("hosts") or []]}}


def create_ingress(api, body):
    ns = body["metadata"]["namespace"]
    return kube.request(api, "POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses", body=body)


def ingress_path(ns, name):
    return f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}"


def find_cert(api, ns, name):
    try:
        return cert(api, name, ns)
    except NotFound:
        return None


def revision(obj):
    return (obj.get("status") or {}).get("revision")


def ingress_events(api, ns, name):
    return [(e["reason"], e["message"]) for e in kube.events(api, ns, object_name=name, kind="Ingress")]


@pytest.fixture
def ns(api):
    import uuid

    name = f"t-shim-{uuid.uuid4().hex[:6]}"  # sorts after the scenario's namespaces (the shim syncs in order)
    kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    yield name
    kube.request(api, "DELETE", f"/api/v1/namespaces/{name}")


def test_ingress_shim_leaves_the_scenario_certificates_as_they_are(api, ns):
    """The scenario's Certificates are what ingress-shim made of their Ingresses: nothing to update."""
    # the shim syncs every Ingress when it starts, in (namespace, name) order, and each one it hears
    # of after: once an Ingress created now in a later namespace has its Certificate, the scenario's
    # Ingresses have been synced too
    create_ingress(api, ingress("probe", [{"hosts": ["probe.example.com"], "secretName": "probe-tls"}],
                                {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}, ns))
    wait_for(lambda: find_cert(api, ns, "probe-tls"), what="the shim's pass over a new Ingress")
    for name in SCENARIO_INGRESS_CERTS:
        obj = cert(api, name)
        assert obj["metadata"]["generation"] == 1, name
    reasons = {r for ing in ("frontend", "cart", "checkout", "assets") for r, _ in ingress_events(api, "shop", ing)}
    assert not reasons & {"CreateCertificate", "UpdateCertificate", "DeleteCertificate", "BadConfig"}
    assert find_cert(api, "payments", "payments-tls") is None  # its Ingress has no cert-manager annotation


def test_an_annotated_ingress_gets_an_owned_certificate_that_is_issued(api, ns):
    created = create_ingress(api, ingress("web", [{"hosts": ["web.example.com", "www.example.com"],
                                                   "secretName": "web-tls"}],
                                          {"cert-manager.io/cluster-issuer": "letsencrypt-prod",
                                           "cert-manager.io/common-name": "web.example.com",
                                           "cert-manager.io/duration": "720h",
                                           "cert-manager.io/renew-before": "240h"}, ns, labels={"app": "web"}))
    obj = wait_for(lambda: (c := find_cert(api, ns, "web-tls")) and conds(c).get("Ready", {}).get("status") == "True"
                   and c, what="the Certificate web-tls issued")
    assert obj["metadata"]["ownerReferences"] == [{
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "web",
        "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["spec"] == {"dnsNames": ["web.example.com", "www.example.com"], "secretName": "web-tls",
                           "issuerRef": {"name": "letsencrypt-prod", "kind": "ClusterIssuer",
                                         "group": "cert-manager.io"},
                           "usages": ["digital signature", "key encipherment"], "commonName": "web.example.com",
                           "duration": "720h0m0s", "renewBefore": "240h0m0s"}
    leaves, _ = chain(api, "web-tls", ns)
    leaf = leaves[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=30)
    assert sorted(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.DNSName)) == ["web.example.com", "www.example.com"]
    assert "R11 (sandbox)" in leaf.issuer.rfc4514_string()  # the scenario's letsencrypt-prod CA
    assert ("CreateCertificate", 'Successfully created Certificate "web-tls"') in ingress_events(api, ns, "web")


def test_changed_hosts_update_the_certificate_and_a_deleted_ingress_takes_it_along(api, ns):
    create_ingress(api, ingress("app", [{"hosts": ["a.example.com"], "secretName": "app-tls"},
                                        {"hosts": ["b.example.com"], "secretName": "app-b-tls"}],
                                {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}, ns))
    wait_for(lambda: find_cert(api, ns, "app-tls") and find_cert(api, ns, "app-b-tls"), what="two Certificates")
    wait_for(lambda: revision(cert(api, "app-tls", ns)) == 1, what="app-tls issued")
    kube.request(api, "PATCH", ingress_path(ns, "app"), content_type="application/merge-patch+json",
                   body={"spec": {"tls": [{"hosts": ["a.example.com", "c.example.com"], "secretName": "app-tls"}]}})
    updated = wait_for(lambda: revision(c := cert(api, "app-tls", ns)) == 2 and c,
                       what="app-tls re-issued for the new hosts")
    assert updated["spec"]["dnsNames"] == ["a.example.com", "c.example.com"]
    assert conds(updated)["Ready"]["status"] == "True"
    leaves, _ = chain(api, "app-tls", ns)
    assert sorted(leaves[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.DNSName)) == ["a.example.com", "c.example.com"]
    wait_for(lambda: find_cert(api, ns, "app-b-tls") is None, what="the unrequired Certificate deleted")
    events = ingress_events(api, ns, "app")
    assert ("UpdateCertificate", 'Successfully updated Certificate "app-tls"') in events
    assert ("DeleteCertificate", 'Successfully deleted unrequired Certificate "app-b-tls"') in events
    # a Certificate deleted by hand comes back; the Ingress deleted takes it along
    kube.request(api, "DELETE", f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates/app-tls")
    wait_for(lambda: find_cert(api, ns, "app-tls"), what="app-tls created again")
    kube.request(api, "DELETE", ingress_path(ns, "app"))
    wait_for(lambda: find_cert(api, ns, "app-tls") is None, what="app-tls garbage-collected with its Ingress")


def test_issuer_annotations_and_what_is_refused(api, ns):
    issuer = {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "local", "namespace": ns},
              "spec": {"selfSigned": {}}}
    kube.request(api, "POST", f"/apis/cert-manager.io/v1/namespaces/{ns}/issuers", body=issuer)
    create_ingress(api, ingress("own", [{"hosts": ["own.example.com"], "secretName": "own-tls"}],
                                {"cert-manager.io/issuer": "local", "cert-manager.io/issuer-kind": "AwsPCAIssuer",
                                 "cert-manager.io/issuer-group": "awspca.cert-manager.io"}, ns))
    obj = wait_for(lambda: find_cert(api, ns, "own-tls"), what="own-tls")
    assert obj["spec"]["issuerRef"] == {"name": "local", "kind": "AwsPCAIssuer", "group": "awspca.cert-manager.io"}
    # both issuer annotations: refused with a Warning; tls-acme without a default issuer: ignored
    create_ingress(api, ingress("both", [{"hosts": ["both.example.com"], "secretName": "both-tls"}],
                                {"cert-manager.io/issuer": "local",
                                 "cert-manager.io/cluster-issuer": "letsencrypt-prod"}, ns))
    create_ingress(api, ingress("acme", [{"hosts": ["acme.example.com"], "secretName": "acme-tls"}],
                                {"kubernetes.io/tls-acme": "true"}, ns))
    message = wait_for(lambda: next((m for r, m in ingress_events(api, ns, "both") if r == "BadConfig"), None),
                       what="a BadConfig event")
    assert "may not be set" in message
    assert find_cert(api, ns, "both-tls") is None and find_cert(api, ns, "acme-tls") is None
    # a Certificate the Ingress does not own is never changed
    mine = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "mine-tls", "namespace": ns},
            "spec": {"secretName": "mine-tls", "dnsNames": ["other.example.com"],
                     "issuerRef": {"name": "letsencrypt-prod", "kind": "ClusterIssuer"}}}
    kube.request(api, "POST", f"/apis/cert-manager.io/v1/namespaces/{ns}/certificates", body=mine)
    create_ingress(api, ingress("mine", [{"hosts": ["mine.example.com"], "secretName": "mine-tls"}],
                                {"cert-manager.io/cluster-issuer": "letsencrypt-prod"}, ns))
    wait_for(lambda: revision(find_cert(api, ns, "mine-tls")) == 1, what="mine-tls issued")
    assert cert(api, "mine-tls", ns)["spec"]["dnsNames"] == ["other.example.com"]
    assert "ownerReferences" not in cert(api, "mine-tls", ns)["metadata"]


def test_tls_acme_uses_the_default_issuer_configured_on_cert_manager(api, ns):
    """cert-manager's --default-issuer-* flags, set on its Deployment, make kubernetes.io/tls-acme work."""
    path = "/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager"
    original = kube.request(api, "GET", path)["spec"]["template"]["spec"]["containers"][0]["args"]

    def set_args(args):
        kube.request(api, "PATCH", path, content_type="application/json-patch+json", body=[
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args}])

    set_args(original + ["--default-issuer-name=letsencrypt-prod", "--default-issuer-kind=ClusterIssuer",
                         "--default-issuer-group=cert-manager.io"])
    try:
        create_ingress(api, ingress("acme", [{"hosts": ["acme.example.com"], "secretName": "acme-tls"}],
                                    {"kubernetes.io/tls-acme": "true"}, ns))
        obj = wait_for(lambda: find_cert(api, ns, "acme-tls"), what="acme-tls from the default issuer")
        assert obj["spec"]["issuerRef"] == {"name": "letsencrypt-prod", "kind": "ClusterIssuer",
                                            "group": "cert-manager.io"}
    finally:
        set_args(original)
