"""Server-side Tables: the cells kube-apiserver prints for `kubectl get`, compared with real output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbooks_sandbox import tables
from runbooks_sandbox.resources import Registry, from_crd

NOW = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
REG = Registry()


def ago(**kw) -> str:
    return (NOW - timedelta(**kw)).strftime("%Y-%m-%dT%H:%M:%SZ")


def rt(api_version: str, kind: str):
    found = REG.by_kind(api_version, kind)
    assert found is not None
    return found


def cells(api_version: str, kind: str, obj: dict) -> list:
    table = tables.to_table(rt(api_version, kind), [obj], now=NOW)
    return table["rows"][0]["cells"]


def headers(api_version: str, kind: str, *, wide: bool = False) -> list[str]:
    table = tables.to_table(rt(api_version, kind), [], now=NOW)
    return [c["name"] for c in table["columnDefinitions"] if wide or c["priority"] == 0]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (-1, "0s"), (-5, "<invalid>"), (59, "59s"), (119, "119s"), (120, "2m"), (150, "2m30s"),
    (599, "9m59s"), (600, "10m"), (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (5 * 3600 + 300, "5h5m"),
    (8 * 3600 + 300, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (2 * 86400 + 3 * 3600, "2d3h"),
    (8 * 86400 + 3600, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"), (800 * 86400, "2y70d"),
    (9 * 365 * 86400, "9y"),
])
def test_human_duration_matches_apimachinery(seconds, text):
    assert tables.human_duration(seconds) == text


def pod(name="checkout-5d8f7c9b4-x2x9q", *, phase="Running", statuses=(), init_statuses=(), init=(),
        containers=("checkout",), conditions=(), **extra) -> dict:
    obj = {
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": ago(hours=2), "uid": "u1",
                     "resourceVersion": "42"},
        "spec": {"nodeName": "node-2", "containers": [{"name": c, "image": "x"} for c in containers],
                 "initContainers": list(init)},
        "status": {"phase": phase, "podIP": "10.244.2.7", "podIPs": [{"ip": "10.244.2.7"}],
                   "conditions": list(conditions), "containerStatuses": list(statuses),
                   "initContainerStatuses": list(init_statuses)},
    }
    for key, value in extra.items():
        obj.setdefault(key, {}).update(value)
    return obj


def test_pod_columns_are_the_real_ones():
    assert headers("v1", "Pod") == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert headers("v1", "Pod", wide=True) == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                                               "Nominated Node", "Readiness Gates"]


def test_running_pod():
    obj = pod(statuses=[{"name": "checkout", "ready": True, "restartCount": 0,
                         "state": {"running": {"startedAt": ago(hours=2)}}}],
              conditions=[{"type": "Ready", "status": "True"}])
    # kubectl get pods -o wide:
    # checkout-5d8f7c9b4-x2x9q   1/1   Running   0   120m   10.244.2.7   node-2   <none>   <none>
    assert cells("v1", "Pod", obj) == ["checkout-5d8f7c9b4-x2x9q", "1/1", "Running", "0", "120m",
                                       "10.244.2.7", "node-2", "<none>", "<none>"]


def test_crashloop_with_restarts_and_last_restart_age():
    obj = pod(statuses=[{"name": "checkout", "ready": False, "restartCount": 5,
                         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                      "finishedAt": ago(minutes=2)}}}])
    assert cells("v1", "Pod", obj)[:5] == ["checkout-5d8f7c9b4-x2x9q", "0/1", "CrashLoopBackOff", "5 (2m ago)", "120m"]


def test_oomkilled_image_pull_backoff_and_not_ready():
    oom = pod(statuses=[{"name": "checkout", "ready": False, "restartCount": 3,
                         "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": ago(seconds=5)}},
                         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                      "finishedAt": ago(minutes=3)}}}])
    assert cells("v1", "Pod", oom)[1:4] == ["0/1", "OOMKilled", "3 (3m ago)"]
    pull = pod(phase="Pending", statuses=[{"name": "checkout", "ready": False, "restartCount": 0,
                                           "state": {"waiting": {"reason": "ImagePullBackOff"}}}])
    assert cells("v1", "Pod", pull)[1:4] == ["0/1", "ImagePullBackOff", "0"]
    unready = pod(statuses=[{"name": "checkout", "ready": False, "restartCount": 0,
                             "state": {"running": {"startedAt": ago(hours=1)}}}])
    assert cells("v1", "Pod", unready)[1:4] == ["0/1", "Running", "0"]


def test_completed_pod_has_row_condition():
    obj = pod(phase="Succeeded", statuses=[{"name": "checkout", "ready": False, "restartCount": 0,
                                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}])
    row = tables.to_table(rt("v1", "Pod"), [obj], now=NOW)["rows"][0]
    assert row["cells"][1:3] == ["0/1", "Completed"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]


def test_terminating_and_exit_code_without_reason():
    obj = pod(statuses=[{"name": "checkout", "ready": True, "restartCount": 0,
                         "state": {"running": {}}}], metadata={"deletionTimestamp": ago(seconds=10)})
    assert cells("v1", "Pod", obj)[2] == "Terminating"
    exited = pod(statuses=[{"name": "checkout", "ready": False, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 2}}}])
    assert cells("v1", "Pod", exited)[2] == "ExitCode:2"


def test_init_containers():
    waiting = pod(phase="Pending", init=[{"name": "migrate", "image": "m"}],
                  init_statuses=[{"name": "migrate", "ready": False, "restartCount": 4,
                                  "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                  statuses=[{"name": "checkout", "ready": False, "restartCount": 0,
                             "state": {"waiting": {"reason": "PodInitializing"}}}])
    assert cells("v1", "Pod", waiting)[1:4] == ["0/1", "Init:CrashLoopBackOff", "4"]
    running = pod(phase="Pending", init=[{"name": "migrate", "image": "m"}, {"name": "seed", "image": "s"}],
                  init_statuses=[{"name": "migrate", "ready": False, "restartCount": 0,
                                  "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                                 {"name": "seed", "ready": False, "restartCount": 0,
                                  "state": {"running": {}}}])
    assert cells("v1", "Pod", running)[2] == "Init:1/2"


def test_sidecar_init_containers_count_as_containers():
    obj = pod(init=[{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
              init_statuses=[{"name": "proxy", "ready": True, "started": True, "restartCount": 1,
                              "state": {"running": {}},
                              "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(minutes=30)}}}],
              statuses=[{"name": "checkout", "ready": True, "restartCount": 0, "state": {"running": {}}}],
              conditions=[{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}])
    assert cells("v1", "Pod", obj)[1:4] == ["2/2", "Running", "1 (30m ago)"]


def test_readiness_gates():
    obj = pod(statuses=[{"name": "checkout", "ready": True, "restartCount": 0, "state": {"running": {}}}],
              conditions=[{"type": "example.com/lb", "status": "True"}],
              spec={"readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/x"}]})
    assert cells("v1", "Pod", obj)[-1] == "1/2"


def test_deployment_replicaset_statefulset_daemonset():
    template = {"spec": {"containers": [{"name": "checkout", "image": "reg/checkout:2.4.1"},
                                        {"name": "proxy", "image": "envoy:1.30"}]}}
    dep = {"metadata": {"name": "checkout", "creationTimestamp": ago(days=5, hours=3)},
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "checkout"}}, "template": template},
           "status": {"readyReplicas": 2, "updatedReplicas": 1, "availableReplicas": 2}}
    assert headers("apps/v1", "Deployment") == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    # checkout   2/3   1   2   5d3h   checkout,proxy   reg/checkout:2.4.1,envoy:1.30   app=checkout
    assert cells("apps/v1", "Deployment", dep) == ["checkout", "2/3", 1, 2, "5d3h", "checkout,proxy",
                                                   "reg/checkout:2.4.1,envoy:1.30", "app=checkout"]
    rs = {"metadata": {"name": "checkout-5d8f7c9b4", "creationTimestamp": ago(minutes=125)},
          "spec": {"replicas": 2, "template": template,
                   "selector": {"matchLabels": {"app": "checkout", "pod-template-hash": "5d8f7c9b4"}}},
          "status": {"replicas": 2, "readyReplicas": 0}}
    assert headers("apps/v1", "ReplicaSet") == ["Name", "Desired", "Current", "Ready", "Age"]
    assert cells("apps/v1", "ReplicaSet", rs) == ["checkout-5d8f7c9b4", 2, 2, 0, "125m", "checkout,proxy",
                                                  "reg/checkout:2.4.1,envoy:1.30",
                                                  "app=checkout,pod-template-hash=5d8f7c9b4"]
    sts = {"metadata": {"name": "redis", "creationTimestamp": ago(days=40)},
           "spec": {"replicas": 3, "template": template}, "status": {"readyReplicas": 3}}
    assert headers("apps/v1", "StatefulSet") == ["Name", "Ready", "Age"]
    assert cells("apps/v1", "StatefulSet", sts)[:3] == ["redis", "3/3", "40d"]
    ds = {"metadata": {"name": "fluent-bit", "creationTimestamp": ago(days=3)},
          "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                      "values": ["fluent-bit", "fb"]}]},
                   "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                         "containers": [{"name": "fluent-bit", "image": "fluent-bit:3.0"}]}}},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert headers("apps/v1", "DaemonSet") == ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available",
                                               "Node Selector", "Age"]
    assert cells("apps/v1", "DaemonSet", ds) == ["fluent-bit", 3, 3, 2, 3, 2, "kubernetes.io/os=linux", "3d",
                                                 "fluent-bit", "fluent-bit:3.0", "app in (fb,fluent-bit)"]


def test_services():
    assert headers("v1", "Service") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    kube = {"metadata": {"name": "kubernetes", "creationTimestamp": ago(days=12)},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}
    # kubernetes   ClusterIP   10.96.0.1   <none>   443/TCP   12d   <none>
    assert cells("v1", "Service", kube) == ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "12d",
                                            "<none>"]
    lb = {"metadata": {"name": "ingress-nginx-controller", "creationTimestamp": ago(days=12)},
          "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.12.4"], "selector": {"app": "ingress-nginx"},
                   "ports": [{"port": 80, "nodePort": 31080, "protocol": "TCP"},
                             {"port": 443, "nodePort": 31443, "protocol": "TCP"}]}}
    assert cells("v1", "Service", lb)[1:5] == ["LoadBalancer", "10.96.12.4", "<pending>",
                                               "80:31080/TCP,443:31443/TCP"]
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
    assert cells("v1", "Service", lb)[3] == "203.0.113.10"
    headless = {"metadata": {"name": "redis", "creationTimestamp": ago(days=1)},
                "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 6379}]}}
    assert cells("v1", "Service", headless)[1:5] == ["ClusterIP", "None", "<none>", "6379/TCP"]


def test_endpoints_and_endpointslices():
    ep = {"metadata": {"name": "checkout", "creationTimestamp": ago(hours=1)},
          "subsets": [{"addresses": [{"ip": f"10.244.1.{i}"} for i in range(1, 6)],
                       "ports": [{"port": 8080}]}]}
    assert cells("v1", "Endpoints", ep) == [
        "checkout", "10.244.1.1:8080,10.244.1.2:8080,10.244.1.3:8080 + 2 more...", "60m"]
    assert cells("v1", "Endpoints", {"metadata": {"name": "e"}})[1] == "<none>"
    es = {"metadata": {"name": "checkout-x7k2p", "creationTimestamp": ago(hours=1)}, "addressType": "IPv4",
          "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["10.244.1.1"]}]}
    assert headers("discovery.k8s.io/v1", "EndpointSlice") == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert cells("discovery.k8s.io/v1", "EndpointSlice", es) == ["checkout-x7k2p", "IPv4", "8080", "10.244.1.1",
                                                                 "60m"]
    es["endpoints"] = []
    assert cells("discovery.k8s.io/v1", "EndpointSlice", es)[3] == "<unset>"


def test_nodes():
    node = {"metadata": {"name": "node-1", "creationTimestamp": ago(days=30),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/os": "linux"}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                    "kernelVersion": "6.1.0-18-amd64",
                                    "containerRuntimeVersion": "containerd://1.7.13"}}}
    assert headers("v1", "Node") == ["Name", "Status", "Roles", "Age", "Version"]
    assert cells("v1", "Node", node) == ["node-1", "Ready,SchedulingDisabled", "control-plane", "30d", "v1.32.4",
                                         "10.0.0.11", "<none>", "Debian GNU/Linux 12 (bookworm)",
                                         "6.1.0-18-amd64", "containerd://1.7.13"]
    bare = {"metadata": {"name": "node-2", "creationTimestamp": ago(days=30)}, "status": {}}
    assert cells("v1", "Node", bare)[1:3] == ["Unknown", "<none>"]


def test_events():
    ev = {"metadata": {"name": "checkout-5d8f7c9b4-x2x9q.17a3f0c2", "creationTimestamp": ago(hours=2)},
          "involvedObject": {"kind": "Pod", "name": "checkout-5d8f7c9b4-x2x9q",
                             "fieldPath": "spec.containers{checkout}"},
          "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container checkout\n",
          "firstTimestamp": ago(hours=2), "lastTimestamp": ago(minutes=1), "count": 27,
          "source": {"component": "kubelet", "host": "node-2"}}
    assert headers("v1", "Event") == ["Last Seen", "Type", "Reason", "Object", "Message"]
    # LAST SEEN  TYPE     REASON   OBJECT                           SUBOBJECT                 SOURCE
    assert cells("v1", "Event", ev) == [
        "60s", "Warning", "BackOff", "pod/checkout-5d8f7c9b4-x2x9q", "spec.containers{checkout}",
        "kubelet, node-2", "Back-off restarting failed container checkout", "120m", 27,
        "checkout-5d8f7c9b4-x2x9q.17a3f0c2"]
    new_style = {"metadata": {"name": "e2"}, "involvedObject": {"kind": "Deployment", "name": "checkout"},
                 "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up",
                 "eventTime": "2025-01-10T11:55:00.000000Z", "reportingComponent": "deployment-controller"}
    row = cells("v1", "Event", new_style)
    assert row[0] == "5m" and row[5] == "deployment-controller" and row[8] == 1


def test_small_core_kinds():
    secret = {"metadata": {"name": "shop-tls", "creationTimestamp": ago(days=55)}, "type": "kubernetes.io/tls",
              "data": {"tls.crt": "eA==", "tls.key": "eA=="}}
    assert cells("v1", "Secret", secret) == ["shop-tls", "kubernetes.io/tls", 2, "55d"]
    cm = {"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(days=9)},
          "data": {"ca.crt": "x"}, "binaryData": {"b": "eA=="}}
    assert cells("v1", "ConfigMap", cm) == ["kube-root-ca.crt", 2, "9d"]
    sa = {"metadata": {"name": "default", "creationTimestamp": ago(days=9)}}
    assert cells("v1", "ServiceAccount", sa) == ["default", 0, "9d"]
    ns = {"metadata": {"name": "shop", "creationTimestamp": ago(days=9)}, "status": {"phase": "Active"}}
    assert cells("v1", "Namespace", ns) == ["shop", "Active", "9d"]


def test_ingress_and_ingressclass():
    ing = {"metadata": {"name": "shop", "creationTimestamp": ago(days=2)},
           "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["shop.example.com"]}],
                    "rules": [{"host": "shop.example.com"}, {"host": "api.shop.example.com"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    assert headers("networking.k8s.io/v1", "Ingress") == ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
    assert cells("networking.k8s.io/v1", "Ingress", ing) == [
        "shop", "nginx", "shop.example.com,api.shop.example.com", "203.0.113.10", "80, 443", "2d"]
    bare = {"metadata": {"name": "x", "creationTimestamp": ago(days=2)}, "spec": {"rules": [{"http": {}}]}}
    assert cells("networking.k8s.io/v1", "Ingress", bare)[1:5] == ["<none>", "*", "", "80"]
    many = {"metadata": {"name": "m"}, "spec": {"rules": [{"host": f"h{i}.example.com"} for i in range(5)]}}
    assert cells("networking.k8s.io/v1", "Ingress", many)[2] == \
        "h0.example.com,h1.example.com,h2.example.com + 2 more..."
    cls = {"metadata": {"name": "nginx", "creationTimestamp": ago(days=2)},
           "spec": {"controller": "k8s.io/ingress-nginx"}}
    assert cells("networking.k8s.io/v1", "IngressClass", cls) == ["nginx", "k8s.io/ingress-nginx", "<none>", "2d"]


def test_hpa_and_pdb():
    hpa = {"metadata": {"name": "frontend", "creationTimestamp": ago(days=2)},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "frontend"}, "minReplicas": 2,
                    "maxReplicas": 10,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                        "type": "Utilization", "averageUtilization": 70}}}]},
           "status": {"currentReplicas": 3, "currentMetrics": [
               {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45}}}]}}
    assert headers("autoscaling/v2", "HorizontalPodAutoscaler") == [
        "Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"]
    assert cells("autoscaling/v2", "HorizontalPodAutoscaler", hpa) == [
        "frontend", "Deployment/frontend", "45%/70%", "2", 10, 3, "2d"]
    del hpa["status"]["currentMetrics"]
    assert cells("autoscaling/v2", "HorizontalPodAutoscaler", hpa)[2] == "<unknown>/70%"
    pdb = {"metadata": {"name": "checkout", "creationTimestamp": ago(days=2)},
           "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}}
    assert cells("policy/v1", "PodDisruptionBudget", pdb) == ["checkout", "50%", "N/A", 1, "2d"]


CERT_CRD = {
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {"group": "cert-manager.io", "scope": "Namespaced",
             "names": {"kind": "Certificate", "plural": "certificates", "singular": "certificate"},
             "versions": [{"name": "v1", "served": True, "storage": True, "additionalPrinterColumns": [
                 {"jsonPath": '.status.conditions[?(@.type=="Ready")].status', "name": "Ready", "type": "string"},
                 {"jsonPath": ".spec.secretName", "name": "Secret", "type": "string"},
                 {"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "priority": 1, "type": "string"},
                 {"jsonPath": '.status.conditions[?(@.type=="Ready")].message', "name": "Status", "priority": 1,
                  "type": "string"},
                 {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}]}]},
}


def test_custom_resources_use_printer_columns():
    cert_rt = from_crd(CERT_CRD)[0]
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "shop-tls", "namespace": "shop", "creationTimestamp": ago(days=55)},
            "spec": {"secretName": "shop-tls", "issuerRef": {"name": "letsencrypt-prod"}},
            "status": {"conditions": [{"type": "Issuing", "status": "False"},
                                      {"type": "Ready", "status": "True",
                                       "message": "Certificate is up to date and has not expired"}]}}
    table = tables.to_table(cert_rt, [cert], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Ready", "Secret", "Issuer", "Status", "Age"]
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 1, 1, 0]
    # NAME       READY   SECRET     AGE
    # shop-tls   True    shop-tls   55d
    assert table["rows"][0]["cells"] == ["shop-tls", "True", "shop-tls", "letsencrypt-prod",
                                         "Certificate is up to date and has not expired", "55d"]
    pending = {"metadata": {"name": "new", "creationTimestamp": ago(seconds=30)}, "spec": {}}
    assert tables.to_table(cert_rt, [pending], now=NOW)["rows"][0]["cells"] == ["new", None, None, None, None,
                                                                               "30s"]


def test_custom_resource_without_columns_gets_age_and_crds_get_created_at():
    plain = from_crd({"metadata": {"name": "widgets.example.com"},
                      "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"},
                               "versions": [{"name": "v1"}]}})[0]
    table = tables.to_table(plain, [{"metadata": {"name": "w", "creationTimestamp": ago(minutes=5)}}], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["w", "5m"]
    crd = {"metadata": {"name": "certificates.cert-manager.io", "creationTimestamp": "2025-01-01T08:30:00Z"}}
    table = tables.to_table(rt("apiextensions.k8s.io/v1", "CustomResourceDefinition"), [crd], now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
    assert table["rows"][0]["cells"] == ["certificates.cert-manager.io", "2025-01-01T08:30:00Z"]


def test_jsonpath_subset():
    obj = {"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]},
           "spec": {"ports": [{"port": 80}, {"port": 443}], "labels": {"app.kubernetes.io/name": "x"},
                    "replicas": 3, "paused": False}}
    assert tables.jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert tables.jsonpath(obj, "{.spec.ports[1].port}") == [443]
    assert tables.jsonpath(obj, ".spec.ports[*].port") == [80, 443]
    assert tables.jsonpath(obj, ".spec.labels['app.kubernetes.io/name']") == ["x"]
    assert tables.jsonpath(obj, ".spec.missing.deeper") == []
    assert tables.jsonpath(obj, ".spec.replicas") == [3]


def test_row_objects_and_list_metadata():
    objs = [{"metadata": {"name": "a", "namespace": "shop", "uid": "1", "creationTimestamp": ago(hours=1)},
             "data": {"k": "v"}}]
    cm = rt("v1", "ConfigMap")
    meta = tables.to_table(cm, objs, now=NOW, resource_version="77", continue_token="abc", remaining=5)
    assert meta["kind"] == "Table" and meta["apiVersion"] == "meta.k8s.io/v1"
    assert meta["metadata"] == {"resourceVersion": "77", "continue": "abc", "remainingItemCount": 5}
    assert meta["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                         "metadata": objs[0]["metadata"]}
    full = tables.to_table(cm, objs, now=NOW, include_object="Object")["rows"][0]["object"]
    assert full["data"] == {"k": "v"} and full["kind"] == "ConfigMap" and full["apiVersion"] == "v1"
    assert "object" not in tables.to_table(cm, objs, now=NOW, include_object="None")["rows"][0]
    assert tables.to_table(cm, objs, now=NOW, include_columns=False)["columnDefinitions"] == []
    col = tables.to_table(cm, objs, now=NOW)["columnDefinitions"][0]
    assert col["name"] == "Name" and col["format"] == "name" and col["description"].startswith("Name must be unique")
    with pytest.raises(ValueError, match="includeObject"):
        tables.to_table(cm, objs, now=NOW, include_object="Everything")
