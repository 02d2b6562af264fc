"""Cluster health checks: turn listed objects into tables and findings.

Each check takes plain objects (as :func:`runbooks.kube.iter_objects` yields
them) and returns a DataFrame for the report and the findings it implies, so
the cluster-health notebook only chooses what to run and the rules here are
unit-tested on data. Severity follows what the problem does to users:
traffic failing now is critical, degraded redundancy or a stalled rollout is
a warning, symptoms such as Warning events are info.
"""

from __future__ import annotations

import csv
import functools
import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from kubernetes.utils.quantity import parse_quantity

from . import certs, kube
from .errors import Forbidden, NotFound, RunbookError
from .model import Finding

CRASH_REASONS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                 "InvalidImageName", "RunContainerError")


@dataclass
class Check:
    """The outcome of one check: a table for people and findings for summary.json."""

    table: pd.DataFrame
    findings: list[Finding]
    note: str = ""

    def caption(self, title: str) -> str:
        """The table's caption: `title`, and the note when the check could not look (not served ...)."""
        return f"{title} ({self.note})" if self.note else title


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


NODE_COLUMNS = ["node", "ready", "pressure", "cordoned", "kubelet", "cpu_allocatable", "memory_allocatable"]


def check_nodes(nodes: Iterable[dict]) -> Check:
    rows, findings = [], []
    for n in nodes:
        name = n["metadata"]["name"]
        ready = kube.condition(n, "Ready").get("status") == "True"
        pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                    if kube.condition(n, t).get("status") == "True"]
        cordoned = bool((n.get("spec") or {}).get("unschedulable"))
        info = (n.get("status") or {}).get("nodeInfo") or {}
        alloc = (n.get("status") or {}).get("allocatable") or {}
        rows.append({"node": name, "ready": ready, "pressure": ", ".join(pressure), "cordoned": cordoned,
                     "kubelet": info.get("kubeletVersion", ""), "cpu_allocatable": _quantity(alloc.get("cpu")),
                     "memory_allocatable": _quantity(alloc.get("memory"))})
        if not ready:
            findings.append(Finding(id=f"node-not-ready/{name}", severity="critical",
                                    title=f"Node {name} is NotReady",
                                    detail=kube.condition(n, "Ready").get("message", ""), resource=f"Node/{name}"))
        if pressure:
            findings.append(Finding(id=f"node-pressure/{name}", severity="warning",
                                    title=f"Node {name} reports {', '.join(pressure)}",
                                    resource=f"Node/{name}", evidence={"conditions": pressure}))
        if cordoned:
            findings.append(Finding(id=f"node-cordoned/{name}", severity="warning",
                                    title=f"Node {name} is cordoned (SchedulingDisabled)",
                                    detail="No new pods land on it; uncordon when maintenance is over.",
                                    resource=f"Node/{name}"))
    return Check(_frame(rows, NODE_COLUMNS), findings)


POD_COLUMNS = ["namespace", "pod", "workload", "container", "state", "restarts", "last_termination", "node"]
"""Columns of the unhealthy-container rows: the report's top rows and every row of the CSV."""

_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class _Group:
    """Pods of one workload with one problem: what a finding and the CSV need, nothing more."""

    severity: str
    pods: int = 0
    sample: list[str] = field(default_factory=list)
    container: str = ""
    restarts: int = 0
    waiting_reason: str = ""
    last_termination_reason: str = ""
    last_exit_code: int | None = None
    detail: str = ""

    def add(self, pod: str, restarts: int = 0, **facts: Any) -> None:
        self.pods += 1
        if len(self.sample) < 10:
            self.sample.append(pod)
        if restarts >= self.restarts:
            self.restarts = restarts
            for k, v in facts.items():
                setattr(self, k, v)


@dataclass
class PodScan:
    """What one streamed pass over every pod keeps: bounded by workloads, nodes and `top`, not by pods.

    Attributes:
        check: findings (one per workload and problem, the `top` largest per problem, then one
            aggregate) and a table of the `top` worst containers.
        restarts: container restarts per workload (``namespace``, ``workload``, ``restarts``).
        node_requests: node → ``{"cpu": cores, "memory": bytes}`` requested by its running pods.
        pods: pods seen; unhealthy: pods with at least one row.
        csv_path: where every unhealthy row was written (None: not written).
    """

    check: Check
    restarts: pd.DataFrame
    node_requests: dict[str, dict[str, float]]
    pods: int
    unhealthy: int
    csv_path: str | None = None

    def caption(self) -> str:
        """The caption of the containers table: how many of how many, and where every row is."""
        where = f"; every row in {Path(self.csv_path).name}" if self.csv_path else ""
        shown = len(self.check.table)
        return (f"Containers that are not healthy: the worst {shown} rows, {self.unhealthy} unhealthy pods "
                f"of {self.pods}{where}")


def _quantity(value: Any) -> float:
    """A Kubernetes quantity (``100m``, ``128Mi``, ``1.5``) as a float; 0 when absent or invalid."""
    if value in (None, ""):
        return 0.0
    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError):
        return 0.0


def pod_requests(spec: dict) -> dict[str, float]:
    """CPU cores and memory bytes a pod requests, as the scheduler counts them.

    The sum over containers, or the largest init container when that is more, plus the
    pod overhead (RuntimeClass).
    """
    out = {}
    for res in ("cpu", "memory"):
        main = sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get(res))
                   for c in spec.get("containers") or [])
        init = max((_quantity(((c.get("resources") or {}).get("requests") or {}).get(res))
                    for c in spec.get("initContainers") or []), default=0.0)
        out[res] = max(main, init) + _quantity((spec.get("overhead") or {}).get(res))
    return out


