"""OpenAPI v3 as kubectl reads it, and kubectl apply with validation on against the sandbox."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from runbooks_sandbox import openapi
from runbooks_sandbox.resources import Registry

CERT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {"group": "cert-manager.io", "scope": "Namespaced",
             "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates",
                       "singular": "certificate", "shortNames": ["cert"]},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object",
                               "properties": {"spec": {"type": "object", "required": ["secretName"],
                                                       "properties": {"secretName": {"type": "string"}}},
                                              "status": {"type": "object",
                                                         "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}


def patch_ops(doc: dict) -> list[tuple[str, dict]]:
    return [(path, item["patch"]) for path, item in doc["paths"].items() if "patch" in item]


def supports_query_param(doc: dict, gvk: dict, param: str) -> bool:
    """cli-runtime's supportsQueryParamV3: the first PATCH for the GVK must list the parameter."""
    for _, op in patch_ops(doc):
        if op.get("x-kubernetes-group-version-kind") == gvk:
            return any(p.get("name") == param for p in op.get("parameters", []))
    return False


def resolve(doc: dict, schema: dict) -> dict:
    while True:
        if "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def kind_schema(doc: dict, gvk: dict) -> dict:
    """What kubectl's patcher does: the component whose x-kubernetes-group-version-kind list holds the GVK."""
    found = [s for s in doc["components"]["schemas"].values()
             if gvk in (s.get("x-kubernetes-group-version-kind") or [])]
    assert len(found) == 1, gvk
    return found[0]


def test_index_lists_every_group_version_with_its_hash():
    reg = Registry()
    index = openapi.v3_index(reg)
    expected = {f"apis/{g}/{v}" if g else f"api/{v}" for g, vs in reg.group_versions().items() for v in vs}
    assert set(index["paths"]) == expected
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    status, _, body = openapi.respond(reg, "/openapi/v3/apis/apps/v1")
    assert status == 200
    assert url == "/openapi/v3/apis/apps/v1?hash=" + hashlib.sha512(body).hexdigest().upper()


@pytest.mark.parametrize(("group", "version", "kind"), [
    ("apps", "v1", "Deployment"), ("", "v1", "Pod"), ("", "v1", "Service"), ("", "v1", "Namespace"),
    ("networking.k8s.io", "v1", "Ingress"), ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
])
def test_patch_operations_carry_what_kubectls_verifier_checks(group, version, kind):
    doc = openapi.v3_document(Registry(), group, version)
    gvk = {"group": group, "kind": kind, "version": version}
    for param in ("fieldValidation", "dryRun", "fieldManager", "force"):
        assert supports_query_param(doc, gvk, param), param
    # Paths are a Go map in kubectl: whichever PATCH it meets first must answer the same.
    for path, op in patch_ops(doc):
        names = {p["name"] for p in op["parameters"]}
        assert {"fieldValidation", "dryRun", "fieldManager", "force"} <= names, path
        assert op["x-kubernetes-action"] == "patch"
        assert "application/strategic-merge-patch+json" in op["requestBody"]["content"], path


def test_operations_and_paths_are_shaped_like_kube_apiserver():
    doc = openapi.v3_document(Registry(), "apps", "v1")
    assert doc["openapi"].startswith("3.0")
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert {"get", "put", "patch", "delete", "parameters"} <= set(item)
    assert item["patch"]["operationId"] == "patchAppsV1NamespacedDeployment"
    assert item["get"]["x-kubernetes-action"] == "get"
    collection = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert collection["get"]["x-kubernetes-action"] == "list"
    assert collection["post"]["x-kubernetes-action"] == "post"
    assert collection["delete"]["x-kubernetes-action"] == "deletecollection"
    assert {p["name"] for p in collection["get"]["parameters"]} >= {"labelSelector", "fieldSelector", "limit",
                                                                      "continue", "watch", "resourceVersion"}
    assert doc["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"] == "listAppsV1DeploymentForAllNamespaces"
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale", "version": "v1"}
    core = openapi.v3_document(Registry(), "", "v1")
    log = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]
    assert set(log) == {"get", "parameters"}
    assert "text/plain" in log["get"]["responses"]["200"]["content"]
    nodes = core["paths"]["/api/v1/nodes/{name}"]
    assert {p["name"] for p in nodes["parameters"]} == {"name", "pretty"}  # cluster-scoped


def test_every_reference_resolves_and_types_are_openapi_3_0():
    doc = openapi.v3_document(Registry(), "", "v1")
    schemas = doc["components"]["schemas"]
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
                assert set(node) == {"$ref"}, node  # siblings go through allOf, as kube-openapi writes them
            if isinstance(node.get("type"), str | list):  # (a property may be *named* "type")
                assert isinstance(node["type"], str) and node["type"] != "null"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[-1] in schemas, ref


