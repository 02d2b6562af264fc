"""dns-audit end to end against the real servers: named (cluster DNS, RFC 2136 provider) and pdns_server.

The sandbox plays ExternalDNS and plants the drift of scenarios/default/dns.yaml; every
assertion about the providers reads them through their own protocols (AXFR with TSIG,
the PowerDNS HTTP API), not through the product's client.

Skipped when the servers are not installed, unless RUNBOOKS_REQUIRE_DNS=1 (CI), where a
missing binary fails instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.tsig
import dns.xfr
import dns.zone
import pytest
import yaml

from runbooks import dnsaudit, kube
from runbooks_sandbox import dnsservers, stack
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "dns-audit"
MISSING = dnsservers.missing_binaries()
REQUIRED = os.environ.get("RUNBOOKS_REQUIRE_DNS") == "1"
ZONE = "apps.example.com"

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(600)]


@pytest.fixture(scope="module", autouse=True)
def _servers_installed():
    if MISSING and REQUIRED:
        pytest.fail("RUNBOOKS_REQUIRE_DNS=1 but: " + "; ".join(MISSING))
    if MISSING:
        pytest.skip("; ".join(MISSING))


@pytest.fixture(scope="module")
def box(tmp_path_factory, _servers_installed):
    sandbox = Sandbox(tmp_path_factory.mktemp("dns-sandbox"), "default", tick=1.0)
    # with the real Prometheus: CoreDNS's and ExternalDNS's metrics are part of the audit
    stack.attach(sandbox, stack.StackOptions(observability=True, logs=False, certificates=False))
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture(scope="module")
def dns_addon(box):
    return next(a for a in box.addons if isinstance(a, stack.DnsAddon))


@pytest.fixture(scope="module")
def project(box, tmp_path_factory):
    root = tmp_path_factory.mktemp("dns-project")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    env = {"description": "the dns-audit tests' sandbox", **stack.env_settings(box)}
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


def runbooks(project: Path, creds: dict, *args: str, params: dict | None = None,
             env_extra: dict | None = None) -> subprocess.CompletedProcess:
    extra = []
    if params:
        pfile = project / f"params-{len(list(project.glob('params-*.yaml')))}.yaml"
        pfile.write_text(yaml.safe_dump(params))
        extra = ["-f", str(pfile)]
    env = {**os.environ, "RUNBOOKS_HOME": str(project), **creds, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run", RUNBOOK,
                           "--env", "sandbox", "--no-progress", *extra, *args], capture_output=True, text=True,
                          timeout=300, env=env, stdin=subprocess.DEVNULL)


def latest(project: Path) -> Path:
    return sorted((project / "outputs" / "sandbox" / RUNBOOK).iterdir())[-1]


# ---- reading the servers independently --------------------------------------------------------


def bind_records(addon) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """The BIND provider's zone by AXFR signed with the sandbox's TSIG key."""
    key = dns.tsig.Key(dnsservers.EXTERNAL_KEY, addon.bind.secret, dnsservers.TSIG_ALGORITHM)
    z = dns.zone.Zone(ZONE + ".")
    q, _ = dns.xfr.make_query(z, keyring=key)
    dns.query.inbound_xfr("127.0.0.1", z, q, port=addon.bind.port, timeout=5)
    out = {}
    for name, node in z.nodes.items():
        fq = name.derelativize(z.origin).to_text(omit_final_dot=True)
        for rds in node.rdatasets:
            out[(fq, dns.rdatatype.to_text(rds.rdtype))] = (rds.ttl, sorted(r.to_text() for r in rds))
    return out


def pdns_records(addon) -> dict[tuple[str, str], tuple[int, list[str]]]:
    req = urllib.request.Request(f"{addon.pdns.api_url}/api/v1/servers/localhost/zones/{ZONE}.",
                                 headers={"X-API-Key": addon.pdns.api_key})
    with urllib.request.urlopen(req, timeout=5) as resp:
        zone = json.load(resp)
    return {(r["name"].rstrip("."), r["type"]): (r["ttl"], sorted(x["content"] for x in r["records"]))
            for r in zone["rrsets"]}


def state(addon) -> dict:
    return {"bind": bind_records(addon), "pdns": pdns_records(addon)}


def owner_of(records: dict, txt_name: str) -> str | None:
    values = records.get((txt_name, "TXT"), (0, []))[1]
    return next((v.split("external-dns/owner=")[1].split(",")[0] for v in values if "owner=" in v), None)


# ---- the tests (the approved run comes last: it changes the providers) --------------------------

EXPECTED = {
    ("api.apps.example.com", "pdns"): "ok", ("api.apps.example.com", "rfc2136"): "stale",
    ("blog.apps.example.com", "pdns"): "ok", ("blog.apps.example.com", "rfc2136"): "missing",
    ("cdn.apps.example.com", "pdns"): "clash", ("cdn.apps.example.com", "rfc2136"): "ok",
    ("docs.apps.example.com", "pdns"): "ok", ("docs.apps.example.com", "rfc2136"): "unowned",
    ("lb.apps.example.com", "pdns"): "ok", ("lb.apps.example.com", "rfc2136"): "ok",
    ("promo.apps.example.com", "pdns"): "orphaned", ("promo.apps.example.com", "rfc2136"): "orphaned",
    ("search.apps.example.com", "pdns"): "ok", ("search.apps.example.com", "rfc2136"): "ttl",
    ("status.apps.example.com", "pdns"): "blocked", ("status.apps.example.com", "rfc2136"): "ok",
    ("www.apps.example.com", "pdns"): "ok", ("www.apps.example.com", "rfc2136"): "ok",
    # zone example.com (provider public, instance external-dns-public): blog.example.com never made it
    **{(h, "public"): "ok" for h in ("assets.shop.example.com", "careers.example.com", "cart.shop.example.com",
                                     "checkout.shop.example.com", "newsletter.example.com", "pay.example.com",
                                     "promo.example.com", "shop.example.com", "www.example.com")},
    ("blog.example.com", "public"): "missing",
}


def test_every_planted_drift_gets_its_verdict(box, dns_addon, monkeypatch):
    for k, v in dns_addon.credentials.items():
        monkeypatch.setenv(k, v)
    cluster = kube.connect(str(box.kubeconfig), "sandbox")
    providers = dnsaudit.connect_providers(stack.env_settings(box)["dns_providers"])
    result = dnsaudit.audit(cluster, providers)
    dnsaudit.answers(result)
    assert {(r.hostname, r.provider): r.verdict for r in result.rows} == EXPECTED
    rows = {(r.hostname, r.provider): r for r in result.rows}
    assert rows[("status.apps.example.com", "pdns")].owner == "staging-cluster"
    assert rows[("api.apps.example.com", "rfc2136")].answer == "A 203.0.113.7"  # asked of the server itself
    assert rows[("blog.apps.example.com", "rfc2136")].answer == "NXDOMAIN"
    assert "--txt-prefix" in rows[("cdn.apps.example.com", "pdns")].detail
    assert "upsert-only" in rows[("promo.apps.example.com", "rfc2136")].detail  # the rfc2136 instance's policy
    matrix = result.matrix().set_index("hostname")
    assert matrix.loc["docs.apps.example.com", "rfc2136"] == "unowned"


def test_cluster_dns_follows_the_services(box, dns_addon):
    """A Service created now is answered by the cluster DNS server once the sync controller has sent it."""
    import uuid

    from runbooks import dns as dnsclient

    server = f"127.0.0.1:{dns_addon.cluster.port}"
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    box.store.create(box.registry.lookup("", "v1", "namespaces"),
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    rt = box.registry.lookup("", "v1", "services")
    box.store.create(rt, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late", "namespace": namespace},
                          "spec": {"type": "ExternalName", "externalName": "db.example.net"}})
    name = f"late.{namespace}.svc.cluster.local"
    wait_for(lambda: dnsclient.query(server, name, "CNAME").values("CNAME") == ["db.example.net."], timeout=20,
             what=f"{name} CNAME in cluster DNS")
    box.store.delete(rt, namespace, "late")
    wait_for(lambda: dnsclient.query(server, name, "CNAME").rcode == "NXDOMAIN", timeout=20,
             what=f"{name} to be gone from cluster DNS")


def test_dry_run_reports_service_discovery_and_drift_and_changes_nothing(project, dns_addon):
    before = state(dns_addon)
    proc = runbooks(project, dns_addon.credentials)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((latest(project) / "summary.json").read_text())
    ids = {f["id"]: f for f in summary["findings"]}
    assert "dns-jvm-cache/apps/Deployment/inventory/inventory" in ids
    assert "-Dsun.net.inetaddr.ttl" in ids["dns-jvm-cache/apps/Deployment/inventory/inventory"]["detail"]
    assert "dns-ndots/apps/Deployment/mailer" in ids
    assert "dns-service-env/apps/Deployment/storefront/sessions" in ids
    assert not [i for i in ids if i.startswith("dns-service-unresolved/")]  # every healthy Service resolves
    # from Prometheus: the pdns instance has failed every sync for 3h (the CNAME/TXT clash), CoreDNS is healthy
    stale = [i for i in ids if i.startswith("externaldns-sync-stale/external-dns/external-dns-pdns-")]
    assert len(stale) == 1 and ids[stale[0]]["severity"] == "critical"
    assert [i for i in ids if i.startswith("externaldns-registry-errors/external-dns/external-dns-pdns-")]
    assert not [i for i in ids if i.startswith(("externaldns-sync-stale/external-dns/external-dns-rfc2136",
                                                 "coredns-"))]
    assert {summary["data_sources"][k]["state"] for k in ("prometheus", "cluster-dns", "dns:pdns", "dns:rfc2136",
                                                         "dns:public")} \
        == {"ok"}
    verdicts = {(i.split("/")[2], i.split("/")[1]): i.split("/")[0].removeprefix("dns-") for i in ids
                if i.split("/")[0] in {f"dns-{v}" for v in dnsaudit.VERDICTS}}
    assert verdicts == {k: v for k, v in EXPECTED.items() if v != "ok"}
    plan = summary["plan"]
    assert plan["applied"] is False and plan["validated"] is True
    assert sorted((c["operation"], c["namespace"], c["name"]) for c in plan["changes"]) == [
        ("create", "public", "blog.example.com CNAME"),
        ("create", "rfc2136", "blog.apps.example.com A"),
        ("delete", "pdns", "promo.apps.example.com"),
        ("delete", "rfc2136", "promo.apps.example.com"),
        ("patch", "rfc2136", "api.apps.example.com A"),
    ]
    assert state(dns_addon) == before
    assert not (latest(project) / "audit.jsonl").exists()
    out = proc.stdout + proc.stderr + (latest(project) / "report.html").read_text()
    for secret in dns_addon.credentials.values():
        assert secret not in out


@pytest.mark.parametrize("case, expect", [
    ("unknown-provider", "type 'route53' is not supported"),
    ("zone-not-served", "does not serve zone 'other.example.org'"),
    ("not-a-hostname", "is not a DNS name"),
    ("wrong-tsig-key", "refused TSIG key 'externaldns-key'"),
    ("wrong-api-key", "refused the API key"),
    ("unreachable", "did not answer"),
])
def test_bad_input_exits_2_naming_the_problem_and_changes_nothing(project, box, dns_addon, case, expect):
    providers = stack.env_settings(box)["dns_providers"]
    params, env = {}, {}
    if case == "unknown-provider":
        params = {"dns_providers": {**providers, "route53": {"type": "route53", "zones": [ZONE],
                                                             "nameserver": "127.0.0.1:53"}}}
    elif case == "zone-not-served":
        params = {"dns_providers": {"rfc2136": {**providers["rfc2136"], "zones": ["other.example.org"]}}}
    elif case == "not-a-hostname":
        params = {"hostnames": ["www.apps.example.com", "bad_host!.example.com"]}
    elif case == "wrong-tsig-key":
        env = {"RFC2136_TSIG_SECRET": base64.b64encode(b"not the key, 32 bytes long......").decode()}
    elif case == "wrong-api-key":
        env = {"PDNS_API_KEY": "not-the-key"}
    elif case == "unreachable":
        params = {"dns_providers": {"rfc2136": {**providers["rfc2136"],
                                                "nameserver": f"127.0.0.1:{dnsservers.free_port()}"}},
                  "query_timeout_seconds": 0.5}
    before = state(dns_addon)
    proc = runbooks(project, dns_addon.credentials, params=params, env_extra=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stdout + proc.stderr
    assert state(dns_addon) == before


def test_approved_plan_fixes_what_we_own_and_nothing_else(project, dns_addon):
    proc = runbooks(project, dns_addon.credentials)
    plan_id = json.loads((latest(project) / "summary.json").read_text())["plan"]["id"]
    before = state(dns_addon)
    proc = runbooks(project, dns_addon.credentials, "--approve", plan_id)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the audit's critical findings (blocked, clash)
    run_dir = latest(project)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["plan"]["applied"] is True and summary["plan"]["id"] == plan_id
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert [a["result"] for a in audit] == ["applied"] * 5
    assert not [f for f in summary["findings"] if f["id"].startswith("dns-verify/") and f["severity"] != "info"]
    severities = {f["id"]: f["severity"] for f in summary["findings"]}
    for fixed in ("dns-missing/public/blog.example.com", "dns-missing/rfc2136/blog.apps.example.com", "dns-stale/rfc2136/api.apps.example.com",
                  "dns-orphaned/pdns/promo.apps.example.com", "dns-orphaned/rfc2136/promo.apps.example.com"):
        assert severities[fixed] == "ok", fixed  # resolved by the plan
    assert severities["dns-blocked/pdns/status.apps.example.com"] == "critical"
    after = state(dns_addon)
    bind, pdns = after["bind"], after["pdns"]
    # fixed, through each provider's protocol
    assert bind[("blog.apps.example.com", "A")][1] == ["203.0.113.10"]
    assert owner_of(bind, "extdns-a-blog.apps.example.com") == "sandbox-prod"
    assert owner_of(bind, "extdns-blog.apps.example.com") == "sandbox-prod"
    assert bind[("api.apps.example.com", "A")][1] == ["203.0.113.10"]
    assert not [k for k in bind if k[0].endswith("promo.apps.example.com")]
    assert not [k for k in pdns if k[0].endswith("promo.apps.example.com")]
    # never touched: another owner's record, a record without owner, and everything else
    untouched = {k for k in before["bind"] if "blog" not in k[0] and "promo" not in k[0]
                 and k != ("api.apps.example.com", "A") and k != ("apps.example.com", "SOA")}
    assert {k: bind[k] for k in untouched} == {k: before["bind"][k] for k in untouched}
    assert pdns[("status.apps.example.com", "A")] == before["pdns"][("status.apps.example.com", "A")]
    assert owner_of(pdns, "a-status.apps.example.com") == "staging-cluster"
    assert bind[("docs.apps.example.com", "A")] == before["bind"][("docs.apps.example.com", "A")]
    assert ("extdns-docs.apps.example.com", "TXT") not in bind
    # a second run plans nothing
    proc = runbooks(project, dns_addon.credentials)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((latest(project) / "summary.json").read_text())
    assert summary["plan"]["changes"] == []
    left = {f["id"].split("/")[0] for f in summary["findings"] if f["id"].startswith("dns-")
            and f["id"].split("/")[0] in {f"dns-{v}" for v in dnsaudit.VERDICTS}}
    assert left == {"dns-blocked", "dns-clash", "dns-unowned", "dns-ttl"}


def test_stale_approval_is_refused_when_the_record_changed_since(project, box, dns_addon):
    """A plan approved before somebody else changed the record gets another id: nothing is applied."""
    from runbooks_sandbox import externaldns

    writer = externaldns.Rfc2136Writer(dns_addon.bind.port, dns_addon.bind.secret)
    writer.replace(ZONE, "api.apps.example.com", "A", 300, ["203.0.113.7"])  # drifts again
    proc = runbooks(project, dns_addon.credentials)
    plan_id = json.loads((latest(project) / "summary.json").read_text())["plan"]["id"]
    writer.replace(ZONE, "api.apps.example.com", "A", 300, ["203.0.113.8"])  # changed after the dry run
    before = state(dns_addon)
    proc = runbooks(project, dns_addon.credentials, "--approve", plan_id)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"approved plan {plan_id} does not match" in proc.stdout + proc.stderr
    assert state(dns_addon) == before
