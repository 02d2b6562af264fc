"""charts/kube-runbooks (runbooks serve in a cluster) and the Alertmanager receiver configs we document."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from runbooks import deploy, errors
from runbooks_sandbox.observability import Observability

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kube-runbooks"
pytestmark = [pytest.mark.timeout(120)]


def _helm_or_none():
    try:
        return deploy.find_helm()
    except errors.PreflightFailed:
        return None


HELM = _helm_or_none()
needs_helm = pytest.mark.skipif(HELM is None, reason="Helm 4 is not installed (python tools/install_helm.py)")
needs_amtool = pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (prometheus-alertmanager) is not installed")


@pytest.fixture(autouse=True)
def helm_home(tmp_path, monkeypatch):
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_helm
def test_chart_lints():
    proc = helm("lint", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_helm
def test_chart_renders_runbooks_serve_and_its_service():
    proc = helm("template", "kr", str(CHART), "--namespace", "monitoring", "--set", "routes=routes: []",
                "--set", "schedules.runbooks.cluster-health.enabled=false")
    assert proc.returncode == 0, proc.stderr
    objs = {o["kind"]: o for o in deploy.parse_manifest(proc.stdout, "monitoring")}
    assert sorted(objs) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service",
                            "ServiceAccount"]
    for obj in objs.values():
        kubernetes_validate.validate(obj, "1.32", strict=True)
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[1] == "serve" and "--env=prod" in args and "--expose" in args
    assert "--routes=/etc/kube-runbooks/routes.yaml" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["RUNBOOKS_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kube-runbooks", "key": "token"}
    assert "value" not in env["RUNBOOKS_WEBHOOK_URL"]  # from the Secret, never a value
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert objs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    verbs = {v for rule in objs["ClusterRole"]["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}  # read-only: nothing is applied from an alert
    assert yaml.safe_load(objs["ConfigMap"]["data"]["env.yaml"])["prometheus_url"]


@needs_helm
def test_chart_needs_a_secret():
    proc = helm("template", "kr", str(CHART), "--set", "auth.existingSecret=")
    assert proc.returncode != 0 and "auth.existingSecret" in proc.stderr


def readme_receiver() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Alert-triggered runs", 1)[1]
    return next(b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "webhook_configs" in b)


@needs_amtool
def test_the_documented_receiver_is_a_valid_alertmanager_config(tmp_path):
    config = yaml.safe_load(readme_receiver())
    token = tmp_path / "token"
    token.write_text("x" * 32)
    hook = config["receivers"][-1]["webhook_configs"][0]
    hook["http_config"]["authorization"]["credentials_file"] = str(token)
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_amtool
def test_the_sandbox_alertmanager_sends_to_the_webhook(tmp_path, monkeypatch):
    for var in ("RUNBOOKS_SANDBOX_ALERT_WEBHOOK", "RUNBOOKS_SANDBOX_ALERT_TIMING"):
        monkeypatch.delenv(var, raising=False)
    obs = Observability(tmp_path, [], alert_webhook="http://127.0.0.1:1/alertmanager",
                        alert_webhook_token="t" * 32, alert_timing={"group_wait": "1s"})
    config = obs.alertmanager_config(tmp_path)
    [hook] = config["receivers"][1]["webhook_configs"]
    assert hook["url"] == "http://127.0.0.1:1/alertmanager" and hook["send_resolved"] is True
    token_file = Path(hook["http_config"]["authorization"]["credentials_file"])
    assert token_file.read_text() == "t" * 32 and token_file.stat().st_mode & 0o077 == 0
    assert "t" * 32 not in yaml.safe_dump(config)  # the token is in its file only
    assert config["route"]["group_wait"] == "1s" and config["route"]["repeat_interval"] == "12h"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(["amtool", "check-config", str(tmp_path / "am.yml")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = Observability(tmp_path, []).alertmanager_config(tmp_path)
    assert plain["receivers"] == [{"name": "null"}]
