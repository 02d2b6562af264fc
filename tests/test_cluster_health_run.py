"""cluster-health end to end, headless, the way a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from runbooks import kube

from helpers import wait_for

pytestmark = pytest.mark.notebook
ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = [sys.executable, "-m", "runbooks.cli"]


def runbooks(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, RUNBOOKS_HOME=str(root))
    return subprocess.run([*RUNBOOKS, "--project-dir", str(root), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def only_run(root: Path) -> Path:
    runs = sorted((root / "outputs" / "sandbox" / "cluster-health").iterdir())
    return runs[-1]


def test_default_scenario_exits_1_with_exactly_the_planted_findings(sandbox_env):
    proc = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir = only_run(sandbox_env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] and summary["exit_code"] == 1 and summary["kube_context"] == "sandbox"
    found = {(f["id"].rsplit("/", 2)[0] if f["id"].startswith("pod-") else f["id"], f["severity"])
             for f in summary["findings"]}
    assert found == {
        ("pod-crashloopbackoff/shop", "critical"),
        ("deployment-rollout-stalled/shop/checkout", "warning"),
        ("tls-expired/shop/checkout-tls", "critical"),
        ("tls-expiring/shop/cart-tls", "critical"),
        ("warning-events/BackOff", "info"),
        ("statefulset-update-stuck/shop/sessions", "warning"),  # sessions-2 on the new revision, never ready
        ("pod-not-ready/shop", "warning"),  # ... that pod
        ("warning-events/Unhealthy", "info"),  # ... its readiness probe
        ("daemonset-unavailable-pods/monitoring/node-exporter", "warning"),  # node-2's host port 9100 is taken
        ("pod-pending/monitoring", "warning"),  # ... so its pod there stays Pending
        ("warning-events/ProvisioningFailed", "info"),  # reports/report-archive: its StorageClass does not exist
        # reports: the batch, storage, scaling and quota problems planted there
        ("job-deadline-exceeded/reports/db-backfill", "warning"),
        ("cronjob-last-job-failed/reports/nightly-report", "warning"),
        ("cronjob-missed-schedule/reports/nightly-report", "warning"),  # its last schedule is over a day old
        ("pvc-pending/reports/report-archive", "warning"),
        ("hpa-at-max/reports/report-api", "warning"),
        ("pdb-blocks-drain/reports/report-api", "warning"),
        ("quota-near-limit/reports/reports-quota/pods", "warning"),
        # the control plane: an admission webhook and an aggregated API whose Services have no endpoint
        ("webhook-no-endpoints/report-policy/validate.reports.example.io", "warning"),  # failurePolicy Ignore
        ("service-no-endpoints/reports/report-policy-webhook", "critical"),
        ("apiservice-unavailable/v1beta1.custom.metrics.k8s.io", "warning"),  # MissingEndpoints
        ("service-no-endpoints/reports/report-metrics-adapter", "critical"),
        # web: the service-reachability hosts (targetPort naming a port the pods lack; scaled to 0)
        ("service-no-endpoints/web/newsletter", "critical"),
        ("service-no-endpoints/web/careers", "critical"),
    }
    assert summary["data_sources"]["kubernetes"]["state"] == "ok"
    html = (run_dir / "report.html").read_text()
    assert "checkout-tls" in html and "CrashLoopBackOff" in html
    assert len(re.findall(r"class=[\"']kr-plot[\"']", html)) == 2  # restarts and certificate expiry charts
    assert "import runbooks" not in html  # no code cells in the shared report
    assert str(run_dir) in proc.stdout


@pytest.fixture
def warnings_only_namespace(cluster):
    """A namespace whose only problems are warnings: a rollout stuck on a never-ready pod."""
    ns = f"warn-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": ns}})
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
           "spec": {"replicas": 2, "progressDeadlineSeconds": 1, "selector": {"matchLabels": {"app": "api"}},
                    "template": {"metadata": {"labels": {"app": "api"}},
                                 "spec": {"containers": [{"name": "api", "image": "example.com/api:1.0"}]}}}}
    cluster.apps.create_namespaced_deployment(ns, dep)
    wait_for(lambda: (kube.get_object(cluster, "deployments", ns, "api").get("status") or {})
             .get("availableReplicas") == 2, timeout=60, what="2 available")
    cluster.apps.patch_namespaced_deployment("api", ns, {"spec": {"template": {"metadata": {"annotations": {
        "sandbox.kube-runbooks.io/fail": "NotReady"}}}}})

    def stalled():
        d = kube.get_object(cluster, "deployments", ns, "api")
        return any(c.get("reason") == "ProgressDeadlineExceeded" for c in d["status"].get("conditions", []))

    wait_for(stalled, timeout=30, what="the rollout to exceed its deadline")
    yield ns
    cluster.core.delete_namespace(ns)


def test_warnings_below_fail_on_exit_0(sandbox_env, warnings_only_namespace):
    ns = warnings_only_namespace
    proc = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress",
                    "-p", "namespaces", f"[{ns}]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((only_run(sandbox_env) / "summary.json").read_text())
    severities = {f["id"].split("/")[0]: f["severity"] for f in summary["findings"]}
    assert severities["deployment-rollout-stalled"] == "warning"
    assert severities["pod-not-ready"] == "warning"
    assert "critical" not in severities.values()
    # a scoped run still reports what breaks the whole cluster (an unavailable aggregated API);
    # webhooks only when their namespaceSelector matches a scoped namespace
    assert all(f["resource"] is None or ns in f["resource"] or f["resource"].startswith(("APIService/", "Node/"))
               for f in summary["findings"])
    assert not any("WebhookConfiguration/" in (f["resource"] or "") for f in summary["findings"])
    proc = runbooks(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--no-progress",
                    "-p", "namespaces", f"[{ns}]", "--fail-on", "warning")
    assert proc.returncode == 1


def test_plain_papermill_works(sandbox, tmp_path):
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "cluster-health.ipynb"), str(out),
         "-p", "kubeconfig", str(sandbox.kubeconfig), "-p", "expected_context", "sandbox",
         "-y", "namespaces: [shop]", "--no-progress-bar"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import nbformat

    from runbooks.model import read_records

    state = read_records(nbformat.read(out, as_version=4))
    ids = {f["id"] for f in state["findings"]}
    assert "tls-expired/shop/checkout-tls" in ids
