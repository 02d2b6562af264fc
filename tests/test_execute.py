"""`runbooks run` end to end on fixture notebooks: exit codes, run directory, failures."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from runbooks import execute, model, preload, runner
from runbooks.cli import main
from runbooks.summary import exit_code_for

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"

SUMMARY_KEYS = {
    "schema", "runbook", "env", "run_id", "start", "end", "duration_s", "status", "exit_code",
    "fail_on", "kube_context", "server", "window", "parameters", "findings", "counts", "plan",
    "data_sources", "error", "notebook", "report", "secret_scan",
}
FINDING_KEYS = {"id", "severity", "title", "detail", "resource", "evidence"}


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "parameters" / "test").mkdir(parents=True)
    (root / "notebooks").mkdir()
    return root


def invoke(project, *args, env=None):
    runner = CliRunner()
    started = time.monotonic()
    result = runner.invoke(
        main, ["--project-dir", str(project), "--notebooks-dir", str(FIXTURES), *args],
        env=env, catch_exceptions=False,
    )
    result.elapsed = time.monotonic() - started
    return result


def run_dirs(project, name):
    return sorted((project / "outputs" / "test" / name).glob("*/"))


def summary_of(project, name):
    (run_dir,) = run_dirs(project, name)
    return run_dir, json.loads((run_dir / "summary.json").read_text())


# ---- notebook runs (each starts a kernel: keep them few) --------------------------------


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_trivial_run_writes_the_run_directory(project):
    result = invoke(project, "run", "trivial", "--env", "test", "-p", "greeting", "hi there")
    assert result.exit_code == 0, result.output
    run_dir, summary = summary_of(project, "trivial")
    assert re.fullmatch(r"\d{8}T\d{6}Z", run_dir.name)
    assert {p.name for p in run_dir.iterdir()} == {"trivial.ipynb", "report.html", "summary.json"}
    assert set(summary) == SUMMARY_KEYS
    assert summary["status"] == "ok" and summary["exit_code"] == 0
    assert summary["parameters"] == {"greeting": "hi there"}
    assert summary["run_id"] == run_dir.name and summary["report"] == "report.html"
    assert "hi there" in (run_dir / "trivial.ipynb").read_text()
    assert f"run directory: {run_dir}" in result.output
    assert (project / "outputs" / "index.html").exists()


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_findings_decide_the_exit_code_and_fill_summary_and_report(project):
    result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", "critical")
    assert result.exit_code == 1, result.output
    assert "CRITICAL" in result.output and "a critical finding" in result.output
    run_dir, summary = summary_of(project, "findings")
    assert summary["status"] == "findings"
    assert [f["id"] for f in summary["findings"]] == [
        "demo/critical", "data-source-down/prometheus", "demo/warning", "demo/info", "demo/ok"]
    assert all(set(f) == FINDING_KEYS for f in summary["findings"])
    assert summary["counts"] == {"ok": 1, "info": 1, "warning": 2, "critical": 1}
    assert summary["data_sources"]["prometheus"]["state"] == "down"
    html = (run_dir / "report.html").read_text()
    assert html.count("id=\"kr-plotly-js\"") + html.count("id='kr-plotly-js'") == 1
    assert len(re.findall(r"class=.kr-plot.", html)) == 2
    assert "rb.start(" not in html and "import plotly" not in html
    assert len(html.encode()) < 5_000_000

    # the worst finding (warning) is below the default --fail-on critical: exit 0
    result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", "warning",
                    "-p", "figures", "0")
    assert result.exit_code == 0, result.output


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_kernel_death_exits_3_promptly(project):
    result = invoke(project, "run", "kill-kernel", "--env", "test")
    assert result.exit_code == 3, result.output
    assert result.elapsed < 60
    _, summary = summary_of(project, "kill-kernel")
    assert summary["error"]["kind"] == "dead-kernel" and summary["error"]["cell_index"] == 2
    assert "kernel died" in result.output


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_cell_timeout_exits_3_promptly(project):
    result = invoke(project, "run", "sleep", "--env", "test", "--timeout", "2")
    assert result.exit_code == 3, result.output
    assert result.elapsed < 45
    _, summary = summary_of(project, "sleep")
    assert summary["error"]["kind"] == "cell-timeout" and summary["error"]["cell_index"] == 2
    assert "2 s per-cell timeout" in result.output


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_an_interrupt_between_cells_starts_no_further_cell(project, tmp_path):
    """A kernel drops an interrupt that arrives between cells; the run must not go on with its next cell
    (a server stopping its runs relies on this). The fixture's kernel swallows the interrupt on purpose."""
    marker = tmp_path / "second-cell-ran"
    proc = subprocess.run(
        [sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "--notebooks-dir", str(FIXTURES),
         "run", "interrupt-between-cells", "--env", "test", "--no-progress", "-p", "marker", str(marker)],
        capture_output=True, text=True, timeout=100)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert not marker.exists()
    run_dir, summary = summary_of(project, "interrupt-between-cells")
    assert summary["error"]["kind"] == "interrupted"
    nb = json.loads((run_dir / "interrupt-between-cells.ipynb").read_text())
    (last,) = [c for c in nb["cells"] if "Path(marker)" in "".join(c["source"])]
    assert last["execution_count"] is None and not last["outputs"]


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_truncated_run_is_not_a_silent_success(project):
    """papermill alone returns normally when a cell calls sys.exit(0)."""
    result = invoke(project, "run", "early-exit", "--env", "test")
    assert result.exit_code == 3, result.output
    _, summary = summary_of(project, "early-exit")
    assert summary["error"]["kind"] == "truncated" and "SystemExit" in summary["error"]["message"]


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_leaking_run_exits_3_and_publishes_no_report(project):
    token = "kr-test-token-5f1e9c0a"
    result = invoke(project, "run", "leak", "--env", "test", env={"KR_TEST_API_TOKEN": token})
    assert result.exit_code == 3, result.output
    run_dir, summary = summary_of(project, "leak")
    assert not (run_dir / "report.html").exists()
    assert summary["status"] == "leaked" and summary["report"] is None
    assert "PEM private key in executed notebook, cell 2 output" in result.output
    assert "environment variable KR_TEST_API_TOKEN in executed notebook, cell 3 output" in result.output
    for text in [result.output, *(p.read_text() for p in run_dir.iterdir())]:
        assert token not in text and "PRIVATE KEY-----\n" not in text


