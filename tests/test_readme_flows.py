"""The README's multi-step flows, typed exactly as a user types them, against `runbooks sandbox up`.

Every command runs as a subprocess of the installed ``runbooks`` command in a
project directory of this module's own (the checkout's notebooks, charts and
``parameters/sandbox/*.yaml``). ``runbooks sandbox up --free-ports`` starts the
whole sandbox in that directory's ``.sandbox`` (on free loopback ports, so it
never collides with a sandbox on the fixed ones), ``runbooks sandbox env`` writes
the ``parameters/sandbox/env.yaml`` that reaches it, and ``runbooks sandbox down``
stops it at the end, also when a test fails. Nothing here imitates or replaces
a sandbox component: what the flows need (cert-manager issuing the chart's
certificate, the ingress serving it) the sandbox does itself.

The flows, in README order: provisioning (dry run, then ``--approve`` with the
printed plan id), certificate rotation with ``--approve``, and the incident
silence and rollback with ``--approve``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from runbooks import kube

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNBOOKS = [str(BIN / "runbooks")] if (BIN / "runbooks").exists() else [sys.executable, "-m", "runbooks.cli"]
PLAN = re.compile(r"^plan ([0-9a-f]{12}): ", re.M)


def _missing() -> list[str]:
    missing = [b for b in ("prometheus", "promtool") if not shutil.which(b)]
    if not (shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")):
        missing.append("alertmanager")
    if not (BIN / "helm").exists() and not shutil.which("helm"):
        missing.append("helm")
    return missing


if _missing():  # pragma: no cover - make test installs them
    pytest.skip(f"not installed: {', '.join(_missing())}", allow_module_level=True)


def runbooks(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``runbooks ARGS`` in the project directory, as a user runs it there."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNBOOKS_HOME", "RUNBOOKS_NOTEBOOKS", "RUNBOOKS_SANDBOX_DIR", "KUBECONFIG")}
    helm_home = project.parent / "helm-home"  # the test's own Helm cache and repositories
    env.update(HELM_CACHE_HOME=str(helm_home / "cache"), HELM_CONFIG_HOME=str(helm_home / "config"),
               HELM_DATA_HOME=str(helm_home / "data"))
    return subprocess.run([*RUNBOOKS, *args], cwd=project, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def plan_id(proc: subprocess.CompletedProcess) -> str:
    found = PLAN.findall(proc.stdout)
    assert found, show(proc)
    return found[-1]


def summary(proc: subprocess.CompletedProcess) -> dict:
    """The summary.json of the run whose directory the command printed."""
    run_dir = re.search(r"^run directory: (.+)$", proc.stdout, re.M)
    assert run_dir, show(proc)
    return json.loads((Path(run_dir.group(1)) / "summary.json").read_text())


def by_id(s: dict) -> dict[str, dict]:
    return {f["id"]: f for f in s["findings"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project directory with the sandbox of `runbooks sandbox up` running in it (stopped afterwards)."""
    root = tmp_path_factory.mktemp("readme") / "project"
    root.mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "charts", root / "charts")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    for f in (ROOT / "parameters" / "sandbox").glob("*.yaml"):
        if f.name != "env.yaml":
            shutil.copy(f, root / "parameters" / "sandbox" / f.name)
    (root / "outputs").mkdir()
    try:
        up = runbooks(root, "sandbox", "up", "--free-ports", timeout=300)
        assert up.returncode == 0, show(up)
        env = runbooks(root, "sandbox", "env", timeout=60)
        assert env.returncode == 0, show(env)
        (root / "parameters" / "sandbox" / "env.yaml").write_text(env.stdout)
        yield root
    finally:
        down = runbooks(root, "sandbox", "down", timeout=60)
        assert down.returncode == 0, show(down)


@pytest.fixture(scope="module")
def settings(project) -> dict:
    return yaml.safe_load((project / "parameters" / "sandbox" / "env.yaml").read_text())


