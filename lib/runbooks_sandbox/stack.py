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
         "ingress_http": 18080, "cluster_dns": 10053, "rfc2136": 10054, "pdns": 10055, "pdns_api": 18081}


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

    def __init__(self, sandbox: Sandbox, prometheus_port: int = 0, alertmanager_port: int = 0,
                 alert_webhook: str | None = None, alert_timing: dict[str, str] | None = None,
                 alert_webhook_token: str | None = None):
        self.sandbox = sandbox
        self.ports = {"prometheus_port": prometheus_port, "alertmanager_port": alertmanager_port}
        self.alerting = {"alert_webhook": alert_webhook, "alert_timing": alert_timing,
                         "alert_webhook_token": alert_webhook_token}
        self.obs: Any = None

    def start(self) -> dict[str, str]:
        from .observability import Observability, sandbox_objects

        self.obs = Observability(self.sandbox.state_dir / "observability", lambda: sandbox_objects(self.sandbox),
                                 self.sandbox.store.clock(), **self.ports, **self.alerting)
        urls = self.obs.start()
        wait_for_alerts(urls["prometheus"], urls["alertmanager"])
        return urls

    def stop(self) -> None:
        if self.obs is not None:
            self.obs.stop()


class DnsAddon:
    """Real DNS servers: cluster DNS (BIND, fed from Services), and two ExternalDNS providers
    (PowerDNS through its API, BIND through RFC 2136 + TSIG) holding what the sandbox's
    ExternalDNS wrote plus the scenario's planted drift (:mod:`.externaldns`).

    The providers' credentials are random per start; they are written to
    ``<state dir>/dns/credentials.env`` (mode 0600) under the environment variable names
    :data:`CREDENTIAL_ENV` that ``env_settings`` names in the env.yaml settings.
    """

    def __init__(self, sandbox: Sandbox, ports: dict[str, int] | None = None):
        self.sandbox = sandbox
        self.ports = {k: 0 for k in ("cluster_dns", "rfc2136", "pdns", "pdns_api")} | (ports or {})
        self.servers: list[Any] = []
        self.sync: Any = None
        self.cluster: Any = None
        self.bind: Any = None
        self.pdns: Any = None
        self.zones: list[str] = []
        self.more_zones: list[dict[str, str]] = []
        self.published: dict[str, Any] = {}

    @property
    def credentials(self) -> dict[str, str]:
        """Environment variable -> secret, for the runbook's provider settings."""
        return {CREDENTIAL_ENV["pdns"]: self.pdns.api_key, CREDENTIAL_ENV["rfc2136"]: self.bind.secret}

    def start(self) -> dict[str, str]:
        import json
        import os

        from . import clusterdns, dnsservers, externaldns
        from .scenario import scenario_dir

        root = (self.sandbox.state_dir / "dns").resolve()
        plan: dict[str, Any] = {"zones": [], "more_zones": []}
        if self.sandbox.scenario:
            f = scenario_dir(self.sandbox.scenario).joinpath("dns.yaml")
            if f.is_file():
                plan = externaldns.load_plan(f.read_text())
        self.zones = [z.rstrip(".").lower() for z in plan["zones"]]
        self.more_zones = list(plan.get("more_zones") or [])
        try:
            self.cluster = dnsservers.Named("cluster-dns", root / "cluster", dnsservers.CLUSTER_ZONES,
                                            dnsservers.CLUSTER_KEY, self.ports["cluster_dns"])
            self.servers.append(self.cluster)
            self.cluster.start()
            self.bind = dnsservers.Named("rfc2136", root / "bind",
                                         tuple(externaldns.zones_of(plan, "rfc2136")) or ("example.invalid",),
                                         dnsservers.EXTERNAL_KEY, self.ports["rfc2136"])
            self.servers.append(self.bind)
            self.bind.start()
            self.pdns = dnsservers.PowerDNS(root / "pdns", tuple(externaldns.zones_of(plan, "pdns")),
                                            self.ports["pdns"], self.ports["pdns_api"])
            self.servers.append(self.pdns)
            self.pdns.start()
            self.sync = clusterdns.ClusterDNSSync(self.sandbox, self.cluster.port, self.cluster.secret)
            self.sync.start()
            objects = {kind: self.sandbox.store.items(self.sandbox.registry.by_kind_any_version(kind))
                       for kind in ("Deployment", "Ingress", "Service")}
            writers = {"pdns": externaldns.PdnsWriter(self.pdns),
                       "rfc2136": externaldns.Rfc2136Writer(self.bind.port, self.bind.secret)}
            self.published = externaldns.run_once(objects, writers, plan)
            # pods resolve through the real servers: cluster zones at cluster DNS, the rest "upstream"
            # at the authoritative server of each of the scenario's public zones
            self.sandbox.api.kubelet.use_dns({**{z: ("127.0.0.1", self.pdns.port)
                                                 for z in externaldns.zones_of(plan, "pdns")},
                                              **{z: ("127.0.0.1", self.bind.port)
                                                 for z in externaldns.zones_of(plan, "rfc2136")},
                                              **{z: ("127.0.0.1", self.cluster.port)
                                                 for z in dnsservers.CLUSTER_ZONES}})
        except BaseException:
            self.stop()
            raise
        creds = root / "credentials.env"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in self.credentials.items()))
        return {"cluster_dns": f"127.0.0.1:{self.cluster.port}", "rfc2136": f"127.0.0.1:{self.bind.port}",
                "pdns": f"127.0.0.1:{self.pdns.port}", "pdns_api": self.pdns.api_url,
                "dns_zones": ",".join(self.zones), "dns_more_zones": json.dumps(self.more_zones),
                "dns_credentials_file": str(creds)}

    def stop(self) -> None:
        self.sandbox.api.kubelet.use_dns(None)
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        for server in reversed(self.servers):
            server.stop()
        self.servers = []


