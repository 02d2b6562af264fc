"""Certificate rotation's verification: proof that an applied rotation took, and the re-check of its findings.

:mod:`runbooks.rotation` plans and applies; after ``run.apply(plan)`` the notebook calls
:func:`verify_rotation` (the new certificate stored and served, the restarted workloads rolled
out; :func:`fail_unless_verified` fails the run otherwise) and :func:`recheck`, which evaluates
the inventory's findings about each verified rotation again, so that a renewed certificate is
reported as resolved by the plan instead of still expiring.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from . import kube, resolution
from .certinventory import Inventory
from .certs import Served, probe_served
from .errors import RunbookError
from .model import Finding
from .plans import Plan
from .rotationtargets import inventory, phase_of

__all__ = ["VerificationFailed", "fail_unless_verified", "recheck", "touched_resources", "verify_rotation"]


class VerificationFailed(RunbookError):
    """The rotation was applied but did not take (see the verification findings)."""


def _rollout_done(cluster: kube.Cluster, kind: str, ns: str, name: str) -> bool:
    resource = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}[kind]
    obj = kube.get_object(cluster, resource, ns, name)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if status.get("observedGeneration", 0) < (obj["metadata"].get("generation") or 0):
        return False
    if kind == "DaemonSet":
        return status.get("updatedNumberScheduled", 0) >= status.get("desiredNumberScheduled", 0) \
            and status.get("numberAvailable", 0) >= status.get("desiredNumberScheduled", 0)
    want = spec.get("replicas", 1)
    return status.get("updatedReplicas", 0) >= want and status.get("availableReplicas", 0) >= want \
        and status.get("replicas", 0) <= want


def verify_rotation(cluster: kube.Cluster, applied: list[dict], plan: Plan, before: Inventory, *,
                    ingress_endpoint: str = "", timeout: float = 120.0, poll: float = 1.0,
                    probe_timeout: float = 5.0) -> list[Finding]:
    """Prove an applied rotation took: new certificate stored and served, workloads restarted.

    ``applied`` is what ``run.apply(plan)`` returned (empty: nothing was
    applied, nothing to verify). One finding per rotated Secret
    (``rotation-verified/…`` ok, or ``rotation-failed/…`` critical naming what
    did not happen) and one per restarted workload (``restart-done``, or
    ``restart-incomplete`` critical). Waits up to ``timeout`` seconds for the
    rollouts to finish and the ingress to serve the new certificates.
    """
    if not applied:
        return []
    secrets = _rotated_secrets(plan, before)
    restarts = [(c.kind, c.namespace or "", c.name) for c in plan.changes if phase_of(c) == "restart"]
    now_inv, not_served, pending_rollouts = _wait_until_verified(
        cluster, secrets, restarts, ingress_endpoint=ingress_endpoint, deadline=time.monotonic() + timeout,
        poll=poll, probe_timeout=probe_timeout)
    findings = [_secret_finding(target, how, before, now_inv, target in not_served)
                for target, how in sorted(secrets.items())]
    for kind, ns, name in restarts:
        if (kind, ns, name) in pending_rollouts:
            findings.append(Finding(id=f"restart-incomplete/{ns}/{name}", severity="critical",
                                       title=f"{kind} {ns}/{name}: the restart did not finish within {timeout:.0f} s",
                                       resource=f"{kind}/{ns}/{name}"))
        else:
            findings.append(Finding(id=f"restart-done/{ns}/{name}", severity="ok",
                                       title=f"{kind} {ns}/{name} restarted: all its pods are new and available",
                                       resource=f"{kind}/{ns}/{name}"))
    return findings


def _rotated_secrets(plan: Plan, before: Inventory) -> dict[str, str]:
    """Target Secret → what the plan did to it: renewed, replaced, restored, or reloaded (by a restart)."""
    secrets: dict[str, str] = {}
    for c in plan.changes:
        phase = phase_of(c)
        if phase == "renew":
            cert = before.certificates.get((c.namespace or "", c.name))
            if cert is not None:
                secrets[f"{c.namespace}/{cert.secret_name}"] = "renewed"
        elif phase == "replace":
            secrets[f"{c.namespace}/{c.name}"] = "restored" if plan.kwargs.get("rollback_backup") else "replaced"
    if any(phase_of(c) == "restart" for c in plan.changes):
        # Secrets whose only problem was served ≠ stored: the restart reloads them
        for target in plan.kwargs.get("targets") or []:
            if target not in secrets and before.served_mismatch(*target.split("/", 1)):
                secrets[target] = "reloaded"
    return secrets


def _wait_until_verified(cluster: kube.Cluster, secrets: Mapping[str, str], restarts: list[tuple[str, str, str]], *,
                         ingress_endpoint: str, deadline: float, poll: float, probe_timeout: float,
                         ) -> tuple[Inventory, set[str], list[tuple[str, str, str]]]:
    """Poll until the rollouts are done and the ingress serves every Secret's stored certificate, or the
    deadline; returns the last inventory, the Secrets not served, and the rollouts still pending."""
    now_inv = Inventory(now=datetime.now(UTC))
    not_served: set[str] = set()
    while True:
        pending_rollouts = [r for r in restarts if not _rollout_done(cluster, *r)]
        if secrets:
            now_inv = inventory(cluster, sorted({t.split("/", 1)[0] for t in secrets}))
            hosts = [h for t in secrets for h in now_inv.hosts_of(*t.split("/", 1))]
            now_inv.served = probe_served(hosts, ingress_endpoint, timeout=probe_timeout)
            now_inv.probed = True
            not_served = {t for t in secrets if now_inv.served_mismatch(*t.split("/", 1))
                          or any(now_inv.served.get(h, Served(h, error="not probed")).error
                                 for h in now_inv.hosts_of(*t.split("/", 1)))}
        if (not pending_rollouts and not not_served) or time.monotonic() > deadline:
            return now_inv, not_served, pending_rollouts
        time.sleep(poll)


def _secret_finding(target: str, how: str, before: Inventory, now_inv: Inventory, not_served: bool) -> Finding:
    """``rotation-verified/…`` (ok) or ``rotation-failed/…`` (critical, naming what did not happen)."""
    ns, name = target.split("/", 1)
    old, new = before.secrets.get((ns, name)), now_inv.secrets.get((ns, name))
    problems = []
    if new is None or new.leaf is None:
        problems.append("the Secret has no readable certificate")
    elif how != "reloaded" and old is not None and old.leaf is not None:
        if new.sha256 == old.sha256:
            problems.append("the Secret still holds the certificate it had before")
        elif how != "restored" and new.leaf.not_after <= old.leaf.not_after:
            problems.append(f"the new certificate does not expire later ({new.leaf.not_after:%Y-%m-%d})")
    if not_served:
        mismatch = now_inv.served_mismatch(ns, name)
        errors = [now_inv.served[h].error for h in now_inv.hosts_of(ns, name)
                  if h in now_inv.served and now_inv.served[h].error]
        problems.append(f"{', '.join(sorted(mismatch))} still serve(s) another certificate" if mismatch
                        else f"the served certificate could not be read: {errors[0] if errors else '?'}")
    evidence = {"before_sha256": old.sha256 if old else "", "after_sha256": new.sha256 if new else "",
                "before_not_after": old.leaf.not_after.isoformat() if old and old.leaf else None,
                "after_not_after": new.leaf.not_after.isoformat() if new and new.leaf else None,
                "hosts": now_inv.hosts_of(ns, name)}
    if problems:
        return Finding(id=f"rotation-failed/{ns}/{name}", severity="critical",
                       title=f"{target} was {how} but the rotation did not take",
                       detail="; ".join(problems) + ".", resource=f"Secret/{ns}/{name}", evidence=evidence)
    hosts_text = ", ".join(now_inv.hosts_of(ns, name)) or "no Ingress host"
    until = f" until {new.leaf.not_after:%Y-%m-%d}" if new and new.leaf else ""
    return Finding(id=f"rotation-verified/{ns}/{name}", severity="ok",
                   title=f"{target} {how}: certificate{until} stored and served on {hosts_text}",
                   resource=f"Secret/{ns}/{name}", evidence=evidence)


def fail_unless_verified(findings: Iterable[Finding]) -> None:
    """Raise :class:`VerificationFailed` if any verification finding is critical."""
    bad = [f for f in findings if f.severity == "critical"]
    if bad:
        raise VerificationFailed("verification failed: " + "; ".join(f"{f.title} ({f.detail})" if f.detail
                                                                    else f.title for f in bad))


def touched_resources(before: Inventory, target: str) -> set[str]:
    """The objects whose state a rotation of Secret ``namespace/name`` changed (for :func:`recheck`)."""
    ns, name = target.split("/", 1)
    out = {f"Secret/{ns}/{name}"}
    out |= {f"Certificate/{ns}/{c.name}" for c in before.certificates.values()
            if c.namespace == ns and c.secret_name == name}
    out |= {f"Ingress/{ns}/{t.ingress}" for t in before.ingresses if (t.namespace, t.secret) == (ns, name)}
    return out


def recheck(cluster: kube.Cluster, plan: Plan, verified: Iterable[Finding], before: Inventory,
            findings: Iterable[Finding], *, ingress_endpoint: str = "", probe_timeout: float = 5.0,
            warning_days: int = 30, critical_days: int = 7,
            internal_domains: Iterable[str] = (".local", ".internal", ".svc", ".cluster.local")) -> list[Finding]:
    """The inventory's findings about each rotation that verified, evaluated again now.

    ``findings`` are those the inventory reported before the change. For every
    Secret with a ``rotation-verified`` finding, the Secret, its Certificate and
    its Ingresses are inventoried and probed again (after a verified restart of the
    ingress controller, also every Secret it served stale): a problem that is gone comes
    back as ``ok`` "resolved by plan ID", one that persists as it is now
    (:func:`runbooks.resolution.reevaluate`). Rotations that failed verification
    are not re-checked (their findings stand, and the run fails anyway).
    """
    verified, findings = list(verified), list(findings)
    done = {f.id.split("/", 1)[1] for f in verified if f.id.startswith("rotation-verified/")}
    controller = str(plan.kwargs.get("ingress_controller") or "")
    if controller and f"restart-done/{controller}" in {f.id for f in verified}:
        # the ingress controller reloaded every certificate: what it served before is stale for all hosts
        done |= {f.id.split("/", 1)[1] for f in findings if f.id.startswith("tls-served-mismatch/")}
    done = sorted(done)
    if not done:
        return []
    touched: set[str] = set()
    for target in done:
        touched |= touched_resources(before, target)
    now_inv = inventory(cluster, sorted({t.split("/", 1)[0] for t in done}))
    hosts = [h for t in done for h in now_inv.hosts_of(*t.split("/", 1))]
    now_inv.served = probe_served(hosts, ingress_endpoint, timeout=probe_timeout)
    now_inv.probed = bool(hosts)
    after = now_inv.findings(warning_days=warning_days, critical_days=critical_days,
                             internal_domains=internal_domains)
    return resolution.reevaluate(findings, after, touched, plan.id)
