"""Applying an approved plan: ``helm upgrade --install`` or ``helm rollback``, watched, audited; the outcome as findings.

Applying a Helm release is not a list of API writes, so :func:`apply_release` and
:func:`apply_rollback` take the place of ``Run.apply``, with its approval rules (``Run.approved``,
``Run.offer``, ``Run.guard``) and its audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import cut
from ..helm import Helm, error_text
from ..model import Finding, iso, record, utcnow
from ..plans import Plan
from ..vault import NO_SECRETS, VaultValues
from .plan import plan_detail, plan_rollback
from .release import ReleaseSpec
from .rollout import rollout_status


@dataclass
class ApplyResult:
    """The outcome of a helm upgrade or rollback this runbook started."""

    applied: bool
    ok: bool
    action: str = ""
    revision: int | None = None
    status: str = ""
    message: str = ""
    seconds: float = 0.0
    rollout: dict[str, Any] = field(default_factory=dict)


NOT_APPLIED = ApplyResult(applied=False, ok=True)


def _audit(run: Any, plan: Plan, result: str) -> None:
    now = iso(utcnow())
    audit = run.audit_log()
    for change in plan.changes:
        audit.write(plan.id, change, result, now)


def apply_release(run: Any, plan: Plan, helm: Helm, spec: ReleaseSpec,
                  secrets: VaultValues = NO_SECRETS, *,
                  progress: Callable[[dict[str, Any]], None] | None = None) -> ApplyResult:
    """``helm upgrade --install --wait`` the release if, and only if, its plan is approved.

    The run's approval rules decide, as for any plan (``Run.approved``,
    ``Run.offer``'s button in an interactive dry run, ``Run.guard``: the
    ``expected_context`` guard and the recomputed id); only the applying is
    Helm's. Every change is audited with the result. Previous objects need no
    backup: the release history keeps every revision (``helm rollback``).

    Args:
        progress: called about every second during the rollout with :func:`rollout_status`.

    Returns:
        what happened; ``ok=False`` when the rollout failed (diagnose, then offer the rollback).
    """
    if run.approved(plan):
        return _upgrade(run, plan, helm, spec, secrets, progress)
    run.offer(plan, lambda: _upgrade(run, plan, helm, spec, secrets, progress))
    return NOT_APPLIED


def _upgrade(run: Any, plan: Plan, helm: Helm, spec: ReleaseSpec, secrets: VaultValues,
             progress: Callable[[dict[str, Any]], None] | None) -> ApplyResult:
    fresh = run.guard(plan)
    args = ["upgrade", "--install", *spec.chart_args(), "--wait=watcher", "--timeout", f"{spec.timeout}s",
            "--description", f"kube-runbooks {run.runbook} plan {plan.id}", "-o", "json"]
    if spec.create_namespace:
        args.append("--create-namespace")
    result = _watch(run, helm, spec, args, spec.values_document(secrets), progress, "upgrade")
    _audit(run, fresh, "applied" if result.ok else f"applied; rollout failed: {cut(result.message)}")
    record("plan", fresh.public(applied=True))
    return result


def _watch(run: Any, helm: Helm, spec: ReleaseSpec, args: list[str], stdin: bytes | None,
           progress: Callable[[dict[str, Any]], None] | None, action: str) -> ApplyResult:
    started = time.monotonic()
    snapshots: list[dict[str, Any]] = []

    def tick() -> None:
        snap = rollout_status(run.cluster, spec)
        snap["seconds"] = round(time.monotonic() - started, 1)
        snapshots.append(snap)
        if progress:
            progress(snap)

    proc = helm.run_watching(*args, stdin=stdin, timeout=spec.timeout + 60, tick=tick)
    seconds = round(time.monotonic() - started, 1)
    history = helm.history(spec.release, spec.namespace)
    last = history[-1] if history else {}
    final = rollout_status(run.cluster, spec)
    final["seconds"] = seconds
    if progress:
        progress(final)
    ok = proc.returncode == 0
    return ApplyResult(applied=True, ok=ok, action=action, revision=last.get("revision"),
                       status=last.get("status", ""), seconds=seconds, rollout=final,
                       message="" if ok else error_text(proc.stderr))


def apply_rollback(run: Any, plan: Plan | None, helm: Helm, spec: ReleaseSpec, *, auto: bool = False,
                   after: ApplyResult = NOT_APPLIED,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> ApplyResult:
    """``helm rollback`` to the plan's revision when the rollback plan is approved.

    Approved means ``approve_plan`` equals the rollback plan's id, or ``auto``
    (the ``auto_rollback`` parameter) when ``after``, the upgrade approved and
    applied in this run, failed its rollout. Same guards and audit as
    :func:`apply_release`.
    """
    if plan is None:
        return NOT_APPLIED
    automatic = auto and after.applied and not after.ok
    if not run.approved(plan) and not automatic:
        return NOT_APPLIED
    fresh = run.guard(plan)
    to = fresh.kwargs["to"]
    args = ["rollback", spec.release, str(to), "--namespace", spec.namespace, "--wait=watcher",
            "--timeout", f"{spec.timeout}s"]
    result = _watch(run, helm, spec, args, None, progress, f"rollback to {to}")
    _audit(run, fresh, "applied" if result.ok else f"rollback failed: {cut(result.message)}")
    record("plan", fresh.public(applied=True))
    return result


def rollback_after(run: Any, helm: Helm, spec: ReleaseSpec, result: ApplyResult,
                   before: Plan | None) -> Plan | None:
    """The rollback plan to offer now: computed again when this run's upgrade failed, none when it
    succeeded (the release is healthy at a new revision), else ``before``."""
    if result.applied:
        return plan_rollback(run, helm, spec, force=True) if not result.ok else None
    return before


def outcome_findings(run: Any, helm: Helm, spec: ReleaseSpec, result: ApplyResult, rolled: ApplyResult,
                     rollback: Plan | None, stuck: Sequence[Finding] = ()) -> list[Finding]:
    """Findings for what happened to the release in this run (the last record of an id wins).

    - ``rollout/…``: this run's upgrade completed (ok) or failed (critical, even if rolled back:
      the requested change did not happen);
    - ``rollback/…``: a rollback applied (ok / critical), or one is available (warning, with the
      command that approves it);
    - ``release-status/…``: the release's latest revision is failed or pending (critical);
    - ``stuck`` pods from :func:`diagnose`, kept critical unless a rollback then succeeded.
    """
    res = f"Release/{spec.namespace}/{spec.release}"
    out: list[Finding] = []
    if result.applied:
        if result.ok:
            out.append(Finding(id=f"rollout/{spec.namespace}/{spec.release}", severity="ok",
                                  title=f"release {spec.release} revision {result.revision} rolled out in "
                                  f"{result.seconds:.0f}s", resource=res, evidence=result.rollout))
        else:
            out.append(Finding(
                id=f"rollout/{spec.namespace}/{spec.release}", severity="critical",
                title=f"the rollout of release {spec.release} revision {result.revision} failed within "
                f"{spec.timeout}s", detail=result.message, resource=res, evidence=result.rollout))
    if rolled.applied:
        out.append(Finding(
            id=f"rollback/{spec.namespace}/{spec.release}", severity="ok" if rolled.ok else "critical",
            title=f"{rolled.action}: release {spec.release} is at revision {rolled.revision} "
            f"({rolled.status})" + ("" if rolled.ok else f": {rolled.message}"), resource=res,
            evidence=rolled.rollout))
    elif rollback is not None:
        detail = plan_detail(rollback)
        to = detail.target_revision if detail else rollback.kwargs.get("to")
        out.append(Finding(
            id=f"rollback/{spec.namespace}/{spec.release}", severity="warning",
            title=f"rollback plan {rollback.id} restores revision {to} of release {spec.release}",
            detail=f"approve it: runbooks run {run.runbook} --env ENV --approve {rollback.id} "
            "(or set auto_rollback=True before an approved upgrade)", resource=res,
            evidence={"plan_id": rollback.id, "rollback_to": to,
                      "changes": [c.public() for c in rollback.changes]}))
    history = helm.history(spec.release, spec.namespace)
    if history:
        last = history[-1]
        bad = last.get("status") not in ("deployed", "superseded")
        out.append(Finding(
            id=f"release-status/{spec.namespace}/{spec.release}", severity="critical" if bad else "ok",
            title=f"release {spec.release} revision {last.get('revision')} is {last.get('status')}",
            detail=cut(last.get("description", ""), 300), resource=res))
    recovered = rolled.applied and rolled.ok
    for f in stuck:
        if recovered:
            f = f.model_copy(update={"severity": "warning", "title": f.title + f" (before the {rolled.action})"})
        out.append(f)
    return out
