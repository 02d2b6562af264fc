"""What a sandbox pod can run: the kubelet's tool table, computed from the sandbox's state."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from runbooks_sandbox import kubelet as kubelet_mod
from runbooks_sandbox import tools
from runbooks_sandbox.admission import prepare_create
from runbooks_sandbox.server import Request
from runbooks_sandbox.tools import IO, Stdin

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def box(sandbox, namespace):
    """(sandbox, namespace, create(kind, obj)) for objects the pod under test will see."""

    def create(kind: str, obj: dict) -> dict:  # through admission (defaults such as the ClusterIP)
        rt = sandbox.registry.by_kind_any_version(kind)
        obj = {"apiVersion": rt.api_version, "kind": kind, **obj}
        req = Request("POST", rt.path(namespace), {"User-Agent": "test"}, b"")
        return sandbox.store.create(rt, prepare_create(sandbox.api, rt, obj, namespace, req))

    return sandbox, namespace, create


def make_pod(namespace: str, *, started: str = "2030-01-01T00:00:00Z", spec: dict | None = None,
             ip: str = "10.244.9.9", running: bool = True) -> dict:
    """A pod as the kubelet sees it (not stored: the tools read everything else from the store)."""
    container = {"name": "app", "image": "registry.example.com/app:1", "ports": [{"containerPort": 8080}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": namespace, "uid": "u-1", "creationTimestamp": started},
            "spec": {"containers": [container], **(spec or {})},
            "status": {"phase": "Running", "podIP": ip, "startTime": started, "containerStatuses": [
                {"name": "app", "state": {"running": {"startedAt": started}} if running else
                 {"waiting": {"reason": "CrashLoopBackOff"}}}]}}


def run(sandbox, pod: dict, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    out, err = [], []
    pipe = Stdin(open_=stdin is not None)
    if stdin is not None:
        pipe.feed(stdin)
        pipe.close()
    code = sandbox.api.kubelet.run(pod, "app", list(argv), IO(pipe, out.append, err.append))
    return code, b"".join(out).decode(), b"".join(err).decode()


def env_of(sandbox, pod: dict) -> dict[str, str]:
    code, out, _ = run(sandbox, pod, "env")
    assert code == 0
    return dict(line.split("=", 1) for line in out.splitlines())


def service(name: str, port: int = 80, **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": port}], **spec}}


def test_env_has_container_env_and_service_links(box):
    sandbox, ns, create = box
    svc = create("Service", service("orders-api"))
    create("ConfigMap", {"metadata": {"name": "cfg"}, "data": {"MODE": "fast", "LEVEL": "3"}})
    create("Secret", {"metadata": {"name": "creds"}, "data": {"TOKEN": base64.b64encode(b"s3cret").decode()}})
    spec_env = [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-two"},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}}]
    pod = make_pod(ns, spec={"containers": [{"name": "app", "image": "x", "env": spec_env,
                                             "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]}]})
    env = env_of(sandbox, pod)
    ip = svc["spec"]["clusterIP"]
    assert env["ORDERS_API_SERVICE_HOST"] == ip and env["ORDERS_API_SERVICE_PORT"] == "80"
    assert env["ORDERS_API_SERVICE_PORT_HTTP"] == "80"
    assert env["ORDERS_API_PORT"] == f"tcp://{ip}:80"
    assert env["ORDERS_API_PORT_80_TCP"] == f"tcp://{ip}:80"
    assert env["ORDERS_API_PORT_80_TCP_PROTO"] == "tcp" and env["ORDERS_API_PORT_80_TCP_ADDR"] == ip
    assert env["KUBERNETES_SERVICE_HOST"] and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert (env["A"], env["B"], env["NODE"], env["TOKEN"]) == ("1", "1-two", "probe", "s3cret")
    assert (env["CFG_MODE"], env["CFG_LEVEL"]) == ("fast", "3")
    assert env["HOSTNAME"] == "probe" and env["PATH"].startswith("/usr/local/sbin")


def test_service_links_only_for_services_that_existed_and_only_when_enabled(box):
    sandbox, ns, create = box
    create("Service", service("later"))
    before = make_pod(ns, started="2001-01-01T00:00:00Z")  # started before the Service was created
    assert "LATER_SERVICE_HOST" not in env_of(sandbox, before)
    assert "LATER_SERVICE_HOST" in env_of(sandbox, make_pod(ns))
    disabled = make_pod(ns, spec={"enableServiceLinks": False})
    env = env_of(sandbox, disabled)
    assert "LATER_SERVICE_HOST" not in env and "KUBERNETES_SERVICE_HOST" in env  # the master's are always there


@pytest.mark.parametrize("spec, expected", [
    ({}, "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {dns}\noptions ndots:5\n"),
    ({"dnsPolicy": "Default"}, "nameserver 192.168.0.1\n"),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["corp.example"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "search corp.example\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"),
    ({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}},
     "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver {dns}\noptions ndots:1\n"),
])
def test_resolv_conf_follows_dns_policy(box, spec, expected):
    sandbox, ns, _ = box
    code, out, _ = run(sandbox, make_pod(ns, spec=spec), "cat", "/etc/resolv.conf")
    assert code == 0
    assert out == expected.format(ns=ns, dns=sandbox.api.kubelet.dns_ip())


def test_cat_hosts_and_mounted_files(box):
    sandbox, ns, create = box
    create("ConfigMap", {"metadata": {"name": "app-config"}, "data": {"app.yaml": "port: 8080\n"}})
    create("Secret", {"metadata": {"name": "tls"}, "data": {"tls.crt": base64.b64encode(b"CERT\n").decode()}})
    spec = {"volumes": [{"name": "config", "configMap": {"name": "app-config"}},
                        {"name": "certs", "secret": {"secretName": "tls"}}],
            "containers": [{"name": "app", "image": "x", "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app"}, {"name": "certs", "mountPath": "/certs"}]}]}
    pod = make_pod(ns, spec=spec)
    assert run(sandbox, pod, "cat", "/etc/app/app.yaml") == (0, "port: 8080\n", "")
    assert run(sandbox, pod, "cat", "/certs/tls.crt") == (0, "CERT\n", "")
    assert run(sandbox, pod, "cat", kubelet_mod.SA_DIR + "/namespace") == (0, ns, "")
    code, hosts, _ = run(sandbox, pod, "cat", "/etc/hosts")
    assert hosts.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n") and "10.244.9.9\tprobe" in hosts
    assert run(sandbox, pod, "cat", "/nope") == (1, "", "cat: can't open '/nope': No such file or directory\n")
    assert run(sandbox, pod, "cat", "/etc/app")[0] == 1
    assert run(sandbox, pod, "cat", stdin=b"piped\n") == (0, "piped\n", "")


def test_dns_answers_from_the_service_table(box):
    sandbox, ns, create = box
    svc = create("Service", service("api"))
    create("Service", service("db", clusterIP="None"))
    create("EndpointSlice", {"metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
                             "addressType": "IPv4", "ports": [{"port": 5432}],
                             "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
                                           {"addresses": ["10.244.1.6"], "conditions": {"ready": False}}]})
    create("Service", {"metadata": {"name": "legacy"},
                       "spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    pod = make_pod(ns)
    code, out, _ = run(sandbox, pod, "nslookup", "api")
    assert code == 0 and f"Name:\tapi.{ns}.svc.cluster.local\nAddress: {svc['spec']['clusterIP']}\n" in out
    code, out, _ = run(sandbox, pod, "nslookup", f"db.{ns}")
    assert code == 0 and "Address: 10.244.1.5" in out and "10.244.1.6" not in out  # only ready endpoints
    code, out, _ = run(sandbox, pod, "nslookup", "legacy")
    assert code == 0 and f"legacy.{ns}.svc.cluster.local\tcanonical name = db.example.com" in out
    code, out, _ = run(sandbox, pod, "nslookup", "missing")
    assert code == 1 and "** server can't find missing: NXDOMAIN" in out
    assert run(sandbox, pod, "getent", "hosts", "api") == (
        0, f"{svc['spec']['clusterIP']:<15} api.{ns}.svc.cluster.local\n", "")
    assert run(sandbox, pod, "getent", "hosts", "missing")[0] == 2
    assert run(sandbox, pod, "dig", "+short", f"api.{ns}.svc.cluster.local") == (0, svc["spec"]["clusterIP"] + "\n", "")
    assert run(sandbox, pod, "dig", "+short", "api")[1] == ""  # dig does not use the search list


def test_http_clients_route_through_services(box):
    sandbox, ns, create = box
    create("Service", service("empty", selector={"app": "nobody"}))
    pod = make_pod(ns)
    code, out, err = run(sandbox, pod, "curl", "-sS", "http://empty/")
    assert code == 7 and "Failed to connect to empty port 80" in err
    assert run(sandbox, pod, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://empty/") == (7, "000", "")
    assert run(sandbox, pod, "curl", "-s", "http://nowhere.invalid/")[0] == 6
    code, _, err = run(sandbox, pod, "wget", "-qO-", "http://nowhere.invalid/")
    assert code == 1 and err == "wget: bad address 'nowhere.invalid'\n"


def test_shell_and_exit_codes(box):
    sandbox, ns, _ = box
    pod = make_pod(ns)
    assert run(sandbox, pod, "sh", "-c", "exit 42")[0] == 42
    assert run(sandbox, pod, "/bin/sh", "-c", "true && echo yes || echo no; false || echo $?") == (0, "yes\n1\n", "")
    assert run(sandbox, pod, "sh", "-c", "echo piped | cat")[1] == "piped\n"
    assert run(sandbox, pod, "sh", "-c", "echo $HOSTNAME '$HOSTNAME'")[1] == "probe $HOSTNAME\n"
    assert run(sandbox, pod, "sh", stdin=b"echo one\nexit 9\necho never\n") == (9, "one\n", "")
    assert run(sandbox, pod, "true")[0] == 0 and run(sandbox, pod, "false")[0] == 1
    assert run(sandbox, pod, "sleep", "0")[0] == 0


def test_unknown_command_exits_127_with_the_runtime_message(box):
    sandbox, ns, _ = box
    code, out, err = run(sandbox, make_pod(ns), "foo", "--help")
    assert (code, out) == (127, "")
    assert err == ('OCI runtime exec failed: exec failed: unable to start container process: exec: "foo": '
                   "executable file not found in $PATH: unknown\n")
    assert run(sandbox, make_pod(ns), "sh", "-c", "ls /")[0] == 127


def test_exit_status_is_what_the_kubelet_reports():
    assert tools.exit_status(0, ["true"]) == {"metadata": {}, "status": "Success"}
    failure = tools.exit_status(3, ["sh", "-c", "exit 3"])
    assert list(failure) == ["metadata", "status", "message", "reason", "details"]
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}


def test_container_that_is_not_running_cannot_be_entered(box):
    _, ns, _ = box
    with pytest.raises(kubelet_mod.ContainerNotRunning, match=r'container not found \("app"\)'):
        kubelet_mod.Kubelet.check_running(make_pod(ns, running=False), "app")


def test_the_tool_table_is_documented():
    doc = tools.__doc__ or ""
    readme = (ROOT / "README.md").read_text()
    for tool in tools.TOOLS:
        assert f"``{tool}" in doc, tool
        assert f"`{tool}" in readme, tool
