"""Workload controllers: Deployments, StatefulSets, DaemonSets, and what scales or protects them
(HorizontalPodAutoscalers, PodDisruptionBudgets).
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import kube
from ..model import Finding
from .core import Check, frame, guarded


def check_deployments(deployments: Iterable[dict]) -> Check:
    """Deployments short of available replicas, and rollouts that stopped progressing."""
    rows, findings = [], []
    for d in deployments:
        meta, spec, status = d["metadata"], d.get("spec") or {}, d.get("status") or {}
        ns, name = meta.get("namespace"), meta["name"]
        want = spec.get("replicas", 1)
        available = status.get("availableReplicas", 0)
        updated = status.get("updatedReplicas", 0)
        progressing = kube.condition(d, "Progressing")
        stalled = progressing.get("reason") == "ProgressDeadlineExceeded"
        rows.append({"namespace": ns, "deployment": name, "desired": want, "available": available,
                     "updated": updated, "revision": (meta.get("annotations") or {}).get(
                         "deployment.kubernetes.io/revision", ""),
                     "progressing": progressing.get("reason", "")})
        resource = f"Deployment/{ns}/{name}"
        evidence = {"desired": want, "available": available, "updated": updated}
        if want and available == 0:
            findings.append(Finding(id=f"deployment-unavailable/{ns}/{name}", severity="critical",
                                    title=f"Deployment {ns}/{name} has no available replicas (0/{want})",
                                    resource=resource, evidence=evidence))
        elif available < want:
            findings.append(Finding(id=f"deployment-degraded/{ns}/{name}", severity="warning",
                                    title=f"Deployment {ns}/{name} has {available}/{want} available replicas",
                                    resource=resource, evidence=evidence))
        if stalled:
            findings.append(Finding(
                id=f"deployment-rollout-stalled/{ns}/{name}", severity="warning",
                title=f"Deployment {ns}/{name}: rollout stalled ({updated}/{want} updated)",
                detail=f"{progressing.get('message', '')} The previous ReplicaSet still serves; "
                       "consider rolling back.", resource=resource, evidence=evidence))
    return Check(frame(rows, ["namespace", "deployment", "desired", "available", "updated", "revision",
                               "progressing"]), findings)


# ---- StatefulSets and DaemonSets ---------------------------------------------------------

STATEFULSET_COLUMNS = ["namespace", "statefulset", "desired", "ready", "updated", "current_revision",
                       "update_revision", "problem"]


def check_statefulsets(statefulsets: Iterable[dict]) -> Check:
    """StatefulSets short of ready replicas, and updates that stopped half way.

    A StatefulSet updates one pod at a time from the highest ordinal and waits for each to
    be Ready: an updated pod that never gets ready stops the update with the set split
    between two revisions (``currentRevision`` != ``updateRevision``). No ready replica is
    critical (a database or queue is down), fewer than desired or a stuck update a warning,
    an update held by ``partition`` info.
    """
    rows, findings = [], []
    for s in statefulsets:
        meta, spec, status = s["metadata"], s.get("spec") or {}, s.get("status") or {}
        ns, name = meta.get("namespace"), meta["name"]
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        updated = status.get("updatedReplicas", 0)
        current, update = status.get("currentRevision", ""), status.get("updateRevision", "")
        partition = (((spec.get("updateStrategy") or {}).get("rollingUpdate")) or {}).get("partition") or 0
        observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
        resource = f"StatefulSet/{ns}/{name}"
        evidence = {"desired": want, "ready": ready, "updated": updated, "current_revision": current,
                    "update_revision": update, "partition": partition}
        problems = []
        stuck = observed and update and current and update != current and updated < want
        if want and ready == 0:
            problems.append("no ready replica")
            findings.append(Finding(id=f"statefulset-unavailable/{ns}/{name}", severity="critical",
                                    title=f"StatefulSet {ns}/{name} has no ready replicas (0/{want})",
                                    resource=resource, evidence=evidence))
        elif ready < want and not stuck:  # a stuck update says why replicas are missing
            problems.append(f"{ready}/{want} ready")
            findings.append(Finding(id=f"statefulset-degraded/{ns}/{name}", severity="warning",
                                    title=f"StatefulSet {ns}/{name} has {ready}/{want} ready replicas",
                                    resource=resource, evidence=evidence))
        if stuck:
            if ready < want:
                problems.append(f"{ready}/{want} ready, update stuck")
                findings.append(Finding(
                    id=f"statefulset-update-stuck/{ns}/{name}", severity="warning",
                    title=f"StatefulSet {ns}/{name}: update stuck at {updated}/{want} pods on {update}",
                    detail="An updated pod is not ready, so the controller does not go on; the other pods "
                           f"still run {current}. Fix the new revision or roll the template back.",
                    resource=resource, evidence=evidence))
            elif partition:
                problems.append(f"held by partition {partition}")
                findings.append(Finding(
                    id=f"statefulset-update-partitioned/{ns}/{name}", severity="info",
                    title=f"StatefulSet {ns}/{name}: update held by partition={partition} "
                          f"({updated}/{want} pods on {update})",
                    detail="Pods below the partition ordinal keep the old revision until the partition "
                           "is lowered (a staged rollout).", resource=resource, evidence=evidence))
        rows.append({"namespace": ns, "statefulset": name, "desired": want, "ready": ready, "updated": updated,
                     "current_revision": current, "update_revision": update, "problem": ", ".join(problems)})
    return Check(frame(rows, STATEFULSET_COLUMNS), findings)


DAEMONSET_COLUMNS = ["namespace", "daemonset", "desired", "scheduled", "ready", "available", "problem"]


def check_daemonsets(daemonsets: Iterable[dict]) -> Check:
    """DaemonSets not running on every node they should (log shippers, CNI, node agents).

    ``desiredNumberScheduled`` counts the eligible nodes. Pods missing from some of them
    (``currentNumberScheduled`` lower) or not available there leave those nodes without the
    agent: a warning; no available pod anywhere is critical.
    """
    rows, findings = [], []
    for d in daemonsets:
        meta, status = d["metadata"], d.get("status") or {}
        ns, name = meta.get("namespace"), meta["name"]
        desired = status.get("desiredNumberScheduled", 0)
        scheduled = status.get("currentNumberScheduled", 0)
        ready, available = status.get("numberReady", 0), status.get("numberAvailable", 0)
        resource = f"DaemonSet/{ns}/{name}"
        evidence = {"desired": desired, "scheduled": scheduled, "ready": ready, "available": available,
                    "misscheduled": status.get("numberMisscheduled", 0)}
        problems = []
        if desired and available == 0:
            problems.append("none available")
            findings.append(Finding(id=f"daemonset-unavailable/{ns}/{name}", severity="critical",
                                    title=f"DaemonSet {ns}/{name} has no available pod on its {desired} nodes",
                                    resource=resource, evidence=evidence))
        elif scheduled < desired:
            problems.append(f"missing on {desired - scheduled} node(s)")
            findings.append(Finding(
                id=f"daemonset-not-scheduled/{ns}/{name}", severity="warning",
                title=f"DaemonSet {ns}/{name} is not scheduled on {desired - scheduled} of {desired} eligible nodes",
                detail="Those nodes run without it (no logs shipped, no node agent).",
                resource=resource, evidence=evidence))
        elif available < desired:
            problems.append(f"{desired - available} unavailable")
            findings.append(Finding(
                id=f"daemonset-unavailable-pods/{ns}/{name}", severity="warning",
                title=f"DaemonSet {ns}/{name} is not available on {desired - available} of {desired} eligible nodes",
                detail="Its pods there are Pending (no room or a host port taken: see the pod findings and "
                       "FailedScheduling events) or not ready; those nodes run without it.",
                resource=resource, evidence=evidence))
        rows.append({"namespace": ns, "daemonset": name, "desired": desired, "scheduled": scheduled,
                     "ready": ready, "available": available, "problem": ", ".join(problems)})
    return Check(frame(rows, DAEMONSET_COLUMNS), findings)


@guarded("StatefulSets", STATEFULSET_COLUMNS)
def statefulsets(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_statefulsets` over the cluster's StatefulSets, streamed."""
    return check_statefulsets(kube.objects(cluster, "statefulsets", namespaces))