# ---- no kernel -------------------------------------------------------------------------


def test_watchdog_kills_the_kernel_process_group():
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    client = SimpleNamespace(km=SimpleNamespace(provisioner=SimpleNamespace(process=proc)))
    dog = runner.Watchdog(0.2, on_abort=lambda: None)
    dog.client = client
    dog.start()
    try:
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert dog.expired
    finally:
        dog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("severities", "fail_on", "code"),
    [
        ([], "critical", 0), (["ok", "ok"], "info", 0), (["warning"], "critical", 0),
        (["warning"], "warning", 1), (["info"], "info", 1), (["critical", "info"], "critical", 1),
    ],
)
def test_exit_code_for_findings(severities, fail_on, code):
    assert exit_code_for([{"severity": s} for s in severities], fail_on) == code


@pytest.mark.parametrize(
    ("raw", "annotation", "value"),
    [
        ("14", int, 14), ("false", bool, False), ("[shop, web]", list, ["shop", "web"]),
        ("007", str, "007"), ("true", str, "true"), ("1.5", float, 1.5), ("null", int | None, None),
        ("x", int, "x"), ("007", str | None, "007"),
    ],
)
def test_cli_values_parse_like_yaml_scalars_except_strings(raw, annotation, value):
    assert execute.parse_value(raw, annotation) == value


def test_env_yaml_schema(project):
    p = project / "parameters" / "test" / "env.yaml"
    p.write_text("kubeconfig: .sandbox/kubeconfig\nexpected_context: sandbox\n")
    proj = execute.Project.discover(project, FIXTURES)
    cfg = proj.load_env("test")
    assert cfg.kubeconfig == str(project / ".sandbox" / "kubeconfig")
    p.write_text("kubeconfig: x\ntoken: abc\n")
    with pytest.raises(execute.InvalidInput, match="unknown key 'token'; allowed: description, kubeconfig"):
        proj.load_env("test")
    with pytest.raises(execute.InvalidInput, match="unknown env 'prod'; known envs: test"):
        proj.load_env("prod")