def image_tag_problem(image: str) -> str:
    """``"latest"`` or ``"untagged"`` for images that float, else ``""`` (digests are pinned)."""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "untagged"
    return "latest" if last.rsplit(":", 1)[1] == "latest" else ""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def scan_pods(pages: Iterable[list[dict]], *, restart_threshold: int = 5, pending_minutes: int = 10,
              production_namespaces: Iterable[str] = (), top: int = 20, csv_path: str | Path | None = None,
              now: datetime | None = None) -> PodScan:
    """Pods that crash, cannot pull, stay Pending, restart a lot or run unready, in one streamed pass.

    Each page is looked at and dropped: what stays is one entry per (problem, workload), the
    `top` worst container rows for the report, restarts per workload, requests per node.
    Every unhealthy row goes to `csv_path` as it is found. In `production_namespaces`, pods
    without CPU/memory requests or a memory limit, and images tagged ``:latest`` or untagged,
    are reported too (info).

    Findings: one per workload and problem (``pod-crashloopbackoff/NS/Deployment/NAME``) for the
    `top` workloads with most pods, then one ``pod-PROBLEM/more`` saying how many pods across how
    many workloads. Severity: a container that cannot run (crash loop, image pull) is critical,
    Pending, unready and restarting are warnings, hygiene in production namespaces is info.
    """
    now = now or datetime.now(UTC)
    production = set(production_namespaces)
    groups: dict[tuple[str, str, str], _Group] = {}
    worst: list[tuple] = []  # a min-heap of the `top` worst rows
    restarts: Counter[tuple[str, str]] = Counter()
    node_requests: dict[str, dict[str, float]] = {}
    seen = unhealthy = 0
    out = open(csv_path, "w", newline="") if csv_path else None  # noqa: SIM115 (closed below)
    writer = csv.writer(out) if out else None
    if writer:
        writer.writerow(POD_COLUMNS)

    def row(severity: str, values: list) -> None:
        if writer:
            writer.writerow(values)
        key = (_SEVERITY_RANK[severity], values[5], values[0], values[1], values[3])
        item = (key, values)
        if len(worst) < top:
            heapq.heappush(worst, item)
        elif item > worst[0]:
            heapq.heapreplace(worst, item)

    def group(problem: str, severity: str, ns: str, workload: str) -> _Group:
        g = groups.get((problem, ns, workload))
        if g is None:
            g = groups[(problem, ns, workload)] = _Group(severity)
        return g

    try:
        for page in pages:
            for pod in page:
                seen += 1
                meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
                ns, name = meta.get("namespace") or "", meta["name"]
                phase = status.get("phase", "Unknown")
                node = spec.get("nodeName") or ""
                if node and phase not in ("Succeeded", "Failed"):
                    req = pod_requests(spec)
                    acc = node_requests.setdefault(node, {"cpu": 0.0, "memory": 0.0, "pods": 0})
                    acc["cpu"] += req["cpu"]
                    acc["memory"] += req["memory"]
                    acc["pods"] += 1
                total = sum(s.get("restartCount", 0) for s in status.get("containerStatuses") or [])
                workload = kube.owner_workload(pod)
                if total:
                    restarts[(ns, workload)] += total
                bad = False
                if ns in production and phase not in ("Succeeded", "Failed"):
                    for c in spec.get("containers") or []:
                        res = c.get("resources") or {}
                        missing = [f"{k} request" for k in ("cpu", "memory") if k not in (res.get("requests") or {})]
                        if "memory" not in (res.get("limits") or {}):
                            missing.append("memory limit")
                        if missing:
                            group("no-resources", "info", ns, workload).add(
                                name, container=c["name"], detail=", ".join(missing))
                        tag = image_tag_problem(c.get("image", ""))
                        if tag:
                            group(f"image-{tag}", "info", ns, workload).add(
                                name, container=c["name"], detail=c.get("image", ""))
                problems = kube.container_problems(pod)
                if phase == "Pending" and not any(p["waiting_reason"] for p in problems):
                    age = now - (kube.parse_time(meta.get("creationTimestamp")) or now)
                    if age > timedelta(minutes=pending_minutes):
                        cond = kube.condition(pod, "PodScheduled")
                        reason = cond.get("reason", "") or "Pending"
                        g = group("pending", "warning", ns, workload)
                        # `restarts` ranks a group's example pod: for Pending ones, the oldest (age in minutes)
                        g.add(name, waiting_reason=reason, detail=cond.get("message", ""),
                              restarts=int(age.total_seconds() // 60))
                        row("warning", [ns, name, workload, "", f"Pending ({reason})", 0, "", node])
                        unhealthy += 1
                    continue
                for p in problems:
                    facts = {"container": p["container"], "waiting_reason": p["waiting_reason"],
                             "last_termination_reason": p["last_termination_reason"],
                             "last_exit_code": p["last_exit_code"]}
                    if p["waiting_reason"] in CRASH_REASONS:
                        problem, severity = p["waiting_reason"], "critical"
                    elif not p["ready"] and phase == "Running":
                        problem, severity = "not-ready", "warning"
                    elif p["restarts"] >= restart_threshold:
                        problem, severity = "restarts", "warning"
                    else:
                        continue
                    group(problem, severity, ns, workload).add(name, restarts=p["restarts"], **facts)
                    state = p["waiting_reason"] or ("Running, not ready" if not p["ready"] else "Running")
                    row(severity, [ns, name, workload, p["container"], state, p["restarts"],
                                   p["last_termination_reason"], node])
                    bad = True
                unhealthy += bad
    finally:
        if out:
            out.close()
    table = _frame([dict(zip(POD_COLUMNS, v, strict=True)) for _, v in sorted(worst, reverse=True)],
                   POD_COLUMNS)
    restart_rows = [{"namespace": ns, "workload": w, "restarts": n} for (ns, w), n in restarts.most_common()]
    findings = _pod_findings(groups, top, str(csv_path) if csv_path else None)
    return PodScan(Check(table, findings),
                   pd.DataFrame(restart_rows, columns=["namespace", "workload", "restarts"]),
                   node_requests, seen, unhealthy, str(csv_path) if csv_path else None)


def _pod_finding(problem: str, ns: str, workload: str, g: _Group) -> Finding:
    kind, _, wname = workload.partition("/")
    resource = f"{kind}/{ns}/{wname}"
    subject = f"{workload} pod {g.sample[0]}" if g.pods == 1 else f"{kind} {ns}/{wname}: {g.pods} pods"
    evidence = {"pods": g.pods, "sample": g.sample, "container": g.container, "restarts": g.restarts,
                "waiting_reason": g.waiting_reason, "last_termination_reason": g.last_termination_reason,
                "last_exit_code": g.last_exit_code}
    fid = f"pod-{_slug(problem)}/{ns}/{workload}"
    if problem in CRASH_REASONS:
        why = problem
        if g.last_termination_reason:
            why += f", last terminated {g.last_termination_reason}"
            if g.last_exit_code is not None:
                why += f" (exit {g.last_exit_code})"
        detail = (f"Container {g.container} has restarted {g.restarts} times." if g.restarts
                  else f"Container {g.container} never started.")
        return Finding(id=fid, severity="critical", title=f"{subject}: {why}", detail=detail,
                       resource=resource, evidence=evidence)
    if problem == "pending":
        return Finding(id=fid, severity="warning",
                       title=f"{subject} Pending ({g.waiting_reason}) for {g.restarts} min",
                       detail=g.detail, resource=resource, evidence={"pods": g.pods, "sample": g.sample,
                                                                     "reason": g.waiting_reason})
    if problem == "not-ready":
        return Finding(id=fid, severity="warning", title=f"{subject}: container {g.container} is not ready",
                       detail="Its readiness probe fails; it receives no Service traffic.",
                       resource=resource, evidence=evidence)
    if problem == "restarts":
        return Finding(id=fid, severity="warning", title=f"{subject}: {g.restarts} restarts",
                       detail=f"Last termination: {g.last_termination_reason or 'unknown'}.",
                       resource=resource, evidence=evidence)
    if problem == "no-resources":
        return Finding(id=fid, severity="info", title=f"{subject} without {g.detail} (container {g.container})",
                       detail="In a production namespace, pods without requests are scheduled blind and "
                              "evicted first under pressure; without a memory limit one leak can starve the node.",
                       resource=resource, evidence={"pods": g.pods, "sample": g.sample, "missing": g.detail})
    tag = problem.removeprefix("image-")
    return Finding(id=fid, severity="info", title=f"{subject} run a {tag} image {g.detail}",
                   detail="A floating tag changes what runs at the next pull or reschedule, and a rollback "
                          "cannot return to the previous image; pin a version or a digest.",
                   resource=resource, evidence={"pods": g.pods, "sample": g.sample, "image": g.detail})


def _pod_findings(groups: dict[tuple[str, str, str], _Group], top: int, csv_path: str | None) -> list[Finding]:
    by_problem: dict[str, list[tuple[str, str, _Group]]] = {}
    for (problem, ns, workload), g in groups.items():
        by_problem.setdefault(problem, []).append((ns, workload, g))
    findings = []
    for problem, items in sorted(by_problem.items()):
        items.sort(key=lambda x: (-x[2].pods, -x[2].restarts, x[0], x[1]))
        findings.extend(_pod_finding(problem, ns, w, g) for ns, w, g in items[:top])
        if len(items) > top:
            rest = items[top:]
            pods = sum(g.pods for _, _, g in items)
            where = f" (every row in {Path(csv_path).name})" if csv_path else ""
            findings.append(Finding(
                id=f"pod-{_slug(problem)}/more", severity=items[0][2].severity,
                title=f"{pods} pods with {problem} across {len(items)} workloads; "
                      f"{len(rest)} more workloads than the {top} above",
                detail=f"The {len(rest)} workloads not listed hold {sum(g.pods for _, _, g in rest)} "
                       f"of these pods{where}.",
                evidence={"workloads": len(items), "pods": pods,
                          "next": [f"{ns}/{w}" for ns, w, _ in rest[:10]]}))
    return findings


def check_pods(pods: Iterable[dict], *, restart_threshold: int = 5, pending_minutes: int = 10,
               now: datetime | None = None, top: int = 20) -> Check:
    """:func:`scan_pods` over objects already in memory (small lists and tests)."""
    return scan_pods([list(pods)], restart_threshold=restart_threshold, pending_minutes=pending_minutes,
                     now=now, top=top).check


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
    return Check(_frame(rows, ["namespace", "deployment", "desired", "available", "updated", "revision",
                               "progressing"]), findings)


def check_events(events: Iterable[dict], *, top: int = 20) -> Check:
    """Warning events grouped by reason and object (one info finding per reason)."""
    rows = [e for e in events if e.get("type") == "Warning"]
    if not rows:
        return Check(_frame([], ["namespace", "reason", "object", "count", "last_seen", "message"]), [])
    df = pd.DataFrame(rows)
    grouped = (df.groupby(["namespace", "reason", "object"], as_index=False)
               .agg(count=("count", "sum"), last_seen=("last_seen", "max"), message=("message", "last"))
               .sort_values(["count", "last_seen"], ascending=False))
    findings = []
    for reason, g in grouped.groupby("reason"):
        objects = g["object"].nunique()
        findings.append(Finding(id=f"warning-events/{reason}", severity="info",
                                title=f"{int(g['count'].sum())} Warning events '{reason}' on {objects} object(s)",
                                detail=str(g.iloc[0]["message"])[:300],
                                evidence={"objects": sorted(g["object"].unique().tolist())[:10]}))
    return Check(grouped.head(top).reset_index(drop=True), findings)


def check_services(services: Iterable[dict], endpoints: Iterable[dict]) -> Check:
    """Services with a selector but no ready endpoint: requests to them fail."""
    ready = {}
    for ep in endpoints:
        key = (ep["metadata"].get("namespace"), ep["metadata"]["name"])
        ready[key] = sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])
    rows, findings = [], []
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            continue
        ns, name = meta.get("namespace"), meta["name"]
        n = ready.get((ns, name), 0)
        rows.append({"namespace": ns, "service": name, "ready_endpoints": n})
        if n == 0:
            findings.append(Finding(id=f"service-no-endpoints/{ns}/{name}", severity="critical",
                                    title=f"Service {ns}/{name} has no ready endpoints",
                                    detail="No pod matching its selector is ready: requests to it fail.",
                                    resource=f"Service/{ns}/{name}", evidence={"selector": spec["selector"]}))
    return Check(_frame(rows, ["namespace", "service", "ready_endpoints"]), findings)


