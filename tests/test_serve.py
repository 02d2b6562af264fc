"""`runbooks serve` without Alertmanager: routes, authentication, limits and validation.

The server runs as a user starts it (`runbooks serve` in a subprocess) against the session's
sandbox API; what it posts lands in a local webhook receiver.
"""

from __future__ import annotations

import base64

import pytest
import requests
import yaml

from runbooks import routes
from runbooks.errors import InvalidInput
from runbooks.serve import Auth, check_host

from serve_helpers import Receiver, Serve, alert, payload

ROUTES = {"routes": [
    {"name": "crash", "matchers": ['alertname="KubePodCrashLooping"'], "runbook": "incident-investigation",
     "parameters": {"namespace": {"label": "namespace"}, "service": {"workload": ["deployment", "pod"]},
                    "alert_name": {"label": "alertname"}}},
]}


# ---- routes and authentication, on data ------------------------------------------------


def test_default_routes_map_the_common_alerts():
    rs = routes.load_routes()
    crash = {"alertname": "KubePodCrashLooping", "namespace": "shop", "pod": "checkout-5d8f-x2k",
             "service": "kube-prometheus-stack-kube-state-metrics"}
    route = routes.route_for(rs, crash)
    assert route.runbook == "incident-investigation"
    assert route.parameters_for(crash, lambda label, ns, name: "checkout") == {
        "namespace": "shop", "service": "checkout", "alert_name": "KubePodCrashLooping"}
    nginx = {"alertname": "NginxIngressHigh5xxRatio", "namespace": "shop", "service": "checkout",
             "ingress": "shop"}
    assert routes.route_for(rs, nginx).parameters_for(nginx)["service"] == "checkout"
    cert = {"alertname": "CertManagerCertExpirySoon", "namespace": "cert-manager",
            "exported_namespace": "shop", "name": "cart-tls"}
    route = routes.route_for(rs, cert)
    assert route.runbook == "certificate-rotation"
    assert route.parameters_for(cert) == {"certificates": ["shop/cart-tls"]}
    assert routes.route_for(rs, {"alertname": "Watchdog"}) is None


@pytest.mark.parametrize("text,labels,hit", [
    ('alertname=~"A|B"', {"alertname": "B"}, True),
    ('alertname=~"A|B"', {"alertname": "AB"}, False),  # anchored like Alertmanager
    ('severity!="info"', {}, True),  # an absent label is ""
    ('severity!~"info|none"', {"severity": "critical"}, True),
    ("team=shop", {"team": "shop"}, True),
])
def test_matchers_follow_alertmanager(text, labels, hit):
    assert routes.Matcher.parse(text).matches(labels) is hit


@pytest.mark.parametrize("params,message", [
    ({"dry_run": False}, "'dry_run' is not allowed"),
    ({"approve_plan": "abc"}, "'approve_plan' is not allowed"),
    ({"api_token": {"label": "x"}}, "'api_token' is not allowed"),
    ({"service": {"workload": ["ingress"]}}, "not workload labels"),
    ({"service": {"label": "a", "workload": ["pod"]}}, "must be a value"),
])
def test_routes_refuse_what_could_apply_or_leak(params, message):
    data = {"routes": [{"matchers": ['alertname="X"'], "runbook": "incident-investigation",
                        "parameters": params}]}
    with pytest.raises(InvalidInput, match=message):
        routes.parse_routes(data)


def test_a_missing_label_leaves_the_parameter_unresolved():
    route = routes.parse_routes(ROUTES)[0]
    with pytest.raises(routes.Unresolved, match="deployment, pod"):
        route.parameters_for({"alertname": "KubePodCrashLooping", "namespace": "shop"})


def test_auth_compares_bearer_and_basic():
    token = Auth.from_env({"RUNBOOKS_SERVE_TOKEN": "s" * 20})
    assert token.allows("Bearer " + "s" * 20) and not token.allows("Bearer " + "s" * 19)
    assert not token.allows(None) and not token.allows("Basic " + "s" * 20)
    basic = Auth.from_env({"RUNBOOKS_SERVE_USERNAME": "am", "RUNBOOKS_SERVE_PASSWORD": "pw-long-enough"})
    good = base64.b64encode(b"am:pw-long-enough").decode()
    assert basic.allows(f"Basic {good}") and not basic.allows("Basic " + base64.b64encode(b"am:x").decode())
    with pytest.raises(InvalidInput, match="RUNBOOKS_SERVE_TOKEN"):
        Auth.from_env({})
    with pytest.raises(InvalidInput, match="too short"):
        Auth.from_env({"RUNBOOKS_SERVE_TOKEN": "short"})


def test_only_loopback_without_expose():
    check_host("127.0.0.1", False)
    check_host("::1", False)
    with pytest.raises(InvalidInput, match="--expose"):
        check_host("0.0.0.0", False)
    check_host("0.0.0.0", True)


# ---- the server ----------------------------------------------------------------------------


