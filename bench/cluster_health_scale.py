"""Benchmark: cluster-health at 150,000 pods against `kubectl get pods -A -o json`, in one run.

For each size, a background sandbox (API only) holds that many extra pods in workloads of 20,
spread over 1,000 namespaces and 5,000 extra nodes, with 1% of them crash-looping. Then:

1. `runbooks run cluster-health` headless, end to end (kernel start, every check, the HTML
   report, the secret scan): wall time, the kernel's peak RSS (VmHWM of the ipykernel
   process, sampled from /proc until it exits), the size of report.html and of the CSV;
2. `kubectl get pods -A -o json`: wall time and peak RSS (ru_maxrss of that child).

The sandbox's own start-up time and memory are printed too; they are not the product's goal.
Goals: cluster-health at most 1/5 of kubectl's time, the kernel at most 400 MiB, the report
at most 5 MB, and time growing linearly with pods while memory stays flat.

    .venv/bin/python bench/cluster_health_scale.py [--sizes 20000,50000,100000,150000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from runbooks_sandbox import launch, stack

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def project(tmp: Path, kubeconfig: str) -> Path:
    """A throwaway project root: the real notebooks, env.yaml pointing at the sandbox."""
    root = tmp / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    env = stack.env_from_urls(kubeconfig, {})
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class KernelPeak(threading.Thread):
    """Samples VmHWM (the kernel's own high-water mark) of every ipykernel below `pid` until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for p in _descendants(self.pid):
                try:
                    cmd = Path(f"/proc/{p}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"ipykernel" in cmd:
                    self.peak_kib = max(self.peak_kib, _status_kib(p, "VmHWM"))
            self.done.wait(0.1)


def run_cluster_health(root: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run",
                             "cluster-health", "--env", "sandbox", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    sampler = KernelPeak(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"cluster-health failed with exit {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}")
    run_dir = sorted((root / "outputs" / "sandbox" / "cluster-health").iterdir())[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    csv_file = run_dir / "unhealthy-pods.csv"
    return {"wall": wall, "kernel_mib": sampler.peak_kib / 1024, "exit": proc.returncode,
            "report_mb": (run_dir / "report.html").stat().st_size / 1e6,
            "csv_rows": max(0, sum(1 for _ in csv_file.open()) - 1) if csv_file.exists() else 0,
            "findings": len(summary["findings"]),
            "crash_title": next((f["title"] for f in summary["findings"]
                                 if f["id"] == "pod-crashloopbackoff/more"), "")}


def run_kubectl(env: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(["kubectl", "get", "pods", "-A", "-o", "json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    size = 0
    assert proc.stdout is not None
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"kubectl failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "json_mb": size / 1e6}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, busy: float = 0.3, limit: float = 300) -> float:
    """Wait until the sandbox's controllers have settled (under `busy` of a core over 2 s); seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        before = _cpu_seconds(pid)
        time.sleep(2)
        if (_cpu_seconds(pid) - before) / 2 < busy:
            break
    return time.perf_counter() - start


def one_size(pods: int, namespaces: int, nodes: int, unhealthy: float, tmp: Path) -> dict:
    state = tmp / f"sandbox-{pods}"
    t = time.perf_counter()
    info = launch.start_background(state, "default", bulk_pods=pods, bulk_namespaces=namespaces,
                                   bulk_nodes=nodes, bulk_unhealthy=unhealthy, wait=3600, api_only=True)
    sandbox = {"start": time.perf_counter() - t}
    sandbox["settle"] = wait_quiet(info["pid"])
    sandbox["rss_mib"] = _status_kib(info["pid"], "VmRSS") / 1024
    try:
        root = project(tmp / f"run-{pods}", info["kubeconfig"])
        env = dict(os.environ, KUBECONFIG=info["kubeconfig"], KUBECACHEDIR=str(state / "kube-cache"))
        subprocess.run(["kubectl", "get", "ns", "-o", "name"], env=env, capture_output=True, check=False)
        health = run_cluster_health(root)
        kubectl = run_kubectl(env) if shutil.which("kubectl") else None
        sandbox["hwm_mib"] = _status_kib(info["pid"], "VmHWM") / 1024
    finally:
        launch.stop_background(state)
    return {"pods": pods, "sandbox": sandbox, "health": health, "kubectl": kubectl}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,50000,100000,150000", help="extra pods, comma-separated")
    ap.add_argument("--namespaces", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--unhealthy", type=float, default=1.0, help="percent of the pods that crash-loop")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-health-scale-"))
    rows = []
    try:
        for pods in (int(s) for s in args.sizes.split(",")):
            print(f"{pods} pods over {args.namespaces} namespaces and {args.nodes} nodes, "
                  f"{args.unhealthy:g}% unhealthy ...", flush=True)
            r = one_size(pods, args.namespaces, args.nodes, args.unhealthy, tmp)
            h, k, s = r["health"], r["kubectl"], r["sandbox"]
            print(f"  sandbox: ready in {s['start']:.0f} s (+{s['settle']:.0f} s to settle), {s['rss_mib']:.0f} MiB RSS "
                  f"(peak {s.get('hwm_mib', 0):.0f} MiB)")
            print(f"  cluster-health: {h['wall']:.1f} s, kernel peak {h['kernel_mib']:.0f} MiB, report "
                  f"{h['report_mb']:.2f} MB, {h['findings']} findings, {h['csv_rows']} CSV rows (exit {h['exit']})")
            if h["crash_title"]:
                print(f"    {h['crash_title']}")
            if k:
                print(f"  kubectl get pods -A -o json: {k['wall']:.1f} s, {k['rss_mib']:.0f} MiB, "
                      f"{k['json_mb']:.0f} MB of JSON")
            rows.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'pods':>8} {'health s':>9} {'kernel MiB':>11} {'report MB':>10} {'kubectl s':>10} "
          f"{'kubectl MiB':>12} {'time ratio':>11}   goals: <= 0.20, <= 400 MiB, <= 5 MB")
    for r in rows:
        h, k = r["health"], r["kubectl"] or {"wall": float("nan"), "rss_mib": float("nan")}
        print(f"{r['pods']:>8} {h['wall']:>9.1f} {h['kernel_mib']:>11.0f} {h['report_mb']:>10.2f} "
              f"{k['wall']:>10.1f} {k['rss_mib']:>12.0f} {h['wall'] / k['wall']:>11.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
