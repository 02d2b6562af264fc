"""Findings re-evaluated after a verified change: a fix must not be reported as still broken.

A runbook records what it found *before* it changed anything; after an
approved plan was applied and verified, the findings that describe the
**current state** of an object the change touched (a certificate that expires,
a Certificate whose renewal is overdue, a namespace that does not exist yet)
are checked again:

* the problem is gone: the finding is recorded again under the same id with
  severity ``ok``, titled "resolved by plan ID: …", the old severity and
  evidence kept in its evidence, so it no longer counts at its old severity
  (the last record of an id is the one summary.json and the exit code see);
* the problem is still there: the fresh finding replaces the old one (its
  severity may have changed);
* a new problem on a touched object is recorded too.

Findings about **history** (an anomaly that happened, an alert that fired, a
failed rollout) are never passed here: they stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterable

from runbooks.model import Finding


def resolved(finding: Finding, plan_id: str) -> Finding:
    """``finding`` as resolved by the plan ``plan_id`` (severity ok, its old state in the evidence)."""
    return Finding(
        id=finding.id, severity="ok", title=f"resolved by plan {plan_id}: {finding.title}",
        detail=f"Was {finding.severity} before the change; checked again after plan {plan_id} was applied "
               "and verified: the problem is gone.",
        resource=finding.resource,
        evidence={"resolved_by_plan": plan_id, "was": finding.severity, "before": finding.evidence},
    )


def reevaluate(before: Iterable[Finding], after: Iterable[Finding], touched: Iterable[str],
               plan_id: str) -> list[Finding]:
    """The current-state findings about ``touched`` resources, as they are after the change.

    Args:
        before: the findings recorded before the change (any; only those whose
            ``resource`` is in ``touched`` and that are not ``ok`` are re-evaluated).
        after: the same checks run again now (any; only touched resources count).
        touched: resources (``Kind/namespace/name``) a verified change touched.
        plan_id: the applied plan, named in the resolved findings.

    Returns:
        The findings to record again: resolved ones, persisting ones as they are
        now, and new problems of the touched resources; nothing else.
    """
    touched = set(touched)
    now = {f.id: f for f in after if f.resource in touched}
    out: list[Finding] = []
    for f in before:
        if f.resource not in touched or f.severity == "ok":
            continue
        out.append(now.pop(f.id) if f.id in now else resolved(f, plan_id))
    out.extend(f for f in now.values() if f.severity != "ok")
    return out
