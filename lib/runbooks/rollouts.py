"""What changed in a Deployment: its revisions (ReplicaSets), its pods by revision, when an object was written.

The facts ``kubectl rollout history`` shows, read through :mod:`runbooks.kube`, for the
incident runbook's timeline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from . import kube


def rollout_history(cluster: kube.Cluster, namespace: str, deployment: str) -> list[dict]:
    """A Deployment's ReplicaSets by revision (oldest first): images, creation time, replicas.

    The same facts `kubectl rollout history` shows, plus when each revision was
    created, which is when it was rolled out.
    """
    d = kube.get_object(cluster, "deployments", namespace, deployment)
    uid = d["metadata"]["uid"]
    rows = []
    for rs in kube.iter_objects(cluster, "replicasets", namespace, label_selector=kube.selector_string(
            (d.get("spec") or {}).get("selector"))):
        if not any(r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or []):
            continue
        ann = rs["metadata"].get("annotations") or {}
        spec = (rs.get("spec") or {}).get("template", {}).get("spec", {})
        tpl_ann = ((rs.get("spec") or {}).get("template", {}).get("metadata") or {}).get("annotations") or {}
        rows.append({
            "revision": int(ann.get("deployment.kubernetes.io/revision", "0")),
            "replicaset": rs["metadata"]["name"],
            "created": kube.parse_time(rs["metadata"].get("creationTimestamp")),
            "images": [c.get("image", "") for c in spec.get("containers", [])],
            "replicas": (rs.get("spec") or {}).get("replicas", 0),
            "ready": (rs.get("status") or {}).get("readyReplicas", 0),
            "change_cause": ann.get("kubernetes.io/change-cause", ""),
            "pod_template_hash": (rs["metadata"].get("labels") or {}).get("pod-template-hash", ""),
            "restarted_at": tpl_ann.get("kubectl.kubernetes.io/restartedAt", ""),
        })
    rows.sort(key=lambda r: r["revision"])
    return rows


def workload_pods(cluster: kube.Cluster, namespace: str, deployment: str, history: list[dict] | None = None) -> list[dict]:
    """The pods of a Deployment (by its selector), each with its ReplicaSet's revision.

    Pass the Deployment's `history` (from :func:`rollout_history`) when you have it already.
    """
    d = kube.get_object(cluster, "deployments", namespace, deployment)
    history = history if history is not None else rollout_history(cluster, namespace, deployment)
    revisions = {r["pod_template_hash"]: r["revision"] for r in history}
    out = []
    for pod in kube.iter_objects(cluster, "pods", namespace,
                            label_selector=kube.selector_string((d.get("spec") or {}).get("selector"))):
        h = (pod["metadata"].get("labels") or {}).get("pod-template-hash", "")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        problems = kube.container_problems(pod)
        out.append({
            "pod": pod["metadata"]["name"], "revision": revisions.get(h), "phase": (pod.get("status") or {})
            .get("phase", ""), "ready": all(s.get("ready") for s in statuses) if statuses else False,
            "restarts": sum(s.get("restartCount", 0) for s in statuses),
            "waiting_reason": next((p["waiting_reason"] for p in problems if p["waiting_reason"]), ""),
            "last_termination_reason": next((p["last_termination_reason"] for p in problems
                                             if p["last_termination_reason"]), ""),
            "last_finished": max((t for p in problems if (t := kube.parse_time(p["last_finished"]))), default=None),
            "node": (pod.get("spec") or {}).get("nodeName", ""),
            "created": kube.parse_time(pod["metadata"].get("creationTimestamp")),
        })
    return sorted(out, key=lambda p: (p["revision"] or 0, p["pod"]))


def last_modified(obj: dict) -> datetime | None:
    """When an object was last written, from its managedFields (the API records it per manager)."""
    times = [kube.parse_time(m.get("time")) for m in obj["metadata"].get("managedFields") or [] if m.get("time")]
    times = [t for t in times if t]
    return max(times) if times else kube.parse_time(obj["metadata"].get("creationTimestamp"))


BACKOFF_RESET = timedelta(minutes=10)
"""The kubelet forgets a container's crash back-off once it has run this long (2 x the 5 min maximum)."""


def crash_reason(row: dict, now: datetime | None = None) -> str:
    """Why a container (a row of :func:`kube.container_problems`, or a pod row with the same keys) crashes, or "".

    Its waiting reason; or CrashLoopBackOff while it runs between two crashes: the kubelet shows
    that reason only while it waits to restart the container, and each restart may live only a
    few seconds, so a crash-looping container read at the wrong moment is Running. A restarted
    container whose last run ended less than :data:`BACKOFF_RESET` ago is still in its crash loop.
    """
    if row["waiting_reason"]:
        return row["waiting_reason"]
    if not (row["restarts"] and row["last_termination_reason"]):
        return ""
    finished = row.get("last_finished")
    if isinstance(finished, str):
        finished = kube.parse_time(finished)
    if finished is not None and (now or datetime.now(UTC)) - finished < BACKOFF_RESET:
        return "CrashLoopBackOff"
    return ""
