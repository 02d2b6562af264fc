"""Plan / approve / apply through `runbooks run` against the sandbox (a rollout restart)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbooks import kube, plans
from runbooks.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def restarted_at(cluster, namespace):
    obj = kube.request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
    return (obj["spec"]["template"]["metadata"].get("annotations") or {}).get(plans.RESTARTED_AT)


@pytest.fixture
def web(cluster, namespace):
    labels = {"app": "web"}
    kube.request(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
    })
    # rolled out: the controller stops writing its status (an approved write carries the resourceVersion)
    deadline = time.monotonic() + 30
    while True:
        d = kube.request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
        st = d.get("status") or {}
        if st.get("observedGeneration") == d["metadata"]["generation"] and st.get("availableReplicas") == 1:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    return namespace


def run(project, namespace, *args):
    return CliRunner().invoke(main, [
        "--project-dir", str(project), "--notebooks-dir", str(FIXTURES),
        "run", "restart", "--env", "sandbox", "-p", "namespace", namespace, "-p", "deployment", "web",
        *args,
    ], catch_exceptions=False)


def latest_run(project) -> Path:
    return sorted((project / "outputs" / "sandbox" / "restart").iterdir())[-1]


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_dry_run_then_stale_approval_then_approval(sandbox_env, cluster, web):
    # 1. dry run: a plan id, validated, nothing changed, no audit
    result = run(sandbox_env, web)
    assert result.exit_code == 0, result.output
    plan_id = re.search(r"plan ([0-9a-f]{12}): 1 change\(s\), not applied", result.output).group(1)
    summary = json.loads((latest_run(sandbox_env) / "summary.json").read_text())
    assert summary["plan"]["id"] == plan_id and summary["plan"]["validated"] is True
    assert summary["plan"]["applied"] is False
    assert summary["plan"]["changes"][0]["resource"] == f"Deployment/{web}/web"
    assert summary["kube_context"] == "sandbox"
    assert restarted_at(cluster, web) is None
    assert not (latest_run(sandbox_env) / "audit.jsonl").exists()

    # 2. a stale id: exit 2, nothing applied
    result = run(sandbox_env, web, "--approve", "0123456789ab")
    assert result.exit_code == 2, result.output
    assert "PlanMismatch" in result.output and "Nothing was applied" in result.output
    assert restarted_at(cluster, web) is None
    assert not (latest_run(sandbox_env) / "audit.jsonl").exists()

    # 3. the printed id: applied, audited, verified by the notebook itself
    result = run(sandbox_env, web, "--approve", plan_id)
    assert result.exit_code == 0, result.output
    assert f"plan {plan_id}: 1 change(s), applied" in result.output
    stamp = restarted_at(cluster, web)
    assert stamp
    run_dir = latest_run(sandbox_env)
    (line,) = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert line["plan_id"] == plan_id and line["result"] == "applied"
    assert line["run_id"] == run_dir.name and line["context"] == "sandbox"
    assert line["change"]["diff"][0]["to"] == stamp
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["plan"]["applied"] is True and summary["parameters"]["dry_run"] is False


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_an_id_approved_for_one_env_does_not_apply_in_another(sandbox_env, cluster, web):
    """The same changes against the same cluster under another --env name: another id, exit 2."""
    import shutil

    result = run(sandbox_env, web)
    assert result.exit_code == 0, result.output
    plan_id = re.search(r"plan ([0-9a-f]{12}): 1 change\(s\), not applied", result.output).group(1)
    shutil.copytree(sandbox_env / "parameters" / "sandbox", sandbox_env / "parameters" / "prod")
    result = CliRunner().invoke(main, [
        "--project-dir", str(sandbox_env), "--notebooks-dir", str(FIXTURES),
        "run", "restart", "--env", "prod", "-p", "namespace", web, "-p", "deployment", "web",
        "--approve", plan_id], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "PlanMismatch" in result.output and f"approved plan {plan_id} does not match" in result.output
    assert restarted_at(cluster, web) is None
    run_dir = sorted((sandbox_env / "outputs" / "prod" / "restart").iterdir())[-1]
    assert not (run_dir / "audit.jsonl").exists()
