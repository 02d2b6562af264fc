"""SIGTERM (or SIGINT) of `runbooks run` during an apply: the change being sent is finished and
audited, nothing after it is sent, the run exits 3, and audit.jsonl lists exactly what was applied."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbooks import kube
from runbooks.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def args(project, namespace, *extra):
    return ["--project-dir", str(project), "--notebooks-dir", str(FIXTURES), "run", "slow-apply",
            "--env", "sandbox", "--no-progress", "-p", "namespace", namespace, *extra]


def configmaps(cluster, namespace):
    return sorted(c["metadata"]["name"] for c in kube.iter_objects(cluster, "configmaps", namespace)
                  if c["metadata"]["name"].startswith("step-"))


@pytest.mark.notebook
@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_apply_audits_exactly_what_was_applied(sandbox_env, cluster, namespace, signum):
    dry = CliRunner().invoke(main, args(sandbox_env, namespace), catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    plan_id = re.search(r"plan ([0-9a-f]{12}): 8 change\(s\), not applied", dry.output).group(1)

    proc = subprocess.Popen([sys.executable, "-m", "runbooks.cli", *args(sandbox_env, namespace, "--approve", plan_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = sandbox_env / "outputs" / "sandbox" / "slow-apply"
    deadline = time.monotonic() + 120
    while True:  # wait until the apply is under way: two changes audited
        audits = list(runs.glob("*/audit.jsonl"))
        if audits and len(audits[0].read_text().splitlines()) >= 2:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the apply never started"
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    lines = [json.loads(x) for x in audits[0].read_text().splitlines()]
    assert all(line["result"] == "applied" and line["plan_id"] == plan_id for line in lines)
    audited = sorted(line["change"]["name"] for line in lines)
    assert 2 <= len(audited) < 8  # stopped mid-apply ...
    assert configmaps(cluster, namespace) == audited  # ... and the audit is exactly what was applied
    summary = json.loads((audits[0].parent / "summary.json").read_text())
    assert summary["error"]["kind"] == "interrupted" and summary["exit_code"] == 3
    assert summary["plan"]["applied_changes"] and len(summary["plan"]["applied_changes"]) == len(audited)
    assert "Mitigation: create the ConfigMaps" in summary["error"]["message"]
