"""Benchmark: list 20,000 pods three ways, side by side in one run.

1. runbooks.kube.iter_objects: raw JSON pages (limit/continue), no model objects;
2. the official client's model list (list_pod_for_all_namespaces), what most scripts do;
3. `kubectl get pods -A -o json`.

Each runs in its own child process against the same background sandbox, so
wall time and peak RSS (ru_maxrss of that child) are comparable.

    .venv/bin/python bench/list_pods.py [--pods 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runbooks_sandbox import launch

RAW = """
import sys, time
from runbooks import kube
c = kube.connect(sys.argv[1], "sandbox")
t = time.perf_counter()
n = sum(1 for _ in kube.iter_objects(c, "pods"))
print(n, time.perf_counter() - t)
"""

MODEL = """
import sys, time
from runbooks import kube
c = kube.connect(sys.argv[1], "sandbox")
t = time.perf_counter()
n = len(c.core.list_pod_for_all_namespaces().items)
print(n, time.perf_counter() - t)
"""


def measure(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and stdout of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err[-500:]}")
    return wall, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    print(f"starting a sandbox with {args.pods} extra pods ...", flush=True)
    t = time.perf_counter()
    info = launch.start_background(state, "default", bulk_pods=args.pods, wait=600, api_only=True)
    print(f"  ready in {time.perf_counter() - t:.1f}s at {info['url']}")
    kubeconfig = info["kubeconfig"]
    env = dict(os.environ, KUBECONFIG=kubeconfig, KUBECACHEDIR=str(state / "kube-cache"))
    ways = {
        "raw lister (runbooks.kube)": [sys.executable, "-c", RAW, kubeconfig],
        "client model list": [sys.executable, "-c", MODEL, kubeconfig],
    }
    if shutil.which("kubectl"):
        ways["kubectl get pods -A -o json"] = ["sh", "-c", "kubectl get pods -A -o json | wc -c"]
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in ways}
    try:
        for _ in range(args.repeat):
            for name, cmd in ways.items():
                wall, rss, out = measure(cmd, env)
                fields = out.split()
                # Python children report the listing alone (after interpreter start and imports);
                # kubectl's process is the listing
                listing = float(fields[1]) if len(fields) == 2 else wall
                results[name].append((listing, wall, rss))
    finally:
        launch.stop_background(state)
        shutil.rmtree(state, ignore_errors=True)
    print(f"\nlisting all pods ({args.pods} + scenario), median of {args.repeat}:")
    print(f"{'method':32} {'list s':>7} {'process s':>10} {'peak MiB':>9}  vs raw")
    base = statistics.median(x[0] for x in results["raw lister (runbooks.kube)"])
    for name, rows in results.items():
        listing = statistics.median(x[0] for x in rows)
        wall = statistics.median(x[1] for x in rows)
        rss = max(x[2] for x in rows)
        print(f"{name:32} {listing:7.2f} {wall:10.2f} {rss:9.0f}  {listing / base:5.1f}x")


if __name__ == "__main__":
    main()
