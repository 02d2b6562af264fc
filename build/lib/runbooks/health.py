"""Cluster health checks: turn listed objects into tables and findings.

Each check takes plain objects (as :func:`runbooks.kube.iter_objects` yields
them) and returns a DataFrame for the report and the findings it implies, so
the cluster-health notebook only chooses what to run and the rules here are
unit-tested on data. Severity follows what the problem does to users:
traffic failing now is critical, degraded redundancy or a stalled rollout is
a warning, symptoms such as Warning events are info.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from . import certs, kube
from .model import Finding

CRASH_REASONS = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                 "InvalidImageName", "RunContainerError")


@dataclass
class Check:
    """The outcome of one check: a table for people and findings for summary.json."""

    table: pd.DataFrame
    findings: list[Finding]


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def check_nodes(nodes: Iterable[dict]) -> Check:
    rows, findings = [], []
    for n in nodes:
        name = n["metadata"]["name"]
        ready = kube.condition(n, "Ready").get("status") == "True"
        pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                    if kube.condition(n, t).get("status") == "True"]
        cordoned = bool((n.get("spec") or {}).get("unschedulable"))
        info = (n.get("status") or {}).get("nodeInfo") or {}
        rows.append({"node": name, "ready": ready, "pressure": ", ".join(pressure), "cordoned": cordoned,
                     "kubelet": info.get("kubeletVersion", "")})
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
    return Check(_frame(rows, ["node", "ready", "pressure", "cordoned", "kubelet"]), findings)


def check_pods(pods: Iterable[dict], *, restart_threshold: int = 5, pending_minutes: int = 10,
               now: datetime | None = None) -> Check:
    """Pods that crash, cannot pull, stay Pending, restart a lot, or run unready."""
    now = now or datetime.now(UTC)
    rows, findings = [], []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        ns, name = meta.get("namespace"), meta["name"]
        resource = f"Pod/{ns}/{name}"
        workload = kube.owner_workload(pod)
        problems = kube.container_problems(pod)
        phase = status.get("phase", "Unknown")
        created = kube.parse_time(meta.get("creationTimestamp")) or now
        if phase == "Pending" and not any(p["waiting_reason"] for p in problems):
            age = now - created
            if age > timedelta(minutes=pending_minutes):
                reason = kube.condition(pod, "PodScheduled").get("reason", "") or "Pending"
                rows.append({"namespace": ns, "pod": name, "workload": workload, "container": "",
                             "state": f"Pending ({reason})", "restarts": 0, "last_termination": ""})
                findings.append(Finding(id=f"pod-pending/{ns}/{name}", severity="warning",
                                        title=f"Pod {ns}/{name} Pending for {int(age.total_seconds() // 60)} min",
                                        detail=kube.condition(pod, "PodScheduled").get("message", ""),
                                        resource=resource))
            continue
        for p in problems:
            state = p["waiting_reason"] or ("Running, not ready" if not p["ready"] else "Running")
            rows.append({"namespace": ns, "pod": name, "workload": workload, "container": p["container"],
                         "state": state, "restarts": p["restarts"],
                         "last_termination": p["last_termination_reason"]})
            evidence = {"container": p["container"], "restarts": p["restarts"],
                        "waiting_reason": p["waiting_reason"],
                        "last_termination_reason": p["last_termination_reason"],
                        "last_exit_code": p["last_exit_code"]}
            if p["waiting_reason"] in CRASH_REASONS:
                why = p["waiting_reason"]
                if p["last_termination_reason"]:
                    why += f", last terminated {p['last_termination_reason']}"
                    if p["last_exit_code"] is not None:
                        why += f" (exit {p['last_exit_code']})"
                findings.append(Finding(
                    id=f"pod-{p['waiting_reason'].lower()}/{ns}/{name}/{p['container']}", severity="critical",
                    title=f"{workload} pod {name}: {why}",
                    detail=f"Container {p['container']} has restarted {p['restarts']} times."
                    if p["restarts"] else f"Container {p['container']} never started.",
                    resource=resource, evidence=evidence))
            elif not p["ready"] and phase == "Running":
                findings.append(Finding(id=f"pod-not-ready/{ns}/{name}/{p['container']}", severity="warning",
                                        title=f"{workload} pod {name}: container {p['container']} is not ready",
                                        detail="Its readiness probe fails; it receives no Service traffic.",
                                        resource=resource, evidence=evidence))
            elif p["restarts"] >= restart_threshold:
                findings.append(Finding(id=f"pod-restarts/{ns}/{name}/{p['container']}", severity="warning",
                                        title=f"{workload} pod {name}: {p['restarts']} restarts",
                                        detail=f"Last termination: {p['last_termination_reason'] or 'unknown'}.",
                                        resource=resource, evidence=evidence))
    return Check(_frame(rows, ["namespace", "pod", "workload", "container", "state", "restarts",
                               "last_termination"]), findings)


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
    secret_names = {(s["metadata"].get("namespace"), s["metadata"]["name"]) for s in secrets}
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


def check_tls_secrets(secrets: Iterable[dict], *, warning_days: int = 30, critical_days: int = 7,
                      now: datetime | None = None) -> Check:
    """kubernetes.io/tls Secrets that are expired or expire soon (fingerprints only, no key material)."""
    now = now or datetime.now(UTC)
    rows, findings = [], []
    for s in secrets:
        if s.get("type") != certs.TLS_TYPE:
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
    """Total container restarts per owning workload (for a bar chart)."""
    rows = []
    for pod in pods:
        total = sum(s.get("restartCount", 0) for s in (pod.get("status") or {}).get("containerStatuses") or [])
        if total:
            rows.append({"namespace": pod["metadata"].get("namespace"), "workload": kube.owner_workload(pod),
                         "restarts": total})
    if not rows:
        return pd.DataFrame(columns=["namespace", "workload", "restarts"])
    return (pd.DataFrame(rows).groupby(["namespace", "workload"], as_index=False)["restarts"].sum()
            .sort_values("restarts", ascending=False).reset_index(drop=True))