@pytest.fixture
def served(sandbox_env, tmp_path):
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(ROUTES))
    receiver = Receiver()
    server = Serve(sandbox_env, routes_file, receiver, "--max-body", "4096")
    yield server, receiver, sandbox_env
    server.stop()
    receiver.stop()


def nothing_ran(root) -> bool:
    return not any((root / "outputs").glob("*/*/*/summary.json"))


@pytest.mark.timeout(120)
def test_bad_requests_are_refused_and_run_nothing(served):
    server, receiver, root = served
    good = payload(alert("KubePodCrashLooping", {"namespace": "shop", "deployment": "checkout"}))
    assert server.post(good, auth=False).status_code == 401
    assert server.post(good, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert server.post(good, headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}
                       ).status_code == 401
    big = payload(alert("KubePodCrashLooping", {"namespace": "shop", "deployment": "checkout",
                                                "filler": "x" * 5000}))
    assert server.post(big).status_code == 413
    assert server.post(data=b"{not json").status_code == 400
    wrong = server.post({**good, "version": "3"})
    assert wrong.status_code == 400 and "version" in wrong.json()["error"]
    no_labels = payload({**alert("X"), "labels": {"alertname": 7}})
    assert server.post(no_labels).status_code == 400
    assert server.post(payload({k: v for k, v in alert("X").items() if k != "fingerprint"})).status_code == 400
    assert requests.get(f"{server.url}/jobs", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/healthz", timeout=10).json()["ok"] is True
    assert server.jobs()["jobs"] == []
    metrics = server.metrics()
    assert 'runbooks_serve_requests_total{code="401",path="/alertmanager"} 3.0' in metrics
    assert 'runbooks_serve_requests_total{code="413",path="/alertmanager"} 1.0' in metrics
    assert 'runbooks_serve_requests_total{code="400",path="/alertmanager"} 4.0' in metrics
    assert "runbooks_serve_queue_depth 0.0" in metrics
    assert nothing_ran(root) and receiver.messages == []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("labels,bad", [
    ({"namespace": "shop", "deployment": 'checkout"} or vector(1) #'}, "checkout"),
    ({"namespace": "shop\nkube-system", "deployment": "checkout"}, "shop\\nkube-system"),
    ({"namespace": "shop", "deployment": "checkout", "alertname": 'KubePodCrashLooping'}, None),
])
def test_malicious_label_values_are_refused_by_the_runbooks_validation(served, labels, bad):
    server, receiver, root = served
    if bad is None:  # a regex/PromQL-shaped alert name does not even match the route
        labels = {**labels, "alertname": 'KubePodCrashLooping|.*'}
    answer = server.post(payload(alert("KubePodCrashLooping", labels)))
    assert answer.status_code == 200, answer.text
    if bad is None:
        assert answer.json()["unrouted"] == 1 and server.jobs()["jobs"] == []
        return
    [job_id] = answer.json()["queued"]
    done = server.wait_jobs(lambda a: any(j["id"] == job_id and j["state"] == "done" for j in a["jobs"]), 120)
    job = next(j for j in done["jobs"] if j["id"] == job_id)
    assert job["exit_code"] == 2 and job["result"] == "rejected" and job["run_dir"] is None
    assert bad in job["message"]
    [refusal] = receiver.wait_for(lambda m: m["event"] == "refused", 30)
    assert refusal["exit_code"] == 2 and "nothing ran" in refusal["text"] and bad in refusal["text"]
    assert nothing_ran(root)


@pytest.mark.timeout(120)
def test_a_pod_that_is_gone_is_refused_without_a_run(served):
    server, receiver, root = served
    answer = server.post(payload(alert("KubePodCrashLooping", {"namespace": "shop", "pod": "gone-abc12-xyz34"})))
    assert answer.status_code == 200 and len(answer.json()["refused"]) == 1
    [message] = receiver.wait_for(lambda m: m["event"] == "refused", 30)
    assert "shop/gone-abc12-xyz34" in message["text"]
    assert nothing_ran(root)


def test_serve_refuses_to_start_without_a_token_or_on_a_public_address(sandbox_env, tmp_path):
    import subprocess
    import sys

    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(ROUTES))
    base = [sys.executable, "-m", "runbooks.cli", "--project-dir", str(sandbox_env), "serve", "--env",
            "sandbox", "--port", "0", "--routes", str(routes_file), "--no-notify"]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RUNBOOKS_SERVE_")}
    proc = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "RUNBOOKS_SERVE_TOKEN" in proc.stderr
    env["RUNBOOKS_SERVE_TOKEN"] = "t" * 32
    proc = subprocess.run(base + ["--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--expose" in proc.stderr
    bad_routes = tmp_path / "bad.yaml"
    bad_routes.write_text(yaml.safe_dump({"routes": [{"matchers": ['alertname="X"'], "runbook": "nope"}]}))
    proc = subprocess.run(base[:-3] + ["--routes", str(bad_routes), "--no-notify"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "'nope'" in proc.stderr


@pytest.mark.timeout(120)
def test_workloads_are_found_through_the_api(cluster, namespace):
    from kubernetes import client

    from runbooks.serve import workload_resolver

    from helpers import wait_for

    labels = {"app": "web"}
    cluster.apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web-deploy"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.27")])))))
    cluster.core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="front"),
        spec=client.V1ServiceSpec(selector=labels, ports=[client.V1ServicePort(port=80)])))
    resolve = workload_resolver(cluster)
    assert resolve("service", namespace, "front") == "web-deploy"
    assert resolve("service", namespace, "no-such-service") == "no-such-service"
    pods = wait_for(lambda: cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items, 60,
                    what="the Deployment's pod")
    assert resolve("pod", namespace, pods[0].metadata.name) == "web-deploy"
    with pytest.raises(routes.Unresolved, match="no longer exists"):
        resolve("pod", namespace, "gone-1234")
    assert resolve("pod", namespace, 'x"} or vector(1)') == 'x"} or vector(1)'  # not looked up