def test_repository_sandbox_env_is_valid():
    root = Path(__file__).resolve().parents[1]
    cfg = execute.Project(root, FIXTURES).load_env("sandbox")
    assert cfg.kube_context == "sandbox" and cfg.expected_context == "sandbox"
    assert cfg.kubeconfig == str(root / ".sandbox" / "kubeconfig")


def test_fixture_notebooks_are_clean():
    """Committed without outputs, with a cell tagged parameters."""
    for path in FIXTURES.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), path.name
        assert any("parameters" in c["metadata"].get("tags", []) for c in code), path.name


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_records_work_under_plain_papermill(tmp_path):
    """The recording mechanism needs no runbooks CLI: a plain papermill run carries it."""
    import papermill


    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(FIXTURES / "findings.ipynb"), str(out), progress_bar=False,
                               parameters={"worst": "critical", "figures": 1})
    state = model.read_records(execute.read_notebook(out))
    assert [f["severity"] for f in state["findings"]] == [
        "critical", "warning", "warning", "info", "ok"]
    assert state["data_sources"]["prometheus"]["state"] == "down"
    assert state["preflight"] == {"ok": True}


def test_parameter_precedence(project, tmp_path, monkeypatch):
    """env.yaml connections < parameters/ENV/NAME.yaml < -f FILE (in order) < -p < --approve."""
    params = project / "parameters" / "test"
    (params / "env.yaml").write_text(
        "kubeconfig: kc/config\nkube_context: from-env\nexpected_context: from-env\n"
        "prometheus_url: http://prom.example:9090\n")
    (params / "restart.yaml").write_text("namespace: from-own\ndeployment: from-own\n")
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("deployment: from-first\nkube_context: from-first\n")
    second.write_text("kube_context: from-second\n")
    proj = execute.Project.discover(project, FIXTURES)
    monkeypatch.chdir(tmp_path)
    prepared = execute.prepare(
        proj, "restart", "test", files=[str(first), str(second)],
        pairs=[("dry_run", "false")],
        approve="0123456789ab", check_cluster=False,
    )
    assert prepared.given == {
        "kubeconfig": str(project / "kc" / "config"),  # relative to the project root
        "kube_context": "from-second", "expected_context": "from-env",
        "namespace": "from-own", "deployment": "from-first",
        "dry_run": False, "approve_plan": "0123456789ab",
    }  # prometheus_url: not declared by the notebook, so not passed
    prepared = execute.prepare(proj, "restart", "test", pairs=[("kubeconfig", "rel/kc")],
                               check_cluster=False)
    assert prepared.given["kubeconfig"] == str(tmp_path / "rel" / "kc")  # -p: relative to cwd


@pytest.mark.parametrize("where", ["-p", "-f", "own"])
def test_the_guard_comes_from_env_yaml_only(project, tmp_path, where):
    """-p expected_context (or -f, or parameters/ENV/NAME.yaml) cannot satisfy the apply guard."""
    params = project / "parameters" / "test"
    (params / "env.yaml").write_text("kubeconfig: kc/config\n")
    (params / "restart.yaml").unlink(missing_ok=True)
    proj = execute.Project.discover(project, FIXTURES)
    pairs, files = [], []
    if where == "-p":
        pairs = [("expected_context", "sandbox")]
    elif where == "-f":
        files = [str(tmp_path / "f.yaml")]
        (tmp_path / "f.yaml").write_text("expected_context: sandbox\n")
    else:
        (params / "restart.yaml").write_text("expected_context: sandbox\n")
    with pytest.raises(execute.InvalidInput, match="expected_context is the apply guard and comes from "
                                           "parameters/test/env.yaml only") as exc:
        execute.prepare(proj, "restart", "test", pairs=pairs, files=files, approve="0123456789ab",
                        check_cluster=False)
    assert exc.value.exit_code == 2
    (params / "restart.yaml").unlink(missing_ok=True)