@pytest.fixture(scope="module")
def cluster(settings):
    return kube.connect(settings["kubeconfig"], "sandbox")


def served_chain(settings: dict, host: str) -> list[x509.Certificate]:
    """The chain the ingress serves for ``host``, verified against the sandbox CA file of env.yaml."""
    context = ssl.create_default_context(cafile=settings["ingress_ca_file"])
    hostport = settings["ingress_url"].split("://", 1)[1]
    address, port = hostport.rsplit(":", 1)
    with socket.create_connection((address, int(port)), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        chain = tls.get_verified_chain() if hasattr(tls, "get_verified_chain") else [tls.getpeercert(True)]
    return [x509.load_der_x509_certificate(c if isinstance(c, bytes) else c.public_bytes(ssl.ENCODING_DER))
            for c in chain]


def common_name(name: x509.Name) -> str:
    return name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


# ---- provisioning ----------------------------------------------------------------------------------


def test_provision_service_dry_run_then_approve_the_printed_plan(project, settings, cluster):
    dry = runbooks(project, "run", "provision-service", "--env", "sandbox")
    assert dry.returncode == 0, show(dry)
    assert summary(dry)["plan"]["applied"] is False
    pid = plan_id(dry)

    approved = runbooks(project, "run", "provision-service", "--env", "sandbox", "--approve", pid)
    assert approved.returncode == 0, show(approved)
    s = summary(approved)
    assert s["plan"]["id"] == pid and s["plan"]["applied"] is True
    checks = {f["id"]: f["severity"] for f in s["findings"] if f["id"].startswith("verify/")}
    assert checks == {"verify/deployment/hello/hello": "ok", "verify/endpoints/hello/hello": "ok",
                      "verify/http/hello/hello": "ok", "verify/certificate/hello/hello": "ok"}, show(approved)
    assert by_id(s)["verify/http/hello/hello"]["evidence"]["status"] == 200
    assert by_id(s)["preflight/namespace/hello"]["title"] == f"namespace hello exists (created by plan {pid})"

    # cert-manager made the Certificate from the chart's annotated Ingress, issued it, and it is served
    certificate = kube.get_object(cluster, "certificates", "hello", "hello-tls")
    ready = {c["type"]: c["status"] for c in certificate["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert certificate["spec"]["issuerRef"] == {"name": "letsencrypt-prod", "kind": "ClusterIssuer",
                                                "group": "cert-manager.io"}
    assert [(r["kind"], r["name"], r["controller"]) for r in certificate["metadata"]["ownerReferences"]] == [
        ("Ingress", "hello", True)]
    chain = served_chain(settings, "hello.example.com")  # verified with env.yaml's ingress_ca_file
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == ["hello.example.com"]
    issuer = kube.get_object(cluster, "clusterissuers", None, "letsencrypt-prod")
    assert "acme" in issuer["spec"] and "letsencrypt.org" in issuer["spec"]["acme"]["server"]
    assert common_name(leaf.issuer) == "R11 (sandbox)"  # letsencrypt-prod's sandbox intermediate CA


# ---- certificate rotation ----------------------------------------------------------------------------


def test_certificate_rotation_approved_reports_what_it_fixed_as_resolved(project):
    select = ["-p", "certificates", '["shop/cart-tls"]']
    dry = runbooks(project, "run", "certificate-rotation", "--env", "sandbox", *select)
    assert dry.returncode == 1, show(dry)  # the planted certificate problems are critical
    before = by_id(summary(dry))
    assert before["tls-expiring/shop/cart-tls"]["severity"] == "critical"
    assert before["certificate-renewal-overdue/shop/cart-tls"]["severity"] == "critical"
    pid = plan_id(dry)

    approved = runbooks(project, "run", "certificate-rotation", "--env", "sandbox", *select, "--approve", pid)
    s = summary(approved)
    found = by_id(s)
    assert s["plan"]["applied"] is True
    assert found["rotation-verified/shop/cart-tls"]["severity"] == "ok"
    assert "renewed: certificate until" in found["rotation-verified/shop/cart-tls"]["title"]
    for fixed in ("tls-expiring/shop/cart-tls", "certificate-renewal-overdue/shop/cart-tls"):
        assert found[fixed]["severity"] == "ok", found[fixed]
        assert found[fixed]["title"].startswith(f"resolved by plan {pid}: ")
        assert found[fixed]["evidence"]["was"] == "critical"
    assert "CRITICAL TLS certificate shop/cart-tls" not in approved.stdout
    # what the run did not (and cannot) fix still counts: legacy-api-tls is stuck on its DNS-01 challenge
    critical = {f["id"] for f in s["findings"] if f["severity"] == "critical"}
    assert critical == {"certificate-not-ready/shop/legacy-api-tls"}, show(approved)
    assert approved.returncode == 1 and s["counts"]["critical"] == 1, show(approved)


# ---- incident-investigation: silence, then rollback --------------------------------------------------


def _silences(settings: dict) -> list[dict]:
    with urllib.request.urlopen(f"{settings['alertmanager_url']}/api/v2/silences", timeout=10) as resp:
        return [x for x in json.load(resp) if x["status"]["state"] == "active"]


def _exit_matches(proc: subprocess.CompletedProcess, s: dict) -> None:
    """Exit 1 exactly when a finding left is critical (the default --fail-on)."""
    critical = [f for f in s["findings"] if f["severity"] == "critical"]
    assert proc.returncode == (1 if critical else 0), show(proc)


def test_incident_silence_dry_run_then_approve(project, settings):
    dry = runbooks(project, "run", "incident-investigation", "--env", "sandbox", "-p", "mitigation", "silence")
    assert dry.returncode in (0, 1), show(dry)
    assert summary(dry)["plan"]["applied"] is False and not _silences(settings)
    pid = plan_id(dry)

    approved = runbooks(project, "run", "incident-investigation", "--env", "sandbox", "-p", "mitigation", "silence",
                        "--approve", pid)
    s = summary(approved)
    assert s["plan"]["id"] == pid and s["plan"]["applied"] is True, show(approved)
    assert by_id(s)["mitigation/silence/shop/checkout"]["severity"] == "ok"
    _exit_matches(approved, s)
    [silence] = _silences(settings)
    assert {"name": "namespace", "value": "shop", "isRegex": False, "isEqual": True} in silence["matchers"]


def test_incident_rollback_dry_run_then_approve(project, cluster):
    def image() -> str:
        d = kube.get_object(cluster, "deployments", "shop", "checkout")
        return d["spec"]["template"]["spec"]["containers"][0]["image"]

    dry = runbooks(project, "run", "incident-investigation", "--env", "sandbox", "-p", "mitigation", "rollback")
    assert dry.returncode in (0, 1), show(dry)
    assert summary(dry)["plan"]["applied"] is False and image().endswith(":1.9.0")
    pid = plan_id(dry)

    approved = runbooks(project, "run", "incident-investigation", "--env", "sandbox", "-p", "mitigation", "rollback",
                        "--approve", pid)
    s = summary(approved)
    assert s["plan"]["id"] == pid and s["plan"]["applied"] is True, show(approved)
    assert by_id(s)["mitigation/rollback/shop/checkout"]["severity"] == "ok"
    assert image().endswith(":1.8.2")
    # the crash-looping pods the rollback replaced: resolved by the plan; the incident itself is history
    crashed = [f for f in summary(dry)["findings"] if f["id"].startswith("pod-crashloopbackoff/shop/checkout-")]
    assert crashed and all(f["severity"] == "critical" for f in crashed)
    for f in crashed:
        now = by_id(s)[f["id"]]
        assert now["severity"] == "ok" and now["title"].startswith(f"resolved by plan {pid}: "), now
    critical = {f["id"].split("/")[0] for f in s["findings"] if f["severity"] == "critical"}
    assert critical <= {"incident", "alert"}, show(approved)
    _exit_matches(approved, s)
