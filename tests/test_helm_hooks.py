"""Everything Helm would send is in the plan: hooks (rendered, shown, hashed into the id) and, on
install, the chart's crds/. A changed hook gives another plan id."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runbooks import deploy, errors, parameters
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
