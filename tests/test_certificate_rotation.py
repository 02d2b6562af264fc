"""certificate-rotation end to end, headless, the way a user runs it (issue 5's acceptance).

One sandbox with the cert-manager controller and the ingress endpoint for the
whole module; the tests run in order: inventory, dry run, bad files, approved
run, idempotent re-run, interrupted run, rollback, no key material anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

import runbooks.runbook as rb
from runbooks import certs, kube, plans, rotation, rotationtargets
from runbooks.secrets import encoded_key
from runbooks_sandbox import pki
from runbooks_sandbox.certmanager import CertManager
from runbooks_sandbox.ingress import IngressEndpoint
from runbooks_sandbox.launch import Sandbox

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "certificate-rotation"
PLANTED = {
    ("shop", "shop-frontend-tls"): "valid",
    ("shop", "cart-tls"): "expiring (5 d), renewal overdue",
    ("shop", "checkout-tls"): "expired, not ready",
    ("payments", "payments-tls"): "self-signed",
    ("shop", "legacy-api-tls"): "stuck: not issued",
    ("shop", "assets-tls"): "served ≠ stored",
    ("web", "web-tls"): "valid",  # the service-reachability hosts' certificate
}
PLANTED_FINDINGS = {
    ("tls-expiring/shop/cart-tls", "critical"),
    ("certificate-renewal-overdue/shop/cart-tls", "critical"),
    ("tls-expired/shop/checkout-tls", "critical"),
    ("certificate-not-ready/shop/checkout-tls", "critical"),
    ("tls-self-signed/payments/payments-tls", "warning"),
    ("certificate-not-ready/shop/legacy-api-tls", "critical"),
    ("tls-served-mismatch/shop/assets-tls", "critical"),
}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    sandbox = Sandbox(tmp_path_factory.mktemp("rotation-sandbox"), "default", tick=0.5)
    sandbox.add(CertManager(sandbox, tick=0.2))
    endpoint = sandbox.add(IngressEndpoint(sandbox, poll=0.1))
    sandbox.start()
    sandbox.endpoint = endpoint
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def api(box):
    return kube.connect(str(box.kubeconfig), "sandbox")


@pytest.fixture(scope="module")
def project(box, tmp_path_factory):
    root = tmp_path_factory.mktemp("rotation-project")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    (root / "outputs").mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    env = {"kubeconfig": str(box.kubeconfig), "kube_context": "sandbox", "expected_context": "sandbox"}
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    return root


@pytest.fixture(scope="module")
def pay_ca():
    now = datetime.now(UTC)
    root = pki.new_ca("Payments Test Root", not_before=now - timedelta(days=30), not_after=now + timedelta(days=3650))
    inter = pki.issue(root, common_name="Payments Test CA", not_before=now - timedelta(days=30),
                      not_after=now + timedelta(days=1800), key_type="ec", is_ca=True, path_length=0)
    return root, inter


def write_files(folder: Path, pay_ca, *, days=398, sans=("pay.example.com",), order="leaf-first", key="own",
                expired=False) -> dict:
    root, inter = pay_ca
    now = datetime.now(UTC)
    not_before = now - timedelta(days=400) if expired else now - timedelta(hours=1)
    not_after = now - timedelta(days=1) if expired else now + timedelta(days=days)
    leaf = pki.issue(inter, common_name=sans[0], dns_names=list(sans), not_before=not_before, not_after=not_after,
                     key_type="ec")
    folder.mkdir(parents=True, exist_ok=True)
    chain = leaf.cert_pem + inter.cert_pem if order == "leaf-first" else inter.cert_pem + leaf.cert_pem
    (folder / "tls.crt").write_bytes(chain)
    key_pem = leaf.key_pem if key == "own" else pki.key_pem(pki.generate_key("ec"))
    (folder / "tls.key").write_bytes(key_pem)
    (folder / "ca.crt").write_bytes(root.cert_pem)
    KEYS.append(key_pem)
    return {"cert": str(folder / "tls.crt"), "key": str(folder / "tls.key"), "ca": str(folder / "ca.crt"),
            "sha256": certs.describe(leaf.cert).sha256}


KEYS: list[bytes] = []  # every private key this module wrote to a file (for the leak test)


def runbooks(project: Path, box, *args: str, params: dict | None = None) -> subprocess.CompletedProcess:
    """`runbooks run certificate-rotation --env sandbox` with the ingress endpoint and a parameters file."""
    extra = []
    if params:
        pfile = project / f"params-{len(list(project.glob('params-*.yaml')))}.yaml"
        pfile.write_text(yaml.safe_dump(params))
        extra = ["-f", str(pfile)]
    env = dict(os.environ, RUNBOOKS_HOME=str(project))
    return subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run", RUNBOOK,
                           "--env", "sandbox", "--no-progress", "-p", "ingress_url", box.endpoint.url,
                           *extra, *args], capture_output=True, text=True, timeout=240, env=env,
                          stdin=subprocess.DEVNULL)


def latest(project: Path) -> Path:
    return sorted((project / "outputs" / "sandbox" / RUNBOOK).iterdir())[-1]


def summary(project: Path) -> dict:
    return json.loads((latest(project) / "summary.json").read_text())


def plan_id(proc) -> str:
    return re.search(r"plan ([0-9a-f]{12})", proc.stdout).group(1)


def snapshot(box) -> dict:
    """What a dry run must not change: objects' resourceVersions (workloads: generation)."""
    out = {}
    for kind in ("Secret", "Certificate", "CertificateRequest", "Ingress", "ConfigMap"):
        rt = box.registry.by_kind_any_version(kind)
        for o in box.store.items(rt):
            out[(kind, o["metadata"].get("namespace"), o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for o in box.store.items(box.registry.by_kind_any_version(kind)):
            out[(kind, o["metadata"].get("namespace"), o["metadata"]["name"])] = o["metadata"].get("generation")
    return out


def served(box, host):
    return certs.served_certificate(host, box.endpoint.address)


def stored(api, ns, name):
    return certs.read_tls_secret(kube.read_secret_keys(api, ns, name))


STATE: dict = {}


def test_inventory_reports_each_planted_state_exactly(api, box):
    inv = rotation.inventory(api)
    inv.probe(box.endpoint.address)
    states = inv.states()
    table = {(r.namespace, r.name): r.state for r in inv.table(states).itertuples()}
    assert table == {k: v for k, v in PLANTED.items()}  # nothing else, nothing healthy flagged
    assert {(f.id, f.severity) for f in inv.findings()} == PLANTED_FINDINGS
    stuck = next(f for f in inv.findings() if f.id == "certificate-not-ready/shop/legacy-api-tls")
    assert "AccessDenied" in stuck.detail and "DNS-01" in stuck.detail


def test_dry_run_plans_and_changes_nothing(project, box, api, pay_ca, tmp_path_factory):
    files = write_files(tmp_path_factory.mktemp("good"), pay_ca)
    STATE["files"] = files
    STATE["params"] = {"certificates": ["shop/cart-tls", "shop/assets-tls"],
                       "replacement_files": {"payments/payments-tls": {k: files[k] for k in ("cert", "key", "ca")}}}
    before = snapshot(box)
    proc = runbooks(project, box, params=STATE["params"])
    assert proc.returncode == 1, proc.stdout + proc.stderr  # critical findings, nothing failed
    s = summary(project)
    assert {(f["id"], f["severity"]) for f in s["findings"]} == PLANTED_FINDINGS
    plan = s["plan"]
    assert plan["validated"] is True and plan["applied"] is False and plan["id"] == plan_id(proc)
    assert [(c["operation"], c["resource"]) for c in plan["changes"]] == [
        ("patch", "Certificate/shop/cart-tls"),
        ("create", f"Secret/payments/{plan['changes'][1]['name']}"),
        ("patch", "Secret/payments/payments-tls"),
        ("patch", "Deployment/ingress-nginx/ingress-nginx-controller"),
        ("patch", "Deployment/payments/payments-api"),
    ]
    assert plan["changes"][0]["subresource"] == "status"
    assert plan["changes"][1]["name"].startswith("payments-tls-backup-")
    assert snapshot(box) == before
    assert not (latest(project) / "audit.jsonl").exists()
    assert served(box, "assets.shop.example.com").sha256 != stored(api, "shop", "assets-tls").sha256
    STATE["plan_id"] = plan["id"]


@pytest.mark.parametrize("case, check", [
    ("wrong-key", "key matches"),
    ("expired", "not expired"),
    ("sans", "SANs cover the hosts"),
    ("garbage", "PEM"),
    ("out-of-order", "chain order"),
])
def test_bad_files_exit_2_before_any_change(project, box, pay_ca, tmp_path_factory, case, check):
    folder = tmp_path_factory.mktemp(case)
    if case == "garbage":
        files = write_files(folder, pay_ca)
        Path(files["cert"]).write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    else:
        files = write_files(folder, pay_ca, key="other" if case == "wrong-key" else "own",
                            expired=case == "expired",
                            sans=("www.example.com",) if case == "sans" else ("pay.example.com",),
                            order="intermediate-first" if case == "out-of-order" else "leaf-first")
    before = snapshot(box)
    proc = runbooks(project, box, params={"replacement_files": {
        "payments/payments-tls": {k: files[k] for k in ("cert", "key", "ca")}}})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"failed the check '{check}'" in proc.stdout + proc.stderr
    assert snapshot(box) == before


def test_approved_run_renews_rotates_restarts_and_serves(project, box, api):
    files = STATE["files"]
    old_cart, old_pay = stored(api, "shop", "cart-tls"), stored(api, "payments", "payments-tls")
    old_revision = kube.get_object(api, "certificates", "shop", "cart-tls")["status"]["revision"]
    old_served = {h: served(box, h).sha256 for h in ("cart.shop.example.com", "pay.example.com")}
    proc = runbooks(project, box, "--approve", STATE["plan_id"], params=STATE["params"])
    assert proc.returncode == 1, proc.stdout + proc.stderr  # checkout-tls and legacy-api-tls were not selected
    s = summary(project)
    assert s["plan"]["id"] == STATE["plan_id"] and s["plan"]["applied"] is True
    # what the verified rotation fixed is re-checked and shown as resolved, not at its old severity
    found = {f["id"]: f for f in s["findings"]}
    for fixed, was in (("tls-expiring/shop/cart-tls", "critical"),
                       ("certificate-renewal-overdue/shop/cart-tls", "critical"),
                       ("tls-self-signed/payments/payments-tls", "warning"),
                       ("tls-served-mismatch/shop/assets-tls", "critical")):
        assert found[fixed]["severity"] == "ok", found[fixed]
        assert found[fixed]["title"].startswith(f"resolved by plan {STATE['plan_id']}: ")
        assert found[fixed]["evidence"]["was"] == was
    assert {f["id"] for f in s["findings"] if f["severity"] == "critical"} == {
        "tls-expired/shop/checkout-tls", "certificate-not-ready/shop/checkout-tls",
        "certificate-not-ready/shop/legacy-api-tls"}
    verified = {f["id"]: f["severity"] for f in s["findings"] if f["id"].startswith(("rotation-", "restart-"))}
    assert verified == {
        "rotation-verified/shop/cart-tls": "ok", "rotation-verified/payments/payments-tls": "ok",
        "rotation-verified/shop/assets-tls": "ok",
        "restart-done/ingress-nginx/ingress-nginx-controller": "ok", "restart-done/payments/payments-api": "ok",
    }
    # cert-manager: a new revision and a later notAfter
    cart = kube.get_object(api, "certificates", "shop", "cart-tls")
    new_cart = stored(api, "shop", "cart-tls")
    assert cart["status"]["revision"] == old_revision + 1 and new_cart.leaf.not_after > old_cart.leaf.not_after
    # hand-managed: replaced from the files, the old content kept in a labelled backup
    new_pay = stored(api, "payments", "payments-tls")
    assert new_pay.sha256 == files["sha256"]
    [backup] = rotationtargets.backups(api, ["payments"], of="payments-tls")
    assert backup["sha256"] == old_pay.sha256 and backup["backup"].startswith("payments-tls-backup-")
    copy = kube.read_secret_keys(api, "payments", backup["backup"])
    assert copy.object["metadata"]["labels"][certs.BACKUP_OF] == "payments-tls" and copy.object["type"] == "Opaque"
    assert certs.read_tls_secret(copy).sha256 == old_pay.sha256 and copy.key_matches() is True
    # restarts, and the served certificates changed to the stored ones
    for ns, name in (("payments", "payments-api"), ("ingress-nginx", "ingress-nginx-controller")):
        obj = kube.get_object(api, "deployments", ns, name)
        assert obj["spec"]["template"]["metadata"]["annotations"][plans.RESTARTED_AT]
    for host, secret in (("cart.shop.example.com", new_cart), ("pay.example.com", new_pay)):
        now_served = served(box, host).sha256
        assert now_served == secret.sha256 and now_served != old_served[host]
    assert served(box, "assets.shop.example.com").sha256 == stored(api, "shop", "assets-tls").sha256
    # audit: every change, applied
    lines = [json.loads(x) for x in (latest(project) / "audit.jsonl").read_text().splitlines()]
    assert [(x["change"]["resource"], x["result"]) for x in lines] == [
        (c["resource"], "applied") for c in s["plan"]["changes"]]
    assert all(x["plan_id"] == STATE["plan_id"] and x["context"] == "sandbox" for x in lines)


def test_rerun_after_success_plans_nothing(project, box):
    proc = runbooks(project, box, params=STATE["params"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = summary(project)
    assert s["plan"]["changes"] == []
    assert not {f["id"] for f in s["findings"]} & {"tls-expiring/shop/cart-tls", "tls-served-mismatch/shop/assets-tls",
                                                    "tls-self-signed/payments/payments-tls"}


def test_rerun_after_an_interruption_completes_without_a_second_backup(project, box, api, pay_ca,
                                                                       tmp_path_factory):
    files = write_files(tmp_path_factory.mktemp("newer"), pay_ca, days=500)
    params = {"replacement_files": {"payments/payments-tls": {k: files[k] for k in ("cert", "key", "ca")}}}
    current = stored(api, "payments", "payments-tls")
    # the first attempt made its backup, then died before replacing the Secret
    p = rotation.CertificateRotationParams(expected_context="sandbox", ingress_url=box.endpoint.url, **params)
    run = rb.Run(RUNBOOK, p, api)
    inv = rotation.inventory(api)
    first = plans.Plan(rotation.rotation_changes(api, **rotation.plan_arguments(p, rotation.select_targets(
        inv, [], None, p.replacement_files))))
    backup_change = next(c for c in first.changes if rotationtargets.phase_of(c) == "backup")
    plans.TARGETS[backup_change.target].send(run, backup_change, dry_run=False, now="2026-01-01T00:00:00Z")
    assert stored(api, "payments", "payments-tls").sha256 == current.sha256

    dry = runbooks(project, box, params=params)
    changes = summary(project)["plan"]["changes"]
    assert [c["operation"] + " " + c["kind"] for c in changes] == [
        "patch Secret", "patch Deployment", "patch Deployment"], dry.stdout
    proc = runbooks(project, box, "--approve", plan_id(dry), params=params)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert stored(api, "payments", "payments-tls").sha256 == files["sha256"]
    copies = [b for b in rotationtargets.backups(api, ["payments"], of="payments-tls") if b["sha256"] == current.sha256]
    assert len(copies) == 1
    assert served(box, "pay.example.com").sha256 == files["sha256"]
    STATE["newer_backup"] = copies[0]["backup"]


def test_rollback_restores_the_backup(box, api):
    target = f"payments/{STATE['newer_backup']}"
    before = stored(api, "payments", "payments-tls")
    p = rotation.CertificateRotationParams(expected_context="sandbox", ingress_url=box.endpoint.url,
                                        rollback_backup=target)
    dry_run = rb.Run(RUNBOOK, p, api)
    inv = rotation.inventory(api)
    targets = rotation.select_targets(inv, [], None, {}, p.rollback_backup, api)
    assert targets == ["payments/payments-tls"]
    plan = dry_run.plan(rotation.rotation_changes, **rotation.plan_arguments(p, targets))
    assert [rotationtargets.phase_of(c) for c in plan.changes] == ["backup", "replace", "restart", "restart"]
    # the backup and the restore name the values they copy by digest: no key in the plan, not even its body
    bodies = json.dumps([c.body for c in plan.changes])
    assert "redacted sha256" in bodies and "PRIVATE KEY" not in bodies and encoded_key(bodies) is None
    approved = p.model_copy(update={"dry_run": False, "approve_plan": plan.id})
    run = rb.Run(RUNBOOK, approved, api)
    applied = run.apply(run.plan(rotation.rotation_changes, **rotation.plan_arguments(approved, targets)))
    assert len(applied) == 4
    restored = stored(api, "payments", "payments-tls")
    backup = next(b for b in rotationtargets.backups(api, ["payments"]) if b["backup"] == STATE["newer_backup"])
    assert restored.sha256 == backup["sha256"] != before.sha256
    assert restored.key_matches is True  # the backup's key came back with its certificate
    findings = rotation.verify_rotation(api, applied, plan, inv, ingress_endpoint=box.endpoint.address, timeout=30)
    assert {f.id: f.severity for f in findings}["rotation-verified/payments/payments-tls"] == "ok"


def test_a_stuck_renewal_is_reported_not_waited_for(api):
    result = rotationtargets.wait_for_renewal(api, "shop", "legacy-api-tls", 0, timeout=1, poll=0.2)
    assert result["ok"] is False
    assert "no new revision within 1 s" in result["problem"] and "AccessDenied" in result["problem"]


def test_no_private_key_material_in_any_output(project, box):
    needles = {b"PRIVATE KEY"}
    for key in KEYS:
        needles.add(base64.b64encode(key)[:60])
        needles.add(key.split(b"\n")[1][:40])  # a line of the PEM body
    for s in box.store.items(box.registry.by_kind_any_version("Secret")):
        value = (s.get("data") or {}).get("tls.key")
        if value:
            needles.add(value[:60].encode())
            needles.add(base64.b64decode(value).split(b"\n")[1][:40])
    files = [p for p in (project / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "audit.jsonl" for p in files) and any(p.parent.name == "backups" for p in files)
    for path in files:
        data = path.read_bytes()
        leaked = [n for n in needles if n in data]
        assert not leaked, f"{path.relative_to(project)} holds private key material"
