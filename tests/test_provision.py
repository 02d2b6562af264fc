"""provision-service end to end, headless, the way a user runs it, with the real helm.

A sandbox of its own (the default scenario plus the ingress endpoint and the
cert-manager add-ons, so that the verification request and the certificate
are real: cert-manager's ingress-shim makes the Certificate from the chart's
annotated Ingress) serves the whole module; each test works on its own release.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbooks import deploy, errors, kube, model, parameters
from runbooks.secrets import redacted_digest
from runbooks_sandbox.launch import Sandbox

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = [sys.executable, "-m", "runbooks.cli"]
PASSWORD_ENV = "PROVISION_VAULT_PASSWORD"
PASSWORD = "vault-pa55phrase-for-tests"
SECRET_VALUES = {"db_password": "Sup3r-S3cret-DB-pw", "api_token": "tok_9f8e7d6c5b4a3210"}

try:
    deploy.find_helm()
except errors.PreflightFailed as exc:  # pragma: no cover - make test installs it
    pytest.skip(f"Helm 4 is not installed: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    from runbooks_sandbox.certmanager import CertManager
    from runbooks_sandbox.ingress import IngressEndpoint

    sandbox = Sandbox(tmp_path_factory.mktemp("provision-sandbox"), "default", tick=1.0)
    sandbox.add(IngressEndpoint(sandbox))
    sandbox.add(CertManager(sandbox))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def cluster(box):
    return kube.connect(str(box.kubeconfig), "sandbox")


@pytest.fixture(scope="module")
def project(box, tmp_path_factory):
    """A project root: the notebooks, the shipped chart, the sandbox parameters, and how to reach
    the ingress endpoint (its URL and the sandbox Let's Encrypt root, from a scenario TLS Secret)."""
    root = tmp_path_factory.mktemp("provision-project")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "charts", root / "charts")
    params = root / "parameters" / "sandbox"
    params.mkdir(parents=True)
    shutil.copy(ROOT / "parameters" / "sandbox" / "provision-service.yaml", params)
    (params / "env.yaml").write_text(yaml.safe_dump({
        "kubeconfig": str(box.kubeconfig), "kube_context": "sandbox", "expected_context": "sandbox"}))
    secret = box.store.find(box.registry.by_kind_any_version("Secret"), "shop", "shop-frontend-tls")
    ca = root / "letsencrypt-sandbox-root.pem"
    ca.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    (root / "ingress.yaml").write_text(yaml.safe_dump({
        "ingress_url": box.urls["ingress"], "ingress_ca_file": str(ca)}))
    (root / "outputs").mkdir()
    helm_home = root / "helm-home"
    return root, {"HELM_CACHE_HOME": str(helm_home / "cache"), "HELM_CONFIG_HOME": str(helm_home / "config"),
                  "HELM_DATA_HOME": str(helm_home / "data")}


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, run_dir: Path | None) -> None:
        self.proc, self.code, self.dir = proc, proc.returncode, run_dir
        self.summary = json.loads((run_dir / "summary.json").read_text()) if run_dir else {}

    @property
    def plan(self) -> dict:
        return self.summary.get("plan") or {}

    def finding(self, prefix: str) -> list[dict]:
        return [f for f in self.summary.get("findings", []) if f["id"].startswith(prefix)]

    def texts(self) -> dict[str, str]:
        """Everything the run left: stdout, stderr and every file of its run directory."""
        out = {"stdout": self.proc.stdout, "stderr": self.proc.stderr}
        for f in sorted(self.dir.rglob("*")) if self.dir else []:
            if f.is_file():
                out[str(f)] = f.read_text(errors="replace")
        return out

    def __repr__(self) -> str:
        return f"Run(exit {self.code}, {self.dir})\n{self.proc.stdout[-3000:]}\n{self.proc.stderr[-3000:]}"


def provision(project, *args: str, env: dict | None = None, ingress: bool = True, timeout: int = 300) -> Run:
    root, helm_env = project
    base = root / "outputs" / "sandbox" / "provision-service"
    before = set(base.iterdir()) if base.exists() else set()
    extra = ["-f", str(root / "ingress.yaml")] if ingress else []
    proc = subprocess.run([*RUNBOOKS, "--project-dir", str(root), "run", "provision-service", "--env", "sandbox",
                           "--no-progress", *extra, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **helm_env, "RUNBOOKS_HOME": str(root), **(env or {})},
                          stdin=subprocess.DEVNULL)
    new = sorted(set(base.iterdir()) - before) if base.exists() else []
    return Run(proc, new[-1] if new else None)


