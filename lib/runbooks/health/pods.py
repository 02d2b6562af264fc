"""The pod scan: one streamed pass over every pod (the hot path at 150,000 pods).

What stays is bounded by workloads, nodes and `top`, never by pods: findings grouped per
(problem, workload), the worst container rows, restarts per workload, requests per node.
"""

from __future__ import annotations

import csv
import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from .. import kube, rollouts
from ..model import Finding
from .core import Check, frame, quantity, slug

CRASH_REASONS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                 "InvalidImageName", "RunContainerError")


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


def pod_requests(spec: dict) -> dict[str, float]:
    """CPU cores and memory bytes a pod requests, as the scheduler counts them.

    The sum over containers, or the largest init container when that is more, plus the
    pod overhead (RuntimeClass).
    """
    out = {}
    for res in ("cpu", "memory"):
        main = sum(quantity(((c.get("resources") or {}).get("requests") or {}).get(res))
                   for c in spec.get("containers") or [])
        init = max((quantity(((c.get("resources") or {}).get("requests") or {}).get(res))
                    for c in spec.get("initContainers") or []), default=0.0)
        out[res] = max(main, init) + quantity((spec.get("overhead") or {}).get(res))
    return out


def image_tag_problem(image: str) -> str:
    """``"latest"`` or ``"untagged"`` for images that float, else ``""`` (digests are pinned)."""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "untagged"
    return "latest" if last.rsplit(":", 1)[1] == "latest" else ""


