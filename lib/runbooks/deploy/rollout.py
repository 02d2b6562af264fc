"""The release's rollout: its Deployments summed up, its stuck pods with their events, its history."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import kube
from ..errors import NotFound, cut
from ..helm import Helm
from ..model import Finding
from .release import ReleaseSpec


def _deployments(cluster: Any, spec: ReleaseSpec) -> list[dict[str, Any]]:
    return _list_selected(cluster, f"/apis/apps/v1/namespaces/{spec.namespace}/deployments",
                          f"app.kubernetes.io/instance={spec.release}")


def _list_selected(cluster: Any, path: str, selector: str = "", fields: str = "") -> list[dict[str, Any]]:
    query = [("labelSelector", selector)] if selector else []
    if fields:
        query.append(("fieldSelector", fields))
    try:
        return (kube.request(cluster, "GET", path, query=query) or {}).get("items") or []
    except NotFound:
        return []


def rollout_status(cluster: Any, spec: ReleaseSpec) -> dict[str, Any]:
    """The release's Deployments summed up: desired/updated/ready/available and whether it is complete."""
    desired = updated = ready = available = 0
    reasons = []
    deployments = _deployments(cluster, spec)
    complete = bool(deployments)
    for d in deployments:
        st, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
        desired += want
        updated += st.get("updatedReplicas", 0)
        ready += st.get("readyReplicas", 0)
        available += st.get("availableReplicas", 0)
        progressing = kube.condition(d, "Progressing")
        reasons.append(progressing.get("reason", ""))
        complete &= (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
                     and st.get("updatedReplicas", 0) == want and st.get("availableReplicas", 0) >= want
                     and st.get("replicas", 0) == want)
    return {"deployments": len(deployments), "desired": desired, "updated": updated, "ready": ready,
            "available": available, "complete": complete, "reason": ", ".join(r for r in reasons if r)}


def diagnose(cluster: Any, spec: ReleaseSpec, *, events_per_pod: int = 5) -> tuple[pd.DataFrame, list[Finding]]:
    """Pods of the release that are not ready: container, reason, restarts, message and their events.

    Returns a table (one row per unhealthy container) and one critical finding per stuck pod.
    """
    rows, findings = [], []
    pods = _list_selected(cluster, f"/api/v1/namespaces/{spec.namespace}/pods",
                          f"app.kubernetes.io/instance={spec.release}")
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        bad = []
        for st in status.get("containerStatuses") or []:
            waiting = (st.get("state") or {}).get("waiting") or {}
            last = (st.get("lastState") or {}).get("terminated") or {}
            if st.get("ready"):
                continue
            reason = waiting.get("reason") or (
                f"{last['reason']} (restarting)" if last.get("reason") and st.get("restartCount") else
                last.get("reason")) or "NotReady"
            bad.append({"container": st["name"], "reason": reason, "restarts": st.get("restartCount", 0),
                        "last_exit": last.get("exitCode"), "last_termination": last.get("reason", ""),
                        "message": cut(waiting.get("message", ""), 160)})
        if not bad and status.get("phase") in ("Running", "Succeeded"):
            continue
        events = _list_selected(cluster, f"/api/v1/namespaces/{spec.namespace}/events",
                                fields=f"involvedObject.name={meta['name']}")
        # warnings last, so that the newest ones are kept
        events.sort(key=lambda e: (e.get("type") == "Warning", e.get("lastTimestamp") or e.get("eventTime") or ""))
        lines = [f"{e.get('type', '')} {e.get('reason', '')}: {cut(e.get('message', ''), 140)}"
                 + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else "")
                 for e in events[-events_per_pod:]]
        for b in bad or [{"container": "", "reason": status.get("phase", "Pending"), "restarts": 0,
                          "last_exit": None, "last_termination": "", "message": ""}]:
            rows.append({"pod": meta["name"], **b, "events": " | ".join(lines)})
        reasons = sorted({b["reason"] for b in bad}) or [status.get("phase", "Pending")]
        findings.append(Finding(
            id=f"stuck-pod/{spec.namespace}/{meta['name']}", severity="critical",
            title=f"pod {meta['name']} is not ready: {', '.join(reasons)}",
            detail="; ".join(lines[-3:]) or "no events", resource=f"Pod/{spec.namespace}/{meta['name']}",
            evidence={"containers": bad, "events": lines}))
    cols = ["pod", "container", "reason", "restarts", "last_exit", "last_termination", "message", "events"]
    return pd.DataFrame(rows, columns=cols), findings



def release_history(helm: Helm, spec: ReleaseSpec) -> pd.DataFrame:
    """``helm history`` as a table."""
    rows = helm.history(spec.release, spec.namespace)
    cols = ["revision", "updated", "status", "chart", "app_version", "description"]
    return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)
