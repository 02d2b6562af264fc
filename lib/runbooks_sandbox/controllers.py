"""Controllers that make the sandbox cluster alive.

Deployment -> ReplicaSet -> Pod, StatefulSet and DaemonSet pods, a scheduler,
a "kubelet" that turns each pod into a running (or failing) container status,
Endpoints/EndpointSlices from ready pods, Events, and garbage collection of
dependents. They follow the real controllers' rules (pod-template-hash,
revision annotations, maxSurge/maxUnavailable, progress deadline, kubelet
crash back-off) so runbooks read the same shapes as on a real cluster.

One controller per kind (:class:`Controller`: the ``kind`` it reconciles, the
changes it ``watches``, and ``reconcile`` for one object), registered with its
priority in :data:`CONTROLLERS`, next to the dispatch (:class:`Controllers`).
Everything is a pure function of the stored objects and the clock, run on one
worker thread: after each write (the store notifies us) and on a tick that
advances time-dependent state such as restart counts of crash-looping pods.
Failure injection: the pod template annotation ``sandbox.kube-runbooks.io/fail``
with CrashLoopBackOff, OOMKilled, ImagePullBackOff or NotReady.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from . import names
from .resources import Registry
from .store import ApiError, Change, Store, rfc3339
from .workloop import WorkLoop

log = logging.getLogger(__name__)

FAIL_ANNOTATION = "sandbox.kube-runbooks.io/fail"
FAILURES = ("CrashLoopBackOff", "OOMKilled", "ImagePullBackOff", "NotReady")
REVISION = "deployment.kubernetes.io/revision"
MANAGER = "kube-controller-manager"
CRASH_RUNTIME = 8  # seconds a failing container lives before it dies
BACKOFF_START, BACKOFF_MAX = 10, 300  # kubelet's crash back-off: 10s doubling to 5 min


def pod_template_hash(template: dict) -> str:
    """Stable short hash of a pod template, shaped like the real `pod-template-hash` label."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).digest()
    return names.encode(int.from_bytes(digest[:8], "big"), 10)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def _deadline_exceeded(status: dict, at: datetime) -> dict:
    """The kubelet ends a pod past spec.activeDeadlineSeconds: its containers are killed, the pod Failed."""
    ts = rfc3339(at)
    status = copy.deepcopy(status)
    status.update(phase="Failed", reason="DeadlineExceeded",
                  message="Pod was active on the node longer than the specified deadline")
    for key in ("containerStatuses", "ephemeralContainerStatuses"):
        for st in status.get(key) or []:
            started = ((st.get("state") or {}).get("running") or {}).get("startedAt", ts)
            st.update(ready=False, started=False, state={"terminated": {
                "exitCode": 137, "reason": "Error", "startedAt": started, "finishedAt": ts,
                "containerID": st.get("containerID", "")}})
    for cond in status.get("conditions") or []:
        if cond["type"] in ("Ready", "ContainersReady", "PodReadyToStartContainers") and cond["status"] == "True":
            cond.update(status="False", lastTransitionTime=ts)
            if cond["type"] == "Ready":
                cond["reason"] = "PodFailed"
    return status


def crash_history(started: datetime, now: datetime) -> tuple[int, datetime, datetime, datetime | None]:
    """Restarts of a crash-looping container since `started`, the kubelet's way.

    Returns (restart count, last start, last death, next start or None when running now).
    Each life lasts CRASH_RUNTIME seconds; after the n-th death the kubelet waits
    10s * 2^(n-1), capped at 5 minutes, before starting it again.
    """
    t = started
    restarts = 0
    delay = BACKOFF_START
    while True:
        death = t + timedelta(seconds=CRASH_RUNTIME)
        if death > now:
            return restarts, t, death, None  # alive right now
        next_start = death + timedelta(seconds=delay)
        if next_start > now:
            return restarts, t, death, next_start
        if delay == BACKOFF_MAX:  # steady state: skip whole periods arithmetically
            period = CRASH_RUNTIME + BACKOFF_MAX
            k = int((now - t).total_seconds() // period)
            if k > 1:
                restarts += k - 1
                t += timedelta(seconds=period * (k - 1))
                continue
        restarts += 1
        t = next_start
        delay = min(delay * 2, BACKOFF_MAX)


def _scaled(value, total: int, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        x = int(text[:-1]) * total / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(text)


def _owned_by(obj: dict, uid: str) -> bool:
    return any(r.get("uid") == uid and r.get("controller") for r in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: dict, kind: str, api_version: str) -> dict:
    return {"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def _labels_match(selector: dict | None, labels: dict | None) -> bool:
    from .selectors import label_selector_from_spec

    return label_selector_from_spec(selector).matches(labels or {})


def _find_port(pod: dict, service_port: dict) -> int | None:
    """The container port a Service port targets in this pod (podutil.FindPort); None: the pod has no such port."""
    target = service_port.get("targetPort", service_port.get("port"))
    if not isinstance(target, str):
        return target
    if target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and cp.get("protocol", "TCP") == service_port.get("protocol", "TCP"):
                return cp.get("containerPort")
    return None


def _pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "m": 1e-3}


def _quantity(text: object) -> float:
    """A resource quantity ("256Mi", "500m", "2") as a float; 0 when absent or unreadable."""
    m = re.fullmatch(r"([0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(text or "").strip())
    if not m or (m.group(2) and m.group(2) not in _SUFFIXES):
        return 0.0
    return float(m.group(1)) * (_SUFFIXES[m.group(2)] if m.group(2) else 1)


def _requests(spec: dict) -> dict[str, float]:
    return {r: sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get(r))
                   for c in spec.get("containers") or []) for r in ("cpu", "memory")}


def _host_ports(spec: dict) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["hostPort"]) for c in spec.get("containers") or []
            for p in c.get("ports") or [] if p.get("hostPort")}


