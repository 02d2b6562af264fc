"""DELETE answers as the real API server gives them, parsed by the official client's generated types."""

from __future__ import annotations

import inspect
import json
import re
import uuid

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runbooks_sandbox.resources import BUILTIN
from runbooks_sandbox.server import RETURN_DELETED_OBJECT

NAMESPACED_BODIES = {
    "Pod": {"spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}},
    "Service": {"spec": {"ports": [{"port": 80}]}},
    "Endpoints": {"subsets": []},
    "Event": {"involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Test", "message": "m", "type": "Normal"},
    "Secret": {"data": {}},
    "ConfigMap": {"data": {"k": "v"}},
    "ServiceAccount": {},
    "Deployment": {"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}}, "template": {
        "metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
    "ReplicaSet": {"spec": {"replicas": 0, "selector": {"matchLabels": {"app": "r"}}, "template": {
        "metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
    "StatefulSet": {"spec": {"replicas": 0, "serviceName": "s", "selector": {"matchLabels": {"app": "s"}},
                             "template": {"metadata": {"labels": {"app": "s"}},
                                          "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
    "DaemonSet": {"spec": {"selector": {"matchLabels": {"app": "ds"}}, "template": {
        "metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
    "EndpointSlice": {"addressType": "IPv4", "endpoints": []},
    "Ingress": {"spec": {"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}},
    "HorizontalPodAutoscaler": {"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                             "name": "x"}, "minReplicas": 1, "maxReplicas": 2}},
    "PodDisruptionBudget": {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}},
}
CLUSTER_BODIES = {
    "Namespace": {},
    "Node": {"spec": {"unschedulable": True}},
    "IngressClass": {"spec": {"controller": "example.com/none"}},
    "CustomResourceDefinition": None,  # built per test (its name follows the group)
}
API_CLASSES = {"": client.CoreV1Api, "apps": client.AppsV1Api, "discovery.k8s.io": client.DiscoveryV1Api,
               "networking.k8s.io": client.NetworkingV1Api, "autoscaling": client.AutoscalingV2Api,
               "policy": client.PolicyV1Api, "apiextensions.k8s.io": client.ApiextensionsV1Api}
STATUS_ORDER = ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]


@pytest.fixture(scope="module")
def api(empty_sandbox):
    return config.new_client_from_config(str(empty_sandbox.kubeconfig), "sandbox")


def _snake(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


def _crd(group: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.mark.parametrize("rt", BUILTIN, ids=lambda rt: rt.kind)
def test_delete_answer_parses_with_the_generated_return_type(api, empty_namespace, rt):
    cls = API_CLASSES[rt.group]
    kind = _snake(rt.kind)
    name = f"del-{uuid.uuid4().hex[:6]}"
    if rt.kind == "CustomResourceDefinition":
        group = f"{name}.example.com"
        body = _crd(group)
        name = body["metadata"]["name"]
    elif rt.namespaced:
        body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name},
                **NAMESPACED_BODIES[rt.kind]}
    else:
        body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name}, **CLUSTER_BODIES[rt.kind]}
    api_obj = cls(api)
    if rt.namespaced:
        getattr(api_obj, f"create_namespaced_{kind}")(empty_namespace, body)
        answer = getattr(api_obj, f"delete_namespaced_{kind}")(name, empty_namespace)
    else:
        getattr(api_obj, f"create_{kind}")(body)
        answer = getattr(api_obj, f"delete_{kind}")(name)
    method = f"delete_namespaced_{kind}" if rt.namespaced else f"delete_{kind}"
    declared = re.search(r"'200': \"(\w+)\"", inspect.getsource(getattr(cls, method))).group(1)
    assert (declared != "object") == (rt.kind in RETURN_DELETED_OBJECT)
    if declared != "object":  # registry stores with ReturnDeletedObject: the generated model
        assert type(answer).__name__ == declared and answer.metadata.name == name
    elif rt.kind == "Namespace":  # finalized, not gone at once: the object, Terminating
        assert answer["kind"] == "Namespace" and answer["status"]["phase"] == "Terminating"
        assert answer["metadata"]["deletionTimestamp"]
    else:
        assert list(answer) == ["kind", "apiVersion", "metadata", "status", "details"]
        assert answer["status"] == "Success"
        assert answer["details"]["name"] == name and answer["details"]["kind"] == rt.plural
        assert answer["details"]["group"] == rt.group


def test_custom_resource_delete_returns_the_object(api, empty_namespace):
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(_crd(group))
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(group, "v1", empty_namespace, "widgets",
                                           {"apiVersion": f"{group}/v1", "kind": "Widget",
                                            "metadata": {"name": "w1"}, "spec": {"size": 3}})
    answer = custom.delete_namespaced_custom_object(group, "v1", empty_namespace, "widgets", "w1")
    assert answer["kind"] == "Widget" and answer["spec"] == {"size": 3}
    ext.delete_custom_resource_definition(f"widgets.{group}")


def test_delete_with_finalizers_marks_and_returns_the_object(api, empty_namespace):
    core = client.CoreV1Api(api)
    core.create_namespaced_service(empty_namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]},
                                                     "spec": {"ports": [{"port": 80}]}})
    answer = core.delete_namespaced_service("held", empty_namespace)
    assert isinstance(answer, client.V1Service) and answer.metadata.deletion_timestamp
    again = core.delete_namespaced_service("held", empty_namespace)
    assert again.metadata.deletion_timestamp == answer.metadata.deletion_timestamp
    assert core.read_namespaced_service("held", empty_namespace).metadata.deletion_timestamp
    core.patch_namespaced_service("held", empty_namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        core.read_namespaced_service("held", empty_namespace)
    assert e.value.status == 404


def test_status_bodies_list_their_fields_in_the_real_order(api, empty_namespace):
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map("missing", empty_namespace)
    assert list(json.loads(e.value.body)) == STATUS_ORDER
    core.create_namespaced_config_map(empty_namespace, {"metadata": {"name": "gone"}})
    raw = core.delete_namespaced_config_map("gone", empty_namespace, _preload_content=False)
    assert list(json.loads(raw.data)) == ["kind", "apiVersion", "metadata", "status", "details"]
