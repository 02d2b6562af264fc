"""Plan, server-side dry run, approval and audit against the sandbox API (no kernel)."""

from __future__ import annotations

import json

import pytest

import runbooks.runbook as rb
from runbooks import errors, kube, model, parameters, plans
from runbooks.errors import NotFound

from helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def deployment(namespace: str, name: str = "web") -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": name, "image": "nginx:1.27"}]}},
        },
    }


@pytest.fixture
def web(cluster, namespace):
    """A Deployment whose rollout has finished: the controllers write its status no more, so a plan's
    resourceVersion precondition holds until the test changes it."""
    kube.request(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments",
                   body=deployment(namespace))

    def settled() -> bool:
        obj = kube.request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
        status = obj.get("status") or {}
        progressing = kube.condition(obj, "Progressing")
        return (status.get("observedGeneration") == obj["metadata"]["generation"]
                and status.get("availableReplicas") == 1 and progressing.get("reason") == "NewReplicaSetAvailable")

    wait_for(settled, timeout=60, what=f"Deployment {namespace}/web to finish its rollout")
    return namespace


def restarted_at(cluster, namespace, name="web"):
    obj = kube.request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return ((obj["spec"]["template"]["metadata"].get("annotations")) or {}).get(plans.RESTARTED_AT)


@pytest.fixture(autouse=True)
def _clean_records():
    model.local_records(clear=True)


def test_preflight_against_the_sandbox(sandbox):
    params = parameters.RunbookParams(kubeconfig=str(sandbox.kubeconfig), expected_context="sandbox")
    cluster = kube.preflight(params)
    assert cluster.context == "sandbox"


def test_plan_is_stable_validated_and_changes_nothing(cluster, web):
    run = rb.Run("restart", parameters.MutatingParams(expected_context="sandbox"), cluster)
    plan = run.plan(plans.rollout_restart, namespace=web, name="web")
    again = plan.recompute(cluster)
    assert plan.validated and len(plan) == 1 and again.id == plan.id
    assert restarted_at(cluster, web) is None  # the server-side dry run changed nothing
    assert run.apply(plan) == []
    assert restarted_at(cluster, web) is None
    records = model.fold_records(model.local_records())
    assert records["plan"]["id"] == plan.id and records["plan"]["applied"] is False


def test_plan_for_a_missing_object_is_invalid(cluster, namespace):
    run = rb.Run("restart", parameters.MutatingParams(expected_context="sandbox"), cluster)
    with pytest.raises(errors.PlanInvalid) as info:
        run.plan(plans.rollout_restart, namespace=namespace, name="nope")
    assert isinstance(info.value.__cause__, NotFound)


