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
from test_sandbox_groups import MINIMAL

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
               "policy": client.PolicyV1Api, "apiextensions.k8s.io": client.ApiextensionsV1Api,
               "admissionregistration.k8s.io": client.AdmissionregistrationV1Api,
               "apiregistration.k8s.io": client.ApiregistrationV1Api, "batch": client.BatchV1Api,
               "certificates.k8s.io": client.CertificatesV1Api, "coordination.k8s.io": client.CoordinationV1Api,
               "events.k8s.io": client.EventsV1Api, "flowcontrol.apiserver.k8s.io": client.FlowcontrolApiserverV1Api,
               "node.k8s.io": client.NodeV1Api, "rbac.authorization.k8s.io": client.RbacAuthorizationV1Api,
               "scheduling.k8s.io": client.SchedulingV1Api, "storage.k8s.io": client.StorageV1Api}
DELETABLE = [t for t in BUILTIN if not t.handler and "delete" in t.verbs]
STATUS_ORDER = ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]


@pytest.fixture(scope="module")
def api(empty_sandbox):
    return config.new_client_from_config(str(empty_sandbox.kubeconfig), "sandbox")


def _body(rt, bodies: dict) -> dict:
    """This file's body for the kind, else the one the every-group test uses."""
    if rt.group == "" or rt.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"):
        if rt.kind in bodies:
            return bodies[rt.kind]
    return MINIMAL.get(f"{rt.group}/{rt.kind}") or bodies.get(rt.kind) or MINIMAL[rt.kind]


def _snake(kind: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", kind).lower()  # CSIDriver: csi_driver


def _crd(group: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.mark.parametrize("rt", DELETABLE, ids=lambda rt: f"{rt.group or 'core'}/{rt.kind}")
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
                **_body(rt, NAMESPACED_BODIES)}
    else:
        body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name},
                **_body(rt, CLUSTER_BODIES)}
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


def test_a_namespace_is_deleted_even_when_its_contents_go_away_meanwhile(empty_sandbox, api, monkeypatch):
    """Deleting a namespace deletes what is in it; an object something else deletes first (an
    event's TTL, a controller) is no error: the answer is the namespace, Terminating."""
    core = client.CoreV1Api(api)
    ns = f"vanish-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}, "data": {"k": "v"}})
    store, items = empty_sandbox.store, empty_sandbox.store.items

    def listed_then_deleted(rt, namespace=None):
        out = items(rt, namespace)
        if namespace == ns and rt.kind == "ConfigMap" and out:
            store.delete(rt, ns, "a")  # gone between the listing and the namespace's own delete
        return out

    monkeypatch.setattr(store, "items", listed_then_deleted)
    answer = core.delete_namespace(ns)  # the generated client types it V1Status and keeps the JSON
    assert answer["metadata"]["name"] == ns and answer["status"]["phase"] == "Terminating"
    monkeypatch.undo()
    with pytest.raises(ApiException) as e:
        core.read_namespace(ns)
    assert e.value.status == 404
