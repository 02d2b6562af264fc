"""The API server taken away mid-run: exit 3, and summary.json and the report name the step."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runbooks_sandbox import launch

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


@pytest.mark.notebook
@pytest.mark.timeout(240)
def test_the_api_server_killed_mid_run(tmp_path):
    # the API server in a process of its own, so that it can be killed like a real one (SIGKILL)
    state_dir = tmp_path / "sandbox"
    server = subprocess.Popen([sys.executable, "-m", "runbooks_sandbox", "serve", "--state-dir", str(state_dir),
                               "--scenario", "default", "--api-only", "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while launch.read_state(state_dir) is None:
            assert server.poll() is None, "the sandbox did not start"
            assert time.monotonic() < deadline, "the sandbox did not start in time"
            time.sleep(0.2)
        kubeconfig = launch.read_state(state_dir)["kubeconfig"]
        root = tmp_path / "project"
        (root / "parameters" / "gone").mkdir(parents=True)
        (root / "notebooks").mkdir()
        (root / "parameters" / "gone" / "env.yaml").write_text(yaml.safe_dump(
            {"kubeconfig": kubeconfig, "kube_context": "sandbox", "expected_context": "sandbox"}))
        signals = tmp_path / "signals"
        signals.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "--notebooks-dir", str(FIXTURES),
             "run", "steps", "--env", "gone", "--no-progress", "-p", "signal_dir", str(signals)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (signals / "ready").exists():  # the kernel is in the step, the API answered preflight
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the notebook never reached its step"
            time.sleep(0.1)
    finally:
        server.kill()  # the API server goes away mid-run, its connections with it
        server.wait(timeout=30)
    (signals / "go").write_text("")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, out + err
    run_dir = next((root / "outputs" / "gone" / "steps").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]["cell_index"] == 5  # of the executed notebook (papermill adds a cell)
    assert summary["error"]["message"].startswith("step 'Diagnosis: pods' (cell 5)")
    assert "Unavailable" in summary["error"]["message"]
    assert "Diagnosis: pods" in (run_dir / "report.html").read_text()
    assert "step 'Diagnosis: pods'" in out
