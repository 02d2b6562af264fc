"""Fleets into object storage: `runbooks run NAME --env A --env B --output-dir s3://BUCKET/PREFIX` writes
each environment's run (through the same upload as a single run), fleet.json and the logs to the bucket;
a failed environment is recorded there too, and `runbooks runs --from s3://…` lists the fleet's runs.
Against the S3 server of the object-storage tests (moto in server mode), read with the real boto3 client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import test_output_bucket as objstore
from runbooks.cli import main
from runbooks.processes import descendants
from test_output_bucket import KEY_ID, SECRET_KEY, keys, read_json

from helpers import wait_for

# the object-storage tests' fixtures: the S3 server (moto), its AWS variables, the boto3 client, a bucket
s3_server, aws_env, s3, bucket = objstore.s3_server, objstore.aws_env, objstore.s3, objstore.bucket

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]


def project_with(root: Path, names: list[str]) -> Path:
    (root / "notebooks").mkdir(parents=True)
    for n in names:
        (root / "parameters" / n).mkdir(parents=True)
    return root


def fleet_cmd(root: Path, runbook: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "--notebooks-dir", str(FIXTURES),
            "run", runbook, *args]


def process_env(aws: dict) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in aws.items() if v is not None})
    return env


def local_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "outputs").rglob("*") if p.is_file()) \
        if (root / "outputs").exists() else []


def the_fleet(s3, bucket, prefix: str, runbook: str) -> tuple[str, dict]:
    [key] = [k for k in keys(s3, bucket, f"{prefix}/_fleet/{runbook}/") if k.endswith("/fleet.json")]
    return key.removesuffix("/fleet.json"), read_json(s3, bucket, key)


def test_each_environment_s_run_and_fleet_json_go_to_the_bucket(tmp_path, aws_env, s3, bucket):
    root = project_with(tmp_path / "project", ["ok", "crit", "broken"])
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump({"environments": [
        {"name": "ok", "parameters": {"worst": "info"}},
        {"name": "crit", "parameters": {"worst": "critical"}},
        {"name": "broken", "parameters": {"worst": "no-such-severity"}},  # the notebook raises: a failed run
    ]}))
    url = f"s3://{bucket}/team"
    proc = subprocess.run(fleet_cmd(root, "findings", "--fleet", str(spec), "-p", "figures", "0", "--parallel", "3",
                                    "--output-dir", url), capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL, env=process_env(aws_env))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the worst: a failure beats findings

    fleet_key, data = the_fleet(s3, bucket, "team", "findings")
    fleet_rel = fleet_key.removeprefix("team/")
    assert data["exit_code"] == 3 and data["location"] == f"{url}/{fleet_rel}"
    assert data["start_method"] == "fork"  # fsspec's loop thread does not stop the fleet from forking
    assert proc.stdout.splitlines()[-2 if "broken: " in proc.stdout.splitlines()[-1] else -1] \
        == f"fleet: {url}/{fleet_rel}/fleet.json"
    by_env = {e["env"]: e for e in data["environments"]}
    assert {e: (r["status"], r["exit_code"]) for e, r in by_env.items()} == {
        "ok": ("ok", 0), "crit": ("findings", 1), "broken": ("failed", 3)}
    assert "raised ValueError" in by_env["broken"]["error"]
    for env, result in by_env.items():
        # each run wrote its own run directory and index entry, exactly as `runbooks run --output-dir` does
        [entry_key] = keys(s3, bucket, f"team/_index/{env}/findings/")
        entry = read_json(s3, bucket, entry_key)
        assert entry["path"] == result["run_dir"] and entry["path"].startswith(f"{env}/findings/")
        assert entry["fleet"] == fleet_rel and entry["status"] == result["status"]
        run = f"team/{entry['path']}"
        summary = read_json(s3, bucket, f"{run}/summary.json")
        assert summary["fleet"] == fleet_rel and summary["location"] == f"{url}/{entry['path']}"
        assert {f"{run}/findings.ipynb", f"{run}/report.html"} <= set(keys(s3, bucket, run))
        assert result["log"] == f"{fleet_rel}/logs/{env}.log"
        log = s3.get_object(Bucket=bucket, Key=f"team/{result['log']}")["Body"].read().decode()
        assert f"run directory: {url}/{entry['path']}" in log
        assert KEY_ID not in log and SECRET_KEY not in log
    broken = read_json(s3, bucket, f"team/{by_env['broken']['run_dir']}/summary.json")
    assert broken["status"] == "failed" and broken["error"]["ename"] == "ValueError"
    assert local_files(root) == []  # nothing left behind locally

    listed = CliRunner().invoke(main, ["--project-dir", str(root), "runs", "--from", url], env=aws_env,
                                catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if "/findings/" in line]
    assert sorted(line.split()[-1] for line in lines) == sorted(r["run_dir"] for r in by_env.values())
    fleet_id = fleet_rel.rsplit("/", 1)[1]
    assert all(f"fleet {fleet_id}" in line for line in lines)  # one fleet, one run per environment
    assert any(line.split()[1:4] == ["failed", "exit", "3"] and "broken/findings/" in line for line in lines)


def _run_of(env: str, fleet: int) -> int | None:
    """The fleet's child whose output goes to its ``logs/ENV.log``: that environment's `runbooks run`."""
    for pid in descendants(fleet):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            log = os.readlink(f"/proc/{pid}/fd/1")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == fleet and log.endswith(f"/logs/{env}.log"):
            return pid
    return None


def test_a_run_killed_in_a_fleet_is_recorded_as_failed_in_the_bucket(tmp_path, aws_env, s3, bucket):
    root = project_with(tmp_path / "project", ["quick", "killed"])
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump({"environments": [
        {"name": "quick", "parameters": {"seconds": 0}}, {"name": "killed", "parameters": {"seconds": 300}}]}))
    url = f"s3://{bucket}/k"
    proc = subprocess.Popen(fleet_cmd(root, "sleep-marked", "--fleet", str(spec), "-p", "marker_dir", str(markers),
                                      "--output-dir", url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, env=process_env(aws_env))
    try:
        wait_for(lambda: (markers / "killed").exists() or proc.poll() is not None, timeout=180,
                 what="the sleeping cell of 'killed' to be running")
        assert proc.poll() is None, proc.communicate()
        kernel = int(wait_for(lambda: (markers / "killed").read_text(), timeout=30, what="its kernel's pid"))
        run = wait_for(lambda: _run_of("killed", proc.pid), timeout=30, what="its `runbooks run`")
        assert kernel in descendants(proc.pid) and run != proc.pid
        os.kill(run, signal.SIGKILL)  # as the OOM killer would: no summary.json is ever written
        os.kill(kernel, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 3, out + err

    fleet_key, data = the_fleet(s3, bucket, "k", "sleep-marked")
    by_env = {e["env"]: e for e in data["environments"]}
    assert (by_env["quick"]["status"], by_env["quick"]["exit_code"]) == ("ok", 0)
    killed = by_env["killed"]
    assert (killed["status"], killed["exit_code"]) == ("failed", 128 + signal.SIGKILL)
    [entry_key] = keys(s3, bucket, "k/_index/killed/sleep-marked/")
    entry = read_json(s3, bucket, entry_key)
    assert entry["path"] == killed["run_dir"] and entry["status"] == "failed" and entry["exit_code"] == 137
    assert entry["error"]["kind"] == "no-summary" and entry["fleet"] == fleet_key.removeprefix("k/")
    summary = read_json(s3, bucket, f"k/{killed['run_dir']}/summary.json")
    assert summary["status"] == "failed" and "without writing its summary" in summary["error"]["message"]
    assert summary["log"] == killed["log"] and f"k/{killed['log']}" in keys(s3, bucket, "k/_fleet/")
    assert local_files(root) == []

    listed = CliRunner().invoke(main, ["--project-dir", str(root), "runs", "--from", url], env=aws_env,
                                catch_exceptions=False)
    rows = {line.split()[-1].split("/")[0]: line for line in listed.output.splitlines() if "/sleep-marked/" in line}
    assert set(rows) == {"quick", "killed"}
    assert rows["killed"].split()[1:4] == ["failed", "exit", "137"]
    assert json.dumps(data)  # fleet.json is plain JSON
