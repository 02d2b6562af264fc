"""The product installs and runs without the sandbox: its own distribution, in a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)


def dockerfile_sources() -> list[str]:
    """What the Dockerfile COPYs into the image's build (the product and nothing else)."""
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += [s.rstrip("/") for s in line.split()[1:-1] if not s.startswith("--")]
    return sources


@pytest.fixture(scope="module")
def product_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of exactly what the Dockerfile copies (no sandbox distribution)."""
    venv = tmp_path_factory.mktemp("product-venv")
    source = tmp_path_factory.mktemp("product-source")  # a copy: building leaves build/ behind
    for rel in dockerfile_sources():
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, source / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, source / rel)
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


def test_the_runbooks_ship_inside_the_package(product_venv, tmp_path):
    """No checkout: `runbooks list` shows the packaged runbooks; a project adds and overrides."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "RUNBOOKS_HOME",
                                                              "RUNBOOKS_NOTEBOOKS")}
    bare = tmp_path / "bare"
    bare.mkdir()
    listed = subprocess.run([str(product_venv / "bin" / "runbooks"), "list"], capture_output=True, text=True,
                            timeout=120, cwd=bare, env=env, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")), listed.stdout
    packaged = subprocess.run([str(product_venv / "bin" / "python"), "-c",
                               "from runbooks.environments import PACKAGED_NOTEBOOKS as p; print(p)"],
                              capture_output=True, text=True, timeout=60, env=env)
    assert "site-packages" in packaged.stdout and not Path(packaged.stdout.strip()).is_symlink()
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "parameters").mkdir()
    nb = json.loads((ROOT / "notebooks" / "cluster-health.ipynb").read_text())
    nb["cells"][0]["source"] = ["# My cluster health: the team's own variant\n"]
    (project / "notebooks" / "cluster-health.ipynb").write_text(json.dumps(nb))
    (project / "notebooks" / "team-check.ipynb").write_text(json.dumps(nb))
    mine = subprocess.run([str(product_venv / "bin" / "runbooks"), "--project-dir", str(project), "list"],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert mine.returncode == 0, mine.stderr
    rows = dict(line.split(None, 1) for line in mine.stdout.splitlines())
    assert sorted(rows) == sorted([*names, "team-check"])
    assert rows["cluster-health"].startswith("My cluster health")  # the project's own wins
    assert not rows["dns-audit"].startswith("My cluster health")


def test_the_default_routes_ship_with_the_product(product_venv):
    proc = subprocess.run([str(product_venv / "bin" / "python"), "-c",
                           "from runbooks import routes; print(sorted({r.runbook for r in routes.load_routes()}))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['certificate-rotation', 'incident-investigation']"
