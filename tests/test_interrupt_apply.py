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

    # the same approval again finishes the job: only what is left is applied
    again = CliRunner().invoke(main, args(sandbox_env, namespace, "--approve", plan_id), catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert configmaps(cluster, namespace) == [f"step-{i}" for i in range(8)]
    latest = sorted(runs.glob("*/audit.jsonl"))[-1]
    assert latest != audits[0]
    rest = sorted(json.loads(x)["change"]["name"] for x in latest.read_text().splitlines())
    assert sorted(audited + rest) == [f"step-{i}" for i in range(8)] and not set(audited) & set(rest)


def test_a_resume_needs_exactly_the_rest_of_the_approved_plan(tmp_path):
    from runbooks import parameters, plans
    from runbooks import runbook as rb

    def change(i):
        return plans.Change(operation="delete", kind="ConfigMap", namespace="n", name=f"step-{i}")

    approved = plans.Plan([change(0), change(1), change(2)], binding={"env": "prod"})
    earlier = tmp_path / "runs" / "20260101T000000Z"
    earlier.mkdir(parents=True)
    applied = [{"result": "applied", "change": change(0).public()}]
    (earlier / "summary.json").write_text(json.dumps({"plan": {**approved.public(), "applied_changes": applied}}))
    params = parameters.MutatingParams(dry_run=False, approve_plan=approved.id, expected_context="x",
                                       run_dir=str(tmp_path / "runs" / "now"))
    run = rb.Run("demo", params)
    assert run.resumes(plans.Plan([change(1), change(2)], binding={"env": "prod"}))
    assert not run.resumes(plans.Plan([change(1), change(2)], binding={"env": "staging"}))  # another env
    assert not run.resumes(plans.Plan([change(2)], binding={"env": "prod"}))  # not the whole rest
    assert not run.resumes(plans.Plan([change(1), change(3)], binding={"env": "prod"}))  # something else
    assert not run.resumes(plans.Plan([change(0), change(1), change(2)], binding={"env": "prod"}))
