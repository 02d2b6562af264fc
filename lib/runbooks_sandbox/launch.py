"""Start and stop the sandbox: in-process for tests, as a background process for people.

`Sandbox` wires the pieces together (PKI, API server, controllers, scenario)
and writes a kubeconfig whose context `sandbox` verifies the server's TLS
certificate against the generated CA and authenticates with a bearer token,
so every client is configured exactly as for a real cluster.
The background process (`runbooks sandbox up`) records its pid, URL and
kubeconfig in a state file; `down` stops only that pid.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import yaml

from . import names
from .controllers import Controllers
from .resources import Registry
from .server import ApiServer
from .store import Store

log = logging.getLogger(__name__)

CONTEXT = "sandbox"
STATE_FILE = "state.json"


class Addon(Protocol):
    """A service beside the API (cert-manager controller, ingress endpoint, log store, Prometheus).

    Built with the started-or-not Sandbox, `start()` returns the URLs it serves
    (name -> URL) once the API and scenario are up; `stop()` stops only what it started.
    """

    def start(self) -> dict[str, str] | None: ...

    def stop(self) -> None: ...


class Sandbox:
    """An embedded cluster on 127.0.0.1: `start()` it, use `.kubeconfig`, `stop()` it."""

    def __init__(self, state_dir: Path | str, scenario: str | None = "default", port: int = 0,
                 tick: float = 2.0, clock: Callable[[], datetime] | None = None):
        self.state_dir = Path(state_dir)
        self.scenario = scenario
        self.port = port
        self.registry = Registry()
        self.store = Store(self.registry, clock)
        self.api = ApiServer(self.registry, self.store)
        self.controllers = Controllers(self.store, self.registry, tick=tick)
        from .clusterctl import ClusterControllers

        self.cluster_controllers = ClusterControllers(self.api, tick=tick)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.ca_file = self.state_dir / "ca.crt"
        self.url = ""
        self.urls: dict[str, str] = {}  # addon name -> URL (prometheus, logstore, ingress ...)
        self.addons: list[Addon] = []

    def add(self, addon: Addon) -> Addon:
        """Attach a service that starts after the API (and stops before it); returns it."""
        self.addons.append(addon)
        return addon

    @property
    def token(self) -> str:
        return self.api.token

    def start(self) -> Sandbox:
        from . import pki

        self.state_dir.mkdir(parents=True, exist_ok=True)
        now = self.store.clock()
        ca = pki.new_ca("sandbox-kubernetes-ca", not_before=now - timedelta(hours=1),
                        not_after=now + timedelta(days=3650))
        serving = pki.serving_cert_for_loopback(ca, now=now)
        cert, key = self.state_dir / "apiserver.crt", self.state_dir / "apiserver.key"
        self.ca_file.write_bytes(ca.cert_pem)
        cert.write_bytes(serving.cert_pem + ca.cert_pem)
        _write_private(key, serving.key_pem)
        from .podlogs import follow_logs, render_logs

        self.api.log_source = render_logs
        from . import auth

        self.api.ca_file = self.ca_file  # what the token controller puts into token Secrets
        auth.bootstrap(self.store, self.registry)  # default ClusterRoles and bindings, as on any cluster
        from .clusterctl import bootstrap_api_services

        bootstrap_api_services(self.store, self.registry)
        self.api.log_follower = follow_logs
        if self.scenario:
            self.load(self.scenario, now)
        self.url = self.api.serve(self.port, cert, key)
        self.controllers.start()
        self.cluster_controllers.start()
        write_kubeconfig(self.kubeconfig, self.url, ca.cert_pem, self.token)
        for addon in self.addons:
            self.urls.update(addon.start() or {})
        return self

    def load(self, scenario: str, now: datetime) -> None:
        """Create the scenario's objects and let the controllers bring them to life, back-dated."""
        from .admission import apply_defaults, prepare_create
        from .scenario import load_scenario
        from .server import Request

        self.controllers.bootstrapping = True
        updates = []
        try:
            for obj in load_scenario(scenario, now=now):
                rt = self.registry.by_kind(obj["apiVersion"], obj["kind"])
                if rt is None:
                    raise ValueError(f"scenario {scenario!r}: no such kind {obj['apiVersion']}/{obj['kind']}")
                if self.store.find(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"]) is not None:
                    updates.append((rt, obj))  # the same object again: an update, once the first pods run
                    continue
                req = Request("POST", rt.path(), {"User-Agent": "sandbox-scenario"}, b"")
                created = datetime.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ") \
                    .replace(tzinfo=UTC) if obj["metadata"].get("creationTimestamp") else None
                self.store.resolve_owner_uids(obj)
                prepared = prepare_create(self.api, rt, obj, obj["metadata"].get("namespace"), req)
                for entry in prepared["metadata"].get("managedFields") or []:  # written when created, not now
                    entry["time"] = obj["metadata"].get("creationTimestamp") or entry.get("time")
                stored = self.store.create(rt, prepared, created=created)
                if rt.kind == "CustomResourceDefinition":
                    self.api.crd_established(stored)
                if "status" in obj and rt.kind not in ("Pod",):
                    # scenario status (e.g. cert-manager conditions) is what the owning controller reported
                    stored = self.store.get(rt, stored["metadata"].get("namespace"), stored["metadata"]["name"])
                    self.store.update(rt, {**stored, "status": obj["status"]}, subresource="status",
                                      check_rv=False)
            self.controllers.settle(rounds=200)
            self.cluster_controllers.settle(rounds=50)
            for rt, obj in updates:  # applied once the first pods run, so that the controllers roll them out
                stored = self.store.get(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                self.store.update(rt, apply_defaults(rt, {**stored, "spec": obj["spec"]}, stored), check_rv=False)
                self.controllers.settle(rounds=200)
        finally:
            self.controllers.bootstrapping = False
        self.controllers.settle(rounds=50)
        self.cluster_controllers.settle(rounds=50)

    def add_bulk_pods(self, count: int, namespaces: int = 1, nodes: int = 0, unhealthy_percent: float = 0.0,
                      namespace: str = "bulk") -> None:
        """Add `count` pods straight into the store (benchmarks of large lists).

        Spread over `namespaces` namespaces (``bulk``, or ``bulk-0000`` ...) and, with `nodes`,
        over that many extra Ready nodes (``bulk-node-0000`` ..., 4 CPU / 16Gi, as the
        scenario's). Pods come in workloads of 20 (owned by a ReplicaSet ``load-N-<hash>``, as a
        Deployment's are); every pod of `unhealthy_percent` of the workloads crash-loops (the
        ``sandbox.kube-runbooks.io/fail`` annotation), so that share of the pods is unhealthy.
        """
        from .admission import apply_defaults
        from .controllers import FAIL_ANNOTATION

        ns_rt = self.registry.lookup("", "v1", "namespaces")
        pod_rt = self.registry.lookup("", "v1", "pods")
        node_rt = self.registry.lookup("", "v1", "nodes")
        assert ns_rt and pod_rt and node_rt
        spaces = [namespace] if namespaces <= 1 else [f"{namespace}-{i:04d}" for i in range(namespaces)]
        for ns in spaces:
            if self.store.find(ns_rt, None, ns) is None:
                self.store.create(ns_rt, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        now = self.store.clock()
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(nodes):
            name = f"bulk-node-{i:04d}"
            if self.store.find(node_rt, None, name) is not None:
                continue
            conds = [{"type": t, "status": "False", "reason": r, "lastHeartbeatTime": stamp,
                      "lastTransitionTime": stamp, "message": m} for t, r, m in (
                ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))]
            conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": stamp,
                          "lastTransitionTime": stamp, "message": "kubelet is posting ready status"})
            resources = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
            self.store.create(node_rt, {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                      "kubernetes.io/arch": "amd64"}},
                "spec": {"podCIDR": f"10.{64 + i // 256}.{i % 256}.0/24"},
                "status": {"capacity": resources, "allocatable": resources, "conditions": conds,
                           "nodeInfo": {"kubeletVersion": "v1.32.4", "containerRuntimeVersion": "containerd://1.7.27",
                                        "operatingSystem": "linux", "architecture": "amd64"}}})
        node_names = [n["metadata"]["name"] for n in self.store.items(node_rt)] or ["node-1"]
        every = round(100 / unhealthy_percent) if unhealthy_percent else 0
        for i in range(count):
            workload = i // 20
            ns = spaces[workload % len(spaces)]
            rs = f"load-{workload}-7d9f8b6c5"
            annotations = {"example.com/owner": "benchmarks"}
            if every and workload % every == 0:
                annotations[FAIL_ANNOTATION] = "CrashLoopBackOff"
            name = f"{rs}-{names.suffix(f'{workload}/{i}')}"
            attempt = 0
            while self.store.find(pod_rt, ns, name) is not None:  # as the ReplicaSet controller retries
                attempt += 1
                name = f"{rs}-{names.suffix(f'{workload}/{i}/{attempt}')}"
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": ns,
                                "labels": {"app": f"load-{workload}", "tier": "batch",
                                           "pod-template-hash": "7d9f8b6c5"},
                                "annotations": annotations,
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                                     "uid": f"00000000-0000-4000-9000-{workload:012d}",
                                                     "controller": True, "blockOwnerDeletion": True}]},
                   "spec": {"nodeName": node_names[i % len(node_names)], "containers": [{
                       "name": "app", "image": "registry.example.com/load/app:1.0.0",
                       "ports": [{"containerPort": 8080, "name": "http"}],
                       "env": [{"name": "MODE", "value": "batch"}, {"name": "SHARD", "value": str(i)}],
                       "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                     "limits": {"memory": "256Mi"}}}]}}
            pod = apply_defaults(pod_rt, pod)
            pod["metadata"]["uid"] = f"00000000-0000-4000-8000-{i:012d}"
            pod["metadata"]["creationTimestamp"] = stamp
            pod["status"] = self.controllers.pod_status(pod, now)
            self.store.create(pod_rt, pod)
        self.controllers.settle(rounds=10)

    def stop(self) -> None:
        for addon in reversed(self.addons):
            try:
                addon.stop()
            except Exception:  # stopping must reach every addon and the API
                log.exception("stopping %s failed", type(addon).__name__)
        self.cluster_controllers.stop()
        self.controllers.stop()
        self.api.shutdown()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_kubeconfig(path: Path, url: str, ca_pem: bytes, token: str, context: str = CONTEXT) -> None:
    """A kubeconfig for the sandbox: CA data for TLS verification and a bearer token."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": {
            "server": url, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": f"{context}-admin", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": f"{context}-admin",
                                                   "namespace": "default"}}],
        "current-context": context,
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())


# ---- the background process ---------------------------------------------------


def read_state(state_dir: Path) -> dict | None:
    try:
        return json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid is not ours: check the command line
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"runbooks_sandbox" in cmdline
    except OSError:
        return True


def serve_forever(state_dir: Path, scenario: str, port: int, bulk_pods: int = 0, api_only: bool = False,
                  free_ports: bool = False, alert_webhook: str | None = None, bulk_namespaces: int = 1,
                  bulk_nodes: int = 0, bulk_unhealthy: float = 0.0, run_images: dict[str, str] | None = None) -> None:
    """Run the sandbox in this process until SIGTERM/SIGINT (the body of `sandbox up`).

    The services listen on the fixed ports of ``stack.PORTS`` (what parameters/sandbox/env.yaml
    names), or with ``free_ports`` on any free ones (the state file's ``services`` lists them).
    ``alert_webhook`` is the URL Alertmanager sends alerts to (e.g. `runbooks serve`).
    ``run_images`` (repository -> directory of executables): pods of these images run as local
    processes (podrunner.py), e.g. the kube-runbooks chart's CronJobs.
    """
    from . import stack

    sandbox = Sandbox(state_dir, scenario, port)
    if run_images:
        from .podrunner import PodRunnerAddon

        sandbox.add(PodRunnerAddon(sandbox, run_images))
    if not api_only:
        stack.attach(sandbox, stack.StackOptions(ports=None if free_ports else dict(stack.PORTS),
                                                 alert_webhook=alert_webhook))
    sandbox.start()
    if bulk_pods:
        sandbox.add_bulk_pods(bulk_pods, bulk_namespaces, bulk_nodes, bulk_unhealthy)
    state = {"pid": os.getpid(), "url": sandbox.url, "kubeconfig": str(sandbox.kubeconfig.resolve()),
             "scenario": scenario, "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "services": sandbox.urls}
    (state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.2)
    finally:
        sandbox.stop()
        (state_dir / STATE_FILE).unlink(missing_ok=True)


def start_background(state_dir: Path, scenario: str = "default", port: int = 0, wait: float = 120.0,
                     bulk_pods: int = 0, api_only: bool = False, free_ports: bool = False,
                     alert_webhook: str | None = None, bulk_namespaces: int = 1, bulk_nodes: int = 0,
                     bulk_unhealthy: float = 0.0, run_images: dict[str, str] | None = None) -> dict:
    """Start the sandbox as a detached process; return its state once it answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    current = read_state(state_dir)
    if current and pid_alive(current["pid"]):
        return {**current, "already_running": True}
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    log_file = open(state_dir / "sandbox.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbooks_sandbox", "serve", "--state-dir", str(state_dir),
         "--scenario", scenario, "--port", str(port), "--bulk-pods", str(bulk_pods),
         "--bulk-namespaces", str(bulk_namespaces), "--bulk-nodes", str(bulk_nodes),
         "--bulk-unhealthy", str(bulk_unhealthy)]
        + (["--api-only"] if api_only else []) + (["--free-ports"] if free_ports else [])
        + (["--alert-webhook", alert_webhook] if alert_webhook else [])
        + [a for repo, bin_dir in (run_images or {}).items() for a in ("--run-image", f"{repo}={bin_dir}")],
        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            tail = (state_dir / "sandbox.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the sandbox exited with code {proc.returncode} during start-up:\n{tail}")
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"the sandbox did not start within {wait:.0f}s (see {state_dir / 'sandbox.log'})")


def stop_background(state_dir: Path, wait: float = 10.0) -> bool:
    """Stop the process `start_background` started (by its recorded pid). False if none ran."""
    state = read_state(state_dir)
    if not state or not pid_alive(state["pid"]):
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return False
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and pid_alive(state["pid"]):
        time.sleep(0.1)
    if pid_alive(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return True