def check_ingresses(ingresses: Iterable[dict], services: Iterable[dict], secrets: Iterable[dict]) -> Check:
    """Ingresses whose backend Service or TLS Secret does not exist."""
    svc_names = {(s["metadata"].get("namespace"), s["metadata"]["name"]) for s in services}
    secret_names = {(o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in (getattr(s, "object", s) for s in secrets)}  # kube.SecretKeys or Secret dicts
    rows, findings = [], []
    for ing in ingresses:
        meta, spec = ing["metadata"], ing.get("spec") or {}
        ns, name = meta.get("namespace"), meta["name"]
        backends = set()
        default = ((spec.get("defaultBackend") or {}).get("service") or {}).get("name")
        if default:
            backends.add(default)
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                svc = ((path.get("backend") or {}).get("service") or {}).get("name")
                if svc:
                    backends.add(svc)
        tls = [t.get("secretName") for t in spec.get("tls") or [] if t.get("secretName")]
        hosts = [r.get("host", "") for r in spec.get("rules") or []]
        missing_svc = sorted(b for b in backends if (ns, b) not in svc_names)
        missing_tls = sorted(t for t in tls if (ns, t) not in secret_names)
        rows.append({"namespace": ns, "ingress": name, "hosts": ", ".join(hosts),
                     "backends": ", ".join(sorted(backends)), "tls_secrets": ", ".join(tls),
                     "problem": "; ".join([f"missing service {m}" for m in missing_svc]
                                          + [f"missing secret {m}" for m in missing_tls])})
        for m in missing_svc:
            findings.append(Finding(id=f"ingress-missing-service/{ns}/{name}/{m}", severity="critical",
                                    title=f"Ingress {ns}/{name} routes to missing Service {m}",
                                    detail=f"Requests for {', '.join(hosts)} get 503 from the ingress controller.",
                                    resource=f"Ingress/{ns}/{name}"))
        for m in missing_tls:
            findings.append(Finding(id=f"ingress-missing-tls-secret/{ns}/{name}/{m}", severity="critical",
                                    title=f"Ingress {ns}/{name} references missing TLS Secret {m}",
                                    detail="The ingress controller serves its default (fake) certificate "
                                           f"for {', '.join(hosts)}.", resource=f"Ingress/{ns}/{name}"))
    return Check(_frame(rows, ["namespace", "ingress", "hosts", "backends", "tls_secrets", "problem"]), findings)


def check_tls_secrets(secrets: Iterable[Any], *, warning_days: int = 30, critical_days: int = 7,
                      now: datetime | None = None) -> Check:
    """kubernetes.io/tls Secrets that are expired or expire soon (fingerprints only, no key material)."""
    now = now or datetime.now(UTC)
    rows, findings = [], []
    for s in secrets:  # kube.SecretKeys (their certificates) or Secret dicts
        if getattr(s, "object", s).get("type") != certs.TLS_TYPE:
            continue
        row = certs.tls_secret_summary(s, now)
        ns, name = row["namespace"], row["name"]
        resource = f"Secret/{ns}/{name}"
        rows.append({k: row[k] for k in ("namespace", "name", "hosts", "issuer", "not_after", "days_left",
                                         "self_signed", "sha256", "error")})
        if row["error"]:
            findings.append(Finding(id=f"tls-unreadable/{ns}/{name}", severity="warning",
                                    title=f"TLS Secret {ns}/{name} cannot be parsed", detail=row["error"],
                                    resource=resource))
            continue
        expiry = certs.expiry_finding(ns, name, row["days_left"], row["not_after"], row["sha256"], row["hosts"],
                                      warning_days=warning_days, critical_days=critical_days)
        if expiry is not None:
            findings.append(expiry)
    cols = ["namespace", "name", "hosts", "issuer", "not_after", "days_left", "self_signed", "sha256", "error"]
    return Check(_frame(rows, cols), findings)


def warning_events(cluster: kube.Cluster, namespaces: list[str] | None, hours: int) -> list[dict]:
    """Warning events of the last `hours` in the given namespaces (all when empty)."""
    out: list[dict] = []
    for ns in namespaces or [None]:
        out.extend(kube.events(cluster, ns, since=timedelta(hours=hours), warnings_only=True))
    return out


def restarts_by_workload(pods: Iterable[dict]) -> pd.DataFrame:
    """Total container restarts per owning workload (for a bar chart); :func:`scan_pods` keeps the same."""
    return scan_pods([list(pods)]).restarts



# ---- checks that list for themselves: a resource the cluster does not serve is a note ------------


def _not_served(title: str, columns: list[str], error: RunbookError) -> Check:
    if isinstance(error, NotFound):
        return Check(_frame([], columns), [], note="not served by this cluster")
    return Check(_frame([], columns), [Finding(
        id=f"check-not-readable/{_slug(title)}", severity="info", title=f"{title}: cannot be listed",
        detail=f"{error} (give the runbook's account list access to check them)")],
        note="not readable with these credentials")


def _guarded(title: str, columns: list[str]) -> Callable[[Callable[..., Check]], Callable[..., Check]]:
    """A check over a list the cluster may not serve (404) or let us read (403): never a crash.

    404 on the list (an API group this cluster does not have) gives an empty table with the
    note "not served by this cluster" and no finding; 403 gives an info finding, since a
    check that silently never runs would read as a healthy cluster.
    """
    def wrap(fn: Callable[..., Check]) -> Callable[..., Check]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kw: Any) -> Check:
            try:
                return fn(*args, **kw)
            except (NotFound, Forbidden) as e:
                return _not_served(title, columns, e)
        return guarded
    return wrap


