"""charts/kube-runbooks' scheduled runbooks: CronJobs, least-privilege RBAC proven in the sandbox.

The chart's ClusterRoles are generated from ``runbooks.onboarding.PERMISSIONS``
(tools/chart_permissions.py). Here the chart is installed with the real helm into the sandbox
(which authenticates ServiceAccount tokens and enforces RBAC like kube-apiserver), and every
scheduled runbook runs as its CronJob's ServiceAccount through ``runbooks run``:

* each passes as it does as admin, and the API server's audit records show it made only
  requests its declared permissions cover, none of them refused;
* without any single permission of the roles, some runbook stops with exit 2 and the
  critical finding ``forbidden: VERB RESOURCE in all namespaces`` -- never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client, config

from runbooks import deploy, errors, kube, onboarding

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kube-runbooks"
SCHEDULED = onboarding.SCHEDULED
# the parameters values.yaml gives these schedules
EXTRA = {"service-reachability": ["-p", "host", "all"], "dns-audit": ["-p", "in_cluster_view", "local"]}
pytestmark = [pytest.mark.timeout(600)]


def _helm_or_none():
    try:
        return deploy.find_helm()
    except errors.PreflightFailed:
        return None


HELM = _helm_or_none()
needs_helm = pytest.mark.skipif(HELM is None, reason="Helm 4 is not installed (python tools/install_helm.py)")


@pytest.fixture(autouse=True)
def helm_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "helm-home"
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))


def helm(*args: str, sandbox=None) -> subprocess.CompletedProcess:
    extra = ["--kubeconfig", str(sandbox.kubeconfig), "--kube-context", "sandbox"] if sandbox else []
    return subprocess.run([HELM, *args, *extra], capture_output=True, text=True, timeout=120, check=False)


ALL_ON = [f"--set=schedules.runbooks.{name}.enabled=true" for name in SCHEDULED]


def render(*args: str, namespace: str = "monitoring") -> list[dict]:
    proc = helm("template", "kr", str(CHART), "--namespace", namespace, *args)
    assert proc.returncode == 0, proc.stderr
    return deploy.parse_manifest(proc.stdout, namespace)


def test_the_chart_permissions_are_generated_from_the_declared_ones():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "chart_permissions.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@needs_helm
def test_one_cronjob_per_enabled_runbook_dry_run_by_default():
    objs = render(*ALL_ON, "--set=serve.enabled=false", "--set=schedules.runbooks.cluster-health.timeZone=Europe/Berlin",
                  "--set=schedules.runbooks.dns-audit.failOn=warning")
    for obj in objs:
        kubernetes_validate.validate(obj, "1.32", strict=True)
    jobs = {o["metadata"]["labels"]["kube-runbooks/runbook"]: o for o in objs if o["kind"] == "CronJob"}
    assert sorted(jobs) == sorted(SCHEDULED)
    assert not [o for o in objs if o["kind"] in ("Deployment", "Service")]
    for name, cj in jobs.items():
        spec = cj["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 300
        assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
        job = spec["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] == 1800 and job["backoffLimit"] == 0
        pod = job["template"]["spec"]
        [c] = pod["containers"]
        assert c["command"] == ["runbooks"] and c["args"][:2] == ["run", name]
        assert "--env=prod" in c["args"] and not any(a.startswith("--approve") for a in c["args"])  # dry run
        assert c["resources"]["limits"]["memory"] == "2Gi"
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
        assert pod["serviceAccountName"] == ("kr-read" if name == "dns-audit" else "kr-read-secrets")
        mount = next(m for m in c["volumeMounts"] if m["name"] == "env")
        assert mount["mountPath"] == "/var/lib/kube-runbooks/parameters/prod"
    assert jobs["cluster-health"]["spec"]["timeZone"] == "Europe/Berlin"
    assert "--fail-on=warning" in jobs["dns-audit"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    args = jobs["service-reachability"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    i = args.index("-p")
    assert args[i:i + 3] == ["-p", "host", '"all"'] and yaml.safe_load(args[i + 2]) == "all"


@needs_helm
def test_the_roles_grant_exactly_what_the_runbooks_declare():
    objs = render(*ALL_ON, "--set=serve.enabled=false")
    roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
    assert sorted(roles) == ["kr-read", "kr-read-secrets"]  # no write role: nothing approved

    def granted(rules):
        return {(v, g, r) for rule in rules for v in rule["verbs"] for g in rule["apiGroups"] for r in rule["resources"]}

    reads = {p for name in SCHEDULED for p in onboarding.reads(name)}
    assert granted(roles["kr-read"]["rules"]) | granted(roles["kr-read-secrets"]["rules"]) == reads
    assert granted(roles["kr-read-secrets"]["rules"]) == {("list", "", "secrets")}
    binds = {(b["subjects"][0]["name"], b["roleRef"]["name"]) for b in objs if b["kind"] == "ClusterRoleBinding"}
    assert binds == {("kr-read", "kr-read"), ("kr-read-secrets", "kr-read"), ("kr-read-secrets", "kr-read-secrets")}
    [policy] = [o for o in objs if o["kind"] == "NetworkPolicy"]
    egress = policy["spec"]["egress"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["ingress"] == []
    assert {p["port"] for p in egress[0]["ports"]} == {443, 6443}  # the API server
    assert {(p["protocol"], p["port"]) for p in egress[1]["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert [p["port"] for p in egress[2]["ports"]] == [9090, 9093] and [p["port"] for p in egress[3]["ports"]] == [9200]
    labels = policy["spec"]["podSelector"]["matchLabels"]
    cj = next(o for o in objs if o["kind"] == "CronJob")
    pod_labels = cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels.items() <= pod_labels.items()

    no_secrets = render(*ALL_ON, "--set=serve.enabled=false", "--set=rbac.readSecrets=false")
    assert sorted(o["metadata"]["name"] for o in no_secrets if o["kind"] == "ClusterRole") == ["kr-read"]


@needs_helm
def test_a_write_role_only_for_a_schedule_with_an_approved_plan():
    objs = render("--set=serve.enabled=false", "--set=schedules.runbooks.incident-investigation.enabled=true",
                  "--set=schedules.runbooks.incident-investigation.approvePlan=0123456789ab")
    roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
    assert sorted(roles) == ["kr-apply-incident-investigation", "kr-read", "kr-read-secrets"]
    assert roles["kr-apply-incident-investigation"]["rules"] == onboarding.rbac_rules(
        onboarding.writes("incident-investigation"))
    jobs = {o["metadata"]["labels"]["kube-runbooks/runbook"]: o for o in objs if o["kind"] == "CronJob"}
    pod = jobs["incident-investigation"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kr-apply-incident-investigation"
    assert "--approve=0123456789ab" in pod["containers"][0]["args"]
    assert pod["serviceAccountName"] != jobs["cluster-health"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
    bad = helm("template", "kr", str(CHART), "--set=schedules.runbooks.dns-audit.enabled=true",
               "--set=schedules.runbooks.dns-audit.approvePlan=0123456789ab")
    assert bad.returncode != 0 and "dns-audit changes nothing through the Kubernetes API" in bad.stderr


# ---- in the sandbox ------------------------------------------------------------------------


def _admin(sandbox) -> client.ApiClient:
    return config.new_client_from_config(str(sandbox.kubeconfig), context="sandbox")


@pytest.fixture
def installed(sandbox, namespace):
    """The chart installed with helm into the sandbox (every schedule on, serve off)."""
    release = f"kr-{uuid.uuid4().hex[:6]}"
    proc = helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "60s",
                "--set=serve.enabled=false", "--set=env=sandbox", *ALL_ON, sandbox=sandbox)
    assert proc.returncode == 0, proc.stderr
    yield release, namespace
    proc = helm("uninstall", release, "--namespace", namespace, sandbox=sandbox)
    assert proc.returncode == 0, proc.stderr


def sa_env(sandbox, project: Path, namespace: str, sa: str) -> str:
    """parameters/SA/ = the sandbox env, connecting with a bound token of ServiceAccount ``sa``."""
    token = client.CoreV1Api(_admin(sandbox)).create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = yaml.safe_load(sandbox.kubeconfig.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    (project / f"{sa}.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    env_dir = project / "parameters" / sa
    env_dir.mkdir(exist_ok=True)
    for f in (project / "parameters" / "sandbox").glob("*.yaml"):
        data = yaml.safe_load(f.read_text()) or {}
        if f.name == "env.yaml":
            data["kubeconfig"] = str(project / f"{sa}.kubeconfig")
        (env_dir / f.name).write_text(yaml.safe_dump(data))
    return sa


def run(project: Path, name: str, env: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run", name,
                           "--env", env, "--no-progress", *EXTRA.get(name, [])],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if k != "RUNBOOKS_HOME"})
    runs = sorted((project / "outputs" / env / name).glob("*/summary.json"))
    return proc, json.loads(runs[-1].read_text()) if runs else {}


def cronjob_accounts(sandbox, namespace: str) -> dict[str, str]:
    batch = client.BatchV1Api(_admin(sandbox))
    return {cj.metadata.labels["kube-runbooks/runbook"]: cj.spec.job_template.spec.template.spec.service_account_name
            for cj in batch.list_namespaced_cron_job(namespace).items}


@needs_helm
@pytest.mark.notebook
def test_every_scheduled_runbook_passes_as_its_service_account(sandbox, sandbox_env, installed):
    release, namespace = installed
    accounts = cronjob_accounts(sandbox, namespace)
    assert sorted(accounts) == sorted(SCHEDULED)
    [policy] = client.NetworkingV1Api(_admin(sandbox)).list_namespaced_network_policy(namespace).items
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    envs = {sa: sa_env(sandbox, sandbox_env, namespace, sa) for sa in set(accounts.values())}
    sandbox.api.audit = []
    try:
        for name in SCHEDULED:
            sa = accounts[name]
            start = len(sandbox.api.audit)
            proc, summary = run(sandbox_env, name, envs[sa])
            assert proc.returncode == 1, f"{name} as {sa}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"  # the sandbox's planted findings
            titles = " ".join(f["title"] + " " + f.get("detail", "") for f in summary["findings"])
            assert "forbidden" not in titles and "cannot be listed" not in titles and "HTTP 403" not in titles, name
            user = f"system:serviceaccount:{namespace}:{sa}"
            mine = [a for a in sandbox.api.audit[start:] if a["user"] == user and "resource" in a]
            assert mine and all(a["allowed"] for a in mine), [a for a in mine if not a["allowed"]]
            used = {(a["verb"], a["group"], a["resource"] + (f"/{a['subresource']}" if a["subresource"] else ""))
                    for a in mine if a["group"] != "authorization.k8s.io"}  # the access reviews themselves
            assert used <= set(onboarding.reads(name)), f"{name} made undeclared requests: {used - set(onboarding.reads(name))}"
    finally:
        sandbox.api.audit = None


@needs_helm
@pytest.mark.notebook
def test_without_any_single_permission_some_runbook_stops_with_exit_2(sandbox, sandbox_env, installed):
    release, namespace = installed
    accounts = cronjob_accounts(sandbox, namespace)
    rbac = client.RbacAuthorizationV1Api(_admin(sandbox))
    clusters = {}
    for sa in set(accounts.values()):
        env = sa_env(sandbox, sandbox_env, namespace, sa)
        clusters[sa] = kube.connect(str(sandbox_env / f"{env}.kubeconfig"), "sandbox")
    roles = {name: rbac.read_cluster_role(f"{release}-{name}") for name in ("read", "read-secrets")}
    originals = {name: [r.to_dict() for r in role.rules] for name, role in roles.items()}

    def granted(rules):
        return sorted({(v, g, r) for rule in rules for v in rule["verbs"] for g in rule["api_groups"]
                       for r in rule["resources"]})

    checked = 0
    for role, rules in originals.items():
        for perm in granted(rules):
            rest = onboarding.rbac_rules([p for p in granted(rules) if p != perm])
            rbac.patch_cluster_role(f"{release}-{role}", {"rules": rest})
            try:
                verb, group, resource = perm
                expected = f"forbidden: {verb} {resource + ('.' + group if group else '')} in all namespaces"
                stopped = [name for name in SCHEDULED
                           if onboarding.denied(clusters[accounts[name]], onboarding.reads(name)) == [expected]]
                assert stopped, f"no runbook needs {perm} of ClusterRole {release}-{role}"
                checked += 1
            finally:
                rbac.patch_cluster_role(f"{release}-{role}", {"rules": onboarding.rbac_rules(granted(rules))})
    assert checked == len({p for name in SCHEDULED for p in onboarding.reads(name)})

    # End to end for one: dns-audit without `list pods` stops before any check, exit 2, no traceback.
    read = originals["read"]
    rbac.patch_cluster_role(f"{release}-read", {"rules": onboarding.rbac_rules(
        [p for p in granted(read) if p != ("list", "", "pods")])})
    try:
        proc, summary = run(sandbox_env, "dns-audit", accounts["dns-audit"])
    finally:
        rbac.patch_cluster_role(f"{release}-read", {"rules": onboarding.rbac_rules(granted(read))})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "forbidden: list pods in all namespaces" in out and "Traceback" not in out
    assert summary["exit_code"] == 2
    assert [(f["severity"], f["title"]) for f in summary["findings"]] == [
        ("critical", "forbidden: list pods in all namespaces")]
