"""exec, attach and port-forward through the official Python client, and the wire protocol itself."""

from __future__ import annotations

import json
import socket
import ssl
import time
from urllib.parse import urlsplit

import pytest
import websocket
from kubernetes import client, config
from kubernetes.stream import portforward, stream

from helpers import wait_for

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0.0",
                                "ports": [{"containerPort": 8080}], "env": [{"name": "GREETING", "value": "hi"}]}]}}


@pytest.fixture(scope="module")
def core(sandbox):
    return client.CoreV1Api(config.new_client_from_config(str(sandbox.kubeconfig), "sandbox"))


@pytest.fixture
def pod(core, namespace):
    core.create_namespaced_pod(namespace, POD)

    def running():
        status = core.read_namespaced_pod("web", namespace).status
        return any(s.state and s.state.running for s in status.container_statuses or [])

    wait_for(running, what="pod web running")
    return namespace, "web"


def test_exec_stdout_stderr_and_exit_code(core, pod):
    ns, name = pod
    resp = stream(core.connect_get_namespaced_pod_exec, name, ns,
                  command=["sh", "-c", "echo out; nosuchtool; exit 4"],
                  stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=20)
    assert resp.read_stdout() == "out\n"
    assert 'exec: "nosuchtool": executable file not found in $PATH' in resp.read_stderr()
    assert resp.returncode == 4


def test_exec_preloaded_output(core, pod):
    ns, name = pod
    out = stream(core.connect_get_namespaced_pod_exec, name, ns, command=["printenv", "GREETING"],
                 stdin=False, stdout=True, stderr=True, tty=False)
    assert out == "hi\n"


def test_exec_with_stdin_closed_by_the_v5_signal(core, pod):
    ns, name = pod
    resp = stream(core.connect_get_namespaced_pod_exec, name, ns, command=["cat"],
                  stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
    assert resp.subprotocol == "v5.channel.k8s.io"
    resp.write_stdin("first\nsecond\n")
    resp.close_channel(0)  # stdin EOF: cat ends
    resp.run_forever(timeout=20)
    assert resp.read_stdout() == "first\nsecond\n"
    assert resp.returncode == 0


def test_portforward_reaches_the_pod_responder(core, pod):
    ns, name = pod
    pf = portforward(core.connect_get_namespaced_pod_portforward, name, ns, ports="8080")
    sock = pf.socket(8080)
    sock.settimeout(20)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    answer = json.loads(body)
    assert (answer["pod"], answer["namespace"], answer["port"], answer["path"]) == (name, ns, 8080, "/health")
    assert pf.error(8080) is None
    sock.close()


def test_portforward_to_a_port_nothing_listens_on(core, pod):
    ns, name = pod
    pf = portforward(core.connect_get_namespaced_pod_portforward, name, ns, ports="9999")
    wait_for(lambda: pf.error(9999), what="the error channel's message")
    assert "failed to connect to localhost:9999" in pf.error(9999)
    assert "connection refused" in pf.error(9999)


def test_attach_streams_the_container_output(core, sandbox):
    name = core.list_namespaced_pod("shop", label_selector="app=frontend").items[0].metadata.name
    resp = stream(core.connect_get_namespaced_pod_attach, name, "shop", stdin=False, stdout=True, stderr=True,
                  tty=False, _preload_content=False)
    deadline = time.monotonic() + 30
    line = ""
    while not line and time.monotonic() < deadline:
        line = resp.readline_stdout(timeout=1) or ""
    resp.close()
    assert json.loads(line)["hostname"] == name


# ---- the wire, without a client library ------------------------------------------------------

def _ws(sandbox, path: str, protocols: list[str]) -> websocket.WebSocket:
    url = urlsplit(sandbox.url)
    ws = websocket.WebSocket(sslopt={"ca_certs": str(sandbox.ca_file), "cert_reqs": ssl.CERT_REQUIRED})
    ws.connect(f"wss://{url.netloc}{path}", header=[f"Authorization: Bearer {sandbox.token}"],
               subprotocols=protocols)
    return ws


def test_exec_wire_protocol(sandbox, pod):
    ns, name = pod
    ws = _ws(sandbox, f"/api/v1/namespaces/{ns}/pods/{name}/exec?command=sh&command=-c&command=echo%20hi%3B%20exit%203"
             "&stdout=true&stderr=true", ["v4.channel.k8s.io", "v5.channel.k8s.io"])
    assert ws.subprotocol == "v4.channel.k8s.io"  # the client's first choice that the server speaks
    frames = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        frames.append(data)
    assert frames[0] == b"\x01"  # connection established: an empty message on stdout
    assert frames[1] == b"\x01hi\n"
    assert frames[2][:1] == b"\x03"
    status = json.loads(frames[2][1:])
    assert status == {"metadata": {}, "status": "Failure",
                      "message": "command terminated with non-zero exit code: error executing command "
                                 "[sh -c echo hi; exit 3], exit code 3",
                      "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}


def _raw(sandbox, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    url = urlsplit(sandbox.url)
    ctx = ssl.create_default_context(cafile=str(sandbox.ca_file))
    with socket.create_connection((url.hostname, url.port), timeout=20) as raw, \
            ctx.wrap_socket(raw, server_hostname=url.hostname) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": url.netloc, "Authorization": f"Bearer {sandbox.token}",
                                                     "Content-Length": "0", **headers}.items())
        s.sendall(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
                [x for x in data.split(b"\r\n") if x.lower().startswith(b"content-length:")][0].split(b":")[1]):
            data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_exec_without_an_upgrade_and_over_spdy_is_refused(sandbox, pod):
    ns, name = pod
    path = f"/api/v1/namespaces/{ns}/pods/{name}/exec?command=env&stdout=true"
    code, status = _raw(sandbox, "POST", path, {})
    assert (code, status["reason"], status["message"]) == (400, "BadRequest", "Upgrade request required")
    code, status = _raw(sandbox, "POST", path, {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    assert code == 400 and "SPDY" in status["message"]


def test_discovery_lists_the_connect_subresources(core):
    resources = {r.name: r for r in core.get_api_resources().resources}
    assert resources["pods/exec"].verbs == ["create", "get"] and resources["pods/exec"].kind == "PodExecOptions"
    assert resources["pods/portforward"].kind == "PodPortForwardOptions"
    assert resources["pods/attach"].kind == "PodAttachOptions"
    assert resources["pods/ephemeralcontainers"].verbs == ["get", "patch", "update"]


def test_websocket_control_frames_fragments_and_the_v5_close_signal(sandbox, pod):
    ns, name = pod
    ws = _ws(sandbox, f"/api/v1/namespaces/{ns}/pods/{name}/exec?command=cat&stdin=true&stdout=true&stderr=true",
             ["v5.channel.k8s.io"])
    assert ws.subprotocol == "v5.channel.k8s.io"
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x01")
    ws.ping(b"k8s")
    assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"k8s")
    ws.send_frame(websocket.ABNF.create_frame(b"\x00frag", websocket.ABNF.OPCODE_BINARY, fin=0))
    ws.send_frame(websocket.ABNF.create_frame(b"mented\n", websocket.ABNF.OPCODE_CONT, fin=1))
    ws.send_binary(bytes([255, 0]))  # v5: close stdin
    frames = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        frames.append(data)
    assert b"".join(f[1:] for f in frames if f[:1] == b"\x01") == b"fragmented\n"
    assert json.loads(frames[-1][1:]) == {"metadata": {}, "status": "Success"}
