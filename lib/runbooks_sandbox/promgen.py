"""The sandbox's metric history, generated from the Kubernetes scenario.

The real Prometheus is seeded by backfilling OpenMetrics text written here
(`promtool tsdb create-blocks-from openmetrics`), and a tiny exporter keeps the
same series going after "now" (:meth:`Model.exposition`), so the data a runbook
sees agrees with the objects the embedded Kubernetes API serves: pod names,
nodes, IPs, limits, restart counts, rollout times, certificates.

What is in it (the real names; see DESIGN.md):

- ingress-nginx: ``nginx_ingress_controller_requests`` and the
  ``nginx_ingress_controller_request_duration_seconds`` histogram per
  ingress controller pod, ingress, host, path, service, method and status;
- cAdvisor: ``container_cpu_usage_seconds_total``,
  ``container_cpu_cfs_periods_total``, ``container_cpu_cfs_throttled_periods_total``
  (containers with a CPU limit), ``container_memory_working_set_bytes``;
- kube-state-metrics: pod phase/info/owner, container restarts, waiting and
  last-terminated reasons, readiness, resource limits and requests, Deployment
  replicas and conditions, ReplicaSet owners;
- cert-manager: ``certmanager_certificate_expiration_timestamp_seconds`` and
  ``certmanager_certificate_ready_status``; blackbox:
  ``probe_ssl_earliest_cert_expiry`` and ``probe_success`` per TLS host.

Planted problems come from the objects, not from names: a pod whose template
carries ``sandbox.kube-runbooks.io/fail: OOMKilled`` (or ``CrashLoopBackOff``)
crash-loops on the kubelet's back-off schedule (the same schedule the
sandbox's controllers report as ``restartCount``), with CPU throttling and
memory climbing to the limit in each short life; the Services selecting it
and the Ingresses in front of them get an error-ratio and latency incident
starting :data:`INCIDENT_DELAY` after the rollout (the failing ReplicaSet's
creation). Everything else is healthy: a daily traffic pattern, slow drifts
and seeded jitter (the same objects and "now" give the same data).

Resolution: samples every ``step`` (30 s) for the last 6 hours, 2 minutes up
to a day back and 150 s beyond, so ``rate(x[5m])`` works over the whole
history; constant-ish kube-state-metrics and certificate gauges every 4 minutes
(within Prometheus' 5-minute lookback). Counters are monotonic and reset only where a container restarts.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np

from .controllers import BACKOFF_MAX, BACKOFF_START, CRASH_RUNTIME, FAIL_ANNOTATION, REVISION

DEFAULT_HISTORY = timedelta(days=3)
DEFAULT_STEP = 30
RECENT = 6 * 3600  # seconds at full resolution
MIDDLE = 86400  # seconds at 4 x step (at most COARSE)
COARSE = 240  # slow gauges: must stay under the 5 min lookback
RATE_SAFE = 150  # oldest tier of counters: rate(x[5m]) always sees two samples
INCIDENT_DELAY = 60  # seconds between a failing rollout and its ingress error spike
CRASH_FAILURES = ("OOMKilled", "CrashLoopBackOff")

# ingress-nginx default duration buckets
NGINX_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Traffic profiles by backend Service name (requests/s at the daily peak, latency median
# seconds and log-normal sigma, background 5xx ratio, 404 ratio, method).
SERVICE_PROFILES: dict[str, dict[str, Any]] = {
    "frontend": {"rps": 42.0, "median": 0.035, "sigma": 0.7, "err": 0.0004, "p404": 0.012, "method": "GET"},
    "cart": {"rps": 18.0, "median": 0.022, "sigma": 0.55, "err": 0.0003, "p404": 0.0, "method": "GET"},
    "checkout": {"rps": 6.0, "median": 0.11, "sigma": 0.6, "err": 0.0003, "p404": 0.0, "method": "POST"},
    "payments-api": {"rps": 9.0, "median": 0.09, "sigma": 0.6, "err": 0.0003, "p404": 0.0, "method": "POST"},
}
DEFAULT_PROFILE = {"rps": 4.0, "median": 0.05, "sigma": 0.6, "err": 0.0003, "p404": 0.0, "method": "GET"}

# What an incident does to the ingress in front of a failing rollout: a share of requests
# wait for a database connection until HikariCP's 5 s connection-timeout and fail with
# 500; the rest slow down.
INCIDENT_ERROR_RATIO = 0.12
INCIDENT_ERROR_LATENCY = 5.05
INCIDENT_SLOWDOWN = 3.0

_BYTES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
          "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def parse_quantity(text: Any) -> float | None:
    """A Kubernetes resource quantity ("256Mi", "500m", "1", "1e3") as a float."""
    if text is None:
        return None
    s = str(text).strip()
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", s)
    if not m:
        return None
    number, suffix = float(m.group(1)), m.group(2)
    if not suffix:
        return number
    if suffix not in _BYTES:
        return None
    return number * _BYTES[suffix]


def _ts(text: str | None) -> int | None:
    if not text:
        return None
    return int(datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng(_seed(*parts))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and scipy is not a dependency
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-a * a)
    return sign * y


def _lognormal_cdf(x: np.ndarray, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = (np.log(x) - np.log(median)) / (sigma * math.sqrt(2.0))
    return 0.5 * (1.0 + _erf(z))


def daily(t: np.ndarray) -> np.ndarray:
    """Traffic by time of day (UTC): 0.3 at 04:00, 1.0 at 16:00."""
    hours = (np.asarray(t, dtype=float) % 86400) / 3600.0
    return 0.65 - 0.35 * np.cos(2 * math.pi * (hours - 4.0) / 24.0)


def _smooth(key: str, t: np.ndarray, amplitude: float) -> np.ndarray:
    """Slow deterministic wander of +-amplitude: a function of absolute time, so live samples continue it."""
    r = _rng("smooth", key)
    periods = r.uniform(1800, 7 * 3600, 3)
    phases = r.uniform(0, 2 * math.pi, 3)
    weights = r.uniform(0.5, 1.0, 3)
    tt = np.asarray(t, dtype=float)[..., None]
    wave = (weights * np.sin(2 * math.pi * tt / periods + phases)).sum(axis=-1) / weights.sum()
    return amplitude * wave


# ---- scenario facts ---------------------------------------------------------------


@dataclass
class Container:
    name: str
    image: str
    cpu_limit: float | None
    cpu_request: float | None
    mem_limit: float | None
    mem_request: float | None
    restarts: int
    ready: bool
    waiting: str | None
    last_terminated: str | None
    last_finished: int | None
    java: bool


@dataclass
class PodInfo:
    namespace: str
    name: str
    uid: str
    node: str | None
    host_ip: str
    pod_ip: str
    created: int
    started: int
    phase: str
    labels: dict[str, str]
    owner_kind: str | None
    owner_name: str | None
    workload: str | None
    fail: str | None
    containers: list[Container]

    @property
    def crashing(self) -> bool:
        return self.fail in CRASH_FAILURES


@dataclass
class Incident:
    """A planted problem as the metrics show it: a failing rollout behind an ingress."""

    namespace: str
    workload: str
    replicaset: str
    rollout: datetime  # the failing ReplicaSet's creation
    onset: datetime  # when the ingress error ratio and latency rise
    reason: str  # the failure, e.g. OOMKilled
    services: list[str] = field(default_factory=list)
    ingresses: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)


@dataclass
class Out:
    """One series: sample name, labels and its samples."""

    family: str
    kind: str  # counter | gauge | histogram | unknown
    name: str
    labels: tuple[tuple[str, str], ...]
    times: np.ndarray
    values: np.ndarray


def crash_lives(started: int, until: int) -> list[tuple[int, int]]:
    """(start, death) of each life of a crash-looping container, the kubelet's back-off way.

    The same schedule as the sandbox controllers' ``crash_history``: each life lasts
    CRASH_RUNTIME seconds, then the kubelet waits 10 s doubling to 5 minutes.
    """
    lives = []
    t, delay = started, BACKOFF_START
    while t <= until:
        lives.append((t, t + CRASH_RUNTIME))
        t = t + CRASH_RUNTIME + delay
        delay = min(delay * 2, BACKOFF_MAX)
    return lives


def _labels_match(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Facts:
    """What the generator needs from the Kubernetes objects."""

    def __init__(self, objects: Iterable[dict]):
        by_kind: dict[str, list[dict]] = {}
        for obj in objects:
            by_kind.setdefault(obj.get("kind", ""), []).append(obj)
        self.by_kind = by_kind
        self.nodes = {n["metadata"]["name"]: n for n in by_kind.get("Node", [])}
        self.replicasets = {(r["metadata"]["namespace"], r["metadata"]["name"]): r
                            for r in by_kind.get("ReplicaSet", [])}
        self.pods = [self._pod(p) for p in by_kind.get("Pod", [])
                     if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        self.pods.sort(key=lambda p: (p.namespace, p.name))
        self.services = by_kind.get("Service", [])
        self.ingresses = sorted(by_kind.get("Ingress", []),
                                key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
        self.deployments = sorted(by_kind.get("Deployment", []),
                                  key=lambda d: (d["metadata"]["namespace"], d["metadata"]["name"]))
        self.certificates = sorted(by_kind.get("Certificate", []),
                                   key=lambda c: (c["metadata"]["namespace"], c["metadata"]["name"]))
        self.secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
                        for s in by_kind.get("Secret", [])}
        self.incidents = self._incidents()

    def node_ip(self, node: str | None) -> str:
        n = self.nodes.get(node or "")
        for addr in ((n or {}).get("status") or {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                return addr["address"]
        digits = "".join(ch for ch in (node or "") if ch.isdigit()) or "1"
        return f"192.168.0.{10 + int(digits)}"

    def _pod(self, pod: dict) -> PodInfo:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        created = _ts(meta.get("creationTimestamp")) or 0
        owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")),
                     (meta.get("ownerReferences") or [None])[0])
        owner_kind = owner.get("kind") if owner else None
        owner_name = owner.get("name") if owner else None
        workload = owner_name
        if owner_kind == "ReplicaSet":
            rs = self.replicasets.get((meta["namespace"], owner_name))
            rs_owner = next(iter((rs or {}).get("metadata", {}).get("ownerReferences") or []), None)
            workload = rs_owner["name"] if rs_owner else owner_name
        statuses = {c["name"]: c for c in status.get("containerStatuses") or []}
        containers = []
        for c in spec.get("containers") or []:
            res = c.get("resources") or {}
            st = statuses.get(c["name"], {})
            waiting = ((st.get("state") or {}).get("waiting") or {}).get("reason")
            term = (st.get("lastState") or {}).get("terminated") or {}
            env = {e.get("name") for e in c.get("env") or []}
            containers.append(Container(
                name=c["name"], image=c.get("image", ""),
                cpu_limit=parse_quantity((res.get("limits") or {}).get("cpu")),
                cpu_request=parse_quantity((res.get("requests") or {}).get("cpu")),
                mem_limit=parse_quantity((res.get("limits") or {}).get("memory")),
                mem_request=parse_quantity((res.get("requests") or {}).get("memory")),
                restarts=int(st.get("restartCount") or 0), ready=bool(st.get("ready", True)),
                waiting=waiting, last_terminated=term.get("reason"), last_finished=_ts(term.get("finishedAt")),
                java="JAVA_TOOL_OPTIONS" in env or "elasticsearch" in c.get("image", "")))
        node = spec.get("nodeName")
        return PodInfo(
            namespace=meta["namespace"], name=meta["name"], uid=meta.get("uid", ""), node=node,
            host_ip=status.get("hostIP") or self.node_ip(node), pod_ip=status.get("podIP") or "",
            created=created, started=created + 2, phase=status.get("phase") or "Pending",
            labels=dict(meta.get("labels") or {}), owner_kind=owner_kind, owner_name=owner_name,
            workload=workload, fail=(meta.get("annotations") or {}).get(FAIL_ANNOTATION), containers=containers)

    def services_of(self, pod: PodInfo) -> list[str]:
        return sorted(s["metadata"]["name"] for s in self.services
                      if s["metadata"]["namespace"] == pod.namespace
                      and _labels_match((s.get("spec") or {}).get("selector"), pod.labels))

    def ingress_routes(self) -> list[dict[str, str]]:
        """One entry per (ingress, host, path, backend service)."""
        routes = []
        for ing in self.ingresses:
            meta, spec = ing["metadata"], ing.get("spec") or {}
            for rule in spec.get("rules") or []:
                for p in ((rule.get("http") or {}).get("paths") or []):
                    svc = ((p.get("backend") or {}).get("service") or {}).get("name")
                    if svc:
                        routes.append({"namespace": meta["namespace"], "ingress": meta["name"],
                                       "host": rule.get("host", ""), "path": p.get("path", "/"),
                                       "service": svc, "created": _ts(meta.get("creationTimestamp")) or 0})
        return routes

    def _incidents(self) -> list[Incident]:
        groups: dict[tuple[str, str], list[PodInfo]] = {}
        for pod in self.pods:
            if pod.crashing and pod.owner_kind == "ReplicaSet":
                groups.setdefault((pod.namespace, pod.owner_name or ""), []).append(pod)
        incidents = []
        routes = self.ingress_routes()
        for (ns, rs_name), pods in sorted(groups.items()):
            rs = self.replicasets.get((ns, rs_name))
            rollout = _ts((rs or {}).get("metadata", {}).get("creationTimestamp")) or min(p.created for p in pods)
            services = sorted({s for p in pods for s in self.services_of(p)})
            ingresses = sorted({r["ingress"] for r in routes if r["namespace"] == ns and r["service"] in services})
            incidents.append(Incident(
                namespace=ns, workload=pods[0].workload or rs_name, replicaset=rs_name,
                rollout=datetime.fromtimestamp(rollout, UTC),
                onset=datetime.fromtimestamp(rollout + INCIDENT_DELAY, UTC),
                reason=pods[0].fail or "", services=services, ingresses=ingresses,
                pods=sorted(p.name for p in pods)))
        return incidents

    def incident_for_service(self, namespace: str, service: str) -> Incident | None:
        return next((i for i in self.incidents if i.namespace == namespace and service in i.services), None)

    def pod_by_prefix(self, namespace: str, prefix: str) -> PodInfo | None:
        return next((p for p in self.pods if p.namespace == namespace and p.name.startswith(prefix)), None)


# ---- series groups ----------------------------------------------------------------


def _lab(**kw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v)) for k, v in kw.items() if v is not None and v != "")


class Group:
    """Series that are generated together (one pod's container, one ingress route ...)."""

    key: str = ""
    grid: str = "fast"  # or "slow"
    begin: int = 0

    def render(self, times: np.ndarray, state: dict | None, rng: np.random.Generator) -> tuple[list[Out], dict]:
        raise NotImplementedError

    # helpers for counters: values at times[0] come from state (live) or `initial` (backfill)
    @staticmethod
    def cumulate(initial: Any, increments: np.ndarray) -> np.ndarray:
        init = np.asarray(initial)
        return np.concatenate([init[None, ...], init[None, ...] + np.cumsum(increments, axis=0)], axis=0)


class NginxRoute(Group):
    """ingress-nginx counters and latency histogram for one route on one controller pod."""

    def __init__(self, route: dict, ctrl: PodInfo, n_ctrl: int, incident: Incident | None, ksm_ns: str):
        self.route, self.ctrl, self.n_ctrl, self.incident = route, ctrl, n_ctrl, incident
        self.profile = {**DEFAULT_PROFILE, **SERVICE_PROFILES.get(route["service"], {})}
        self.key = f"nginx/{ctrl.name}/{route['namespace']}/{route['ingress']}/{route['host']}{route['path']}"
        self.begin = max(ctrl.started, route["created"])
        self.statuses = ["200"] + (["404"] if self.profile["p404"] > 0 else []) + ["500"]
        self.base = _lab(controller_class="k8s.io/ingress-nginx", controller_namespace=ctrl.namespace,
                         controller_pod=ctrl.name, host=route["host"], ingress=route["ingress"],
                         instance=f"{ctrl.pod_ip}:10254", job="ingress-nginx-controller-metrics",
                         method=self.profile["method"], namespace=route["namespace"], path=route["path"],
                         service=route["service"])

    def _incident_share(self, times: np.ndarray) -> np.ndarray:
        """Per interval between samples: the share of it after the incident's onset (0..1)."""
        n = max(len(times) - 1, 0)
        if self.incident is None or n == 0:
            return np.zeros(n)
        onset = self.incident.onset.timestamp()
        dt = np.maximum(np.diff(times).astype(float), 1.0)
        return np.clip((times[1:] - onset) / dt, 0.0, 1.0)

    def _latency(self, status: str, mid: np.ndarray, bad: bool) -> tuple[np.ndarray, np.ndarray]:
        p = self.profile
        load = 1.0 + 0.2 * daily(mid)
        ones = np.ones(mid.shape)
        if status == "200":
            return p["median"] * load * (INCIDENT_SLOWDOWN if bad else 1.0), ones * (p["sigma"] + (0.25 if bad else 0))
        if status == "404":
            return ones * p["median"] * 0.3, ones * 0.4
        if bad:
            return ones * INCIDENT_ERROR_LATENCY, ones * 0.02
        return p["median"] * 0.8 * load, ones * 0.8

    def render(self, times, state, rng):
        p = self.profile
        mid = (times[:-1] + times[1:]) / 2.0
        dt = np.diff(times).astype(float)
        share_bad = self._incident_share(times)
        share = 1.0 / self.n_ctrl
        noise = 1.0 + _smooth(self.key, mid, 0.08) + rng.normal(0, 0.03, mid.shape)
        rate = p["rps"] * share * daily(mid) * np.clip(noise, 0.5, None)
        n = rng.poisson(rate * dt)
        incident_err = INCIDENT_ERROR_RATIO * np.clip(1 + rng.normal(0, 0.12, mid.shape), 0.5, 1.5)
        err = share_bad * incident_err + (1 - share_bad) * p["err"]
        n500 = rng.binomial(n, err)
        n404 = rng.binomial(n - n500, p["p404"]) if p["p404"] > 0 else np.zeros_like(n)
        counts = {"200": n - n500 - n404, "404": n404, "500": n500}
        # the share of a status' requests that saw the incident (errors come almost only from it)
        bad_of = {"200": share_bad, "404": share_bad,
                  "500": np.where(err > 0, share_bad * incident_err / np.maximum(err, 1e-12), 0.0)}
        les = np.array(NGINX_BUCKETS)
        outs: list[Out] = []
        new_state: dict[str, Any] = {}
        for status in self.statuses:
            cnt = counts[status]
            w = bad_of[status][:, None]
            masses, means, sds = [], [], []
            for bad in (False, True):
                median, sigma = self._latency(status, mid, bad)
                cdf = _lognormal_cdf(les[None, :], median[:, None], sigma[:, None])
                m = np.diff(np.concatenate([np.zeros((len(mid), 1)), cdf, np.ones((len(mid), 1))], axis=1), axis=1)
                masses.append(np.clip(m, 0, None))
                means.append(median * np.exp(sigma**2 / 2))
                sds.append(median * np.sqrt(np.maximum((np.exp(sigma**2) - 1) * np.exp(sigma**2), 0)))
            mass = (1 - w) * masses[0] + w * masses[1]
            mass /= mass.sum(axis=1, keepdims=True)
            per_bucket = rng.multinomial(cnt, mass) if len(cnt) else np.zeros((0, len(les) + 1), dtype=np.int64)
            cum_buckets = np.cumsum(per_bucket, axis=1)  # le-cumulative, last column is +Inf
            wf = w[:, 0]
            mean = (1 - wf) * means[0] + wf * means[1]
            sd = (1 - wf) * sds[0] + wf * sds[1]
            sum_inc = np.clip(cnt * mean + np.sqrt(cnt) * sd * rng.normal(0, 1, mid.shape), 0, None)
            if state is not None:
                init_b = np.asarray(state[f"{status}/b"], dtype=np.int64)
                init_s = float(state[f"{status}/s"])
            else:
                age = max(0.0, float(times[0]) - self.begin)
                frac = {"200": 1 - p["err"] - p["p404"], "404": p["p404"], "500": p["err"]}[status]
                total = p["rps"] * share * 0.65 * frac * age
                m0, s0 = self._latency(status, np.array([times[0]], dtype=float), False)
                c0 = _lognormal_cdf(les, m0[0], s0[0])
                init_b = np.round(np.concatenate([c0, [1.0]]) * total).astype(np.int64)
                init_s = total * m0[0] * math.exp(s0[0] ** 2 / 2)
            buckets = self.cumulate(init_b, cum_buckets)
            sums = self.cumulate(init_s, sum_inc)
            new_state[f"{status}/b"] = buckets[-1].tolist()
            new_state[f"{status}/s"] = float(sums[-1])
            labels = self.base + (("status", status),)
            fam_h = "nginx_ingress_controller_request_duration_seconds"
            for i, le in enumerate(list(NGINX_BUCKETS) + [math.inf]):
                le_text = "+Inf" if le == math.inf else repr(le)
                outs.append(Out(fam_h, "histogram", fam_h + "_bucket", labels + (("le", le_text),), times,
                                buckets[:, i]))
            outs.append(Out(fam_h, "histogram", fam_h + "_sum", labels, times, np.round(sums, 3)))
            outs.append(Out(fam_h, "histogram", fam_h + "_count", labels, times, buckets[:, -1]))
            outs.append(Out("nginx_ingress_controller_requests", "unknown", "nginx_ingress_controller_requests",
                            labels, times, buckets[:, -1]))
        return outs, new_state


def _profile(r: np.random.Generator, cpu_request: float | None, mem_request: float | None,
             mem_limit: float | None) -> tuple[float, float]:
    cpu = (cpu_request or 0.02) * r.uniform(0.25, 0.45)
    mem = (mem_request or 64 * 2**20) * r.uniform(0.78, 0.9)
    if mem_limit:
        mem = min(mem, 0.8 * mem_limit)
    return cpu, mem


def usage_profile(namespace: str, workload: str, container: str, resources: dict | None) -> tuple[float, float]:
    """A container's typical CPU (cores) and memory working set (bytes): what the cAdvisor series
    centre on, and what metrics.k8s.io reports for it."""
    res = resources or {}
    return _profile(_rng("profile", namespace, workload, container),
                    parse_quantity((res.get("requests") or {}).get("cpu")),
                    parse_quantity((res.get("requests") or {}).get("memory")),
                    parse_quantity((res.get("limits") or {}).get("memory")))


class ContainerUsage(Group):
    """cAdvisor CPU, CFS throttling and memory working set of one container."""

    def __init__(self, pod: PodInfo, c: Container, serving: bool, incident: Incident | None):
        self.pod, self.c, self.serving, self.incident = pod, c, serving, incident
        self.key = f"cadvisor/{pod.namespace}/{pod.name}/{c.name}"
        self.begin = pod.started
        r = _rng("profile", pod.namespace, pod.workload or pod.name, c.name)
        self.cpu, self.mem = _profile(r, c.cpu_request, c.mem_request, c.mem_limit)
        self.throttle = r.uniform(0.004, 0.02)
        self.gc_period = r.uniform(240, 900)
        self.base = _lab(container=c.name, endpoint="https-metrics", image=c.image,
                         instance=f"{pod.host_ip}:10250", job="kubelet", metrics_path="/metrics/cadvisor",
                         namespace=pod.namespace, node=pod.node, pod=pod.name, service="kubelet")

    def render(self, times, state, rng):
        mid = (times[:-1] + times[1:]) / 2.0
        dt = np.diff(times).astype(float)
        load = daily(mid) / 0.65 if self.serving else np.ones(mid.shape)
        boost = np.ones(mid.shape)
        if self.incident is not None:
            boost = np.where(mid >= self.incident.onset.timestamp(), 1.3, 1.0)
        cpu_rate = self.cpu * load * boost * np.clip(1 + _smooth(self.key, mid, 0.1) + rng.normal(0, 0.05, mid.shape),
                                                     0.2, None)
        if self.c.cpu_limit:
            cpu_rate = np.minimum(cpu_rate, self.c.cpu_limit * 0.95)
        init = state or {}
        age = max(0.0, float(times[0]) - self.begin)
        cpu = self.cumulate(init.get("cpu", self.cpu * age), cpu_rate * dt)
        outs = [Out("container_cpu_usage_seconds", "counter", "container_cpu_usage_seconds_total",
                    self.base[:1] + (("cpu", "total"),) + self.base[1:], times, np.round(cpu, 4))]
        new_state = {"cpu": float(cpu[-1])}
        if self.c.cpu_limit:
            active = np.clip(cpu_rate / self.c.cpu_limit * 4, 0.05, 1.0)
            periods_inc = np.round(10 * dt * active).astype(np.int64)
            thr = np.clip(self.throttle * (cpu_rate / max(self.cpu, 1e-6)) * boost, 0, 0.2)
            throttled_inc = rng.binomial(periods_inc, thr)
            p0 = init.get("periods", int(10 * age * 0.5))
            t0 = init.get("throttled", int(p0 * self.throttle))
            periods = self.cumulate(np.int64(p0), periods_inc)
            throttled = self.cumulate(np.int64(t0), throttled_inc)
            outs.append(Out("container_cpu_cfs_periods", "counter", "container_cpu_cfs_periods_total",
                            self.base, times, periods))
            outs.append(Out("container_cpu_cfs_throttled_periods", "counter",
                            "container_cpu_cfs_throttled_periods_total", self.base, times, throttled))
            new_state.update(periods=int(periods[-1]), throttled=int(throttled[-1]))
        t = times.astype(float)
        mem = self.mem * (1 + _smooth(self.key + "/mem", t, 0.04) + rng.normal(0, 0.005, t.shape))
        if self.c.java:  # garbage-collected heap: a sawtooth
            phase = _seed("gc", self.key) % 997
            mem = mem * (0.93 + 0.1 * (((t + phase) % self.gc_period) / self.gc_period))
        if self.c.mem_limit:
            mem = np.minimum(mem, 0.97 * self.c.mem_limit)
        outs.append(Out("container_memory_working_set_bytes", "gauge", "container_memory_working_set_bytes",
                        self.base, times, np.round(mem).astype(np.int64)))
        return outs, new_state


class CrashingContainer(Group):
    """cAdvisor series of a crash-looping container: samples only while each short life runs."""

    POINTS = (1, 3, 5, 7, CRASH_RUNTIME)  # seconds into a life (the last one at the OOM kill)

    def __init__(self, pod: PodInfo, c: Container):
        self.pod, self.c = pod, c
        self.key = f"cadvisor/{pod.namespace}/{pod.name}/{c.name}"
        self.begin = pod.started
        self.base = ContainerUsage(pod, c, False, None).base

    def sample_times(self, lo: int, hi: int) -> np.ndarray:
        pts = [s + d for s, _ in crash_lives(self.pod.started, hi) for d in self.POINTS]
        arr = np.array([p for p in pts if lo <= p <= hi], dtype=np.int64)
        return arr

    def render(self, times, state, rng):
        lo, hi = int(times[0]), int(times[-1])
        if state is not None:  # live: a sample only when `hi` falls inside a life
            lives = crash_lives(self.pod.started, hi)
            inside = bool(lives) and lives[-1][0] <= hi <= lives[-1][1]
            ts = np.array([hi] if inside else [], dtype=np.int64)
        else:
            ts = self.sample_times(lo, hi)
        starts = np.array([s for s, _ in crash_lives(self.pod.started, hi)], dtype=np.int64)
        if len(ts) == 0:
            return [], {}
        idx = np.searchsorted(starts, ts, side="right") - 1
        into = (ts - starts[idx]).astype(float)  # seconds into the current life
        cpu_limit = self.c.cpu_limit or 1.0
        jitter = np.array([1 + 0.04 * ((_seed(self.key, s) % 1000) / 1000 - 0.5) for s in starts[idx].tolist()])
        cpu = np.round(0.92 * cpu_limit * into * jitter, 4)
        periods = np.round(10 * into).astype(np.int64)
        throttled = np.round(periods * 0.68).astype(np.int64)
        limit = self.c.mem_limit or 256 * 2**20
        mem = limit * (0.55 + 0.45 * into / CRASH_RUNTIME)
        mem = np.where(into >= CRASH_RUNTIME, limit - 4096, np.minimum(mem, limit - 4096))
        outs = [Out("container_cpu_usage_seconds", "counter", "container_cpu_usage_seconds_total",
                    self.base[:1] + (("cpu", "total"),) + self.base[1:], ts, cpu),
                Out("container_cpu_cfs_periods", "counter", "container_cpu_cfs_periods_total", self.base, ts, periods),
                Out("container_cpu_cfs_throttled_periods", "counter", "container_cpu_cfs_throttled_periods_total",
                    self.base, ts, throttled),
                Out("container_memory_working_set_bytes", "gauge", "container_memory_working_set_bytes",
                    self.base, ts, np.round(mem).astype(np.int64))]
        return outs, {}


class KsmContainerState(Group):
    """kube-state-metrics restarts, waiting and last-terminated reason of one container."""

    def __init__(self, pod: PodInfo, c: Container, ksm_instance: str):
        self.pod, self.c = pod, c
        self.grid = "fast" if pod.crashing else "slow"  # healthy ones only change on restarts
        self.key = f"ksm-state/{pod.namespace}/{pod.name}/{c.name}"
        self.begin = pod.created
        self.base = _lab(container=c.name, instance=ksm_instance, job="kube-state-metrics",
                         namespace=pod.namespace, pod=pod.name, uid=pod.uid)

    def render(self, times, state, rng):
        outs = []
        c, pod = self.c, self.pod
        if pod.crashing:
            hi = int(times[-1])
            lives = crash_lives(pod.started, hi)
            starts = np.array([s for s, _ in lives], dtype=np.int64)
            deaths = starts + CRASH_RUNTIME
            idx = np.searchsorted(starts, times, side="right") - 1
            restarts = np.maximum(idx, 0).astype(np.int64)
            running = (idx >= 0) & (times <= deaths[np.maximum(idx, 0)])
            first_death = int(deaths[0]) if len(deaths) else None
            waiting = ~running & (idx >= 0) & (first_death is not None) & (times >= (first_death or 0))
            outs.append(Out("kube_pod_container_status_restarts", "counter", "kube_pod_container_status_restarts_total",
                            self.base, times, restarts))
            if waiting.any():
                outs.append(Out("kube_pod_container_status_waiting_reason", "gauge",
                                "kube_pod_container_status_waiting_reason",
                                self.base + (("reason", "CrashLoopBackOff"),), times[waiting],
                                np.ones(int(waiting.sum()), dtype=np.int64)))
            term = times >= (first_death or 0)
            if first_death is not None and term.any():
                outs.append(Out("kube_pod_container_status_last_terminated_reason", "gauge",
                                "kube_pod_container_status_last_terminated_reason",
                                self.base + (("reason", pod.fail or "Error"),), times[term],
                                np.ones(int(term.sum()), dtype=np.int64)))
            return outs, {}
        outs.append(Out("kube_pod_container_status_restarts", "counter", "kube_pod_container_status_restarts_total",
                        self.base, times, np.full(len(times), c.restarts, dtype=np.int64)))
        if c.waiting:
            outs.append(Out("kube_pod_container_status_waiting_reason", "gauge",
                            "kube_pod_container_status_waiting_reason", self.base + (("reason", c.waiting),),
                            times, np.ones(len(times), dtype=np.int64)))
        if c.last_terminated:
            mask = times >= (c.last_finished or 0)
            if mask.any():
                outs.append(Out("kube_pod_container_status_last_terminated_reason", "gauge",
                                "kube_pod_container_status_last_terminated_reason",
                                self.base + (("reason", c.last_terminated),), times[mask],
                                np.ones(int(mask.sum()), dtype=np.int64)))
        return outs, {}


def _gauge(name: str, labels, times, value) -> Out:
    vals = np.broadcast_to(np.asarray(value), times.shape)
    return Out(name, "gauge", name, labels, times, np.array(vals))


class KsmPod(Group):
    """kube-state-metrics pod phase, info, owner, readiness, limits and requests."""

    grid = "slow"

    def __init__(self, pod: PodInfo, ksm_instance: str):
        self.pod = pod
        self.key = f"ksm-pod/{pod.namespace}/{pod.name}"
        self.begin = pod.created
        self.ksm = _lab(instance=ksm_instance, job="kube-state-metrics")

    def render(self, times, state, rng):
        pod = self.pod
        base = self.ksm + _lab(namespace=pod.namespace, pod=pod.name, uid=pod.uid)
        outs = []
        for phase in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            outs.append(_gauge("kube_pod_status_phase", base + (("phase", phase),), times,
                               1 if pod.phase == phase else 0))
        outs.append(_gauge("kube_pod_info", base + _lab(
            created_by_kind=pod.owner_kind, created_by_name=pod.owner_name, host_ip=pod.host_ip,
            host_network="false", node=pod.node, pod_ip=pod.pod_ip), times, 1))
        if pod.owner_kind:
            outs.append(_gauge("kube_pod_owner", base + _lab(owner_is_controller="true", owner_kind=pod.owner_kind,
                                                              owner_name=pod.owner_name), times, 1))
        for c in pod.containers:
            cl = base[:2] + (("container", c.name),) + base[2:]
            outs.append(_gauge("kube_pod_container_status_ready", cl, times, 1 if c.ready else 0))
            for metric, resource, unit, value in (
                    ("kube_pod_container_resource_limits", "cpu", "core", c.cpu_limit),
                    ("kube_pod_container_resource_limits", "memory", "byte", c.mem_limit),
                    ("kube_pod_container_resource_requests", "cpu", "core", c.cpu_request),
                    ("kube_pod_container_resource_requests", "memory", "byte", c.mem_request)):
                if value is not None:
                    v = int(value) if unit == "byte" else value
                    outs.append(_gauge(metric, cl + _lab(node=pod.node, resource=resource, unit=unit), times, v))
        return outs, {}


class KsmDeployment(Group):
    """kube-state-metrics Deployment replicas and conditions (with the rollout in history)."""

    grid = "slow"

    def __init__(self, dep: dict, facts: Facts, ksm_instance: str):
        meta = dep["metadata"]
        self.dep, self.facts = dep, facts
        self.key = f"ksm-deploy/{meta['namespace']}/{meta['name']}"
        self.begin = _ts(meta.get("creationTimestamp")) or 0
        self.base = _lab(deployment=meta["name"], instance=ksm_instance, job="kube-state-metrics",
                         namespace=meta["namespace"])
        rss = [r for (ns, _), r in facts.replicasets.items() if ns == meta["namespace"]
               and any(o.get("name") == meta["name"] for o in r["metadata"].get("ownerReferences") or [])]
        current = max(rss, key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, "0")),
                      default=None)
        self.rollout = _ts(current["metadata"].get("creationTimestamp")) if current else None
        self.failing = any(p.crashing or p.fail for p in facts.pods
                           if current and p.owner_name == current["metadata"]["name"]
                           and p.namespace == meta["namespace"])

    def render(self, times, state, rng):
        spec = int((self.dep.get("spec") or {}).get("replicas", 1))
        st = self.dep.get("status") or {}
        after = times >= (self.rollout or 0) + 30
        steady = {"replicas": spec, "available": spec, "updated": spec}
        now = {"replicas": int(st.get("replicas", spec)), "available": int(st.get("availableReplicas", spec)),
               "updated": int(st.get("updatedReplicas", spec))}
        outs = [_gauge("kube_deployment_spec_replicas", self.base, times, spec)]
        for metric, key in (("kube_deployment_status_replicas", "replicas"),
                            ("kube_deployment_status_replicas_available", "available"),
                            ("kube_deployment_status_replicas_updated", "updated")):
            outs.append(_gauge(metric, self.base, times, np.where(after, now[key], steady[key])))
        unavailable = np.where(after, max(0, now["replicas"] - now["available"]), 0)
        outs.append(_gauge("kube_deployment_status_replicas_unavailable", self.base, times, unavailable))
        deadline = int((self.dep.get("spec") or {}).get("progressDeadlineSeconds", 600))
        conds = {c.get("type"): c.get("status") for c in st.get("conditions") or []}
        if self.failing:  # the controller reports ProgressDeadlineExceeded once the deadline passed
            progressing = times < (self.rollout or 0) + deadline
        else:
            progressing = np.full(times.shape, conds.get("Progressing", "True") != "False")
        available = np.full(times.shape, conds.get("Available", "True") != "False")
        for cond, values in (("Available", available), ("Progressing", progressing)):
            for status in ("true", "false", "unknown"):
                v = values if status == "true" else (~values if status == "false" else np.zeros(times.shape, bool))
                outs.append(_gauge("kube_deployment_status_condition",
                                   self.base + (("condition", cond), ("status", status)), times, v.astype(np.int64)))
        return outs, {}