def test_strategic_merge_metadata_is_reachable_the_way_kubectl_looks_it_up():
    doc = openapi.v3_document(Registry(), "apps", "v1")
    dep = kind_schema(doc, {"group": "apps", "kind": "Deployment", "version": "v1"})
    spec = resolve(doc, dep["properties"]["spec"])
    template = resolve(doc, spec["properties"]["template"])
    pod_spec = resolve(doc, template["properties"]["spec"])
    containers = pod_spec["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    env = resolve(doc, containers["items"])["properties"]["env"]
    assert env["x-kubernetes-patch-merge-key"] == "name"


def test_custom_resources_are_published_without_strategic_merge_patch():
    reg = Registry()
    before = openapi.v3_index(reg)
    reg.install_crd(CERT_CRD)
    after = openapi.v3_index(reg)
    assert "apis/cert-manager.io/v1" in after["paths"] and "apis/cert-manager.io/v1" not in before["paths"]
    assert after["paths"]["apis/apps/v1"] == before["paths"]["apis/apps/v1"]  # unchanged docs keep their hash
    doc = openapi.v3_document(reg, "cert-manager.io", "v1")
    gvk = {"group": "cert-manager.io", "kind": "Certificate", "version": "v1"}
    assert supports_query_param(doc, gvk, "fieldValidation")
    for _, op in patch_ops(doc):
        content = op["requestBody"]["content"]
        assert "application/strategic-merge-patch+json" not in content  # kubectl falls back to merge patch
        assert "application/apply-patch+yaml" in content
    cert = kind_schema(doc, gvk)
    assert cert["properties"]["spec"]["required"] == ["secretName"]
    assert resolve(doc, cert["properties"]["metadata"]) is doc["components"]["schemas"][
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
    assert "io.cert-manager.v1.CertificateList" in doc["components"]["schemas"]
    crd = dict(CERT_CRD, spec=dict(CERT_CRD["spec"], versions=[dict(CERT_CRD["spec"]["versions"][0], schema={
        "openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object"}}}})]))
    reg.install_crd(crd)
    assert openapi.v3_index(reg)["paths"]["apis/cert-manager.io/v1"] != after["paths"]["apis/cert-manager.io/v1"]


def test_respond_implements_kube_openapi_caching():
    reg = Registry()
    status, headers, body = openapi.respond(reg, "/openapi/v3", "", {"Accept": "application/json, */*"})
    assert status == 200 and headers["Content-Type"] == "application/json"
    index = json.loads(body)
    assert openapi.respond(reg, "/openapi/v3", "", {"If-None-Match": headers["Etag"]})[0] == 304

    url = index["paths"]["api/v1"]["serverRelativeURL"]
    path, query = url.split("?")
    status, headers, body = openapi.respond(reg, path, query, {"Accept": "application/json"})
    assert status == 200
    assert headers["Cache-Control"] == "public, immutable" and "Expires" in headers
    assert headers["Etag"] == '"' + query.split("=", 1)[1] + '"'
    assert json.loads(body)["paths"]
    status, headers, _ = openapi.respond(reg, path, "hash=0123", {})
    assert status == 301 and headers["Location"] == url
    status, headers, _ = openapi.respond(reg, path, "", {})
    assert status == 200 and "Cache-Control" not in headers
    assert openapi.respond(reg, path, "", {"Accept": "application/com.github.proto-openapi.spec.v3@v1.0+protobuf"})[0] \
        == 406
    assert openapi.respond(reg, "/openapi/v3/apis/nope/v1", "", {})[0] == 404
    assert openapi.respond(reg, "/openapi/v2", "", {})[0] == 404  # kubectl 1.32 only falls back to v2 if v3 fails


# ---- the real kubectl against the sandbox ----------------------------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: web
        image: registry.example.com/web:{tag}
        ports:
        - containerPort: 8080
        env:
        - {{name: MODE, value: "{tag}"}}
"""


@pytest.fixture
def kubectl(sandbox, tmp_path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), HOME=str(tmp_path), KUBECACHEDIR=str(tmp_path))

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], env=env, input=input, capture_output=True, text=True,
                              timeout=120)

    return run


@pytest.mark.kubectl
@pytest.mark.timeout(180)
def test_kubectl_apply_with_validation_on(kubectl, namespace):
    """Server-side and client-side apply of a Deployment, never with --validate=false."""
    ssa = DEPLOYMENT.format(name="ssa-web", namespace=namespace, tag="1")
    out = kubectl("apply", "--server-side", "-f", "-", input=ssa)
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/ssa-web serverside-applied" in out.stdout
    out = kubectl("apply", "--server-side", "-f", "-", input=ssa.replace("web:1", "web:2"))
    assert out.returncode == 0, out.stderr

    csa = DEPLOYMENT.format(name="csa-web", namespace=namespace, tag="1")
    out = kubectl("apply", "-f", "-", input=csa)
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/csa-web created" in out.stdout
    # A second apply computes a three-way strategic merge patch from the published schema.
    out = kubectl("apply", "-f", "-", input=DEPLOYMENT.format(name="csa-web", namespace=namespace, tag="2"))
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/csa-web configured" in out.stdout
    assert "warning: error calculating patch" not in out.stderr
    got = json.loads(kubectl("get", "deployment", "csa-web", "-n", namespace, "-o", "json").stdout)
    container = got["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/web:2"
    assert container["env"] == [{"name": "MODE", "value": "2"}]

    # Validation is really on: kubectl asks for fieldValidation=Strict and the server refuses a typo.
    typo = csa.replace("replicas: 1", "replicas: 1\n  replica: 2")
    out = kubectl("apply", "-f", "-", input=typo)
    assert out.returncode != 0
    assert 'unknown field "spec.replica"' in out.stderr
    out = kubectl("create", "--dry-run=server", "-f", "-",
                  input=DEPLOYMENT.format(name="dry-web", namespace=namespace, tag="1"))
    assert out.returncode == 0, out.stderr