def _tolerates(tolerations: list[dict], taint: dict) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _node_eligible(node: dict, pod_spec: dict) -> bool:
    """nodeSelector matches and every NoSchedule/NoExecute taint is tolerated (the DaemonSet predicate)."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    return all(_tolerates(pod_spec.get("tolerations") or [], t) for t in (node.get("spec") or {}).get("taints") or []
               if t.get("effect") in ("NoSchedule", "NoExecute"))


def _affinity_nodes(pod: dict) -> list[str] | None:
    """Node names a required nodeAffinity pins the pod to (``matchFields metadata.name``, as DaemonSets do)."""
    terms = ((((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or [])
    names = [v for t in terms for f in t.get("matchFields") or []
             if f.get("key") == "metadata.name" and f.get("operator") == "In" for v in f.get("values") or []]
    return names or None


def _active(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed") and \
        not pod["metadata"].get("deletionTimestamp")


EVERY = "*"
"""A work item's name meaning every object of the controller's kind in the namespace (all: namespace "")."""


class Controller(Protocol):
    """One controller: the kind it reconciles, the changes it watches, and one object's reconcile."""

    kind: str
    lists: str
    """The kind whose objects a work item named :data:`EVERY` stands for (usually ``kind``)."""

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        """The (namespace, name) keys this change asks it to reconcile (name :data:`EVERY`: all)."""
        ...

    def reconcile(self, ns: str, name: str) -> None:
        """Bring one object's dependents and status in line with the stored objects and the clock."""
        ...

    def on_tick(self) -> None:
        """Advance time-dependent state (called every tick)."""
        ...


def _controller_owner(obj: dict) -> tuple[str, str] | None:
    """(kind, name) of the object's controlling owner."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("kind", ""), ref.get("name", "")
    return None


class _Base:
    """What every controller shares: the store, the kinds, the clock, Events, and pods from templates."""

    kind = ""

    def __init__(self, cluster: Controllers) -> None:
        self.cluster = cluster
        self.store, self.registry, self.rt = cluster.store, cluster.registry, cluster.rt

    @property
    def lists(self) -> str:
        return self.kind

    def reconcile(self, ns: str, name: str) -> None:
        raise NotImplementedError

    @property
    def bootstrapping(self) -> bool:
        return self.cluster.bootstrapping

    def now(self) -> datetime:
        return self.cluster.now()

    def event(self, obj: dict, type_: str, reason: str, message: str, component: str, **kw) -> None:
        self.cluster.event(obj, type_, reason, message, component, **kw)

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        return ()

    def on_tick(self) -> None:
        return None

    def _pod_from_template(self, owner: dict, kind: str, prefix: str, index: int, name: str | None = None,
                           node: str | None = None) -> dict:
        tpl = copy.deepcopy(owner["spec"]["template"])
        meta = tpl.get("metadata") or {}
        owner_meta = owner["metadata"]
        pod_name = name or prefix + names.suffix(f"{owner_meta['uid']}/{index}/{self.store.resource_version}")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": owner_meta["namespace"],
                         "labels": meta.get("labels") or {},
                         "ownerReferences": [_owner_ref(owner, kind, "apps/v1")]},
            "spec": tpl.get("spec") or {},
        }
        if meta.get("annotations"):
            pod["metadata"]["annotations"] = meta["annotations"]
        if node:
            pod["spec"]["nodeName"] = node
        from .admission import apply_defaults

        return apply_defaults(self.rt["Pod"], pod)

    def _node_usage(self) -> dict[str, dict]:
        """CPU, memory and host ports taken on each node by the active pods bound to it (one pass)."""
        used: dict[str, dict] = {}
        for p in self.store.items(self.rt["Pod"]):
            node = p["spec"].get("nodeName")
            if node and _active(p):
                acc = used.setdefault(node, {"cpu": 0.0, "memory": 0.0, "ports": set()})
                for r, v in _requests(p["spec"]).items():
                    acc[r] += v
                acc["ports"] |= _host_ports(p["spec"])
        return used

    def _misfit(self, pod: dict, node_name: str, usage: dict[str, dict] | None = None) -> str:
        """Why the node cannot take this pod, in the scheduler's words ("" when it fits)."""
        want, ports = _requests(pod["spec"]), _host_ports(pod["spec"])
        if not any(want.values()) and not ports:
            return ""
        node = self.store.find(self.rt["Node"], None, node_name)
        alloc = ((node or {}).get("status") or {}).get("allocatable") or {}
        used = (usage if usage is not None else self._node_usage()).get(node_name) or \
            {"cpu": 0.0, "memory": 0.0, "ports": set()}
        if ports & used["ports"]:
            return "node(s) didn't have free ports for the requested pod ports"
        for r in ("cpu", "memory"):
            if alloc.get(r) and used[r] + want[r] > _quantity(alloc[r]):
                return f"Insufficient {r}"
        return ""


class _Workload(_Base):
    """A workload controller: reconciles its own objects, and the owner of anything it controls."""

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        obj = change.entry.obj
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        if obj.get("kind") == self.kind:
            yield ns, meta["name"]
        owner = _controller_owner(obj)
        if owner is not None and owner[0] == self.kind:
            yield ns, owner[1]


class NamespaceCollector(_Base):
    """A deleted Namespace: everything in it goes."""

    kind = "Namespace"

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        if change.type == "DELETED" and change.entry.obj.get("kind") == "Namespace":
            yield "", change.entry.obj["metadata"]["name"]

    def reconcile(self, ns: str, name: str) -> None:
        self.collect_namespace(name)

    def collect_namespace(self, name: str) -> None:
        for t in self.registry.all():
            if t.namespaced:
                for o in self.store.items(t, name):
                    try:
                        self.store.delete(t, name, o["metadata"]["name"])
                    except ApiError:
                        pass


class GarbageCollector(_Base):
    """A deleted object: its dependents (ownerReferences to its uid) go. Work items are (namespace, uid)."""

    kind = "GarbageCollector"

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        if change.type == "DELETED":
            meta = change.entry.obj["metadata"]
            yield meta.get("namespace", ""), meta.get("uid", "")

    def reconcile(self, ns: str, name: str) -> None:
        self.collect_garbage(ns, name)

    def collect_garbage(self, ns: str, uid: str) -> None:
        if not uid:
            return
        for t in self.registry.all():
            if not t.namespaced:
                continue
            for o in self.store.items(t, ns or None):
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []):
                    try:
                        self.store.delete(t, o["metadata"].get("namespace"), o["metadata"]["name"])
                    except ApiError:
                        pass


