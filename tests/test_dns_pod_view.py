"""dns-audit's in-cluster view: DNS as a pod resolves it, through a short-lived probe pod or locally.

End to end through `runbooks run dns-audit` against a sandbox running the real cluster DNS server
(BIND, fed from the Services): the probe pod is created, exec'd into over the pods/exec WebSocket
(`cat /etc/resolv.conf`, `dig +search`), and gone afterwards; a ServiceAccount without
`create pods/exec` gets a warning naming it, and its probe pod is deleted all the same; the local
mode (what the runbook does inside a pod) reads a resolv.conf and asks the nameserver directly.

Skipped when the DNS servers are not installed, unless RUNBOOKS_REQUIRE_DNS=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbooks import discovery, kube, onboarding, podview
from runbooks_sandbox import dnsservers, stack
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "dns-audit"
MISSING = dnsservers.missing_binaries()
REQUIRED = os.environ.get("RUNBOOKS_REQUIRE_DNS") == "1"
PROBES = ",".join(f"{k}={v}" for k, v in podview.LABELS.items())

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def _servers_installed():
    if MISSING and REQUIRED:
        pytest.fail("RUNBOOKS_REQUIRE_DNS=1 but: " + "; ".join(MISSING))
    if MISSING:
        pytest.skip("; ".join(MISSING))


@pytest.fixture(scope="module")
def box(tmp_path_factory, _servers_installed):
    sandbox = Sandbox(tmp_path_factory.mktemp("pod-view-sandbox"), "default", tick=1.0)
    stack.attach(sandbox, stack.StackOptions(observability=False, logs=False, certificates=False))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def admin(box):
    return kube.connect(str(box.kubeconfig), "sandbox")


@pytest.fixture(scope="module")
def creds(box):
    return next(a for a in box.addons if isinstance(a, stack.DnsAddon)).credentials


@pytest.fixture
def project(box, tmp_path):
    root = tmp_path / "project"
    (root / "parameters" / "sandbox").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    env = {"description": "the in-cluster view tests' sandbox", **stack.env_settings(box)}
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


def runbooks(project: Path, creds: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNBOOKS_HOME": str(project), **creds}
    return subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run", RUNBOOK,
                           "--env", "sandbox", "--no-progress", *args], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)


def summary(project: Path) -> dict:
    run_dir = sorted((project / "outputs" / "sandbox" / RUNBOOK).iterdir())[-1]
    return json.loads((run_dir / "summary.json").read_text())


def probe_pods(cluster, namespace: str = "default") -> list[str]:
    return [p["metadata"]["name"] for p in kube.list_objects(cluster, "pods", [namespace], label_selector=PROBES)]


def probe_events(cluster) -> set[str]:
    """Probe pods that were ever scheduled in default (their Scheduled events outlive them)."""
    return {e["involvedObject"]["name"] for e in kube.list_objects(cluster, "events", ["default"])
            if e["involvedObject"]["name"].startswith("dns-audit-probe-") and e.get("reason") == "Scheduled"}


def expected_exit(findings: list[dict]) -> int:
    """The execution contract: 1 when a finding is at or above --fail-on (critical), else 0."""
    return 1 if any(f["severity"] == "critical" for f in findings) else 0


def view_ids(findings: list[dict]) -> dict[str, dict]:
    return {f["id"]: f for f in findings if f["id"].startswith("dns-pod-view")}


def test_exec_view_through_a_probe_pod_that_is_gone_afterwards(project, creds, admin):
    assert probe_pods(admin) == []
    proc = runbooks(project, creds, "-p", "in_cluster_view", "exec")
    out = summary(project)
    assert proc.returncode == expected_exit(out["findings"]), proc.stdout + proc.stderr
    source = out["data_sources"]["in-cluster-view"]
    assert source["state"] == "ok"
    assert source["detail"].startswith("exec: default/dns-audit-probe-")  # generateName
    assert "search default.svc.cluster.local svc.cluster.local cluster.local, ndots:5" in source["detail"]
    ids = view_ids(out["findings"])
    # every Service with an address answers from the pod, absolute and through the search list
    assert not [i for i in ids if i.startswith(("dns-pod-view/", "dns-pod-view-search/", "dns-pod-view-failed"))]
    # the mailer calls external names with fewer dots than ndots: each went through the 3 search domains first
    ndots = ids["dns-pod-view-ndots"]
    assert ndots["severity"] == "info" and set(ndots["evidence"]["queries"].values()) == {4}
    assert probe_pods(admin) == []  # deleted, not just ended
    assert source["detail"].split(",")[0].removeprefix("exec: default/") in probe_events(admin)  # it really ran


def test_the_view_compares_with_what_the_cluster_should_answer(admin):
    """Through the probe pod, against what CoreDNS's kubernetes plugin answers for each Service."""
    services = kube.list_objects(admin, "services", ["apps"])
    slices = kube.list_objects(admin, "endpointslices", ["apps"])
    questions, expected = discovery.pod_view_questions(services, slices, ["smtp.example.org"])
    view = podview.probe_view(admin, "default", questions)
    table, findings = discovery.pod_view_findings(view, expected, ["smtp.example.org"])
    assert probe_pods(admin) == []
    assert len(expected) >= 3 and table[table["service"] != ""]["ok"].all()
    absolute = {k: v for k, v in view.lookups.items() if k[0].endswith(".")}
    for (name, _), got in absolute.items():
        svc, want = expected[name.rstrip(".")]
        assert sorted(got.values) == sorted(want) and got.queries == 1
    # a Service the pod sees differently from what it should be: the answer of another Service
    (fqdn, (svc, _)), (_, (_, other)) = list(expected.items())[:2]
    wrong = {**expected, fqdn: (svc, other)}
    _, findings = discovery.pod_view_findings(view, wrong, [])
    sid = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
    assert [(f.id, f.severity) for f in findings] == [(f"dns-pod-view/{sid}", "critical")]
    assert f"asked {fqdn} A" in findings[0].detail and "probe pod default/dns-audit-probe-" in findings[0].detail


