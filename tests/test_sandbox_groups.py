"""Every built-in API group and kind of Kubernetes 1.32, every verb, through the official client's dynamic API."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client, config, dynamic, watch

from runbooks_sandbox.resources import BUILTIN

POD_SPEC = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "x"}}
WEBHOOK = {"name": "check.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
           "clientConfig": {"url": "https://hooks.example.com/check"}}

MINIMAL: dict[str, dict] = {
    "ConfigMap": {"data": {"a": "b"}},
    "Endpoints": {"subsets": []},
    "Event": {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Test", "message": "m", "type": "Normal"},
    "events.k8s.io/Event": {"eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/c",
                            "reportingInstance": "c-1", "action": "Test", "reason": "Test", "type": "Normal",
                            "regarding": {"kind": "Pod", "name": "p"}},
    "LimitRange": {"spec": {"limits": [{"type": "Container", "default": {"memory": "256Mi"}}]}},
    "Namespace": {},
    "Node": {},
    "PersistentVolumeClaim": {"spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                                       "resources": {"requests": {"storage": "1Gi"}}}},
    "PersistentVolume": {"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                                  "storageClassName": "manual", "hostPath": {"path": "/data"}}},
    "Pod": {"spec": POD_SPEC},
    "PodTemplate": {"template": TEMPLATE},
    "ReplicationController": {"spec": {"replicas": 0, "selector": {"app": "x"}, "template": TEMPLATE}},
    "ResourceQuota": {"spec": {"hard": {"pods": "100"}}},
    "Secret": {"stringData": {"k": "v"}},
    "ServiceAccount": {},
    "Service": {"spec": {"ports": [{"port": 80}]}},
    "MutatingWebhookConfiguration": {"webhooks": [WEBHOOK]},
    "ValidatingWebhookConfiguration": {"webhooks": [WEBHOOK]},
    "ValidatingAdmissionPolicy": {"spec": {"validations": [{"expression": "true"}]}},
    "ValidatingAdmissionPolicyBinding": {"spec": {"policyName": "p", "validationActions": ["Deny"]}},
    "CustomResourceDefinition": None,  # covered by the CRD tests
    "APIService": {"spec": {"group": "example.com", "version": "v1", "groupPriorityMinimum": 100,
                            "versionPriority": 10, "service": {"namespace": "default", "name": "api"}}},
    "ControllerRevision": {"revision": 1, "data": {}},
    "DaemonSet": {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    "Deployment": {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    "ReplicaSet": {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    "StatefulSet": {"spec": {"replicas": 0, "serviceName": "x", "selector": SELECTOR, "template": TEMPLATE}},
    "HorizontalPodAutoscaler": {"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                                            "name": "none"}, "maxReplicas": 2}},
    "CronJob": {"spec": {"schedule": "0 0 1 1 *", "suspend": True, "jobTemplate": {"spec": {"template": {
        "spec": {**POD_SPEC, "restartPolicy": "Never"}}}}}},
    "Job": {"spec": {"suspend": True, "template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    "CertificateSigningRequest": {"spec": {"request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
                                           "signerName": "example.com/signer", "usages": ["client auth"]}},
    "Lease": {"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}},
    "EndpointSlice": {"addressType": "IPv4", "endpoints": []},
    "FlowSchema": {"spec": {"priorityLevelConfiguration": {"name": "global-default"}}},
    "PriorityLevelConfiguration": {"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5,
                                                                          "limitResponse": {"type": "Reject"}}}},
    "IngressClass": {"spec": {"controller": "example.com/ingress"}},
    "Ingress": {"spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}},
    "NetworkPolicy": {"spec": {"podSelector": {}}},
    "RuntimeClass": {"handler": "runc"},
    "PodDisruptionBudget": {"spec": {"minAvailable": 1, "selector": SELECTOR}},
    "ClusterRoleBinding": {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": "view"}, "subjects": []},
    "ClusterRole": {"rules": []},
    "RoleBinding": {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": []},
    "Role": {"rules": []},
    "PriorityClass": {"value": 1000},
    "CSIDriver": {"spec": {}},
    "CSINode": {"spec": {"drivers": []}},
    "CSIStorageCapacity": {"storageClassName": "manual"},
    "StorageClass": {"provisioner": "example.com/none"},
    "VolumeAttachment": {"spec": {"attacher": "example.com/csi", "nodeName": "node-1",
                                  "source": {"persistentVolumeName": "pv"}}},
}
STORED = [t for t in BUILTIN if not t.handler and "create" in t.verbs and "list" in t.verbs]


def test_every_stored_kind_has_a_test_body():
    assert {t.kind for t in STORED} <= set(MINIMAL)


def test_discovery_serves_every_group_of_1_32(cluster):
    groups = {g.name: g.preferred_version.version
              for g in client.ApisApi(cluster.api_client).get_api_versions().groups}
    assert groups == {
        "admissionregistration.k8s.io": "v1", "apiextensions.k8s.io": "v1", "apiregistration.k8s.io": "v1",
        "apps": "v1", "authentication.k8s.io": "v1", "authorization.k8s.io": "v1", "autoscaling": "v2",
        "batch": "v1", "certificates.k8s.io": "v1", "coordination.k8s.io": "v1", "discovery.k8s.io": "v1",
        "events.k8s.io": "v1", "flowcontrol.apiserver.k8s.io": "v1", "metrics.k8s.io": "v1beta1",
        "networking.k8s.io": "v1", "node.k8s.io": "v1", "policy": "v1", "rbac.authorization.k8s.io": "v1",
        "scheduling.k8s.io": "v1", "storage.k8s.io": "v1",
        "cert-manager.io": "v1", "acme.cert-manager.io": "v1",  # the scenario's CRDs
    }
    core = {r.name: r for r in client.CoreV1Api(cluster.api_client).get_api_resources().resources}
    assert core["pods/eviction"].kind == "Eviction" and core["pods/eviction"].group == "policy"
    assert core["serviceaccounts/token"].kind == "TokenRequest" and core["serviceaccounts/token"].verbs == ["create"]
    assert core["componentstatuses"].short_names == ["cs"] and core["componentstatuses"].verbs == ["get", "list"]
    assert core["persistentvolumes"].namespaced is False and core["persistentvolumeclaims"].short_names == ["pvc"]


@pytest.mark.parametrize("rt", STORED, ids=lambda t: f"{t.group or 'core'}/{t.kind}")
def test_every_verb(sandbox, namespace, rt):
    extra = MINIMAL.get(f"{rt.group}/{rt.kind}", MINIMAL[rt.kind])
    if extra is None:
        pytest.skip("covered elsewhere")
    # the official client as it comes (the product's client redacts Secret values it reads)
    api_client = config.new_client_from_config(str(sandbox.kubeconfig), "sandbox")
    dyn = dynamic.DynamicClient(api_client)
    api = dyn.resources.get(api_version=rt.api_version, kind=rt.kind)
    name = f"t-{uuid.uuid4().hex[:8]}"
    ns = {"namespace": namespace} if rt.namespaced else {}
    body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name, "labels": {"suite": name}},
            **extra}
    created = api.create(body=body, **ns)
    try:
        assert created.metadata.name == name and created.metadata.resourceVersion
        assert api.get(name=name, **ns).metadata.uid == created.metadata.uid
        listed = api.get(label_selector=f"suite={name}", **ns)
        assert [i.metadata.name for i in listed.items] == [name]
        patched = api.patch(name=name, body={"metadata": {"annotations": {"t": "1"}}},
                            content_type="application/merge-patch+json", **ns)
        assert patched.metadata.annotations["t"] == "1"
        for _ in range(10):  # a controller may write the object in between: 409, read again (as clients do)
            current = api.get(name=name, **ns).to_dict()
            current["metadata"]["labels"]["replaced"] = "yes"
            try:
                replaced = api.replace(body=current, **ns)
                break
            except dynamic.exceptions.ConflictError:
                continue
        assert replaced.metadata.labels["replaced"] == "yes"
        events = list(api.watch(label_selector=f"suite={name}", timeout=1, **ns))
        assert events and events[0]["type"] == "ADDED"
        # a Table with the kind's own columns (what kubectl get prints)
        table = api_client.call_api(
            *api_client.param_serialize(
                "GET", rt.path(namespace if rt.namespaced else None, name),
                header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
                auth_settings=["BearerToken"]))
        table.read()
        assert b'"kind":"Table"' in table.data and b'"Name"' in table.data
    finally:
        api.delete(name=name, **ns)
    with pytest.raises(dynamic.exceptions.NotFoundError):
        api.get(name=name, **ns)
    if rt.kind not in ("Namespace", "Node", "CustomResourceDefinition"):
        api.create(body=body, **ns)
        api.delete(label_selector=f"suite={name}", **ns)  # deletecollection
        assert api.get(label_selector=f"suite={name}", **ns).items == []


def test_validation_uses_the_1_32_schemas(cluster, namespace):
    dyn = dynamic.DynamicClient(cluster.api_client)
    cronjobs = dyn.resources.get(api_version="batch/v1", kind="CronJob")
    with pytest.raises(dynamic.exceptions.UnprocessibleEntityError) as e:
        cronjobs.create(namespace=namespace, body={"apiVersion": "batch/v1", "kind": "CronJob",
                                                   "metadata": {"name": "bad"}, "spec": {"jobTemplate": {
                                                       "spec": {"template": {"spec": POD_SPEC}}}}})
    assert "spec.schedule: Required value" in e.value.body


def test_componentstatuses_and_events_v1(cluster):
    statuses = client.CoreV1Api(cluster.api_client).list_component_status().items
    assert {s.metadata.name for s in statuses} == {"controller-manager", "scheduler", "etcd-0"}
    assert all(s.conditions[0].type == "Healthy" and s.conditions[0].status == "True" for s in statuses)
    assert client.EventsV1Api(cluster.api_client).list_event_for_all_namespaces(limit=1).kind == "EventList"


def test_watch_of_a_new_group(cluster, namespace):
    coordination = client.CoordinationV1Api(cluster.api_client)
    w = watch.Watch()
    coordination.create_namespaced_lease(namespace, {"metadata": {"name": "w"}, "spec": {"holderIdentity": "a"}})
    seen = [e["object"].metadata.name for e in w.stream(coordination.list_namespaced_lease, namespace,
                                                        timeout_seconds=1)]
    assert seen == ["w"]


def test_api_services(cluster):
    services = {s.metadata.name: s for s in
                client.ApiregistrationV1Api(cluster.api_client).list_api_service().items}
    assert {"v1.", "v1.apps", "v2.autoscaling", "v1.batch", "v1.rbac.authorization.k8s.io",
            "v1beta1.metrics.k8s.io"} <= set(services)
    metrics = services["v1beta1.metrics.k8s.io"]
    assert (metrics.spec.service.namespace, metrics.spec.service.name) == ("kube-system", "metrics-server")
    assert metrics.status.conditions[0].type == "Available" and metrics.status.conditions[0].status == "True"
    assert services["v1.apps"].spec.service is None