# The environment variables the runbook reads the sandbox providers' secrets from.
CREDENTIAL_ENV = {"pdns": "PDNS_API_KEY", "rfc2136": "RFC2136_TSIG_SECRET"}


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
    dns: bool = True
    ports: dict[str, int] | None = None
    alert_webhook: str | None = None  # Alertmanager's webhook receiver (e.g. `runbooks serve`)
    alert_timing: dict[str, str] | None = None  # group_wait, group_interval, repeat_interval
    alert_webhook_token: str | None = None  # its bearer token (default: from the environment)


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
    if options.dns:
        from .dnsservers import missing_binaries

        missing = missing_binaries()
        if missing:
            import logging

            logging.getLogger(__name__).warning("no DNS servers in the sandbox: %s", "; ".join(missing))
        else:
            box.add(DnsAddon(box, {k: ports[k] for k in ("cluster_dns", "rfc2136", "pdns", "pdns_api")}))
    if options.observability:
        box.add(ObservabilityAddon(box, ports["prometheus"], ports["alertmanager"],
                                   options.alert_webhook, options.alert_timing, options.alert_webhook_token))
    return box


def env_settings(box: Sandbox) -> dict[str, str]:
    """The env.yaml settings that reach this sandbox's services (what a test's env file holds)."""
    return env_from_urls(str(box.kubeconfig), box.urls)


def env_from_urls(kubeconfig: str, urls: dict[str, str]) -> dict[str, str]:
    """env.yaml settings from a kubeconfig and the service URLs of a sandbox (its state file's `services`)."""
    names = {"prometheus": "prometheus_url", "alertmanager": "alertmanager_url",
             "elasticsearch": "elasticsearch_url", "ingress": "ingress_url", "ingress_ca_file": "ingress_ca_file"}
    out = {"kubeconfig": kubeconfig, "kube_context": "sandbox", "expected_context": "sandbox"}
    out |= {names[k]: v for k, v in urls.items() if k in names}
    if urls.get("cluster_dns"):
        out["cluster_dns_server"] = urls["cluster_dns"]
    if urls.get("pdns_api") and urls.get("rfc2136"):
        out["dns_providers"] = dns_providers(urls)
    return out


def dns_providers(urls: dict[str, str]) -> dict[str, dict]:
    """The env.yaml ``dns_providers`` setting: the two ExternalDNS providers of the zones both
    servers serve, and one provider per zone of dns.yaml's ``more_zones``."""
    import json

    from .dnsservers import EXTERNAL_KEY, PDNS_SERVER_ID, TSIG_ALGORITHM

    zones = [z for z in urls.get("dns_zones", "").split(",") if z]
    servers = {
        "pdns": {"type": "pdns", "api_url": urls["pdns_api"], "server_id": PDNS_SERVER_ID,
                 "api_key_env": CREDENTIAL_ENV["pdns"], "nameserver": urls["pdns"]},
        "rfc2136": {"type": "rfc2136", "nameserver": urls["rfc2136"], "tsig_key_name": EXTERNAL_KEY,
                    "tsig_algorithm": TSIG_ALGORITHM, "tsig_secret_env": CREDENTIAL_ENV["rfc2136"]},
    }
    out = {name: {**settings, "zones": zones} for name, settings in servers.items()}
    for more in json.loads(urls.get("dns_more_zones") or "[]"):
        out[more["provider"]] = {**servers[more["server"]], "zones": [more["zone"]],
                                 **({"instance": more["instance"]} if more.get("instance") else {})}
    return out
