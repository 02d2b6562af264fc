"""Benchmark: a real runbook vs a trivial one-cell notebook through the same `runbooks run` path.

Both run headless against the same background sandbox, alternately, so the
difference is what cluster-health itself costs on top of the fixed price of
a run (interpreter, kernel start, papermill, report rendering, secret scan).

    .venv/bin/python bench/runbook_overhead.py [--repeat 3] [--runbook cluster-health]
    .venv/bin/python bench/runbook_overhead.py --runbook incident-investigation
    .venv/bin/python bench/runbook_overhead.py --runbook service-reachability -p host www.example.com
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

import yaml

from runbooks_sandbox import launch, stack

ROOT = Path(__file__).resolve().parents[1]


def project(tmp: Path, state: dict) -> Path:
    """A throwaway project root: the real notebooks plus the trivial fixture, env.yaml at the sandbox."""
    root = tmp / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copy(ROOT / "tests" / "fixtures" / "notebooks" / "trivial.ipynb", root / "notebooks")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    env = stack.env_from_urls(state["kubeconfig"], state.get("services") or {})
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


def timed_run(root: Path, name: str, params: list[list[str]] | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    pairs = [x for name_value in params or [] for x in ("-p", *name_value)]
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run", name,
                           "--env", "sandbox", "--no-progress", *pairs], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{name} failed with exit {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runbook", default="cluster-health")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                    help="a parameter of the benchmarked runbook (e.g. -p host www.example.com)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runbook-"))
    needs_stack = args.runbook != "cluster-health"  # the others read Prometheus, Alertmanager, logs
    print(f"starting a sandbox{' with its full stack' if needs_stack else ''} ...", flush=True)
    state = launch.start_background(tmp / "sandbox", "default", api_only=not needs_stack, wait=300)
    try:
        root = project(tmp, state)
        times: dict[str, list[float]] = {"trivial": [], args.runbook: []}
        for _ in range(args.repeat):
            for name in times:
                wall, code = timed_run(root, name, args.param if name == args.runbook else None)
                times[name].append(wall)
                print(f"  {name:24} {wall:6.2f} s (exit {code})", flush=True)
    finally:
        launch.stop_background(tmp / "sandbox")
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["trivial"])
    print(f"\n`runbooks run` end to end, median of {args.repeat}:")
    for name, rows in times.items():
        med = statistics.median(rows)
        print(f"  {name:24} {med:6.2f} s   {med / base:4.2f}x trivial")
    pairs = [r / t for r, t in zip(times[args.runbook], times["trivial"], strict=True)]
    print(f"  ratio within each pair of runs: {min(pairs):.2f}x to {max(pairs):.2f}x "
          f"(median {statistics.median(pairs):.2f}x)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
