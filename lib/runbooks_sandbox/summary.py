"""`runbooks sandbox status`: a few counts read back over the sandbox's own REST API.

The sandbox never imports the product (a test bed that shares the client's code
can share its bugs), so this reads the API the way any client would: HTTPS,
the CA and bearer token from the kubeconfig `up` wrote.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from collections import Counter
from pathlib import Path

import yaml


def _client(kubeconfig: Path) -> tuple[str, ssl.SSLContext, str]:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    token = cfg["users"][0]["user"]["token"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    return cluster["server"].rstrip("/"), ctx, token


def _items(base: str, ctx: ssl.SSLContext, token: str, path: str) -> list[dict]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.load(resp).get("items") or []


def cluster_summary(kubeconfig: Path) -> str:
    """Nodes, namespaces, pods by phase, workloads not available and containers waiting."""
    base, ctx, token = _client(kubeconfig)
    nodes = _items(base, ctx, token, "/api/v1/nodes")
    ready = sum(1 for n in nodes if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (n.get("status") or {}).get("conditions") or []))
    pods = _items(base, ctx, token, "/api/v1/pods")
    phases = Counter((p.get("status") or {}).get("phase", "Unknown") for p in pods)
    waiting = []
    for pod in pods:
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            reason = ((st.get("state") or {}).get("waiting") or {}).get("reason")
            if reason:
                waiting.append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']} "
                               f"({reason}, {st.get('restartCount', 0)} restarts)")
    unavailable = []
    for d in _items(base, ctx, token, "/apis/apps/v1/deployments"):
        want = (d.get("spec") or {}).get("replicas", 1)
        have = (d.get("status") or {}).get("availableReplicas", 0)
        updated = (d.get("status") or {}).get("updatedReplicas", 0)
        if have < want or updated < want:
            unavailable.append(f"{d['metadata']['namespace']}/{d['metadata']['name']} "
                               f"({have}/{want} available, {updated} updated)")
    lines = [
        f"server {base}",
        f"nodes: {ready}/{len(nodes)} ready; namespaces: {len(_items(base, ctx, token, '/api/v1/namespaces'))}",
        "pods: " + ", ".join(f"{k} {v}" for k, v in sorted(phases.items())),
    ]
    if unavailable:
        lines.append("deployments not fully available: " + "; ".join(unavailable))
    if waiting:
        lines.append("pods with waiting containers: " + "; ".join(waiting))
    return "\n".join(lines)