@pytest.fixture
def exec_forbidden(box, admin, namespace_for_sa):
    """A ServiceAccount that may read the cluster (`view`) and manage pods in `default`, but not exec."""
    ns = namespace_for_sa
    kube.request(admin, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "auditor"}})
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    subject = [{"kind": "ServiceAccount", "name": "auditor", "namespace": ns}]
    kube.request(admin, "POST", f"{rbac}/clusterrolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{ns}-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": subject})
    kube.request(admin, "POST", f"{rbac}/namespaces/default/roles", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": f"{ns}-pods"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "delete"]}]})
    kube.request(admin, "POST", f"{rbac}/namespaces/default/rolebindings", body={
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": f"{ns}-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{ns}-pods"},
        "subjects": subject})
    token = kube.request(admin, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/auditor/token",
                         body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 600}})["status"]["token"]
    yield token
    kube.request(admin, "DELETE", f"{rbac}/clusterrolebindings/{ns}-view")
    kube.request(admin, "DELETE", f"{rbac}/namespaces/default/rolebindings/{ns}-pods")
    kube.request(admin, "DELETE", f"{rbac}/namespaces/default/roles/{ns}-pods")


@pytest.fixture
def namespace_for_sa(box, admin):
    import uuid

    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.request(admin, "POST", "/api/v1/namespaces",
                 body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.request(admin, "DELETE", f"/api/v1/namespaces/{name}")


def test_forbidden_exec_is_a_warning_naming_it_and_the_probe_pod_is_deleted(project, creds, box, admin,
                                                                          exec_forbidden, tmp_path):
    kc = tmp_path / "auditor-kubeconfig"
    kc.write_text(box.kubeconfig.read_text().replace(box.token, exec_forbidden))
    env_file = project / "parameters" / "sandbox" / "env.yaml"
    env_file.write_text(yaml.safe_dump({**yaml.safe_load(env_file.read_text()), "kubeconfig": str(kc)}))
    # declared, so `runbooks env check` names it before any run
    auditor = kube.connect(str(kc), "sandbox")
    row = onboarding.check_permissions(auditor, [RUNBOOK])[0]
    assert row.state == "failed" and row.detail == (
        "missing permission: get pods/exec in default, create pods/exec in default"), row.detail
    before = probe_events(admin)
    proc = runbooks(project, creds, "-p", "in_cluster_view", "exec")
    out = summary(project)
    assert proc.returncode == expected_exit(out["findings"]), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    ids = view_ids(out["findings"])
    assert list(ids) == ["dns-pod-view-forbidden"]
    finding = ids["dns-pod-view-forbidden"]
    assert finding["severity"] == "warning"
    # Kubernetes 1.32 authorizes a WebSocket exec (a GET) as `get pods/exec`; the finding names what was refused
    assert finding["title"] == "in-cluster DNS view skipped: forbidden: get pods/exec in default"
    assert "in_cluster_view: off" in finding["detail"]
    # the API server's own words, from the refused WebSocket upgrade
    assert 'cannot get resource "pods/exec" in API group "" in the namespace "default"' in finding["detail"]
    assert "get and create pods/exec" in finding["detail"]
    assert probe_pods(admin) == []  # created, exec refused, deleted in the finally
    assert len(probe_events(admin)) == len(before) + 1  # created with the auditor's rights, before exec was refused
    # the rest of the audit went on: the Services were still asked of the cluster DNS server
    assert out["data_sources"]["cluster-dns"]["state"] == "ok"


def test_local_mode_resolves_as_this_pod_without_exec(project, creds, box, admin, tmp_path):
    """What the runbook does inside a pod: its own resolv.conf, the nameserver asked directly.

    The sandbox's cluster DNS listens on a loopback port, so the test's resolv.conf names 127.0.0.1
    and env.yaml's cluster_dns_server gives the port; the search list and ndots are the pod's.
    """
    conf = tmp_path / "resolv.conf"
    conf.write_text("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                    "nameserver 127.0.0.1\noptions ndots:5\n")
    before = probe_events(admin)
    proc = runbooks(project, creds, "-p", "in_cluster_view", "local", "-p", "resolv_conf", str(conf))
    out = summary(project)
    assert proc.returncode == expected_exit(out["findings"]), proc.stdout + proc.stderr
    assert out["data_sources"]["in-cluster-view"]["detail"].startswith("local: this pod, nameserver 127.0.0.1")
    ids = view_ids(out["findings"])
    assert set(ids) == {"dns-pod-view-ndots", "dns-pod-view-nameserver"}  # 127.0.0.1 is not kube-dns's IP
    assert set(ids["dns-pod-view-ndots"]["evidence"]["queries"].values()) == {4}  # as measured through exec
    assert probe_pods(admin) == [] and probe_events(admin) == before  # no probe pod was created


def test_mode_choice_and_off(tmp_path):
    token = tmp_path / "token"
    assert podview.choose_mode("auto", environ={}, token_file=str(token)) == "exec"
    assert podview.choose_mode("auto", environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
                               token_file=str(token)) == "exec"  # no token mounted: not in a pod
    token.write_text("t")
    assert podview.choose_mode("auto", environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"},
                               token_file=str(token)) == "local"
    assert podview.choose_mode("off") == "off"
    with pytest.raises(ValueError, match="in_cluster_view 'sometimes' is not allowed; allowed: auto, exec"):
        podview.choose_mode("sometimes")


def test_off_creates_nothing_and_a_bad_image_exits_2(project, creds, admin):
    proc = runbooks(project, creds, "-p", "probe_image", "Not An Image")
    assert proc.returncode == 2 and "probe_image 'Not An Image' is not an image reference" in proc.stderr
    proc = runbooks(project, creds, "-p", "in_cluster_view", "off")
    out = summary(project)
    assert proc.returncode == expected_exit(out["findings"])
    assert "in-cluster-view" not in out["data_sources"] and not view_ids(out["findings"])
    assert probe_pods(admin) == []


def test_parsers():
    conf = podview.parse_resolv_conf("# kubelet\nsearch a.svc.cluster.local svc.cluster.local cluster.local\n"
                                     "nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:2 timeout:1\n")
    assert conf.nameservers == ["10.96.0.10", "10.96.0.11"] and conf.ndots == 2
    assert podview.candidates("web.a", conf) == ["web.a.a.svc.cluster.local", "web.a.svc.cluster.local",
                                                 "web.a.cluster.local", "web.a"]
    assert podview.candidates("api.example.com", conf)[0] == "api.example.com"
    assert podview.candidates("web.a.svc.cluster.local.", conf) == ["web.a.svc.cluster.local"]
    # BIND 9.18's dig output for two questions, the first through the search list
    out = (";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1\n"
           ";; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1\n\n"
           ";; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n"
           ";; QUESTION SECTION:\n;web.a.svc.cluster.local.\tIN\tA\n\n"
           ";; ANSWER SECTION:\nweb.a.svc.cluster.local. 30 IN\tA\t10.96.5.5\n\n"
           ";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 2\n"
           ";; QUESTION SECTION:\n;nope.\t\t\tIN\tA\n\n;; AUTHORITY SECTION:\n. 30 IN SOA a. b. 1 2 3 4 5\n")
    assert podview.parse_dig(out) == [("web.a.svc.cluster.local", "A", "NOERROR", ["10.96.5.5"]),
                                      ("nope", "A", "NXDOMAIN", [])]


@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_pod_tools_ask_the_real_dns_servers(box, admin, tmp_path):
    """`kubectl exec` of nslookup/dig/cat: answers only the real servers hold (PTR, SRV, another zone)."""
    env = dict(os.environ, KUBECONFIG=str(box.kubeconfig), KUBECACHEDIR=str(tmp_path), HOME=str(tmp_path))

    def kx(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "exec", "-n", "apps", "deploy/storefront", "--", *argv], env=env,
                              capture_output=True, text=True, timeout=60)

    svc = kube.get_object(admin, "services", "apps", "inventory")
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]
    assert kx("cat", "/etc/resolv.conf").stdout == (
        "search apps.svc.cluster.local svc.cluster.local cluster.local\nnameserver "
        f"{kube.get_object(admin, 'services', 'kube-system', 'kube-dns')['spec']['clusterIP']}\noptions ndots:5\n")
    out = kx("nslookup", "inventory")
    assert out.returncode == 0 and f"Name:\tinventory.apps.svc.cluster.local\nAddress: {ip}\n" in out.stdout
    assert kx("dig", "+short", "-x", ip).stdout == "inventory.apps.svc.cluster.local.\n"  # PTR, from BIND
    if port.get("name"):
        srv = kx("dig", "+short", f"_{port['name']}._{port.get('protocol', 'TCP').lower()}.inventory.apps.svc."
                 "cluster.local", "SRV")
        assert srv.stdout == f"0 100 {port['port']} inventory.apps.svc.cluster.local.\n"
    # another zone, from its authoritative server: the stale record planted in the RFC 2136 provider
    assert kx("dig", "+short", "api.apps.example.com").stdout == "203.0.113.7\n"
    out = kx("dig", "+search", "+noall", "+comments", "+question", "+answer", "inventory.apps", "nope.apps.")
    assert [b[:3] for b in podview.parse_dig(out.stdout)] == [
        ("inventory.apps.svc.cluster.local", "A", "NOERROR"), ("nope.apps", "A", "NXDOMAIN")]
    assert kx("dig", "@10.0.0.99", "inventory.apps.svc.cluster.local").returncode == 9  # no server there