@_guarded("Nodes", NODE_COLUMNS)
def nodes(cluster: kube.Cluster) -> Check:
    """:func:`check_nodes` over the cluster's Nodes (a namespace-scoped identity may not list them)."""
    return check_nodes(kube.objects(cluster, "nodes"))


def _age_minutes(obj: dict, now: datetime) -> float:
    created = kube.parse_time(obj["metadata"].get("creationTimestamp")) or now
    return (now - created).total_seconds() / 60


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
    return Check(_frame(rows, STATEFULSET_COLUMNS), findings)


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
    return Check(_frame(rows, DAEMONSET_COLUMNS), findings)


@_guarded("StatefulSets", STATEFULSET_COLUMNS)
def statefulsets(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_statefulsets` over the cluster's StatefulSets, streamed."""
    return check_statefulsets(kube.objects(cluster, "statefulsets", namespaces))


@_guarded("DaemonSets", DAEMONSET_COLUMNS)
def daemonsets(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_daemonsets` over the cluster's DaemonSets, streamed."""
    return check_daemonsets(kube.objects(cluster, "daemonsets", namespaces))


# ---- Jobs and CronJobs -----------------------------------------------------------------

_CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_CRON_NAMES = {**{m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                                  "oct", "nov", "dec"))},
               **{d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}}


