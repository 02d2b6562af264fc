"""The control plane: admission webhooks without endpoints, unavailable aggregated APIs, and the
API server's own readiness checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .. import kube
from ..errors import Forbidden, NotFound
from ..model import Finding
from .core import Check, frame, guarded, not_served

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
    return Check(frame(rows, WEBHOOK_COLUMNS), findings)


def _ready_addresses(cluster: kube.Cluster, namespace: str, name: str) -> int | None:
    try:
        ep = kube.get_object(cluster, "endpoints", namespace, name)
    except NotFound:
        return None
    return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])


def _selects_any(cluster: kube.Cluster, selector: dict | None, namespaces: list[str]) -> bool:
    """Whether a webhook's namespaceSelector matches one of `namespaces` (the API server evaluates it)."""
    query = kube.selector_string(selector)
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
            notes.append(not_served(f"{kind}s", WEBHOOK_COLUMNS, e))
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
    return Check(frame(rows, APISERVICE_COLUMNS), findings)


@guarded("APIServices", APISERVICE_COLUMNS)
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
    return Check(frame(failed, READYZ_COLUMNS), findings)


def readyz(cluster: kube.Cluster) -> Check:
    """:func:`check_readyz` on this cluster (a server without /readyz gives a note)."""
    status, text = kube.get_text(cluster, "/readyz", [("verbose", "true")])
    if status == 404:
        return Check(frame([], READYZ_COLUMNS), [], note="not served by this cluster")
    if status in (401, 403):
        return not_served("/readyz", READYZ_COLUMNS, Forbidden(f"GET /readyz: HTTP {status}"))
    return check_readyz(status, text)