class DeploymentController(_Workload):
    """Deployment -> ReplicaSets: rolling update or recreate, history, status and progress deadline."""

    kind = "Deployment"

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_deployment(ns, name)

    def on_tick(self) -> None:
        """A rollout in progress may pass its deadline without any write."""
        for d in self.store.items(self.rt["Deployment"]):
            conds = {c["type"]: c for c in (d.get("status") or {}).get("conditions") or []}
            if conds.get("Progressing", {}).get("reason") == "ReplicaSetUpdated":
                self.sync_deployment(d["metadata"]["namespace"], d["metadata"]["name"])

    def sync_deployment(self, ns: str, name: str) -> None:
        drt, rsrt = self.rt["Deployment"], self.rt["ReplicaSet"]
        d = self.store.find(drt, ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        spec = d["spec"]
        uid = d["metadata"]["uid"]
        rss = [rs for rs in self.store.items(rsrt, ns) if _owned_by(rs, uid)]
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {}).pop("pod-template-hash", None)
        h = pod_template_hash(template)
        new_rs = next((rs for rs in rss if rs["metadata"].get("labels", {}).get("pod-template-hash") == h),
                      None)
        olds = [rs for rs in rss if rs is not new_rs]
        max_rev = max([int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in rss] or [0])
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy") or {}
        ru = strategy.get("rollingUpdate") or {}
        surge = _scaled(ru.get("maxSurge", "25%"), replicas, True)
        unavailable = _scaled(ru.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        if spec.get("paused"):
            self._deployment_status(d, rss, new_rs, unavailable)
            return
        if new_rs is None:
            tpl = copy.deepcopy(template)
            tpl["metadata"]["labels"]["pod-template-hash"] = h
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            if strategy.get("type") == "Recreate":
                start = 0 if any(rs["spec"].get("replicas") for rs in olds) else replicas
            else:
                total = sum(rs["spec"].get("replicas", 0) for rs in olds)
                start = max(0, min(replicas, replicas + surge - total)) if olds else replicas
            rs = {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{name}-{h}", "namespace": ns,
                             "labels": dict(tpl["metadata"]["labels"]),
                             "annotations": {REVISION: str(max_rev + 1),
                                             "deployment.kubernetes.io/desired-replicas": str(replicas),
                                             "deployment.kubernetes.io/max-replicas": str(replicas + surge)},
                             "ownerReferences": [_owner_ref(d, "Deployment", "apps/v1")]},
                "spec": {"replicas": start, "selector": selector, "template": tpl,
                         "minReadySeconds": spec.get("minReadySeconds", 0)},
            }
            new_rs = self.store.create(rsrt, rs)
            self.event(d, "Normal", "ScalingReplicaSet",
                       f"Scaled up replica set {new_rs['metadata']['name']} to {start} from 0", "deployment-controller")
            rss = olds + [new_rs]
        else:
            rev = int(new_rs["metadata"].get("annotations", {}).get(REVISION, "0"))
            if rev < max_rev:  # a rollback to an old template makes it the newest revision again
                upd = copy.deepcopy(new_rs)
                upd["metadata"]["annotations"][REVISION] = str(max_rev + 1)
                new_rs = self.store.update(rsrt, upd, check_rv=False)
        if strategy.get("type") == "Recreate":
            self._recreate(d, olds, new_rs, replicas)
        else:
            self._rolling(d, olds, new_rs, replicas, surge, unavailable)
        rss = [rs for rs in self.store.items(rsrt, ns) if _owned_by(rs, uid)]
        new_rs = next(rs for rs in rss if rs["metadata"]["name"] == new_rs["metadata"]["name"])
        self._cleanup_history(d, rss, new_rs)
        self._deployment_status(d, rss, new_rs, unavailable)

    def _scale_rs(self, d: dict, rs: dict, to: int) -> dict:
        frm = rs["spec"].get("replicas", 0)
        if frm == to:
            return rs
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = to
        ann = new["metadata"].setdefault("annotations", {})
        ann["deployment.kubernetes.io/desired-replicas"] = str(d["spec"].get("replicas", 1))
        out = self.store.update(self.rt["ReplicaSet"], new, check_rv=False)
        verb = "up" if to > frm else "down"
        self.event(d, "Normal", "ScalingReplicaSet",
                   f"Scaled {verb} replica set {rs['metadata']['name']} to {to} from {frm}", "deployment-controller")
        return out

    def _recreate(self, d: dict, olds: list[dict], new_rs: dict, replicas: int) -> None:
        for rs in olds:
            self._scale_rs(d, rs, 0)
        pods_left = any(_owned_by(p, rs["metadata"]["uid"]) for rs in olds
                        for p in self.store.items(self.rt["Pod"], d["metadata"]["namespace"]))
        if not pods_left:
            self._scale_rs(d, new_rs, replicas)

    def _rolling(self, d: dict, olds: list[dict], new_rs: dict, replicas: int, surge: int,
                 unavailable: int) -> None:
        all_rs = olds + [new_rs]
        total = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
        # scale up the new ReplicaSet within maxSurge
        new_count = new_rs["spec"].get("replicas", 0)
        if new_count < replicas:
            room = replicas + surge - total
            if room > 0:
                new_rs = self._scale_rs(d, new_rs, min(replicas, new_count + room))
        elif new_count > replicas:
            new_rs = self._scale_rs(d, new_rs, replicas)
        # scale down old ReplicaSets without going under minAvailable
        all_rs = olds + [new_rs]
        all_pods = sum(rs["spec"].get("replicas", 0) for rs in all_rs)
        min_available = replicas - unavailable
        new_unavailable = new_rs["spec"].get("replicas", 0) - (new_rs.get("status") or {}).get("availableReplicas", 0)
        budget = all_pods - min_available - new_unavailable
        for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
            if budget <= 0:
                break
            have = rs["spec"].get("replicas", 0)
            unhealthy = have - (rs.get("status") or {}).get("availableReplicas", 0)
            cut = min(budget, unhealthy)
            if cut > 0:
                rs = self._scale_rs(d, rs, have - cut)
                budget -= cut
        available = sum((rs.get("status") or {}).get("availableReplicas", 0) for rs in olds + [new_rs])
        budget = available - min_available - new_unavailable
        for rs in sorted(olds, key=lambda r: r["metadata"]["creationTimestamp"]):
            if budget <= 0:
                break
            rs = self.store.find(self.rt["ReplicaSet"], rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs
            have = rs["spec"].get("replicas", 0)
            cut = min(budget, have)
            if cut > 0:
                self._scale_rs(d, rs, have - cut)
                budget -= cut

    def _cleanup_history(self, d: dict, rss: list[dict], new_rs: dict) -> None:
        limit = d["spec"].get("revisionHistoryLimit", 10)
        idle = [rs for rs in rss if rs is not new_rs and rs["spec"].get("replicas", 0) == 0
                and (rs.get("status") or {}).get("replicas", 0) == 0]
        idle.sort(key=lambda r: int(r["metadata"].get("annotations", {}).get(REVISION, "0")))
        for rs in idle[:max(0, len(idle) - limit)]:
            self.store.delete(self.rt["ReplicaSet"], rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _deployment_status(self, d: dict, rss: list[dict], new_rs: dict | None, unavailable: int) -> None:
        spec = d["spec"]
        replicas = spec.get("replicas", 1)
        st = [rs.get("status") or {} for rs in rss]
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(s.get("replicas", 0) for s in st),
            "updatedReplicas": (new_rs.get("status") or {}).get("replicas", 0) if new_rs else 0,
            "readyReplicas": sum(s.get("readyReplicas", 0) for s in st),
            "availableReplicas": sum(s.get("availableReplicas", 0) for s in st),
        }
        status["unavailableReplicas"] = max(0, replicas - status["availableReplicas"])
        for k in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"):
            if not status[k]:
                del status[k]
        old_conds = {c["type"]: c for c in (d.get("status") or {}).get("conditions") or []}
        now = rfc3339(self.now())
        if self.bootstrapping and new_rs:  # scenario history: conditions date from the rollout
            now = new_rs["metadata"]["creationTimestamp"]
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        available_ok = status.get("availableReplicas", 0) >= replicas - unavailable
        conds = [self._condition(old_conds.get("Available"), "Available", available_ok,
                            "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                            "Deployment has minimum availability." if available_ok
                            else "Deployment does not have minimum availability.", now)]
        complete = (new_rs is not None and status.get("updatedReplicas", 0) == replicas
                    and status.get("availableReplicas", 0) >= replicas and status.get("replicas", 0) == replicas)
        prev = old_conds.get("Progressing")
        created = new_rs["metadata"]["creationTimestamp"] if new_rs else now
        if complete:
            prog = self._condition(prev, "Progressing", True, "NewReplicaSetAvailable",
                              f'ReplicaSet "{rs_name}" has successfully progressed.', now)
        else:
            # the deployment controller's DeploymentProgressing(): only real progress moves the clock
            cur = d.get("status") or {}
            progressed = (
                status.get("updatedReplicas", 0) > cur.get("updatedReplicas", 0)
                or status.get("replicas", 0) - status.get("updatedReplicas", 0)
                < cur.get("replicas", 0) - cur.get("updatedReplicas", 0)
                or status.get("readyReplicas", 0) > cur.get("readyReplicas", 0)
                or status.get("availableReplicas", 0) > cur.get("availableReplicas", 0))
            # a scenario's history: whatever progress there was happened when its ReplicaSet was created
            stamp = created if self.bootstrapping else now
            if prev is None or prev.get("reason") == "NewReplicaSetAvailable" or progressed:
                last_update = stamp
            else:
                last_update = prev.get("lastUpdateTime", stamp)
            deadline = spec.get("progressDeadlineSeconds", 600)
            if (self.now() - parse_time(last_update)).total_seconds() > deadline:
                prog = self._condition(prev, "Progressing", False, "ProgressDeadlineExceeded",
                                       f'ReplicaSet "{rs_name}" has timed out progressing.', now)
            else:
                prog = self._condition(prev, "Progressing", True, "ReplicaSetUpdated",
                                       f'ReplicaSet "{rs_name}" is progressing.', now)
            prog["lastUpdateTime"] = last_update
        conds.append(prog)
        status["conditions"] = conds
        new = copy.deepcopy(d)
        new["status"] = status
        if new_rs:
            new["metadata"].setdefault("annotations", {})[REVISION] = \
                new_rs["metadata"].get("annotations", {}).get(REVISION, "1")
        if new["metadata"] != d["metadata"]:
            d = self.store.update(self.rt["Deployment"], {**new, "status": d.get("status")}, check_rv=False)
            new["metadata"] = d["metadata"]
        if new.get("status") != d.get("status"):
            self.store.update(self.rt["Deployment"], new, subresource="status", check_rv=False)

    @staticmethod
    def _condition(prev: dict | None, type_: str, ok: bool, reason: str, message: str, now: str) -> dict:
        status = "True" if ok else "False"
        if prev and prev.get("status") == status and prev.get("reason") == reason:
            return dict(prev, message=message)
        return {"type": type_, "status": status, "lastUpdateTime": now,
                "lastTransitionTime": prev["lastTransitionTime"] if prev and prev.get("status") == status else now,
                "reason": reason, "message": message}


class ReplicaSetController(_Workload):
    """ReplicaSet -> Pods."""

    kind = "ReplicaSet"

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_replicaset(ns, name)

    def sync_replicaset(self, ns: str, name: str) -> None:
        rsrt, prt = self.rt["ReplicaSet"], self.rt["Pod"]
        rs = self.store.find(rsrt, ns, name)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.store.items(prt, ns) if _owned_by(p, uid) and _active(p)]
        want = rs["spec"].get("replicas", 1)
        if len(pods) < want:
            created = parse_time(rs["metadata"]["creationTimestamp"]) if self.bootstrapping else None
            for i in range(want - len(pods)):
                pod = self._pod_from_template(rs, "ReplicaSet", f"{name}-", i + len(pods))
                pod = self.store.create(prt, pod, created=created)
                self.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                           "replicaset-controller", at=created)
                pods.append(pod)
        elif len(pods) > want:
            victims = sorted(pods, key=lambda p: (_pod_ready(p), p["metadata"]["creationTimestamp"]))
            for p in victims[: len(pods) - want]:
                self.store.delete(prt, ns, p["metadata"]["name"])
                self.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                           "replicaset-controller")
                pods.remove(p)
        ready = sum(1 for p in pods if _pod_ready(p))
        status = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                  "availableReplicas": ready, "observedGeneration": rs["metadata"].get("generation", 1)}
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if status != rs.get("status"):
            new = copy.deepcopy(rs)
            new["status"] = status
            self.store.update(rsrt, new, subresource="status", check_rv=False)


