"""Shared fixtures: a sandbox cluster in this process, throwaway namespaces, clients."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate  # noqa: F401  before runbooks, which skips it (lib/runbooks/__init__.py)
import pytest
import yaml

from runbooks import kube
from runbooks_sandbox import stack
from runbooks_sandbox.launch import Sandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """The suite and the runs it starts keep derived files (compressed plotly.js) in a throwaway cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RUNBOOKS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """The default scenario, served over HTTPS on a free port for the whole session."""
    started = datetime.now(UTC)  # the scenario is generated relative to this: tests compare with it, not now
    box = Sandbox(tmp_path_factory.mktemp("sandbox"), "default", tick=1.0).start()
    box.started = started
    yield box
    box.stop()


@pytest.fixture(scope="session")
def empty_sandbox(tmp_path_factory):
    """A sandbox with no scenario (only what tests create), for API semantics and bulk data."""
    box = Sandbox(tmp_path_factory.mktemp("empty-sandbox"), None, tick=1.0).start()
    yield box
    box.stop()


@pytest.fixture(scope="session")
def cluster(sandbox):
    return kube.connect(str(sandbox.kubeconfig), "sandbox")


@pytest.fixture(scope="session")
def empty_cluster(empty_sandbox):
    return kube.connect(str(empty_sandbox.kubeconfig), "sandbox")


def _make_namespace(box, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    rt = box.registry.lookup("", "v1", "namespaces")
    box.store.create(rt, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def namespace(sandbox):
    """A throwaway namespace in the default-scenario sandbox, removed afterwards."""
    name = _make_namespace(sandbox)
    yield name
    rt = sandbox.registry.lookup("", "v1", "namespaces")
    try:
        sandbox.store.delete(rt, None, name)
    except Exception:
        pass


@pytest.fixture
def empty_namespace(empty_sandbox):
    name = _make_namespace(empty_sandbox)
    yield name
    rt = empty_sandbox.registry.lookup("", "v1", "namespaces")
    try:
        empty_sandbox.store.delete(rt, None, name)
    except Exception:
        pass


@pytest.fixture
def sandbox_env(sandbox, tmp_path):
    """A project-like root whose parameters/sandbox/env.yaml points at the session sandbox."""
    root = tmp_path / "project"
    (root / "parameters" / "sandbox").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    src = ROOT / "parameters" / "sandbox"
    for f in src.glob("*.yaml"):
        if f.name != "env.yaml":
            shutil.copy(f, root / "parameters" / "sandbox" / f.name)
    env = {"description": "the test session's sandbox", **stack.env_settings(sandbox)}
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root
