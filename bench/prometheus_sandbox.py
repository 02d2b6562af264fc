"""Benchmark: the sandbox's real Prometheus/Alertmanager, and metrics.py against it, in one run.

1. start-up of `Observability` (generate the history, write OpenMetrics, promtool
   backfill, servers ready) with series and sample counts, repeated;
2. time until the planted alerts are in Alertmanager;
3. range queries side by side on the same data: a 3-day window at 15 s (chunked:
   17,281 points in two requests, merged) vs the automatic step (one request),
   and the RED / USE frames of checkout over 6 hours.

    .venv/bin/python bench/prometheus_sandbox.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from timing import timed

from runbooks import alerts, metrics
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import Observability, sandbox_objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-prom-"))
    box = Sandbox(work / "sandbox", "default", tick=1.0).start()
    try:
        print("start-up (each start regenerates and backfills the history)")
        print(f"{'run':>4} {'generate':>9} {'write':>7} {'backfill':>9} {'servers':>8} {'total':>7} "
              f"{'series':>7} {'samples':>10}")
        obs = None
        for i in range(args.repeat):
            if obs:
                obs.stop()
            obs = Observability(work / f"obs-{i}", lambda: sandbox_objects(box), box.store.clock())
            obs.start()
            t = obs.timings
            print(f"{i + 1:>4} {t['generate']:>8.2f}s {t['write']:>6.2f}s {t['backfill']:>8.2f}s "
                  f"{t['servers_ready']:>7.2f}s {t['total']:>6.2f}s {obs.stats['series']:>7} "
                  f"{obs.stats['samples']:>10,}")
        assert obs is not None
        t0 = time.perf_counter()
        want = {"KubePodCrashLooping", "NginxIngressHigh5xxRatio", "Watchdog"}
        while not want <= {a["alertname"] for a in alerts.alert_dicts(obs.urls["alertmanager"])}:
            time.sleep(0.5)
        print(f"\nplanted alerts in Alertmanager {time.perf_counter() - t0:.1f}s after start() returned")

        prom = metrics.connect(obs.urls["prometheus"])
        end = datetime.now(UTC)
        q = 'sum by (ingress) (rate(nginx_ingress_controller_requests{namespace="shop"}[10m]))'
        print("\nrange queries (median of", args.repeat, "runs)")
        rows = []
        for label, start, step in (("3 days @ 15s (chunked)", end - timedelta(days=3), 15),
                                   ("3 days @ auto step", end - timedelta(days=3), None),
                                   ("6 hours @ auto step", end - timedelta(hours=6), None)):
            plan = metrics.plan_chunks(start, end, step)
            sec, df = timed(lambda s=start, st=step: metrics.range_query(prom, q, s, end, st), args.repeat)
            rows.append((label, len(plan), plan[0][2], len(df), sec))
        sec, df = timed(lambda: metrics.red(prom, "shop", "checkout", end - timedelta(hours=6), end), args.repeat)
        rows.append(("RED checkout 6h (5 queries)", 5, 15, len(df), sec))
        sec, df = timed(lambda: metrics.use(prom, "shop", "checkout", end - timedelta(hours=6), end), args.repeat)
        rows.append(("USE checkout 6h (6 queries)", 6, 15, len(df), sec))
        print(f"{'query':<30} {'requests':>8} {'step':>5} {'rows':>8} {'time':>8}")
        for label, n, st, nrows, sec in rows:
            print(f"{label:<30} {n:>8} {st:>4}s {nrows:>8,} {sec:>7.3f}s")
        obs.stop()
    finally:
        box.stop()


if __name__ == "__main__":
    main()
