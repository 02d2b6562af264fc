"""service-reachability end to end, headless, against the planted hosts of the default scenario."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runbooks import kube
from runbooks_sandbox import dnsservers, stack
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]
MISSING_DNS = dnsservers.missing_binaries()

# host → (first broken hop, its object); None: reachable
PLANTED = {
    "www.example.com": None,
    "blog.example.com": ("dns", "DNS/blog.example.com"),
    "intranet.example.com": ("ingress", "IngressClass/nginx-internal"),
    "promo.example.com": ("ingress", "Ingress/web/promo"),
    "checkout.shop.example.com": ("tls", "Secret/shop/checkout-tls"),
    "newsletter.example.com": ("backend", "Service/web/newsletter"),
    "careers.example.com": ("backend", "Service/web/careers"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The default scenario with the ingress endpoint, the real DNS servers (ExternalDNS's records
    of zone example.com, blog.example.com missing) and the log store, and a project root whose
    env.yaml points at them (the providers as `runbooks sandbox env` writes them)."""
    if MISSING_DNS:
        if os.environ.get("RUNBOOKS_REQUIRE_DNS") == "1":
            pytest.fail("RUNBOOKS_REQUIRE_DNS=1 but: " + "; ".join(MISSING_DNS))
        pytest.skip("; ".join(MISSING_DNS))
    tmp = tmp_path_factory.mktemp("reachability")
    box = Sandbox(tmp / "sandbox", "default", tick=0.5)
    stack.attach(box, stack.StackOptions(observability=False, logs=True, certificates=True, dns=True))
    box.start()
    api = kube.connect(str(box.kubeconfig), "sandbox")

    def settled():  # the planted Deployments have their ready pods and endpoints
        return all((kube.get_object(api, "deployments", "web", d).get("status") or {}).get("readyReplicas") == n
                   for d, n in (("www", 2), ("newsletter", 1)))

    wait_for(settled, timeout=60, what="the web Deployments to be ready")
    root = tmp / "project"
    (root / "parameters" / "sandbox").mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    env = {"description": "reachability tests", **stack.env_settings(box)}
    assert "public" in env["dns_providers"] and "dns_resolver" not in env
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    yield root
    box.stop()


def run(root: Path, *params: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    pairs = [x for i in range(0, len(params), 2) for x in ("-p", params[i], params[i + 1])]
    out = root / "outputs" / "sandbox" / "service-reachability"
    before = set(out.iterdir()) if out.exists() else set()
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run",
                           "service-reachability", "--env", "sandbox", "--no-progress", *pairs],
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    new = sorted(set(out.iterdir()) - before) if out.exists() else []
    summary = json.loads((new[-1] / "summary.json").read_text()) if new else None
    if summary is not None:
        summary["_dir"] = str(new[-1])
    return proc, summary


def first_broken(summary: dict, host: str) -> tuple[str, str] | None:
    lead = [f for f in summary["findings"] if f["id"].startswith(f"reachability/{host}/")
            and (f.get("evidence") or {}).get("first_broken")]
    assert len(lead) <= 1, lead
    return (lead[0]["evidence"]["hop"], lead[0]["resource"]) if lead else None


@pytest.mark.parametrize("host", sorted(PLANTED))
def test_each_planted_host_names_its_first_broken_hop(project, host):
    proc, summary = run(project, "host", host)
    expected = PLANTED[host]
    assert proc.returncode == (0 if expected is None else 1), proc.stdout + proc.stderr
    assert first_broken(summary, host) == expected
    ids = {f["id"]: f for f in summary["findings"]}
    assert "reachability/dns-not-configured" not in ids  # the providers of env.yaml are asked
    if expected is None:
        assert ids[f"reachability/{host}"]["severity"] == "ok"
    html = (Path(summary["_dir"]) / "report.html").read_text()
    assert "The chain, hop by hop" in html and "import runbooks" not in html


def test_dns_hop_asks_the_providers_authoritative_server(project):
    """www's record is ExternalDNS's CNAME to the Ingress's load balancer, asked of the BIND server
    that serves example.com; blog's is missing there: its own verdict, with dns-audit as the next step."""
    _, ok = run(project, "host", "www.example.com")
    www = next(f for f in ok["findings"] if f["id"] == "reachability/www.example.com")
    assert "DNS: www.example.com → a4e1b2c3d4e5f60718293a4b5c6d7e8f-1a2b3c4d5e6f7a8b.elb.eu-west-1.amazonaws.com " \
           "(public (127.0.0.1:" in www["detail"]
    proc, summary = run(project, "host", "blog.example.com")
    assert proc.returncode == 1
    f = next(f for f in summary["findings"] if f["id"] == "reachability/blog.example.com/dns-missing")
    assert f["severity"] == "critical" and f["evidence"]["first_broken"]
    assert "authoritative server public (127.0.0.1:" in f["detail"]
    assert "has no record for blog.example.com (NXDOMAIN)" in f["detail"]
    assert f["evidence"]["problem"] == "missing" and f["evidence"]["authoritative"][0].startswith("public (")
    assert f["evidence"]["next"] == "runbooks run dns-audit --env sandbox -p hostnames '[\"blog.example.com\"]'"
    # the other hops are green: only DNS is wrong
    assert [x for x in summary["findings"] if x["severity"] == "critical"] == [f]


