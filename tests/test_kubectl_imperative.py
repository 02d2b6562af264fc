"""The real kubectl's imperative commands (typed clients sending protobuf), auth, drain, top, explain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest
from kubernetes import client

from helpers import wait_for

pytestmark = [pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]


@pytest.fixture(scope="module")
def kubectl(sandbox, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kube-cache")
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), KUBECACHEDIR=str(cache), HOME=str(cache))

    def run(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def test_create_every_typed_kind(kubectl, cluster, namespace):
    n = ("-n", namespace)
    creates = [
        (("deployment", "web", "--image=nginx:1.27", "--replicas=2", "--port=80"), "deployment.apps/web created"),
        (("service", "clusterip", "web", "--tcp=80:8080"), "service/web created"),
        (("serviceaccount", "robot"), "serviceaccount/robot created"),
        (("ingress", "web", "--class=nginx", "--rule=web.example.com/*=web:80,tls=web-tls"),
         "ingress.networking.k8s.io/web created"),
        (("pdb", "web", "--selector=app=web", "--min-available=1"), "poddisruptionbudget.policy/web created"),
        (("job", "once", "--image=busybox:1.36", "--", "echo", "hi"), "job.batch/once created"),
        (("cronjob", "nightly", "--image=busybox:1.36", "--schedule=0 2 * * *", "--", "echo", "hi"),
         "cronjob.batch/nightly created"),
        (("role", "pod-reader", "--verb=get,list", "--resource=pods,pods/log"),
         "role.rbac.authorization.k8s.io/pod-reader created"),
        (("rolebinding", "robot-reader", "--role=pod-reader", f"--serviceaccount={namespace}:robot"),
         "rolebinding.rbac.authorization.k8s.io/robot-reader created"),
        (("quota", "small", "--hard=pods=20,configmaps=10"), "resourcequota/small created"),
    ]
    for args, expected in creates:
        assert kubectl(*n, "create", *args).stdout.strip() == expected
    apps = cluster.apps.read_namespaced_deployment("web", namespace)
    assert apps.spec.replicas == 2 and apps.spec.template.spec.containers[0].ports[0].container_port == 80
    svc = cluster.core.read_namespaced_service("web", namespace)
    assert (svc.spec.ports[0].port, svc.spec.ports[0].target_port, svc.spec.selector) == (80, 8080, {"app": "web"})
    net = client.NetworkingV1Api(cluster.api_client).read_namespaced_ingress("web", namespace)
    assert net.spec.rules[0].http.paths[0].backend.service.port.number == 80
    assert net.spec.tls[0].secret_name == "web-tls" and net.spec.ingress_class_name == "nginx"
    pdb = client.PolicyV1Api(cluster.api_client).read_namespaced_pod_disruption_budget("web", namespace)
    assert pdb.spec.min_available == 1
    batch = client.BatchV1Api(cluster.api_client)
    assert batch.read_namespaced_job("once", namespace).spec.template.spec.containers[0].command == ["echo", "hi"]
    assert batch.read_namespaced_cron_job("nightly", namespace).spec.schedule == "0 2 * * *"
    role = client.RbacAuthorizationV1Api(cluster.api_client).read_namespaced_role("pod-reader", namespace)
    assert role.rules[0].api_groups == [""] and role.rules[0].resources == ["pods", "pods/log"]
    # create job --from=cronjob: the cronjob's template, owned by it, marked as a manual run
    assert kubectl(*n, "create", "job", "manual", "--from=cronjob/nightly").stdout.strip() == \
        "job.batch/manual created"
    manual = batch.read_namespaced_job("manual", namespace)
    assert manual.metadata.annotations["cronjob.kubernetes.io/instantiate"] == "manual"
    assert manual.metadata.owner_references[0].name == "nightly"
    wait_for(lambda: (j := batch.read_namespaced_job("manual", namespace)).status and j.status.succeeded == 1,
             timeout=30, what="the manual Job to succeed")
    out = kubectl(*n, "get", "jobs,cronjobs").stdout
    assert "manual   Complete   1/1" in out and "nightly   0 2 * * *   <none>" in out


def test_cluster_scoped_creates_and_token(kubectl, cluster, namespace):
    suffix = uuid.uuid4().hex[:6]
    assert kubectl("create", "clusterrole", f"node-reader-{suffix}", "--verb=get,list", "--resource=nodes").stdout \
        .strip() == f"clusterrole.rbac.authorization.k8s.io/node-reader-{suffix} created"
    kubectl("create", "clusterrolebinding", f"node-reader-{suffix}", f"--clusterrole=node-reader-{suffix}",
            f"--serviceaccount={namespace}:reader")
    kubectl("create", "priorityclass", f"high-{suffix}", "--value=1000", "--description=test")
    try:
        kubectl("-n", namespace, "create", "serviceaccount", "reader")
        token = kubectl("-n", namespace, "create", "token", "reader", "--duration=1h").stdout.strip()
        assert token.count(".") == 2
        as_token = ("--token", token)
        assert "node-1" in kubectl(*as_token, "get", "nodes").stdout
        denied = kubectl(*as_token, "get", "pods", "-n", namespace, check=False)
        assert denied.returncode == 1
        assert denied.stderr.strip() == (
            f'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:{namespace}:reader" '
            f'cannot list resource "pods" in API group "" in the namespace "{namespace}"')
        who = kubectl(*as_token, "auth", "whoami", "-o", "json").stdout
        assert json.loads(who)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
    finally:
        kubectl("delete", "clusterrolebinding", f"node-reader-{suffix}")
        kubectl("delete", "clusterrole", f"node-reader-{suffix}")
        kubectl("delete", "priorityclass", f"high-{suffix}")


def test_auth_can_i(kubectl, namespace):
    assert kubectl("auth", "can-i", "create", "deployments", "-n", namespace).stdout.strip() == "yes"
    kubectl("-n", namespace, "create", "serviceaccount", "viewer")
    kubectl("-n", namespace, "create", "rolebinding", "viewer", "--clusterrole=view",
            f"--serviceaccount={namespace}:viewer")
    as_sa = f"--as=system:serviceaccount:{namespace}:viewer"

    def can(*args: str) -> str:
        proc = kubectl("auth", "can-i", *args, "-n", namespace, as_sa, check=False)
        return proc.stdout.strip()

    assert can("list", "pods") == "yes"
    assert can("get", "pods/log") == "yes"
    assert can("create", "deployments") == "no"
    assert can("get", "secrets") == "no"
    assert kubectl("auth", "can-i", "get", "pods", "-n", namespace, "--as=jane", "--as-group=system:masters") \
        .stdout.strip() == "yes"
    listing = kubectl("auth", "can-i", "--list", "-n", namespace, as_sa).stdout
    assert "deployments.apps" in listing and "[get list watch]" in listing


def test_drain_against_a_blocking_pdb(kubectl, cluster, namespace):
    node = f"drain-{uuid.uuid4().hex[:6]}"
    cluster.core.create_node({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
                              "spec": {"unschedulable": True},  # nothing else lands here
                              "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    try:
        cluster.apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": "pinned"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pinned"}},
                                                      "template": {"metadata": {"labels": {"app": "pinned"}}, "spec": {
                                                          "nodeName": node,
                                                          "containers": [{"name": "c", "image": "nginx:1.27"}]}}}})
        kubectl("-n", namespace, "create", "pdb", "pinned", "--selector=app=pinned", "--min-available=2")
        policy = client.PolicyV1Api(cluster.api_client)
        wait_for(lambda: (p := policy.read_namespaced_pod_disruption_budget("pinned", namespace)).status
                 and p.status.current_healthy == 2, timeout=30, what="two healthy pods behind the PDB")
        blocked = kubectl("drain", node, "--pod-selector=app=pinned", "--timeout=3s", check=False, timeout=60)
        assert blocked.returncode == 1
        assert "Cannot evict pod as it would violate the pod's disruption budget." in blocked.stderr
        assert "global timeout reached: 3s" in blocked.stderr
        assert len(cluster.core.list_namespaced_pod(namespace, label_selector="app=pinned").items) == 2
        policy.patch_namespaced_pod_disruption_budget("pinned", namespace, {"spec": {"minAvailable": 0}})
        wait_for(lambda: policy.read_namespaced_pod_disruption_budget("pinned", namespace)
                 .status.disruptions_allowed == 2, timeout=30, what="the PDB to allow the drain")
        drained = kubectl("drain", node, "--pod-selector=app=pinned", "--timeout=30s", timeout=90)
        assert f"node/{node} drained" in drained.stdout
        assert "evicted" in drained.stdout
    finally:
        cluster.apps.delete_namespaced_deployment("pinned", namespace)
        cluster.core.delete_node(node)


def test_top_explain_readyz_api_resources(kubectl):
    top = kubectl("top", "nodes").stdout.splitlines()
    assert top[0].split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    assert {line.split()[0] for line in top[1:]} >= {"node-1", "node-2", "node-3"}
    pods = kubectl("top", "pods", "-n", "shop").stdout.splitlines()
    assert pods[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"] and len(pods) > 3
    assert kubectl("get", "--raw", "/readyz").stdout == "ok"
    explain = kubectl("explain", "cronjob.spec.concurrencyPolicy").stdout
    assert "GROUP:      batch" in explain and "FIELD: concurrencyPolicy <string>" in explain
    explain = kubectl("explain", "poddisruptionbudgets.spec").stdout
    assert "minAvailable" in explain
    resources = kubectl("api-resources", "-o", "name").stdout.split()
    for name in ("persistentvolumes", "resourcequotas", "limitranges", "podtemplates", "replicationcontrollers",
                 "componentstatuses", "controllerrevisions.apps", "cronjobs.batch", "jobs.batch",
                 "leases.coordination.k8s.io", "priorityclasses.scheduling.k8s.io", "storageclasses.storage.k8s.io",
                 "networkpolicies.networking.k8s.io", "runtimeclasses.node.k8s.io", "events.events.k8s.io",
                 "apiservices.apiregistration.k8s.io", "certificatesigningrequests.certificates.k8s.io",
                 "flowschemas.flowcontrol.apiserver.k8s.io", "validatingwebhookconfigurations.admissionregistration.k8s.io",
                 "selfsubjectaccessreviews.authorization.k8s.io", "tokenreviews.authentication.k8s.io",
                 "pods.metrics.k8s.io", "nodes.metrics.k8s.io", "clusterrolebindings.rbac.authorization.k8s.io"):
        assert name in resources, name
    for kinds in ("cronjobs,jobs,leases,priorityclasses,storageclasses,pv,pvc,networkpolicies",
                  "roles,rolebindings,clusterroles,resourcequotas,limitranges,podtemplates,rc,controllerrevisions"):
        kubectl("get", kinds, "-A")
