"""The default sandbox scenario: well-formed objects and exactly the planted facts runbooks rely on."""

from __future__ import annotations

import base64
import copy
import re
from datetime import UTC, datetime, timedelta

import jsonschema
import kubernetes_validate
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from runbooks_sandbox import scenario
from runbooks_sandbox.controllers import pod_template_hash
from runbooks_sandbox.scenario import list_scenarios, load_scenario, parse_duration

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DAY = timedelta(days=1)
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def objects():
    return load_scenario("default", now=NOW)


def find(objects, kind, name, namespace=None):
    matches = [
        obj for obj in objects
        if obj["kind"] == kind and obj["metadata"]["name"] == name
        and obj["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, f"{kind} {namespace}/{name}: found {len(matches)}"
    return matches[0]


def of_kind(objects, kind, namespace=None):
    return [obj for obj in objects if obj["kind"] == kind and (namespace is None or obj["metadata"].get("namespace") == namespace)]


def ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def secret_certs(secret, key="tls.crt"):
    return x509.load_pem_x509_certificates(base64.b64decode(secret["data"][key]))


# -- durations and catalogue ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("2h", timedelta(hours=2)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("1h30m", timedelta(minutes=90)),
        ("168h0m0s", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "3x", "1.5h", "-2h", "30m1h", "2 h", 30, None])
def test_parse_duration_rejects_bad_input(text):
    with pytest.raises(ValueError, match=r"invalid duration .*e\.g\. '30d'"):
        parse_duration(text)


def test_list_and_unknown_scenario():
    assert "default" in list_scenarios()
    with pytest.raises(ValueError, match=r"unknown sandbox scenario 'nope'; available: .*default"):
        load_scenario("nope", now=NOW)


def test_now_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        load_scenario(now=NOW.replace(tzinfo=None))


# -- shape of every object ----------------------------------------------------------


def test_every_object_is_well_formed(objects):
    seen: dict[tuple, dict] = {}
    updates = set()
    for obj in objects:
        assert isinstance(obj["apiVersion"], str) and isinstance(obj["kind"], str)
        meta = obj["metadata"]
        assert meta["name"]
        assert RFC3339.match(meta["creationTimestamp"]), meta
        assert ts(meta["creationTimestamp"]) <= NOW
        assert "sandbox" not in obj
        for key in ("uid", "resourceVersion", "generation"):
            assert key not in meta
        identity = (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if identity in seen:  # only a StatefulSet's update (sandbox.previousTemplate), once
            assert obj["kind"] == "StatefulSet" and identity not in updates, identity
            assert seen[identity]["spec"]["template"] != obj["spec"]["template"]
            updates.add(identity)
        seen[identity] = obj


def test_no_relative_times_left(objects):
    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            assert not re.match(r"^now[+-]", value), value

    walk(objects)


def test_creation_order(objects):
    kinds = [obj["kind"] for obj in objects]
    assert kinds[:6] == ["CustomResourceDefinition"] * 6
    first_other = next(i for i, kind in enumerate(kinds) if kind not in ("CustomResourceDefinition", "Namespace", "Node"))
    assert set(kinds[6:first_other]) == {"Namespace", "Node"}
    assert kinds.index("Node") > max(i for i, kind in enumerate(kinds) if kind == "Namespace")
    # every ReplicaSet comes right after its Deployment (older revisions first)
    for i, obj in enumerate(objects):
        if obj["kind"] == "ReplicaSet":
            owner = obj["metadata"]["ownerReferences"][0]["name"]
            j = i - 1
            while objects[j]["kind"] == "ReplicaSet":
                j -= 1
            assert objects[j]["kind"] == "Deployment" and objects[j]["metadata"]["name"] == owner


def test_namespaced_objects_live_in_scenario_namespaces(objects):
    namespaces = {obj["metadata"]["name"] for obj in of_kind(objects, "Namespace")}
    assert namespaces == {"shop", "payments", "ingress-nginx", "cert-manager", "monitoring", "logging", "default",
                          "kube-system", "kube-node-lease", "reports", "web", "apps", "external-dns"}
    cluster_scoped = {"CustomResourceDefinition", "Namespace", "Node", "IngressClass", "ClusterIssuer", "StorageClass",
                      "PriorityClass", "ValidatingWebhookConfiguration", "APIService"}
    for obj in objects:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] in namespaces, obj["metadata"]


def test_builtin_kinds_pass_the_kubernetes_schemas(objects):
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith(("cert-manager.io/", "acme.cert-manager.io/")):
            continue
        obj = copy.deepcopy(obj)
        for ref in obj["metadata"].get("ownerReferences", []):
            ref.setdefault("uid", PLACEHOLDER_UID)  # the store fills it in
        try:
            kubernetes_validate.validate(obj, "1.32", strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked > 80


def _undeclared_fields(value, schema, path=""):
    """Fields a structural schema would prune (the API server drops or rejects them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key in schema["properties"]:
                out += _undeclared_fields(item, schema["properties"][key], f"{path}.{key}")
            elif "additionalProperties" not in schema:
                out.append(f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += _undeclared_fields(item, schema["items"], f"{path}[{i}]")
    return out


def test_custom_resources_match_their_crds(objects):
    crds = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in of_kind(objects, "CustomResourceDefinition")
    }
    custom = [obj for obj in objects if obj["apiVersion"].split("/")[0] in ("cert-manager.io", "acme.cert-manager.io")]
    assert len(custom) == 9  # + shop/assets-tls (55-shop-assets.yaml)
    for obj in custom:
        schema = crds[(obj["apiVersion"].split("/")[0], obj["kind"])]
        jsonschema.validate(obj, schema)
        assert _undeclared_fields(obj, schema) == [], obj["metadata"]["name"]


def test_cert_manager_crds(objects):
    crds = {crd["metadata"]["name"]: crd["spec"] for crd in of_kind(objects, "CustomResourceDefinition")}
    assert set(crds) == {
        "certificates.cert-manager.io", "certificaterequests.cert-manager.io", "issuers.cert-manager.io",
        "clusterissuers.cert-manager.io", "orders.acme.cert-manager.io", "challenges.acme.cert-manager.io",
    }
    cert = crds["certificates.cert-manager.io"]
    assert cert["names"]["shortNames"] == ["cert", "certs"]
    assert cert["names"]["categories"] == ["cert-manager"]
    assert crds["certificaterequests.cert-manager.io"]["names"]["shortNames"] == ["cr", "crs"]
    assert crds["clusterissuers.cert-manager.io"]["scope"] == "Cluster"
    version = cert["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [(col["name"], col.get("priority", 0)) for col in version["additionalPrinterColumns"]]
    assert columns == [("Ready", 0), ("Secret", 0), ("Issuer", 1), ("Status", 1), ("Age", 0)]


# -- cluster -----------------------------------------------------------------------------


def test_nodes(objects):
    nodes = of_kind(objects, "Node")
    assert [node["metadata"]["name"] for node in nodes] == ["node-1", "node-2", "node-3"]
    for node in nodes:
        status = node["status"]
        for field in ("capacity", "allocatable"):
            assert status[field]["cpu"] == "4"
            assert status[field]["memory"] == "16Gi"
            assert status[field]["pods"] == "110"
        assert status["nodeInfo"]["kubeletVersion"].startswith("v1.32.")
        conditions = {cond["type"]: cond for cond in status["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure"):
            assert conditions[pressure]["status"] == "False"
        for cond in conditions.values():
            assert ts(cond["lastTransitionTime"]) <= ts(cond["lastHeartbeatTime"]) <= NOW
        assert {addr["type"] for addr in status["addresses"]} >= {"InternalIP", "Hostname"}


def test_platform_components(objects):
    ingress_class = find(objects, "IngressClass", "nginx")
    assert ingress_class["spec"]["controller"] == "k8s.io/ingress-nginx"
    assert ingress_class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    assert find(objects, "Service", "ingress-nginx-controller", "ingress-nginx")["spec"]["type"] == "LoadBalancer"
    assert find(objects, "Deployment", "ingress-nginx-controller", "ingress-nginx")["spec"]["replicas"] == 2
    assert find(objects, "Deployment", "coredns", "kube-system")["spec"]["replicas"] == 2
    args = find(objects, "Deployment", "external-dns", "kube-system")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--registry=txt" in args and "--txt-owner-id=prod-cluster" in args
    for name in ("cert-manager", "cert-manager-webhook", "cert-manager-cainjector"):
        find(objects, "Deployment", name, "cert-manager")
    for name in ("prometheus-server", "alertmanager", "kube-state-metrics"):
        find(objects, "Deployment", name, "monitoring")
        find(objects, "Service", name, "monitoring")
    assert find(objects, "DaemonSet", "fluent-bit", "logging")
    assert find(objects, "StatefulSet", "elasticsearch", "logging")
    kubernetes = find(objects, "Service", "kubernetes", "default")
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"


def test_shop_and_payments_workloads(objects):
    for name, replicas in (("frontend", 3), ("cart", 2), ("checkout", 3)):
        deploy = find(objects, "Deployment", name, "shop")
        assert deploy["spec"]["replicas"] == replicas
        service = find(objects, "Service", name, "shop")
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"] == {"app": name}
        assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 8080
    assert find(objects, "Deployment", "payments-api", "payments")["spec"]["replicas"] == 2
    db = find(objects, "StatefulSet", "payments-db", "payments")
    assert db["spec"]["replicas"] == 1
    assert find(objects, "Service", "payments-db", "payments")["spec"]["clusterIP"] == "None"


def test_ingresses(objects):
    expected = {
        ("shop", "frontend"): ("shop.example.com", "shop-frontend-tls", True),
        ("shop", "cart"): ("cart.shop.example.com", "cart-tls", True),
        ("shop", "checkout"): ("checkout.shop.example.com", "checkout-tls", True),
        ("shop", "assets"): ("assets.shop.example.com", "assets-tls", True),  # renewed but not served
        ("payments", "payments-api"): ("pay.example.com", "payments-tls", False),
    }
    ingresses = [i for i in of_kind(objects, "Ingress") if i["metadata"]["namespace"] not in ("web", "apps")]  # see below
    assert {(ing["metadata"]["namespace"], ing["metadata"]["name"]) for ing in ingresses} == set(expected)
    # apps: plain-HTTP Ingresses that ExternalDNS publishes into apps.example.com (dns-audit's drift)
    web = {ing["metadata"]["name"]: ing for ing in of_kind(objects, "Ingress") if ing["metadata"]["namespace"] == "apps"}
    assert sorted(web) == ["api", "blog", "cdn", "docs", "search", "status", "www"]
    for name, ing in web.items():
        assert ing["spec"]["rules"][0]["host"] == f"{name}.apps.example.com" and "tls" not in ing["spec"]
        assert ing["status"]["loadBalancer"]["ingress"] == [{"ip": "203.0.113.10"}]
    for ing in ingresses:
        host, secret, managed = expected[(ing["metadata"]["namespace"], ing["metadata"]["name"])]
        annotations = ing["metadata"]["annotations"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        assert ing["spec"]["rules"][0]["host"] == host
        assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": secret}]
        assert annotations["external-dns.alpha.kubernetes.io/hostname"] == host
        assert (annotations.get("cert-manager.io/cluster-issuer") == "letsencrypt-prod") is managed
        find(objects, "Secret", secret, ing["metadata"]["namespace"])


def test_web_hosts_are_each_broken_at_a_different_hop(objects):
    web = {i["metadata"]["name"]: i for i in of_kind(objects, "Ingress") if i["metadata"]["namespace"] == "web"}
    assert {n: i["spec"]["rules"][0]["host"] for n, i in web.items()} == {
        "www": "www.example.com", "blog": "blog.example.com", "intranet": "intranet.example.com",
        "promo": "promo.example.com", "promo-spring": "promo.example.com",
        "newsletter": "newsletter.example.com", "careers": "careers.example.com"}
    assert web["intranet"]["spec"]["ingressClassName"] == "nginx-internal" and "tls" not in web["intranet"]["spec"]
    assert web["promo"]["metadata"]["creationTimestamp"] < web["promo-spring"]["metadata"]["creationTimestamp"]
    assert find(objects, "IngressClass", "nginx-internal")["spec"]["controller"] == "k8s.io/ingress-nginx-internal"
    newsletter = find(objects, "Service", "newsletter", "web")["spec"]["ports"][0]["targetPort"]
    pod_ports = find(objects, "Deployment", "newsletter", "web")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert newsletter == "http" and [p["name"] for p in pod_ports] == ["web"]
    assert find(objects, "Deployment", "careers", "web")["spec"]["replicas"] == 0
    # DNS: zone example.com is published by its own ExternalDNS instance, and dns.yaml removes blog's record
    public = find(objects, "Deployment", "external-dns-public", "external-dns")
    args = public["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--provider=rfc2136", "--domain-filter=example.com", "--exclude-domains=apps.example.com",
            "--txt-owner-id=sandbox-prod-public", "--source=ingress"} <= set(args)
    from runbooks_sandbox import externaldns
    from runbooks_sandbox.scenario import scenario_dir

    plan = externaldns.load_plan(scenario_dir("default").joinpath("dns.yaml").read_text())
    assert externaldns.zones_of(plan, "rfc2136") == ["apps.example.com", "example.com"]
    assert externaldns.zones_of(plan, "pdns") == ["apps.example.com"]
    assert {"provider": "rfc2136", "remove": "blog.example.com"} in plan["drift"]
    addresses = {i["metadata"]["name"]: i.get("status", {}).get("loadBalancer", {}).get("ingress") for i in web.values()}
    assert addresses["intranet"] is None and all(addresses[n] for n in web if n != "intranet")


# -- deployment history ----------------------------------------------------------------


def replica_sets_of(objects, namespace, deployment):
    return sorted(
        (rs for rs in of_kind(objects, "ReplicaSet", namespace) if rs["metadata"]["ownerReferences"][0]["name"] == deployment),
        key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]),
    )


def test_checkout_has_a_stuck_rollout(objects):
    deploy = find(objects, "Deployment", "checkout", "shop")
    assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "7"
    old, new = replica_sets_of(objects, "shop", "checkout")

    for rs, revision, replicas, image, age in ((old, "6", 3, "1.8.2", 20 * DAY), (new, "7", 1, "1.9.0", timedelta(hours=2))):
        meta = rs["metadata"]
        template = copy.deepcopy(rs["spec"]["template"])
        template_hash = template["metadata"]["labels"].pop("pod-template-hash")
        assert template_hash == pod_template_hash(template)
        assert meta["name"] == f"checkout-{template_hash}"
        assert meta["labels"]["pod-template-hash"] == template_hash
        assert rs["spec"]["selector"]["matchLabels"] == {"app": "checkout", "pod-template-hash": template_hash}
        assert meta["annotations"] == {
            "deployment.kubernetes.io/revision": revision,
            "deployment.kubernetes.io/desired-replicas": "3",
            "deployment.kubernetes.io/max-replicas": "4",
        }
        assert meta["ownerReferences"] == [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout", "controller": True, "blockOwnerDeletion": True}
        ]
        assert rs["spec"]["replicas"] == replicas
        assert rs["spec"]["template"]["spec"]["containers"][0]["image"] == f"registry.example.com/shop/checkout:{image}"
        assert ts(meta["creationTimestamp"]) == NOW - age

    new_template = new["spec"]["template"]
    assert new_template["metadata"]["annotations"]["sandbox.kube-runbooks.io/fail"] == "OOMKilled"
    assert new_template["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi"
    assert "sandbox.kube-runbooks.io/fail" not in old["spec"]["template"]["metadata"].get("annotations", {})
    # the controllers hash the Deployment's template: it must name the newest ReplicaSet
    assert pod_template_hash(deploy["spec"]["template"]) == new["metadata"]["labels"]["pod-template-hash"]


def test_every_other_deployment_has_one_current_replica_set(objects):
    for deploy in of_kind(objects, "Deployment"):
        meta = deploy["metadata"]
        if meta["name"] == "checkout":
            continue
        (rs,) = replica_sets_of(objects, meta["namespace"], meta["name"])
        assert rs["spec"]["replicas"] == deploy["spec"]["replicas"]
        assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == meta["annotations"]["deployment.kubernetes.io/revision"]
        assert rs["metadata"]["labels"]["pod-template-hash"] == pod_template_hash(deploy["spec"]["template"])
        assert ts(meta["creationTimestamp"]) <= ts(rs["metadata"]["creationTimestamp"])


# -- certificates ----------------------------------------------------------------------


CERT_FACTS = {
    # secret: (namespace, dns name, days left, issued days ago)
    "shop-frontend-tls": ("shop", "shop.example.com", 60, 30),
    "cart-tls": ("shop", "cart.shop.example.com", 5, 85),
    "checkout-tls": ("shop", "checkout.shop.example.com", -2, 92),
    "payments-tls": ("payments", "pay.example.com", 300, 65),
}


@pytest.mark.parametrize("name", sorted(CERT_FACTS))
def test_tls_secrets(objects, name):
    namespace, host, days_left, issued = CERT_FACTS[name]
    secret = find(objects, "Secret", name, namespace)
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    chain = secret_certs(secret)
    leaf = chain[0]
    assert leaf.not_valid_after_utc - NOW == days_left * DAY
    assert NOW - leaf.not_valid_before_utc == issued * DAY
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [host]
    key = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    assert key.public_key() == leaf.public_key()

    (ca,) = secret_certs(secret, "ca.crt")
    store = verification.Store([ca])
    verifier = verification.PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName(host))
    if name == "payments-tls":  # hand-managed and self-signed
        assert len(chain) == 1 and leaf.issuer == leaf.subject and ca == leaf
    else:
        assert len(chain) == 2
        assert chain[1].subject.rfc4514_string() == "CN=R11 (sandbox),O=Let's Encrypt (sandbox)"
        assert ca.subject.rfc4514_string() == "CN=ISRG Root X1 (sandbox),O=Internet Security Research Group (sandbox)"
    if days_left > 0:
        verifier.verify(leaf, chain[1:])
    else:
        with pytest.raises(verification.VerificationError):
            verifier.verify(leaf, chain[1:])


def test_letsencrypt_leaves_share_one_sandbox_ca(objects):
    roots = {secret_certs(find(objects, "Secret", name, "shop"), "ca.crt")[0] for name in ("shop-frontend-tls", "cart-tls", "checkout-tls")}
    assert len(roots) == 1


def test_certificate_status_matches_secrets(objects):
    for name in ("shop-frontend-tls", "cart-tls", "checkout-tls"):
        cert = find(objects, "Certificate", name, "shop")
        assert cert["spec"]["secretName"] == name
        leaf = secret_certs(find(objects, "Secret", name, "shop"))[0]
        status = cert["status"]
        assert ts(status["notBefore"]) == leaf.not_valid_before_utc
        assert ts(status["notAfter"]) == leaf.not_valid_after_utc
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        renew_before = 7 * DAY if name == "checkout-tls" else lifetime / 3
        assert ts(status["renewalTime"]) == leaf.not_valid_after_utc - renew_before
        assert cert["metadata"]["ownerReferences"][0]["kind"] == "Ingress"


def conditions(obj):
    return {cond["type"]: cond for cond in obj["status"]["conditions"]}


def test_certificate_conditions(objects):
    frontend = conditions(find(objects, "Certificate", "shop-frontend-tls", "shop"))
    assert frontend["Ready"]["status"] == "True" and frontend["Ready"]["reason"] == "Ready"
    assert "Issuing" not in frontend

    cart = find(objects, "Certificate", "cart-tls", "shop")
    assert conditions(cart)["Ready"]["status"] == "True"
    assert conditions(cart)["Issuing"]["status"] == "False" and conditions(cart)["Issuing"]["reason"] == "Failed"
    assert ts(cart["status"]["renewalTime"]) == NOW - 25 * DAY
    assert cart["status"]["failedIssuanceAttempts"] == 4

    checkout = conditions(find(objects, "Certificate", "checkout-tls", "shop"))
    assert checkout["Ready"]["status"] == "False" and checkout["Ready"]["reason"] == "Expired"
    assert checkout["Ready"]["message"] == "Certificate expired on Wed, 31 Dec 2025 03:04:05 UTC"

    stuck = find(objects, "Certificate", "legacy-api-tls", "shop")
    assert conditions(stuck)["Ready"]["status"] == "False"
    assert conditions(stuck)["Issuing"]["status"] == "True"
    assert "notAfter" not in stuck["status"]
    assert not [s for s in of_kind(objects, "Secret", "shop") if s["metadata"]["name"] == "legacy-api-tls"]


def test_stuck_certificate_chain_ends_in_a_failing_dns01_challenge(objects):
    request = find(objects, "CertificateRequest", "legacy-api-tls-1", "shop")
    assert conditions(request)["Ready"]["reason"] == "Pending"
    order = find(objects, "Order", "legacy-api-tls-1-3120589341", "shop")
    assert order["status"]["state"] == "pending"
    challenge = find(objects, "Challenge", "legacy-api-tls-1-3120589341-2145364921", "shop")
    assert challenge["spec"]["type"] == "DNS-01"
    assert challenge["spec"]["dnsName"] == "legacy-api.shop.example.com"
    assert challenge["status"]["state"] == "pending" and challenge["status"]["presented"] is False
    assert "AccessDenied" in challenge["status"]["reason"] and "route53:ChangeResourceRecordSets" in challenge["status"]["reason"]

    csr = x509.load_pem_x509_csr(base64.b64decode(request["spec"]["request"]))
    order_csr = x509.load_der_x509_csr(base64.b64decode(order["spec"]["request"]))
    assert csr == order_csr
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["legacy-api.shop.example.com"]


def test_cluster_issuer(objects):
    issuer = find(objects, "ClusterIssuer", "letsencrypt-prod")
    assert conditions(issuer)["Ready"]["status"] == "True"
    assert "route53" in issuer["spec"]["acme"]["solvers"][0]["dns01"]
    account = find(objects, "Secret", "letsencrypt-prod-account-key", "cert-manager")
    serialization.load_pem_private_key(base64.b64decode(account["data"]["tls.key"]), None)


def test_load_is_repeatable(objects):
    again = load_scenario("default", now=NOW)
    assert [(o["kind"], o["metadata"]["name"]) for o in again] == [(o["kind"], o["metadata"]["name"]) for o in objects]


# -- loader errors -------------------------------------------------------------------


def write_scenario(tmp_path, monkeypatch, text):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "00-test.yaml").write_text(text)
    monkeypatch.setattr(scenario, "scenario_dir", lambda name: tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "ConfigMap has no metadata.name"),
        ("- a\n- b\n", "expected a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nsandbox: {agee: 1d}\n",
         "sandbox key\\(s\\) agee not allowed on ConfigMap; allowed: age"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nsandbox: {age: 3 days}\n", "invalid duration '3 days'"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nsandbox:\n  certificate:\n    issuer: nobody\n"
         "    dnsNames: [a.example.com]\n    notBeforeAge: 1d\n    validFor: 90d\n",
         "issuer 'nobody' is unknown; use one of: self-signed"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nsandbox:\n  certificate: {dnsNames: [a.example.com]}\n",
         "sandbox.certificate needs 'notBeforeAge', 'validFor'"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nsandbox: {age: 1d, rolloutAge: 2d}\n"
         "spec:\n  selector: {matchLabels: {app: d}}\n  template: {metadata: {labels: {app: d}}, spec: {containers: [{name: c, image: i:1}]}}\n",
         "revision 1 \\(age 2d\\) would predate the Deployment"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
         "spec:\n  selector: {matchLabels: {app: d}}\n  template: {metadata: {labels: {app: e}}, spec: {containers: [{name: c, image: i:1}]}}\n",
         "do not match the selector"),
    ],
)
def test_loader_errors_name_the_document_and_the_problem(tmp_path, monkeypatch, text, message):
    write_scenario(tmp_path, monkeypatch, text)
    with pytest.raises(ValueError, match=message) as info:
        load_scenario("test", now=NOW)
    assert "00-test.yaml document 0" in str(info.value)
