"""Everything Helm would send is in the plan: hooks (rendered, shown, hashed into the id) and, on
install, the chart's crds/. A changed hook gives another plan id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runbooks import deploy, errors, kube, model, parameters
from runbooks import runbook as rb

ROOT = Path(__file__).resolve().parents[1]
HOOK = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-pre
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-weight": "-5"
data:
  step: "STEP"
"""
TEST_HOOK = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-test
  annotations:
    "helm.sh/hook": test
data:
  step: "test"
"""
CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: NAME.example.com
spec:
  group: example.com
  names: {kind: KIND, plural: NAME, singular: SINGULAR}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def _helm():
    try:
        return deploy.find_helm()
    except errors.PreflightFailed:
        return None


pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(_helm() is None, reason="Helm 4 is not installed (python tools/install_helm.py)")]


@pytest.fixture(autouse=True)
def helm_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "helm-home"
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))


def chart(tmp_path, step: str, plural: str) -> Path:
    path = tmp_path / f"chart-{step}"
    shutil.copytree(ROOT / "charts" / "web-service", path)
    (path / "templates" / "hook.yaml").write_text(HOOK.replace("STEP", step))
    (path / "templates" / "test-hook.yaml").write_text(TEST_HOOK)
    (path / "crds").mkdir()
    (path / "crds" / "widgets.yaml").write_text(
        CRD.replace("NAME", plural).replace("KIND", plural.capitalize()[:-1]).replace("SINGULAR", plural[:-1]))
    return path


def plan(sandbox, cluster, namespace, chart_dir):
    helm = deploy.Helm(str(sandbox.kubeconfig), "sandbox", timeout=120)
    spec = deploy.ReleaseSpec("hooked", namespace, str(chart_dir), {
        "image": {"repository": "registry.example.com/web", "tag": "1.0.0"},
        "ingress": {"enabled": True, "host": f"{namespace}.example.com"}}, create_namespace=False)
    run = rb.Run("provision-service", parameters.MutatingParams(expected_context="sandbox"), cluster)
    return deploy.plan_release(run, helm, spec), helm, spec


def test_hooks_and_crds_are_in_the_plan_and_its_id(sandbox, cluster, namespace, tmp_path):
    plural = f"w{namespace.replace('-', '')}s"
    one, _, _ = plan(sandbox, cluster, namespace, chart(tmp_path, "one", plural))
    hooks = [c for c in one.changes if any("helm hook" in d["path"] for d in c.diff)]
    assert [(c.kind, c.name, c.operation) for c in hooks] == [("ConfigMap", "hooked-pre", "create")]
    assert "pre-install" in hooks[0].diff[0]["path"] and "templates/hook.yaml" in hooks[0].diff[0]["path"]
    assert not any(c.name == "hooked-test" for c in one.changes)  # test hooks run only under `helm test`
    crds = [c for c in one.changes if c.kind == "CustomResourceDefinition"]
    assert [c.name for c in crds] == [f"{plural}.example.com"]
    # shown: the plan's public form (summary.json, audit.jsonl) and the plan table hold them
    public = one.public()
    assert any(c["name"] == "hooked-pre" for c in public["changes"])
    table = deploy.plan_table(one)
    assert {"hook pre-install", "create"} <= set(table["action"])
    # the same chart again: the same id; the hook's content changed: another id
    again, _, _ = plan(sandbox, cluster, namespace, chart(tmp_path / "again", "one", plural))
    assert again.id == one.id
    two, _, _ = plan(sandbox, cluster, namespace, chart(tmp_path, "two", plural))
    assert two.id != one.id
    assert [c.canonical() for c in two.changes if c not in hooks] != [] and two.digest != one.digest


ROLLBACK_HOOK = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-undo
  annotations:
    "helm.sh/hook": pre-rollback,post-rollback
    "helm.sh/hook-delete-policy": before-hook-creation
data:
  step: "STEP"
"""