def test_the_controllers_logged_503s_for_a_host_without_endpoints(project):
    """careers has no ready endpoint: ingress-nginx's access log (default log-format-upstream) holds
    its 503s for upstream web-careers-http, and the controller warns about the Service."""
    proc, summary = run(project, "host", "careers.example.com", "log_lookback", "24h")
    assert proc.returncode == 1
    probe = next(f for f in summary["findings"] if f["id"] == "reachability/careers.example.com/probe")
    logged = probe["evidence"]["upstream_errors"]
    assert logged["upstream"] == "web-careers-http"
    assert logged["responses_5xx"] > 0 and set(logged["statuses"]) == {"503"}
    assert logged["no_endpoints"] > 0
    assert "[web-careers-http] [] - - - -" in logged["example"]
    assert "the controller logged" in probe["detail"] and "for upstream web-careers-http (" in probe["detail"]
    assert summary["data_sources"]["logs"]["state"] == "ok"
    _, ok = run(project, "host", "www.example.com", "log_lookback", "24h")
    www = next(f for f in ok["findings"] if f["id"] == "reachability/www.example.com")
    assert "no controller errors logged for upstream web-www-http in 24h" in www["detail"]


def test_later_hops_are_still_checked_and_the_next_runbook_is_named(project):
    proc, summary = run(project, "host", "careers.example.com")
    assert proc.returncode == 1
    broken = {f["evidence"]["hop"]: f for f in summary["findings"] if f["id"].startswith("reachability/careers")
              and f["severity"] == "critical"}
    assert set(broken) == {"backend", "probe"}  # the live request gets the ingress's 503
    assert "503" in broken["probe"]["detail"]
    assert broken["backend"]["evidence"]["next"] == \
        "runbooks run incident-investigation --env sandbox -p namespace web -p service careers"
    _, tls = run(project, "host", "checkout.shop.example.com")
    lead = next(f for f in tls["findings"] if (f.get("evidence") or {}).get("first_broken"))
    assert lead["evidence"]["next"] == \
        "runbooks run certificate-rotation --env sandbox -p certificates '[\"shop/checkout-tls\"]'"
    assert "expired" in lead["detail"]


def test_all_hosts_exit_1_with_a_verdict_for_every_host(project):
    proc, summary = run(project, "host", "all")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for host, expected in PLANTED.items():
        assert first_broken(summary, host) == expected, host
    ingress_hosts = {"shop.example.com", "cart.shop.example.com", "assets.shop.example.com", "pay.example.com",
                     *PLANTED}
    listed = {f["id"].split("/")[1] for f in summary["findings"]
              if f["severity"] == "ok" or (f.get("evidence") or {}).get("first_broken")}
    assert ingress_hosts <= listed  # few hosts: one finding per reachable host
    # apps.example.com's drift (dns-audit's plants), seen from the hosts: the BIND provider still
    # answers the old load balancer for api, and has no record for blog
    ids = {f["id"]: f for f in summary["findings"]}
    mismatch = ids["reachability/api.apps.example.com/dns-mismatch"]
    assert "authoritative server rfc2136 (127.0.0.1:" in mismatch["detail"]
    assert "answers 203.0.113.7, not the Ingress's load balancer 203.0.113.10" in mismatch["detail"]
    assert mismatch["evidence"]["problem"] == "mismatch" and mismatch["evidence"]["first_broken"]
    assert ids["reachability/blog.apps.example.com/dns-missing"]["evidence"]["first_broken"]


def test_a_host_no_ingress_serves_is_a_finding(project):
    proc, summary = run(project, "host", "nothere.example.com")
    assert proc.returncode == 1
    f = next(f for f in summary["findings"] if f["id"] == "reachability/nothere.example.com/no-ingress")
    assert f["severity"] == "critical" and "no Ingress has a rule for host nothere.example.com" in f["detail"]
    assert f["evidence"]["first_broken"]


@pytest.mark.parametrize(("name", "value"), [("host", "bad_host!.example.com"), ("host", "localhost"),
                                              ("path", "api"), ("path", "/a b")])
def test_bad_input_exits_2_naming_it(project, name, value):
    other = ("path", "/") if name == "host" else ("host", "www.example.com")
    proc, summary = run(project, name, value, *other)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert summary is None
    assert f"parameter '{name}'" in proc.stderr and repr(value) in proc.stderr


def test_host_is_required(project):
    proc, _ = run(project)
    assert proc.returncode == 2
    assert "Required parameter 'host' not supplied" in proc.stderr