class StatefulSetController(_Workload):
    """StatefulSet -> ordinal pods."""

    kind = "StatefulSet"

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_statefulset(ns, name)

    def sync_statefulset(self, ns: str, name: str) -> None:
        """Pods ``<name>-<ordinal>``; a template change rolls them as the StatefulSet controller does.

        RollingUpdate replaces one pod at a time, from the highest ordinal down to
        ``partition``, and only while every pod is Ready: an updated pod that never becomes
        Ready stops the update with the set split between ``currentRevision`` and
        ``updateRevision``. OnDelete replaces nothing. A missing pod is created at the update
        revision.
        """
        srt, prt = self.registry.by_kind_any_version("StatefulSet"), self.rt["Pod"]
        sts = self.store.find(srt, ns, name)
        if sts is None:
            return
        uid = sts["metadata"]["uid"]
        revision = f"{name}-{pod_template_hash(sts['spec']['template'])}"
        pods = {p["metadata"]["name"]: p for p in self.store.items(prt, ns) if _owned_by(p, uid)}
        want = sts["spec"].get("replicas", 1)
        strategy = sts["spec"].get("updateStrategy") or {}
        partition = ((strategy.get("rollingUpdate") or {}).get("partition") or 0) \
            if strategy.get("type", "RollingUpdate") == "RollingUpdate" else want
        created = parse_time(sts["metadata"]["creationTimestamp"]) if self.bootstrapping else None

        def rev(pod: dict) -> str:
            return pod["metadata"].get("labels", {}).get("controller-revision-hash", "")

        if all(_pod_ready(p) for p in pods.values()):
            for i in range(want - 1, partition - 1, -1):  # at most one replacement per pass
                pod = pods.get(f"{name}-{i}")
                if pod is not None and rev(pod) != revision:
                    self.store.delete(prt, ns, pod["metadata"]["name"])
                    pods.pop(pod["metadata"]["name"])
                    break
        for i in range(want):
            pname = f"{name}-{i}"
            if pname not in pods:
                new = self._pod_from_template(sts, "StatefulSet", "", i, name=pname)
                new["metadata"]["labels"] = {**new["metadata"]["labels"], "controller-revision-hash": revision,
                                             "statefulset.kubernetes.io/pod-name": pname,
                                             "apps.kubernetes.io/pod-index": str(i)}
                new["spec"].setdefault("hostname", pname)
                pods[pname] = self.store.create(prt, new, created=created)
                self.event(sts, "Normal", "SuccessfulCreate",
                           f"create Pod {pname} in StatefulSet {name} successful", "statefulset-controller",
                           at=created)
        for pname in list(pods):
            if int(pname.rsplit("-", 1)[-1]) >= want:
                self.store.delete(prt, ns, pname)
                pods.pop(pname)
        ready = sum(1 for p in pods.values() if _pod_ready(p))
        updated = sum(1 for p in pods.values() if rev(p) == revision)
        old = sorted({rev(p) for p in pods.values()} - {revision})
        current = revision if updated == len(pods) else \
            ((sts.get("status") or {}).get("currentRevision") if (sts.get("status") or {}).get(
                "currentRevision") in old else old[0])
        status = {"observedGeneration": sts["metadata"].get("generation", 1), "replicas": len(pods),
                  "readyReplicas": ready, "currentReplicas": sum(1 for p in pods.values() if rev(p) == current),
                  "updatedReplicas": updated, "availableReplicas": ready, "currentRevision": current,
                  "updateRevision": revision, "collisionCount": 0}
        if status != sts.get("status"):
            new = copy.deepcopy(sts)
            new["status"] = status
            self.store.update(srt, new, subresource="status", check_rv=False)


