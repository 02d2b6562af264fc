"""Benchmark: cluster-health on a fleet of 20 environments, concurrently vs one after another.

One sandbox (the default scenario, Kubernetes API only) serves the whole fleet: a project in a
temporary directory gets 20 environments `cluster-01` ... `cluster-20`, each with its own
kubeconfig context on that sandbox (`kube_context` = `expected_context` = its name), as 20
clusters would be described. In one run, the same command

    runbooks run cluster-health --env cluster-01 ... --env cluster-20 --parallel N

runs with `--parallel 1` (one after another) and with each concurrent N given (default 8, the
default for 20 environments), after the status quo without fleets: a loop of 20 `runbooks run
cluster-health --env cluster-NN` (all in turn, in each of --repeat rounds). For each: wall time, CPU seconds of
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

from runbooks.processes import descendants  # noqa: E402
from runbooks_sandbox.launch import Sandbox  # noqa: E402

from helpers import fleet_project  # noqa: E402


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *descendants(pid)]


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


def measured(label: str, commands: list[list[str]], env: dict[str, str]) -> dict:
    """Run `commands` one after another; wall, CPU and peak memory of their process trees."""
    before_load = load()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)  # this process serves the sandbox
    peak = [0, 0, 0]  # rss, pss, processes
    codes, outs = [], []
    t = time.perf_counter()
    for argv in commands:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=env)
        done = threading.Event()

        def sample(proc=proc, done=done) -> None:
            while not done.is_set():
                pids = tree(proc.pid)
                rss, pss = memory(pids)
                peak[0], peak[1], peak[2] = max(peak[0], rss), max(peak[1], pss), max(peak[2], len(pids))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        done.set()
        sampler.join()
        codes.append(proc.returncode)
        outs.append((out, err))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    fleet: dict = {}
    for out, _ in outs:
        found = [line.split("fleet: ", 1)[1] for line in out.splitlines() if line.startswith("fleet: ")]
        if found:
            fleet = json.loads(Path(found[0]).read_text())
    statuses = fleet.get("statuses") or {str(c): codes.count(c) for c in sorted(set(codes))}
    return {
        "label": label, "exit": max(codes), "wall_s": wall,
        "cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
        "sandbox_cpu_s": (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime),
        "peak_rss_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20, "peak_processes": peak[2],
        "statuses": statuses, "start_method": fleet.get("start_method"),
        "load_before": before_load, "load_after": load(),
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
        env = dict(os.environ, RUNBOOKS_HOME=str(root))
        base = [sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run", "cluster-health"]
        envs = [x for n in names for x in ("--env", n)]
        modes = [("loop of `runbooks run`", [[*base, "--env", n, "--no-progress"] for n in names]),
                 ("fleet --parallel 1", [[*base, *envs, "--parallel", "1"]])]
        modes += [(f"fleet --parallel {p}", [[*base, *envs, "--parallel", str(p)]]) for p in concurrent]
        for _ in range(args.repeat):
            for label, commands in modes:
                row = measured(label, commands, env)
                rows.append(row)
                print(f"{label:24} {row['wall_s']:6.1f} s wall, {row['cpu_s']:6.1f} s CPU "
                      f"(+ sandbox {row['sandbox_cpu_s']:.1f} s), peak {row['peak_rss_mb']:5.0f} MB RSS / "
                      f"{row['peak_pss_mb']:5.0f} MB PSS in {row['peak_processes']} processes, "
                      f"{row['statuses']}, load {row['load_before']} -> {row['load_after']}", flush=True)
    finally:
        box.stop()

    def median(label: str) -> float:
        walls = sorted(r["wall_s"] for r in rows if r["label"] == label)
        return walls[len(walls) // 2]

    loop, serial = median(modes[0][0]), median(modes[1][0])
    for label, _ in modes[2:]:
        wall = median(label)
        print(f"{args.envs} environments: {label} {wall:.1f} s is {loop / wall:.2f}x faster than a loop of "
              f"`runbooks run` ({loop:.1f} s) and {serial / wall:.2f}x faster than the fleet one after another "
              f"({serial:.1f} s)", flush=True)
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
