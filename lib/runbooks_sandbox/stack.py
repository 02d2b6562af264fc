"""The whole sandbox stack: the API plus every service a runbook reads or writes.

`runbooks sandbox up` and the tests that exercise a runbook end to end build
the same stack: cert-manager's controller, the TLS ingress endpoint, the
Elasticsearch-compatible log store holding the cluster's logs, and the real
Prometheus and Alertmanager backfilled from the cluster. Each is an addon of
:class:`~runbooks_sandbox.launch.Sandbox`, started after the API (its data is
generated from the cluster's objects) and stopped before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .launch import Sandbox

# Default ports of `runbooks sandbox up`, which parameters/sandbox/env.yaml names; tests use free ports.
PORTS = {"prometheus": 19090, "alertmanager": 19093, "elasticsearch": 19200, "ingress_https": 18443,
         "ingress_http": 18080}


class LogStoreAddon:
    """The log store, filled with Fluent-bit-shaped documents of the cluster (and following it)."""

    def __init__(self, sandbox: Sandbox, port: int = 0, follow: float | None = 30.0):
        self.sandbox, self.port, self.follow = sandbox, port, follow
        self.served: Any = None

    def start(self) -> dict[str, str]:
        from . import loggen

        self.served = loggen.serve(self.sandbox, self.port, follow=self.follow)
        return {"elasticsearch": self.served.url}

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()


class ObservabilityAddon:
    """The real Prometheus and Alertmanager, backfilled from the cluster's objects."""

    def __init__(self, sandbox: Sandbox, prometheus_port: int = 0, alertmanager_port: int = 0):
        self.sandbox = sandbox
        self.ports = {"prometheus_port": prometheus_port, "alertmanager_port": alertmanager_port}
        self.obs: Any = None

    def start(self) -> dict[str, str]:
        from .observability import Observability, sandbox_objects

        self.obs = Observability(self.sandbox.state_dir / "observability", lambda: sandbox_objects(self.sandbox),
                                 self.sandbox.store.clock(), **self.ports)
        urls = self.obs.start()
        wait_for_alerts(urls["prometheus"], urls["alertmanager"])
        return urls

    def stop(self) -> None:
        if self.obs is not None:
            self.obs.stop()


class IngressCAFile:
    """Writes the sandbox Let's Encrypt root (from a cert-manager TLS Secret's ca.crt) for HTTPS clients."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.path = sandbox.state_dir / "ingress-ca.crt"

    def start(self) -> dict[str, str]:
        import base64

        rt = self.sandbox.registry.by_kind_any_version("Secret")
        for secret in self.sandbox.store.items(rt):
            ann = secret["metadata"].get("annotations") or {}
            ca = (secret.get("data") or {}).get("ca.crt")
            if ann.get("cert-manager.io/issuer-name") == "letsencrypt-prod" and ca:
                self.path.write_bytes(base64.b64decode(ca))
                return {"ingress_ca_file": str(self.path.resolve())}
        return {}

    def stop(self) -> None:
        pass


def wait_for_alerts(prometheus: str, alertmanager: str, timeout: float = 90.0) -> bool:
    """Wait until every rule group has been evaluated and Alertmanager holds every firing alert.

    Rules over the backfilled history fire at their first evaluation, but each
    rule group evaluates on its own schedule and Alertmanager shows an alert
    only after its group_wait: a sandbox is ready when the two agree.
    """
    import json
    import time
    import urllib.request
    from datetime import datetime

    def get(url: str):
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)

    started = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            groups = get(f"{prometheus}/api/v1/rules")["data"]["groups"]
            evaluated = all(datetime.fromisoformat(g["lastEvaluation"][:19] + "+00:00").timestamp() >= started - 1
                            for g in groups)
            firing = {a["labels"]["alertname"] for a in get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
                      if a.get("state") == "firing"}
            held = {a["labels"]["alertname"] for a in get(f"{alertmanager}/api/v2/alerts")}
            if groups and evaluated and firing and firing <= held:
                return True
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    return False


@dataclass
class StackOptions:
    """Which services to run beside the API, and on which ports (0: any free port)."""

    observability: bool = True
    logs: bool = True
    certificates: bool = True
    ports: dict[str, int] | None = None


def attach(box: Sandbox, options: StackOptions | None = None) -> Sandbox:
    """Add the stack's services to a not-yet-started sandbox; `box.urls` has their URLs once started."""
    from .certmanager import CertManager
    from .ingress import IngressEndpoint

    options = options or StackOptions()
    ports = {k: 0 for k in PORTS} | (options.ports or {})
    if options.certificates:
        box.add(CertManager(box))
        box.add(IngressEndpoint(box, https_port=ports["ingress_https"], http_port=ports["ingress_http"]))
        box.add(IngressCAFile(box))
    if options.logs:
        box.add(LogStoreAddon(box, ports["elasticsearch"]))
    if options.observability:
        box.add(ObservabilityAddon(box, ports["prometheus"], ports["alertmanager"]))
    return box


def env_settings(box: Sandbox) -> dict[str, str]:
    """The env.yaml settings that reach this sandbox's services (what a test's env file holds)."""
    return env_from_urls(str(box.kubeconfig), box.urls)


def env_from_urls(kubeconfig: str, urls: dict[str, str]) -> dict[str, str]:
    """env.yaml settings from a kubeconfig and the service URLs of a sandbox (its state file's `services`)."""
    names = {"prometheus": "prometheus_url", "alertmanager": "alertmanager_url",
             "elasticsearch": "elasticsearch_url", "ingress": "ingress_url", "ingress_ca_file": "ingress_ca_file"}
    out = {"kubeconfig": kubeconfig, "kube_context": "sandbox", "expected_context": "sandbox"}
    return out | {names[k]: v for k, v in urls.items() if k in names}
