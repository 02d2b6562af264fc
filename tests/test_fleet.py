"""Fleets: `runbooks run NAME --env A --env B ...` / `--fleet FILE` runs one runbook against many
environments, each its own run directory, with fleet.json and the worst exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from runbooks import fleet
from runbooks.cli import main
from runbooks.environments import Project
from runbooks.errors import InvalidInput

from helpers import HttpReceiver, fleet_project, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
RUNBOOKS = [sys.executable, "-m", "runbooks.cli"]


def invoke(root: Path, *args: str, notebooks: Path | None = None):
    pre = ["--project-dir", str(root)] + (["--notebooks-dir", str(notebooks)] if notebooks else [])
    return CliRunner().invoke(main, [*pre, *args], catch_exceptions=False)


def fixture_project(root: Path, names: list[str]) -> Path:
    """Environments with no cluster, for the fixture notebooks (which declare no kubeconfig)."""
    (root / "notebooks").mkdir(parents=True)
    for n in names:
        (root / "parameters" / n).mkdir(parents=True)
    (root / "outputs").mkdir()
    return root


def fleet_file(tmp_path: Path, data) -> str:
    path = tmp_path / "fleet.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def outputs_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root / "outputs").as_posix() for p in (root / "outputs").rglob("*"))


@pytest.mark.notebook
@pytest.mark.timeout(600)
def test_a_fleet_of_three_on_the_sandbox_gives_three_runs_and_the_worst_exit_code(sandbox, namespace, tmp_path):
    names = ["east", "west", "north"]
    root = fleet_project(tmp_path / "project", sandbox, names)
    spec = fleet_file(tmp_path, {"environments": ["east", "west", {"name": "north", "parameters": {
        "namespaces": [namespace], "production_namespaces": [namespace]}}]})
    proc = subprocess.run([*RUNBOOKS, "--project-dir", str(root), "run", "cluster-health", "--fleet", spec,
                           "--parallel", "3"], capture_output=True, text=True, timeout=540,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fleets = list((root / "outputs" / "_fleet" / "cluster-health").glob("*/fleet.json"))
    assert len(fleets) == 1
    data = json.loads(fleets[0].read_text())
    assert data["exit_code"] == 1 and data["runbook"] == "cluster-health" and not data["interrupted"]
    assert data["start_method"] == "fork"  # the command forks its runs (imports shared), `runbooks run` in each
    by_env = {e["env"]: e for e in data["environments"]}
    assert list(by_env) == ["east", "west", "north"]  # the file's order
    for name in names:
        run_dir = root / "outputs" / by_env[name]["run_dir"]
        assert run_dir.parent == root / "outputs" / name / "cluster-health"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["env"] == name and summary["kube_context"] == name  # its own context
        assert (run_dir / "report.html").is_file()
        assert by_env[name]["status"] == summary["status"] and by_env[name]["exit_code"] == summary["exit_code"]
        assert by_env[name]["counts"] == {k: summary["counts"][k] for k in ("info", "warning", "critical")}
        assert (root / "outputs" / by_env[name]["log"]).read_text().count("run directory: ") == 1
    # the default scenario has critical findings; an empty namespace has none at or above critical
    assert by_env["east"]["exit_code"] == by_env["west"]["exit_code"] == 1
    assert by_env["east"]["counts"]["critical"] > 0
    assert by_env["north"]["exit_code"] == 0 and by_env["north"]["status"] == "ok"
    north = json.loads((root / "outputs" / by_env["north"]["run_dir"] / "summary.json").read_text())
    assert north["parameters"]["namespaces"] == [namespace]  # the fleet file's per-env parameters
    # progress: one line per environment as it starts and as it ends; the table at the end
    for name in names:
        assert f"{name}: started" in proc.stderr
        assert f"{name}: {by_env[name]['status']} (exit {by_env[name]['exit_code']})" in proc.stderr
    table = proc.stdout.splitlines()
    assert table[0].split() == ["ENV", "STATUS", "EXIT", "CRITICAL", "WARNING", "INFO", "DURATION", "RUN", "DIR"]
    assert [line.split()[0] for line in table[1:4]] == names
    assert "exit 1" in table[4] and table[5] == f"fleet: {fleets[0]}"


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_the_worst_exit_code_wins_a_failure_beats_findings(tmp_path):
    root = fixture_project(tmp_path / "project", ["ok", "warn", "crit", "broken"])
    spec = fleet_file(tmp_path, {"parallel": 2, "environments": [
        {"name": "ok", "parameters": {"worst": "info"}},
        {"name": "warn", "parameters": {"worst": "warning"}},
        {"name": "crit", "parameters": {"worst": "critical"}},
        {"name": "broken", "parameters": {"worst": "no-such-severity"}},  # the notebook raises
    ]})
    result = invoke(root, "run", "findings", "--fleet", spec, "-p", "figures", "0", notebooks=FIXTURES)
    assert result.exit_code == 3, result.output
    data = json.loads(next((root / "outputs" / "_fleet" / "findings").glob("*/fleet.json")).read_text())
    codes = {e["env"]: (e["status"], e["exit_code"]) for e in data["environments"]}
    # the fixture also records a data source that is down (a warning): below --fail-on critical
    assert codes == {"ok": ("ok", 0), "warn": ("ok", 0), "crit": ("findings", 1), "broken": ("failed", 3)}
    assert data["parallel"] == 2 and data["exit_code"] == 3
    broken = next(e for e in data["environments"] if e["env"] == "broken")
    assert "raised ValueError" in broken["error"]  # why it failed, from its summary
    assert "broken: " in result.output  # the table names each failure


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_spawned_runs_give_the_same_result(tmp_path):
    root = fixture_project(tmp_path / "project", ["a", "b"])
    project = Project.discover(root, FIXTURES)
    plan = fleet.prepare(project, "trivial", fleet.fleet_members(["a", "b"], None), parallel=2,
                         workdir=tmp_path)
    lines = []
    result = fleet.run(plan, parallel=2, start_method="spawn", echo=lines.append)
    assert result.exit_code == 0 and result.summary["start_method"] == "spawn"
    assert [(r.env, r.status, r.exit_code) for r in result.results] == [("a", "ok", 0), ("b", "ok", 0)]
    for r in result.results:
        assert (root / "outputs" / r.run_dir / "summary.json").is_file()
        assert f"{r.env}: started" in " ".join(lines) and f"{r.env}: ok (exit 0) in {r.duration_s} s" in " ".join(lines)
    with pytest.raises(InvalidInput, match="start method 'fork'"):
        fleet.run(plan, parallel=2, start_method="fork")  # forking needs the command to run in the child


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_each_run_of_a_fleet_sends_its_own_notification(tmp_path, monkeypatch):
    receiver = HttpReceiver()
    try:
        root = fixture_project(tmp_path / "project", ["a", "b"])
        monkeypatch.setenv("RUNBOOKS_WEBHOOK_URL", f"{receiver.base}/hook")
        result = invoke(root, "run", "findings", "--env", "a", "--env", "b", "-p", "figures", "0",
                        "--notify", "webhook", "--notify-on", "always", notebooks=FIXTURES)
        assert result.exit_code == 0, result.output
        bodies = wait_for(lambda: len(receiver.bodies("/hook")) == 2 and receiver.bodies("/hook"), timeout=30,
                          what="one notification per environment")
        assert sorted(b["commonLabels"]["env"] for b in bodies) == ["a", "b"]
    finally:
        receiver.stop()


def test_worst_orders_failed_over_invalid_over_findings():
    assert fleet.worst([0, 1, 0]) == 1
    assert fleet.worst([1, 2, 0]) == 2
    assert fleet.worst([2, 3, 1]) == 3
    assert fleet.worst([0, -9]) == 3 and fleet.worst([0, 130]) == 3  # killed: a failure
    assert fleet.worst([None, 0]) == 0 and fleet.worst([]) == 0


@pytest.mark.timeout(120)
def test_a_bad_env_refuses_the_whole_fleet_and_nothing_runs(sandbox, tmp_path):
    root = fleet_project(tmp_path / "project", sandbox, ["east", "west", "south"])
    env_file = root / "parameters" / "south" / "env.yaml"
    env = yaml.safe_load(env_file.read_text())
    env_file.write_text(yaml.safe_dump({**env, "expected_context": "production"}))  # the guard trips

    result = invoke(root, "run", "cluster-health", "--env", "east", "--env", "nope", "--env", "south",
                    "--env", "west")
    assert result.exit_code == 2, result.output
    assert "fleet refused, nothing ran (2 of 4" in result.output
    assert "env 'nope': unknown env 'nope'" in result.output
    assert "env 'south': preflight" in result.output and "production" in result.output
    assert "env 'east'" not in result.output and "started" not in result.output
    assert outputs_of(root) == []  # no run directory, no fleet directory

    bad_value = invoke(root, "run", "cluster-health", "--env", "east", "--env", "west", "-p", "restart_threshold", "0")
    assert bad_value.exit_code == 2 and "restart_threshold" in bad_value.output
    assert outputs_of(root) == []

    twice = invoke(root, "run", "cluster-health", "--env", "east", "--env", "east")
    assert twice.exit_code == 2 and "env 'east' is given twice" in twice.output


@pytest.mark.timeout(120)
def test_approve_is_refused_for_a_fleet(tmp_path):
    root = fixture_project(tmp_path / "project", ["a", "b"])
    for args in (["--env", "a", "--env", "b"], ["--fleet", fleet_file(tmp_path, {"environments": ["a"]})]):
        result = invoke(root, "run", "findings", *args, "--approve", "0123456789ab", notebooks=FIXTURES)
        assert result.exit_code == 2, result.output
        assert "--approve '0123456789ab' with a fleet" in result.output
        assert "bound to one environment and its cluster" in result.output
    assert outputs_of(root) == []


@pytest.mark.parametrize(("content", "message"), [
    ({"environments": []}, "environments: List should have at least 1 item"),
    ({"parameters": {"worst": "info"}}, "environments: required"),
    ({"environments": ["a"], "paralel": 3}, "unknown key 'paralel'; allowed: environments, parameters, parallel"),
    ({"environments": ["a"], "parallel": 0}, "parallel: Input should be greater than or equal to 1"),
    ({"environments": [{"name": "a", "params": {}}]}, "unknown key 'environments.0.params'; allowed: name, parameters"),
    ({"environments": ["../etc"]}, "'../etc' is not an env name"),
    ({"environments": [{"parameters": {}}]}, "environments.0.name: required"),
    ({"environments": ["a", "a"]}, "env 'a' is given twice"),
    ({"environments": "a"}, "environments: Input should be a valid list"),
    ("- a\n- b\n", "must be a mapping"),
    ("environments: [a\n", "fleet file"),
])
@pytest.mark.timeout(60)
def test_a_bad_fleet_file_exits_2_naming_the_problem(tmp_path, content, message):
    root = fixture_project(tmp_path / "project", ["a", "b"])
    result = invoke(root, "run", "findings", "--fleet", fleet_file(tmp_path, content), notebooks=FIXTURES)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert outputs_of(root) == []


def test_a_missing_fleet_file_or_no_env_exits_2(tmp_path):
    root = fixture_project(tmp_path / "project", ["a"])
    missing = invoke(root, "run", "findings", "--fleet", str(tmp_path / "nope.yaml"), notebooks=FIXTURES)
    assert missing.exit_code == 2 and "nope.yaml" in missing.output
    none = invoke(root, "run", "findings", notebooks=FIXTURES)
    assert none.exit_code == 2 and "no environment: give --env ENV" in none.output


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_sigint_stops_every_run_cleanly(tmp_path):
    from runbooks.processes import descendants

    root = fixture_project(tmp_path / "project", ["a", "b", "c"])
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.Popen([*RUNBOOKS, "--project-dir", str(root), "--notebooks-dir", str(FIXTURES), "run",
                             "sleep-marked", "--env", "a", "--env", "b", "--env", "c", "--parallel", "2",
                             "-p", "seconds", "300", "-p", "marker_dir", str(markers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: sorted(p.name for p in markers.iterdir()) == ["a", "b"] or proc.poll() is not None,
                 timeout=180, what="the sleeping cells of a and b to be running")
        assert proc.poll() is None, proc.communicate()
        below = descendants(proc.pid)  # two `runbooks run` and their kernels
        assert len(below) >= 4
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out + err
    assert "SIGINT: stopping the fleet" in err
    data = json.loads(next((root / "outputs" / "_fleet" / "sleep-marked").glob("*/fleet.json")).read_text())
    assert data["interrupted"] and data["exit_code"] == 3
    by_env = {e["env"]: e for e in data["environments"]}
    for env in ("a", "b"):
        assert by_env[env]["exit_code"] == 3 and by_env[env]["status"] == "failed"
        summary = json.loads((root / "outputs" / by_env[env]["run_dir"] / "summary.json").read_text())
        assert summary["error"]["kind"] == "interrupted"
    assert by_env["c"]["status"] == "not-run" and by_env["c"]["exit_code"] is None
    assert not (root / "outputs" / "c").exists()
    wait_for(lambda: not any(_alive(pid) for pid in below), timeout=30, what="every run and kernel to end")


@pytest.mark.timeout(120)
def test_what_the_fleet_prepares_before_forking_leaves_each_report_the_same(tmp_path):
    """warm() renders a report of an empty notebook so the forked runs share the compiled templates;
    a run's report afterwards is byte for byte the one a fresh `runbooks run` process renders."""
    script = """
import json, sys
import nbformat
from runbooks import fleet, reporthtml
if sys.argv[1] == "warm":
    fleet.warm()
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\\nsome *text*"),
                                     nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
                                         "display_data", data={"text/html": "<b>shown</b>"})])])
summary = {"runbook": "r", "env": "e", "run_id": "20260101T000000Z", "status": "ok", "exit_code": 0,
           "findings": [{"id": "a/b", "severity": "warning", "title": "t", "resource": "Pod/ns/p"}]}
sys.stdout.write(reporthtml.render_html(nb, summary))
"""
    fresh, warmed = (subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                    timeout=100, check=True).stdout for mode in ("fresh", "warm"))
    assert "<b>shown</b>" in fresh and "a/b" in fresh

    def ids_out(html: str) -> str:  # a new cell (the report's header) gets a random id each time
        return re.sub(r"cell-id=[0-9a-f]{8}", "cell-id=?", html)

    assert ids_out(warmed) == ids_out(fresh)


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_a_forked_fleets_kernels_come_from_one_warm_server(tmp_path):
    """Each run's kernel is forked by the fleet's kernel server: one parent for every kernel (not
    their runs), in a session of its own, with its run's environment and directory and the
    notebook's modules imported before its first cell. The server ends with the fleet."""
    root = fixture_project(tmp_path / "project", ["a", "b", "c"])
    proc = subprocess.run([*RUNBOOKS, "--project-dir", str(root), "--notebooks-dir", str(FIXTURES), "run",
                           "kernel-origin", "--env", "a", "--env", "b", "--env", "c", "--parallel", "2"],
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(next((root / "outputs" / "_fleet").glob("*/*/fleet.json")).read_text())["start_method"] == "fork"
    seen = {}
    for env in ("a", "b", "c"):
        (nb,) = (root / "outputs" / env / "kernel-origin").glob("*/kernel-origin.ipynb")
        m = re.search(r"kernel env=(\w+) RUNBOOKS_ENV=(\w+) parent=(\d+) session=(\d+) pid=(\d+) cwd=(\S+) "
                      r"preloaded=(\w+)", nb.read_text())
        assert m, nb.read_text()
        seen[env] = m.groups()
    assert {(e[0], e[1]) for e in seen.values()} == {("a", "a"), ("b", "b"), ("c", "c")}
    parents = {e[2] for e in seen.values()}
    assert len(parents) == 1, seen  # one server forked them all
    assert all(e[3] == e[4] for e in seen.values())  # each kernel leads its own session
    assert {e[5] for e in seen.values()} == {str(root)} and {e[6] for e in seen.values()} == {"True"}
    assert not Path(f"/proc/{parents.pop()}").exists()  # the server is gone


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_a_forked_kernel_that_dies_ends_its_run_with_exit_3(tmp_path):
    root = fixture_project(tmp_path / "project", ["a", "b"])
    proc = subprocess.run([*RUNBOOKS, "--project-dir", str(root), "--notebooks-dir", str(FIXTURES), "run",
                           "kill-kernel", "--env", "a", "--env", "b"],
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "a: step 'Kill kernel' (cell 2): the kernel died" in proc.stdout
    for env in ("a", "b"):
        (summary,) = (root / "outputs" / env / "kill-kernel").glob("*/summary.json")
        error = json.loads(summary.read_text())["error"]
        assert error["kind"] == "dead-kernel" and error["cell_index"] == 2, error
