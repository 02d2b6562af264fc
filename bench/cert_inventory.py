"""Benchmark: certificate inventory of 10,000 TLS Secrets, side by side with the shell pipeline.

1. ``runbooks.rotation.inventory``: raw JSON pages (limit/continue), each Secret's
   whole chain parsed with ``cryptography``, the key checked against the
   certificate, chain order/completeness checked, findings computed;
2. what an SRE would otherwise write::

       kubectl get secrets -A --field-selector type=kubernetes.io/tls -o json > secrets.json
       jq -r '.items[].data["tls.crt"]' secrets.json | while read -r crt; do
         echo "$crt" | base64 -d | openssl x509 -enddate -noout
       done

   (which only reads the first certificate's end date).

Both run as child processes against the same sandbox (started in this
process, with an empty scenario and N generated TLS Secrets: leaf + intermediate,
EC and RSA keys), so wall time and peak RSS (``ru_maxrss`` of the child; for the
pipeline, of its largest process) are comparable. Both must report the same
number of certificates and the same expiry dates.

    .venv/bin/python bench/cert_inventory.py [--secrets 10000] [--repeat 3] [--pipeline-repeat 1]

Goal (issue 5): at least 10x faster than the pipeline, under 3 s and 500 MB.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from runbooks_sandbox import pki
from runbooks_sandbox.launch import Sandbox

NAMESPACE = "bulk-tls"

INVENTORY = """
import json, sys, time
t0 = time.perf_counter()
from runbooks import kube, rotation
c = kube.connect(sys.argv[1], "sandbox")
t = time.perf_counter()
inv = rotation.inventory(c, [sys.argv[2]])
findings = inv.findings()
dates = sorted(s.leaf.not_after.strftime("%Y-%m-%dT%H:%M:%S") for s in inv.secrets.values() if s.leaf)
print(json.dumps({"count": len(inv.secrets), "findings": len(findings), "seconds": time.perf_counter() - t,
                  "with_imports": time.perf_counter() - t0, "dates": dates}))
"""

PIPELINE = r"""
set -euo pipefail
kubectl get secrets -A --field-selector type=kubernetes.io/tls -o json > "$WORK/secrets.json"
EXTRACT
while read -r crt; do
  echo "$crt" | base64 -d | openssl x509 -enddate -noout
done < "$WORK/crts.txt"
"""
JQ = """jq -r '.items[].data["tls.crt"]' "$WORK/secrets.json" > "$WORK/crts.txt" """
PY = """python3 -c 'import json,sys; [print(i["data"]["tls.crt"]) for i in json.load(open(sys.argv[1]))["items"]]' \
"$WORK/secrets.json" > "$WORK/crts.txt" """


def populate(box: Sandbox, count: int) -> None:
    """`count` TLS Secrets straight into the store: real chains, 1 in 4 with an RSA key."""
    now = datetime.now(UTC)
    root = pki.new_ca("Bench Root", not_before=now - timedelta(days=400), not_after=now + timedelta(days=3650))
    inter = pki.issue(root, common_name="Bench Intermediate", not_before=now - timedelta(days=300),
                      not_after=now + timedelta(days=1000), key_type="ec", is_ca=True, path_length=0)
    rsa_keys = [pki.pooled_key("rsa", 2048, slot) for slot in range(8)]
    ns_rt = box.registry.lookup("", "v1", "namespaces")
    secret_rt = box.registry.lookup("", "v1", "secrets")
    box.store.create(ns_rt, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for i in range(count):
        host = f"svc-{i:05d}.bench.example.com"
        issued = now - timedelta(days=i % 89, hours=i % 24)
        key = rsa_keys[i % len(rsa_keys)] if i % 4 == 0 else pki.generate_key("ec")
        leaf = pki.issue(inter, common_name=host, dns_names=[host], not_before=issued,
                         not_after=issued + timedelta(days=90), key=key)
        box.store.create(secret_rt, {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": f"tls-{i:05d}", "namespace": NAMESPACE, "labels": {"app": f"svc-{i % 50}"}},
            "data": {"tls.crt": base64.b64encode(leaf.cert_pem + inter.cert_pem).decode(),
                     "tls.key": base64.b64encode(leaf.key_pem).decode(),
                     "ca.crt": base64.b64encode(root.cert_pem).decode()}})


def run_child(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB (ru_maxrss: the child's largest process) and stdout of one child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed: {err.decode()[-800:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secrets", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of the inventory (the best wall time is reported)")
    ap.add_argument("--pipeline-repeat", type=int, default=1, help="runs of the shell pipeline (slow)")
    ap.add_argument("--skip-pipeline", action="store_true", help="only run the inventory")
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    box = Sandbox(state / "sandbox", None, tick=5.0)
    try:
        print(f"starting an empty sandbox and adding {args.secrets} TLS Secrets ...", flush=True)
        t = time.perf_counter()
        box.start()
        populate(box, args.secrets)
        print(f"  ready in {time.perf_counter() - t:.1f}s at {box.url}", flush=True)
        env = dict(os.environ, KUBECONFIG=str(box.kubeconfig), KUBECACHEDIR=str(state / "kube-cache"),
                   WORK=str(state))
        ours = [sys.executable, "-c", INVENTORY, str(box.kubeconfig), NAMESPACE]
        results: dict[str, list[tuple[float, float]]] = {"runbooks.rotation.inventory": []}
        inventory_seconds: list[float] = []
        dates_ours: list[str] = []
        for _ in range(args.repeat):
            wall, rss, out = run_child(ours, env)
            data = json.loads(out)
            results["runbooks.rotation.inventory"].append((wall, rss))
            inventory_seconds.append(data["seconds"])
            dates_ours = data["dates"]
            assert data["count"] == args.secrets, data["count"]
        pipeline_name = "kubectl -o json + openssl x509 per certificate"
        dates_pipe: list[str] = []
        if not args.skip_pipeline:
            if not (shutil.which("kubectl") and shutil.which("openssl")):
                raise SystemExit("kubectl and openssl are needed for the comparison (or pass --skip-pipeline)")
            script = PIPELINE.replace("EXTRACT", JQ if shutil.which("jq") else PY)
            results[pipeline_name] = []
            for _ in range(args.pipeline_repeat):
                wall, rss, out = run_child(["bash", "-c", script], env)
                results[pipeline_name].append((wall, rss))
                dates_pipe = sorted(datetime.strptime(line.split("=", 1)[1].strip(), "%b %d %H:%M:%S %Y %Z")
                                    .strftime("%Y-%m-%dT%H:%M:%S") for line in out.splitlines() if line)
            if dates_pipe != dates_ours:
                raise SystemExit("the two ways disagree on the expiry dates")
        print(f"\n{args.secrets} TLS Secrets (best of {args.repeat} inventory runs, "
              f"{args.pipeline_repeat} pipeline run(s)):")
        print(f"{'way':52} {'wall s':>8} {'peak RSS MiB':>13}")
        best = {}
        for name, runs in results.items():
            wall = min(w for w, _ in runs)
            rss = max(r for _, r in runs)
            best[name] = wall
            print(f"{name:52} {wall:8.2f} {rss:13.0f}")
        print(f"  (inventory itself, without interpreter start and imports: "
              f"{statistics.median(inventory_seconds):.2f} s; {len(dates_ours)} certificates, "
              f"same expiry dates as the pipeline: {bool(dates_pipe) and dates_pipe == dates_ours})")
        if pipeline_name in best:
            print(f"  speed-up: {best[pipeline_name] / best['runbooks.rotation.inventory']:.1f}x")
    finally:
        box.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