def test_approved_plan_applies_once_and_is_audited(cluster, web, tmp_path):
    dry = rb.Run("restart", parameters.MutatingParams(expected_context="sandbox"), cluster)
    plan_id = dry.plan(plans.rollout_restart, namespace=web, name="web").id

    params = parameters.MutatingParams(expected_context="sandbox", dry_run=False, approve_plan=plan_id,
                               run_dir=str(tmp_path / "run1"))
    run = rb.Run("restart", params, cluster)
    plan = run.plan(plans.rollout_restart, namespace=web, name="web")
    results = run.apply(plan)
    stamp = restarted_at(cluster, web)
    assert len(results) == 1 and stamp
    lines = [json.loads(x) for x in (tmp_path / "run1" / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["result"] == "applied" and line["plan_id"] == plan_id
    assert line["context"] == "sandbox" and line["run_id"] == "run1" and line["user"]
    assert line["change"]["resource"] == f"Deployment/{web}/web"
    assert line["change"]["diff"][0]["to"] == stamp  # the value really sent, not the placeholder
    assert (tmp_path / "run1" / "backups" / f"Deployment_{web}_web.json").exists()

    # the same approval again: the object changed (generation), so nothing is applied
    again = rb.Run("restart", params.model_copy(update={"run_dir": str(tmp_path / "run2")}), cluster)
    replanned = again.plan(plans.rollout_restart, namespace=web, name="web")
    assert replanned.id != plan_id
    with pytest.raises(errors.PlanMismatch):
        again.apply(replanned)
    assert restarted_at(cluster, web) == stamp
    assert not (tmp_path / "run2" / "audit.jsonl").exists()


class Ledger:
    """A target for plans that is not Kubernetes: a dict of entries, with a dry-run check."""

    def __init__(self):
        self.entries: dict[str, dict] = {}
        self.dry_runs = 0

    def send(self, run, change, *, dry_run, now):
        if change.body.get("bad"):
            raise errors.InvalidInput("the ledger refuses bad entries")
        if dry_run:
            self.dry_runs += 1
            return None
        self.entries[change.name] = {**change.body, "at": now}
        return self.entries[change.name]

    def current(self, run, change):
        return self.entries.get(change.name)


def test_changes_to_another_system_go_through_its_target(tmp_path):
    ledger = Ledger()
    plans.register_target("ledger", ledger)

    def builder(_cluster, name, bad=False):
        return [plans.Change(operation="create", target="ledger", kind="Entry", name=name,
                          body={"value": 1, "bad": bad}, diff=[{"path": "value", "from": None, "to": 1}])]

    run = rb.Run("ledger", parameters.MutatingParams(expected_context="x", run_dir=str(tmp_path)), cluster=object())
    plan = run.plan(builder, name="e1")
    assert ledger.dry_runs == 1 and ledger.entries == {}
    assert plan.public()["changes"][0]["target"] == "ledger"
    with pytest.raises(errors.PlanInvalid, match="refuses bad entries"):
        run.plan(builder, name="e2", bad=True)
    approved = rb.Run("ledger", parameters.MutatingParams(expected_context="x", dry_run=False, approve_plan=plan.id,
                                                  run_dir=str(tmp_path)), cluster=object())
    approved.apply(approved.plan(builder, name="e1"))
    assert set(ledger.entries) == {"e1"}
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["result"] == "applied" and audit[-1]["change"]["target"] == "ledger"


def test_backups_of_secrets_hold_hashes_not_data(cluster, namespace, tmp_path):
    kube.request(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", body={
        "metadata": {"name": "creds"}, "stringData": {"password": "hunter2-but-longer"}})

    def label(_cluster, ns):
        return [plans.Change(operation="patch", kind="Secret", namespace=ns, name="creds",
                          body={"metadata": {"labels": {"rotated": "yes"}}},
                          diff=[{"path": "metadata.labels.rotated", "from": None, "to": "yes"}])]

    params = dict(expected_context="sandbox", run_dir=str(tmp_path))
    plan = rb.Run("secret", parameters.MutatingParams(**params), cluster).plan(label, ns=namespace)
    run = rb.Run("secret", parameters.MutatingParams(**params, dry_run=False, approve_plan=plan.id), cluster)
    run.apply(run.plan(label, ns=namespace))
    backup = (tmp_path / "backups" / f"Secret_{namespace}_creds.json").read_text()
    assert "hunter2" not in backup and "aHVudGVyM" not in backup  # neither plain nor base64
    assert json.loads(backup)["data"]["password"].startswith("<redacted sha256:")


# ---- environments in interactive use (the env parameter / $RUNBOOKS_ENV) ---------------------


def incident_globals(**changed):
    """What a freshly opened incident-investigation notebook holds after its parameters cell."""
    from runbooks.params import IncidentParams

    values = {name: info.get_default(call_default_factory=True) for name, info in IncidentParams.model_fields.items()}
    return values | changed


def test_an_interactive_start_loads_its_environment_like_runbooks_run(sandbox_env, monkeypatch):
    (sandbox_env / "parameters" / "sandbox" / "incident-investigation.yaml").write_text(
        "lookback: 2h\nservice: web\n")
    with (sandbox_env / "parameters" / "sandbox" / "env.yaml").open("a") as f:
        f.write("prometheus_url: http://127.0.0.1:9\n")
    monkeypatch.setenv("RUNBOOKS_HOME", str(sandbox_env))
    monkeypatch.setenv("RUNBOOKS_ENV", "sandbox")
    run = rb.start("incident-investigation", incident_globals(service="cart"))
    p = run.params
    assert run.env == p.env == "sandbox"
    assert p.expected_context == "sandbox" and p.kubeconfig and p.prometheus_url == "http://127.0.0.1:9"
    assert p.lookback == "2h"  # parameters/sandbox/incident-investigation.yaml
    assert p.service == "cart"  # what the notebook changed wins over the file
    assert run.cluster is not None and run.cluster.context == "sandbox"
    hint = run.approval_hint(plans.Plan([plans.Change(operation="patch", kind="Deployment", namespace="shop",
                                                     name="checkout", body={"spec": {}})]))
    assert "--env sandbox --approve" in hint
    # a run directory like a headless run's, made when the audit needs it
    assert run.directory() == sandbox_env / "outputs" / "sandbox" / "incident-investigation" / run.run_id


def test_the_env_parameter_wins_over_the_variable_and_bad_values_are_refused(sandbox_env, monkeypatch):
    monkeypatch.setenv("RUNBOOKS_HOME", str(sandbox_env))
    monkeypatch.setenv("RUNBOOKS_ENV", "nowhere")
    assert rb.start("incident-investigation", incident_globals(env="sandbox")).params.expected_context == "sandbox"
    with pytest.raises(errors.PreflightFailed, match="unknown env 'nowhere'; known envs: sandbox"):
        rb.start("incident-investigation", incident_globals())
    monkeypatch.setenv("RUNBOOKS_ENV", "sandbox")
    with pytest.raises(errors.PreflightFailed, match="'lookback'"):
        rb.start("incident-investigation", incident_globals(lookback="soon"))


def test_without_an_environment_sources_say_they_are_not_configured(sandbox_env, monkeypatch, sandbox):
    from runbooks import incident

    monkeypatch.delenv("RUNBOOKS_ENV", raising=False)
    monkeypatch.setenv("RUNBOOKS_HOME", str(sandbox_env))
    run = rb.start("incident-investigation", incident_globals(kubeconfig=str(sandbox.kubeconfig)))
    assert run.env is None and run.params.prometheus_url is None
    sources = incident.check_sources(run, incident.connect_sources(run.params))
    assert "no environment selected" in sources.why["prometheus"]
    run.env = "staging"
    sources = incident.check_sources(run, {"prometheus": None})
    assert sources.why["prometheus"].startswith("Prometheus is not configured in env staging")
    sig = incident.gather_signals(sources, run.params, None, None)
    assert "not configured in env staging" in sig.missing and sig.red.empty
    assert "not configured in env staging" in run.findings["data-source-down/prometheus"].title


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_a_notebook_run_without_runbooks_run_finds_its_environment(sandbox_env, tmp_path):
    """Plain papermill (as JupyterLab runs cells): $RUNBOOKS_ENV alone connects cluster-health to the sandbox."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RUNBOOKS_HEADLESS")}
    env.update(RUNBOOKS_ENV="sandbox", RUNBOOKS_HOME=str(sandbox_env))
    proc = subprocess.run([sys.executable, "-m", "papermill", str(sandbox_env / "notebooks" / "cluster-health.ipynb"),
                           str(out), "--cwd", str(sandbox_env / "notebooks")],
                          capture_output=True, text=True, timeout=280, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = model.read_records(json.loads(out.read_text()))
    assert records["run"]["env"] == "sandbox" and records["run"]["kube_context"] == "sandbox"
    assert records["findings"], "cluster-health found nothing in the sandbox's planted problems"
