"""Incident investigation: alerts, golden signals, saturation, changes and logs on one timeline.

An SRE paged for a service runs one runbook; this module gathers what it
needs from each data source (Kubernetes, Prometheus, Alertmanager, the log
store), puts changes, alerts and the anomaly on one timeline, and ranks the
likely causes by evidence in plain sentences. A data source that is down
only empties its own section: every gatherer here takes an already-checked
connection or None. The two next actions (roll back, silence) are plan
builders for the plan/approve/audit flow of :mod:`runbooks.runbook`.

Findings about history (the anomaly, alerts that fired, likely causes) stay
as recorded; after a verified rollback the findings about the Deployment's
pods (their current state) are checked again (:func:`recheck`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import alerts, kube, logs, metrics, resolution, rollouts
from .errors import SOURCE_ERRORS, InvalidInput, RunbookError, Unavailable, cut
from .model import Finding, headless, who
from .params import IncidentParams, resolve_window  # noqa: F401  (notebooks call incident.resolve_window)
from .plans import Change, diff, register_target

if TYPE_CHECKING:  # the notebook side hands its Run to the job; the job never imports it
    from .runbook import Run

# ---- alerts -------------------------------------------------------------------------

SERVICE_LABELS = ("service", "deployment", "ingress", "container", "workload", "app", "job")


def service_alerts(am: Any, namespace: str, service: str, alert_name: str | None = None) -> pd.DataFrame:
    """Alerts in the namespace that name the service (a label equal to it, or one of its pods)."""
    matchers = [f'namespace="{namespace}"'] + ([f'alertname="{alert_name}"'] if alert_name else [])
    rows = []
    for a in alerts.alert_dicts(am, matchers):
        labels = a["labels"]
        if any(labels.get(k) == service for k in SERVICE_LABELS) or labels.get("pod", "").startswith(
                service + "-"):
            rows.append(a)
    return pd.DataFrame(rows, columns=alerts.ALERT_COLUMNS)


# ---- golden signals and saturation -----------------------------------------------------


@dataclass
class Signals:
    """RED and USE frames for the window, and the anomaly of each watched signal."""

    red: pd.DataFrame
    use: pd.DataFrame
    anomalies: dict[str, metrics.Anomaly] = field(default_factory=dict)
    missing: str | None = None  # why there is no data (Prometheus not configured or down)

    @property
    def anomaly(self) -> metrics.Anomaly | None:
        """The earliest anomaly of the user-facing signals (errors first, then latency)."""
        found = [self.anomalies[k] for k in ("error_ratio", "latency_p99") if k in self.anomalies]
        return min(found, key=lambda a: a.start) if found else None


def signals(prom: Any, params: IncidentParams, start: datetime, end: datetime) -> Signals:
    """Query RED for the service's ingress traffic and USE for its pods; detect anomalies.

    Independent queries run at once: USE alongside RED, each signal of them
    concurrently, then the baselines of the watched signals (their values over
    the window are RED's own series, not queried twice).
    """
    from concurrent.futures import ThreadPoolExecutor

    queries = params.queries or None
    common = {"namespace": params.namespace, "service": params.service, "ingress": params.ingress,
              "by": metrics.RED_BY}
    watched = {"error_ratio": ("error_ratio", {}), "latency_p99": ("latency_quantile", {"quantile": 0.99})}
    with ThreadPoolExecutor(max_workers=3) as pool:
        use = pool.submit(metrics.use, prom, params.namespace, params.service, start, end, queries=queries)
        red = metrics.red(prom, params.namespace, params.service, start, end, queries=queries,
                          ingress=params.ingress)
        anomalies = {name: pool.submit(metrics.find_anomaly, prom, query, start, end, queries=queries,
                                       values=red[red["signal"] == name] if len(red) else red, **common, **extra)
                     for name, (query, extra) in watched.items()}
        found = {name: a for name, f in anomalies.items() if (a := f.result()) is not None}
        return Signals(red, use.result(), found)


def saturation_facts(use: pd.DataFrame) -> dict[str, float]:
    """Peak CPU throttling ratio and memory working set / limit ratio over the window."""
    out: dict[str, float] = {}
    for name in ("cpu_throttling", "memory_ratio"):
        rows = use[use["signal"] == name] if len(use) else use
        if len(rows):
            out[name] = float(rows["value"].max())
    return out


# ---- what changed --------------------------------------------------------------------


def changes(cluster: kube.Cluster, namespace: str, service: str, start: datetime, end: datetime,
            history: list[dict] | None = None) -> pd.DataFrame:
    """Rollouts, scaling, config changes and Warning events of the workload within the window."""
    rows: list[dict] = []
    history = history if history is not None else rollouts.rollout_history(cluster, namespace, service)
    for prev, rev in zip([None, *history[:-1]], history, strict=True):
        if rev["created"] and start <= rev["created"] <= end:
            images = ", ".join(rev["images"])
            before = f" (was {', '.join(prev['images'])})" if prev else ""
            rows.append({"time": rev["created"], "kind": "rollout", "what": f"revision {rev['revision']}",
                         "detail": f"{rev['replicaset']}: {images}{before}"})
    for ev in kube.events(cluster, namespace, since=datetime.now(UTC) - start):
        obj = ev["object"]
        if ev["reason"] == "ScalingReplicaSet" and obj == f"Deployment/{service}":
            rows.append({"time": ev["last_seen"], "kind": "scaling", "what": "ScalingReplicaSet",
                         "detail": ev["message"]})
        elif ev["type"] == "Warning" and obj.split("/", 1)[-1].startswith(service + "-"):
            rows.append({"time": ev["last_seen"], "kind": "event", "what": ev["reason"],
                         "detail": f"{obj}: {ev['message']} (x{ev['count']})"})
    for resource in ("configmaps", "secrets"):
        for obj in kube.iter_objects(cluster, resource, namespace):
            t = rollouts.last_modified(obj)
            if t and start <= t <= end and not obj["metadata"]["name"].startswith("sh.helm.release"):
                kind = "ConfigMap" if resource == "configmaps" else "Secret"
                rows.append({"time": t, "kind": "config", "what": f"{kind}/{obj['metadata']['name']}",
                             "detail": f"{kind} {obj['metadata']['name']} was written"})
    df = pd.DataFrame(rows, columns=["time", "kind", "what", "detail"])
    return df.sort_values("time").reset_index(drop=True) if len(df) else df


def timeline(changes_df: pd.DataFrame, alerts_df: pd.DataFrame, sig: Signals | None) -> pd.DataFrame:
    """Changes, alerts and anomalies on one time axis (what the timeline chart draws)."""
    rows = [{"time": r.time, "lane": r.kind, "label": r.what, "detail": r.detail}
            for r in changes_df.itertuples()]
    for a in alerts_df.itertuples():
        rows.append({"time": a.startsAt, "lane": "alert", "label": a.alertname,
                     "detail": f"{a.state}: {a.summary}"})
    if sig is not None:
        for name, an in sig.anomalies.items():
            end = an.end.isoformat() if an.end is not None else "ongoing"
            rows.append({"time": an.start, "lane": "anomaly", "label": name,
                         "detail": f"left baseline {an.baseline:.3g}, peak {an.peak:.3g}; until {end}"})
    df = pd.DataFrame(rows, columns=["time", "lane", "label", "detail"])
    if len(df):
        df["time"] = pd.to_datetime(df["time"], utc=True)
        df = df.sort_values("time").reset_index(drop=True)
    return df


# ---- likely causes ---------------------------------------------------------------------


def _minutes(delta: timedelta) -> str:
    m = round(delta.total_seconds() / 60)
    return f"{abs(m)} min {'after' if m >= 0 else 'before'}"


def likely_causes(params: IncidentParams, *, history: list[dict], pods: list[dict], sig: Signals | None,
                  alerts_df: pd.DataFrame, changes_df: pd.DataFrame, top_errors: pd.DataFrame | None,
                  window_start: datetime) -> list[dict]:
    """Causes ranked by evidence, each a sentence with the facts behind it (score 0..1)."""
    causes: list[dict] = []
    anomaly = sig.anomaly if sig else None
    onset = anomaly.start.to_pydatetime() if anomaly is not None else None
    crashing = [p for p in pods if p["waiting_reason"] or p["last_termination_reason"]]
    for rev in reversed(history):
        created = rev["created"]
        if not created or created < window_start - timedelta(minutes=params.rollout_window_minutes):
            continue
        rev_pods = [p for p in crashing if p["revision"] == rev["revision"]]
        near = onset is not None and timedelta(minutes=-5) <= onset - created <= timedelta(
            minutes=params.rollout_window_minutes)
        if not near and not rev_pods:
            continue
        what = f"{params.service} revision {rev['revision']} ({', '.join(rev['images'])})"
        text = (f"{anomaly_name(sig)} rose {_minutes(onset - created)} {what} rolled out"
                if near and onset is not None else f"{what} rolled out at {created:%H:%M} UTC")
        if rev_pods:
            reasons = sorted({p["last_termination_reason"] or p["waiting_reason"] for p in rev_pods})
            restarts = sum(p["restarts"] for p in rev_pods)
            text += f"; its pods are {'/'.join(reasons)} ({len(rev_pods)} pod(s), {restarts} restarts)"
        score = 0.5 + (0.3 if near else 0) + (0.15 if rev_pods else 0)
        causes.append({"score": round(score, 2), "cause": "bad rollout", "sentence": text,
                       "evidence": {"revision": rev["revision"], "replicaset": rev["replicaset"],
                                    "rolled_out": created.isoformat(), "crashing_pods": [p["pod"] for p in rev_pods]}})
        break
    oom = [p for p in pods if p["last_termination_reason"] == "OOMKilled"]
    facts = saturation_facts(sig.use) if sig is not None else {}
    if oom or facts.get("memory_ratio", 0) >= 0.95:
        peak = facts.get("memory_ratio")
        text = "memory is exhausted: "
        text += (f"working set peaked at {peak:.0%} of the limit" if peak is not None else "")
        text += ("; " if peak is not None and oom else "") + (
            f"{len(oom)} pod(s) were OOMKilled" if oom else "")
        causes.append({"score": 0.7 if oom else 0.5, "cause": "memory limit", "sentence": text,
                       "evidence": {"oom_killed_pods": [p["pod"] for p in oom], "memory_ratio_peak": peak}})
    if facts.get("cpu_throttling", 0) >= 0.25:
        causes.append({"score": 0.35, "cause": "CPU throttling",
                       "sentence": f"CPU is throttled: up to {facts['cpu_throttling']:.0%} of CFS periods",
                       "evidence": {"cpu_throttling_peak": facts["cpu_throttling"]}})
    if onset is not None and len(changes_df):
        config = changes_df[(changes_df["kind"] == "config")]
        for row in config.itertuples():
            delta = onset - row.time
            if timedelta(0) <= delta <= timedelta(minutes=params.rollout_window_minutes):
                causes.append({"score": 0.45, "cause": "config change",
                               "sentence": f"{row.what} changed {_minutes(delta)[:-6]} before the anomaly",
                               "evidence": {"object": row.what, "time": row.time.isoformat()}})
    if top_errors is not None and len(top_errors):
        top = top_errors.iloc[0]
        pods_text = ", ".join(top["pods"]) if isinstance(top["pods"], (list, tuple)) else str(top["pods"])
        causes.append({"score": 0.3, "cause": "errors in the logs",
                       "sentence": f"the most frequent error is \"{top['pattern']}\" ({int(top['count'])} times, "
                                   f"from {pods_text})",
                       "evidence": {"pattern": top["pattern"], "count": int(top["count"])}})
    firing = alerts_df[alerts_df["state"] == "active"] if len(alerts_df) else alerts_df
    if len(firing):
        names = ", ".join(sorted(set(firing["alertname"])))
        causes.append({"score": 0.2, "cause": "firing alerts", "sentence": f"firing for the service: {names}",
                       "evidence": {"alerts": sorted(set(firing["alertname"]))}})
    causes.sort(key=lambda c: -c["score"])
    for i, c in enumerate(causes, 1):
        c["rank"] = i
    return causes


def anomaly_name(sig: Signals | None) -> str:
    a = sig.anomaly if sig else None
    if a is None or sig is None:
        return "the anomaly"
    name = next(k for k, v in sig.anomalies.items() if v is a)
    return {"error_ratio": "the 5xx error ratio", "latency_p99": "p99 latency"}.get(name, name)


def incident_findings(params: IncidentParams, causes: list[dict], sig: Signals | None,
                      alerts_df: pd.DataFrame, pods: list[dict]) -> list[Finding]:
    """What summary.json records: the incident (or that there is none) and its ranked causes."""
    svc = f"{params.namespace}/{params.service}"
    out: list[Finding] = []
    anomaly = sig.anomaly if sig else None
    firing = alerts_df[alerts_df["state"] == "active"] if len(alerts_df) else alerts_df
    crashing = [p for p in pods if rollouts.crash_reason(p) in CRASHING]
    if anomaly is None and not len(firing) and not crashing:
        return [Finding(id=f"incident/{svc}", severity="ok", title=f"No incident for {svc} in the window",
                        detail="Golden signals stayed at their baseline, no alert fires and no pod crashes.",
                        resource=f"Service/{svc}")]
    if anomaly is not None:
        end = f"{anomaly.end:%Y-%m-%d %H:%M} UTC" if anomaly.end is not None else "ongoing"
        ratio = "ratio" in next((k for k, v in sig.anomalies.items() if v is anomaly), "") if sig else False
        value = (lambda x: f"{x:.1%}") if ratio else (lambda x: f"{x:.3g}")
        out.append(Finding(id=f"incident/{svc}", severity="critical",
                           title=f"{anomaly_name(sig)} of {svc} left its baseline at {anomaly.start:%H:%M} UTC",
                           detail=f"peak {value(anomaly.peak)} (baseline {value(anomaly.baseline)}); until {end}",
                           resource=f"Service/{svc}",
                           evidence={"anomaly": anomaly.to_dict(),
                                     "signals": {k: v.to_dict() for k, v in sig.anomalies.items()} if sig else {}}))
    for a in firing.itertuples():
        out.append(Finding(id=f"alert/{a.alertname}/{svc}", severity="critical" if a.severity == "critical"
                           else "warning", title=f"Alert {a.alertname} is firing", detail=a.summary or "",
                           resource=f"Service/{svc}", evidence={"startsAt": str(a.startsAt), "labels": a.labels}))
    out.extend(pod_findings(params.namespace, crashing))
    for c in causes:
        out.append(Finding(id=f"likely-cause/{c['rank']}/{c['cause'].replace(' ', '-')}", severity="info",
                           title=f"Likely cause #{c['rank']}: {c['sentence']}", resource=f"Service/{svc}",
                           evidence={"score": c["score"], **c["evidence"]}))
    return out


CRASHING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull")


def pod_findings(namespace: str, pods: list[dict]) -> list[Finding]:
    """One critical finding per crashing pod (rows of :func:`runbooks.rollouts.workload_pods`)."""
    out = []
    for p in pods:
        reason = rollouts.crash_reason(p)
        if reason not in CRASHING:
            continue
        running = "" if p["waiting_reason"] else f" (running again after {p['restarts']} restarts)"
        out.append(Finding(id=f"pod-{reason.lower()}/{namespace}/{p['pod']}", severity="critical",
                           title=f"pod {p['pod']} (revision {p['revision']}): {reason}{running}"
                                 + (f", last terminated {p['last_termination_reason']}"
                                    if p["last_termination_reason"] else ""),
                           resource=f"Pod/{namespace}/{p['pod']}",
                           evidence={"restarts": p["restarts"], "revision": p["revision"]}))
    return out


def recheck(run: Run, plan: Any, verified: list[Finding], findings: list[Finding]) -> list[Finding]:
    """After a verified rollback, the pod findings of the service evaluated again (resolved by the plan or not).

    The pods are the current state of the Deployment the rollback changed: a
    crashing pod that the rollback replaced is reported "resolved by plan ID";
    one that still crashes stays critical, as it is now. Everything else (the
    anomaly, the alerts, the causes) is history and stays as recorded.
    """
    p = run.params
    key = f"mitigation/rollback/{p.namespace}/{p.service}"
    if plan is None or p.mitigation != "rollback" or not any(f.id == key and f.severity == "ok" for f in verified):
        return []
    pods = rollouts.workload_pods(run.cluster, p.namespace, p.service, rollouts.rollout_history(run.cluster, p.namespace,
                                                                                        p.service))
    after = pod_findings(p.namespace, pods)
    touched = {f.resource for f in findings if f.id.startswith("pod-") and f.resource} | \
        {f"Pod/{p.namespace}/{row['pod']}" for row in pods}
    return resolution.reevaluate(findings, after, touched, plan.id)


# ---- next actions (plan builders) --------------------------------------------------------


def merge_patch(src: Any, dst: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `src` into `dst`."""
    if not isinstance(src, dict) or not isinstance(dst, dict):
        return copy.deepcopy(dst)
    out: dict = {}
    for k in src.keys() - dst.keys():
        out[k] = None
    for k, v in dst.items():
        if k not in src:
            out[k] = copy.deepcopy(v)
        elif src[k] != v:
            out[k] = merge_patch(src[k], v)
    return out


def rollback(cluster: kube.Cluster, namespace: str, name: str, to_revision: int | None = None) -> list[Change]:
    """Plan builder: roll a Deployment back to a previous revision, like `kubectl rollout undo`.

    Copies that revision's pod template (without `pod-template-hash`) into the
    Deployment; the controller then scales the old ReplicaSet back up. Empty
    when the Deployment already runs that template.
    """
    d = kube.get_object(cluster, "deployments", namespace, name)
    history = rollouts.rollout_history(cluster, namespace, name)
    current = int((d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "0"))
    older = [r for r in history if r["revision"] < current]
    if to_revision is not None:
        target = next((r for r in history if r["revision"] == to_revision), None)
        if target is None:
            raise InvalidInput(f"revision {to_revision} of {namespace}/{name} does not exist; known revisions: "
                               f"{[r['revision'] for r in history]}")
    elif older:
        target = older[-1]
    else:
        raise InvalidInput(f"{namespace}/{name} has no revision before {current} to roll back to")
    rs = kube.get_object(cluster, "replicasets", namespace, target["replicaset"])
    template = copy.deepcopy(rs["spec"]["template"])
    (template.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    live = d["spec"]["template"]
    if template == live:
        return []
    return [Change(operation="patch", kind="Deployment", namespace=namespace, name=name,
                   diff=diff(live, template, "spec.template"), body={"spec": {"template": merge_patch(live, template)}},
                   precondition={"generation": d["metadata"].get("generation"), "from_revision": current,
                                 "to_revision": target["revision"]},
                   resource_version=d["metadata"].get("resourceVersion"))]


def silence(_cluster: Any, alertmanager: str, matchers: list[str], duration: str, comment: str,
            created_by: str) -> list[Change]:
    """Plan builder: silence alerts matching `matchers` for `duration` (none if one already does)."""
    return [Change(target="alertmanager", **entry)
            for entry in alerts.plan_silence(alertmanager, matchers, duration, comment, created_by)]


class AlertmanagerTarget:
    """Applies silence changes through the Alertmanager API v2 (validated locally on dry run)."""

    def identity(self, run: Run) -> dict[str, Any]:
        """Which Alertmanager: its URL (without credentials), part of the plan id."""
        url = str(getattr(run.params, "alertmanager_url", "") or "")
        return {"url": re.sub(r"//[^/@]*@", "//", url).rstrip("/")}

    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any:
        url = getattr(run.params, "alertmanager_url", None)
        if not url:
            raise InvalidInput("alertmanager_url is not set: a silence needs Alertmanager")
        entry = {**change.public(), "body": change.body}
        if dry_run:
            alerts.check(url)
            if change.operation == "create":
                body = change.body or {}
                alerts.build_silence(body["matchers"], body["duration_seconds"], body["comment"], body["createdBy"])
            return None
        return alerts.apply_entry(url, entry)

    def current(self, run: Run, change: Change) -> Any:
        if change.operation != "delete":
            return None
        try:
            return alerts.get_silence(run.params.alertmanager_url, change.name)
        except RunbookError:
            return None


register_target("alertmanager", AlertmanagerTarget())


def silence_matchers(alerts_df: pd.DataFrame, namespace: str, service: str, alert_name: str | None) -> list[str]:
    """Matchers for the alerts to silence: the named one, else every firing alert of the service."""
    names = [alert_name] if alert_name else sorted(set(alerts_df["alertname"])) if len(alerts_df) else []
    names = [n for n in names if n != "Watchdog"]
    if not names:
        raise InvalidInput(f"no alert fires for {namespace}/{service}: nothing to silence "
                           "(name one with alert_name)")
    alertname = names[0] if len(names) == 1 else "(" + "|".join(re.escape(n) for n in names) + ")"
    op = "=" if len(names) == 1 else "=~"
    return [f'alertname{op}"{alertname}"', f'namespace="{namespace}"']


# ---- log helpers --------------------------------------------------------------------------


def worst_pod(pods: list[dict]) -> str | None:
    """The pod to read sample lines from: the one with the most restarts, crashing first."""
    if not pods:
        return None
    return max(pods, key=lambda p: (bool(rollouts.crash_reason(p)), p["restarts"]))["pod"]


def probe_logs(src: logs.LogSource) -> str:
    """Preflight of the log store that raises when it cannot serve the runbook (for check_source)."""
    state = logs.check(src)
    if not state["reachable"]:
        raise Unavailable(f"log store {src.url}: {state['error']}")
    if not state["indices"]:
        raise Unavailable(f"log store {src.url}: no index matches {src.index!r}")
    return f"{state['docs']} documents in {state['indices']} indices; newest {state['newest']}"


def connect_sources(params: IncidentParams) -> dict[str, Any]:
    """Connections for the configured data sources (None where no URL is set); nothing is sent yet."""
    return {
        "prometheus": metrics.connect(params.prometheus_url, verify=params.verify_tls)
        if params.prometheus_url else None,
        "alertmanager": alerts.connect(params.alertmanager_url, verify=params.verify_tls)
        if params.alertmanager_url else None,
        "logs": logs.connect(params.elasticsearch_url, params.log_index, verify_certs=params.verify_tls)
        if params.elasticsearch_url else None,
    }


# ---- what a notebook calls, one per section (a source that is down gives empty data) ---------


class Sources(dict):
    """Usable connections by name (None where down or not configured), and why each unusable one is not."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.why: dict[str, str] = {}

    run: Any = None

    def degrade(self, name: str, exc: Exception) -> None:
        """A source went down after its check (killed mid-query): its section empties, the run goes on."""
        self[name] = None
        self.why[name] = f"{SOURCE_TITLES.get(name, name)} went down during the run"
        if self.run is not None:
            self.run.source(name, False, f"{type(exc).__name__}: {exc}")
            self.run.finding(f"data-source-down/{name}", "warning",
                             f"{name} went down during the run: its section is incomplete",
                             detail=cut(str(exc)), resource=name)


SOURCE_TITLES = {"prometheus": "Prometheus", "alertmanager": "Alertmanager", "logs": "Elasticsearch (logs)"}
SOURCE_URLS = {"prometheus": "prometheus_url", "alertmanager": "alertmanager_url", "logs": "elasticsearch_url"}


def not_configured(name: str, env: str | None) -> str:
    """The sentence for a data source without a URL: names the environment (or says there is none)."""
    title = SOURCE_TITLES.get(name, name)
    if env:
        return f"{title} is not configured in env {env} ({SOURCE_URLS.get(name, 'its URL')} in parameters/{env}/env.yaml)"
    return (f"{title} is not configured: no environment selected (set the env parameter or $RUNBOOKS_ENV, "
            f"or {SOURCE_URLS.get(name, 'its URL')})")


def check_sources(run: Run, sources: dict[str, Any]) -> Sources:
    """Probe each data source; return the usable connections (None where down or not configured)."""
    probes = {"prometheus": lambda c: metrics.check(c), "alertmanager": lambda c: alerts.check(c),
              "logs": probe_logs}
    env = getattr(run, "env", None)
    usable = Sources()
    usable.run = run
    for name, conn in sources.items():
        if conn is None:
            why = not_configured(name, env)
            run.source(name, False, why)
            run.finding(f"data-source-down/{name}", "warning", f"{why}: its section is empty", resource=name)
            usable[name], usable.why[name] = None, why
            continue
        ok = run.check_source(name, lambda c=conn, n=name: probes[n](c))
        usable[name] = conn if ok else None
        if not ok:
            usable.why[name] = f"{SOURCE_TITLES.get(name, name)} is unavailable: {run.sources[name]['detail']}"
    return usable


def _degrade(sources: dict[str, Any], name: str, exc: Exception) -> None:
    if isinstance(sources, Sources):
        sources.degrade(name, exc)
    else:
        sources[name] = None


def gather_alerts(sources: dict[str, Any], params: IncidentParams) -> pd.DataFrame:
    am = sources.get("alertmanager")
    if am is not None:
        try:
            return service_alerts(am, params.namespace, params.service, params.alert_name)
        except SOURCE_ERRORS as exc:
            _degrade(sources, "alertmanager", exc)
    return pd.DataFrame(columns=alerts.ALERT_COLUMNS)


def gather_signals(sources: dict[str, Any], params: IncidentParams, start: datetime, end: datetime) -> Signals:
    prom = sources.get("prometheus")
    if prom is None:
        why = getattr(sources, "why", {}).get("prometheus") or "Prometheus is not configured"
        return Signals(pd.DataFrame(), pd.DataFrame(), missing=why + ".")
    try:
        return signals(prom, params, start, end)
    except SOURCE_ERRORS as exc:
        _degrade(sources, "prometheus", exc)
    return Signals(pd.DataFrame(), pd.DataFrame(), missing="Prometheus went down during the run.")


@dataclass
class LogView:
    """The log section: volume by level and pod, top error patterns, lines around the onset."""

    histogram: pd.DataFrame
    top_errors: pd.DataFrame
    samples: pd.DataFrame
    pod: str | None = None
    missing: str | None = None  # why there are no logs (Elasticsearch not configured or down)


def gather_logs(sources: dict[str, Any], params: IncidentParams, start: datetime, end: datetime,
                pods: list[dict], around: datetime | None) -> LogView:
    src = sources.get("logs")
    if src is None:
        why = getattr(sources, "why", {}).get("logs") or "Elasticsearch is not configured"
        return LogView(pd.DataFrame(columns=["time", "level", "pod", "count"]), pd.DataFrame(), pd.DataFrame(),
                       missing=why + ".")
    ns, svc = params.namespace, params.service
    try:
        hist = logs.volume_histogram(src, ns, svc, start=start, end=end)
        top = logs.top_errors(src, ns, svc, start=start, end=end, limit=10)
        pod = worst_pod(pods)
        samples = logs.sample_lines(src, ns, svc, pod=pod, around=around or end, n=40) if pod else pd.DataFrame()
    except SOURCE_ERRORS as exc:
        _degrade(sources, "logs", exc)
        return LogView(pd.DataFrame(columns=["time", "level", "pod", "count"]), pd.DataFrame(), pd.DataFrame())
    return LogView(hist, top, samples, pod)


def plan_mitigation(run: Run, alerts_df: pd.DataFrame) -> Any:
    """The plan for the chosen next action (`mitigation` parameter), or None for "none"."""
    p = run.params
    if p.mitigation == "rollback":
        return run.plan(rollback, namespace=p.namespace, name=p.service, to_revision=p.rollback_to_revision)
    if p.mitigation == "silence":
        if not p.alertmanager_url:
            raise InvalidInput("mitigation='silence' needs alertmanager_url (parameters/ENV/env.yaml)")
        return run.plan(silence, alertmanager=p.alertmanager_url,
                        matchers=silence_matchers(alerts_df, p.namespace, p.service, p.alert_name),
                        duration=p.silence_duration, comment=p.silence_comment,
                        created_by=f"{who()} via runbooks incident-investigation")  # stable: part of the plan id
    return None


def verify_mitigation(run: Run, plan: Any, applied: list[dict], timeout: float | None = None) -> list[Finding]:
    """Prove an applied mitigation took: the rollback rolled out, or the silence suppresses the alert.

    Waits at most `timeout` seconds (default: the ``verify_timeout_seconds`` parameter).
    """
    import time

    applied = applied or (run.applied_results(plan) if hasattr(run, "applied_results") else [])
    if plan is None:
        return []
    if not applied:
        if plan.changes and not run.approved(plan):
            print("Nothing was applied, so there is nothing to verify"
                  + (" (click the plan's button above, then run this cell again)." if not headless() else "."))
        return []
    p = run.params
    if timeout is None:
        timeout = float(getattr(p, "verify_timeout_seconds", 120))
    out: list[Finding] = []
    if p.mitigation == "rollback":
        deadline = time.monotonic() + timeout
        while True:
            d = kube.get_object(run.cluster, "deployments", p.namespace, p.service)
            st, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
            done = (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
                    and st.get("updatedReplicas", 0) == want and st.get("availableReplicas", 0) >= want
                    and st.get("replicas", 0) == want)
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
        if not done:
            raise RunbookError(f"the rollback of {p.namespace}/{p.service} did not complete within {timeout:.0f}s: "
                               f"{st.get('updatedReplicas', 0)}/{want} updated, {st.get('availableReplicas', 0)} "
                               "available")
        rev = (d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        out.append(Finding(id=f"mitigation/rollback/{p.namespace}/{p.service}", severity="ok",
                           title=f"Rolled back {p.namespace}/{p.service}: revision {rev} is available "
                                 f"({st.get('availableReplicas')}/{want})",
                           resource=f"Deployment/{p.namespace}/{p.service}"))
    elif p.mitigation == "silence":
        matchers = plan.changes[0].body["matchers"]
        if not alerts.silence_dicts(p.alertmanager_url, matchers, state="active"):
            raise RunbookError("the silence was applied but Alertmanager lists no active silence for "
                               + ", ".join(alerts.matcher_text(m) for m in matchers))
        deadline = time.monotonic() + timeout
        while True:  # Alertmanager marks alerts suppressed on its next pass
            states = set(service_alerts(p.alertmanager_url, p.namespace, p.service, p.alert_name)["state"])
            if "active" not in states or time.monotonic() > deadline:
                break
            time.sleep(1)
        if "active" in states:
            raise RunbookError(f"alerts of {p.namespace}/{p.service} are still active despite the silence")
        out.append(Finding(id=f"mitigation/silence/{p.namespace}/{p.service}", severity="ok",
                           title=f"Silence active for {p.silence_duration}; the service's alerts are suppressed",
                           resource=f"Service/{p.namespace}/{p.service}",
                           evidence={"matchers": [alerts.matcher_text(m) for m in matchers]}))
    run.record(out)
    for f in out:
        print(f"Verified: {f.title}")
    return out


def service_choices(cluster: kube.Cluster) -> dict[str, list[str]]:
    """Namespace -> Deployments in it, for the interactive picker."""
    out: dict[str, list[str]] = {}
    for d in kube.iter_objects(cluster, "deployments"):
        out.setdefault(d["metadata"]["namespace"], []).append(d["metadata"]["name"])
    return {ns: sorted(names) for ns, names in sorted(out.items())}
