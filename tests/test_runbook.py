"""runbooks.runbook: parameters, findings, records, context guard, plans (no kernel)."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import nbformat
import pytest
from papermill.models import Parameter
from pydantic import Field

import runbooks.runbook as rb
from runbooks import errors, model, parameters, plans, preflight, secrets, widgets
from runbooks.errors import InvalidInput, Unavailable


@pytest.fixture(autouse=True)
def _clean_records():
    model.local_records(clear=True)
    yield
    model.local_records(clear=True)


@pytest.fixture
def registered(monkeypatch):
    """A registered model for the notebook name 'demo' (removed afterwards)."""
    monkeypatch.setitem(parameters._REGISTRY, "demo", None)  # removed again after the test

    @parameters.register("demo")
    class DemoParams(parameters.MutatingParams):
        namespace: str = "default"
        threshold: int = Field(default=3, ge=0)
        namespaces: list[str] = []

    return DemoParams


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True), ("db_password", True), ("apiToken", True), ("api_token", True),
        ("token", True), ("secret", True), ("client_secret", True), ("credentials", True),
        ("apikey", True), ("api_key", True), ("private_key", True), ("key", True),
        ("bearer", True), ("tls_key", True),
        ("keys", False), ("label_key", False), ("sort_key", False), ("tls_secret_name", False),
        ("api_token_env", False), ("private_key_path", False), ("namespace", False),
        ("kubeconfig", False), ("secret_namespace", False), ("token_file", False),
    ],
)
def test_secret_looking_names(name, secret):
    assert secrets.is_secret_name(name) is secret


def test_validate_accepts_and_converts(registered):
    params = parameters.validate_params(registered, {"threshold": 5, "namespaces": ["shop"]})
    assert params.threshold == 5 and params.namespaces == ["shop"] and params.dry_run is True


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"treshold": 4}, ["unknown parameter 'treshold'", "known parameters:", "threshold"]),
        ({"threshold": "many"}, ["'threshold'", "'many'", "valid integer", "allowed: int"]),
        ({"threshold": -1}, ["'threshold'", "-1", "greater than or equal to 0", ">= 0"]),
        ({"api_token": "x"}, ["'api_token'", "looks like a credential", "environment variable"]),
        ({"namespace": "-----BEGIN RSA PRIVATE KEY-----\nMII"}, ["'namespace'", "PEM private key"]),
        ({"approve_plan": "0123456789ab"}, ["needs dry_run=False"]),
        ({"approve_plan": "zz", "dry_run": False}, ["'approve_plan'", "'zz'", "pattern"]),
    ],
)
def test_validate_messages_name_parameter_value_and_allowed(registered, values, expected):
    with pytest.raises(InvalidInput) as info:
        parameters.validate_params(registered, values)
    for text in expected:
        assert text in str(info.value)


def test_required_parameter_message():
    from pydantic import create_model

    model = create_model("M", __base__=parameters.ParamsBase, namespace=(str, ...))
    with pytest.raises(InvalidInput, match="Required parameter 'namespace' not supplied"):
        parameters.validate_params(model, {})


def test_derived_model_types_from_parameters_cell():
    params = [
        Parameter("kubeconfig", "None", "None", "file"),
        Parameter("threshold", "None", "5", ""),
        Parameter("ratio", "float", "0.5", ""),
        Parameter("namespace", "None", '"default"', ""),
        Parameter("only", "None", "None", ""),
        Parameter("dry_run", "None", "True", ""),
    ]
    model = parameters.derive_model("my-book", params)
    assert set(model.model_fields) == {"kubeconfig", "threshold", "ratio", "namespace", "only", "dry_run"}
    ok = parameters.validate_params(model, {"threshold": 7, "ratio": 1, "namespace": "x", "only": [1]})
    assert ok.threshold == 7 and ok.ratio == 1.0
    with pytest.raises(InvalidInput, match="'threshold'"):
        parameters.validate_params(model, {"threshold": "seven"})
    with pytest.raises(InvalidInput, match="unknown parameter 'approve_plan'"):
        parameters.validate_params(model, {"approve_plan": "0123456789ab"})


def test_params_model_prefers_the_registry(registered):
    assert parameters.params_model("demo", []) is registered
    assert parameters.params_model("not-registered") is parameters.MutatingParams


def test_registered_models_match_their_notebooks():
    """The CLI and the notebook validate with the same model: its fields are the parameters cell."""
    from pathlib import Path

    from runbooks.execute import notebook_parameters

    root = Path(__file__).resolve().parents[1] / "notebooks"
    for name, params_model in parameters.registered_models().items():
        path = root / f"{name}.ipynb"
        if not path.exists():
            continue
        declared = {p.name for p in notebook_parameters(path)}
        assert declared == set(params_model.model_fields), name


def test_every_shipped_runbook_names_its_model_by_an_entry_point():
    """Each notebook in notebooks/ has a `runbooks.runbooks` entry point, loaded on first look-up."""
    import importlib.metadata
    from pathlib import Path

    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=parameters.RUNBOOK_GROUP)}
    shipped = {p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")}
    assert set(points) == shipped
    for name, value in points.items():
        found = parameters.params_model(name)
        assert f"{found.__module__}:{found.__qualname__}" == value, name


def test_a_project_adds_a_runbook_through_its_own_distribution(tmp_path, monkeypatch):
    """A project's own installed package declares its runbook's model; nothing in runbooks is edited."""
    (tmp_path / "my_runbooks.py").write_text(textwrap.dedent("""
        from pydantic import Field
        from runbooks.parameters import RunbookParams

        class DrainParams(RunbookParams):
            max_unavailable: int = Field(default=1, ge=1)
        """))
    info = tmp_path / "my_runbooks-0.1.dist-info"  # what `pip install -e .` of the project writes
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-runbooks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[runbooks.runbooks]\ndrain-node = my_runbooks:DrainParams\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(parameters._REGISTRY, "drain-node", None)  # removed again after the test
    del parameters._REGISTRY["drain-node"]  # not loaded yet: the entry point loads it

    found = parameters.params_model("drain-node", [])
    assert found.__name__ == "DrainParams" and "drain-node" in parameters.registered_models()
    with pytest.raises(InvalidInput, match="'max_unavailable' = 0 is not allowed"):
        parameters.validate_params(found, {"max_unavailable": 0})


def test_a_model_that_is_not_a_parameter_model_is_refused():
    with pytest.raises(TypeError, match="runbook 'odd'.*must subclass"):
        parameters.register("odd")(dict)
    assert "odd" not in parameters._REGISTRY


def test_finding_validation_and_json():
    f = model.Finding(id="a/b", severity="warning", title="t", evidence={"n": 1})
    assert f.rank == 2 and f.to_json()["evidence"] == {"n": 1}
    with pytest.raises(ValueError, match="severity 'fatal' is not one of ok, info, warning, critical"):
        model.Finding(id="a", severity="fatal", title="t")


def test_records_fold_last_wins_and_sort_worst_first():
    cells = []
    for payload in [
        {"kind": "finding", "data": {"id": "x", "severity": "info", "title": "old"}},
        {"kind": "finding", "data": {"id": "y", "severity": "critical", "title": "c"}},
        {"kind": "finding", "data": {"id": "x", "severity": "warning", "title": "new"}},
        {"kind": "source", "data": {"name": "prometheus", "state": "down", "detail": "refused"}},
        {"kind": "plan", "data": {"id": "p1", "changes": [], "applied": False}},
        {"kind": "plan", "data": {"id": "p1", "changes": [], "applied": True}},
    ]:
        out = nbformat.v4.new_output("display_data", data={model.RECORD_MIME: payload, "text/plain": ""})
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [out]
        cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # as stored on disk
    state = model.read_records(nb)
    assert [f["id"] for f in state["findings"]] == ["y", "x"]
    assert state["findings"][1]["title"] == "new"
    assert state["data_sources"] == {"prometheus": {"state": "down", "detail": "refused"}}
    assert state["plan"]["applied"] is True


def test_run_records_findings_and_sources_outside_ipython():
    run = rb.Run("demo", parameters.MutatingParams())
    run.finding("a", "critical", "broken", resource="Pod/ns/a")

    def down():
        raise Unavailable("connection refused")

    assert run.check_source("prometheus", down) is False
    assert run.check_source("logs", lambda: "fine") is True
    state = model.fold_records(model.local_records())
    assert [f["id"] for f in state["findings"]] == ["a", "data-source-down/prometheus"]
    assert state["data_sources"]["prometheus"]["state"] == "down"
    assert state["data_sources"]["logs"]["state"] == "ok"
    with pytest.raises(InvalidInput, match="severity"):
        run.finding("b", "urgent", "t")


# ---- context guard -----------------------------------------------------------------


def test_context_guard_matches_name_or_server():
    cluster = SimpleNamespace(context="sandbox", server="https://127.0.0.1:6443")
    preflight.check_context(cluster, "sandbox")
    preflight.check_context(cluster, "https://127.0.0.1:6443/")
    preflight.check_context(cluster, None)
    with pytest.raises(errors.ContextMismatch) as info:
        preflight.check_context(cluster, "prod")
    assert "'sandbox'" in str(info.value) and "'prod'" in str(info.value)


def _kubeconfig(tmp_path, server="https://127.0.0.1:9", token="t0ken-value-123"):
    path = tmp_path / "kubeconfig"
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: c
          cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
        users:
        - name: u
          user: {{token: {token}}}
        contexts:
        - name: prod
          context: {{cluster: c, user: u}}
        - name: sandbox
          context: {{cluster: c, user: u}}
        current-context: prod
        """))
    return path


