"""Write validation against the real Kubernetes schemas: causes, messages and field paths."""

from __future__ import annotations

import copy

import pytest

from runbooks_sandbox import validate as v


def deployment(**spec_overrides) -> dict:
    obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": "shop", "labels": {"app": "checkout"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "checkout"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "checkout", "tier": "backend"}},
                "spec": {"containers": [{
                    "name": "checkout", "image": "registry.example.com/checkout:2.4.1",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"limits": {"memory": "256Mi", "cpu": 0.5}, "requests": {"cpu": "100m"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                }]},
            },
        },
    }
    obj["spec"].update(spec_overrides)
    return obj


def fields(causes: list[dict]) -> dict[str, dict]:
    return {c["field"]: c for c in causes}


def test_schema_version_matches_the_sandbox_server():
    assert v.schema_version() == "1.32.0"
    assert v.has_schema("apps/v1", "Deployment")
    assert v.has_schema("v1", "Pod")
    assert not v.has_schema("cert-manager.io/v1", "Certificate")


VALID = [
    deployment(),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "checkout", "namespace": "shop"},
     "spec": {"type": "ClusterIP", "selector": {"app": "checkout"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-tls", "namespace": "shop"},
     "type": "kubernetes.io/tls", "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"},
     "data": {"a.yaml": "x: 1"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
     "metadata": {"name": "shop", "namespace": "shop",
                  "annotations": {"external-dns.alpha.kubernetes.io/hostname": "shop.example.com"}},
     "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
              "rules": [{"host": "shop.example.com", "http": {"paths": [
                  {"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "frontend", "port": {"number": 80}}}}]}}]}},
    # What the controllers write: a pod with status, a node, an event, endpoints and a slice.
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "checkout-5d8f7c9b4-x2x9q", "namespace": "shop",
                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-5d8f7c9b4",
                                       "uid": "6f1c", "controller": True, "blockOwnerDeletion": True}]},
     "spec": {"nodeName": "node-1", "containers": [{"name": "checkout", "image": "x:1"}]},
     "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2025-01-10T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2025-01-10T10:00:00Z"}],
                "containerStatuses": [{"name": "checkout", "image": "x:1", "imageID": "", "ready": False,
                                       "restartCount": 7, "started": False,
                                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                                       "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                                    "finishedAt": "2025-01-10T11:58:00Z"}}}]}},
    {"apiVersion": "v1", "kind": "Node",
     "metadata": {"name": "node-1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
     "spec": {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
     "status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian", "kernelVersion": "6.1",
                             "containerRuntimeVersion": "containerd://1.7", "architecture": "amd64",
                             "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                             "systemUUID": ""}}},
    {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "checkout.17a3", "namespace": "shop"},
     "involvedObject": {"kind": "Pod", "name": "checkout-5d8f7c9b4-x2x9q", "namespace": "shop"},
     "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning", "count": 12,
     "firstTimestamp": "2025-01-10T10:00:00Z", "lastTimestamp": "2025-01-10T11:58:00Z",
     "source": {"component": "kubelet", "host": "node-1"}},
    {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "checkout", "namespace": "shop"},
     "subsets": [{"addresses": [{"ip": "10.244.1.7", "targetRef": {"kind": "Pod", "name": "p"}}],
                  "ports": [{"port": 8080, "protocol": "TCP"}]}]},
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "checkout-abc12", "namespace": "shop"}, "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": True}}],
     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
]


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_valid_objects_have_no_causes_and_no_unknown_fields(obj):
    assert v.validate(obj, obj["apiVersion"], obj["kind"]) == []
    assert v.unknown_fields(obj, obj["apiVersion"], obj["kind"]) == []


def test_bad_name_gives_the_api_servers_message():
    obj = deployment()
    obj["metadata"]["name"] = "Bad_Name"
    cause = fields(v.validate(obj, "apps/v1", "Deployment"))["metadata.name"]
    assert cause == {
        "reason": "FieldValueInvalid", "field": "metadata.name",
        "message": 'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case '
                   "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
                   "(e.g. 'example.com', regex used for validation is "
                   "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    }


def test_namespace_and_service_names_are_labels():
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}
    assert fields(v.validate(ns, "v1", "Namespace"))["metadata.name"]["message"] == \
        'Invalid value: "team.a": must not contain dots'
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1api", "namespace": "x"},
           "spec": {"ports": [{"port": 80}]}}
    msg = fields(v.validate(svc, "v1", "Service"))["metadata.name"]["message"]
    assert msg.startswith('Invalid value: "1api": a DNS-1035 label must consist of lower case alphanumeric')
    assert "(e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')" in msg


