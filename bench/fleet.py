"""Benchmark: cluster-health on a fleet of 20 environments, concurrently vs one after another.

One sandbox (the default scenario, Kubernetes API only) serves the whole fleet: a project in a
temporary directory gets 20 environments `cluster-01` ... `cluster-20`, each with its own
kubeconfig context on that sandbox (`kube_context` = `expected_context` = its name), as 20
clusters would be described. In one run, the same command

    runbooks run cluster-health --env cluster-01 ... --env cluster-20 --parallel N

runs with `--parallel 1` (one after another) and with each concurrent N given (default 8, the
default for 20 environments), alternately when --repeat > 1. For each: wall time, CPU seconds of
the whole process tree (runs and kernels) and of the sandbox, peak memory of the process tree (sum of RSS and of
PSS, sampled every 0.2 s) and the load average before and after.

    .venv/bin/python bench/fleet.py [--envs 20] [--parallel 8 --parallel 20] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from runbooks_sandbox.launch import Sandbox  # noqa: E402

from helpers import fleet_project  # noqa: E402


def tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [pid], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def memory(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_fleet(root: Path, names: list[str], parallel: int) -> dict:
    argv = [sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run", "cluster-health",
            *[x for n in names for x in ("--env", n)], "--parallel", str(parallel)]
    before_load = load()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)  # this process serves the sandbox
    peak = [0, 0, 0]  # rss, pss, processes
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, RUNBOOKS_HOME=str(root)))
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = tree(proc.pid)
            rss, pss = memory(pids)
            peak[0], peak[1], peak[2] = max(peak[0], rss), max(peak[1], pss), max(peak[2], len(pids))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    fleet_json = next((line.split("fleet: ", 1)[1] for line in out.splitlines() if line.startswith("fleet: ")), None)
    fleet = json.loads(Path(fleet_json).read_text()) if fleet_json else {}
    return {
        "parallel": parallel, "exit": proc.returncode, "wall_s": wall,
        "cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
        "sandbox_cpu_s": (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime),
        "peak_rss_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20, "peak_processes": peak[2],
        "statuses": fleet.get("statuses"), "load_before": before_load, "load_after": load(),
        "stderr_tail": err.strip().splitlines()[-1:] if proc.returncode not in (0, 1) else [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=20)
    ap.add_argument("--parallel", type=int, action="append", default=None,
                    help="concurrent runs to compare with one after another (repeatable; default 8)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    concurrent = args.parallel or [8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    names = [f"cluster-{i:02d}" for i in range(1, args.envs + 1)]
    print(f"cores: {os.cpu_count()}; load average at start: {load()}", flush=True)
    box = Sandbox(tmp / "sandbox", "default", tick=1.0).start()
    rows = []
    try:
        root = fleet_project(tmp / "project", box, names)
        for _ in range(args.repeat):
            for parallel in [1, *concurrent]:
                row = run_fleet(root, names, parallel)
                rows.append(row)
                print(f"parallel {row['parallel']:>2}: {row['wall_s']:7.1f} s wall, {row['cpu_s']:7.1f} s CPU "
                      f"(+ sandbox {row['sandbox_cpu_s']:.1f} s), "
                      f"peak {row['peak_rss_mb']:6.0f} MB RSS / {row['peak_pss_mb']:6.0f} MB PSS in "
                      f"{row['peak_processes']} processes, exit {row['exit']} {row['statuses']}, "
                      f"load {row['load_before']} -> {row['load_after']} {row['stderr_tail']}", flush=True)
    finally:
        box.stop()
    serial = [r["wall_s"] for r in rows if r["parallel"] == 1]
    base = sorted(serial)[len(serial) // 2]
    for parallel in concurrent:
        walls = sorted(r["wall_s"] for r in rows if r["parallel"] == parallel)
        wall = walls[len(walls) // 2]
        print(f"{args.envs} environments: one after another {base:.1f} s, --parallel {parallel} {wall:.1f} s: "
              f"{base / wall:.2f}x faster", flush=True)
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