@pytest.mark.timeout(60)
def test_context_guard_runs_before_any_api_call(tmp_path):
    """The server is unreachable: a wrong context must be refused without trying it."""
    kc = _kubeconfig(tmp_path)
    params = parameters.RunbookParams(kubeconfig=str(kc), expected_context="sandbox")
    with pytest.raises(errors.ContextMismatch, match="'prod'"):
        preflight.preflight(params)
    params = parameters.RunbookParams(kubeconfig=str(kc), kube_context="sandbox", expected_context="sandbox")
    with pytest.raises(Unavailable):
        preflight.preflight(params)


def test_start_wraps_preflight_errors(tmp_path):
    kc = _kubeconfig(tmp_path)
    with pytest.raises(errors.PreflightFailed) as info:
        rb.start("whatever", {"kubeconfig": str(kc), "expected_context": "sandbox"})
    assert isinstance(info.value.__cause__, errors.ContextMismatch)
    assert model.fold_records(model.local_records())["preflight"]["ok"] is False
    with pytest.raises(errors.PreflightFailed, match="unknown parameter|'dry_run'"):
        rb.start("whatever", {"dry_run": "perhaps"}, connect=False)


# ---- plans -------------------------------------------------------------------------


def _restart(generation=3, name="web"):
    return plans.Change(
        operation="patch", kind="Deployment", namespace="shop", name=name,
        diff=[{"path": "spec.template.metadata.annotations[x]", "from": None, "to": plans.APPLY_TIME}],
        body={"spec": {"template": {"metadata": {"annotations": {"x": plans.APPLY_TIME}}}}},
        precondition={"generation": generation},
    )