def test_missing_name_and_generate_name():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}
    assert fields(v.validate(obj, "v1", "ConfigMap"))["metadata.name"]["message"] == \
        "Required value: name or generateName is required"
    obj["metadata"]["generateName"] = "job-run-"
    assert v.validate(obj, "v1", "ConfigMap") == []


def test_label_values_are_checked():
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "not ok!"}}}
    cause = fields(v.validate(obj, "v1", "ConfigMap"))["metadata.labels"]
    assert cause["message"].startswith('Invalid value: "not ok!": a valid label must be an empty string')


def test_container_rules():
    obj = deployment()
    containers = obj["spec"]["template"]["spec"]["containers"]
    containers[0]["name"] = "Web_1"
    containers.append({"name": "sidecar"})
    containers.append({"name": "sidecar", "image": "y"})
    by_field = fields(v.validate(obj, "apps/v1", "Deployment"))
    assert by_field["spec.template.spec.containers[0].name"]["message"] == (
        'Invalid value: "Web_1": a lowercase RFC 1123 label must consist of lower case alphanumeric characters '
        "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
        "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    assert by_field["spec.template.spec.containers[1].image"] == {
        "reason": "FieldValueRequired", "message": "Required value", "field": "spec.template.spec.containers[1].image"}
    assert by_field["spec.template.spec.containers[2].name"] == {
        "reason": "FieldValueDuplicate", "message": 'Duplicate value: "sidecar"',
        "field": "spec.template.spec.containers[2].name"}


def test_selector_must_match_template_labels():
    obj = deployment(selector={"matchLabels": {"app": "cart"}})
    cause = fields(v.validate(obj, "apps/v1", "Deployment"))["spec.template.metadata.labels"]
    assert cause == {
        "reason": "FieldValueInvalid", "field": "spec.template.metadata.labels",
        "message": 'Invalid value: map[string]string{"app":"checkout", "tier":"backend"}: '
                   "`selector` does not match template `labels`",
    }
    expr = deployment(selector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend"]}]})
    assert v.validate(expr, "apps/v1", "Deployment") == []
    empty = deployment(selector={})
    assert "empty selector is invalid for deployment" in \
        fields(v.validate(empty, "apps/v1", "Deployment"))["spec.selector"]["message"]


def test_schema_types_required_and_enums():
    obj = deployment(replicas="three")
    del obj["spec"]["selector"]
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    by_field = fields(v.validate(obj, "apps/v1", "Deployment"))
    assert by_field["spec.replicas"]["reason"] == "FieldValueTypeInvalid"
    assert by_field["spec.selector"] == {"reason": "FieldValueRequired", "message": "Required value",
                                         "field": "spec.selector"}
    assert by_field["spec.template.spec.containers[0].imagePullPolicy"] == {
        "reason": "FieldValueNotSupported", "field": "spec.template.spec.containers[0].imagePullPolicy",
        "message": 'Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"'}


def test_int_or_string_and_quantities_accept_both_forms():
    obj = deployment()
    obj["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": "10%"}
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": 2, "memory": "1Gi"}}
    assert v.validate(obj, "apps/v1", "Deployment") == []
    obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = [1]
    assert fields(v.validate(obj, "apps/v1", "Deployment"))[
        "spec.strategy.rollingUpdate.maxSurge"]["reason"] == "FieldValueTypeInvalid"


def test_restart_policy_of_workload_templates_must_be_always():
    obj = deployment()
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert fields(v.validate(obj, "apps/v1", "Deployment"))["spec.template.spec.restartPolicy"]["message"] == \
        'Unsupported value: "Never": supported values: "Always"'


def test_secret_data_must_be_base64_and_is_never_echoed():
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "hunter2!"}}
    cause = fields(v.validate(obj, "v1", "Secret"))["data[password]"]
    assert cause["reason"] == "FieldValueInvalid"
    assert "hunter2" not in cause["message"]