def rollback_chart(tmp_path, step: str) -> Path:
    path = tmp_path / f"rollback-chart-{step}"
    if not path.exists():
        shutil.copytree(ROOT / "charts" / "web-service", path)
        (path / "templates" / "rollback-hook.yaml").write_text(ROLLBACK_HOOK.replace("STEP", step))
    return path


def two_revisions(helm, namespace, chart_dir):
    """Revision 1 from ``chart_dir`` (its rollback hook), revision 2 another image: a release to roll back."""
    helm.run("uninstall", "undone", "--namespace", namespace, check=False)
    for tag in ("1.0.0", "2.0.0"):
        helm.run("upgrade", "--install", "undone", str(chart_dir), "--namespace", namespace,
                 "--set", "image.repository=registry.example.com/web", "--set", f"image.tag={tag}",
                 "--set", "ingress.enabled=false", "--set", "replicas=1")


def rollback_plan(run, helm, namespace):
    spec = deploy.ReleaseSpec("undone", namespace, "unused", {}, create_namespace=False)
    return deploy.plan_rollback(run, helm, spec, force=True), spec


def test_rollback_runs_the_target_revisions_rollback_hooks_and_they_are_in_the_plan(
        sandbox, cluster, namespace, tmp_path):
    helm = deploy.Helm(str(sandbox.kubeconfig), "sandbox", timeout=120)
    run = rb.Run("provision-service", parameters.MutatingParams(expected_context="sandbox"), cluster)
    two_revisions(helm, namespace, rollback_chart(tmp_path, "one"))
    one, spec = rollback_plan(run, helm, namespace)
    assert one is not None and one.kwargs["to"] == 1
    hooks = [c for c in one.changes if any("helm hook" in d["path"] for d in c.diff)]
    assert [(c.kind, c.name, c.operation) for c in hooks] == [("ConfigMap", "undone-undo", "create")]
    assert "pre-rollback,post-rollback" in hooks[0].diff[0]["path"]
    assert "templates/rollback-hook.yaml" in hooks[0].diff[0]["path"]
    assert any(c.kind == "Deployment" for c in one.changes)  # the objects the rollback changes come first
    assert {"hook pre-rollback,post-rollback"} <= set(deploy.plan_table(one)["action"])
    assert any(c["name"] == "undone-undo" for c in one.public()["changes"])
    # the same history again: the same id; revision 1's rollback hook changed: another id
    two_revisions(helm, namespace, rollback_chart(tmp_path, "one"))
    assert rollback_plan(run, helm, namespace)[0].id == one.id
    two_revisions(helm, namespace, rollback_chart(tmp_path, "two"))
    two, _ = rollback_plan(run, helm, namespace)
    assert two.id != one.id
    assert [c.canonical() for c in two.changes if c.name != "undone-undo"] == \
        [c.canonical() for c in one.changes if c.name != "undone-undo"]  # only the hook differs

    # approved: helm rolls back, runs the hook, and the audit log and the recorded plan list it
    params = parameters.MutatingParams(expected_context="sandbox", dry_run=False, approve_plan=two.id,
                                       run_dir=str(tmp_path / "run"))
    approved = rb.Run("provision-service", params, cluster)
    model.local_records(clear=True)
    result = deploy.apply_rollback(approved, two, helm, spec)
    assert result.applied and result.ok, result
    assert helm.history("undone", namespace)[-1]["description"] == "Rollback to 1"
    hook = kube.request(cluster, "GET", f"/api/v1/namespaces/{namespace}/configmaps/undone-undo")
    assert hook["data"] == {"step": "two"}
    audit = [json.loads(line) for line in approved.audit_path().read_text().splitlines()]
    assert {a["plan_id"] for a in audit} == {two.id}
    assert any(a["change"]["name"] == "undone-undo" and "pre-rollback" in a["change"]["diff"][0]["path"]
               for a in audit)
    summary_plan = model.fold_records(model.local_records(clear=True))["plan"]
    assert summary_plan["applied"] and any(c["name"] == "undone-undo" for c in summary_plan["changes"])
