"""Protobuf bodies: the field-number tables round-trip against JSON, and hand-built wire bytes decode."""

from __future__ import annotations

import base64

import pytest

from runbooks_sandbox import protobuf as pb

META = {"name": "web", "namespace": "shop", "labels": {"app": "web"}, "annotations": {"a": "b"},
        "creationTimestamp": "2026-01-02T03:04:05Z", "uid": "0b3c", "resourceVersion": "12", "generation": 2,
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u1",
                             "controller": True, "blockOwnerDeletion": True}], "finalizers": ["x/y"]}
POD_TEMPLATE = {
    "metadata": {"labels": {"app": "web"}, "annotations": {"sandbox.kube-runbooks.io/runtime": "3s"}},
    "spec": {
        "containers": [{
            "name": "web", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
            "env": [{"name": "A", "value": "1"},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": False}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
            "envFrom": [{"configMapRef": {"name": "cm"}}],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                              "failureThreshold": 3},
            "readinessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "nodeSelector": {"disk": "ssd"}, "serviceAccountName": "web", "securityContext": {"fsGroup": 2000,
                                                                                          "supplementalGroups": [1, 2]},
        "imagePullSecrets": [{"name": "registry"}], "schedulerName": "default-scheduler",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300}],
        "priorityClassName": "high", "enableServiceLinks": True},
}
JOB_SPEC = {"parallelism": 1, "completions": 1, "backoffLimit": 0, "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600, "completionMode": "NonIndexed", "suspend": False,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}}, "template": POD_TEMPLATE}
SELECTOR = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In",
                                                                 "values": ["a", "b"]}]}

