"""Benchmark: plan a Helm upgrade three ways, side by side in one run, and time the Helm calls.

Against an in-process sandbox with the shipped chart installed as release
``bench`` (the upgrade changes the image and a config value):

1. ``deploy.release_changes``: what the runbook's plan does (``helm upgrade
   --dry-run=server`` + one server-side apply dry run and a field diff per object);
2. ``helm upgrade --install --dry-run=server`` alone (validates, but says nothing
   about what changes);
3. ``kubectl diff --server-side`` of the same rendered manifest (the usual
   manual check; needs kubectl on PATH).

Then the writes the runbook makes: ``helm upgrade --wait=watcher`` (rollout of
2 pods) and ``helm rollback --wait=watcher``.

    .venv/bin/python bench/provision_plan.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from runbooks import deploy, kube
from runbooks_sandbox.launch import Sandbox

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "web-service"


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median, min) seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        box = Sandbox(Path(tmp) / "sandbox", "default", tick=1.0).start()
        try:
            run(box, Path(tmp), args.repeat)
        finally:
            box.stop()


def run(box: Sandbox, tmp: Path, repeat: int) -> None:
    cluster = kube.connect(str(box.kubeconfig), "sandbox")
    helm = deploy.Helm(str(box.kubeconfig), "sandbox")
    values = {"image": {"repository": "registry.example.com/bench", "tag": "1.0.0", "digest": ""},
              "replicaCount": 2, "containerPort": 8080, "config": {"MODE": "a"},
              "ingress": {"enabled": True, "host": "bench.example.com", "className": "nginx",
                          "clusterIssuer": "letsencrypt-prod"}}
    spec = deploy.ReleaseSpec("bench", "bench", str(CHART), values, timeout=120)
    helm.run("upgrade", "--install", *spec.chart_args(), "--create-namespace", "--wait=watcher",
             "--timeout", "120s", stdin=spec.values_document(), timeout=180)
    new = deploy.ReleaseSpec("bench", "bench", str(CHART), {
        **values, "image": {**values["image"], "tag": "1.1.0"}, "config": {"MODE": "b"}}, timeout=120)
    changes = deploy.release_changes(cluster, helm, new)
    rows = [("runbook plan (helm dry-run + SSA dry runs + diff)",
             *timed(lambda: deploy.release_changes(cluster, helm, new), repeat))]
    rows.append(("helm upgrade --install --dry-run=server",
                 *timed(lambda: helm.run("upgrade", "--install", *new.chart_args(), "--dry-run=server",
                                         stdin=new.values_document(), parse=True), repeat)))
    manifest = tmp / "rendered.yaml"
    objs = [deploy.as_helm_applies(o, "bench", "bench") for o in deploy.render(helm, new)]
    manifest.write_text(yaml.safe_dump_all(objs))
    if shutil.which("kubectl"):
        def kdiff() -> None:
            proc = subprocess.run(["kubectl", "--kubeconfig", str(box.kubeconfig), "diff", "--server-side",
                                   "--field-manager", "helm", "-f", str(manifest)], capture_output=True,
                                  timeout=120, check=False)
            if proc.returncode not in (0, 1):
                raise SystemExit(proc.stderr.decode()[-500:])
        rows.append(("kubectl diff --server-side (same manifest)", *timed(kdiff, repeat)))
    t = time.perf_counter()
    helm.run("upgrade", *new.chart_args(), "--wait=watcher", "--timeout", "120s",
             stdin=new.values_document(), timeout=180)
    upgrade = time.perf_counter() - t
    t = time.perf_counter()
    helm.run("rollback", "bench", "1", "--namespace", "bench", "--wait=watcher", "--timeout", "120s", timeout=180)
    rollback = time.perf_counter() - t

    print(f"plan of an upgrade of the shipped chart ({len(changes)} changed object(s)), "
          f"{repeat} repeats, seconds:")
    width = max(len(r[0]) for r in rows)
    print(f"  {'':<{width}}  {'median':>7}  {'min':>7}")
    for name, med, low in rows:
        print(f"  {name:<{width}}  {med:7.3f}  {low:7.3f}")
    print(f"helm upgrade --wait=watcher (2 pods rolled): {upgrade:.2f}s; "
          f"helm rollback --wait=watcher: {rollback:.2f}s")


if __name__ == "__main__":
    main()