class DaemonSetController(_Workload):
    """DaemonSet -> one pod per eligible node; a Node change reconciles every DaemonSet."""

    kind = "DaemonSet"

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        yield from super().watches(change)
        if change.entry.obj.get("kind") == "Node":
            yield "", EVERY

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_daemonset(ns, name)

    def sync_daemonset(self, ns: str, name: str) -> None:
        """One pod per eligible node (nodeSelector, taints), bound by the scheduler like any pod.

        As in Kubernetes since 1.12, the pod is pinned to its node by a required node
        affinity and the scheduler binds it; a node without room for it leaves the pod
        Pending (FailedScheduling), so the DaemonSet counts it scheduled but not available.
        """
        drt, prt = self.rt["DaemonSet"], self.rt["Pod"]
        ds = self.store.find(drt, ns, name)
        if ds is None:
            return
        uid = ds["metadata"]["uid"]
        pod_spec = ds["spec"]["template"].get("spec") or {}
        nodes = [n["metadata"]["name"] for n in self.store.items(self.rt["Node"])
                 if not (n.get("spec") or {}).get("unschedulable") and _node_eligible(n, pod_spec)]
        pods = [p for p in self.store.items(prt, ns) if _owned_by(p, uid)]
        by_node = {p["spec"].get("nodeName") or (_affinity_nodes(p) or [""])[0]: p for p in pods}
        created = parse_time(ds["metadata"]["creationTimestamp"]) if self.bootstrapping else None
        index = {n: i for i, n in enumerate(nodes)}
        usage = self._node_usage() if set(nodes) - set(by_node) else {}
        for node in nodes:
            if node not in by_node:
                pod = self._pod_from_template(ds, "DaemonSet", f"{name}-", index[node])
                pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                            "values": [node]}]}]}}}
                if not self._misfit(pod, node, usage):
                    pod["spec"]["nodeName"] = node
                    acc = usage.setdefault(node, {"cpu": 0.0, "memory": 0.0, "ports": set()})
                    for r, v in _requests(pod["spec"]).items():
                        acc[r] += v
                    acc["ports"] |= _host_ports(pod["spec"])
                by_node[node] = self.store.create(prt, pod, created=created)
                self.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                           "daemonset-controller", at=created)
        for node, p in list(by_node.items()):
            if node not in index:
                self.store.delete(prt, ns, p["metadata"]["name"])
                del by_node[node]
        ready = sum(1 for p in by_node.values() if _pod_ready(p))
        status = {"currentNumberScheduled": len(by_node), "desiredNumberScheduled": len(nodes),
                  "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                  "updatedNumberScheduled": len(by_node),
                  "observedGeneration": ds["metadata"].get("generation", 1)}
        if ready < len(nodes):
            status["numberUnavailable"] = len(nodes) - ready
        if status != ds.get("status"):
            new = copy.deepcopy(ds)
            new["status"] = status
            self.store.update(drt, new, subresource="status", check_rv=False)