def _cron_field(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if rng in ("*", "?"):
            a, b = low, high
        else:
            lo, _, hi = rng.partition("-")
            a = int(_CRON_NAMES.get(lo, lo))
            b = int(_CRON_NAMES.get(hi, hi)) if hi else (high if step else a)
        out.update(range(a, b + 1, int(step) if step else 1))
    if high == 6 and 7 in out:  # Sunday as 7
        out.add(0)
    return out


def cron_next(schedule: str, after: datetime, tz: str | None = None) -> datetime | None:
    """The first time after `after` that a CronJob `schedule` fires (standard 5-field cron).

    Handles ``*``, lists, ranges, steps, month and day names, the ``@daily``-style macros,
    ``CRON_TZ=``/``TZ=`` prefixes and ``spec.timeZone``. Day of month and day of week
    combine as cron does (either matches when both are restricted). None when the schedule
    cannot be read or never fires within five years.
    """
    text = schedule.strip()
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        tz = prefix.split("=", 1)[1]
    text = _CRON_ALIASES.get(text, text)
    fields = text.split()
    if len(fields) != 5:
        return None
    try:
        minutes, hours = _cron_field(fields[0], 0, 59), _cron_field(fields[1], 0, 23)
        days, months = _cron_field(fields[2], 1, 31), _cron_field(fields[3], 1, 12)
        weekdays = _cron_field(fields[4], 0, 6)
        zone = ZoneInfo(tz) if tz else UTC
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return None
    any_day, any_weekday = fields[2] in ("*", "?"), fields[4] in ("*", "?")
    t = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = t + timedelta(days=5 * 366)
    while t < limit:
        if t.month not in months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            continue
        dom, dow = t.day in days, (t.weekday() + 1) % 7 in weekdays
        day_ok = (dom and dow) if any_day or any_weekday else (dom or dow)
        if not day_ok:
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if t.hour not in hours:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        if t.minute not in minutes:
            t += timedelta(minutes=1)
            continue
        return t.astimezone(UTC)
    return None


BATCH_COLUMNS = ["kind", "namespace", "name", "schedule", "last_schedule", "active", "problem"]


def _failed(job: dict) -> dict:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Failed" and c.get("status") == "True"), {})


def check_batch(cronjobs: Iterable[dict], jobs: Iterable[dict], *, now: datetime | None = None,
                grace_minutes: int = 5) -> Check:
    """CronJobs whose last Job failed, that missed their schedule, are suspended or pile up; Jobs past their deadline.

    Jobs are consumed first (streamed): only the newest Job of each CronJob and the Jobs past
    their deadline are kept. Severity: batch work that did not happen (a failed or missed
    run: backups, reports, cleanups) is a warning, like overlapping runs; a suspended CronJob
    is info (someone chose it, but it is easy to forget).
    """
    now = now or datetime.now(UTC)
    latest: dict[tuple[str, str], tuple[str, str, dict]] = {}
    rows, findings = [], []
    for job in jobs:
        meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        owner = next((r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == "CronJob"), None)
        failed = _failed(job)
        if owner:
            created = meta.get("creationTimestamp") or ""
            if (ns, owner) not in latest or created > latest[(ns, owner)][0]:
                latest[(ns, owner)] = (created, name, failed)
            continue
        deadline = spec.get("activeDeadlineSeconds")
        started = kube.parse_time(status.get("startTime"))
        done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in status.get("conditions") or [])
        over = (failed.get("reason") == "DeadlineExceeded"
                or (deadline and started and not done and now - started > timedelta(seconds=deadline)))
        if over:
            rows.append({"kind": "Job", "namespace": ns, "name": name, "schedule": "", "last_schedule": "",
                         "active": status.get("active", 0), "problem": "past its deadline"})
            findings.append(Finding(
                id=f"job-deadline-exceeded/{ns}/{name}", severity="warning",
                title=f"Job {ns}/{name} ran past its activeDeadlineSeconds ({deadline}s)",
                detail=failed.get("message") or "It is still running after its deadline.",
                resource=f"Job/{ns}/{name}", evidence={"deadline_seconds": deadline,
                                                       "started": status.get("startTime")}))
    for cj in cronjobs:
        meta, spec, status = cj["metadata"], cj.get("spec") or {}, cj.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        resource = f"CronJob/{ns}/{name}"
        schedule = spec.get("schedule", "")
        last = status.get("lastScheduleTime") or ""
        active = len(status.get("active") or [])
        problems = []
        if spec.get("suspend"):
            problems.append("suspended")
            findings.append(Finding(id=f"cronjob-suspended/{ns}/{name}", severity="info",
                                    title=f"CronJob {ns}/{name} is suspended", resource=resource,
                                    detail=f"It does not run ({schedule}) until spec.suspend is false.",
                                    evidence={"last_schedule": last}))
        else:
            base = kube.parse_time(last) or kube.parse_time(meta.get("creationTimestamp"))
            due = cron_next(schedule, base, spec.get("timeZone")) if base else None
            if due and due + timedelta(minutes=grace_minutes) < now:
                problems.append("missed schedule")
                findings.append(Finding(
                    id=f"cronjob-missed-schedule/{ns}/{name}", severity="warning",
                    title=f"CronJob {ns}/{name} has not run since {last or 'its creation'} "
                          f"(due {due:%Y-%m-%d %H:%M} UTC by '{schedule}')",
                    detail="The CronJob controller did not start a Job when the schedule said: it may be "
                           "down, the startingDeadlineSeconds passed, or concurrencyPolicy Forbid waits "
                           "on a stuck Job.", resource=resource,
                    evidence={"schedule": schedule, "last_schedule": last, "due": due.isoformat()}))
        newest = latest.get((ns, name))
        if newest and newest[2]:
            problems.append("last Job failed")
            findings.append(Finding(
                id=f"cronjob-last-job-failed/{ns}/{name}", severity="warning",
                title=f"CronJob {ns}/{name}: its last Job {newest[1]} failed ({newest[2].get('reason', '')})",
                detail=newest[2].get("message", ""), resource=resource,
                evidence={"job": newest[1], "reason": newest[2].get("reason", "")}))
        if active > 1:
            problems.append(f"{active} active Jobs")
            findings.append(Finding(
                id=f"cronjob-too-many-active/{ns}/{name}", severity="warning",
                title=f"CronJob {ns}/{name} has {active} active Jobs",
                detail="Runs overlap: each takes longer than the schedule's interval, or they hang. "
                       "concurrencyPolicy Forbid or Replace stops the pile-up.", resource=resource,
                evidence={"active": [a.get("name") for a in status.get("active") or []][:10]}))
        if problems:
            rows.append({"kind": "CronJob", "namespace": ns, "name": name, "schedule": schedule,
                         "last_schedule": last, "active": active, "problem": ", ".join(problems)})
    return Check(_frame(rows, BATCH_COLUMNS), findings)


