"""The rest of kube-controller-manager: Jobs, CronJobs, PDBs, HPAs, volumes, quotas, tokens, RBAC.

Why this module exists: controllers.py brings workloads to life (Deployments,
ReplicaSets, Pods, Endpoints). Runbooks also look at what the other
controllers report -- a CronJob whose last Job failed, a Job past its
deadline, a PVC stuck Pending, an HPA pinned at its maximum, a PDB that blocks
a drain, a namespace at its quota -- so those controllers run here, on their own
thread, with the real status fields, conditions and wording:

* **job**: pods from the template (``parallelism``/``completions``), counted
  into ``active``/``succeeded``/``failed``/``ready``; ``Complete`` (after
  ``SuccessCriteriaMet``) or ``Failed`` (after ``FailureTarget``) with reason
  ``BackoffLimitExceeded`` or ``DeadlineExceeded``; ``suspend``. A sandbox pod
  of a Job runs for ``sandbox.kube-runbooks.io/runtime`` (default 2s) and exits
  with ``sandbox.kube-runbooks.io/exit-code`` (default 0) -- unless
  ``process_runtime`` claims it (podrunner.py: the pod's command really runs).
* **cronjob**: a Job per schedule time (``NAME-<minutes since epoch>``,
  ``batch.kubernetes.io/cronjob-scheduled-timestamp``), ``concurrencyPolicy``,
  ``suspend``, ``startingDeadlineSeconds``, ``timeZone``, history limits,
  ``active``/``lastScheduleTime``/``lastSuccessfulTime``.
* **disruption**: PDB status (``disruptionsAllowed`` ...), see virtual.py for evictions.
* **horizontal-pod-autoscaler**: utilization from metrics.k8s.io (metrics.py), desired
  replicas with the 10% tolerance, ``AbleToScale``/``ScalingActive``/``ScalingLimited``.
* **persistentvolume-binder**: PVCs bind to matching Available PVs, or get a
  provisioned one from their StorageClass; no match leaves them Pending with the
  binder's event.
* **resourcequota**: ``status.used`` for the quota's ``hard`` keys (admission refuses
  creates beyond it, see :func:`check_quota`).
* **serviceaccount-token** (legacy token Secrets), **clusterrole-aggregation**, and the
  Leases the control plane and kubelets renew.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import names
from .store import ApiError, Change, rfc3339
from .workloop import WorkLoop

if TYPE_CHECKING:
    from .server import ApiServer

log = logging.getLogger(__name__)

RUNTIME_ANNOTATION = "sandbox.kube-runbooks.io/runtime"
EXIT_CODE_ANNOTATION = "sandbox.kube-runbooks.io/exit-code"
FAIL_ANNOTATION = "sandbox.kube-runbooks.io/fail"
SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
LEASE_RENEW = 10.0  # seconds between lease renewals (kubelet and leader election renew about this often)


def _ts(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _micro(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _duration(text: str, default: float) -> float:
    from .scenario import parse_duration

    try:
        return parse_duration(text).total_seconds() if text else default
    except ValueError:
        return default


def _cond(status: dict, type_: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _finished(job: dict) -> str:
    status = job.get("status") or {}
    for t in ("Complete", "Failed"):
        c = _cond(status, t)
        if c and c.get("status") == "True":
            return t
    return ""


def _owner(obj: dict, kind: str) -> str | None:
    return next((r.get("name") for r in obj["metadata"].get("ownerReferences") or []
                 if r.get("kind") == kind and r.get("controller")), None)


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


# ---- cron schedules ------------------------------------------------------------------------

_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10,
          "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}


def _cron_field(text: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", "?"):
            a, b = lo, hi
        elif "-" in part:
            x, y = part.split("-", 1)
            a, b = int(_NAMES.get(x.lower(), x)), int(_NAMES.get(y.lower(), y))
        else:
            a = int(_NAMES.get(part.lower(), part))
            b = hi if step > 1 else a
        if a < lo or b > hi or a > b or step < 1:
            raise ValueError(f"{text!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return out


class Cron:
    """A standard five-field schedule (with the @macros), as robfig/cron parses it for CronJobs."""

    def __init__(self, schedule: str):
        text = _MACROS.get(schedule.strip(), schedule.strip())
        if text.startswith("TZ=") or text.startswith("CRON_TZ="):
            raise ValueError("CRON_TZ or TZ used in schedule is not supported, use the spec.timeZone field")
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {schedule!r}")
        self.minute = _cron_field(fields[0], 0, 59)
        self.hour = _cron_field(fields[1], 0, 23)
        self.dom = _cron_field(fields[2], 1, 31)
        self.month = _cron_field(fields[3], 1, 12)
        dow = _cron_field(fields[4].replace("7", "0") if fields[4] == "7" else fields[4], 0, 7)
        self.dow = {d % 7 for d in dow}
        self.dom_star, self.dow_star = fields[2] in ("*", "?"), fields[4] in ("*", "?")

    def matches(self, t: datetime) -> bool:
        if t.minute not in self.minute or t.hour not in self.hour or t.month not in self.month:
            return False
        dom_ok, dow_ok = t.day in self.dom, (t.weekday() + 1) % 7 in self.dow
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def latest(self, now: datetime, since: datetime, limit: int = 60 * 24 * 8) -> datetime | None:
        """The most recent schedule time in (since, now], or None."""
        t = now.replace(second=0, microsecond=0)
        for _ in range(limit):
            if t <= since:
                return None
            if self.matches(t):
                return t
            t -= timedelta(minutes=1)
        return None

    def next_after(self, t: datetime, limit: int = 60 * 24 * 366) -> datetime | None:
        t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(limit):
            if self.matches(t):
                return t
            t += timedelta(minutes=1)
        return None


# ---- quantities ------------------------------------------------------------------------------


def quantity(text: Any) -> float:
    from .promgen import parse_quantity

    return parse_quantity(text) or 0.0


def format_quantity(value: float, resource: str) -> str:
    """A quantity in the canonical form the API writes (``750m``, ``384Mi``, ``12``)."""
    if resource.endswith("cpu"):
        millis = round(value * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    if resource.endswith(("memory", "storage", "ephemeral-storage")):
        n = round(value)
        for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if n and n % size == 0:
                return f"{n // size}{suffix}"
        return str(n)
    return str(round(value))


# ---- resource quota usage (also used by admission) --------------------------------------------

_COUNTED = {"pods": ("Pod", ""), "services": ("Service", ""), "configmaps": ("ConfigMap", ""),
            "secrets": ("Secret", ""), "persistentvolumeclaims": ("PersistentVolumeClaim", ""),
            "replicationcontrollers": ("ReplicationController", ""), "resourcequotas": ("ResourceQuota", "")}


def _pod_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def object_usage(kind: str, obj: dict) -> dict[str, float]:
    """What one object adds to a quota (``pods``, ``requests.cpu``, ``count/jobs.batch`` ...)."""
    out: dict[str, float] = {}
    plural = {v[0]: k for k, v in _COUNTED.items()}.get(kind)
    if plural:
        out[plural] = 1
        out[f"count/{plural}"] = 1
    if kind == "Pod":
        if _pod_terminal(obj):
            return {}
        for c in (obj.get("spec") or {}).get("containers") or []:
            res = c.get("resources") or {}
            for which in ("requests", "limits"):
                for name, value in (res.get(which) or {}).items():
                    out[f"{which}.{name}"] = out.get(f"{which}.{name}", 0) + quantity(value)
                    if which == "requests":
                        out[name] = out.get(name, 0) + quantity(value)
        out.update({"count/pods": 1})
    if kind == "PersistentVolumeClaim":
        req = quantity((((obj.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
        out["requests.storage"] = req
        cls = (obj.get("spec") or {}).get("storageClassName")
        if cls:
            out[f"{cls}.storageclass.storage.k8s.io/requests.storage"] = req
            out[f"{cls}.storageclass.storage.k8s.io/persistentvolumeclaims"] = 1
    if kind == "Service":
        t = (obj.get("spec") or {}).get("type")
        if t == "LoadBalancer":
            out["services.loadbalancers"] = 1
        if t in ("NodePort", "LoadBalancer"):
            out["services.nodeports"] = len((obj.get("spec") or {}).get("ports") or [])
    return out


def namespace_usage(api: ApiServer, namespace: str, keys: list[str]) -> dict[str, float]:
    used = {k: 0.0 for k in keys}
    wanted_kinds = set()
    for k in keys:
        base = k.removeprefix("count/")
        if "." in base and k.startswith("count/"):
            plural, group = base.split(".", 1)
            rt = api.registry.lookup(group, next(iter(api.registry.group_versions().get(group, ["v1"]))), plural)
            if rt is not None:
                used[k] = float(len(api.store.items(rt, namespace)))
            continue
        wanted_kinds.update({"Pod"} if k.split(".")[-1] in ("cpu", "memory", "ephemeral-storage", "pods")
                            or k.startswith(("requests.", "limits.")) else set())
        if base in _COUNTED:
            wanted_kinds.add(_COUNTED[base][0])
        if "storage" in k or "persistentvolumeclaims" in k:
            wanted_kinds.add("PersistentVolumeClaim")
        if k.startswith("services."):
            wanted_kinds.add("Service")
    for kind in wanted_kinds:
        rt = api.registry.by_kind_any_version(kind, "")
        if rt is None:
            continue
        for obj in api.store.items(rt, namespace):
            for key, value in object_usage(kind, obj).items():
                if key in used:
                    used[key] += value
    return used


def check_quota(api: ApiServer, kind: str, obj: dict, namespace: str) -> None:
    """Refuse a create that would exceed a ResourceQuota, worded as the quota admission plugin does."""
    if kind not in {v[0] for v in _COUNTED.values()} or kind == "ResourceQuota":
        return
    rq_rt = api.registry.by_kind_any_version("ResourceQuota", "")
    if rq_rt is None:
        return
    adds = object_usage(kind, obj)
    if not adds:
        return
    for quota in api.store.items(rq_rt, namespace):
        hard = (quota.get("spec") or {}).get("hard") or {}
        keys = [k for k in hard if k in adds]
        if not keys:
            continue
        used = namespace_usage(api, namespace, keys)
        over = [k for k in sorted(keys) if used[k] + adds[k] > quantity(hard[k]) + 1e-9]
        if over:
            rt = api.registry.by_kind_any_version(kind, "")
            plural = rt.plural if rt else kind.lower() + "s"
            name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")

            def fmt(values: dict[str, float], keys: list[str]) -> str:
                return ",".join(f"{k}={format_quantity(values[k], k)}" for k in keys)

            raise ApiError(403, "Forbidden", f'{plural} "{name}" is forbidden: exceeded quota: '
                           f'{quota["metadata"]["name"]}, requested: {fmt(adds, over)}, used: {fmt(used, over)}, '
                           f"limited: {','.join(f'{k}={hard[k]}' for k in over)}",
                           {"name": name, "kind": plural})


# ---- the controllers -------------------------------------------------------------------------


class ClusterControllers(WorkLoop):
    """Job, CronJob, disruption, HPA, PV binder, quota, token, aggregation and lease controllers."""

    thread_name = "sandbox-cluster-controllers"

    def __init__(self, api: ApiServer, tick: float = 2.0):
        super().__init__(tick)
        self.api, self.store, self.registry = api, api.store, api.registry
        self._last_lease = 0.0
        self._reported: set[tuple[str, str, str]] = set()
        # A runtime that really runs some pods (podrunner.PodRunner: pods of chosen images as local
        # processes); the Job controller's pods it claims end when their process ends.
        self.process_runtime: Any = None
        r = self.registry
        self.rt = {k: r.by_kind_any_version(k, g) for k, g in (
            ("Pod", ""), ("Job", "batch"), ("CronJob", "batch"), ("PodDisruptionBudget", "policy"),
            ("HorizontalPodAutoscaler", "autoscaling"), ("PersistentVolumeClaim", ""), ("PersistentVolume", ""),
            ("StorageClass", "storage.k8s.io"), ("ResourceQuota", ""), ("Secret", ""), ("ServiceAccount", ""),
            ("ClusterRole", "rbac.authorization.k8s.io"), ("Lease", "coordination.k8s.io"), ("Node", ""),
            ("Namespace", ""), ("Event", ""), ("Deployment", "apps"), ("StatefulSet", "apps"),
            ("ReplicaSet", "apps"))}
        self.store.add_listener(self._on_change)

    # ---- plumbing --------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        obj = change.entry.obj
        meta = obj["metadata"]
        kind, ns, name = obj.get("kind", ""), meta.get("namespace", ""), meta["name"]
        work: set[tuple[str, str, str]] = set()
        if kind in ("Job", "CronJob", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim",
                    "ResourceQuota"):
            work.add((kind, ns, name))
        if kind == "Job" and _owner(obj, "CronJob"):
            work.add(("CronJob", ns, _owner(obj, "CronJob") or ""))
        if kind == "Pod":
            job = _owner(obj, "Job")
            if job:
                work.add(("Job", ns, job))
            work.add(("PDB*", ns, ""))
        if kind in ("PersistentVolume", "StorageClass"):
            work.add(("PVC*", "", ""))
        if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token" and \
                change.type != "DELETED":
            work.add(("TokenSecret", ns, name))
        if kind == "ClusterRole":
            work.add(("Aggregate", "", ""))
        if ns and kind in ("Pod", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim",
                           "ReplicationController"):
            work.add(("Quota*", ns, ""))
        self.enqueue(work)

    def process(self, work: set[tuple[str, str, str]]) -> None:
        handlers = {
            "Job": self.sync_job, "CronJob": self.sync_cronjob, "PodDisruptionBudget": self.sync_pdb,
            "HorizontalPodAutoscaler": self.sync_hpa, "PersistentVolumeClaim": self.sync_pvc,
            "ResourceQuota": self.sync_quota, "TokenSecret": self.sync_token_secret,
        }
        for kind, ns, name in sorted(work):
            try:
                if kind in handlers:
                    handlers[kind](ns, name)
                elif kind == "PDB*":
                    for pdb in self.store.items(self.rt["PodDisruptionBudget"], ns):
                        self.sync_pdb(ns, pdb["metadata"]["name"])
                elif kind == "PVC*":
                    for pvc in self.store.items(self.rt["PersistentVolumeClaim"]):
                        self.sync_pvc(pvc["metadata"]["namespace"], pvc["metadata"]["name"])
                elif kind == "Quota*":
                    for q in self.store.items(self.rt["ResourceQuota"], ns):
                        self.sync_quota(ns, q["metadata"]["name"])
                elif kind == "Aggregate":
                    self.aggregate_cluster_roles()
            except ApiError as e:
                if e.code not in (404, 409):
                    log.warning("controller %s %s/%s: %s", kind, ns, name, e.message)

    def on_tick(self) -> None:
        for kind in ("Job", "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            for obj in self.store.items(self.rt[kind]):
                if kind == "Job" and _finished(obj):
                    continue
                self.process({(kind, obj["metadata"]["namespace"], obj["metadata"]["name"])})
        if time.monotonic() - self._last_lease >= LEASE_RENEW:
            self._last_lease = time.monotonic()
            self.renew_leases()

    def now(self) -> datetime:
        return self.store.clock()

    def _status(self, kind: str, obj: dict, status: dict) -> dict:
        if status == obj.get("status"):
            return obj
        new = copy.deepcopy(obj)
        new["status"] = status
        return self.store.update(self.rt[kind], new, subresource="status", check_rv=False)

    def event(self, obj: dict, type_: str, reason: str, message: str, component: str) -> None:
        """One Event about ``obj`` (once per reason and object, like the recorder's dedup)."""
        meta = obj["metadata"]
        key = (meta.get("uid", ""), reason, message)
        if key in self._reported:
            return
        self._reported.add(key)
        ns = meta.get("namespace") or "default"
        if self.store.find(self.rt["Namespace"], None, ns) is None:
            return
        now = rfc3339(self.now())
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
              "involvedObject": {"kind": obj.get("kind"), "namespace": meta.get("namespace"), "name": meta["name"],
                                 "uid": meta.get("uid"), "apiVersion": obj.get("apiVersion"),
                                 "resourceVersion": meta.get("resourceVersion")},
              "reason": reason, "message": message, "type": type_, "count": 1,
              "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
              "reportingComponent": component, "reportingInstance": ""}
        try:
            self.store.create(self.rt["Event"], ev)
        except ApiError:
            pass

    # ---- Jobs ----------------------------------------------------------------------------------

    def _job_pods(self, job: dict) -> list[dict]:
        uid = job["metadata"]["uid"]
        return [p for p in self.store.items(self.rt["Pod"], job["metadata"]["namespace"])
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    def _finish_pod(self, pod: dict, now: datetime) -> None:
        """The kubelet's report for a Job pod whose container exited."""
        if self.process_runtime is not None and self.process_runtime.claims(pod):
            self.process_runtime.sync(pod, self)
            return
        annotations = pod["metadata"].get("annotations") or {}
        status = pod.get("status") or {}
        started = _ts(status.get("startTime"))
        if started is None or status.get("phase") != "Running":
            return
        runtime = _duration(annotations.get(RUNTIME_ANNOTATION, ""), 2.0)
        if (now - started).total_seconds() < runtime:
            return
        try:
            code = int(annotations.get(EXIT_CODE_ANNOTATION, "0"))
        except ValueError:
            code = 1
        finished = started + timedelta(seconds=runtime)
        new_status = copy.deepcopy(status)
        new_status["phase"] = "Succeeded" if code == 0 else "Failed"
        for cs in new_status.get("containerStatuses") or []:
            cs.update(ready=False, started=False, state={"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": rfc3339(started), "finishedAt": rfc3339(finished),
                "containerID": cs.get("containerID", "")}})
        for c in new_status.get("conditions") or []:
            if c.get("type") in ("Ready", "ContainersReady"):
                c.update(status="False", reason="PodCompleted", lastTransitionTime=rfc3339(finished))
                c.pop("message", None)
        self._status("Pod", pod, new_status)

    def sync_job(self, ns: str, name: str) -> None:
        job = self.store.find(self.rt["Job"], ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        if _finished(job):
            self._job_ttl(job)
            return
        now = self.now()
        spec = job.get("spec") or {}
        pods = self._job_pods(job)
        for pod in pods:
            self._finish_pod(pod, now)
        pods = self._job_pods(job)
        active = [p for p in pods if not _pod_terminal(p) and not p["metadata"].get("deletionTimestamp")]
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        old = job.get("status") or {}
        status: dict[str, Any] = {k: v for k, v in old.items() if k in ("startTime", "conditions")}
        status.setdefault("conditions", [])
        conditions = [dict(c) for c in status["conditions"]]
        stamp = rfc3339(now)

        def add(type_: str, reason: str, message: str) -> None:
            if not any(c["type"] == type_ for c in conditions):
                conditions.append({"type": type_, "status": "True", "reason": reason, "message": message,
                                   "lastProbeTime": stamp, "lastTransitionTime": stamp})

        if spec.get("suspend"):
            for p in active:
                self._delete_pod(p)
            active = []
            add("Suspended", "JobSuspended", "Job suspended")
            status.pop("startTime", None)
        else:
            conditions = [c for c in conditions if c["type"] != "Suspended"]
            status.setdefault("startTime", stamp)
        start = _ts(status.get("startTime"))
        completions = spec.get("completions")
        parallelism = spec.get("parallelism", 1)
        backoff = spec.get("backoffLimit", 6)
        deadline = spec.get("activeDeadlineSeconds")
        done = ""
        if deadline is not None and start is not None and (now - start).total_seconds() >= deadline:
            done = "DeadlineExceeded"
        elif failed > backoff:
            done = "BackoffLimitExceeded"
        if done:
            message = ("Job was active longer than specified deadline" if done == "DeadlineExceeded"
                       else "Job has reached the specified backoff limit")
            for p in active:
                self._delete_pod(p)
            active = []
            add("FailureTarget", done, message)
            add("Failed", done, message)
            self.event(job, "Warning", done, message, "job-controller")
        elif not spec.get("suspend"):
            complete = succeeded >= completions if completions is not None else (succeeded > 0 and not active)
            if complete:
                for p in active:
                    self._delete_pod(p)
                active = []
                add("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods")
                add("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
                status["completionTime"] = stamp
                self.event(job, "Normal", "Completed", "Job completed", "job-controller")
            else:
                remaining = completions - succeeded if completions is not None else (0 if succeeded else parallelism)
                want = min(parallelism, remaining) - len(active)
                for i in range(max(want, 0)):
                    pod = self._job_pod(job, succeeded + failed + len(active) + i)
                    try:
                        created = self.store.create(self.rt["Pod"], pod)
                    except ApiError as e:
                        self.event(job, "Warning", "FailedCreate", f"Error creating: {e.message}", "job-controller")
                        break
                    active.append(created)
                    self.event(job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                               "job-controller")
        status["conditions"] = conditions
        if not conditions:
            status.pop("conditions")
        status.update(active=len(active), succeeded=succeeded, failed=failed,
                      ready=sum(1 for p in active if _ready(p)), terminating=0,
                      uncountedTerminatedPods={})
        for key in ("active", "succeeded", "failed"):
            if not status[key]:
                status.pop(key)
        self._status("Job", job, status)

    def _job_pod(self, job: dict, index: int) -> dict:
        from .admission import apply_defaults

        tpl = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        meta = job["metadata"]
        pod_meta = tpl.get("metadata") or {}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{meta['name']}-{names.suffix(meta['uid'] + str(index) + str(time.monotonic()))}",
                            "namespace": meta["namespace"], "labels": dict(pod_meta.get("labels") or {}),
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}],
                            "finalizers": []},
               "spec": tpl.get("spec") or {}}
        if pod_meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(pod_meta["annotations"])
        pod["metadata"].pop("finalizers")
        rt = self.rt["Pod"]
        assert rt is not None
        return apply_defaults(rt, pod)

    def _delete_pod(self, pod: dict) -> None:
        try:
            self.store.delete(self.rt["Pod"], pod["metadata"]["namespace"], pod["metadata"]["name"])
        except ApiError:
            pass

    def _job_ttl(self, job: dict) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        done = _ts((job.get("status") or {}).get("completionTime")) or _ts(next(
            (c.get("lastTransitionTime") for c in (job.get("status") or {}).get("conditions") or []
             if c.get("type") == "Failed"), None))
        if ttl is None or done is None or (self.now() - done).total_seconds() < ttl:
            return
        self._delete_job(job)

    def _delete_job(self, job: dict) -> None:
        meta = job["metadata"]
        try:
            gone = self.store.delete(self.rt["Job"], meta["namespace"], meta["name"])
        except ApiError:
            return
        for pod in self.store.items(self.rt["Pod"], meta["namespace"]):
            if any(r.get("uid") == gone["metadata"]["uid"] for r in pod["metadata"].get("ownerReferences") or []):
                self._delete_pod(pod)

    # ---- CronJobs ------------------------------------------------------------------------------

    def sync_cronjob(self, ns: str, name: str) -> None:
        cj = self.store.find(self.rt["CronJob"], ns, name)
        if cj is None:
            return
        spec, old = cj.get("spec") or {}, cj.get("status") or {}
        uid = cj["metadata"]["uid"]
        jobs = [j for j in self.store.items(self.rt["Job"], ns)
                if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])]
        status: dict[str, Any] = {k: v for k, v in old.items() if k in ("lastScheduleTime", "lastSuccessfulTime")}
        active = [j for j in jobs if not _finished(j)]
        for j in jobs:
            if _finished(j) == "Complete":
                done = (j.get("status") or {}).get("completionTime")
                if done and (not status.get("lastSuccessfulTime") or done > status["lastSuccessfulTime"]):
                    status["lastSuccessfulTime"] = done
        now = self.now()
        try:
            cron = Cron(spec.get("schedule", ""))
        except ValueError as e:
            self.event(cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {e}", "cronjob-controller")
            cron = None
        tz = spec.get("timeZone")
        local_now = now
        if tz:
            try:
                from zoneinfo import ZoneInfo

                local_now = now.astimezone(ZoneInfo(tz))
            except Exception:  # noqa: BLE001 - unknown zone: the real controller records an event
                self.event(cj, "Warning", "UnknownTimeZone", f"invalid timeZone: {tz!r}", "cronjob-controller")
                cron = None
        since = _ts(status.get("lastScheduleTime")) or _ts(cj["metadata"].get("creationTimestamp")) or now
        if cron is not None and not spec.get("suspend"):
            due = cron.latest(local_now, since.astimezone(local_now.tzinfo) if local_now.tzinfo else since)
            deadline = spec.get("startingDeadlineSeconds")
            if due is not None and deadline is not None and (local_now - due).total_seconds() > deadline:
                due = None
            if due is not None:
                policy = spec.get("concurrencyPolicy", "Allow")
                if policy == "Forbid" and active:
                    self.event(cj, "Normal", "JobAlreadyActive", "Not starting job because prior execution is "
                               "running and concurrency policy is Forbid", "cronjob-controller")
                else:
                    if policy == "Replace":
                        for j in active:
                            self._delete_job(j)
                            self.event(cj, "Normal", "SuccessfulDelete", f"Deleted job {j['metadata']['name']}",
                                       "cronjob-controller")
                        active = []
                    job = self._job_from_cronjob(cj, due.astimezone(UTC))
                    try:
                        created = self.store.create(self.rt["Job"], job)
                        active.append(created)
                        self.event(cj, "Normal", "SuccessfulCreate", f"Created job {created['metadata']['name']}",
                                   "cronjob-controller")
                    except ApiError as e:
                        if e.code != 409:
                            raise
                    status["lastScheduleTime"] = rfc3339(due.astimezone(UTC))
        if active:
            status["active"] = [{"kind": "Job", "namespace": ns, "name": j["metadata"]["name"],
                                 "uid": j["metadata"]["uid"], "apiVersion": "batch/v1",
                                 "resourceVersion": j["metadata"].get("resourceVersion", "")} for j in active]
        self._status("CronJob", cj, status)
        # history limits: oldest finished Jobs beyond the limits go
        for outcome, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                               ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            done = sorted((j for j in jobs if _finished(j) == outcome),
                          key=lambda j: j["metadata"].get("creationTimestamp", ""))
            for j in done[:max(0, len(done) - (limit if limit is not None else len(done)))]:
                self._delete_job(j)
                self.event(cj, "Normal", "SuccessfulDelete", f"Deleted job {j['metadata']['name']}",
                           "cronjob-controller")

    def _job_from_cronjob(self, cj: dict, scheduled: datetime) -> dict:
        tpl = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
        meta = cj["metadata"]
        tmeta = tpl.get("metadata") or {}
        job_meta = {"name": f"{meta['name']}-{int(scheduled.timestamp()) // 60}", "namespace": meta["namespace"],
                    "labels": dict(tmeta.get("labels") or {}),
                    "annotations": {**(tmeta.get("annotations") or {}), SCHEDULED_TIMESTAMP: rfc3339(scheduled)},
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                         "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": tpl.get("spec") or {}}
        from .admission import apply_defaults

        rt = self.rt["Job"]
        assert rt is not None
        return apply_defaults(rt, job)

    # ---- PodDisruptionBudgets ------------------------------------------------------------------

    def sync_pdb(self, ns: str, name: str) -> None:
        from .virtual import pdb_status

        pdb = self.store.find(self.rt["PodDisruptionBudget"], ns, name)
        if pdb is None:
            return
        status = pdb_status(pdb, self.store.items(self.rt["Pod"], ns), rfc3339(self.now()))
        # disrupted pods that are gone (or past the 2-minute window) leave the map
        pods = {p["metadata"]["name"] for p in self.store.items(self.rt["Pod"], ns)}
        disrupted = {k: v for k, v in (status.get("disruptedPods") or {}).items()
                     if k in pods and (self.now() - (_ts(v) or self.now())).total_seconds() < 120}
        if disrupted:
            status["disruptedPods"] = disrupted
            status["disruptionsAllowed"] = max(0, status["disruptionsAllowed"] - len(disrupted))
        else:
            status.pop("disruptedPods", None)
        self._status("PodDisruptionBudget", pdb, status)

    # ---- HorizontalPodAutoscalers --------------------------------------------------------------

    def sync_hpa(self, ns: str, name: str) -> None:
        from .metrics import pod_usage
        from .validate import selector_matches

        hpa = self.store.find(self.rt["HorizontalPodAutoscaler"], ns, name)
        if hpa is None:
            return
        spec, old = hpa.get("spec") or {}, hpa.get("status") or {}
        ref = spec.get("scaleTargetRef") or {}
        target_rt = self.rt.get(ref.get("kind", ""))
        target = self.store.find(target_rt, ns, ref.get("name", "")) if target_rt else None
        stamp = rfc3339(self.now())
        prev = {c["type"]: c for c in old.get("conditions") or []}

        def cond(type_: str, ok: bool, reason: str, message: str) -> dict:
            status = "True" if ok else "False"
            p = prev.get(type_)
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": p["lastTransitionTime"] if p and p.get("status") == status else stamp}

        if target is None:
            status = {"currentReplicas": old.get("currentReplicas", 0), "desiredReplicas": 0,
                      "conditions": [cond("AbleToScale", False, "FailedGetScale",
                                          f'the HPA controller was unable to get the target\'s current scale: '
                                          f'{(target_rt.plural + "." + target_rt.group) if target_rt else ref.get("kind", "")} '
                                          f'"{ref.get("name", "")}" not found')]}
            self._status("HorizontalPodAutoscaler", hpa, status)
            return
        current = (target.get("status") or {}).get("replicas", (target.get("spec") or {}).get("replicas", 1))
        selector = (target.get("spec") or {}).get("selector") or {}
        pods = [p for p in self.store.items(self.rt["Pod"], ns)
                if selector_matches(selector, p["metadata"].get("labels") or {})
                and (p.get("status") or {}).get("phase") == "Running"]
        workload = ref.get("name", "")
        metrics, ratios, reasons = [], [], []
        for m in spec.get("metrics") or []:
            if m.get("type") != "Resource":
                continue
            res = (m.get("resource") or {})
            rname, tgt = res.get("name", "cpu"), res.get("target") or {}
            used = requested = 0.0
            for p in pods:
                containers = {c["name"]: c for c in (p.get("spec") or {}).get("containers") or []}
                for cname, cpu, mem in pod_usage(p, workload):
                    used += cpu if rname == "cpu" else mem
                    requested += quantity(((containers[cname].get("resources") or {}).get("requests") or {})
                                           .get(rname))
            if not pods:
                continue
            avg = used / len(pods)
            current_metric: dict[str, Any] = {"averageValue": format_quantity(avg, rname)}
            if tgt.get("type") == "Utilization" and requested > 0:
                util = int(used * 100 / requested)
                current_metric["averageUtilization"] = util
                ratios.append(util / max(tgt.get("averageUtilization", 80), 1))
                reasons.append(f"{rname} resource utilization (percentage of request)")
            elif tgt.get("averageValue"):
                ratios.append(avg / max(quantity(tgt["averageValue"]), 1e-9))
                reasons.append(f"{rname} resource")
            metrics.append({"type": "Resource", "resource": {"name": rname, "current": current_metric}})
        lo, hi = spec.get("minReplicas", 1), spec.get("maxReplicas", 1)
        desired = current
        if ratios:
            ratio = max(ratios)
            if abs(ratio - 1.0) > 0.1:
                desired = math.ceil(ratio * len(pods))
        conditions = [cond("AbleToScale", True, "ReadyForNewScale", "recommended size matches current size")]
        if ratios:
            conditions.append(cond("ScalingActive", True, "ValidMetricFound",
                                   f"the HPA was able to successfully calculate a replica count from {reasons[0]}"))
        else:
            conditions.append(cond("ScalingActive", False, "FailedGetResourceMetric",
                                   "the HPA was unable to compute the replica count: no metrics returned from "
                                   "resource metrics API"))
        if desired > hi:
            conditions.append(cond("ScalingLimited", True, "TooManyReplicas",
                                   "the desired replica count is more than the maximum replica count"))
        elif desired < lo:
            conditions.append(cond("ScalingLimited", True, "TooFewReplicas",
                                   "the desired replica count is less than the minimum replica count"))
        else:
            conditions.append(cond("ScalingLimited", False, "DesiredWithinRange",
                                   "the desired count is within the acceptable range"))
        desired = min(max(desired, lo), hi)
        status = {"currentReplicas": current, "desiredReplicas": desired, "conditions": conditions}
        if metrics:
            status["currentMetrics"] = metrics
        if old.get("lastScaleTime"):
            status["lastScaleTime"] = old["lastScaleTime"]
        if ratios and desired != (target.get("spec") or {}).get("replicas") and target_rt is not None:
            new = copy.deepcopy(target)
            new["spec"]["replicas"] = desired
            self.store.update(target_rt, new, check_rv=False)
            status["lastScaleTime"] = stamp
            self.event(hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reasons[0]} "
                       f"{'above' if desired > current else 'below'} target", "horizontal-pod-autoscaler")
        self._status("HorizontalPodAutoscaler", hpa, status)

    # ---- PersistentVolumeClaims ----------------------------------------------------------------

    def _default_class(self) -> dict | None:
        for sc in self.store.items(self.rt["StorageClass"]):
            if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                return sc
        return None

    def sync_pvc(self, ns: str, name: str) -> None:
        pvc = self.store.find(self.rt["PersistentVolumeClaim"], ns, name)
        if pvc is None or (pvc.get("status") or {}).get("phase") == "Bound":
            return
        spec = pvc.get("spec") or {}
        cls_name = spec.get("storageClassName")
        if cls_name is None:
            default = self._default_class()
            cls_name = default["metadata"]["name"] if default else None
        want = quantity(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        modes = set(spec.get("accessModes") or [])
        pv_rt = self.rt["PersistentVolume"]
        candidates = []
        for pv in self.store.items(pv_rt):
            ps = pv.get("spec") or {}
            if spec.get("volumeName") and pv["metadata"]["name"] != spec["volumeName"]:
                continue
            claim = ps.get("claimRef")
            if claim and (claim.get("namespace"), claim.get("name")) != (ns, name):
                continue
            if (ps.get("storageClassName") or "") != (cls_name or ""):
                continue
            if not modes <= set(ps.get("accessModes") or []):
                continue
            size = quantity((ps.get("capacity") or {}).get("storage"))
            if size < want:
                continue
            candidates.append((size, pv["metadata"]["name"], pv))
        pv = min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
        if pv is None and not spec.get("volumeName"):
            sc = self.store.find(self.rt["StorageClass"], None, cls_name) if cls_name else None
            if cls_name and sc is None:
                self.event(pvc, "Warning", "ProvisioningFailed",
                           f'storageclass.storage.k8s.io "{cls_name}" not found', "persistentvolume-controller")
                return
            if sc is None:
                self.event(pvc, "Normal", "FailedBinding",
                           "no persistent volumes available for this claim and no storage class is set",
                           "persistentvolume-controller")
                return
            if sc.get("volumeBindingMode") == "WaitForFirstConsumer":
                self.event(pvc, "Normal", "WaitForFirstConsumer",
                           "waiting for first consumer to be created before binding", "persistentvolume-controller")
                return
            if sc.get("provisioner") == "kubernetes.io/no-provisioner":
                self.event(pvc, "Normal", "FailedBinding", "no persistent volumes available for this claim and "
                           "no storage class is set" if not cls_name else
                           "no persistent volumes available for this claim", "persistentvolume-controller")
                return
            pv = self.store.create(pv_rt, {
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"pvc-{pvc['metadata']['uid']}",
                             "annotations": {"pv.kubernetes.io/provisioned-by": sc.get("provisioner", "")},
                             "finalizers": ["kubernetes.io/pv-protection"]},
                "spec": {"capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get(
                    "storage", "1Gi")}, "accessModes": sorted(modes) or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                    "storageClassName": cls_name, "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "csi": {"driver": sc.get("provisioner", ""), "volumeHandle": f"vol-{pvc['metadata']['uid'][:17]}"}},
                "status": {"phase": "Pending"}})
            self.event(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume "
                       f"{pv['metadata']['name']}", "persistentvolume-controller")
        if pv is None:
            return
        new_pv = copy.deepcopy(pv)
        new_pv["spec"]["claimRef"] = {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                                      "uid": pvc["metadata"]["uid"], "apiVersion": "v1",
                                      "resourceVersion": pvc["metadata"].get("resourceVersion", "")}
        new_pv = self.store.update(pv_rt, new_pv, check_rv=False)
        self._status("PersistentVolume", new_pv, {"phase": "Bound", "lastPhaseTransitionTime": rfc3339(self.now())})
        new = copy.deepcopy(pvc)
        new["spec"]["volumeName"] = pv["metadata"]["name"]
        if cls_name and not spec.get("storageClassName"):
            new["spec"]["storageClassName"] = cls_name
        new.setdefault("metadata", {}).setdefault("annotations", {})["pv.kubernetes.io/bind-completed"] = "yes"
        new = self.store.update(self.rt["PersistentVolumeClaim"], new, check_rv=False)
        self._status("PersistentVolumeClaim", new, {
            "phase": "Bound", "accessModes": pv["spec"].get("accessModes") or [],
            "capacity": dict(pv["spec"].get("capacity") or {})})

    # ---- ResourceQuotas, tokens, aggregation, leases -------------------------------------------

    def sync_quota(self, ns: str, name: str) -> None:
        quota = self.store.find(self.rt["ResourceQuota"], ns, name)
        if quota is None:
            return
        hard = dict((quota.get("spec") or {}).get("hard") or {})
        used = namespace_usage(self.api, ns, list(hard))
        self._status("ResourceQuota", quota, {"hard": hard,
                                              "used": {k: format_quantity(v, k) for k, v in used.items()}})

    def sync_token_secret(self, ns: str, name: str) -> None:
        import base64

        from .auth import SA_NAME_ANNOTATION, SA_UID_ANNOTATION, legacy_token

        secret = self.store.find(self.rt["Secret"], ns, name)
        if secret is None or (secret.get("data") or {}).get("token"):
            return
        sa_name = (secret["metadata"].get("annotations") or {}).get(SA_NAME_ANNOTATION, "")
        sa = self.store.find(self.rt["ServiceAccount"], ns, sa_name)
        if sa is None:
            return  # the real token controller deletes such a Secret; leaving it is harmless here
        new = copy.deepcopy(secret)
        new["metadata"].setdefault("annotations", {})[SA_UID_ANNOTATION] = sa["metadata"]["uid"]
        ca = b""
        ca_file = getattr(self.api, "ca_file", None)
        if ca_file:
            try:
                ca = open(ca_file, "rb").read()
            except OSError:
                ca = b""
        new["data"] = {**(new.get("data") or {}),
                       "token": base64.b64encode(legacy_token(self.api, new, sa).encode()).decode(),
                       "namespace": base64.b64encode(ns.encode()).decode(),
                       "ca.crt": base64.b64encode(ca).decode()}
        self.store.update(self.rt["Secret"], new, check_rv=False)

    def aggregate_cluster_roles(self) -> None:
        from .auth import aggregate

        roles = self.store.items(self.rt["ClusterRole"])
        for name, rules in aggregate(roles).items():
            role = next(r for r in roles if r["metadata"]["name"] == name)
            if (role.get("rules") or []) != rules:
                new = copy.deepcopy(role)
                new["rules"] = rules
                self.store.update(self.rt["ClusterRole"], new, check_rv=False)

    def renew_leases(self) -> None:
        """kube-scheduler and kube-controller-manager leader leases, and one Lease per kubelet."""
        lease_rt, ns_rt = self.rt["Lease"], self.rt["Namespace"]
        now = self.now()
        wanted: list[tuple[str, str, str, int]] = []
        if self.store.find(ns_rt, None, "kube-system") is not None:
            wanted += [("kube-system", "kube-scheduler", "control-plane-1_sandbox-scheduler", 15),
                       ("kube-system", "kube-controller-manager", "control-plane-1_sandbox-controller-manager", 15)]
        if self.store.find(ns_rt, None, "kube-node-lease") is not None:
            wanted += [("kube-node-lease", n["metadata"]["name"], n["metadata"]["name"], 40)
                       for n in self.store.items(self.rt["Node"])]
        for ns, name, holder, duration in wanted:
            lease = self.store.find(lease_rt, ns, name)
            if lease is None:
                try:
                    self.store.create(lease_rt, {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                                 "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": 0}})
                except ApiError:
                    pass
                continue
            new = copy.deepcopy(lease)
            new["spec"]["renewTime"] = _micro(now)
            self.store.update(lease_rt, new, check_rv=False)


