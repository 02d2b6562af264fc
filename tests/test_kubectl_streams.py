"""The real kubectl's streaming commands against the sandbox: exec, port-forward, logs -f, debug."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import urllib.request

import pytest
from kubernetes import client, config

from helpers import wait_for

pytestmark = [pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
  annotations: {annotations}
spec:
  containers:
  - name: app
    image: registry.example.com/web:1.0.0
    ports: [{{containerPort: 8080}}]
    env: [{{name: GREETING, value: hello}}]
"""


@pytest.fixture(scope="module")
def env(sandbox, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kube-cache")
    return dict(os.environ, KUBECONFIG=str(sandbox.kubeconfig), KUBECACHEDIR=str(cache), HOME=str(cache))


@pytest.fixture(scope="module")
def kubectl(env):
    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], env=env, input=input, capture_output=True, text=True,
                              timeout=120)

    return run


@pytest.fixture(scope="module")
def core(sandbox):
    return client.CoreV1Api(config.new_client_from_config(str(sandbox.kubeconfig), "sandbox"))


def _running(core, namespace: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, namespace)
    return any(s.state and s.state.running for s in pod.status.container_statuses or [])


@pytest.fixture
def pod(kubectl, core, namespace):
    """A running pod of our own in a throwaway namespace."""
    proc = kubectl("apply", "-n", namespace, "-f", "-", input=POD.format(name="web", annotations="{}"))
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: _running(core, namespace, "web"), what="pod web running")
    return namespace, "web"


def test_exec_env_and_exit_codes(kubectl, pod):
    ns, name = pod
    proc = kubectl("exec", "-n", ns, name, "--", "env")
    assert proc.returncode == 0, proc.stderr
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert env["GREETING"] == "hello" and env["HOSTNAME"] == name
    assert env["KUBERNETES_SERVICE_HOST"] and env["KUBERNETES_SERVICE_PORT"] == "443"

    proc = kubectl("exec", "-n", ns, name, "--", "sh", "-c", "exit 3")
    assert proc.returncode == 3
    assert "command terminated with exit code 3" in proc.stderr

    proc = kubectl("exec", "-n", ns, name, "--", "false")
    assert proc.returncode == 1

    proc = kubectl("exec", "-n", ns, name, "--", "foo")
    assert proc.returncode == 127
    assert ('OCI runtime exec failed: exec failed: unable to start container process: exec: "foo": '
            "executable file not found in $PATH: unknown") in proc.stderr


def test_exec_with_stdin(kubectl, pod):
    ns, name = pod
    proc = kubectl("exec", "-i", "-n", ns, name, "--", "cat", input="line one\nline two\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "line one\nline two\n"
    proc = kubectl("exec", "-i", "-n", ns, name, "--", "sh", input="echo $GREETING world\nexit 5\n")
    assert proc.stdout == "hello world\n" and proc.returncode == 5


def test_exec_resolver_and_service_routing(kubectl, pod, core):
    ns, name = pod
    core.create_namespaced_service(ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
    resolv = kubectl("exec", "-n", ns, name, "--", "cat", "/etc/resolv.conf").stdout
    assert f"search {ns}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    ip = core.read_namespaced_service("web", ns).spec.cluster_ip
    out = kubectl("exec", "-n", ns, name, "--", "nslookup", "web").stdout
    assert f"Name:\tweb.{ns}.svc.cluster.local\nAddress: {ip}" in out
    wait_for(lambda: kubectl("exec", "-n", ns, name, "--", "wget", "-qO-", "http://web/ping").returncode == 0,
             what="the Service's endpoint to be ready")
    answer = json.loads(kubectl("exec", "-n", ns, name, "--", "wget", "-qO-", "http://web/ping").stdout)
    assert answer["pod"] == name and answer["port"] == 8080 and answer["path"] == "/ping"


def test_exec_into_a_container_that_is_not_running(kubectl, core, namespace):
    manifest = POD.format(name="broken", annotations="{sandbox.kube-runbooks.io/fail: ImagePullBackOff}")
    assert kubectl("apply", "-n", namespace, "-f", "-", input=manifest).returncode == 0
    wait_for(lambda: (core.read_namespaced_pod("broken", namespace).status.container_statuses or [None])[0],
             what="the kubelet to report the container")
    proc = kubectl("exec", "-n", namespace, "broken", "--", "env")
    assert proc.returncode != 0
    assert 'unable to upgrade connection: container not found ("app")' in proc.stderr


def test_port_forward_and_http(env, pod):
    ns, name = pod
    proc = subprocess.Popen(["kubectl", "port-forward", "-n", ns, f"pod/{name}", ":8080"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _lines(proc).get(timeout=60)
        port = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert port, line
        for path in ("/first", "/second"):  # two connections over the one tunnel
            with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}{path}", timeout=20) as resp:
                body = json.loads(resp.read())
            assert resp.status == 200 and body["pod"] == name and body["path"] == path and body["port"] == 8080
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The process's stdout lines, read in a thread, so a test waits with a deadline instead of hanging."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return lines


def test_logs_follow_receives_new_lines(env, sandbox, kubectl):
    pods = json.loads(kubectl("get", "pods", "-n", "shop", "-l", "app=frontend", "-o", "json").stdout)["items"]
    name = pods[0]["metadata"]["name"]
    proc = subprocess.Popen(["kubectl", "logs", "-f", "-n", "shop", name, "--tail=1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(proc)
        first = lines.get(timeout=30)
        second = lines.get(timeout=30)  # only a follower gets a line written after the request
        assert first and second and proc.poll() is None
        assert json.loads(second)["hostname"] == name
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_debug_with_an_ephemeral_container(kubectl, core, pod):
    ns, name = pod
    proc = kubectl("debug", "-n", ns, name, "--image=busybox:1.36", "-c", "debugger", "-i", "--profile=general",
                   "--", "sh", input="echo from-debugger\ncat /etc/hostname\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["from-debugger", name]
    live = core.read_namespaced_pod(name, ns)
    assert [c.name for c in live.spec.ephemeral_containers] == ["debugger"]
    assert live.status.ephemeral_container_statuses[0].state.running
    proc = kubectl("exec", "-n", ns, name, "-c", "debugger", "--", "hostname")
    assert proc.returncode == 0 and proc.stdout == f"{name}\n"
    logs = kubectl("logs", "-n", ns, name, "-c", "debugger")
    assert logs.returncode == 0 and logs.stdout.splitlines()[:2] == ["from-debugger", name]