@_guarded("Jobs and CronJobs", BATCH_COLUMNS)
def batch(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_batch` over the cluster's Jobs and CronJobs, streamed."""
    jobs = kube.objects(cluster, "jobs", namespaces)
    cronjobs = kube.objects(cluster, "cronjobs", namespaces)
    return check_batch(cronjobs, jobs)


# ---- storage -------------------------------------------------------------------------------

PVC_COLUMNS = ["namespace", "claim", "phase", "storage_class", "requested", "reason", "message"]


def check_pvcs(claims: Iterable[dict], reasons: dict[tuple[str, str], dict] | None = None, *,
               pending_minutes: int = 10, now: datetime | None = None) -> Check:
    """PersistentVolumeClaims Pending (with the reason from their events) or Lost.

    Lost (its volume is gone) is critical: pods using it cannot start and the data may be
    lost. Pending longer than `pending_minutes` is a warning (the pods waiting on it stay
    Pending), except a claim waiting for its first consumer (``WaitForFirstConsumer``), which
    is normal. `reasons` maps (namespace, claim) to its latest event (reason, message).
    """
    now = now or datetime.now(UTC)
    reasons = reasons or {}
    rows, findings = [], []
    for c in claims:
        meta, spec, status = c["metadata"], c.get("spec") or {}, c.get("status") or {}
        ns, name, phase = meta.get("namespace") or "", meta["name"], status.get("phase", "")
        ev = reasons.get((ns, name)) or {}
        row = {"namespace": ns, "claim": name, "phase": phase, "storage_class": spec.get("storageClassName", ""),
               "requested": ((spec.get("resources") or {}).get("requests") or {}).get("storage", ""),
               "reason": ev.get("reason", ""), "message": ev.get("message", "")}
        resource = f"PersistentVolumeClaim/{ns}/{name}"
        if phase == "Lost":
            rows.append(row)
            findings.append(Finding(id=f"pvc-lost/{ns}/{name}", severity="critical",
                                    title=f"PersistentVolumeClaim {ns}/{name} is Lost",
                                    detail=f"Its volume {spec.get('volumeName', '')} no longer exists: pods "
                                           "using the claim cannot start.", resource=resource))
        elif phase == "Pending" and _age_minutes(c, now) > pending_minutes \
                and ev.get("reason") != "WaitForFirstConsumer":
            rows.append(row)
            why = f"{ev['reason']}: {ev.get('message', '')}" if ev.get("reason") else "no event explains it"
            findings.append(Finding(
                id=f"pvc-pending/{ns}/{name}", severity="warning",
                title=f"PersistentVolumeClaim {ns}/{name} Pending for {int(_age_minutes(c, now))} min",
                detail=f"{why[:300]}. Pods using it stay Pending.", resource=resource,
                evidence={"storage_class": row["storage_class"], "reason": ev.get("reason", "")}))
    return Check(_frame(rows, PVC_COLUMNS), findings)


@_guarded("PersistentVolumeClaims", PVC_COLUMNS)
def pvcs(cluster: kube.Cluster, namespaces: list[str] | None = None, *, pending_minutes: int = 10,
         max_events: int = 50) -> Check:
    """:func:`check_pvcs` over the cluster's claims; the events of (at most `max_events`) Pending ones."""
    bad: list[dict] = []
    for page in kube.pages(cluster, "persistentvolumeclaims", namespaces):
        bad.extend(c for c in page if (c.get("status") or {}).get("phase") in ("Pending", "Lost"))
    reasons = {}
    for c in bad[:max_events]:
        if (c.get("status") or {}).get("phase") != "Pending":
            continue
        ns, name = c["metadata"].get("namespace"), c["metadata"]["name"]
        evs = kube.events(cluster, ns, object_name=name, kind="PersistentVolumeClaim")
        if evs:
            reasons[(ns, name)] = evs[-1]
    return check_pvcs(bad, reasons, pending_minutes=pending_minutes)


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
    return Check(_frame(rows, HPA_COLUMNS), findings)


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
    return Check(_frame(rows, PDB_COLUMNS), findings)


@_guarded("HorizontalPodAutoscalers", HPA_COLUMNS)
def hpas(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_hpas` over the cluster's autoscalers, streamed."""
    return check_hpas(kube.objects(cluster, "horizontalpodautoscalers", namespaces))


@_guarded("PodDisruptionBudgets", PDB_COLUMNS)
def pdbs(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_pdbs` over the cluster's budgets, streamed."""
    return check_pdbs(kube.objects(cluster, "poddisruptionbudgets", namespaces))


# ---- capacity ------------------------------------------------------------------------------

QUOTA_COLUMNS = ["namespace", "quota", "resource", "used", "hard", "percent"]


def check_quotas(quotas: Iterable[dict], *, percent: int = 90) -> Check:
    """ResourceQuota resources used at `percent` or more: the next pod or object is refused.

    A warning: running pods are fine, but rollouts, scale-ups and new objects in the
    namespace fail with "exceeded quota" once it is full.
    """
    rows, findings = [], []
    for q in quotas:
        meta, status = q["metadata"], q.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        used = status.get("used") or {}
        for res, hard in sorted((status.get("hard") or {}).items()):
            h, u = _quantity(hard), _quantity(used.get(res, 0))
            if h <= 0:
                continue
            pct = round(100 * u / h, 1)
            if pct < percent:
                continue
            rows.append({"namespace": ns, "quota": name, "resource": res, "used": used.get(res, "0"),
                         "hard": hard, "percent": pct})
            findings.append(Finding(
                id=f"quota-near-limit/{ns}/{name}/{res}", severity="warning",
                title=f"ResourceQuota {ns}/{name}: {res} at {pct:g}% ({used.get(res, '0')} of {hard})",
                detail="New pods or objects that need more are refused (exceeded quota); rollouts and "
                       "scale-ups in the namespace fail.", resource=f"ResourceQuota/{ns}/{name}",
                evidence={"resource": res, "used": used.get(res, "0"), "hard": hard}))
    return Check(_frame(rows, QUOTA_COLUMNS), findings)


@_guarded("ResourceQuotas", QUOTA_COLUMNS)
def quotas(cluster: kube.Cluster, namespaces: list[str] | None = None, *, percent: int = 90) -> Check:
    """:func:`check_quotas` over the cluster's quotas, streamed."""
    return check_quotas(kube.objects(cluster, "resourcequotas", namespaces),
                        percent=percent)


CAPACITY_COLUMNS = ["node", "pods", "cpu_requested", "cpu_allocatable", "memory_requested_gib",
                    "memory_allocatable_gib"]


def check_node_capacity(nodes: pd.DataFrame, requests: dict[str, dict[str, float]]) -> Check:
    """Nodes whose running pods request more than the node's allocatable CPU or memory.

    The scheduler never places pods that way, so it means the node's allocatable shrank
    (kubelet reservations, a resized machine) or pods were bound by hand: a warning, since
    those pods are the first evicted under pressure. `nodes` is :func:`check_nodes`' table,
    `requests` :attr:`PodScan.node_requests`.
    """
    rows, findings = [], []
    for n in nodes.to_dict("records"):
        req = requests.get(n["node"]) or {"cpu": 0.0, "memory": 0.0, "pods": 0}
        over = [r for r, a in (("cpu", n.get("cpu_allocatable")), ("memory", n.get("memory_allocatable")))
                if a and req[r] > a]
        if not over:
            continue
        gib = 2 ** 30
        rows.append({"node": n["node"], "pods": req["pods"], "cpu_requested": round(req["cpu"], 2),
                     "cpu_allocatable": n["cpu_allocatable"],
                     "memory_requested_gib": round(req["memory"] / gib, 2),
                     "memory_allocatable_gib": round(n["memory_allocatable"] / gib, 2)})
        findings.append(Finding(
            id=f"node-overcommitted/{n['node']}", severity="warning",
            title=f"Node {n['node']}: pod requests exceed allocatable {' and '.join(over)}",
            detail="The scheduler never does this: the node's allocatable shrank or pods were bound by hand. "
                   "Its pods are evicted first when it runs short.", resource=f"Node/{n['node']}",
            evidence={r: {"requested": req[r], "allocatable": n.get(f"{r}_allocatable")} for r in over}))
    return Check(_frame(rows, CAPACITY_COLUMNS), findings)


# ---- control plane -----------------------------------------------------------------------

WEBHOOK_COLUMNS = ["kind", "configuration", "webhook", "service", "failure_policy", "ready_endpoints"]


def check_webhooks(configurations: Iterable[dict], ready: dict[tuple[str, str], int | None]) -> Check:
    """Admission webhooks whose Service has no ready endpoint.

    With ``failurePolicy: Fail`` (the default) the API server rejects every write the
    webhook matches: critical. With ``Ignore`` writes go through unchecked after the
    webhook's timeout: a warning. `ready` maps (namespace, service) to its ready
    addresses (None: the Service or its Endpoints do not exist).
    """
    rows, findings = [], []
    for cfg in configurations:
        kind = cfg.get("kind") or "WebhookConfiguration"
        name = cfg["metadata"]["name"]
        for wh in cfg.get("webhooks") or []:
            svc = (wh.get("clientConfig") or {}).get("service")
            if not svc:
                continue  # a URL webhook: outside the cluster's Services
            key = (svc.get("namespace", ""), svc.get("name", ""))
            n = ready.get(key)
            policy = wh.get("failurePolicy") or "Fail"
            rows.append({"kind": kind, "configuration": name, "webhook": wh.get("name", ""),
                         "service": f"{key[0]}/{key[1]}", "failure_policy": policy,
                         "ready_endpoints": n if n is not None else "missing"})
            if n:
                continue
            verb = "rejects every write it matches" if policy == "Fail" else \
                "lets writes through unchecked after its timeout"
            findings.append(Finding(
                id=f"webhook-no-endpoints/{name}/{wh.get('name', '')}",
                severity="critical" if policy == "Fail" else "warning",
                title=f"{kind} {name}: webhook {wh.get('name', '')} has no ready endpoint "
                      f"(Service {key[0]}/{key[1]}{' missing' if n is None else ''})",
                detail=f"With failurePolicy {policy} the API server {verb}.",
                resource=f"{kind}/{name}", evidence={"service": f"{key[0]}/{key[1]}", "failure_policy": policy,
                                                     "rules": (wh.get("rules") or [])[:5]}))
    return Check(_frame(rows, WEBHOOK_COLUMNS), findings)


def _ready_addresses(cluster: kube.Cluster, namespace: str, name: str) -> int | None:
    try:
        ep = kube.get_object(cluster, "endpoints", namespace, name)
    except NotFound:
        return None
    return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])


def _selects_any(cluster: kube.Cluster, selector: dict | None, namespaces: list[str]) -> bool:
    """Whether a webhook's namespaceSelector matches one of `namespaces` (the API server evaluates it)."""
    query = kube._selector_string(selector)
    if not query:
        return True  # an empty selector matches every namespace
    wanted = set(namespaces)
    return any(n["metadata"]["name"] in wanted
               for n in kube.objects(cluster, "namespaces", label_selector=query))


def webhooks(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_webhooks` over both admission webhook kinds (each may be unserved).

    With `namespaces`, only the webhooks whose namespaceSelector matches one of them: the
    others never see a write there.
    """
    configs: list[dict] = []
    notes = []
    for plural, kind in (("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"),
                         ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration")):
        try:
            for page in kube.pages(cluster, plural):
                configs.extend({"kind": kind, "metadata": {"name": c["metadata"]["name"]},
                                "webhooks": [w for w in c.get("webhooks") or [] if not namespaces
                                             or _selects_any(cluster, w.get("namespaceSelector"), namespaces)]}
                               for c in page)
        except (NotFound, Forbidden) as e:
            notes.append(_not_served(f"{kind}s", WEBHOOK_COLUMNS, e))
    ready = {}
    for c in configs:
        for wh in c["webhooks"]:
            svc = (wh.get("clientConfig") or {}).get("service")
            if svc and (svc.get("namespace", ""), svc.get("name", "")) not in ready:
                ready[(svc.get("namespace", ""), svc.get("name", ""))] = _ready_addresses(
                    cluster, svc.get("namespace", ""), svc.get("name", ""))
    check = check_webhooks(configs, ready)
    check.findings.extend(f for n in notes for f in n.findings)
    if len(notes) == 2:
        check.note = notes[0].note
    return check


APISERVICE_COLUMNS = ["apiservice", "service", "available", "reason", "message"]


def check_apiservices(apiservices: Iterable[dict]) -> Check:
    """Aggregated APIs that are not Available.

    A warning: the API group fails (a down metrics-server stops every HPA and ``kubectl
    top``), and discovery errors make namespace deletion and garbage collection stall.
    """
    rows, findings = [], []
    for a in apiservices:
        name, spec = a["metadata"]["name"], a.get("spec") or {}
        avail = kube.condition(a, "Available")
        if avail.get("status") == "True":
            continue
        svc = spec.get("service") or {}
        where = f"{svc.get('namespace', '')}/{svc.get('name', '')}" if svc else "local"
        rows.append({"apiservice": name, "service": where, "available": avail.get("status", "Unknown"),
                     "reason": avail.get("reason", ""), "message": avail.get("message", "")})
        extra = " HPAs cannot read CPU/memory and `kubectl top` fails." if spec.get("group") == "metrics.k8s.io" else ""
        findings.append(Finding(
            id=f"apiservice-unavailable/{name}", severity="warning",
            title=f"APIService {name} is not Available ({avail.get('reason', 'no condition')})",
            detail=f"{avail.get('message', '')[:300]} Requests to {spec.get('group', '')}/{spec.get('version', '')} "
                   f"fail; namespace deletion waits on discovery.{extra}",
            resource=f"APIService/{name}", evidence={"service": where, "reason": avail.get("reason", "")}))
    return Check(_frame(rows, APISERVICE_COLUMNS), findings)


@_guarded("APIServices", APISERVICE_COLUMNS)
def apiservices(cluster: kube.Cluster) -> Check:
    """:func:`check_apiservices` over the cluster's APIServices."""
    return check_apiservices(kube.objects(cluster, "apiservices"))


READYZ_COLUMNS = ["check", "status"]


def check_readyz(status: int, text: str) -> Check:
    """The API server's own readiness checks (``/readyz?verbose``): ``[+]name ok`` / ``[-]name failed``.

    A failed check is a warning (load balancers drop an unready API server), critical when
    etcd fails (no write or consistent read works).
    """
    rows = []
    for line in text.splitlines():
        m = re.match(r"\[([+-])\](\S+)\s+(.*)", line.strip())
        if m:
            rows.append({"check": m.group(2), "status": "ok" if m.group(1) == "+" else m.group(3)})
    failed = [r for r in rows if r["status"] != "ok"]
    findings = []
    if failed or not 200 <= status < 300:
        etcd = any(r["check"].startswith("etcd") for r in failed)
        findings.append(Finding(
            id="apiserver-not-ready", severity="critical" if etcd else "warning",
            title=f"The API server reports {len(failed) or 'its'} failing readiness check(s): "
                  f"{', '.join(r['check'] for r in failed)[:200] or f'HTTP {status}'}",
            detail="GET /readyz?verbose; an unready API server is taken out of its load balancer.",
            evidence={"failed": [r["check"] for r in failed][:20], "status": status}))
    return Check(_frame(failed, READYZ_COLUMNS), findings)


def readyz(cluster: kube.Cluster) -> Check:
    """:func:`check_readyz` on this cluster (a server without /readyz gives a note)."""
    status, text = kube.get_text(cluster, "/readyz", [("verbose", "true")])
    if status == 404:
        return Check(_frame([], READYZ_COLUMNS), [], note="not served by this cluster")
    if status in (401, 403):
        return _not_served("/readyz", READYZ_COLUMNS, Forbidden(f"GET /readyz: HTTP {status}"))
    return check_readyz(status, text)


# ---- volumes filling up (kubelet metrics through Prometheus) ---------------------------------

VOLUME_COLUMNS = ["namespace", "persistentvolumeclaim", "used_gib", "capacity_gib", "percent"]
VOLUME_QUERIES = {
    "used": "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes)",
    "capacity": "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_capacity_bytes)",
}


def check_volumes(usage: pd.DataFrame, *, warning_percent: int = 85, critical_percent: int = 97) -> Check:
    """PersistentVolumeClaims whose volume is nearly full (kubelet_volume_stats_* per claim).

    `usage` has ``namespace``, ``persistentvolumeclaim``, ``used`` and ``capacity`` (bytes).
    At `critical_percent` writes are about to fail (databases stop, logs are lost): critical;
    at `warning_percent` a warning, as KubePersistentVolumeFillingUp does.
    """
    rows, findings = [], []
    gib = 2 ** 30
    for r in usage.to_dict("records"):
        if not r.get("capacity"):
            continue
        pct = round(100 * r["used"] / r["capacity"], 1)
        if pct < warning_percent:
            continue
        ns, name = r["namespace"], r["persistentvolumeclaim"]
        rows.append({"namespace": ns, "persistentvolumeclaim": name, "used_gib": round(r["used"] / gib, 2),
                     "capacity_gib": round(r["capacity"] / gib, 2), "percent": pct})
        findings.append(Finding(
            id=f"volume-filling-up/{ns}/{name}", severity="critical" if pct >= critical_percent else "warning",
            title=f"Volume of PersistentVolumeClaim {ns}/{name} is {pct:g}% full",
            detail=f"{r['used'] / gib:.1f} of {r['capacity'] / gib:.1f} GiB used; writes fail when it is full. "
                   "Expand the claim (allowVolumeExpansion) or free space.",
            resource=f"PersistentVolumeClaim/{ns}/{name}", evidence={"used_bytes": r["used"],
                                                                    "capacity_bytes": r["capacity"]}))
    rows.sort(key=lambda r: -r["percent"])
    return Check(_frame(rows, VOLUME_COLUMNS), findings)


def volumes(prometheus_url: str | None, namespaces: list[str] | None = None, *, verify_tls: bool = True,
            warning_percent: int = 85, critical_percent: int = 97) -> Check:
    """:func:`check_volumes` from Prometheus; without a URL a note, with Prometheus down a warning.

    A Prometheus that cannot be reached empties this section and says so (``data-source-down/prometheus``,
    a warning): the rest of the report does not depend on it.
    """
    from . import metrics
    from .errors import SOURCE_ERRORS

    if not prometheus_url:
        return Check(_frame([], VOLUME_COLUMNS), [], note="no Prometheus configured (prometheus_url)")
    try:
        prom = metrics.connect(prometheus_url, verify=verify_tls)
        frames = {k: metrics.query(prom, q) for k, q in VOLUME_QUERIES.items()}
    except SOURCE_ERRORS as e:
        return Check(_frame([], VOLUME_COLUMNS), [Finding(
            id="data-source-down/prometheus", severity="warning", title="Prometheus cannot be reached: "
            "volume usage is not checked", detail=str(e), resource="prometheus")], note="Prometheus unreachable")
    keys = ["namespace", "persistentvolumeclaim"]
    parts = [f.reindex(columns=[*keys, "value"]).rename(columns={"value": k}) for k, f in frames.items()]
    usage = parts[0].merge(parts[1], on=keys, how="inner")
    if namespaces:
        usage = usage[usage.namespace.isin(namespaces)]
    return check_volumes(usage, warning_percent=warning_percent, critical_percent=critical_percent)