class Kubelet(_Base):
    """The scheduler and the kubelet: a Pod is bound to a node and gets the status its container would have."""

    kind = "Pod"

    def __init__(self, cluster: Controllers) -> None:
        super().__init__(cluster)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._failing: set[tuple[str, str]] = set()  # pods whose status moves with time

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        obj = change.entry.obj
        if obj.get("kind") != "Pod":
            return
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        failing = (meta.get("annotations") or {}).get(FAIL_ANNOTATION) in FAILURES
        # a pod with a deadline moves with time too, until it has ended
        failing = failing or bool((obj.get("spec") or {}).get("activeDeadlineSeconds")) and \
            (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        with self._lock:
            if failing and change.type != "DELETED":
                self._failing.add((ns, meta["name"]))
            else:
                self._failing.discard((ns, meta["name"]))
        yield ns, meta["name"]

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_pod(ns, name)

    def on_tick(self) -> None:
        """Crash loops restart and failing pods keep emitting events."""
        with self._lock:
            failing = sorted(self._failing)
        for ns, name in failing:
            self.sync_pod(ns, name)

    def sync_pod(self, ns: str, name: str) -> None:
        prt = self.rt["Pod"]
        pod = self.store.find(prt, ns, name)
        if pod is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        created = parse_time(pod["metadata"]["creationTimestamp"]) or self.now()
        if not pod["spec"].get("nodeName"):
            node = self._schedule(pod)
            if node is None:
                self._unschedulable(pod, created)
                return
            new = copy.deepcopy(pod)
            new["spec"]["nodeName"] = node
            pod = self.store.update(prt, new, check_rv=False)
            self.event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                       "default-scheduler", at=created)
        status = self.pod_status(pod, self.now())
        if status != pod.get("status"):
            first_start = not (pod.get("status") or {}).get("containerStatuses")
            new = copy.deepcopy(pod)
            new["status"] = status
            pod = self.store.update(prt, new, subresource="status", check_rv=False)
            if first_start:
                self._start_events(pod, created)
        self._failure_events(pod)

    def _schedule(self, pod: dict) -> str | None:
        pinned = _affinity_nodes(pod)
        if pinned is not None:  # a DaemonSet pod: its node, if it has room
            fits = [n for n in pinned if self.store.find(self.rt["Node"], None, n) and not self._misfit(pod, n)]
            return fits[0] if fits else None
        nodes = [n for n in self.store.items(self.rt["Node"]) if not (n.get("spec") or {}).get("unschedulable")]
        if not nodes:
            return None
        names = [n["metadata"]["name"] for n in nodes]
        # spread deterministically by the pod name, like a scheduler balancing by count
        return names[int(hashlib.sha256(pod["metadata"]["name"].encode()).hexdigest(), 16) % len(names)]

    def _unschedulable(self, pod: dict, created: datetime) -> None:
        """A pod no node can take: Pending with PodScheduled=False, and a FailedScheduling event."""
        if (pod.get("status") or {}).get("conditions"):
            return
        total = len(self.store.items(self.rt["Node"]))
        pinned = [n for n in _affinity_nodes(pod) or [] if self.store.find(self.rt["Node"], None, n)]
        why = self._misfit(pod, pinned[0]) if pinned else ""
        message = (f"0/{total} nodes are available: 1 {why}, {total - 1} node(s) didn't match Pod's node "
                   f"affinity/selector. preemption: 0/{total} nodes are available: 1 No preemption victims "
                   f"found for incoming pod, {total - 1} Preemption is not helpful for scheduling.") \
            if why else f"0/{total} nodes are available."
        new = copy.deepcopy(pod)
        new["status"] = {"phase": "Pending", "qosClass": "Burstable", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": None, "lastTransitionTime": rfc3339(created)}]}
        pod = self.store.update(self.rt["Pod"], new, subresource="status", check_rv=False)
        self.event(pod, "Warning", "FailedScheduling", message, "default-scheduler", at=created)

    def _node_index(self, node: str) -> int:
        digits = "".join(ch for ch in node if ch.isdigit())
        return int(digits) if digits else 1

    def pod_status(self, pod: dict, now: datetime) -> dict:
        """What the kubelet would report for this pod at `now`."""
        meta, spec = pod["metadata"], pod["spec"]
        created = parse_time(meta["creationTimestamp"]) or now
        started = created + timedelta(seconds=2)
        node = spec.get("nodeName", "")
        old = pod.get("status") or {}
        fail = (meta.get("annotations") or {}).get(FAIL_ANNOTATION, "")
        n = self._node_index(node)
        ip = old.get("podIP") or f"10.244.{n}.{int(hashlib.sha256(meta['uid'].encode()).hexdigest(), 16) % 250 + 2}"
        ts = rfc3339(started)
        containers = []
        all_ready = True
        phase = "Running"
        for c in spec.get("containers") or []:
            cid = "containerd://" + hashlib.sha256(f"{meta['uid']}/{c['name']}".encode()).hexdigest()
            image = c.get("image", "")
            image_id = f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"
            st = {"name": c["name"], "image": image, "imageID": image_id, "containerID": cid,
                  "restartCount": 0, "started": True, "ready": True,
                  "state": {"running": {"startedAt": ts}}, "lastState": {}}
            if fail in ("CrashLoopBackOff", "OOMKilled"):
                restarts, life_start, death, next_start = crash_history(started, now)
                reason, code = ("OOMKilled", 137) if fail == "OOMKilled" else ("Error", 1)
                st["restartCount"] = restarts
                st["ready"] = False
                if next_start is None:  # alive now; the previous life (if any) died
                    st["state"] = {"running": {"startedAt": rfc3339(life_start)}}
                    if restarts:
                        prev_death = life_start - timedelta(seconds=min(BACKOFF_START * 2 ** (restarts - 1),
                                                                          BACKOFF_MAX))
                        st["lastState"] = {"terminated": {
                            "exitCode": code, "reason": reason, "containerID": cid,
                            "startedAt": rfc3339(prev_death - timedelta(seconds=CRASH_RUNTIME)),
                            "finishedAt": rfc3339(prev_death)}}
                else:
                    backoff = int((next_start - death).total_seconds())
                    pretty = f"{backoff // 60}m{backoff % 60}s" if backoff >= 60 else f"{backoff}s"
                    st["started"] = False
                    st["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                   f"back-off {pretty} restarting failed container={c['name']} "
                                   f"pod={meta['name']}_{meta['namespace']}({meta['uid']})"}}
                    st["lastState"] = {"terminated": {"exitCode": code, "reason": reason, "containerID": cid,
                                                      "startedAt": rfc3339(life_start),
                                                      "finishedAt": rfc3339(death)}}
            elif fail == "ImagePullBackOff":
                phase = "Pending"
                st.update(started=False, ready=False, state={"waiting": {
                    "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}})
                st.pop("containerID")
                st["imageID"] = ""
            elif fail == "NotReady":
                st["ready"] = False
            all_ready &= st["ready"]
            containers.append(st)
        cond_time = ts
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": cond_time},
            {"type": "Initialized", "status": "True", "lastTransitionTime": rfc3339(created)},
            {"type": "Ready", "status": "True" if all_ready else "False", "lastTransitionTime": cond_time},
            {"type": "ContainersReady", "status": "True" if all_ready else "False", "lastTransitionTime": cond_time},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc3339(created)},
        ]
        for cond in conditions[2:4]:
            if not all_ready:
                names = [c["name"] for c in containers if not c["ready"]]
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{' '.join(names)}]"
        # keep transition times stable across recomputations
        old_conds = {c["type"]: c for c in old.get("conditions") or []}
        for cond in conditions:
            prev = old_conds.get(cond["type"])
            if prev and prev.get("status") == cond["status"]:
                cond["lastTransitionTime"] = prev["lastTransitionTime"]
        out = {"phase": phase, "conditions": conditions, "hostIP": f"192.168.0.{10 + n}",
               "hostIPs": [{"ip": f"192.168.0.{10 + n}"}], "podIP": ip, "podIPs": [{"ip": ip}],
               "startTime": rfc3339(created), "containerStatuses": containers,
               "qosClass": old.get("qosClass", "BestEffort")}
        ephemeral = self._ephemeral_statuses(pod, now)
        if ephemeral:
            out["ephemeralContainerStatuses"] = ephemeral
        deadline = spec.get("activeDeadlineSeconds")
        if deadline and now >= created + timedelta(seconds=int(deadline)):
            out = _deadline_exceeded(out, created + timedelta(seconds=int(deadline)))
        return out

    @staticmethod
    def _ephemeral_statuses(pod: dict, now: datetime) -> list[dict]:
        """Ephemeral containers (kubectl debug) start as soon as they are added, and keep their start time."""
        old = {s["name"]: s for s in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []}
        out = []
        for c in pod["spec"].get("ephemeralContainers") or []:
            if c["name"] in old:
                out.append(old[c["name"]])
                continue
            image = c.get("image", "")
            out.append({"name": c["name"], "image": image,
                        "imageID": f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}",
                        "containerID": "containerd://" + hashlib.sha256(
                            f"{pod['metadata']['uid']}/{c['name']}".encode()).hexdigest(),
                        "restartCount": 0, "ready": False, "state": {"running": {"startedAt": rfc3339(now)}},
                        "lastState": {}})
        return out

    def _start_events(self, pod: dict, at: datetime) -> None:
        node = pod["spec"].get("nodeName", "")
        fail = (pod["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION, "")
        image = pod["spec"]["containers"][0].get("image", "")
        name = pod["spec"]["containers"][0]["name"]
        src = f"kubelet,{node}"
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', src, at=at)
        if fail == "ImagePullBackOff":
            self.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": rpc error: code = NotFound '
                       f'desc = failed to pull and unpack image "{image}": not found', src, at=at)
            self.event(pod, "Warning", "Failed", "Error: ErrImagePull", src, at=at)
            return
        self.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}" in 1.2s', src, at=at)
        self.event(pod, "Normal", "Created", f"Created container {name}", src, at=at)
        self.event(pod, "Normal", "Started", f"Started container {name}", src, at=at)

    def _failure_events(self, pod: dict) -> None:
        fail = (pod["metadata"].get("annotations") or {}).get(FAIL_ANNOTATION, "")
        if fail not in FAILURES:
            return
        node = pod["spec"].get("nodeName", "")
        src = f"kubelet,{node}"
        c = pod["spec"]["containers"][0]
        st = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        if fail in ("CrashLoopBackOff", "OOMKilled"):
            restarts = st.get("restartCount", 0)
            if restarts and self._bumped(pod, "BackOff", restarts):
                started = parse_time(pod["metadata"]["creationTimestamp"]) or self.now()
                self.event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                           f"{c['name']} in pod {pod['metadata']['name']}_{pod['metadata']['namespace']}"
                           f"({pod['metadata']['uid']})", src, count=restarts,
                           first=started + timedelta(seconds=CRASH_RUNTIME + 2))
        elif fail == "ImagePullBackOff":
            self.event(pod, "Normal", "BackOff", f'Back-off pulling image "{c.get("image")}"', src)
            self.event(pod, "Warning", "Failed", "Error: ImagePullBackOff", src)
        elif fail == "NotReady":
            self.event(pod, "Warning", "Unhealthy",
                       "Readiness probe failed: HTTP probe failed with statuscode: 503", src)

    def _bumped(self, pod: dict, reason: str, count: int) -> bool:
        """Has the failure count moved since we last recorded an event for it?"""
        key = (pod["metadata"]["uid"], reason)
        seen = self._seen.get(key)
        self._seen[key] = count
        return seen != count


