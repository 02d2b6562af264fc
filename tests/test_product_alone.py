"""The product installs and runs without the sandbox: its own distribution, in a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def product_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of the product only (no sandbox distribution)."""
    venv = tmp_path_factory.mktemp("product-venv")
    source = tmp_path_factory.mktemp("product-source")  # a copy: building leaves build/ behind
    shutil.copytree(ROOT, source, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".sandbox", "outputs", "build", "*.egg-info", "__pycache__", "runbooks_sandbox"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
                         capture_output=True, text=True, timeout=800)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-4000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run([str(venv / "bin" / "runbooks"), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env, stdin=subprocess.DEVNULL)


def test_the_sandbox_is_not_installed_with_the_product(product_venv):
    proc = subprocess.run([str(product_venv / "bin" / "python"), "-c", "import runbooks_sandbox"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'runbooks_sandbox'" in proc.stderr
    freeze = subprocess.run([str(product_venv / "bin" / "python"), "-m", "pip", "freeze"],
                            capture_output=True, text=True).stdout.lower()
    assert "jsonpatch" not in freeze and "kubernetes-validate" not in freeze and "kube-runbooks-sandbox" not in freeze


def test_help_list_and_a_missing_sandbox_say_what_to_do(product_venv, sandbox_env):
    helped = _run(product_venv, "--help")
    assert helped.returncode == 0 and "run" in helped.stdout and "(not installed)" in helped.stdout
    listed = _run(product_venv, "--project-dir", str(sandbox_env), "list")
    assert listed.returncode == 0 and "cluster-health" in listed.stdout, listed.stderr
    missing = _run(product_venv, "sandbox", "up")
    assert missing.returncode == 2 and "pip install -e lib/runbooks_sandbox" in missing.stderr
    # the model named by the product's `runbooks.runbooks` entry point validates, before any kernel
    bad = _run(product_venv, "--project-dir", str(sandbox_env), "run", "cluster-health", "--env", "sandbox",
               "-p", "restart_threshold", "0")
    assert bad.returncode == 2 and "'restart_threshold' = 0 is not allowed" in bad.stderr, bad.stdout + bad.stderr


@pytest.mark.notebook
def test_cluster_health_runs_against_a_sandbox_from_the_other_environment(product_venv, sandbox_env):
    proc = _run(product_venv, "--project-dir", str(sandbox_env), "run", "cluster-health", "--env", "sandbox",
                "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the sandbox's planted critical findings
    assert "cluster-health on sandbox: findings (exit 1)" in proc.stdout
    runs = sorted((sandbox_env / "outputs" / "sandbox" / "cluster-health").iterdir())
    assert (runs[-1] / "report.html").is_file()


def test_the_default_routes_ship_with_the_product(product_venv):
    proc = subprocess.run([str(product_venv / "bin" / "python"), "-c",
                           "from runbooks import routes; print(sorted({r.runbook for r in routes.load_routes()}))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['certificate-rotation', 'incident-investigation']"
