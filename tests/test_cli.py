"""The `runbooks` command: bad input (exit 2, nothing executed), list, report, runs."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from pydantic import Field

from runbooks import parameters
from runbooks.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
PEM_HEAD = "-----BEGIN PRIVATE KEY-----"


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "parameters" / "test").mkdir(parents=True)
    (root / "notebooks").mkdir()
    return root


def invoke(project, *args, notebooks=FIXTURES):
    return CliRunner().invoke(
        main, ["--project-dir", str(project), "--notebooks-dir", str(notebooks), *args],
        env={"KR_CLI_TEST_TOKEN": "kr-cli-test-secret-42"},
    )


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def kubeconfig(path: Path, server="https://127.0.0.1:9", current="prod") -> str:
    return write(path, f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: c
          cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
        users:
        - name: u
          user: {{token: not-a-real-token-123}}
        contexts:
        - name: prod
          context: {{cluster: c, user: u}}
        - name: sandbox
          context: {{cluster: c, user: u}}
        current-context: {current}
        """)


@pytest.fixture
def registered_findings(monkeypatch):
    monkeypatch.setitem(parameters._REGISTRY, "findings", None)  # removed again after the test

    @parameters.register("findings")
    class FindingsParams(parameters.ParamsBase):
        worst: str = Field(default="warning", pattern="^(ok|info|warning|critical)$")
        figures: int = Field(default=2, ge=0, le=10)


# (case id, extra setup, args, substrings the message must contain)
BAD_INPUT = [
    ("unknown runbook", None, ["run", "nope", "--env", "test"],
     ["unknown runbook 'nope'", "known runbooks:", "trivial"]),
    ("unknown env", None, ["run", "trivial", "--env", "prod"], ["unknown env 'prod'", "known envs: test"]),
    ("unknown parameter", None, ["run", "trivial", "--env", "test", "-p", "gretting", "hi"],
     ["unknown parameter 'gretting'", "known parameters: greeting"]),
    ("wrong type", None, ["run", "findings", "--env", "test", "-p", "figures", "many"],
     ["'figures'", "'many'", "valid integer", "allowed: int"]),
    ("secret-looking parameter", None, ["run", "trivial", "--env", "test", "-p", "api_token", "abc"],
     ["'api_token' looks like a credential", "environment variable"]),
    ("private key as a value", None,
     ["run", "trivial", "--env", "test", "-p", "greeting", PEM_HEAD + "\nMIIEv"],
     ["'greeting'", "PEM private key"]),
    ("known secret as a value", None,
     ["run", "trivial", "--env", "test", "-p", "greeting", "say kr-cli-test-secret-42"],
     ["'greeting' holds the value of environment variable KR_CLI_TEST_TOKEN"]),
    ("unreadable parameters file", None, ["run", "trivial", "--env", "test", "-f", "/nonexistent/p.yaml"],
     ["parameters file '/nonexistent/p.yaml' cannot be read"]),
    ("parameters file not a mapping", "list.yaml", ["run", "trivial", "--env", "test", "-f", "TMP/list.yaml"],
     ["must be a mapping of parameter names to values, not list"]),
    ("parameters file not YAML", "broken.yaml", ["run", "trivial", "--env", "test", "-f", "TMP/broken.yaml"],
     ["is not valid YAML"]),
    ("secret name in a parameters file", "secret.yaml",
     ["run", "trivial", "--env", "test", "-f", "TMP/secret.yaml"], ["'password' looks like a credential"]),
    ("wrong type in parameters/ENV/NAME.yaml", "own.yaml", ["run", "findings", "--env", "test"],
     ["'figures'", "'lots'"]),
    ("approval for a runbook that changes nothing", None,
     ["run", "trivial", "--env", "test", "--approve", "0123456789ab"], ["declares no approve_plan"]),
    ("malformed plan id", None, ["run", "restart", "--env", "test", "--approve", "xyz"],
     ["--approve 'xyz' is not a plan id"]),
    ("non-positive timeout", None, ["run", "trivial", "--env", "test", "--timeout", "0"],
     ["--timeout 0 must be a number of seconds from 1 to 86400"]),
    ("bad --fail-on", None, ["run", "trivial", "--env", "test", "--fail-on", "fatal"],
     ["Invalid value for '--fail-on'"]),
    ("unknown key in env.yaml", "env-extra", ["run", "trivial", "--env", "test"],
     ["unknown key 'password'", "allowed: description, kubeconfig"]),
    ("out of range (registered model)", "registered", ["run", "findings", "--env", "test", "-p", "figures", "-1"],
     ["'figures'", "-1", "greater than or equal to 0", ">= 0"]),
    ("not an allowed value (registered model)", "registered",
     ["run", "findings", "--env", "test", "-p", "worst", "fatal"], ["'worst'", "'fatal'", "pattern"]),
    ("missing kubeconfig", "env-missing-kubeconfig", ["run", "restart", "--env", "test"],
     ["does not exist"]),
    ("unknown context", "env-unknown-context", ["run", "restart", "--env", "test"],
     ["context 'staging' is not in kubeconfig", "available: prod, sandbox"]),
    ("wrong context", "env-wrong-context", ["run", "restart", "--env", "test"],
     ["active kube context is 'prod'", "expects 'sandbox'", "refusing to run"]),
    ("unreachable API server", "env-unreachable", ["run", "restart", "--env", "test"],
     ["cannot be reached"]),
    ("project directory missing", None, ["--project-dir", "/nonexistent/project", "list"],
     ["does not exist"]),
]