class EndpointsController(_Base):
    """Service -> Endpoints and EndpointSlice from its ready pods; a Pod change reconciles its namespace's Services."""

    kind = "Endpoints"
    lists = "Service"

    def watches(self, change: Change) -> Iterable[tuple[str, str]]:
        obj = change.entry.obj
        ns = obj["metadata"].get("namespace", "")
        if obj.get("kind") == "Pod":
            yield ns, EVERY
        if obj.get("kind") == "Service":
            yield ns, obj["metadata"]["name"]

    def reconcile(self, ns: str, name: str) -> None:
        self.sync_endpoints(ns, name)

    def sync_endpoints(self, ns: str, name: str) -> None:
        srt, ert, esrt = self.rt["Service"], self.rt["Endpoints"], self.rt["EndpointSlice"]
        svc = self.store.find(srt, ns, name)
        if svc is None:
            for rt, n in ((ert, name),):
                if self.store.find(rt, ns, n):
                    self.store.delete(rt, ns, n)
            return
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return
        pods = [p for p in self.store.items(self.rt["Pod"], ns)
                if _active(p) and (p.get("status") or {}).get("podIP")
                and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
        # A named targetPort is looked up in each pod's containers (podutil.FindPort): a pod
        # without that port is left out of Endpoints; its EndpointSlice entry stays, but the
        # slice lists only the ports its pods resolve (none when no pod has the named port).
        svc_ports = (svc.get("spec") or {}).get("ports") or []
        resolved: dict[str, list[dict]] = {}
        for p in pods:
            ports_of_pod = []
            for sp in svc_ports:
                target = _find_port(p, sp)
                if target is None:
                    continue
                port = {"port": target, "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    port["name"] = sp["name"]
                ports_of_pod.append(port)
            resolved[p["metadata"]["name"]] = ports_of_pod
        listed = [p for p in pods if resolved[p["metadata"]["name"]]] if svc_ports else pods
        ready = [p for p in listed if _pod_ready(p)]
        not_ready = [p for p in listed if not _pod_ready(p)]
        if pods:
            ports = resolved[pods[0]["metadata"]["name"]]
        else:  # no pod to resolve a named port in
            ports = [{"port": sp.get("targetPort", sp.get("port")), "protocol": sp.get("protocol", "TCP"),
                      **({"name": sp["name"]} if sp.get("name") else {})} for sp in svc_ports]

        def addr(p):
            return {"ip": p["status"]["podIP"], "nodeName": p["spec"].get("nodeName"),
                    "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                  "uid": p["metadata"]["uid"]}}

        subset = {}
        if ready:
            subset["addresses"] = [addr(p) for p in ready]
        if not_ready:
            subset["notReadyAddresses"] = [addr(p) for p in not_ready]
        if subset:
            subset["ports"] = ports
        ep = {"apiVersion": "v1", "kind": "Endpoints",
              "metadata": {"name": name, "namespace": ns, "labels": dict(svc["metadata"].get("labels") or {})},
              "subsets": [subset] if subset else []}
        old = self.store.find(ert, ns, name)
        if old is None:
            self.store.create(ert, ep)
        elif old.get("subsets") != ep["subsets"]:
            self.store.update(ert, {**copy.deepcopy(old), "subsets": ep["subsets"]}, check_rv=False)
        slice_name = f"{name}-{names.suffix(svc['metadata']['uid'])}"
        es = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
              "metadata": {"name": slice_name, "namespace": ns,
                           "labels": {"kubernetes.io/service-name": name,
                                      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                           "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                                "uid": svc["metadata"]["uid"], "controller": True,
                                                "blockOwnerDeletion": True}]},
              "endpoints": [{"addresses": [p["status"]["podIP"]],
                             "conditions": {"ready": _pod_ready(p), "serving": _pod_ready(p), "terminating": False},
                             "nodeName": p["spec"].get("nodeName"),
                             "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                                           "uid": p["metadata"]["uid"]}} for p in pods],
              "ports": ports}
        old_es = self.store.find(esrt, ns, slice_name)
        if old_es is None:
            self.store.create(esrt, es)
        elif (old_es.get("endpoints"), old_es.get("ports")) != (es["endpoints"], es["ports"]):
            self.store.update(esrt, {**copy.deepcopy(old_es), "endpoints": es["endpoints"], "ports": ports},
                              check_rv=False)


# The controllers with their priority: a pass reconciles its work in this order (equal priorities by kind),
# so a deleted namespace is emptied first, owners come before what they own and pods before the
# endpoints that list them.
CONTROLLERS: tuple[tuple[int, Callable[[Controllers], Controller]], ...] = (
    (0, NamespaceCollector),
    (1, GarbageCollector),
    (2, DeploymentController),
    (3, DaemonSetController),
    (3, StatefulSetController),
    (4, ReplicaSetController),
    (5, Kubelet),
    (6, EndpointsController),
)


class Controllers(WorkLoop):
    """Every controller of :data:`CONTROLLERS` on one worker thread, fed by store changes and a tick."""

    thread_name = "sandbox-controllers"

    def __init__(self, store: Store, registry: Registry, tick: float = 2.0):
        super().__init__(tick)
        self.store, self.registry = store, registry
        self.clock = store.clock
        self.bootstrapping = False
        self.rt = {k: registry.by_kind_any_version(k) for k in (
            "Pod", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Service", "Endpoints",
            "EndpointSlice", "Event", "Node", "Namespace")}
        self.controllers: dict[str, Controller] = {}
        self.priority: dict[str, int] = {}
        for priority, make in CONTROLLERS:
            controller = make(self)
            self.controllers[controller.kind] = controller
            self.priority[controller.kind] = priority
        self.kubelet = self.controllers["Pod"]
        store.add_listener(self._on_change)

    # ---- plumbing ----------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        self.enqueue({(kind, ns, name) for kind, c in self.controllers.items() for ns, name in c.watches(change)})

    def ordered(self, work: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Work items by priority (:data:`CONTROLLERS`), then kind; one object before all (:data:`EVERY`)."""
        return sorted(work, key=lambda w: (self.priority[w[0]], w[0], w[2] == EVERY, w[1], w[2]))

    def process(self, work: set[tuple[str, str, str]]) -> None:
        """Reconcile each (kind, namespace, name) once, in :meth:`ordered` order."""
        for kind, ns, name in self.ordered(work):
            controller = self.controllers[kind]
            try:
                if name != EVERY:
                    controller.reconcile(ns, name)
                    continue
                for obj in self.store.items(self.rt[controller.lists], ns or None):
                    controller.reconcile(obj["metadata"]["namespace"], obj["metadata"]["name"])
            except ApiError as e:
                if e.code not in (404, 409):
                    log.warning("controller %s %s/%s: %s", kind, ns, name, e.message)

    def on_tick(self) -> None:
        """Advance time: crash loops restart, failing pods keep emitting events, deadlines pass.

        Bottom up (reverse priority): pods move first, then the owners that read them.
        """
        for controller in reversed(self.controllers.values()):
            controller.on_tick()

    # ---- shared --------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def event(self, obj: dict, type_: str, reason: str, message: str, component: str,
              at: datetime | None = None, count: int | None = None, first: datetime | None = None) -> None:
        """Record an Event, folding repeats into count/lastTimestamp like the event recorder.

        `count`/`first` set the series explicitly (a back-dated crash loop has been
        backing off for hours, not since the sandbox started).
        """
        rt = self.rt["Event"]
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        at = at or self.now()
        name = f"{meta['name']}.{names.suffix(meta.get('uid', '') + reason + message, 16)}"
        existing = self.store.find(rt, ns, name)
        if existing:
            new = copy.deepcopy(existing)
            new["count"] = count if count is not None else existing.get("count", 1) + 1
            new["lastTimestamp"] = rfc3339(at)
            self.store.update(rt, new, check_rv=False)
            return
        host = component.split(",", 1)[1].strip() if "," in component else ""
        ev = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"kind": obj.get("kind"), "namespace": meta.get("namespace"),
                               "name": meta["name"], "uid": meta.get("uid"),
                               "apiVersion": obj.get("apiVersion"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": type_, "count": count or 1,
            "source": {"component": component.split(",")[0], **({"host": host} if host else {})},
            "firstTimestamp": rfc3339(first or at), "lastTimestamp": rfc3339(at),
            "reportingComponent": component.split(",")[0], "reportingInstance": host,
        }
        if obj.get("kind") == "Pod" and reason in ("Pulling", "Pulled", "Created", "Started", "BackOff",
                                                   "Failed", "Unhealthy", "Killing"):
            ev["involvedObject"]["fieldPath"] = f"spec.containers{{{obj['spec']['containers'][0]['name']}}}"
        try:
            self.store.create(rt, ev, created=at)
        except ApiError:
            pass

    def pod_status(self, pod: dict, now: datetime) -> dict:
        """What the kubelet would report for this pod at `now`."""
        return self.kubelet.pod_status(pod, now)