def test_a_probe_pod_a_killed_run_left_is_deleted_by_the_next_view(admin):
    """A probe pod past its activeDeadlineSeconds is Failed (the kubelet ends it); the next view deletes it."""
    left = kube.request(admin, "POST", "/api/v1/namespaces/default/pods",
                        body=podview.probe_pod(podview.DEFAULT_IMAGE, deadline_seconds=1))["metadata"]["name"]

    def ended() -> bool:
        pod = kube.get_object(admin, "pods", "default", left)
        return pod["status"].get("phase") == "Failed" and pod["status"].get("reason") == "DeadlineExceeded"

    wait_for(ended, timeout=30, what=f"{left} Failed past its deadline")
    view = podview.probe_view(admin, "default", [("kubernetes.default", "A")])
    assert view.lookups[("kubernetes.default", "A")].qname == "kubernetes.default.svc.cluster.local"
    assert probe_pods(admin) == []


@pytest.fixture
def no_room(admin):
    """Every node cordoned: a new pod stays Pending (Unschedulable) until it is deleted."""
    nodes = [n["metadata"]["name"] for n in kube.list_objects(admin, "nodes")]

    def cordon(flag: bool) -> None:
        for node in nodes:
            kube.request(admin, "PATCH", f"/api/v1/nodes/{node}", body={"spec": {"unschedulable": flag}},
                         content_type="application/merge-patch+json")

    cordon(True)
    yield
    cordon(False)