def test_plan_id_is_stable_and_canonical():
    a = plans.Plan([_restart()])
    b = plans.Plan([plans.Change.model_validate(json.loads(json.dumps(_restart().model_dump())))])
    assert a.id == b.id and len(a.id) == 12
    assert plans.Plan([_restart(generation=4)]).id != a.id
    assert plans.Plan([_restart(name="api")]).id != a.id
    assert plans.Plan([_restart(), _restart(name="api")]).id != plans.Plan([_restart(name="api"), _restart()]).id
    assert plans.Plan([]).id == plans.Plan([]).id


def test_plan_id_is_pinned():
    """Approvals are given in one process and checked in another, maybe after an upgrade:
    changing the canonical form invalidates them, so it must be a deliberate change."""
    assert plans.Plan([_restart()]).id == "b3f781879daf"


def test_change_rules():
    secret = plans.Change(operation="patch", kind="Secret", namespace="ns", name="s",
                       diff=[{"path": "data.password", "from": "old", "to": "new"}], body={"data": {}})
    assert secret.diff == [{"path": "data.password", "from": "<redacted>", "to": "<redacted>"}]
    with pytest.raises(ValueError, match="kind 'Gadget' is not supported"):
        plans.Change(operation="delete", kind="Gadget", namespace="ns", name="x")
    with pytest.raises(ValueError, match="needs a namespace"):
        plans.Change(operation="delete", kind="Deployment", name="x")
    assert plans.Change(operation="delete", kind="Node", name="n1").resource == "Node/n1"