def p(name: str, value) -> list[str]:
    return ["-p", name, value if isinstance(value, str) else json.dumps(value)]


def helm_history(box, release: str, namespace: str) -> list[dict]:
    out = subprocess.run([deploy.find_helm(), "history", release, "-n", namespace, "-o", "json",
                          "--kubeconfig", str(box.kubeconfig)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return json.loads(out)


# ---- a new service from parameters/sandbox/provision-service.yaml ----------------------------------


@pytest.fixture(scope="module")
def new_service(project):
    """The parameters file as shipped: dry run, the approved run, then the same run again."""
    dry = provision(project)
    assert dry.code == 0, dry
    approved = provision(project, "--approve", dry.plan["id"])
    again = provision(project)
    return dry, approved, again


def test_new_service_dry_run_plans_every_object_as_create_and_changes_nothing(new_service, cluster):
    dry, _, _ = new_service
    assert dry.plan["applied"] is False and dry.plan["validated"] is True
    assert sorted((c["operation"], c["kind"]) for c in dry.plan["changes"]) == [
        ("create", "ConfigMap"), ("create", "Deployment"), ("create", "Ingress"), ("create", "Namespace"),
        ("create", "Service")]
    assert not (dry.dir / "audit.jsonl").exists()
    assert f"--approve {dry.plan['id']}" in (dry.dir / "report.html").read_text()


def test_the_approved_run_installs_rolls_out_and_answers_through_the_ingress(new_service, box, cluster):
    dry, approved, _ = new_service
    assert approved.code == 0, approved
    assert (approved.plan["id"], approved.plan["changes"]) == (dry.plan["id"], dry.plan["changes"])
    assert approved.plan["applied"] is True and approved.plan["validated"] is True
    audit = [json.loads(line) for line in (approved.dir / "audit.jsonl").read_text().splitlines()]
    assert len(audit) == 5 and {a["result"] for a in audit} == {"applied"}
    assert {a["plan_id"] for a in audit} == {dry.plan["id"]} and audit[0]["context"] == "sandbox"
    history = helm_history(box, "hello", "hello")
    assert [(h["revision"], h["status"]) for h in history] == [(1, "deployed")]
    assert dry.plan["id"] in history[0]["description"]
    dep = cluster.apps.read_namespaced_deployment("hello", "hello")
    assert dep.status.available_replicas == 2
    checks = {f["id"].split("/")[1]: f for f in approved.finding("verify/")}
    assert {k: f["severity"] for k, f in checks.items()} == {
        "deployment": "ok", "endpoints": "ok", "http": "ok", "certificate": "ok"}
    http = checks["http"]["evidence"]
    assert http["status"] == 200 and '"service": "hello/hello"' in http["body"]
    assert "hello.example.com" in http["certificate"]["dns_names"]
    assert http["certificate"]["issuer"] == "R11 (sandbox)"
    assert approved.finding("rollout/")[0]["severity"] == "ok"
    [namespace] = approved.finding("preflight/namespace/")
    assert (namespace["severity"], namespace["title"]) == ("ok", f"namespace hello exists (created by plan {dry.plan['id']})")
    assert dry.finding("preflight/namespace/")[0]["title"] == "namespace hello will be created"


def test_a_second_identical_run_plans_nothing(new_service):
    _, _, again = new_service
    assert again.code == 0, again
    assert again.plan["changes"] == [] and again.plan["applied"] is False
    assert not (again.dir / "audit.jsonl").exists()
    assert {f["severity"] for f in again.finding("verify/")} == {"ok"}


# ---- a crash-looping upgrade and the rollback -----------------------------------------------------


def test_a_crash_looping_upgrade_is_diagnosed_and_rolled_back_when_approved(new_service, box, cluster, project):
    crash = [*p("image", "registry.example.com/hello/web:2.0.0"),
             *p("pod_annotations", {"sandbox.kube-runbooks.io/fail": "CrashLoopBackOff"}),
             *p("timeout_seconds", 15), *p("verify_timeout_seconds", 3)]
    dry = provision(project, *crash)
    assert dry.code == 0, dry
    changed = {c["kind"]: [d["path"] for d in c["diff"]] for c in dry.plan["changes"]}
    assert "spec.template.spec.containers[web-service].image" in changed["Deployment"]
    assert "spec.template.metadata.annotations[sandbox.kube-runbooks.io/fail]" in changed["Deployment"]

    failed = provision(project, *crash, "--approve", dry.plan["id"])
    assert failed.code == 1, failed
    rollout = failed.finding("rollout/")[0]
    assert rollout["severity"] == "critical" and "failed within 15s" in rollout["title"]
    stuck = failed.finding("stuck-pod/hello/")
    assert stuck and all(f["severity"] == "critical" for f in stuck)
    report = (failed.dir / "report.html").read_text()
    pod = stuck[0]["resource"].split("/")[-1]
    assert pod in report and "BackOff" in report
    assert any(r in report for r in ("CrashLoopBackOff", "Error (restarting)"))
    offer = failed.finding("rollback/")[0]
    assert offer["severity"] == "warning" and offer["evidence"]["rollback_to"] == 1
    assert [h["status"] for h in helm_history(box, "hello", "hello")] == ["deployed", "failed"]

    rolled = provision(project, *crash, "--approve", offer["evidence"]["plan_id"])
    assert rolled.code == 0, rolled
    assert rolled.finding("rollback/")[0]["severity"] == "ok"
    history = helm_history(box, "hello", "hello")
    assert [(h["revision"], h["status"]) for h in history][-1] == (3, "deployed")
    assert history[-1]["description"] == "Rollback to 1"
    image = cluster.apps.read_namespaced_deployment("hello", "hello").spec.template.spec.containers[0].image
    assert image == "registry.example.com/hello/web:1.0.0"
    audit = [json.loads(line) for line in (rolled.dir / "audit.jsonl").read_text().splitlines()]
    assert {a["plan_id"] for a in audit} == {offer["evidence"]["plan_id"]}


def test_auto_rollback_rolls_back_an_approved_upgrade_that_fails(project, box, cluster):
    base = [*p("release", "auto"), *p("namespace", "auto"), *p("host", "auto.example.com"),
            *p("replicas", 1), *p("timeout_seconds", 10), *p("verify_timeout_seconds", 3)]
    first = provision(project, *base, ingress=False)
    installed = provision(project, *base, "--approve", first.plan["id"], ingress=False)
    assert installed.code == 0, installed
    crash = [*base, *p("image", "registry.example.com/web:9.9.9"), *p("auto_rollback", True),
             *p("pod_annotations", {"sandbox.kube-runbooks.io/fail": "ImagePullBackOff"})]
    dry = provision(project, *crash, ingress=False)
    run = provision(project, *crash, "--approve", dry.plan["id"], ingress=False)
    assert run.code == 1, run  # the requested change failed, even though the service is back
    assert run.finding("rollout/")[0]["severity"] == "critical"
    assert run.finding("rollback/")[0]["severity"] == "ok"
    assert {f["severity"] for f in run.finding("stuck-pod/")} == {"warning"}
    assert [h["status"] for h in helm_history(box, "auto", "auto")] == ["superseded", "failed", "deployed"]


# ---- secrets from an Ansible Vault file -----------------------------------------------------------


def test_vault_secrets_reach_the_pods_and_never_any_output(project, box, cluster, tmp_path):
    root, _ = project
    vault = root / "secrets.vault.yml"
    vault.write_text(deploy.encrypt_vault(yaml.safe_dump(SECRET_VALUES), PASSWORD))
    base = [*p("release", "vaulted"), *p("namespace", "vaulted"), *p("host", "vaulted.example.com"),
            *p("vault_file", str(vault)), *p("vault_password_env", PASSWORD_ENV),
            *p("vault_keys", {"DB_PASSWORD": "db_password", "API_TOKEN": "api_token"}),
            *p("verify_timeout_seconds", 5)]
    env = {PASSWORD_ENV: PASSWORD}
    dry = provision(project, *base, env=env, ingress=False)
    assert dry.code == 0, dry
    assert ("create", "Secret") in {(c["operation"], c["kind"]) for c in dry.plan["changes"]}
    applied = provision(project, *base, "--approve", dry.plan["id"], env=env, ingress=False)
    assert applied.code == 0, applied
    secret = cluster.core.read_namespaced_secret("vaulted", "vaulted")  # values as digests: compared as such
    assert secret.data == {k: redacted_digest(base64.b64encode(v.encode()).decode()) for k, v in {
        "DB_PASSWORD": SECRET_VALUES["db_password"], "API_TOKEN": SECRET_VALUES["api_token"]}.items()}

    # a new value changes the Secret: the plan says so, without the values
    vault.write_text(deploy.encrypt_vault(yaml.safe_dump({**SECRET_VALUES, "db_password": "N3w-S3cret-pw-2"}),
                                          PASSWORD))
    changed = provision(project, *base, env=env, ingress=False)
    assert changed.code == 0, changed
    secret_change = next(c for c in changed.plan["changes"] if c["kind"] == "Secret")
    assert secret_change["diff"] == [{"path": "data", "from": "<redacted>", "to": "<redacted>"}]

    wrong = provision(project, *base, env={PASSWORD_ENV: "not-the-password"}, ingress=False)
    assert wrong.code == 2, wrong
    assert "wrong password" in wrong.proc.stdout + wrong.proc.stderr
    assert not (wrong.dir / "audit.jsonl").exists() if wrong.dir else True

    needles = [*SECRET_VALUES.values(), "N3w-S3cret-pw-2", PASSWORD]
    needles += [base64.b64encode(v.encode()).decode() for v in SECRET_VALUES.values()]
    for run in (dry, applied, changed, wrong):
        for where, text in run.texts().items():
            leaked = [n for n in needles if n in text]
            assert not leaked, f"secret value in {where}"


# ---- bad input: exit 2 before anything is applied ---------------------------------------------


@pytest.fixture(scope="module")
def other_ingress(cluster):
    body = {"metadata": {"name": "taken", "namespace": "shop"},
            "spec": {"rules": [{"host": "taken.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "frontend", "port": {"number": 80}}}}]}}]}}
    from kubernetes import client

    client.NetworkingV1Api(cluster.api_client).create_namespaced_ingress("shop", body)
    return "taken.example.com"


@pytest.mark.parametrize("args, words", [
    (p("host", "Not_A..Host"), "not a valid DNS name"),
    (p("image", "registry.example.com/hello/web"), "has no tag"),
    (p("host", "taken.example.com"), "already served by Ingress shop/taken"),
    (p("port", 70000), "port"),
    (p("replicas", -2), "replicas"),
    (p("cluster_issuer", "letsencrypt-nope"), "ClusterIssuer 'letsencrypt-nope' does not exist"),
    (p("chart", "charts/no-such-chart"), "does not exist"),
], ids=["dns-name", "image-tag", "host-taken", "port", "replicas", "issuer", "chart"])
def test_bad_input_exits_2_before_anything_is_applied(project, box, other_ingress, args, words):
    release = [*p("release", "badinput"), *p("namespace", "badinput")]
    run = provision(project, *release, *args, ingress=False)
    assert run.code == 2, run
    assert words in run.proc.stdout + run.proc.stderr
    assert helm_history_or_empty(box, "badinput", "badinput") == []
    assert not run.dir or not (run.dir / "audit.jsonl").exists()


def helm_history_or_empty(box, release, namespace):
    proc = subprocess.run([deploy.find_helm(), "history", release, "-n", namespace, "-o", "json",
                           "--kubeconfig", str(box.kubeconfig)], capture_output=True, text=True, timeout=60)
    return json.loads(proc.stdout) if proc.returncode == 0 else []


# ---- the notebook itself ------------------------------------------------------------------------


def test_the_notebook_is_committed_clean_and_its_parameters_match_the_model():
    import nbformat
    import papermill

    path = ROOT / "notebooks" / "provision-service.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])] == [code[0]]
    params = papermill.inspect_notebook(str(path))
    assert all(v["help"] for v in params.values()), "every parameter has an inline comment"
    assert set(params) == set(deploy.ProvisionParams.model_fields)
    shipped = yaml.safe_load((ROOT / "parameters" / "sandbox" / "provision-service.yaml").read_text())
    parameters.validate_params(deploy.ProvisionParams, shipped)


def test_plain_papermill_runs_the_dry_run(project, box, tmp_path):
    import papermill

    root, helm_env = project
    out = tmp_path / "out.ipynb"
    env = {**os.environ, **helm_env, "RUNBOOKS_HEADLESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(root / "notebooks" / "provision-service.ipynb"), str(out),
         "--cwd", str(root), "-p", "kubeconfig", str(box.kubeconfig), "-p", "kube_context", "sandbox",
         "-p", "release", "paper", "-p", "namespace", "paper", "-p", "host", "paper.example.com",
         "-p", "verify_timeout_seconds", "2"],
        capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = model.read_records(papermill.iorw.load_notebook_node(str(out)))["plan"]
    assert plan["applied"] is False and len(plan["changes"]) == 5