# ---- the aggregator's APIServices ------------------------------------------------------------


def bootstrap_api_services(store, registry) -> None:
    """One APIService per served built-in group-version, as kube-aggregator registers them.

    Built-in groups are ``Local``; ``v1beta1.metrics.k8s.io`` points at metrics-server in
    kube-system, which is what ``kubectl top`` ultimately reaches.
    """
    rt = registry.by_kind_any_version("APIService", "apiregistration.k8s.io")
    if rt is None:
        return
    now = rfc3339(store.clock())
    for t in list(registry.all()):
        if t.crd:
            continue
        name = f"{t.version}.{t.group}"  # "v1." for the core group
        if store.find(rt, None, name) is not None:
            continue
        spec: dict[str, Any] = {"group": t.group, "version": t.version,
                                "groupPriorityMinimum": 18000 if not t.group else 17000,
                                "versionPriority": 15}
        condition = {"type": "Available", "status": "True", "reason": "Local",
                     "message": "Local APIServices are always available", "lastTransitionTime": now}
        if t.group == "metrics.k8s.io":
            spec.update(groupPriorityMinimum=100, versionPriority=100, insecureSkipTLSVerify=True,
                        service={"namespace": "kube-system", "name": "metrics-server", "port": 443})
            condition.update(reason="Passed", message="all checks passed")
        obj = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
               "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}
                            if t.group != "metrics.k8s.io" else {"k8s-app": "metrics-server"}},
               "spec": spec}
        created = store.create(rt, obj)
        store.update(rt, {**created, "status": {"conditions": [condition]}}, subresource="status", check_rv=False)