def test_a_probe_pod_that_cannot_run_is_a_warning_and_is_deleted(project, creds, admin, no_room):
    proc = runbooks(project, creds, "-p", "in_cluster_view", "exec", "-p", "probe_timeout_seconds", "2")
    out = summary(project)
    assert proc.returncode == expected_exit(out["findings"]), proc.stdout + proc.stderr
    failed = view_ids(out["findings"])["dns-pod-view-failed"]
    assert failed["severity"] == "warning"
    assert re.search(r"exec: probe pod default/dns-audit-probe-\w+ was not running after 2 s \(Pending: "
                     r"Unschedulable 0/\d+ nodes are available", failed["detail"]), failed["detail"]
    assert probe_pods(admin) == []


def test_an_interrupted_run_deletes_its_probe_pod(project, creds, admin, no_room):
    env = {**os.environ, "RUNBOOKS_HOME": str(project), **creds}
    proc = subprocess.Popen([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run", RUNBOOK,
                             "--env", "sandbox", "--no-progress", "-p", "in_cluster_view", "exec"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: probe_pods(admin) or proc.poll() is not None, timeout=120, what="the probe pod")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)  # while the run waits for the pod to be scheduled
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, out + err
    assert summary(project)["error"]["kind"] == "interrupted"
    assert probe_pods(admin) == []
