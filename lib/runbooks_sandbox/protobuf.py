"""Request bodies in the Kubernetes protobuf encoding, decoded to the JSON form the server stores.

Typed client-go clientsets send built-in objects as
``application/vnd.kubernetes.protobuf``, and the real API server accepts that
for every built-in type. Helm's release storage (Secrets
``sh.helm.release.v1.<release>.v<n>``) and ``kubectl create namespace|secret|
configmap`` write this way, with no fallback to JSON, so the sandbox must read
it. Answers stay JSON: those clients send ``Accept: application/vnd.kubernetes.
protobuf,application/json`` and decode either.

The wire format is the envelope ``k8s\\x00`` + ``runtime.Unknown{typeMeta,
raw}`` whose ``raw`` is the object's message from the generated
``generated.proto`` files. Only the messages those writers send are described
here (field numbers as in k8s.io/api and k8s.io/apimachinery); any other kind
gets 415 with the media types the sandbox does accept, as the real server
answers for types it has no protobuf codec for.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A field: (json name, type, sub-schema). Types: str, bytes, int, bool, msg, time, fields,
# map_str (map<string,string>), map_bytes (map<string,bytes>, base64 in JSON); a trailing
# "*" marks a repeated field.
Schema = dict[int, tuple[str, str, Any]]

TIME: Schema = {}  # decoded specially (google.protobuf.Timestamp-like: seconds=1, nanos=2)

OWNER_REFERENCE: Schema = {
    1: ("kind", "str", None), 3: ("name", "str", None), 4: ("uid", "str", None),
    5: ("apiVersion", "str", None), 6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}

MANAGED_FIELDS_ENTRY: Schema = {
    1: ("manager", "str", None), 2: ("operation", "str", None), 3: ("apiVersion", "str", None),
    4: ("time", "time", None), 6: ("fieldsType", "str", None), 7: ("fieldsV1", "fields", None),
    8: ("subresource", "str", None),
}

OBJECT_META: Schema = {
    1: ("name", "str", None), 2: ("generateName", "str", None), 3: ("namespace", "str", None),
    4: ("selfLink", "str", None), 5: ("uid", "str", None), 6: ("resourceVersion", "str", None),
    7: ("generation", "int", None), 8: ("creationTimestamp", "time", None),
    9: ("deletionTimestamp", "time", None), 10: ("deletionGracePeriodSeconds", "int", None),
    11: ("labels", "map_str", None), 12: ("annotations", "map_str", None),
    13: ("ownerReferences", "msg*", OWNER_REFERENCE), 14: ("finalizers", "str*", None),
    17: ("managedFields", "msg*", MANAGED_FIELDS_ENTRY),
}

LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map_str", None),
    2: ("matchExpressions", "msg*", {1: ("key", "str", None), 2: ("operator", "str", None),
                                     3: ("values", "str*", None)}),
}
LOCAL_REF: Schema = {1: ("name", "str", None)}
OBJECT_REFERENCE: Schema = {
    1: ("kind", "str", None), 2: ("namespace", "str", None), 3: ("name", "str", None), 4: ("uid", "str", None),
    5: ("apiVersion", "str", None), 6: ("resourceVersion", "str", None), 7: ("fieldPath", "str", None),
}
_KEY_SELECTOR: Schema = {1: ("", "inline", LOCAL_REF), 2: ("key", "str", None), 3: ("optional", "bool?", None)}
_ENV_VAR: Schema = {
    1: ("name", "str", None), 2: ("value", "str", None),
    3: ("valueFrom", "msg", {
        1: ("fieldRef", "msg", {1: ("apiVersion", "str", None), 2: ("fieldPath", "str", None)}),
        2: ("resourceFieldRef", "msg", {1: ("containerName", "str", None), 2: ("resource", "str", None),
                                        3: ("divisor", "qty", None)}),
        3: ("configMapKeyRef", "msg", _KEY_SELECTOR), 4: ("secretKeyRef", "msg", _KEY_SELECTOR)}),
}
_ENV_FROM: Schema = {
    1: ("prefix", "str", None),
    2: ("configMapRef", "msg", {1: ("", "inline", LOCAL_REF), 2: ("optional", "bool?", None)}),
    3: ("secretRef", "msg", {1: ("", "inline", LOCAL_REF), 2: ("optional", "bool?", None)}),
}
_PROBE_HANDLER: Schema = {
    1: ("exec", "msg", {1: ("command", "str*", None)}),
    2: ("httpGet", "msg", {1: ("path", "str", None), 2: ("port", "ios", None), 3: ("host", "str", None),
                           4: ("scheme", "str", None),
                           5: ("httpHeaders", "msg*", {1: ("name", "str", None), 2: ("value", "str", None)})}),
    3: ("tcpSocket", "msg", {1: ("port", "ios", None), 2: ("host", "str", None)}),
    4: ("grpc", "msg", {1: ("port", "int", None), 2: ("service", "str?", None)}),
}
_PROBE: Schema = {
    1: ("", "inline", _PROBE_HANDLER), 2: ("initialDelaySeconds", "int", None), 3: ("timeoutSeconds", "int", None),
    4: ("periodSeconds", "int", None), 5: ("successThreshold", "int", None), 6: ("failureThreshold", "int", None),
    7: ("terminationGracePeriodSeconds", "int?", None),
}
_SECCOMP: Schema = {1: ("type", "str", None), 2: ("localhostProfile", "str?", None)}
_SE_LINUX: Schema = {1: ("user", "str", None), 2: ("role", "str", None), 3: ("type", "str", None),
                     4: ("level", "str", None)}
_SECURITY_CONTEXT: Schema = {
    1: ("capabilities", "msg", {1: ("add", "str*", None), 2: ("drop", "str*", None)}),
    2: ("privileged", "bool?", None), 3: ("seLinuxOptions", "msg", _SE_LINUX), 4: ("runAsUser", "int?", None),
    5: ("runAsNonRoot", "bool?", None), 6: ("readOnlyRootFilesystem", "bool?", None),
    7: ("allowPrivilegeEscalation", "bool?", None), 8: ("runAsGroup", "int?", None),
    9: ("procMount", "str?", None), 11: ("seccompProfile", "msg", _SECCOMP),
}
_LIFECYCLE_HANDLER: Schema = {
    1: ("exec", "msg", _PROBE_HANDLER[1][2]), 2: ("httpGet", "msg", _PROBE_HANDLER[2][2]),
    3: ("tcpSocket", "msg", _PROBE_HANDLER[3][2]), 4: ("sleep", "msg", {1: ("seconds", "int", None)}),
}
CONTAINER: Schema = {
    1: ("name", "str", None), 2: ("image", "str", None), 3: ("command", "str*", None), 4: ("args", "str*", None),
    5: ("workingDir", "str", None),
    6: ("ports", "msg*", {1: ("name", "str", None), 2: ("hostPort", "int", None), 3: ("containerPort", "int", None),
                          4: ("protocol", "str", None), 5: ("hostIP", "str", None)}),
    7: ("env", "msg*", _ENV_VAR),
    8: ("resources", "msg", {1: ("limits", "map_qty", None), 2: ("requests", "map_qty", None),
                             3: ("claims", "msg*", {1: ("name", "str", None), 2: ("request", "str", None)})}),
    9: ("volumeMounts", "msg*", {1: ("name", "str", None), 2: ("readOnly", "bool", None),
                                 3: ("mountPath", "str", None), 4: ("subPath", "str", None),
                                 5: ("mountPropagation", "str?", None), 6: ("subPathExpr", "str", None),
                                 7: ("recursiveReadOnly", "str?", None)}),
    10: ("livenessProbe", "msg", _PROBE), 11: ("readinessProbe", "msg", _PROBE),
    12: ("lifecycle", "msg", {1: ("postStart", "msg", _LIFECYCLE_HANDLER), 2: ("preStop", "msg", _LIFECYCLE_HANDLER)}),
    13: ("terminationMessagePath", "str", None), 14: ("imagePullPolicy", "str", None),
    15: ("securityContext", "msg", _SECURITY_CONTEXT), 16: ("stdin", "bool", None), 17: ("stdinOnce", "bool", None),
    18: ("tty", "bool", None), 19: ("envFrom", "msg*", _ENV_FROM), 20: ("terminationMessagePolicy", "str", None),
    22: ("startupProbe", "msg", _PROBE), 24: ("restartPolicy", "str?", None),
}
_KEY_TO_PATH: Schema = {1: ("key", "str", None), 2: ("path", "str", None), 3: ("mode", "int?", None)}
VOLUME: Schema = {
    1: ("name", "str", None),
    2: ("", "inline", {
        1: ("hostPath", "msg", {1: ("path", "str", None), 2: ("type", "str?", None)}),
        2: ("emptyDir", "msg", {1: ("medium", "str", None), 2: ("sizeLimit", "qty", None)}),
        6: ("secret", "msg", {1: ("secretName", "str", None), 2: ("items", "msg*", _KEY_TO_PATH),
                              3: ("defaultMode", "int?", None), 4: ("optional", "bool?", None)}),
        10: ("persistentVolumeClaim", "msg", {1: ("claimName", "str", None), 2: ("readOnly", "bool", None)}),
        19: ("configMap", "msg", {1: ("", "inline", LOCAL_REF), 2: ("items", "msg*", _KEY_TO_PATH),
                                  3: ("defaultMode", "int?", None), 4: ("optional", "bool?", None)}),
    }),
}
POD_SPEC: Schema = {
    1: ("volumes", "msg*", VOLUME), 2: ("containers", "msg*", CONTAINER), 3: ("restartPolicy", "str", None),
    4: ("terminationGracePeriodSeconds", "int?", None), 5: ("activeDeadlineSeconds", "int?", None),
    6: ("dnsPolicy", "str", None), 7: ("nodeSelector", "map_str", None), 8: ("serviceAccountName", "str", None),
    9: ("serviceAccount", "str", None), 10: ("nodeName", "str", None), 11: ("hostNetwork", "bool", None),
    12: ("hostPID", "bool", None), 13: ("hostIPC", "bool", None),
    14: ("securityContext", "msg", {
        1: ("seLinuxOptions", "msg", _SE_LINUX), 2: ("runAsUser", "int?", None), 3: ("runAsNonRoot", "bool?", None),
        4: ("supplementalGroups", "int*", None), 5: ("fsGroup", "int?", None), 6: ("runAsGroup", "int?", None),
        7: ("sysctls", "msg*", {1: ("name", "str", None), 2: ("value", "str", None)}),
        9: ("seccompProfile", "msg", _SECCOMP), 10: ("fsGroupChangePolicy", "str?", None)}),
    15: ("imagePullSecrets", "msg*", LOCAL_REF), 16: ("hostname", "str", None), 17: ("subdomain", "str", None),
    19: ("schedulerName", "str", None), 20: ("initContainers", "msg*", CONTAINER),
    21: ("automountServiceAccountToken", "bool?", None),
    22: ("tolerations", "msg*", {1: ("key", "str", None), 2: ("operator", "str", None), 3: ("value", "str", None),
                                 4: ("effect", "str", None), 5: ("tolerationSeconds", "int?", None)}),
    24: ("priorityClassName", "str", None), 25: ("priority", "int?", None), 29: ("runtimeClassName", "str?", None),
    30: ("enableServiceLinks", "bool?", None), 31: ("preemptionPolicy", "str?", None),
    37: ("hostUsers", "bool?", None),
}
POD_TEMPLATE: Schema = {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", POD_SPEC)}
CONDITION: Schema = {  # metav1.Condition
    1: ("type", "str", None), 2: ("status", "str", None), 3: ("observedGeneration", "int", None),
    4: ("lastTransitionTime", "time", None), 5: ("reason", "str", None), 6: ("message", "str", None),
}
JOB_SPEC: Schema = {
    1: ("parallelism", "int?", None), 2: ("completions", "int?", None), 3: ("activeDeadlineSeconds", "int?", None),
    4: ("selector", "msg", LABEL_SELECTOR), 5: ("manualSelector", "bool?", None), 6: ("template", "msg", POD_TEMPLATE),
    7: ("backoffLimit", "int?", None), 8: ("ttlSecondsAfterFinished", "int?", None),
    9: ("completionMode", "str?", None), 10: ("suspend", "bool?", None), 12: ("backoffLimitPerIndex", "int?", None),
    13: ("maxFailedIndexes", "int?", None), 14: ("podReplacementPolicy", "str?", None),
    15: ("managedBy", "str?", None),
}
_RULE: Schema = {
    1: ("verbs", "str*", None), 2: ("apiGroups", "str*", None), 3: ("resources", "str*", None),
    4: ("resourceNames", "str*", None), 5: ("nonResourceURLs", "str*", None),
}
_SUBJECT: Schema = {1: ("kind", "str", None), 2: ("apiGroup", "str", None), 3: ("name", "str", None),
                    4: ("namespace", "str", None)}
_ROLE_REF: Schema = {1: ("apiGroup", "str", None), 2: ("kind", "str", None), 3: ("name", "str", None)}
_RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "str", None), 2: ("verb", "str", None), 3: ("group", "str", None), 4: ("version", "str", None),
    5: ("resource", "str", None), 6: ("subresource", "str", None), 7: ("name", "str", None),
}
_NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "str", None), 2: ("verb", "str", None)}
_ACCESS_STATUS: Schema = {1: ("allowed", "bool", None), 2: ("reason", "str", None),
                          3: ("evaluationError", "str", None), 4: ("denied", "bool", None)}
_SAR_SPEC: Schema = {
    1: ("resourceAttributes", "msg", _RESOURCE_ATTRIBUTES), 2: ("nonResourceAttributes", "msg", _NON_RESOURCE_ATTRIBUTES),
    3: ("user", "str", None), 4: ("groups", "str*", None), 5: ("extra", "map_extra", None), 6: ("uid", "str", None),
}
_USER_INFO: Schema = {1: ("username", "str", None), 2: ("uid", "str", None), 3: ("groups", "str*", None),
                      4: ("extra", "map_extra", None)}
_LB_INGRESS: Schema = {1: ("ip", "str", None), 2: ("hostname", "str", None), 3: ("ipMode", "str?", None),
                       4: ("ports", "msg*", {1: ("port", "int", None), 2: ("protocol", "str", None),
                                             3: ("error", "str?", None)})}
_INGRESS_BACKEND: Schema = {
    3: ("resource", "msg", {1: ("apiGroup", "str?", None), 2: ("kind", "str", None), 3: ("name", "str", None)}),
    4: ("service", "msg", {1: ("name", "str", None),
                           2: ("port", "msg", {1: ("name", "str", None), 2: ("number", "int", None)})}),
}
DELETE_OPTIONS: Schema = {
    1: ("gracePeriodSeconds", "int?", None),
    2: ("preconditions", "msg", {1: ("uid", "str?", None), 2: ("resourceVersion", "str?", None)}),
    3: ("orphanDependents", "bool?", None), 4: ("propagationPolicy", "str?", None),
    5: ("dryRun", "str*", None),
}


def _object(spec: Schema | None = None, status: Schema | None = None) -> Schema:
    out: Schema = {1: ("metadata", "msg", OBJECT_META)}
    if spec is not None:
        out[2] = ("spec", "msg", spec)
    if status is not None:
        out[3] = ("status", "msg", status)
    return out


KINDS: dict[str, Schema] = {
    "Secret": {
        1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_bytes", None), 3: ("type", "str", None),
        4: ("stringData", "map_str", None), 5: ("immutable", "bool?", None),
    },
    "ConfigMap": {
        1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_str", None),
        3: ("binaryData", "map_bytes", None), 4: ("immutable", "bool?", None),
    },
    "Namespace": _object({1: ("finalizers", "str*", None)}, {1: ("phase", "str", None)}),
    "DeleteOptions": DELETE_OPTIONS,
    "Deployment": _object({
        1: ("replicas", "int?", None), 2: ("selector", "msg", LABEL_SELECTOR), 3: ("template", "msg", POD_TEMPLATE),
        4: ("strategy", "msg", {1: ("type", "str", None), 2: ("rollingUpdate", "msg", {
            1: ("maxUnavailable", "ios", None), 2: ("maxSurge", "ios", None)})}),
        5: ("minReadySeconds", "int", None), 6: ("revisionHistoryLimit", "int?", None), 7: ("paused", "bool", None),
        9: ("progressDeadlineSeconds", "int?", None),
    }, {
        1: ("observedGeneration", "int", None), 2: ("replicas", "int", None), 3: ("updatedReplicas", "int", None),
        4: ("availableReplicas", "int", None), 5: ("unavailableReplicas", "int", None),
        6: ("conditions", "msg*", {1: ("type", "str", None), 2: ("status", "str", None), 4: ("reason", "str", None),
                                   5: ("message", "str", None), 6: ("lastUpdateTime", "time", None),
                                   7: ("lastTransitionTime", "time", None)}),
        7: ("readyReplicas", "int", None), 8: ("collisionCount", "int?", None),
    }),
    "Service": _object({
        1: ("ports", "msg*", {1: ("name", "str", None), 2: ("protocol", "str", None), 3: ("port", "int", None),
                              4: ("targetPort", "ios", None), 5: ("nodePort", "int", None),
                              6: ("appProtocol", "str?", None)}),
        2: ("selector", "map_str", None), 3: ("clusterIP", "str", None), 4: ("type", "str", None),
        5: ("externalIPs", "str*", None), 7: ("sessionAffinity", "str", None), 8: ("loadBalancerIP", "str", None),
        9: ("loadBalancerSourceRanges", "str*", None), 10: ("externalName", "str", None),
        11: ("externalTrafficPolicy", "str", None), 12: ("healthCheckNodePort", "int", None),
        13: ("publishNotReadyAddresses", "bool", None),
        14: ("sessionAffinityConfig", "msg", {1: ("clientIP", "msg", {1: ("timeoutSeconds", "int?", None)})}),
        17: ("ipFamilyPolicy", "str?", None), 18: ("clusterIPs", "str*", None), 19: ("ipFamilies", "str*", None),
        20: ("allocateLoadBalancerNodePorts", "bool?", None), 21: ("loadBalancerClass", "str?", None),
        22: ("internalTrafficPolicy", "str?", None),
    }, {1: ("loadBalancer", "msg", {1: ("ingress", "msg*", _LB_INGRESS)}), 2: ("conditions", "msg*", CONDITION)}),
    "ServiceAccount": {
        1: ("metadata", "msg", OBJECT_META), 2: ("secrets", "msg*", OBJECT_REFERENCE),
        3: ("imagePullSecrets", "msg*", LOCAL_REF), 4: ("automountServiceAccountToken", "bool?", None),
    },
    "Ingress": _object({
        1: ("defaultBackend", "msg", _INGRESS_BACKEND),
        2: ("tls", "msg*", {1: ("hosts", "str*", None), 2: ("secretName", "str", None)}),
        3: ("rules", "msg*", {1: ("host", "str", None), 2: ("", "inline", {1: ("http", "msg", {
            1: ("paths", "msg*", {1: ("path", "str", None), 2: ("backend", "msg", _INGRESS_BACKEND),
                                  3: ("pathType", "str?", None)})})})}),
        4: ("ingressClassName", "str?", None),
    }, {1: ("loadBalancer", "msg", {1: ("ingress", "msg*", _LB_INGRESS)})}),
    "PodDisruptionBudget": _object({
        1: ("minAvailable", "ios", None), 2: ("selector", "msg", LABEL_SELECTOR), 3: ("maxUnavailable", "ios", None),
        4: ("unhealthyPodEvictionPolicy", "str?", None),
    }, {
        1: ("observedGeneration", "int", None), 2: ("disruptedPods", "map_time", None),
        3: ("disruptionsAllowed", "int", None), 4: ("currentHealthy", "int", None),
        5: ("desiredHealthy", "int", None), 6: ("expectedPods", "int", None), 7: ("conditions", "msg*", CONDITION),
    }),
    "Job": _object(JOB_SPEC, {
        1: ("conditions", "msg*", {1: ("type", "str", None), 2: ("status", "str", None),
                                   3: ("lastProbeTime", "time", None), 4: ("lastTransitionTime", "time", None),
                                   5: ("reason", "str", None), 6: ("message", "str", None)}),
        2: ("startTime", "time", None), 3: ("completionTime", "time", None), 4: ("active", "int", None),
        5: ("succeeded", "int", None), 6: ("failed", "int", None), 7: ("completedIndexes", "str", None),
        9: ("ready", "int?", None), 11: ("terminating", "int?", None), 10: ("failedIndexes", "str?", None),
    }),
    "CronJob": _object({
        1: ("schedule", "str", None), 2: ("startingDeadlineSeconds", "int?", None),
        3: ("concurrencyPolicy", "str", None), 4: ("suspend", "bool?", None),
        5: ("jobTemplate", "msg", {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", JOB_SPEC)}),
        6: ("successfulJobsHistoryLimit", "int?", None), 7: ("failedJobsHistoryLimit", "int?", None),
        8: ("timeZone", "str?", None),
    }, {1: ("active", "msg*", OBJECT_REFERENCE), 4: ("lastScheduleTime", "time", None),
        5: ("lastSuccessfulTime", "time", None)}),
    "Role": {1: ("metadata", "msg", OBJECT_META), 2: ("rules", "msg*", _RULE)},
    "ClusterRole": {1: ("metadata", "msg", OBJECT_META), 2: ("rules", "msg*", _RULE),
                    3: ("aggregationRule", "msg", {1: ("clusterRoleSelectors", "msg*", LABEL_SELECTOR)})},
    "RoleBinding": {1: ("metadata", "msg", OBJECT_META), 2: ("subjects", "msg*", _SUBJECT),
                    3: ("roleRef", "msg", _ROLE_REF)},
    "ClusterRoleBinding": {1: ("metadata", "msg", OBJECT_META), 2: ("subjects", "msg*", _SUBJECT),
                           3: ("roleRef", "msg", _ROLE_REF)},
    "PriorityClass": {1: ("metadata", "msg", OBJECT_META), 2: ("value", "int?", None),
                      3: ("globalDefault", "bool", None), 4: ("description", "str", None),
                      5: ("preemptionPolicy", "str?", None)},
    "ResourceQuota": _object({
        1: ("hard", "map_qty", None), 2: ("scopes", "str*", None),
        3: ("scopeSelector", "msg", {1: ("matchExpressions", "msg*", {
            1: ("scopeName", "str", None), 2: ("operator", "str", None), 3: ("values", "str*", None)})}),
    }, {1: ("hard", "map_qty", None), 2: ("used", "map_qty", None)}),
    "TokenRequest": _object({
        1: ("audiences", "str*", None), 4: ("expirationSeconds", "int?", None),
        3: ("boundObjectRef", "msg", {1: ("kind", "str", None), 2: ("apiVersion", "str", None),
                                      3: ("name", "str", None), 4: ("uid", "str", None)}),
    }, {1: ("token", "str", None), 2: ("expirationTimestamp", "time", None)}),
    "Eviction": {1: ("metadata", "msg", OBJECT_META), 2: ("deleteOptions", "msg", DELETE_OPTIONS)},
    "SelfSubjectAccessReview": _object({1: ("resourceAttributes", "msg", _RESOURCE_ATTRIBUTES),
                                        2: ("nonResourceAttributes", "msg", _NON_RESOURCE_ATTRIBUTES)},
                                       _ACCESS_STATUS),
    "SubjectAccessReview": _object(_SAR_SPEC, _ACCESS_STATUS),
    "LocalSubjectAccessReview": _object(_SAR_SPEC, _ACCESS_STATUS),
    "SelfSubjectRulesReview": _object({1: ("namespace", "str", None)}, {
        1: ("resourceRules", "msg*", {1: ("verbs", "str*", None), 2: ("apiGroups", "str*", None),
                                      3: ("resources", "str*", None), 4: ("resourceNames", "str*", None)}),
        2: ("nonResourceRules", "msg*", {1: ("verbs", "str*", None), 2: ("nonResourceURLs", "str*", None)}),
        3: ("incomplete", "bool", None), 4: ("evaluationError", "str", None)}),
    "SelfSubjectReview": {1: ("metadata", "msg", OBJECT_META), 2: ("status", "msg", {1: ("userInfo", "msg", _USER_INFO)})},
    "TokenReview": _object({1: ("token", "str", None), 2: ("audiences", "str*", None)}, {
        1: ("authenticated", "bool", None), 2: ("user", "msg", _USER_INFO), 3: ("error", "str", None),
        4: ("audiences", "str*", None)}),
    "Lease": _object({1: ("holderIdentity", "str?", None), 2: ("leaseDurationSeconds", "int?", None),
                      3: ("acquireTime", "microtime", None), 4: ("renewTime", "microtime", None),
                      5: ("leaseTransitions", "int?", None), 6: ("strategy", "str?", None),
                      7: ("preferredHolder", "str?", None)}),
}
"""Kinds whose protobuf bodies the sandbox reads (what Helm and kubectl's typed clients send);
field numbers as in k8s.io/api's ``generated.proto`` (the ``protobuf:"...,N,..."`` struct tags)."""

_UNKNOWN: Schema = {
    1: ("typeMeta", "msg", {1: ("apiVersion", "str", None), 2: ("kind", "str", None)}),
    2: ("raw", "rawbytes", None), 3: ("contentEncoding", "str", None), 4: ("contentType", "str", None),
}


class ProtobufError(ValueError):
    """The body is not a protobuf object the sandbox can read; ``code`` is the HTTP status."""

    def __init__(self, message: str, code: int = 400):
        super().__init__(message)
        self.code = code


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) in order; length-delimited values as bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtobufError("truncated length-delimited field")
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}")
        out.append((number, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(buf: bytes, micro: bool = False) -> str | None:
    seconds = nanos = 0
    for number, _, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = _signed(value)
        elif number == 2 and isinstance(value, int):
            nanos = _signed(value)
    if not buf:
        return None  # metav1.Time: an empty message is the zero time (null in JSON)
    moment = datetime.fromtimestamp(seconds, UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in _fields(buf):
        if number == 1 and isinstance(v, bytes):
            key = v.decode()
        elif number == 2 and isinstance(v, bytes):
            value = v
    return key, value


def _quantity(buf: bytes) -> str:
    return next((v.decode() for n, _, v in _fields(buf) if n == 1 and isinstance(v, bytes)), "")


def _int_or_string(buf: bytes) -> int | str:
    kind, int_val, str_val = 0, 0, ""
    for number, _, v in _fields(buf):
        if number == 1 and isinstance(v, int):
            kind = v
        elif number == 2 and isinstance(v, int):
            int_val = _signed(v) if v < 1 << 63 else _signed(v)
            if int_val >= 1 << 31:
                int_val -= 1 << 32
        elif number == 3 and isinstance(v, bytes):
            str_val = v.decode()
    return str_val if kind == 1 else int_val


_MAPS = ("map_str", "map_bytes", "map_qty", "map_time", "map_extra")


def _map_value(kind: str, v: bytes) -> Any:
    if kind == "map_str":
        return v.decode()
    if kind == "map_bytes":
        return base64.b64encode(v).decode()
    if kind == "map_qty":
        return _quantity(v)
    if kind == "map_time":
        return _time(v)
    return [x.decode() for n, _, x in _fields(v) if n == 1 and isinstance(x, bytes)]  # ExtraValue{items}


def decode_message(buf: bytes, schema: Schema) -> dict[str, Any]:
    """One message as the JSON object the API uses.

    Zero values of plain fields are left out (as ``omitempty`` does in JSON);
    fields marked ``?`` are pointers in Go, so a present zero (``replicas: 0``,
    ``suspend: false``) is kept.
    """
    out: dict[str, Any] = {}
    for number, _, value in _fields(buf):
        if number not in schema:
            continue  # unknown field: dropped, as the server's decoder does
        name, kind, sub = schema[number]
        repeated = kind.endswith("*")
        pointer = kind.endswith("?")
        kind = kind.rstrip("*?")
        decoded: Any
        if kind in _MAPS:
            if not isinstance(value, bytes):
                raise ProtobufError(f"field {name}: expected a map entry")
            k, v = _map_entry(value)
            out.setdefault(name, {})[k] = _map_value(kind, v)
            continue
        if kind in ("int", "bool"):
            if not isinstance(value, int):
                raise ProtobufError(f"field {name}: expected a varint")
            decoded = bool(value) if kind == "bool" else _signed(value)
        else:
            if not isinstance(value, bytes):
                raise ProtobufError(f"field {name}: expected a length-delimited value")
            if kind == "str":
                decoded = value.decode()
            elif kind == "rawbytes":
                decoded = value
            elif kind in ("time", "microtime"):
                decoded = _time(value, micro=kind == "microtime")
            elif kind == "qty":
                decoded = _quantity(value)
            elif kind == "ios":
                decoded = _int_or_string(value)
            elif kind == "fields":
                raw = next((v for n, _, v in _fields(value) if n == 1), b"")  # FieldsV1{raw}
                decoded = json.loads(raw or b"{}")
            elif kind == "inline":
                out.update(decode_message(value, sub))
                continue
            else:
                decoded = decode_message(value, sub)
        if repeated:
            out.setdefault(name, []).append(decoded)
        elif pointer or kind == "ios" or decoded not in ("", 0, None, {}, False):
            if decoded is not None:
                out[name] = decoded
    return out


# ---- encoding (responses, and the round-trip tests) ------------------------------------------


def _uvarint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def _len(number: int, data: bytes) -> bytes:
    return _tag(number, 2) + _uvarint(len(data)) + data


def _encode_time(text: Any) -> bytes:
    if not text:
        return b""
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    out = _tag(1, 0) + _uvarint(int(moment.timestamp()))
    if moment.microsecond:
        out += _tag(2, 0) + _uvarint(moment.microsecond * 1000)
    return out


def _encode_value(number: int, kind: str, sub: Any, value: Any) -> bytes:
    if kind == "int":
        return _tag(number, 0) + _uvarint(int(value))
    if kind == "bool":
        return _tag(number, 0) + _uvarint(1 if value else 0)
    if kind == "str":
        return _len(number, str(value).encode())
    if kind in ("time", "microtime"):
        return _len(number, _encode_time(value))
    if kind == "qty":
        return _len(number, _len(1, str(value).encode()))
    if kind == "ios":
        if isinstance(value, str):
            return _len(number, _tag(1, 0) + _uvarint(1) + _tag(2, 0) + _uvarint(0) + _len(3, value.encode()))
        return _len(number, _tag(1, 0) + _uvarint(0) + _tag(2, 0) + _uvarint(int(value)) + _len(3, b""))
    if kind == "fields":
        return _len(number, _len(1, json.dumps(value, separators=(",", ":")).encode()))
    if kind == "inline":
        return _len(number, encode_message(value, sub))
    return _len(number, encode_message(value, sub))


def _encode_map_value(kind: str, v: Any) -> bytes:
    if kind == "map_str":
        return str(v).encode()
    if kind == "map_bytes":
        return base64.b64decode(v)
    if kind == "map_qty":
        return _len(1, str(v).encode())
    if kind == "map_time":
        return _encode_time(v)
    return b"".join(_len(1, str(x).encode()) for x in v)


def encode_message(obj: dict[str, Any], schema: Schema) -> bytes:
    """The protobuf message of a JSON object (fields in number order, map keys sorted, like gogo)."""
    out = bytearray()
    for number in sorted(schema):
        name, kind, sub = schema[number]
        repeated = kind.endswith("*")
        kind = kind.rstrip("*?")
        if kind == "inline":
            keys = {s[0] for s in sub.values()}
            part = {k: v for k, v in obj.items() if k in keys}
            if part:
                out += _encode_value(number, kind, sub, part)
            continue
        if name not in obj or obj[name] is None:
            continue
        value = obj[name]
        if kind in _MAPS:
            for k in sorted(value):
                entry = _len(1, k.encode()) + _len(2, _encode_map_value(kind, value[k]))
                out += _len(number, entry)
        elif repeated:
            for item in value:
                out += _encode_value(number, kind, sub, item)
        else:
            out += _encode_value(number, kind, sub, value)
    return bytes(out)


def encode(obj: dict[str, Any]) -> bytes:
    """A JSON object of a known kind as a ``k8s\x00`` + ``runtime.Unknown`` protobuf body."""
    schema = KINDS.get(obj.get("kind", ""))
    if schema is None:
        raise ProtobufError(f"no protobuf codec for kind {obj.get('kind')!r}", code=406)
    type_meta = _len(1, obj.get("apiVersion", "").encode()) + _len(2, obj["kind"].encode())
    unknown = _len(1, type_meta) + _len(2, encode_message(obj, schema)) + _len(3, b"") + _len(4, b"")
    return MAGIC + unknown


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it encodes, with apiVersion and kind.

    Raises:
        ProtobufError: 400 for a malformed body, 415 for a kind the sandbox has no codec for.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("provided object is not a protobuf message (no k8s\\x00 prefix)")
    unknown = decode_message(body[len(MAGIC):], _UNKNOWN)
    meta = unknown.get("typeMeta") or {}
    kind = meta.get("kind", "")
    if unknown.get("contentEncoding"):
        raise ProtobufError(f"unsupported content encoding {unknown['contentEncoding']!r}")
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json, application/yaml", code=415)
    obj = {"apiVersion": meta.get("apiVersion", ""), "kind": kind}
    obj.update(decode_message(unknown.get("raw") or b"", schema))
    return obj


def _accepts(accept: str) -> list[str]:
    return [part.split(";")[0].strip() for part in accept.split(",") if part.strip()]


def negotiate(accept: str, answer: tuple) -> tuple:
    """A JSON answer re-encoded as protobuf for a client that accepts nothing else.

    Clients that list JSON too (kubectl, client-go's typed clients send
    ``application/vnd.kubernetes.protobuf,application/json``) keep getting JSON,
    which they decode as well; a client that accepts only protobuf gets the object
    encoded with the tables above, or 406 for a kind without one, as the real
    server answers for a media type it cannot produce.
    """
    kinds = _accepts(accept)
    if not kinds or any(k in ("application/json", "*/*", "application/*", "application/yaml") or
                        k.startswith("text/") for k in kinds) or MEDIA_TYPE not in kinds:
        return answer
    code, body, ctype = answer[:3]
    if isinstance(body, bytes) and ctype == "application/json" and body.startswith(b"{"):
        body = json.loads(body)
    if not isinstance(body, dict):
        return answer
    try:
        data = encode(body)
    except ProtobufError:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 406,
                  "reason": "NotAcceptable", "message": f"only the following media types are accepted: "
                  f"application/json, application/yaml, {MEDIA_TYPE}"}
        return (406, status, "application/json", *answer[3:])
    return (code, data, MEDIA_TYPE, *answer[3:])
