"""Benchmark: dns-audit's in-cluster view of N Services, three ways side by side, on one sandbox.

The sandbox runs the real cluster DNS server (BIND, fed from the Services by RFC 2136), so every
answer comes from a real server; N extra Services are created in one namespace. Each Service gives
two questions (its name absolute, and ``svc.ns`` through the search list).

1. ``podview.probe_view``: one probe pod, ``cat /etc/resolv.conf``, then ``dig +search`` with
   ``DIG_BATCH`` questions per exec (WebSocket), the pod deleted afterwards;
2. what a script would otherwise do through the same pod: one ``dig`` exec per question;
3. ``podview.local_view``: in-cluster, the resolv.conf's search list walked in rounds with
   ``dns.query_many`` (no pod, no exec).

All three must give the same answers.

    .venv/bin/python bench/dns_pod_view.py [--services 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from runbooks import discovery, kube, podview  # noqa: E402
from runbooks_sandbox import stack  # noqa: E402
from runbooks_sandbox.launch import Sandbox  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=300)
    args = ap.parse_args()
    box = Sandbox(tempfile.mkdtemp(prefix="bench-pod-view-"), None, tick=1.0)
    stack.attach(box, stack.StackOptions(observability=False, logs=False, certificates=False))
    box.start()
    try:
        cluster = kube.connect(str(box.kubeconfig), "sandbox")
        kube.request(cluster, "POST", "/api/v1/nodes", body={"apiVersion": "v1", "kind": "Node",
                                                            "metadata": {"name": "node-1"}})
        for ns in ("default", "bench"):
            kube.request(cluster, "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                                     "metadata": {"name": ns}})
        for i in range(args.services):
            kube.request(cluster, "POST", "/api/v1/namespaces/bench/services", body={
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i:05d}"},
                "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": f"a{i}"}}})
        services = kube.list_objects(cluster, "services", ["bench"])
        questions, expected = discovery.pod_view_questions(services, [], [])
        dns_server = box.urls["cluster_dns"]
        while True:  # the cluster DNS server has every Service (the RFC 2136 sync runs each second)
            last = podview.local_view(questions[-2:], resolv_conf=_resolv(), server=dns_server)
            if all(v.rcode == "NOERROR" for v in last.lookups.values()):
                break
            time.sleep(0.2)

        t = time.perf_counter()
        batched = podview.probe_view(cluster, "default", questions)
        t_batched = time.perf_counter() - t

        body = podview.probe_pod(podview.DEFAULT_IMAGE, deadline_seconds=600)
        name = kube.request(cluster, "POST", "/api/v1/namespaces/default/pods", body=body)["metadata"]["name"]
        try:
            t = time.perf_counter()
            podview.wait_running(cluster, "default", name, 60)
            t_start = time.perf_counter() - t
            t = time.perf_counter()
            batch = podview.exec_lookups(cluster, "default", name, batched.conf, questions)
            t_digs = time.perf_counter() - t
            t = time.perf_counter()
            single = {}
            for q in questions:
                single.update(podview.exec_lookups(cluster, "default", name, batched.conf, [q]))
            t_single = time.perf_counter() - t
        finally:
            podview.delete_pod(cluster, "default", name)

        t = time.perf_counter()
        local = podview.local_view(questions, resolv_conf=_resolv(), server=dns_server)
        t_local = time.perf_counter() - t

        def answers(view_lookups: dict) -> dict:
            return {k: (v.qname, v.rcode, sorted(v.values)) for k, v in view_lookups.items()}

        assert answers(batched.lookups) == answers(single) == answers(local.lookups) == answers(batch), \
            "the views differ"
        ok = sum(1 for (n, _), v in batched.lookups.items() if n.endswith(".") and v.values == expected[
            n.rstrip(".")][1])
        print(f"{args.services} Services, {len(questions)} questions ({ok} absolute answers as expected)")
        print(f"  probe pod, {podview.DIG_BATCH} questions per exec: {t_batched:6.2f} s "
              "(create, wait Running, resolv.conf, digs, delete)")
        print(f"    of which: the pod to Running {t_start:.2f} s; the digs alone {t_digs:.2f} s")
        print(f"  one exec per question (pod already running): {t_single:6.2f} s  "
              f"({t_single / t_batched:.1f}x the batched view)")
        print(f"  local resolver (in-cluster mode):            {t_local:6.2f} s")
    finally:
        box.stop()
    return 0


def _resolv() -> str:
    path = Path(tempfile.mkdtemp(prefix="bench-resolv-")) / "resolv.conf"
    path.write_text("search default.svc.cluster.local svc.cluster.local cluster.local\n"
                    "nameserver 127.0.0.1\noptions ndots:5\n")
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