def _disk_statuses(path: Path) -> list[str]:
    return [c["metadata"]["papermill"]["status"] for c in json.loads(path.read_text())["cells"]]


def test_the_output_notebook_is_written_paced_and_always_at_the_end(tmp_path, monkeypatch):
    import nbformat

    from runbooks import engine

    def manager(path: Path) -> engine.PacedManager:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(str(i)) for i in range(20)],
                                      metadata={"papermill": {}})  # as papermill.execute_notebook sets it
        man = engine.PacedManager(nb, output_path=str(path), progress_bar=False)
        man.notebook_start()
        return man

    paced = manager(tmp_path / "paced.ipynb")
    assert _disk_statuses(tmp_path / "paced.ipynb") == ["pending"] * 20  # the first write happens at once
    for i, cell in enumerate(paced.nb.cells):  # 20 quick cells: no write in between
        paced.cell_start(cell, i)
        paced.cell_complete(cell, i)
    assert _disk_statuses(tmp_path / "paced.ipynb") == ["pending"] * 20
    paced.notebook_complete()
    assert _disk_statuses(tmp_path / "paced.ipynb") == ["completed"] * 20  # the final write always happens

    hung = manager(tmp_path / "hung.ipynb")  # a run the watchdog must end: it writes what the run got to
    hung.cell_start(hung.nb.cells[0], 0)
    hung.cell_complete(hung.nb.cells[0], 0)
    hung.cell_start(hung.nb.cells[1], 1)
    assert _disk_statuses(tmp_path / "hung.ipynb")[:2] == ["pending", "pending"]
    dog = runner.Watchdog(60, on_abort=lambda: None)
    dog.client = SimpleNamespace(nb_man=hung)
    dog.flush_notebook()
    assert _disk_statuses(tmp_path / "hung.ipynb")[:3] == ["completed", "running", "pending"]

    monkeypatch.setattr(engine, "SAVE_EVERY", 0.0)  # once the interval has passed, progress reaches the disk
    slow = manager(tmp_path / "slow.ipynb")
    slow.cell_start(slow.nb.cells[0], 0)
    slow.cell_complete(slow.nb.cells[0], 0)
    assert _disk_statuses(tmp_path / "slow.ipynb")[:2] == ["completed", "pending"]


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_the_kernel_imports_the_notebooks_modules_before_its_first_cell(project):
    """The preload extension: what the cells import is there (and frozen) before the first cell;
    a module that does not exist still fails the cell that imports it, as without the preload."""
    result = invoke(project, "run", "preload", "--env", "test")
    assert result.exit_code == 3, result.output
    run_dir, summary = summary_of(project, "preload")
    assert summary["error"]["kind"] == "cell-error"
    assert "ModuleNotFoundError" in summary["error"]["message"]
    assert "kr_no_such_module" in summary["error"]["message"]
    text = (run_dir / "preload.ipynb").read_text()
    assert "preload before any import: ['colorsys', 'wave'] frozen objects: True" in text


def test_preload_lists_top_level_imports_then_configured_sources():
    cells = [
        "from __future__ import annotations\nimport runbooks.runbook as rb\nfrom runbooks import reachability, report",
        "%matplotlib inline\nimport nothing_here",  # a magic: IPython syntax, not parsed
        "def f():\n    import inside_a_function\nfrom . import relative\nfrom os.path import *\nimport json, runbooks.runbook",
    ]
    assert preload.notebook_imports(cells) == [
        "runbooks.runbook", "runbooks", "runbooks.reachability", "runbooks.report", "os.path", "json"]
    nb = SimpleNamespace(cells=[SimpleNamespace(cell_type="markdown", source="import not_code"),
                                SimpleNamespace(cell_type="code", source="import pandas")])
    assert preload.modules(nb, {"prometheus_url": "http://prom:9090", "elasticsearch_url": None}) == [
        "pandas", "runbooks.metrics"]