def test_unknown_fields_are_reported_with_api_paths_and_pruned():
    obj = deployment()
    obj["spec"]["replica"] = 3
    obj["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Always"
    obj["metadata"]["labelz"] = {}
    expected = ["metadata.labelz", "spec.replica", "spec.template.spec.containers[0].imagePolicy"]
    assert sorted(v.unknown_fields(obj, "apps/v1", "Deployment")) == expected
    assert v.validate(obj, "apps/v1", "Deployment") == []  # unknown fields are not 422 causes
    pruned = copy.deepcopy(obj)
    assert sorted(v.prune(pruned, "apps/v1", "Deployment")) == expected
    assert "replica" not in pruned["spec"]
    assert "imagePolicy" not in pruned["spec"]["template"]["spec"]["containers"][0]
    assert pruned["metadata"]["labels"] == {"app": "checkout"}  # map keys are data, not fields


CERT_SCHEMA = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "properties": {
                "secretName": {"type": "string", "pattern": "^[a-z0-9.-]+$"},
                "dnsNames": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "duration": {"type": "string"},
                "revisionHistoryLimit": {"type": "integer", "minimum": 1},
                "privateKey": {"type": "object", "properties": {
                    "algorithm": {"type": "string", "enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"x-kubernetes-int-or-string": True}}},
                "issuerRef": {"type": "object", "required": ["name"],
                              "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def certificate(**spec) -> dict:
    base = {"secretName": "shop-tls", "dnsNames": ["shop.example.com"],
            "issuerRef": {"name": "letsencrypt-prod", "kind": "ClusterIssuer"}}
    base.update(spec)
    return {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "shop-tls", "namespace": "shop"}, "spec": base}


def test_custom_resources_against_their_crd_schema():
    assert v.validate_custom(certificate(), CERT_SCHEMA) == []
    assert v.validate_custom(certificate(privateKey={"algorithm": "RSA", "size": 2048}), CERT_SCHEMA) == []
    assert v.validate_custom(certificate(extra={"anything": {"goes": 1}}), CERT_SCHEMA) == []
    bad = certificate(secretName=5, dnsNames=["a", "b", "c", "d"], revisionHistoryLimit=0,
                      privateKey={"algorithm": "DSA"})
    del bad["spec"]["issuerRef"]
    by_field = fields(v.validate_custom(bad, CERT_SCHEMA))
    assert by_field["spec.secretName"] == {
        "reason": "FieldValueTypeInvalid", "field": "spec.secretName",
        "message": 'Invalid value: "integer": spec.secretName in body must be of type string: "integer"'}
    assert by_field["spec.issuerRef"]["reason"] == "FieldValueRequired"
    assert by_field["spec.dnsNames"]["message"] == "Too many: 4: must have at most 3 items"
    assert by_field["spec.revisionHistoryLimit"]["message"] == \
        "Invalid value: 0: spec.revisionHistoryLimit in body should be greater than or equal to 1"
    assert by_field["spec.privateKey.algorithm"]["reason"] == "FieldValueNotSupported"
    pattern = fields(v.validate_custom(certificate(secretName="Shop_TLS"), CERT_SCHEMA))["spec.secretName"]
    assert pattern["message"] == 'Invalid value: "Shop_TLS": spec.secretName in body should match \'^[a-z0-9.-]+$\''


def test_custom_resource_metadata_and_missing_schema():
    bad = certificate()
    bad["metadata"]["name"] = "Shop_TLS"
    assert "metadata.name" in fields(v.validate_custom(bad, CERT_SCHEMA))
    assert v.validate_custom(certificate(anything=1), None) == []


def test_custom_resource_unknown_fields_and_pruning():
    obj = certificate(secretNme="typo", extra={"free": "form"})
    obj["status"] = {"whatever": True}
    assert v.unknown_fields(obj, "cert-manager.io/v1", "Certificate", schema=CERT_SCHEMA) == ["spec.secretNme"]
    assert v.unknown_fields(obj, "cert-manager.io/v1", "Certificate") == []  # no schema: nothing is unknown
    assert v.prune(obj, "cert-manager.io/v1", "Certificate", schema=CERT_SCHEMA) == ["spec.secretNme"]
    assert "secretNme" not in obj["spec"] and obj["spec"]["extra"] == {"free": "form"}


def test_invalid_status_matches_the_api_servers_shape():
    one = v.invalid_status("Deployment", "apps", "web", [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"}])
    assert one["code"] == 422 and one["reason"] == "Invalid"
    assert one["message"] == 'Deployment.apps "web" is invalid: spec.selector: Required value'
    assert one["details"] == {"name": "web", "group": "apps", "kind": "Deployment", "causes": [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.selector"}]}
    two = v.invalid_status("Pod", "", "p", [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"},
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[1].image"}])
    assert two["message"] == ('Pod "p" is invalid: [spec.containers[0].image: Required value, '
                              "spec.containers[1].image: Required value]")


def test_selector_matching():
    sel = {"matchLabels": {"app": "a"},
           "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                {"key": "canary", "operator": "DoesNotExist"},
                                {"key": "team", "operator": "Exists"}]}
    assert v.selector_matches(sel, {"app": "a", "tier": "web", "team": "x"})
    assert not v.selector_matches(sel, {"app": "a", "tier": "db", "team": "x"})
    assert not v.selector_matches(sel, {"app": "a", "team": "x", "canary": "1"})
    assert not v.selector_matches(sel, {"app": "a"})