def _setup(kind, project, tmp_path, request):
    env_yaml = project / "parameters" / "test" / "env.yaml"
    if kind == "list.yaml":
        write(tmp_path / "list.yaml", "- a\n- b\n")
    elif kind == "broken.yaml":
        write(tmp_path / "broken.yaml", "greeting: [unclosed\n")
    elif kind == "secret.yaml":
        write(tmp_path / "secret.yaml", "password: hunter2\n")
    elif kind == "own.yaml":
        write(project / "parameters" / "test" / "findings.yaml", "figures: lots\n")
    elif kind == "env-extra":
        write(env_yaml, "kubeconfig: kc\npassword: hunter2\n")
    elif kind == "registered":
        request.getfixturevalue("registered_findings")
    elif kind == "env-missing-kubeconfig":
        write(env_yaml, "kubeconfig: .sandbox/nope\nexpected_context: sandbox\n")
    elif kind == "env-unknown-context":
        kc = kubeconfig(tmp_path / "kc")
        write(env_yaml, f"kubeconfig: {kc}\nkube_context: staging\n")
    elif kind == "env-wrong-context":
        kc = kubeconfig(tmp_path / "kc")
        write(env_yaml, f"kubeconfig: {kc}\nexpected_context: sandbox\n")
    elif kind == "env-unreachable":
        kc = kubeconfig(tmp_path / "kc", current="sandbox")
        write(env_yaml, f"kubeconfig: {kc}\nexpected_context: sandbox\n")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "setup", "args", "expected"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_exits_2_and_executes_nothing(project, tmp_path, request, case, setup, args, expected):
    if setup:
        _setup(setup, project, tmp_path, request)
    args = [a.replace("TMP/", f"{tmp_path}/") for a in args]
    result = invoke(project, *args)
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output
    assert not (project / "outputs").exists()


@pytest.mark.timeout(60)
def test_invalid_token_exits_2_before_a_kernel(sandbox_env, sandbox, tmp_path):
    kc = tmp_path / "bad-kubeconfig"
    kc.write_text(Path(sandbox.kubeconfig).read_text().replace(sandbox.token, "wrong-token-0123"))
    env_yaml = sandbox_env / "parameters" / "sandbox" / "env.yaml"
    env_yaml.write_text(env_yaml.read_text().replace(str(sandbox.kubeconfig), str(kc)))
    result = invoke(sandbox_env, "run", "restart", "--env", "sandbox")
    assert result.exit_code == 2, result.output
    assert "refused the credentials" in result.output
    assert not list((sandbox_env / "outputs").rglob("summary.json"))


def test_list_shows_purposes(project):
    result = invoke(project, "list")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert set(lines) >= {"trivial", "kill-kernel", "sleep", "leak", "findings", "restart"}
    assert "Trivial: One code cell and nothing else" in lines["trivial"]


def test_list_name_shows_parameters_with_defaults_and_comments(project):
    result = invoke(project, "list", "restart")
    assert result.exit_code == 0
    assert re.search(r'\n  deployment += "web"  # Deployment to restart\n', result.output)
    assert re.search(r"\n  dry_run +\= True  # plan only", result.output)
    assert invoke(project, "list", "nope").exit_code == 2


def fake_run(outputs: Path, env: str, runbook: str, stamp: str, status="ok", code=0) -> Path:
    run_dir = outputs / env / runbook / stamp
    run_dir.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {runbook}")])
    nbformat.write(nb, str(run_dir / f"{runbook}.ipynb"))
    summary = {
        "runbook": runbook, "env": env, "run_id": stamp, "start": stamp, "end": stamp,
        "status": status, "exit_code": code, "findings": [], "counts": {}, "plan": None,
        "data_sources": {}, "error": None, "notebook": f"{runbook}.ipynb", "report": None,
        "parameters": {}, "secret_scan": {"clean": True, "leaks": []},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_report_rerenders(project):
    run_dir = fake_run(project / "outputs", "test", "trivial", "20250101T000000Z")
    result = invoke(project, "report", str(run_dir))
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").exists()
    assert json.loads((run_dir / "summary.json").read_text())["report"] == "report.html"
    assert invoke(project, "report", str(project)).exit_code == 2


def test_report_refuses_a_leaked_run(project):
    run_dir = fake_run(project / "outputs", "test", "leak", "20250101T000000Z", status="leaked", code=3)
    result = invoke(project, "report", str(run_dir))
    assert result.exit_code == 3 and not (run_dir / "report.html").exists()


def test_runs_lists_filters_and_writes_the_index(project):
    outputs = project / "outputs"
    fake_run(outputs, "test", "trivial", "20250101T000000Z")
    fake_run(outputs, "test", "findings", "20250102T000000Z", status="findings", code=1)
    fake_run(outputs, "prod", "trivial", "20250103T000000Z")
    result = invoke(project, "runs")
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if line.startswith("2025")]
    assert [r.split()[-1] for r in rows] == [
        "prod/trivial/20250103T000000Z", "test/findings/20250102T000000Z",
        "test/trivial/20250101T000000Z"]
    result = invoke(project, "runs", "--env", "test", "--runbook", "findings")
    assert [line.split()[-1] for line in result.output.splitlines() if line.startswith("2025")] == [
        "test/findings/20250102T000000Z"]
    index = (outputs / "index.html").read_text()
    assert index.count("<tr>") == 4  # header + every run, whatever the filter


def test_sandbox_commands_are_mounted():
    assert "sandbox" in main.commands
