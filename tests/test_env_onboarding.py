"""`runbooks env init` and `runbooks env check` against the sandbox, through the command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from runbooks import kube, onboarding
from runbooks.environments import Project

pytestmark = pytest.mark.timeout(180)


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def runbooks(root, *args):
    return subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), *args],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, RUNBOOKS_HOME=str(root)))


def test_init_writes_a_checked_env_file(sandbox, sandbox_env):
    proc = runbooks(sandbox_env, "env", "init", "staging", "--context", "sandbox",
                    "--kubeconfig", str(sandbox.kubeconfig))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = yaml.safe_load((sandbox_env / "parameters" / "staging" / "env.yaml").read_text())
    assert written["expected_context"] == "sandbox" and written["kube_context"] == "sandbox"
    assert written["kubeconfig"] == str(sandbox.kubeconfig)
    assert "authenticated" in proc.stdout and "wrote" in proc.stdout
    again = runbooks(sandbox_env, "env", "init", "staging", "--context", "sandbox",
                     "--kubeconfig", str(sandbox.kubeconfig))
    assert again.returncode == 2 and "exists" in again.stderr


def test_init_refuses_an_unreachable_context_and_writes_nothing(sandbox, sandbox_env):
    proc = runbooks(sandbox_env, "env", "init", "prod", "--context", "no-such-context",
                    "--kubeconfig", str(sandbox.kubeconfig))
    assert proc.returncode == 2 and "no-such-context" in proc.stderr
    assert not (sandbox_env / "parameters" / "prod" / "env.yaml").exists()


def test_check_names_each_failure_and_exits_2(sandbox, sandbox_env):
    path = sandbox_env / "parameters" / "sandbox" / "env.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(prometheus_url=dead_url(), alertmanager_url=None, elasticsearch_url=None)
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    proc = runbooks(sandbox_env, "env", "check", "sandbox")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout
    assert "API server (context sandbox)" in out and "authenticated" in out
    assert "runbook incident-investigation" in out and "runbook cluster-health" in out
    assert "not configured in env sandbox (alertmanager_url in env.yaml)" in out
    assert f"prometheus {cfg['prometheus_url']}" in out and "failed" in out
    assert "prometheus" in proc.stderr  # the reason, named


def test_permissions_come_from_self_subject_access_reviews(sandbox, sandbox_env):
    """Asked of the API server per verb and resource; without the API the row says so (a warning)."""
    cluster = kube.connect(str(sandbox.kubeconfig), "sandbox")
    rows = onboarding.check_permissions(cluster, ["incident-investigation", "unknown-runbook"])
    first = rows[0]
    assert first.what == "runbook incident-investigation"
    assert first.state == "ok", first.detail  # the sandbox's admin (system:masters) may do everything
    assert rows[1].state == "warning" and "no declared permissions" in rows[1].detail
    checks = onboarding.check_env(Project(sandbox_env, sandbox_env / "notebooks"), "sandbox")
    assert checks[0].state == "ok" and checks[1].what == "expected_context" and checks[1].state == "ok"


@pytest.fixture
def viewer_token(sandbox, namespace):
    """A ServiceAccount bound cluster-wide to the default `view` ClusterRole, and a token for it."""
    admin = kube.connect(str(sandbox.kubeconfig), "sandbox")
    kube.request(admin, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}})
    binding = f"{namespace}-viewer"
    kube.request(admin, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": binding},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}]})
    answer = kube.request(admin, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/viewer/token",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 600}})
    yield answer["status"]["token"]
    kube.request(admin, "DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{binding}")


def test_check_names_the_permission_a_narrower_identity_lacks(sandbox, sandbox_env, tmp_path, viewer_token):
    """A ServiceAccount bound to `view` may read but not read Secrets or patch: named before any run."""
    token = viewer_token
    kc = tmp_path / "reader-kubeconfig"
    kc.write_text(sandbox.kubeconfig.read_text().replace(sandbox.token, token))
    path = sandbox_env / "parameters" / "sandbox" / "env.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(kubeconfig=str(kc), prometheus_url=None, alertmanager_url=None, elasticsearch_url=None)
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))
    proc = runbooks(sandbox_env, "env", "check", "sandbox")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "authenticated" in proc.stdout
    rows = {r.what: r for r in onboarding.check_env(Project(sandbox_env, sandbox_env / "notebooks"), "sandbox")}
    health = rows["runbook cluster-health"]
    # view: no nodes, no Secrets, no admission webhooks or APIServices (cluster-health's control plane checks)
    assert health.state == "failed" and health.detail == (
        "missing permission: list nodes, list secrets, list mutatingwebhookconfigurations.admissionregistration.k8s.io, "
        "list validatingwebhookconfigurations.admissionregistration.k8s.io, list apiservices.apiregistration.k8s.io")
    incident = rows["runbook incident-investigation"]
    assert incident.state == "failed" and incident.detail == "missing permission: list secrets, patch deployments.apps"
    audit = rows["runbook dns-audit"]  # view reads everything; its in-cluster view needs a probe pod and exec
    assert audit.state == "failed" and audit.detail == (
        "missing permission: create pods in default, delete pods in default, get pods/exec in default, "
        "create pods/exec in default")
    assert "runbook cluster-health: missing permission: list nodes, list secrets" in proc.stderr

    # the run itself stops before any check, naming the first permission it lacks as a finding
    run = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "forbidden: list nodes in all namespaces" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_a_run_scoped_to_a_namespace_needs_its_permissions_only_there(sandbox, sandbox_env, tmp_path, namespace):
    """An identity with a RoleBinding in one namespace (common for a team) runs cluster-health scoped to it;
    unscoped, the same identity is stopped before any check, naming the cluster-wide permission."""
    admin = kube.connect(str(sandbox.kubeconfig), "sandbox")
    kube.request(admin, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "team"}})
    kube.request(admin, "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "team", "namespace": namespace}]})
    token = kube.request(admin, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/team/token",
                         body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 600}})["status"]["token"]
    kc = tmp_path / "team-kubeconfig"
    kc.write_text(sandbox.kubeconfig.read_text().replace(sandbox.token, token))
    path = sandbox_env / "parameters" / "sandbox" / "env.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg.update(kubeconfig=str(kc), prometheus_url=None, alertmanager_url=None, elasticsearch_url=None)
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not None}))

    scoped = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress",
                      "-p", "namespaces", f'["{namespace}"]')
    out = scoped.stdout + scoped.stderr
    assert scoped.returncode in (0, 1), out
    assert "forbidden: list pods" not in out and "Traceback" not in out
    (summary,) = (sandbox_env / "outputs" / "sandbox" / "cluster-health").glob("*/summary.json")
    findings = {f["id"]: f for f in json.loads(summary.read_text())["findings"]}
    assert findings["check-not-readable/nodes"]["severity"] == "info"  # said, not silently skipped

    unscoped = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress")
    out = unscoped.stdout + unscoped.stderr
    assert unscoped.returncode == 2, out
    assert "forbidden: list pods in all namespaces" in out and "Traceback" not in out