class _Scanner:
    """The state of one pod scan and the per-pod work: :meth:`pod` is called 150,000 times.

    Rare branches (hygiene in production namespaces, long Pending) are methods of their own;
    what every pod goes through stays inline in :meth:`pod`.
    """

    def __init__(self, *, restart_threshold: int, pending_minutes: int, production: set[str], top: int,
                 writer: Any, now: datetime) -> None:
        self.restart_threshold, self.pending_minutes = restart_threshold, pending_minutes
        self.production, self.top, self.writer, self.now = production, top, writer, now
        self.groups: dict[tuple[str, str, str], _Group] = {}
        self.worst: list[tuple] = []  # a min-heap of the `top` worst rows
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.node_requests: dict[str, dict[str, float]] = {}
        self.seen = self.unhealthy = 0

    def row(self, severity: str, values: list) -> None:
        """One unhealthy container row: to the CSV, and into the `top` worst when it ranks."""
        if self.writer:
            self.writer.writerow(values)
        key = (_SEVERITY_RANK[severity], values[5], values[0], values[1], values[3])
        item = (key, values)
        if len(self.worst) < self.top:
            heapq.heappush(self.worst, item)
        elif item > self.worst[0]:
            heapq.heapreplace(self.worst, item)

    def group(self, problem: str, severity: str, ns: str, workload: str) -> _Group:
        g = self.groups.get((problem, ns, workload))
        if g is None:
            g = self.groups[(problem, ns, workload)] = _Group(severity)
        return g

    def pod(self, pod: dict) -> None:
        self.seen += 1
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        phase = status.get("phase", "Unknown")
        node = spec.get("nodeName") or ""
        if node and phase not in ("Succeeded", "Failed"):
            req = pod_requests(spec)
            acc = self.node_requests.setdefault(node, {"cpu": 0.0, "memory": 0.0, "pods": 0})
            acc["cpu"] += req["cpu"]
            acc["memory"] += req["memory"]
            acc["pods"] += 1
        total = sum(s.get("restartCount", 0) for s in status.get("containerStatuses") or [])
        workload = kube.owner_workload(pod)
        if total:
            self.restarts[(ns, workload)] += total
        if ns in self.production and phase not in ("Succeeded", "Failed"):
            self.hygiene(spec, ns, name, workload)
        problems = kube.container_problems(pod)
        if phase == "Pending" and not any(p["waiting_reason"] for p in problems):
            self.pending(pod, ns, name, workload, node)
            return
        bad = False
        for p in problems:
            crash = rollouts.crash_reason(p, self.now)
            if crash in CRASH_REASONS:
                problem, severity = crash, "critical"
            elif not p["ready"] and phase == "Running":
                problem, severity = "not-ready", "warning"
            elif p["restarts"] >= self.restart_threshold:
                problem, severity = "restarts", "warning"
            else:
                continue
            self.group(problem, severity, ns, workload).add(
                name, restarts=p["restarts"], container=p["container"], waiting_reason=p["waiting_reason"],
                last_termination_reason=p["last_termination_reason"], last_exit_code=p["last_exit_code"])
            state = p["waiting_reason"] or ("Running, not ready" if not p["ready"] else "Running")
            if crash and not p["waiting_reason"]:
                state += f" (between crashes, {p['restarts']} restarts)"
            self.row(severity, [ns, name, workload, p["container"], state, p["restarts"],
                                p["last_termination_reason"], node])
            bad = True
        self.unhealthy += bad

    def hygiene(self, spec: dict, ns: str, name: str, workload: str) -> None:
        """Containers of a production namespace without requests or a memory limit, or on a floating tag."""
        for c in spec.get("containers") or []:
            res = c.get("resources") or {}
            missing = [f"{k} request" for k in ("cpu", "memory") if k not in (res.get("requests") or {})]
            if "memory" not in (res.get("limits") or {}):
                missing.append("memory limit")
            if missing:
                self.group("no-resources", "info", ns, workload).add(
                    name, container=c["name"], detail=", ".join(missing))
            tag = image_tag_problem(c.get("image", ""))
            if tag:
                self.group(f"image-{tag}", "info", ns, workload).add(
                    name, container=c["name"], detail=c.get("image", ""))

    def pending(self, pod: dict, ns: str, name: str, workload: str, node: str) -> None:
        """A Pending pod no container explains: unhealthy once older than `pending_minutes`."""
        meta = pod["metadata"]
        age = self.now - (kube.parse_time(meta.get("creationTimestamp")) or self.now)
        if age <= timedelta(minutes=self.pending_minutes):
            return
        cond = kube.condition(pod, "PodScheduled")
        reason = cond.get("reason", "") or "Pending"
        # `restarts` ranks a group's example pod: for Pending ones, the oldest (age in minutes)
        self.group("pending", "warning", ns, workload).add(
            name, waiting_reason=reason, detail=cond.get("message", ""), restarts=int(age.total_seconds() // 60))
        self.row("warning", [ns, name, workload, "", f"Pending ({reason})", 0, "", node])
        self.unhealthy += 1


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
    out = open(csv_path, "w", newline="") if csv_path else None  # noqa: SIM115 (closed below)
    writer = csv.writer(out) if out else None
    if writer:
        writer.writerow(POD_COLUMNS)
    scan = _Scanner(restart_threshold=restart_threshold, pending_minutes=pending_minutes,
                    production=set(production_namespaces), top=top, writer=writer,
                    now=now or datetime.now(UTC))
    try:
        for page in pages:
            for pod in page:
                scan.pod(pod)
    finally:
        if out:
            out.close()
    table = frame([dict(zip(POD_COLUMNS, v, strict=True)) for _, v in sorted(scan.worst, reverse=True)],
                  POD_COLUMNS)
    restart_rows = [{"namespace": ns, "workload": w, "restarts": n} for (ns, w), n in scan.restarts.most_common()]
    findings = _pod_findings(scan.groups, top, str(csv_path) if csv_path else None)
    return PodScan(Check(table, findings),
                   pd.DataFrame(restart_rows, columns=["namespace", "workload", "restarts"]),
                   scan.node_requests, scan.seen, scan.unhealthy, str(csv_path) if csv_path else None)


def _pod_finding(problem: str, ns: str, workload: str, g: _Group) -> Finding:
    kind, _, wname = workload.partition("/")
    resource = f"{kind}/{ns}/{wname}"
    subject = f"{workload} pod {g.sample[0]}" if g.pods == 1 else f"{kind} {ns}/{wname}: {g.pods} pods"
    evidence = {"pods": g.pods, "sample": g.sample, "container": g.container, "restarts": g.restarts,
                "waiting_reason": g.waiting_reason, "last_termination_reason": g.last_termination_reason,
                "last_exit_code": g.last_exit_code}
    fid = f"pod-{slug(problem)}/{ns}/{workload}"
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
                id=f"pod-{slug(problem)}/more", severity=items[0][2].severity,
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


def restarts_by_workload(pods: Iterable[dict]) -> pd.DataFrame:
    """Total container restarts per owning workload (for a bar chart); :func:`scan_pods` keeps the same."""
    return scan_pods([list(pods)]).restarts
