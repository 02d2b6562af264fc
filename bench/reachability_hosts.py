"""Benchmark: service-reachability with ``-p host all`` on many Ingress hosts, through `runbooks run`.

Starts the default scenario with the ingress endpoint, the real DNS servers (zone example.com
as ExternalDNS wrote it) and the log store in this process, adds N Ingresses (one host each,
all behind one Deployment and Service, one wildcard TLS Secret) in a namespace of their own,
then times, side by side in one run, the trivial one-cell notebook, ``runbooks run
service-reachability -p host www.example.com`` (``--repeat`` pairs; the ratio of medians)
and ``-p host all`` (every hop for every host: one read of the cluster, one DNS question per
host to the provider's authoritative server, one HTTPS request per host through the ingress,
one search of the controller's logs).

    .venv/bin/python bench/reachability_hosts.py [--hosts 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from runbooks import kube
from runbooks_sandbox import pki, stack
from runbooks_sandbox.launch import Sandbox

ROOT = Path(__file__).resolve().parents[1]
NS = "bulk"


def populate(api: kube.Cluster, hosts: int) -> None:
    now = datetime.now(UTC)
    kube.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    ca = pki.issue(None, common_name="bench CA", not_before=now - timedelta(days=1),
                   not_after=now + timedelta(days=365), is_ca=True)
    leaf = pki.issue(ca, common_name="*.bulk.example.com", dns_names=["*.bulk.example.com"],
                     not_before=now - timedelta(days=1), not_after=now + timedelta(days=80))
    kube.request(api, "POST", f"/api/v1/namespaces/{NS}/secrets", body={
        "metadata": {"name": "bulk-tls"}, "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(leaf.cert_pem).decode(), "tls.key": base64.b64encode(leaf.key_pem).decode()}})
    kube.request(api, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", body={
        "metadata": {"name": "site"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "site"}},
                                               "template": {"metadata": {"labels": {"app": "site"}}, "spec": {
                                                   "containers": [{"name": "site", "image": "example.com/site:1",
                                                                   "ports": [{"name": "http",
                                                                              "containerPort": 8080}]}]}}}})
    kube.request(api, "POST", f"/api/v1/namespaces/{NS}/services", body={
        "metadata": {"name": "site"}, "spec": {"selector": {"app": "site"},
                                               "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    for i in range(hosts):
        host = f"site-{i:04d}.bulk.example.com"
        kube.request(api, "POST", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses", body={
            "metadata": {"name": f"site-{i:04d}"},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": [host], "secretName": "bulk-tls"}],
                     "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                         "service": {"name": "site", "port": {"name": "http"}}}}]}}]}})


def timed(root: Path, *args: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run", *args,
                           "--env", "sandbox", "--no-progress"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{args} failed with exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start, proc.returncode, proc.stdout


def cell_durations(root: Path) -> list[str]:
    """papermill's duration of each code cell of the latest service-reachability run."""
    run = sorted((root / "outputs" / "sandbox" / "service-reachability").iterdir())[-1]
    nb = json.loads((run / "service-reachability.ipynb").read_text())
    return [f"{(c['metadata'].get('papermill') or {}).get('duration') or 0:.2f}" for c in nb["cells"]
            if c["cell_type"] == "code"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3, help="pairs of (trivial, one host) runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-reachability-"))
    box = Sandbox(tmp / "sandbox", "default", tick=1.0)
    stack.attach(box, stack.StackOptions(observability=False, logs=True, certificates=True, dns=True))
    box.start()
    try:
        api = kube.connect(str(box.kubeconfig), "sandbox")
        t = time.perf_counter()
        populate(api, args.hosts)
        print(f"created {args.hosts} Ingress hosts in {time.perf_counter() - t:.1f} s", flush=True)
        deadline = time.monotonic() + 60
        while (kube.get_object(api, "deployments", NS, "site").get("status") or {}).get("readyReplicas") != 2:
            if time.monotonic() > deadline:
                raise SystemExit("the bench Deployment did not become ready")
            time.sleep(0.2)
        root = tmp / "project"
        shutil.copytree(ROOT / "notebooks", root / "notebooks")
        shutil.copy(ROOT / "tests" / "fixtures" / "notebooks" / "trivial.ipynb", root / "notebooks")
        (root / "parameters" / "sandbox").mkdir(parents=True)
        (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(stack.env_settings(box)))
        (root / "outputs").mkdir()
        import statistics

        pairs = []
        for _ in range(args.repeat):
            pairs.append((timed(root, "trivial")[0],
                          timed(root, "service-reachability", "-p", "host", "www.example.com")[0]))
        one_cells = cell_durations(root)
        trivial = statistics.median(t for t, _ in pairs)
        one = statistics.median(o for _, o in pairs)
        wall, code, _ = timed(root, "service-reachability", "-p", "host", "all")
        runs = sorted((root / "outputs" / "sandbox" / "service-reachability").iterdir())
        summary = json.loads((runs[-1] / "summary.json").read_text())
        hosts = {f["id"].split("/")[1] for f in summary["findings"] if (f.get("evidence") or {}).get("first_broken")}
        hosts |= {h for f in summary["findings"] if f["id"] == "reachability/reachable" for h in f["evidence"]["hosts"]}
        cells = cell_durations(root)
        print(f"  trivial notebook (median of {args.repeat})          {trivial:6.2f} s")
        print(f"  service-reachability -p host www.example.com {one:6.2f} s (median; {one / trivial:.2f}x the "
              f"trivial notebook; pairs: {', '.join(f'{o / t:.2f}x' for t, o in pairs)})")
        print(f"  service-reachability -p host all          {wall:6.2f} s (exit {code}, "
              f"{len(hosts)} hosts with a verdict)")
        print(f"  code cells, one host (s): {', '.join(one_cells)}")
        print(f"  code cells, all hosts (s): {', '.join(cells)}")
    finally:
        box.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
