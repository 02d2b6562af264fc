"""The shipped chart and the real helm binary against the sandbox API.

Helm's release storage and kubectl's typed commands send protobuf bodies,
client-go lists with watch-list streams (``sendInitialEvents``), and
``DeleteOptions.dryRun`` travels in the body: the sandbox must answer all of
it as the real API server does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from runbooks import deploy, errors
from runbooks.secrets import redacted_digest

from helpers import raw_request, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "web-service"


def _helm_or_none():
    try:
        return deploy.find_helm()
    except errors.PreflightFailed:
        return None


HELM_BIN = _helm_or_none()
needs_helm = pytest.mark.skipif(HELM_BIN is None, reason="Helm 4 is not installed (python tools/install_helm.py)")
pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def helm_home(tmp_path_factory, monkeypatch):
    """Keep Helm's cache and config out of the home directory."""
    home = tmp_path_factory.getbasetemp() / "helm-home"
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))


def helm(sandbox, *args, stdin=None, check=True, timeout=120):
    proc = subprocess.run([HELM_BIN, *args, "--kubeconfig", str(sandbox.kubeconfig), "--kube-context", "sandbox"],
                          input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render(*sets, release="web", namespace="apps"):
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run([HELM_BIN, *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return deploy.parse_manifest(proc.stdout, namespace)


FULL = ("ingress.host=web.example.com", "secretEnv.DB_PASSWORD=pa55w0rd", "config.LOG_LEVEL=info",
        "autoscaling.enabled=true", "podDisruptionBudget.enabled=true")


# ---- the chart -------------------------------------------------------------------------------


@needs_helm
def test_chart_renders_every_object_the_issue_asks_for():
    objs = {o["kind"]: o for o in render(*FULL)}
    assert sorted(objs) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress",
                            "PodDisruptionBudget", "Secret", "Service"]
    pod = objs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert "checksum/config" in pod["metadata"]["annotations"]
    assert container["readinessProbe"]["httpGet"]["port"] == "http" and container["livenessProbe"]
    assert container["resources"]["limits"]["memory"] == "256Mi"
    assert "replicas" not in objs["Deployment"]["spec"]  # the HPA owns replicas
    ann = objs["Ingress"]["metadata"]["annotations"]
    assert ann["external-dns.alpha.kubernetes.io/hostname"] == "web.example.com"
    assert ann["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert objs["Ingress"]["spec"]["tls"] == [{"hosts": ["web.example.com"], "secretName": "web-tls"}]
    assert objs["Secret"]["data"] == {"DB_PASSWORD": "cGE1NXcwcmQ="}


@needs_helm
def test_a_config_change_rolls_the_pods():
    def checksum(*sets):
        dep = next(o for o in render("ingress.host=a.example.com", *sets) if o["kind"] == "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum("config.A=1") == checksum("config.A=1")
    assert checksum("config.A=1") != checksum("config.A=2")
    assert checksum("secretEnv.B=x1") != checksum("secretEnv.B=x2")


@needs_helm
def test_rendered_manifests_pass_the_kubernetes_schemas():
    for obj in render(*FULL):
        kubernetes_validate.validate(obj, "1.32", strict=True)


@needs_helm
@pytest.mark.parametrize("value, words", [
    ("containerPort=70000", "maximum"), ("replicaCount=-1", "minimum"), ("ingress.host=Bad_Host", "pattern"),
])
def test_the_values_schema_refuses_bad_values(value, words):
    proc = subprocess.run([HELM_BIN, "template", "w", str(CHART), "--set", "ingress.host=a.example.com",
                           "--set", value], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and words in proc.stderr


@needs_helm
@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_rendered_manifests_pass_kubectl_server_side_dry_run(sandbox, namespace):
    manifest = yaml.safe_dump_all(render(*FULL, namespace=namespace))
    proc = subprocess.run(["kubectl", "--kubeconfig", str(sandbox.kubeconfig), "apply", "--dry-run=server",
                           "-n", namespace, "-f", "-"], input=manifest, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == 7
    assert "created" in proc.stdout


# ---- helm against the sandbox ----------------------------------------------------------------


@needs_helm
def test_install_status_history_upgrade_rollback_uninstall(sandbox, cluster, namespace):
    base = ["--namespace", namespace, "--set", f"ingress.host={namespace}.example.com",
            "--set", "secretEnv.TOKEN=abcdef123", "--wait=watcher", "--timeout", "60s"]
    out = helm(sandbox, "upgrade", "--install", "web", str(CHART), *base, "-o", "json")
    assert json.loads(out.stdout)["info"]["status"] == "deployed"
    secrets = cluster.core.list_namespaced_secret(namespace, label_selector="owner=helm,name=web").items
    assert [s.metadata.name for s in secrets] == ["sh.helm.release.v1.web.v1"]
    assert secrets[0].type == "helm.sh/release.v1" and secrets[0].metadata.labels["status"] == "deployed"
    status = json.loads(helm(sandbox, "status", "web", "-n", namespace, "-o", "json").stdout)
    assert status["version"] == 1
    dep = cluster.apps.read_namespaced_deployment("web", namespace)
    assert dep.metadata.annotations["meta.helm.sh/release-name"] == "web"
    assert dep.status.available_replicas == 2

    helm(sandbox, "upgrade", "web", str(CHART), *base, "--set", "image.tag=1.1.0")
    image = cluster.apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":1.1.0")
    helm(sandbox, "rollback", "web", "1", "-n", namespace, "--wait=watcher", "--timeout", "60s")
    history = json.loads(helm(sandbox, "history", "web", "-n", namespace, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert history[-1]["description"] == "Rollback to 1"
    image = cluster.apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":1.0.0")

    helm(sandbox, "uninstall", "web", "-n", namespace, "--wait", "--timeout", "60s")
    assert cluster.core.list_namespaced_secret(namespace, label_selector="owner=helm").items == []
    wait_for(lambda: not cluster.apps.list_namespaced_deployment(namespace).items, what="deployment removed")
    assert not [s for s in cluster.core.list_namespaced_service(namespace).items if s.metadata.name == "web"]


@needs_helm
def test_a_crash_looping_upgrade_fails_within_the_timeout(sandbox, cluster, namespace):
    base = ["--namespace", namespace, "--set", f"ingress.host={namespace}.example.com"]
    helm(sandbox, "install", "web", str(CHART), *base, "--set", "replicaCount=1", "--wait=watcher",
         "--timeout", "60s")
    proc = helm(sandbox, "upgrade", "web", str(CHART), *base, "--set", "replicaCount=1", "--set", "image.tag=2.0.0",
                "--set-string", "podAnnotations.sandbox\\.kube-runbooks\\.io/fail=CrashLoopBackOff",
                "--wait=watcher", "--timeout", "8s", check=False, timeout=60)
    assert proc.returncode != 0 and "not ready" in proc.stderr
    history = json.loads(helm(sandbox, "history", "web", "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["deployed", "failed"]


# ---- the API behaviour those clients need ------------------------------------------------------


@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_typed_creates_send_protobuf_and_work(sandbox, cluster, namespace):
    env = {"KUBECONFIG": str(sandbox.kubeconfig), "PATH": "/usr/bin:/bin"}
    name = f"t-{uuid.uuid4().hex[:8]}"

    def kubectl(*args):
        proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    kubectl("create", "namespace", name)
    try:
        kubectl("-n", namespace, "create", "secret", "generic", "s1", "--from-literal=k=v4lue")
        kubectl("-n", namespace, "create", "configmap", "c1", "--from-literal=a=b")
        # the product's client shows Secret values as digests: equal to the digest of the value sent
        assert cluster.core.read_namespaced_secret("s1", namespace).data == {"k": redacted_digest("djRsdWU=")}
        assert cluster.core.read_namespaced_config_map("c1", namespace).data == {"a": "b"}
        assert cluster.core.read_namespace(name).status.phase == "Active"
        # DeleteOptions.dryRun is in the body: nothing may be deleted
        assert "server dry run" in kubectl("-n", namespace, "delete", "secret", "s1", "--dry-run=server")
        assert cluster.core.read_namespaced_secret("s1", namespace)
    finally:
        kubectl("delete", "namespace", name)


def test_protobuf_bodies_of_unknown_kinds_get_415(cluster, namespace):
    body = b"k8s\x00" + bytes([0x0A, 0x0F, 0x0A, 0x07]) + b"apps/v1" + bytes([0x12, 0x04]) + b"Fake"
    status, _, text = raw_request(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body,
                                  content_type="application/vnd.kubernetes.protobuf")
    assert status == 415 and "unknown format" in text


def test_watch_list_sends_initial_events_then_the_bookmark(cluster, namespace):
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "one"}})
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    query = [("watch", "true"), ("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan"),
             ("allowWatchBookmarks", "true"), ("timeoutSeconds", "1")]
    status, _, text = raw_request(cluster, "GET", path, query=query)
    events = [json.loads(line) for line in text.splitlines() if line]
    assert status == 200
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [("ADDED", "one"), ("BOOKMARK", None)]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= \
        int(events[0]["object"]["metadata"]["resourceVersion"])


def test_watch_list_needs_not_older_than_and_bookmarks(cluster, namespace):
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    status, _, text = raw_request(cluster, "GET", path, query=[("watch", "true"), ("sendInitialEvents", "true")])
    assert status == 422
    assert "resourceVersionMatch" in text and "allowWatchBookmarks" in text
    status, _, text = raw_request(cluster, "GET", path, query=[("sendInitialEvents", "true")])
    assert status == 422 and "forbidden for list" in text
