"""The sandbox ingress endpoint: certificates by SNI as of the last reload, requests routed by Host."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid

import pytest

from runbooks import certs, kube, plans
from runbooks_sandbox.ingress import FAKE_CN, IngressEndpoint, host_matches
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("ingress"), "default", tick=0.5)
    endpoint = sandbox.add(IngressEndpoint(sandbox, poll=0.1))
    sandbox.start()
    yield sandbox, endpoint
    sandbox.stop()


@pytest.fixture(scope="module")
def api(box):
    return kube.connect(str(box[0].kubeconfig), "sandbox")


def stored(api, ns, name):
    return certs.read_tls_secret(kube.read_secret_keys(api, ns, name)).sha256


def https(endpoint, host, path="/"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", int(endpoint.address.split(":")[1]), context=ctx, timeout=5)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read()), resp


def test_host_matching():
    assert host_matches("*.example.com", "a.example.com")
    assert not host_matches("*.example.com", "a.b.example.com") and not host_matches("*.example.com", "example.com")
    assert host_matches("Shop.Example.com", "shop.example.com.")


def test_each_host_gets_its_secret_and_unknown_hosts_the_fake(box, api):
    _, endpoint = box
    for ns, name, host in (("shop", "shop-frontend-tls", "shop.example.com"),
                           ("shop", "cart-tls", "cart.shop.example.com"),
                           ("payments", "payments-tls", "pay.example.com")):
        assert certs.served_certificate(host, endpoint.address).sha256 == stored(api, ns, name)
    fake = certs.served_certificate("nobody.example.com", endpoint.address)
    assert FAKE_CN in fake.subject


def test_planted_previous_certificate_is_served(box, api):
    _, endpoint = box
    served = certs.served_certificate("assets.shop.example.com", endpoint.address)
    info = certs.read_tls_secret(kube.read_secret_keys(api, "shop", "assets-tls"))
    assert served.sha256 != info.sha256
    assert 2 < (served.not_after - info.leaf.not_before).days < 31  # issued one renewal interval earlier
    assert "R11 (sandbox)" in served.issuer  # same issuer as the stored one


def test_requests_route_to_a_ready_pod_of_the_backend(box):
    _, endpoint = box
    status, body, _ = https(endpoint, "cart.shop.example.com", "/api/items?x=1")
    assert status == 200 and body["service"] == "shop/cart" and body["pod"].startswith("cart-")
    assert body["host"] == "cart.shop.example.com" and body["path"] == "/api/items"
    pods = {https(endpoint, "shop.example.com")[1]["pod"] for _ in range(6)}
    assert len(pods) == 3  # round-robin over the 3 frontend pods
    assert https(endpoint, "nobody.example.com")[0] == 404


def test_plain_http_redirects_tls_hosts(box):
    _, endpoint = box
    port = int(endpoint.http_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/cart", headers={"Host": "shop.example.com"})
    resp = conn.getresponse()
    assert resp.status == 308 and resp.getheader("Location") == "https://shop.example.com/cart"


def test_service_without_endpoints_answers_503(box, api):
    _, endpoint = box
    ns = f"t-{uuid.uuid4().hex[:8]}"
    kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    kube.request(api, "POST", f"/api/v1/namespaces/{ns}/services", body={
        "metadata": {"name": "idle"}, "spec": {"selector": {"app": "idle"}, "ports": [{"port": 80}]}})
    kube.request(api, "POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses", body={
        "metadata": {"name": "idle"}, "spec": {"ingressClassName": "nginx", "rules": [{
            "host": f"{ns}.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "idle", "port": {"number": 80}}}}]}}]}})
    status, body, _ = https(endpoint, f"{ns}.example.com")
    assert status == 503 and "no ready endpoints" in body["error"]


def test_renewed_secret_is_served_only_after_a_controller_restart(box, api):
    _, endpoint = box
    before = certs.served_certificate("shop.example.com", endpoint.address).sha256
    # change the Secret behind the controller's back (cart's pair: any other certificate will do)
    box_, secrets = box[0], box[0].registry.by_kind_any_version("Secret")  # the values: reads are redacted
    frontend = box_.store.find(secrets, "shop", "shop-frontend-tls")
    cart = box_.store.find(secrets, "shop", "cart-tls")
    kube.request(api, "PATCH", "/api/v1/namespaces/shop/secrets/shop-frontend-tls",
                   body={"data": cart["data"]}, content_type="application/merge-patch+json")
    assert certs.served_certificate("shop.example.com", endpoint.address).sha256 == before  # not reloaded
    reloads = endpoint.reloads
    kube.request(api, "PATCH", "/apis/apps/v1/namespaces/ingress-nginx/deployments/ingress-nginx-controller",
                   body={"spec": {"template": {"metadata": {"annotations": {plans.RESTARTED_AT: "now"}}}}},
                   content_type="application/merge-patch+json")
    wait_for(lambda: endpoint.reloads > reloads, what="a reload after the controller restart")
    assert certs.served_certificate("shop.example.com", endpoint.address).sha256 == stored(api, "shop", "cart-tls")
    assert certs.served_certificate("assets.shop.example.com", endpoint.address).sha256 == \
        stored(api, "shop", "assets-tls")  # the planted stale certificate is gone too
    kube.request(api, "PATCH", "/api/v1/namespaces/shop/secrets/shop-frontend-tls",
                   body={"data": frontend["data"]}, content_type="application/merge-patch+json")


def test_no_sni_gets_the_fake_certificate(box):
    _, endpoint = box
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", int(endpoint.address.split(":")[1])), timeout=5) as sock, \
            ctx.wrap_socket(sock) as tls:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(tls.getpeercert(True))
    assert FAKE_CN in cert.subject.rfc4514_string()


def test_planted_web_hosts_answer_as_ingress_nginx_would(box):
    _, endpoint = box
    wait_for(lambda: https(endpoint, "www.example.com")[0] == 200, timeout=30, what="www.example.com to answer")
    assert https(endpoint, "intranet.example.com")[0] == 404  # its IngressClass has no controller
    status, body, _ = https(endpoint, "promo.example.com")
    assert status == 200 and body["ingress"] == "web/promo"  # the older of the two Ingresses
    status, body, _ = https(endpoint, "newsletter.example.com")
    assert status == 503 and "no ready endpoints" in body["error"]  # targetPort names a port the pod lacks
    assert https(endpoint, "careers.example.com")[0] == 503  # scaled to 0


def test_path_types_and_named_target_ports(box, api):
    _, endpoint = box
    ns = f"t-{uuid.uuid4().hex[:8]}"
    host = f"{ns}.example.com"
    kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    for name, port_name in (("api", "http"), ("other", "web")):
        kube.request(api, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body={
            "metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                                                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                                                     "containers": [{"name": "c", "image": "example.com/c:1",
                                                                     "ports": [{"name": port_name,
                                                                                "containerPort": 8080}]}]}}}})
        kube.request(api, "POST", f"/api/v1/namespaces/{ns}/services", body={
            "metadata": {"name": name}, "spec": {"selector": {"app": name},
                                                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})

    def path(p, kind, service):
        return {"path": p, "pathType": kind, "backend": {"service": {"name": service, "port": {"name": "http"}}}}

    kube.request(api, "POST", f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses", body={
        "metadata": {"name": "paths"}, "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {
            "paths": [path("/api", "Prefix", "api"), path("/static", "ImplementationSpecific", "api"),
                      path("/other", "Exact", "other")]}}]}})
    wait_for(lambda: https(endpoint, host, "/api")[0] == 200, timeout=30, what="the api pod behind the Ingress")
    assert https(endpoint, host, "/api/v1")[0] == 200
    assert https(endpoint, host, "/apiv1")[0] == 404  # Prefix matches whole path elements
    assert https(endpoint, host, "/staticfiles/x.css")[0] == 200  # ImplementationSpecific: an nginx prefix
    assert https(endpoint, host, "/other/x")[0] == 404  # Exact
    # "other" targets port "http" but its container's port is named "web": the pod is no endpoint
    wait_for(lambda: kube.get_object(api, "deployments", ns, "other").get("status", {}).get("readyReplicas") == 1,
             timeout=30, what="the other pod to be ready")
    status, body, _ = https(endpoint, host, "/other")
    assert status == 503 and "no ready endpoints" in body["error"]
    eps = kube.get_object(api, "endpoints", ns, "other")
    assert not any(s.get("addresses") for s in eps.get("subsets") or [])
    slices = [s for s in kube.iter_objects(api, "endpointslices", ns)
              if s["metadata"]["labels"]["kubernetes.io/service-name"] == "other"]
    assert slices and all(not s.get("ports") for s in slices) and slices[0]["endpoints"]