class _NoCalls:
    """A cluster whose API must not be called."""

    context, server = "sandbox", "https://127.0.0.1:1"

    @property
    def api_client(self):
        raise AssertionError("the API was called")


def test_apply_without_approval_changes_nothing(capsys):
    plan = plans.Plan([_restart()])
    run = rb.Run("demo", parameters.MutatingParams(expected_context="sandbox"), _NoCalls())
    assert run.apply(plan) == []
    run = rb.Run("demo", parameters.MutatingParams(dry_run=False, expected_context="sandbox"), _NoCalls())
    assert run.apply(plan) == []
    assert f"--approve {plan.id}" in capsys.readouterr().out


def test_apply_with_a_stale_approval_changes_nothing():
    plan = plans.Plan([_restart()])
    params = parameters.MutatingParams(dry_run=False, approve_plan="0123456789ab", expected_context="sandbox")
    with pytest.raises(errors.PlanMismatch, match="0123456789ab.*nothing was applied|Nothing was applied"):
        rb.Run("demo", params, _NoCalls()).apply(plan)


def test_apply_needs_expected_context():
    plan = plans.Plan([_restart()])
    params = parameters.MutatingParams(dry_run=False, approve_plan=plan.id)
    with pytest.raises(errors.ApprovalRefused, match="expected_context"):
        rb.Run("demo", params, _NoCalls()).apply(plan)


def test_errors_carry_their_exit_code():
    """Exit 2 for bad input, configuration or approval (nothing changed); 3 for anything else."""
    for cls in (errors.PreflightFailed, errors.ContextMismatch, errors.PlanInvalid, errors.PlanMismatch,
                errors.ApprovalRefused, InvalidInput):
        assert cls.exit_code == 2 and issubclass(cls, InvalidInput)
    for cls in (errors.RunbookError, errors.ApplyFailed, errors.Unavailable, errors.Forbidden):
        assert cls.exit_code == 3


def test_interactive_approval_is_a_button_naming_the_plan_id(monkeypatch):
    import ipywidgets

    shown = []
    monkeypatch.setattr(rb, "headless", lambda: False)
    monkeypatch.setattr(widgets, "_display", lambda *objs, **kw: shown.extend(objs))
    applied = []
    monkeypatch.setattr(rb.Run, "_apply", lambda self, plan: applied.append(plan.id) or [{}])
    plan = plans.Plan([_restart()])
    run = rb.Run("demo", parameters.MutatingParams(expected_context="sandbox"), _NoCalls())
    assert run.apply(plan) == [] and applied == []  # showing the button applies nothing
    (box,) = shown
    button = next(w for w in box.children if isinstance(w, ipywidgets.Button))
    assert button.description == f"Apply plan {plan.id}"
    button.click()
    assert applied == [plan.id] and button.disabled


def test_a_runbook_start_imports_no_client_it_does_not_use():
    """`runbook` (every notebook's first import) and the parameter checks of the reachability and DNS
    runbooks import neither the Elasticsearch client nor dnspython: each costs a run a fraction of
    a second, and the runbooks that use them import them where they do."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys
        import runbooks.runbook, runbooks.reachability, runbooks.params
        from runbooks import dns
        dns.provider("bind", {"type": "rfc2136", "nameserver": "127.0.0.1:53", "zones": ["example.com"]})
        print(sorted({m.split(".")[0] for m in sys.modules} & {"elasticsearch", "elastic_transport", "dns"}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]"]