class KsmReplicaSet(Group):
    grid = "slow"

    def __init__(self, rs: dict, ksm_instance: str):
        meta = rs["metadata"]
        self.rs = rs
        self.key = f"ksm-rs/{meta['namespace']}/{meta['name']}"
        self.begin = _ts(meta.get("creationTimestamp")) or 0
        owner = next(iter(meta.get("ownerReferences") or []), {})
        self.labels = _lab(instance=ksm_instance, job="kube-state-metrics", namespace=meta["namespace"],
                           owner_is_controller="true" if owner else "false",
                           owner_kind=owner.get("kind", "<none>"), owner_name=owner.get("name", "<none>"),
                           replicaset=meta["name"])

    def render(self, times, state, rng):
        return [_gauge("kube_replicaset_owner", self.labels, times, 1)], {}


def _cert_not_after(secret: dict | None) -> int | None:
    data = (secret or {}).get("data") or {}
    pem = data.get("tls.crt")
    if not pem:
        return None
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
        return int(cert.not_valid_after_utc.timestamp())
    except Exception:  # noqa: BLE001 - a malformed scenario secret only loses the probe metric
        return None


class CertManagerCert(Group):
    grid = "slow"

    def __init__(self, cert: dict, cm_instance: str):
        meta, spec = cert["metadata"], cert.get("spec") or {}
        self.cert = cert
        self.key = f"cert/{meta['namespace']}/{meta['name']}"
        self.begin = _ts(meta.get("creationTimestamp")) or 0
        issuer = spec.get("issuerRef") or {}
        self.base = _lab(instance=cm_instance, issuer_group=issuer.get("group", "cert-manager.io"),
                         issuer_kind=issuer.get("kind", "Issuer"), issuer_name=issuer.get("name"),
                         job="cert-manager", name=meta["name"], namespace=meta["namespace"])

    def render(self, times, state, rng):
        st = self.cert.get("status") or {}
        outs = []
        not_after = _ts(st.get("notAfter"))
        if not_after:
            outs.append(_gauge("certmanager_certificate_expiration_timestamp_seconds", self.base, times, not_after))
        ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        now_status = (ready or {}).get("status", "Unknown")
        since = _ts((ready or {}).get("lastTransitionTime")) or self.begin
        before = {"True": "False", "False": "True"}.get(now_status, "Unknown")
        current = np.where(times >= since, now_status, before)
        for cond in ("True", "False", "Unknown"):
            outs.append(_gauge("certmanager_certificate_ready_status", self.base + (("condition", cond),),
                               times, (current == cond).astype(np.int64)))
        return outs, {}


