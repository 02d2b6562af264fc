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
from runbooks_sandbox import stack
from runbooks_sandbox.ingress import IngressEndpoint
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]

# host → (first broken hop, its object); None: reachable
PLANTED = {
    "www.example.com": None,
    "intranet.example.com": ("ingress", "IngressClass/nginx-internal"),
    "promo.example.com": ("ingress", "Ingress/web/promo"),
    "checkout.shop.example.com": ("tls", "Secret/shop/checkout-tls"),
    "newsletter.example.com": ("backend", "Service/web/newsletter"),
    "careers.example.com": ("backend", "Service/web/careers"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The default scenario with the ingress endpoint, and a project root whose env.yaml points at it."""
    tmp = tmp_path_factory.mktemp("reachability")
    box = Sandbox(tmp / "sandbox", "default", tick=0.5)
    box.add(IngressEndpoint(box, poll=0.1))
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
    assert ids["reachability/dns-not-configured"]["severity"] == "info"
    assert "not configured in env sandbox" in ids["reachability/dns-not-configured"]["detail"]
    if expected is None:
        assert ids[f"reachability/{host}"]["severity"] == "ok"
    html = (Path(summary["_dir"]) / "report.html").read_text()
    assert "The chain, hop by hop" in html and "import runbooks" not in html


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
    ingress_hosts = {"shop.example.com", "cart.shop.example.com", "assets.shop.example.com", "blog.example.com",
                     "pay.example.com", *PLANTED}
    listed = {f["id"].split("/")[1] for f in summary["findings"]
              if f["severity"] == "ok" or (f.get("evidence") or {}).get("first_broken")}
    assert ingress_hosts <= listed  # few hosts: one finding per reachable host


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
