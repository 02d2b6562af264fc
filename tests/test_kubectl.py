"""The real kubectl against the sandbox kubeconfig, as an SRE would type it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from runbooks import kube

from helpers import wait_for

pytestmark = [pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  labels: {app: hello}
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: hello
        image: registry.example.com/hello:1.0.0
        ports:
        - containerPort: 8080
        resources:
          limits: {memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  selector: {app: hello}
  ports:
  - port: 80
    targetPort: 8080
"""


@pytest.fixture(scope="module")
def kubectl(sandbox, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kube-cache")
    env = dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), KUBECACHEDIR=str(cache), HOME=str(cache))

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["kubectl", *args], env=env, input=input, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def test_get_pods_all_namespaces(kubectl):
    out = kubectl("get", "pods", "-A").stdout
    header = out.splitlines()[0].split()
    assert header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    namespaces = {line.split()[0] for line in out.splitlines()[1:]}
    assert {"shop", "payments", "ingress-nginx", "cert-manager", "monitoring", "logging"} <= namespaces

    def crash_looping() -> bool:  # between its crashes a restarted pod shows Running for a while
        lines = kubectl("get", "pods", "-n", "shop").stdout.splitlines()
        return any(line.startswith("checkout-") and ("CrashLoopBackOff" in line or "OOMKilled" in line)
                   for line in lines)

    wait_for(crash_looping, timeout=300, interval=1, what="a checkout pod shown as CrashLoopBackOff or OOMKilled")


def test_get_pods_by_label_as_json(kubectl):
    data = json.loads(kubectl("get", "pods", "-n", "shop", "-l", "app=checkout", "-o", "json").stdout)
    assert data["kind"] == "List" and data["items"]
    assert all(p["metadata"]["labels"]["app"] == "checkout" for p in data["items"])


def test_describe_deployment(kubectl):
    out = kubectl("describe", "deployment", "checkout", "-n", "shop").stdout
    assert "Name:                   checkout" in out
    assert "Replicas:" in out and "unavailable" in out
    assert "NewReplicaSet:" in out and "OldReplicaSets:" in out


def test_logs(kubectl, cluster):
    pod = next(kube.iter_objects(cluster, "pods", "shop", label_selector="app=frontend"))
    out = kubectl("logs", pod["metadata"]["name"], "-n", "shop", "--tail=3").stdout
    assert len(out.splitlines()) == 3


def test_events_by_involved_object(kubectl, cluster):
    pod = next(p for p in kube.iter_objects(cluster, "pods", "shop", label_selector="app=checkout")
               if any(s.get("restartCount") for s in p["status"].get("containerStatuses", [])))
    name = pod["metadata"]["name"]
    out = kubectl("get", "events", "-n", "shop", "--field-selector", f"involvedObject.name={name}").stdout
    rows = out.splitlines()[1:]
    assert rows and all(name in row for row in rows)
    assert any("BackOff" in row for row in rows)


def test_get_certificates(kubectl):
    out = kubectl("get", "certificates", "-A").stdout
    assert out.splitlines()[0].split()[:3] == ["NAMESPACE", "NAME", "READY"]
    assert "checkout-tls" in out


def test_apply_server_side_rollout_scale_delete(kubectl, namespace, cluster):
    out = kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=MANIFEST).stdout
    assert "deployment.apps/hello serverside-applied" in out
    kubectl("rollout", "status", "deployment/hello", "-n", namespace, "--timeout=60s")
    kubectl("scale", "deployment/hello", "--replicas=3", "-n", namespace)
    wait_for(lambda: len(list(kube.iter_objects(cluster, "pods", namespace, label_selector="app=hello"))) == 3,
             what="3 pods after kubectl scale")
    ep = kube.get_object(cluster, "endpoints", namespace, "hello")
    wait_for(lambda: len((kube.get_object(cluster, "endpoints", namespace, "hello").get("subsets") or [{}])[0]
                         .get("addresses") or []) == 3, what="3 endpoints")
    assert ep["metadata"]["name"] == "hello"
    kubectl("delete", "deployment", "hello", "-n", namespace)
    wait_for(lambda: not list(kube.iter_objects(cluster, "pods", namespace, label_selector="app=hello")),
             what="pods gone")


def test_plain_apply_with_validation(kubectl, namespace):
    out = kubectl("apply", "-n", namespace, "-f", "-", input=MANIFEST).stdout
    assert "deployment.apps/hello created" in out
    bad = MANIFEST.replace("replicas: 2", "replicas: 2\n  bogusField: 1")
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert proc.returncode != 0 and "bogusField" in proc.stderr
