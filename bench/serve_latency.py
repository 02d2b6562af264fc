"""Benchmark: an alert reaching `runbooks serve` -> its summary posted, vs a direct `runbooks run`.

Both run incident-investigation for shop/checkout against the same sandbox (full stack:
Prometheus, Alertmanager, log store), alternately, in one process:

- **direct**: `runbooks run incident-investigation --env sandbox -p namespace shop -p service
  checkout -p alert_name KubePodCrashLooping --notify webhook`, from the command's start until
  the summary reaches the local receiver;
- **serve**: the sandbox Alertmanager's real KubePodCrashLooping alert for checkout, POSTed
  as Alertmanager's webhook (payload version 4) to `runbooks serve` (each time with a new
  group key; `--dedup-window 0`), from the POST until the summary reaches the receiver.

The goal is serve <= 2x direct: the server adds routing, the pod -> workload look-up, the
queue and one process start to the same `runbooks run`.

    .venv/bin/python bench/serve_latency.py [--repeat 3]
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
import uuid
from pathlib import Path

import requests
import yaml

from runbooks_sandbox import stack
from runbooks_sandbox.launch import Sandbox

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from serve_helpers import Receiver, Serve  # noqa: E402


def project(tmp: Path, box: Sandbox) -> Path:
    root = tmp / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")  # every runbook the default routes name
    (root / "parameters" / "sandbox").mkdir(parents=True)
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(stack.env_settings(box)))
    (root / "outputs").mkdir()
    return root


def checkout_alert(box: Sandbox) -> dict:
    """The firing KubePodCrashLooping alert of a checkout pod, as Alertmanager's webhook carries it."""
    alerts = requests.get(f"{box.urls['alertmanager']}/api/v2/alerts", timeout=10).json()
    for a in alerts:
        labels = a["labels"]
        if labels.get("alertname") == "KubePodCrashLooping" and labels.get("pod", "").startswith("checkout-"):
            return {"status": "firing", "labels": labels, "annotations": a.get("annotations", {}),
                    "startsAt": a["startsAt"], "endsAt": a["endsAt"], "generatorURL": a.get("generatorURL", ""),
                    "fingerprint": a["fingerprint"]}
    raise SystemExit("the sandbox's Alertmanager holds no KubePodCrashLooping alert for checkout")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    receiver = Receiver()
    print("starting a sandbox with its full stack ...", flush=True)
    box = Sandbox(tmp / "sandbox", "default", tick=1.0)
    stack.attach(box, stack.StackOptions(certificates=False))
    box.start()
    server = None
    times: dict[str, list[float]] = {"direct": [], "serve": []}
    try:
        root = project(tmp, box)
        routes = tmp / "routes.yaml"
        routes.write_text((ROOT / "lib" / "runbooks" / "routes.yaml").read_text())
        server = Serve(root, routes, receiver, "--dedup-window", "0", "--concurrency", "1")
        alert = checkout_alert(box)
        env = dict(os.environ, RUNBOOKS_WEBHOOK_URL=receiver.url, RUNBOOKS_HOME=str(root))
        for i in range(args.repeat):
            thread = f"direct-{i}"
            start = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "runbooks.cli", "--project-dir", str(root), "run",
                                     "incident-investigation", "--env", "sandbox", "--no-progress", "-p",
                                     "namespace", "shop", "-p", "service", "checkout", "-p", "alert_name",
                                     "KubePodCrashLooping", "--notify", "webhook", "--notify-thread", thread],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL)
            receiver.wait_for(lambda m, t=thread: m.get("thread") == t, 600)
            elapsed = time.perf_counter() - start
            proc.wait(timeout=120)
            times["direct"].append(elapsed)

            group = f'{{}}:{{alertname="KubePodCrashLooping", bench="{uuid.uuid4().hex}"}}'
            payload = {"version": "4", "groupKey": group, "truncatedAlerts": 0, "status": "firing",
                       "receiver": "runbooks", "groupLabels": {"alertname": "KubePodCrashLooping"},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": box.urls["alertmanager"],
                       "alerts": [alert]}
            start = time.perf_counter()
            answer = server.post(payload)
            if answer.status_code != 200 or not answer.json()["queued"]:
                raise SystemExit(f"runbooks serve did not queue the alert: {answer.status_code} {answer.text}")
            thread = answer.json()["thread"]
            [message] = receiver.wait_for(lambda m, t=thread: m.get("thread") == t and m.get("event") == "run", 600)
            times["serve"].append(time.perf_counter() - start)
            server.wait_jobs(lambda a: all(j["state"] in ("done", "refused") for j in a["jobs"]), 120)
            print(f"  round {i + 1}: direct {times['direct'][-1]:6.2f} s   serve {times['serve'][-1]:6.2f} s   "
                  f"({message['run_status']}, exit {message['exit_code']})", flush=True)
    finally:
        if server is not None:
            server.stop()
        box.stop()
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    direct, served = statistics.median(times["direct"]), statistics.median(times["serve"])
    print(f"\nincident-investigation for shop/checkout, until the summary is posted (median of {args.repeat}):")
    print(f"  direct `runbooks run`            {direct:6.2f} s")
    print(f"  alert -> `runbooks serve`        {served:6.2f} s   {served / direct:4.2f}x direct (goal <= 2x)")


if __name__ == "__main__":
    main()