SAMPLES = {
    "Deployment": ("apps/v1", {"metadata": META, "spec": {
        "replicas": 0, "selector": SELECTOR, "template": POD_TEMPLATE, "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600, "strategy": {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": "25%", "maxSurge": 1}}},
        "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok",
             "lastUpdateTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z"}]}}),
    "Service": ("v1", {"metadata": META, "spec": {
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"},
                  {"name": "metrics", "protocol": "TCP", "port": 9090, "targetPort": 9090, "nodePort": 30090}],
        "selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "NodePort",
        "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}),
    "ServiceAccount": ("v1", {"metadata": META, "secrets": [{"name": "web-token"}],
                              "imagePullSecrets": [{"name": "registry"}], "automountServiceAccountToken": False}),
    "Ingress": ("networking.k8s.io/v1", {"metadata": META, "spec": {
        "ingressClassName": "nginx", "tls": [{"hosts": ["web.example.com"], "secretName": "web-tls"}],
        "defaultBackend": {"service": {"name": "web", "port": {"name": "http"}}},
        "rules": [{"host": "web.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}}),
    "PodDisruptionBudget": ("policy/v1", {"metadata": META, "spec": {"minAvailable": 2, "selector": SELECTOR,
                                                                     "unhealthyPodEvictionPolicy": "AlwaysAllow"},
                                          "status": {"disruptionsAllowed": 1, "currentHealthy": 3,
                                                     "desiredHealthy": 2, "expectedPods": 3,
                                                     "observedGeneration": 1,
                                                     "disruptedPods": {"web-1": "2026-01-02T03:04:05Z"}}}),
    "Job": ("batch/v1", {"metadata": META, "spec": JOB_SPEC, "status": {
        "startTime": "2026-01-02T03:04:05Z", "active": 1, "failed": 2, "ready": 0, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m",
             "lastProbeTime": "2026-01-02T03:04:05Z", "lastTransitionTime": "2026-01-02T03:04:05Z"}]}}),
    "CronJob": ("batch/v1", {"metadata": META, "spec": {
        "schedule": "0 2 * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid", "suspend": True,
        "startingDeadlineSeconds": 300, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"metadata": {"labels": {"app": "nightly"}}, "spec": JOB_SPEC}},
        "status": {"lastScheduleTime": "2026-01-02T02:00:00Z", "active": [
            {"kind": "Job", "namespace": "shop", "name": "nightly-1", "uid": "u", "apiVersion": "batch/v1"}]}}),
    "Role": ("rbac.authorization.k8s.io/v1", {"metadata": META, "rules": [
        {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
        {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"]}]}),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", {"metadata": META, "rules": [
        {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}],
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "true"}}]}}),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", {"metadata": META, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [
        {"kind": "ServiceAccount", "name": "robot", "namespace": "shop"},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"}]}),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", {"metadata": META, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:masters"}]}),
    "PriorityClass": ("scheduling.k8s.io/v1", {"metadata": META, "value": 0, "globalDefault": True,
                                               "description": "d", "preemptionPolicy": "Never"}),
    "ResourceQuota": ("v1", {"metadata": META, "spec": {"hard": {"pods": "10", "requests.cpu": "2"},
                                                        "scopes": ["NotTerminating"]},
                             "status": {"hard": {"pods": "10"}, "used": {"pods": "3"}}}),
    "ConfigMap": ("v1", {"metadata": META, "data": {"a": "b"},
                         "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}, "immutable": False}),
    "Secret": ("v1", {"metadata": META, "type": "Opaque", "data": {"k": base64.b64encode(b"v").decode()}}),
    "Namespace": ("v1", {"metadata": META, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
    "TokenRequest": ("authentication.k8s.io/v1", {"metadata": META, "spec": {
        "audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600,
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "u"}},
        "status": {"token": "abc", "expirationTimestamp": "2026-01-02T04:04:05Z"}}),
    "Eviction": ("policy/v1", {"metadata": META, "deleteOptions": {"gracePeriodSeconds": 0, "dryRun": ["All"]}}),
    "SelfSubjectAccessReview": ("authorization.k8s.io/v1", {"spec": {"resourceAttributes": {
        "namespace": "shop", "verb": "list", "resource": "pods"}}, "status": {"allowed": True, "reason": "r"}}),
    "SubjectAccessReview": ("authorization.k8s.io/v1", {"spec": {
        "user": "jane", "groups": ["dev"], "extra": {"scopes": ["a", "b"]},
        "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}}),
    "Lease": ("coordination.k8s.io/v1", {"metadata": META, "spec": {
        "holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-02T03:04:05.123456Z"}}),
}


def test_every_kind_kubectl_creates_has_a_table():
    needed = {"Deployment", "Service", "ServiceAccount", "Ingress", "PodDisruptionBudget", "Job", "CronJob", "Role",
              "RoleBinding", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "ResourceQuota", "ConfigMap",
              "Secret", "Namespace", "TokenRequest", "Eviction", "SelfSubjectAccessReview", "DeleteOptions"}
    assert needed <= set(pb.KINDS)
    assert needed - {"DeleteOptions"} <= set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_round_trip_against_json(kind):
    api_version, body = SAMPLES[kind]
    obj = {"apiVersion": api_version, "kind": kind, **body}
    wire = pb.encode(obj)
    assert wire.startswith(pb.MAGIC)
    assert pb.decode(wire) == obj


def _field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def _varint_field(number: int, value: int) -> bytes:
    return bytes([number << 3, value])


def test_hand_built_deployment_decodes_with_upstream_field_numbers():
    # DeploymentSpec.replicas = 1, .selector = 2 (LabelSelector.matchLabels = 1, a map entry),
    # .template = 3 (PodTemplateSpec.spec = 2, PodSpec.containers = 2, Container.name = 1, .image = 2)
    entry = _field(1, b"app") + _field(2, b"web")
    container = _field(1, b"web") + _field(2, b"nginx:1.27")
    spec = _varint_field(1, 0) + _field(2, _field(1, entry)) + _field(3, _field(2, _field(2, container)))
    raw = _field(1, _field(1, b"web")) + _field(2, spec)
    unknown = _field(1, _field(1, b"apps/v1") + _field(2, b"Deployment")) + _field(2, raw)
    assert pb.decode(pb.MAGIC + unknown) == {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}


def test_zero_values_of_plain_fields_are_left_out_but_pointers_keep_them():
    # Service.spec.ports[0]: name "" and nodePort 0 (plain fields) vanish; CronJob.spec.suspend false stays
    port = _field(1, b"") + _varint_field(3, 80) + _varint_field(5, 0)
    svc = _field(1, _field(1, b"v1") + _field(2, b"Service")) + _field(2, _field(2, _field(1, port)))
    assert pb.decode(pb.MAGIC + svc)["spec"] == {"ports": [{"port": 80}]}
    cj = _field(1, _field(1, b"batch/v1") + _field(2, b"CronJob")) + _field(2, _field(2, _varint_field(4, 0)))
    assert pb.decode(pb.MAGIC + cj)["spec"] == {"suspend": False}


def test_unknown_kinds_and_bad_bodies():
    fake = _field(1, _field(1, b"example.com/v1") + _field(2, b"Widget"))
    with pytest.raises(pb.ProtobufError) as e:
        pb.decode(pb.MAGIC + fake)
    assert e.value.code == 415
    with pytest.raises(pb.ProtobufError) as e:
        pb.decode(b"{}")
    assert e.value.code == 400


def test_protobuf_only_clients_get_protobuf_answers(cluster, namespace):
    api = cluster.api_client  # the official client's transport
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "pb"}, "data": {"k": "v"}})

    def get(path: str, accept: str):
        m, url, headers, _, _ = api.param_serialize("GET", path, header_params={"Accept": accept},
                                                    auth_settings=["BearerToken"])
        resp = api.call_api(m, url, header_params=headers)
        resp.read()
        return resp.status, resp.getheader("Content-Type"), resp.data

    status, ctype, data = get(f"/api/v1/namespaces/{namespace}/configmaps/pb", pb.MEDIA_TYPE)
    assert (status, ctype) == (200, pb.MEDIA_TYPE)
    obj = pb.decode(data)
    assert (obj["kind"], obj["metadata"]["name"], obj["data"]) == ("ConfigMap", "pb", {"k": "v"})
    # a client that also takes JSON gets JSON
    status, ctype, data = get(f"/api/v1/namespaces/{namespace}/configmaps/pb", f"{pb.MEDIA_TYPE},application/json")
    assert ctype == "application/json" and data.startswith(b"{")
    # a kind without a protobuf table: 406
    status, _, _ = get(f"/api/v1/namespaces/{namespace}/endpoints", pb.MEDIA_TYPE)
    assert status == 406
