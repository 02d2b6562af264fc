"""Onboarding an environment: write ``parameters/<env>/env.yaml`` and check it before a page.

Why this module exists: a newcomer with a real cluster should not write ``env.yaml`` by hand
and learn at 3 a.m. that a token lacks a permission. :func:`init_env` probes what it writes
(the API server, each data source, with the credentials the README names taken from the
environment), and :func:`check_env` probes an existing environment: the API server reachable
and authenticated; for each runbook, every verb on every resource it needs, asked of the API
server itself with a ``SelfSubjectAccessReview`` (so a missing permission is named before a
run); each data source reachable. Every check is one row (:class:`Check`); a failed one has a
named reason, and ``runbooks env check`` exits 2 when any failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import kube
from .environments import EnvConfig, Project, load_mapping
from .errors import SOURCE_ERRORS, Forbidden, InvalidInput, NotFound, RunbookError, cut

SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
REVIEW_CONCURRENCY = 8  # SelfSubjectAccessReviews in flight at a time (a run's upfront permission check)

# What each runbook does through the API: (verb, API group, resource[/subresource][, the parameter
# naming the namespace where it is needed]). Read-only runbooks only read; mutating ones also need
# the writes their plans make; dns-audit's in-cluster view runs a short-lived probe pod and execs
# into it (in_cluster_view: off needs none of that). Exec over a WebSocket is a GET: authorized as
# `get pods/exec` (Kubernetes 1.32), and also as `create` where AuthorizePodWebsocketUpgradeCreatePermission
# is on (beta from 1.35), as SPDY's POST always was.
# The cluster-wide entries of the scheduled runbooks are exactly what they request
# (tests/test_chart_rbac.py records every request of each run in the sandbox and compares), and
# charts/kube-runbooks builds its ClusterRoles from them (tools/chart_permissions.py).
PERMISSIONS: dict[str, list[tuple[str, ...]]] = {
    "cluster-health": [
        ("list", "", "namespaces"), ("list", "", "nodes"), ("list", "", "pods"), ("list", "", "events"),
        ("list", "", "services"), ("list", "", "endpoints"), ("get", "", "endpoints"),
        ("list", "", "persistentvolumeclaims"), ("list", "", "resourcequotas"), ("list", "", "secrets"),
        ("list", "apps", "deployments"), ("list", "apps", "statefulsets"), ("list", "apps", "daemonsets"),
        ("list", "batch", "jobs"), ("list", "batch", "cronjobs"),
        ("list", "autoscaling", "horizontalpodautoscalers"), ("list", "policy", "poddisruptionbudgets"),
        ("list", "networking.k8s.io", "ingresses"),
        ("list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("list", "admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("list", "apiregistration.k8s.io", "apiservices"),
    ],
    "incident-investigation": [
        ("list", "", "namespaces"), ("get", "", "namespaces"), ("get", "apps", "deployments"),
        ("list", "apps", "deployments"), ("list", "apps", "replicasets"), ("get", "apps", "replicasets"),
        ("list", "", "pods"), ("list", "", "events"), ("list", "", "configmaps"), ("list", "", "secrets"),
        ("patch", "apps", "deployments"),
    ],
    "certificate-rotation": [
        ("list", "", "secrets"), ("list", "cert-manager.io", "certificates"),
        ("list", "networking.k8s.io", "ingresses"), ("patch", "", "secrets"), ("create", "", "secrets"),
        ("patch", "cert-manager.io", "certificates"),
    ],
    "provision-service": [
        ("list", "", "secrets"), ("create", "", "secrets"), ("list", "apps", "deployments"),
        ("create", "apps", "deployments"), ("patch", "apps", "deployments"), ("create", "", "services"),
        ("create", "networking.k8s.io", "ingresses"), ("list", "", "pods"),
    ],
    "service-reachability": [
        ("list", "", "namespaces"), ("list", "networking.k8s.io", "ingresses"),
        ("list", "networking.k8s.io", "ingressclasses"), ("list", "", "services"),
        ("list", "discovery.k8s.io", "endpointslices"), ("list", "", "pods"), ("list", "", "secrets"),
        ("list", "apps", "deployments"), ("list", "", "events"),
    ],
    "dns-audit": [
        ("list", "", "namespaces"), ("get", "", "namespaces"), ("list", "", "services"), ("get", "", "services"),
        ("list", "discovery.k8s.io", "endpointslices"), ("list", "", "pods"),
        ("list", "networking.k8s.io", "ingresses"), ("list", "apps", "deployments"),
        ("create", "", "pods", "probe_namespace"), ("get", "", "pods", "probe_namespace"),
        ("delete", "", "pods", "probe_namespace"), ("get", "", "pods/exec", "probe_namespace"),
        ("create", "", "pods/exec", "probe_namespace"),
    ],
}
# The namespace of a permission that names a parameter, when the env's parameter file does not set it.
NAMESPACE_DEFAULTS = {"probe_namespace": "default"}
READ_VERBS = ("get", "list", "watch")
SCHEDULED = ("cluster-health", "incident-investigation", "dns-audit", "service-reachability")
"""The runbooks charts/kube-runbooks schedules as CronJobs."""


def _cluster_wide(runbook: str) -> list[tuple[str, str, str]]:
    # Entries naming a namespace parameter (dns-audit's optional probe pod) are checked by
    # `runbooks env check` in that namespace; they are not part of the scheduled roles.
    return [(p[0], p[1], p[2]) for p in PERMISSIONS.get(runbook, []) if len(p) == 3]


def reads(runbook: str) -> list[tuple[str, str, str]]:
    """The cluster-wide read permissions of a runbook (what a dry run needs)."""
    return [p for p in _cluster_wide(runbook) if p[0] in READ_VERBS]


def writes(runbook: str) -> list[tuple[str, str, str]]:
    """The cluster-wide write permissions of a runbook (what applying its approved plan needs)."""
    return [p for p in _cluster_wide(runbook) if p[0] not in READ_VERBS]


def denied(cluster: Any, needed: Sequence[tuple[str, str, str]],
           namespaces: Sequence[str] | None = None) -> list[str]:
    """Each permission the connection's identity lacks, as ``forbidden: VERB RESOURCE in WHERE``.

    Asked of the API server with ``SelfSubjectAccessReview`` s: cluster-wide ("in all namespaces"),
    as an unscoped run lists. A run scoped to ``namespaces`` needs its namespaced permissions only
    there (an identity with RoleBindings in those namespaces may run it); its cluster-scoped reads
    (nodes, namespaces, webhooks) are then left to the runbook, which reports a 403 as a finding.

    The reviews are asked concurrently (:data:`REVIEW_CONCURRENCY` at a time): a run's start waits
    for the slowest, not for the sum.

    Raises:
        NotFound: the API server has no ``authorization.k8s.io/v1`` access reviews.
    """
    asks: list[tuple[str, str, str, str | None]] = []  # (verb, group, resource, namespace), in order
    for verb, group, resource in needed:
        if not namespaces:
            asks.append((verb, group, resource, None))
        elif kube.resource_namespaced(resource.partition("/")[0]):
            asks += [(verb, group, resource, ns) for ns in namespaces]
    with ThreadPoolExecutor(max_workers=max(1, min(REVIEW_CONCURRENCY, len(asks)))) as pool:
        allowed = list(pool.map(lambda ask: access_review(cluster, *ask), asks))  # the first error raises
    return [f"forbidden: {verb} {resource}{'.' + group if group else ''} in {ns or 'all namespaces'}"
            for (verb, group, resource, ns), ok in zip(asks, allowed, strict=True) if not ok]


def rbac_rules(needed: Sequence[tuple[str, str, str]]) -> list[dict[str, list[str]]]:
    """RBAC PolicyRules granting exactly ``needed``: one rule per API group and verb set, sorted.

    Example:
        >>> rbac_rules([("list", "", "pods"), ("get", "", "pods"), ("list", "apps", "deployments")])
        [{'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list']}, \
{'apiGroups': ['apps'], 'resources': ['deployments'], 'verbs': ['list']}]
    """
    verbs: dict[tuple[str, str], set[str]] = {}
    for verb, group, resource in needed:
        verbs.setdefault((group, resource), set()).add(verb)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), vs in verbs.items():
        grouped.setdefault((group, tuple(sorted(vs))), []).append(resource)
    return [{"apiGroups": [group], "resources": sorted(resources), "verbs": list(vs)}
            for (group, vs), resources in sorted(grouped.items())]


def chart_permissions(scheduled: Sequence[str] = SCHEDULED, served: Sequence[str] = ()) -> dict[str, Any]:
    """The ClusterRoles of charts/kube-runbooks, from :data:`PERMISSIONS` (its ``permissions.yaml``).

    ``read``: every read of the scheduled runbooks except Secrets; ``secrets``: the Secret reads,
    bound only to the runbooks that need them (``needSecrets``); ``write``: per runbook, what
    applying its approved plan needs; ``serve``: the reads of the runbooks ``runbooks serve``
    routes alerts to.
    """
    def is_secret(p: tuple[str, str, str]) -> bool:
        return p[1] == "" and p[2] == "secrets"

    read = {p for name in scheduled for p in reads(name) if not is_secret(p)}
    secret = {p for name in scheduled for p in reads(name) if is_secret(p)}
    return {
        "read": rbac_rules(sorted(read)),
        "secrets": rbac_rules(sorted(secret)),
        "needSecrets": [name for name in scheduled if any(is_secret(p) for p in reads(name))],
        "write": {name: rbac_rules(writes(name)) for name in scheduled if writes(name)},
        "serve": rbac_rules(sorted({p for name in served for p in reads(name)})),
    }


SOURCES = (("prometheus", "prometheus_url"), ("alertmanager", "alertmanager_url"),
           ("elasticsearch", "elasticsearch_url"))
CREDENTIALS = {"prometheus": "PROMETHEUS_TOKEN or PROMETHEUS_USERNAME/PROMETHEUS_PASSWORD",
               "alertmanager": "ALERTMANAGER_TOKEN or ALERTMANAGER_USERNAME/ALERTMANAGER_PASSWORD",
               "elasticsearch": "ES_API_KEY or ES_USERNAME/ES_PASSWORD"}


@dataclass
class Check:
    """One row of ``runbooks env check``: what was checked, ok / warning / failed, and why."""

    what: str
    state: str  # ok | warning | failed
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state == "failed"


def probe_source(kind: str, url: str, *, verify: bool = True) -> Check:
    """Reachable, the version it reports, credentials accepted (from the environment variables)."""
    # the data source clients (pandas, elasticsearch): imported by `runbooks env` only, not by every run's start
    from . import alerts, logs, metrics

    what = f"{kind} {url}"
    try:
        if kind == "prometheus":
            info = metrics.check(url, verify=verify)
        elif kind == "alertmanager":
            info = alerts.check(alerts.connect(url, verify=verify))
        else:
            info = logs.check(logs.connect(url, verify_certs=verify))
            if not info.get("reachable", True):
                return Check(what, "failed", f"unreachable: {cut(str(info.get('error') or ''))} "
                             f"(credentials: {CREDENTIALS[kind]})")
            if not info.get("ok", True):
                return Check(what, "warning", f"version {info.get('version') or '?'}; "
                             + "; ".join(map(str, info.get("problems") or [])))
    except SOURCE_ERRORS as exc:
        return Check(what, "failed", f"{type(exc).__name__}: {cut(str(exc))} (credentials: {CREDENTIALS[kind]})")
    return Check(what, "ok", f"version {info.get('version') or '?'}")


def probe_cluster(kubeconfig: str | None, context: str | None) -> tuple[Any, Check]:
    """Connect with the kubeconfig context and make one authenticated call (``/version``)."""
    what = f"API server (context {context or 'current'})"
    try:
        cluster = kube.connect(kubeconfig, context)
        version = kube.request(cluster, "GET", "/version")
    except SOURCE_ERRORS as exc:
        return None, Check(what, "failed", f"{type(exc).__name__}: {cut(str(exc))}")
    except RunbookError as exc:
        return None, Check(what, "failed", cut(str(exc)))
    try:  # /version is often public: a namespace list proves the credentials
        kube.request(cluster, "GET", "/api/v1/namespaces", query=[("limit", 1)])
        auth = "authenticated"
    except SOURCE_ERRORS as exc:
        if isinstance(exc, Forbidden) and "401" not in str(exc) and "Unauthorized" not in str(exc):
            auth = "authenticated (may not list namespaces)"
        else:
            return cluster, Check(what, "failed", f"not authenticated: {type(exc).__name__}: {cut(str(exc))}")
    return cluster, Check(what, "ok", f"{cluster.server}, Kubernetes {version.get('gitVersion', '?')}, {auth}")


def access_review(cluster: Any, verb: str, group: str, resource: str, namespace: str | None = None) -> bool:
    """``SelfSubjectAccessReview``: may the identity of this connection do ``verb`` on ``resource``?

    Raises:
        NotFound: the API server has no ``authorization.k8s.io/v1`` access reviews.
    """
    resource, _, subresource = resource.partition("/")
    attrs = {"verb": verb, "group": group, "resource": resource}
    if subresource:
        attrs["subresource"] = subresource
    if namespace:
        attrs["namespace"] = namespace
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}
    answer = kube.request(cluster, "POST", SSAR_PATH, body=body)
    return bool((answer.get("status") or {}).get("allowed"))


def check_permissions(cluster: Any, runbooks: Sequence[str], namespace: str | None = None,
                      parameters: dict[str, dict[str, Any]] | None = None) -> list[Check]:
    """One row per runbook: every permission it needs, or the ones missing, named.

    A permission needed in the namespace a parameter names is checked there: the value from
    ``parameters[runbook]`` (the env's parameter file), else :data:`NAMESPACE_DEFAULTS`.
    """
    rows: list[Check] = []
    for name in runbooks:
        needed = PERMISSIONS.get(name)
        if needed is None:
            rows.append(Check(f"runbook {name}", "warning", "no declared permissions to check"))
            continue
        missing = []
        try:
            for verb, group, resource, *where in needed:
                ns = namespace
                if where:
                    ns = str(((parameters or {}).get(name) or {}).get(where[0]) or NAMESPACE_DEFAULTS[where[0]])
                if not access_review(cluster, verb, group, resource, ns):
                    missing.append(f"{verb} {resource}" + (f".{group}" if group else "") + (f" in {ns}" if where else ""))
        except NotFound:
            rows.append(Check(f"runbook {name}", "warning",
                              "cannot check permissions (no SelfSubjectAccessReview API)"))
            continue
        except SOURCE_ERRORS as exc:
            rows.append(Check(f"runbook {name}", "failed", f"access review failed: {cut(str(exc))}"))
            continue
        if missing:
            rows.append(Check(f"runbook {name}", "failed", "missing permission: " + ", ".join(missing)))
        else:
            rows.append(Check(f"runbook {name}", "ok", f"{len(needed)} permissions granted"))
    return rows


def check_env(project: Project, name: str, *, verify: bool = True,
              probe: Callable[..., Check] = probe_source) -> list[Check]:
    """Every check of ``runbooks env check NAME`` (see the module docstring)."""
    cfg = project.load_env(name)
    cluster, api = probe_cluster(cfg.kubeconfig, cfg.kube_context)
    rows = [api]
    if cluster is not None:
        if cfg.expected_context and cfg.expected_context not in (cluster.context, cluster.server):
            rows.append(Check("expected_context", "failed",
                              f"the active context is {cluster.context!r}, env.yaml expects {cfg.expected_context!r}"))
        elif not cfg.expected_context:
            rows.append(Check("expected_context", "warning", "not set: plans cannot be applied in this env"))
        else:
            rows.append(Check("expected_context", "ok", cfg.expected_context))
        runbooks = list(project.notebooks())
        rows += check_permissions(cluster, runbooks, parameters=_parameter_files(project, name, runbooks))
    for kind, key in SOURCES:
        url = getattr(cfg, key)
        rows.append(probe(kind, url, verify=verify) if url else
                    Check(kind, "warning", f"not configured in env {name} ({key} in env.yaml)"))
    return rows


def _parameter_files(project: Project, env: str, runbooks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``parameters/ENV/<runbook>.yaml`` of each runbook that has one (only mappings)."""
    out = {}
    for name in runbooks:
        path = project.parameters_dir / env / f"{name}.yaml"
        if path.is_file():
            out[name] = load_mapping(path)
    return out


def init_env(project: Project, name: str, *, context: str, kubeconfig: str | None = None,
             urls: dict[str, str | None] | None = None, description: str = "", force: bool = False,
             verify: bool = True) -> tuple[Path, list[Check]]:
    """Probe, then write ``parameters/NAME/env.yaml`` with ``expected_context`` set to ``context``.

    Raises:
        InvalidInput: a bad name, an existing file without ``force``, or a cluster that cannot be
            reached with that context (nothing is written then).
    """
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InvalidInput(f"environment name {name!r} is not allowed (letters, digits, '.', '_', '-')")
    path = project.parameters_dir / name / "env.yaml"
    if path.exists() and not force:
        raise InvalidInput(f"{path} exists; check it with `runbooks env check {name}` or pass --force")
    cluster, api = probe_cluster(kubeconfig, context)
    if cluster is None:
        raise InvalidInput(f"cannot reach the cluster of context {context!r}: {api.detail}; nothing was written")
    rows = [api]
    urls = {k: v for k, v in (urls or {}).items() if v}
    for kind, key in SOURCES:
        if urls.get(key):
            rows.append(probe_source(kind, urls[key], verify=verify))
    cfg = EnvConfig(description=description or f"{name}: context {context} at {cluster.server}",
                    kubeconfig=str(Path(kubeconfig).resolve()) if kubeconfig else None,
                    kube_context=context, expected_context=context, **urls)
    data = {k: v for k, v in cfg.model_dump().items() if v not in (None, "")}
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Environment `{name}`, written by `runbooks env init` (schema: runbooks.environments.EnvConfig).\n"
              "# Credentials never go here: kubeconfig for Kubernetes, environment variables for the data\n"
              "# sources (PROMETHEUS_TOKEN, ALERTMANAGER_TOKEN, ES_API_KEY ...). Check it: runbooks env check "
              f"{name}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path, rows


def format_checks(rows: Sequence[Check]) -> str:
    """The table ``runbooks env check`` prints."""
    width = max((len(r.what) for r in rows), default=10)
    lines = [f"{'check':<{width}}  {'state':<8}  detail", f"{'-' * width}  {'-' * 8}  {'-' * 6}"]
    lines += [f"{r.what:<{width}}  {r.state:<8}  {r.detail}" for r in rows]
    return "\n".join(lines)