@guarded("DaemonSets", DAEMONSET_COLUMNS)
def daemonsets(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_daemonsets` over the cluster's DaemonSets, streamed."""
    return check_daemonsets(kube.objects(cluster, "daemonsets", namespaces))


# ---- scaling and disruption --------------------------------------------------------------

HPA_COLUMNS = ["namespace", "hpa", "target", "min", "max", "current", "desired", "problem"]


def check_hpas(hpas: Iterable[dict]) -> Check:
    """HorizontalPodAutoscalers pinned at maxReplicas, or unable to compute their metrics (autoscaling/v2).

    Both are warnings: the workload still serves, but it no longer follows its load (at
    max it cannot grow; without metrics it does not scale at all, often because
    metrics-server or the metrics adapter is down).
    """
    rows, findings = [], []
    for h in hpas:
        meta, spec, status = h["metadata"], h.get("spec") or {}, h.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        ref = spec.get("scaleTargetRef") or {}
        target = f"{ref.get('kind', '')}/{ref.get('name', '')}"
        mx, current = spec.get("maxReplicas", 0), status.get("currentReplicas", 0)
        desired = status.get("desiredReplicas", current)
        resource = f"HorizontalPodAutoscaler/{ns}/{name}"
        active, able = kube.condition(h, "ScalingActive"), kube.condition(h, "AbleToScale")
        problems = []
        if active.get("status") == "False" and active.get("reason") != "ScalingDisabled":
            problems.append(f"metrics: {active.get('reason', '')}")
            findings.append(Finding(
                id=f"hpa-metrics-unavailable/{ns}/{name}", severity="warning",
                title=f"HPA {ns}/{name} cannot compute its metrics ({active.get('reason', '')})",
                detail=f"{active.get('message', '')[:300]} It does not scale {target} until it can.",
                resource=resource, evidence={"reason": active.get("reason", "")}))
        if able.get("status") == "False":
            problems.append(f"cannot scale: {able.get('reason', '')}")
            findings.append(Finding(
                id=f"hpa-unable-to-scale/{ns}/{name}", severity="warning",
                title=f"HPA {ns}/{name} cannot scale {target} ({able.get('reason', '')})",
                detail=able.get("message", "")[:300], resource=resource))
        if mx and current >= mx and desired >= mx:
            problems.append("at maxReplicas")
            findings.append(Finding(
                id=f"hpa-at-max/{ns}/{name}", severity="warning",
                title=f"HPA {ns}/{name} is pinned at maxReplicas ({current}/{mx})",
                detail=f"The load asks for at least {desired} replicas of {target}; raise maxReplicas or "
                       "add capacity, or latency grows with the load.", resource=resource,
                evidence={"max": mx, "current": current, "desired": desired}))
        rows.append({"namespace": ns, "hpa": name, "target": target, "min": spec.get("minReplicas", 1),
                     "max": mx, "current": current, "desired": desired, "problem": ", ".join(problems)})
    return Check(frame(rows, HPA_COLUMNS), findings)


PDB_COLUMNS = ["namespace", "pdb", "expected", "healthy", "desired_healthy", "disruptions_allowed"]


def check_pdbs(pdbs: Iterable[dict]) -> Check:
    """PodDisruptionBudgets that allow no disruption: every node drain touching their pods blocks.

    A warning: nothing fails now, but node upgrades and autoscaler scale-downs hang on them.
    Budgets whose pods are already below ``desiredHealthy`` say so (the app is degraded).
    """
    rows, findings = [], []
    for b in pdbs:
        meta, status = b["metadata"], b.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        expected, healthy = status.get("expectedPods", 0), status.get("currentHealthy", 0)
        desired, allowed = status.get("desiredHealthy", 0), status.get("disruptionsAllowed", 0)
        rows.append({"namespace": ns, "pdb": name, "expected": expected, "healthy": healthy,
                     "desired_healthy": desired, "disruptions_allowed": allowed})
        if expected and not allowed:
            why = (f"only {healthy} of the {desired} pods it requires are healthy" if healthy < desired
                   else f"its {expected} pods are all required ({desired} must stay healthy)")
            findings.append(Finding(
                id=f"pdb-blocks-drain/{ns}/{name}", severity="warning",
                title=f"PodDisruptionBudget {ns}/{name} allows 0 disruptions",
                detail=f"Draining a node that runs its pods waits forever: {why}.",
                resource=f"PodDisruptionBudget/{ns}/{name}",
                evidence={"expected": expected, "healthy": healthy, "desired_healthy": desired}))
    return Check(frame(rows, PDB_COLUMNS), findings)


@guarded("HorizontalPodAutoscalers", HPA_COLUMNS)
def hpas(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_hpas` over the cluster's autoscalers, streamed."""
    return check_hpas(kube.objects(cluster, "horizontalpodautoscalers", namespaces))


@guarded("PodDisruptionBudgets", PDB_COLUMNS)
def pdbs(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_pdbs` over the cluster's budgets, streamed."""
    return check_pdbs(kube.objects(cluster, "poddisruptionbudgets", namespaces))