def processes_in(root) -> list[int]:
    """Pids of processes working in `root` (a run and its kernel both do)."""
    import os
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "cwd") == str(root):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.notebook
@pytest.mark.timeout(180)
@pytest.mark.parametrize("when", ["in-cell", "starting"])
def test_stopping_the_server_stops_its_runs_and_their_kernels(sandbox_env, tmp_path, when):
    """Stopped while the run's long cell runs, or as soon as the run has started (before its kernel)."""
    from pathlib import Path

    from helpers import wait_for

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    src = Path(__file__).parent / "fixtures" / "notebooks" / "sleep.ipynb"
    (notebooks / "sleep.ipynb").write_bytes(src.read_bytes())
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump({"routes": [
        {"matchers": ['alertname="Sleepy"'], "runbook": "sleep", "parameters": {"seconds": 300}}]}))
    server = Serve(sandbox_env, routes_file, None, notebooks_dir=notebooks)
    try:
        assert server.post(payload(alert("Sleepy"))).json()["queued"]
        if when == "starting":
            server.wait_jobs(lambda answer: any(j["pid"] for j in answer["jobs"]), 60)
        else:
            wait_for(lambda: list((sandbox_env / "outputs" / "sandbox" / "sleep").glob("*/sleep.ipynb")), 90,
                     what="the run's notebook (its kernel is running)")
            wait_for(lambda: len(processes_in(sandbox_env)) >= 2, 60, what="the run and its kernel")
    finally:
        server.stop()
    wait_for(lambda: processes_in(sandbox_env) == [], 60, what="the run and its kernel to end")


def test_runs_are_dry_runs_whatever_the_env_parameters_say(sandbox_env):
    from runbooks.execute import Project
    from runbooks.serve import ServeConfig

    (sandbox_env / "parameters" / "sandbox" / "incident-investigation.yaml").write_text("dry_run: false\n")
    config = ServeConfig(Project.discover(sandbox_env), "sandbox", routes.parse_routes(ROUTES),
                         Auth(token="t" * 32), notify=False)
    config.check()
    assert config.forced == {"incident-investigation": {"dry_run": True}}


def test_notify_needs_the_webhook_url(sandbox_env):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RUNBOOKS_WEBHOOK_URL"}
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(sandbox_env), "run",
                           "cluster-health", "--env", "sandbox", "--notify", "webhook"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "RUNBOOKS_WEBHOOK_URL" in proc.stderr
    assert not any((sandbox_env / "outputs").glob("*/*/*/summary.json"))


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_route_without_parameters_runs_once_and_posts_its_summary(sandbox_env, tmp_path):
    from pathlib import Path

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    src = Path(__file__).parent / "fixtures" / "notebooks" / "trivial.ipynb"
    (notebooks / "trivial.ipynb").write_bytes(src.read_bytes())
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump({"routes": [{"matchers": ['alertname="Hello"'], "runbook": "trivial"}]}))
    receiver = Receiver()
    server = Serve(sandbox_env, routes_file, receiver, notebooks_dir=notebooks)
    try:
        first = server.post(payload(alert("Hello", fingerprint="aaaaaaaaaaaaaaaa"),
                                    alert("Hello", fingerprint="bbbbbbbbbbbbbbbb")))
        assert first.status_code == 200 and len(first.json()["queued"]) == 1
        assert len(first.json()["deduplicated"]) == 1  # same runbook, same parameters
        [message] = receiver.wait_for(lambda m: m["event"] == "run", 120)
        assert message["runbook"] == "trivial" and message["run_status"] == "ok" and message["exit_code"] == 0
        assert message["thread"] == first.json()["thread"]
        again = server.post(payload(alert("Hello", fingerprint="aaaaaaaaaaaaaaaa")))
        assert again.json()["queued"] == [] and again.json()["deduplicated"] == first.json()["queued"]
        done = server.wait_jobs(lambda a: a["jobs"][0]["state"] == "done", 60)
        assert done["jobs"][0]["parameters"] == {} and done["jobs"][0]["result"] == "ok"
        assert Path(done["jobs"][0]["run_dir"], "report.html").is_file()
    finally:
        server.stop()
        receiver.stop()