class BlackboxProbe(Group):
    grid = "slow"

    def __init__(self, host: str, not_after: int, begin: int):
        self.key = f"probe/{host}"
        self.begin = begin
        self.not_after = not_after
        self.base = _lab(instance=f"https://{host}", job="blackbox", module="http_2xx")

    def render(self, times, state, rng):
        return [_gauge("probe_ssl_earliest_cert_expiry", self.base, times, self.not_after),
                _gauge("probe_success", self.base, times, 1)], {}


# ---- the model ------------------------------------------------------------------


def time_grid(start: int, end: int, step: int = DEFAULT_STEP) -> np.ndarray:
    """Sample times (seconds): `step` for the last 6 h, 4 x step (at most 120 s) to a day, RATE_SAFE beyond."""
    mid_step = min(4 * step, 120)
    tiers = ((end - RECENT, end, step), (end - MIDDLE, end - RECENT, mid_step), (start, end - MIDDLE, RATE_SAFE))
    parts = []
    for lo, hi, s in tiers:
        lo = max(lo, start)
        if hi < lo:
            continue
        first = -(-lo // s) * s
        parts.append(np.arange(first, hi + 1, s, dtype=np.int64))
    parts.append(np.array([end], dtype=np.int64))
    return np.unique(np.concatenate(parts))


def slow_grid(start: int, end: int) -> np.ndarray:
    first = -(-start // COARSE) * COARSE
    return np.unique(np.concatenate([np.arange(first, end + 1, COARSE, dtype=np.int64),
                                     np.array([end], dtype=np.int64)]))


def _fmt_labels(labels: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for k, v in labels:
        v = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{v}"')
    return "{" + ",".join(parts) + "}"


def _fmt_values(values: np.ndarray) -> list[str]:
    if values.dtype.kind in "iub":
        return [str(v) for v in values.tolist()]
    out = []
    for v in values.tolist():
        out.append(str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v))
    return out


COREDNS_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
                   1.024, 2.048, 4.096, 8.192)
# CoreDNS answer mix of a cluster whose pods use ndots:5: most external lookups walk the search list first
COREDNS_RCODES = {"NOERROR": 0.62, "NXDOMAIN": 0.375, "SERVFAIL": 0.004, "REFUSED": 0.001}
SYNC_FAILING = "sandbox.kube-runbooks.io/sync-failing-since"


class CoreDNSServer(Group):
    """CoreDNS's prometheus plugin (:9153) on one coredns pod: requests, responses by rcode, latency."""

    def __init__(self, pod: PodInfo):
        self.pod = pod
        self.key = f"coredns/{pod.name}"
        self.begin = pod.started
        self.rps = _rng("coredns", pod.name).uniform(120, 180)
        self.base = _lab(instance=f"{pod.pod_ip}:9153", job="kube-dns", namespace=pod.namespace, pod=pod.name,
                         server="dns://:53", view="", zone=".")

    def render(self, times, state, rng):
        mid = (times[:-1] + times[1:]) / 2.0
        dt = np.diff(times).astype(float)
        n = rng.poisson(self.rps * (1 + 0.3 * daily(mid)) * dt)
        outs: list[Out] = []
        new_state: dict[str, Any] = {}
        age = max(0.0, float(times[0]) - self.begin) * self.rps * 0.7
        by_type = {"A": 0.55, "AAAA": 0.42, "SRV": 0.03}
        remaining = n
        for i, (t, share) in enumerate(by_type.items()):
            cnt = remaining if i == len(by_type) - 1 else rng.binomial(remaining, share / sum(list(by_type.values())[i:]))
            remaining = remaining - cnt
            init = state[f"req/{t}"] if state is not None else round(age * share)
            vals = self.cumulate(init, cnt)
            new_state[f"req/{t}"] = int(vals[-1])
            outs.append(Out("coredns_dns_requests", "counter", "coredns_dns_requests_total",
                            self.base + _lab(family="1", proto="udp", type=t), times, vals))
        remaining = n
        for i, (rcode, share) in enumerate(COREDNS_RCODES.items()):
            rest = sum(list(COREDNS_RCODES.values())[i:])
            cnt = remaining if i == len(COREDNS_RCODES) - 1 else rng.binomial(remaining, share / rest)
            remaining = remaining - cnt
            init = state[f"resp/{rcode}"] if state is not None else round(age * share)
            vals = self.cumulate(init, cnt)
            new_state[f"resp/{rcode}"] = int(vals[-1])
            outs.append(Out("coredns_dns_responses", "counter", "coredns_dns_responses_total",
                            self.base + _lab(plugin="", rcode=rcode), times, vals))
        les = np.array(COREDNS_BUCKETS)
        cdf = _lognormal_cdf(les, np.array(0.0009), np.array(0.9))
        mass = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
        per_bucket = rng.multinomial(n, mass / mass.sum()) if len(n) else np.zeros((0, len(les) + 1), dtype=np.int64)
        cum = np.cumsum(per_bucket, axis=1)
        init_b = (np.asarray(state["b"], dtype=np.int64) if state is not None
                  else np.round(np.concatenate([cdf, [1.0]]) * age).astype(np.int64))
        buckets = self.cumulate(init_b, cum)
        init_s = float(state["s"]) if state is not None else age * 0.0014
        sums = self.cumulate(init_s, n * 0.0014)
        new_state["b"], new_state["s"] = buckets[-1].tolist(), float(sums[-1])
        fam = "coredns_dns_request_duration_seconds"
        labels = self.base + _lab(type="A")
        for i, le in enumerate(list(COREDNS_BUCKETS) + [math.inf]):
            le_text = "+Inf" if le == math.inf else repr(le)
            outs.append(Out(fam, "histogram", fam + "_bucket", labels + (("le", le_text),), times, buckets[:, i]))
        outs.append(Out(fam, "histogram", fam + "_sum", labels, times, np.round(sums, 4)))
        outs.append(Out(fam, "histogram", fam + "_count", labels, times, buckets[:, -1]))
        return outs, new_state


class ExternalDNSController(Group):
    """ExternalDNS's /metrics on one pod: last successful sync, registry and source errors.

    A Deployment annotated ``sandbox.kube-runbooks.io/sync-failing-since: <duration>`` has had
    every sync fail since then (the provider refuses its batch): the last-sync timestamp stops
    and each attempt adds a registry error.
    """

    grid = "slow"

    def __init__(self, pod: PodInfo, interval: int, failing_since: int | None):
        self.pod, self.interval, self.failing_since = pod, interval, failing_since
        self.key = f"external-dns/{pod.namespace}/{pod.name}"
        self.begin = pod.started
        self.base = _lab(instance=f"{pod.pod_ip}:7979", job="external-dns", namespace=pod.namespace, pod=pod.name)

    def render(self, times, state, rng):
        t = times.astype(np.int64)
        last = (t - self.begin) // self.interval * self.interval + self.begin
        errors = np.zeros(len(t), dtype=np.int64)
        if self.failing_since is not None:
            frozen = (self.failing_since - self.begin) // self.interval * self.interval + self.begin
            failing = t >= self.failing_since
            last = np.where(failing, frozen, last)
            errors = np.where(failing, (t - self.failing_since) // self.interval + 1, 0)
        return [_gauge("external_dns_controller_last_sync_timestamp_seconds", self.base, times, last.astype(float)),
                Out("external_dns_registry_errors", "counter", "external_dns_registry_errors_total", self.base,
                    times, errors),
                Out("external_dns_source_errors", "counter", "external_dns_source_errors_total", self.base,
                    times, np.zeros(len(t), dtype=np.int64))], {}


def _externaldns_pods(facts: Facts, now: int) -> list[Group]:
    groups: list[Group] = []
    for dep in facts.deployments:
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        c = next((c for c in containers if "external-dns" in (c.get("image") or "")), None)
        if c is None:
            continue
        interval = 60
        for arg in c.get("args") or []:
            if arg.startswith("--interval="):
                interval = max(1, int(_DURATION_SECONDS(arg.split("=", 1)[1])))
        since = (dep["metadata"].get("annotations") or {}).get(SYNC_FAILING)
        failing = now - int(_DURATION_SECONDS(since)) if since else None
        for pod in facts.pods:
            if pod.namespace == dep["metadata"]["namespace"] and pod.workload == dep["metadata"]["name"] \
                    and pod.phase == "Running":
                groups.append(ExternalDNSController(pod, interval, failing))
    return groups


def _DURATION_SECONDS(text: str) -> float:  # noqa: N802 - a tiny parser, named like a constant table
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not m or not any(m.groups()):
        return 60.0
    h, mi, se = (int(x or 0) for x in m.groups())
    return h * 3600 + mi * 60 + se


class Model:
    """The scenario's series: write the history once, then serve live samples after it."""

    def __init__(self, objects: Iterable[dict], now: datetime, *, history: timedelta = DEFAULT_HISTORY,
                 step: int = DEFAULT_STEP, seed: int | str = 0):
        if not 1 <= step <= RATE_SAFE:
            raise ValueError(f"step must be between 1 and {RATE_SAFE} seconds, not {step}")
        self.step = int(step)
        self.seed = seed
        self.end = int(now.timestamp()) // self.step * self.step  # never in the future
        self.start = self.end - int(history.total_seconds())
        self.facts = Facts(objects)
        self.groups = self._groups(self.facts, self.end)
        self.state: dict[str, dict] = {}
        self.last: dict[str, int] = {}
        self.cache: dict[str, list[Out]] = {}
        self.stats = {"series": 0, "samples": 0}

    @property
    def incidents(self) -> list[Incident]:
        return self.facts.incidents

    @staticmethod
    def _groups(facts: Facts, now: int = 0) -> list[Group]:
        ksm = facts.pod_by_prefix("monitoring", "kube-state-metrics")
        ksm_instance = f"{ksm.pod_ip}:8080" if ksm and ksm.pod_ip else "10.244.1.20:8080"
        cm = next((p for p in facts.pods if p.namespace == "cert-manager" and p.workload == "cert-manager"), None)
        cm_instance = f"{cm.pod_ip}:9402" if cm and cm.pod_ip else "10.244.2.30:9402"
        groups: list[Group] = []
        ctrls = [p for p in facts.pods if p.workload == "ingress-nginx-controller"
                 or p.labels.get("app.kubernetes.io/component") == "controller"
                 and p.labels.get("app.kubernetes.io/name") == "ingress-nginx"]
        ctrls = sorted({p.name: p for p in ctrls}.values(), key=lambda p: p.name)
        ctrl_names = {p.name for p in ctrls}
        serving_services = set()
        for route in facts.ingress_routes():
            serving_services.add((route["namespace"], route["service"]))
            incident = facts.incident_for_service(route["namespace"], route["service"])
            for ctrl in ctrls:
                groups.append(NginxRoute(route, ctrl, len(ctrls), incident, ksm_instance))
        for pod in facts.pods:
            services = facts.services_of(pod)
            serving = any((pod.namespace, s) in serving_services for s in services) or pod.name in ctrl_names
            incident = None
            if not pod.crashing:
                incident = next((facts.incident_for_service(pod.namespace, s) for s in services
                                 if facts.incident_for_service(pod.namespace, s)), None)
            for c in pod.containers:
                if pod.node and pod.phase == "Running":
                    groups.append(CrashingContainer(pod, c) if pod.crashing
                                  else ContainerUsage(pod, c, serving, incident))
                groups.append(KsmContainerState(pod, c, ksm_instance))
            groups.append(KsmPod(pod, ksm_instance))
        for dep in facts.deployments:
            groups.append(KsmDeployment(dep, facts, ksm_instance))
        for rs in sorted(facts.replicasets.values(), key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"])):
            groups.append(KsmReplicaSet(rs, ksm_instance))
        for cert in facts.certificates:
            groups.append(CertManagerCert(cert, cm_instance))
        probed: set[str] = set()  # blackbox probes each target once, however many Ingresses name it
        for pod in facts.pods:
            if pod.namespace == "kube-system" and pod.workload == "coredns" and pod.phase == "Running":
                groups.append(CoreDNSServer(pod))
        groups += _externaldns_pods(facts, now)
        for ing in facts.ingresses:
            for tls in (ing.get("spec") or {}).get("tls") or []:
                secret = facts.secrets.get((ing["metadata"]["namespace"], tls.get("secretName", "")))
                not_after = _cert_not_after(secret)
                if not_after is None:
                    cert = next((c for c in facts.certificates if c["metadata"]["namespace"] == ing["metadata"]["namespace"]
                                 and (c.get("spec") or {}).get("secretName") == tls.get("secretName")), None)
                    not_after = _ts(((cert or {}).get("status") or {}).get("notAfter"))
                if not_after is None:
                    continue
                for host in tls.get("hosts") or []:
                    if host in probed:
                        continue
                    probed.add(host)
                    groups.append(BlackboxProbe(host, not_after, _ts(ing["metadata"].get("creationTimestamp")) or 0))
        return groups

    # ---- history ----

    def iter_history(self) -> Iterator[Out]:
        fast = time_grid(self.start, self.end, self.step)
        slow = slow_grid(self.start, self.end)
        for g in self.groups:
            grid = fast if g.grid == "fast" else slow
            times = grid[grid >= g.begin]
            if len(times) == 0:
                continue
            outs, state = g.render(times, None, _rng(self.seed, g.key))
            self.state[g.key] = state
            self.last[g.key] = int(times[-1])
            yield from outs

    def write_openmetrics(self, fp: IO[str]) -> dict[str, int]:
        """Write the whole history as OpenMetrics text; returns {"series", "samples"}."""
        families: dict[str, list[Out]] = {}
        for out in self.iter_history():
            families.setdefault(out.family, []).append(out)
        self.stats = write_families(fp, families)
        return self.stats

    # ---- live ----

    def exposition(self, t: float | None = None, objects: Iterable[dict] | None = None) -> str:
        """Prometheus text format (0.0.4) for a scrape at `t`, continuing the history.

        With `objects`, the series follow the cluster as it is now (pods that went
        away stop, new ones start from zero, an incident ends when its failing
        pods are gone); counters carry on from their last values.
        """
        import time as _time

        now = int(t if t is not None else _time.time())
        if objects is not None:
            self.facts = Facts(objects)
            self.groups = self._groups(self.facts, self.end)
        families: dict[str, list[Out]] = {}
        for g in self.groups:
            if now < g.begin:
                continue
            last = self.last.get(g.key)
            if last is not None and now <= last:
                outs = self.cache.get(g.key, [])  # scraped twice in a second: the same samples again
            else:
                if last is None:  # a series born after the history: from its beginning
                    times = np.array(sorted({g.begin, now}), dtype=np.int64)
                    state = None
                else:
                    times = np.array([last, now], dtype=np.int64)
                    state = self.state.get(g.key, {})
                rendered, new_state = g.render(times, state, _rng(self.seed, g.key, now))
                self.state[g.key] = new_state
                self.last[g.key] = now
                outs = [Out(o.family, o.kind, o.name, o.labels, o.times[-1:], o.values[-1:])
                        for o in rendered if len(o.times) and int(o.times[-1]) == now]
                self.cache[g.key] = outs
            for out in outs:
                families.setdefault(out.family, []).append(out)
        lines = []
        for family in sorted(families):
            kind = families[family][0].kind
            if kind == "unknown":  # the text format has no _total rule: say what it is
                kind = "counter" if family == "nginx_ingress_controller_requests" else "untyped"
            # in the text format a TYPE line names the metric itself (with _total for counters)
            lines.append(f"# TYPE {family if kind == 'histogram' else families[family][0].name} {kind}")
            for out in families[family]:
                lines.append(f"{out.name}{_fmt_labels(out.labels)} {_fmt_values(out.values)[0]}")
        return "\n".join(lines) + "\n"


def write_families(fp: IO[str], families: dict[str, list[Out]]) -> dict[str, int]:
    """OpenMetrics text: each family contiguous, each series' samples in time order, then ``# EOF``."""
    series = samples = 0
    for family in sorted(families):
        outs = [o for o in families[family] if len(o.times)]
        if not outs:
            continue
        fp.write(f"# TYPE {family} {outs[0].kind}\n")
        for out in outs:
            prefix = out.name + _fmt_labels(out.labels) + " "
            ts = [str(t) for t in out.times.tolist()]
            fp.write("".join(f"{prefix}{v} {t}\n" for v, t in zip(_fmt_values(out.values), ts, strict=True)))
            series += 1
            samples += len(ts)
    fp.write("# EOF\n")
    return {"series": series, "samples": samples}


def generate_openmetrics(objects: Iterable[dict], now: datetime, *, history: timedelta = DEFAULT_HISTORY,
                         step: int = DEFAULT_STEP, path: str | Path | None = None,
                         seed: int | str = 0) -> str | Path:
    """The scenario's metric history as OpenMetrics text (or written to `path`, which is returned).

    `objects` are the cluster's objects as the API serves them (generate after the
    sandbox exists: pod names are random); samples end at `now` rounded down to `step`.
    """
    model = Model(objects, now, history=history, step=step, seed=seed)
    if path is None:
        import io

        buf = io.StringIO()
        model.write_openmetrics(buf)
        return buf.getvalue()
    path = Path(path)
    with path.open("w", encoding="utf-8") as fp:
        model.write_openmetrics(fp)
    return path


def incidents(objects: Iterable[dict]) -> list[Incident]:
    """The planted incidents the generated metrics show (failing rollouts behind ingresses)."""
    return Facts(objects).incidents

