"""`runbooks env init` and `runbooks env check` against the sandbox, through the command."""

from __future__ import annotations

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
    if first.state == "warning":  # a sandbox without the authorization API answers 404
        assert first.detail == "cannot check permissions (no SelfSubjectAccessReview API)"
    else:
        assert first.state == "ok", first.detail  # the sandbox's admin token may do everything
    assert rows[1].state == "warning" and "no declared permissions" in rows[1].detail
    checks = onboarding.check_env(Project(sandbox_env, sandbox_env / "notebooks"), "sandbox")
    assert checks[0].state == "ok" and checks[1].what == "expected_context" and checks[1].state == "ok"
