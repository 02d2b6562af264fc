"""Plans of a release: install or upgrade, and roll back to the last good revision.

They reuse :mod:`runbooks.plans` (:class:`~runbooks.plans.Change`, :class:`~runbooks.plans.Plan`
and its id, bound to the run) with the changes of :mod:`runbooks.deploy.diff`; what a plan was
computed from is kept for people (:func:`plan_table`, :func:`plan_detail`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .. import kube
from ..errors import NotFound, PlanInvalid
from ..helm import Helm, HelmFailed, parse_manifest
from ..model import record
from ..plans import Change, Plan
from ..vault import NO_SECRETS, VaultValues
from .diff import (
    ROLLBACK_HOOK_EVENTS,
    as_helm_applies,
    content_digest,
    hook_and_crd_changes,
    object_changes,
)
from .release import ReleaseSpec
from .rollout import rollout_status


def _revision(history: list[dict[str, Any]]) -> int:
    return int(history[-1]["revision"]) if history else 0



@dataclass
class PlanDetail:
    """What a plan was computed from, for people (never secret values)."""

    release: str
    namespace: str
    revision: int
    status: str
    objects: pd.DataFrame
    validation: list[str] = field(default_factory=list)
    target_revision: int | None = None


_DETAILS: dict[str, PlanDetail] = {}


def namespace_exists(cluster: Any, name: str) -> bool:
    try:
        kube.request(cluster, "GET", f"/api/v1/namespaces/{name}")
        return True
    except NotFound:
        return False


def release_changes(cluster: Any, helm: Helm, spec: ReleaseSpec,
                    secrets: VaultValues = NO_SECRETS) -> list[Change]:
    """Plan builder (``builder(cluster, **kwargs)``): the changes ``helm upgrade --install`` would make.

    Validates with ``helm upgrade --install --dry-run=server`` (chart, values
    schema, release state, the cluster's API versions) and a server-side
    apply dry run of every object.
    """
    history = helm.history(spec.release, spec.namespace)
    ns_ok = namespace_exists(cluster, spec.namespace)
    if not ns_ok and not spec.create_namespace:
        raise PlanInvalid(f"namespace {spec.namespace!r} does not exist and create_namespace is False")
    args = ["upgrade", "--install", *spec.chart_args(), "--dry-run=server", "-o", "json"]
    if spec.create_namespace:
        args.append("--create-namespace")
    try:
        proc = helm.run(*args, stdin=spec.values_document(secrets), parse=True)
    except HelmFailed as exc:
        raise PlanInvalid(f"helm upgrade --dry-run=server refused the release: {exc}") from exc
    release = json.loads(proc.stdout)
    desired = [as_helm_applies(o, spec.release, spec.namespace)
               for o in parse_manifest(release.get("manifest") or "", spec.namespace)]
    current = parse_manifest(helm.manifest(spec.release, spec.namespace), spec.namespace) if history else []
    precondition = {"release": spec.release, "revision": _revision(history)}
    changes, rows = object_changes(cluster, desired, current, precondition, namespace_exists=ns_ok)
    extra, extra_rows = hook_and_crd_changes(cluster, release, spec, installing=not history,
                                             precondition=precondition)
    changes, rows = extra["crds"] + changes + extra["hooks"], extra_rows["crds"] + rows + extra_rows["hooks"]
    if not ns_ok:
        changes.insert(0, Change(operation="create", kind="Namespace", name=spec.namespace,
                                    body={"sha256": content_digest(spec.namespace)}, precondition=precondition))
        rows.insert(0, {"kind": "Namespace", "namespace": "", "name": spec.namespace, "action": "create",
                        "changes": "helm --create-namespace"})
    validation = [f"helm upgrade --install --dry-run=server: {len(desired)} object(s) rendered and accepted"]
    validation.append("server-side apply dry run (field manager helm): every object accepted"
                      if ns_ok else f"namespace {spec.namespace} does not exist yet: objects checked by "
                      "helm against the cluster's OpenAPI schema only")
    detail = PlanDetail(spec.release, spec.namespace, _revision(history),
                        history[-1]["status"] if history else "not installed",
                        pd.DataFrame(rows, columns=["kind", "namespace", "name", "action", "changes"]),
                        validation)
    _DETAILS[Plan(changes).digest] = detail
    return changes


def helm_identity(helm: Helm, spec: ReleaseSpec) -> dict[str, Any]:
    """Where Helm applies a plan: release, namespace and kube context (part of the plan id)."""
    return {"release": spec.release, "namespace": spec.namespace, "context": helm.context}


def plan_release(run: Any, helm: Helm, spec: ReleaseSpec, secrets: VaultValues = NO_SECRETS) -> Plan:
    """The validated plan of installing or upgrading the release, recorded for summary.json.

    Display it with ``report.show_plan(plan, run.approval_hint(plan))``
    and :func:`plan_table`.

    Raises:
        PlanInvalid: Helm or the server refused it; nothing was changed (exit 2).
    """
    plan = run.bind(Plan(release_changes(run.cluster, helm, spec, secrets), release_changes,
                         {"helm": helm, "spec": spec, "secrets": secrets}), helm=helm_identity(helm, spec))
    detail = _DETAILS.get(plan.digest)
    plan.validated = True
    plan.validation = list(detail.validation if detail else [])
    run.last_plan = plan
    record("plan", plan.public(applied=False))
    return plan


def plan_table(plan: Plan) -> pd.DataFrame:
    """Every object the plan looked at: create / change (which fields) / unchanged / delete."""
    detail = _DETAILS.get(plan.digest)
    if detail is None:
        return pd.DataFrame(columns=["kind", "namespace", "name", "action", "changes"])
    return detail.objects


def plan_detail(plan: Plan) -> PlanDetail | None:
    """Release, revision and validation behind a plan computed in this process."""
    return _DETAILS.get(plan.digest)


def last_good_revision(history: list[dict[str, Any]]) -> int | None:
    """The newest revision before the latest that deployed successfully (deployed/superseded)."""
    if len(history) < 2:
        return None
    for entry in reversed(history[:-1]):
        if entry.get("status") in ("deployed", "superseded"):
            return int(entry["revision"])
    return None


def rollback_changes(cluster: Any, helm: Helm, spec: ReleaseSpec, to: int) -> list[Change]:
    """Plan builder: the changes ``helm rollback RELEASE <to>`` would make (diff against that manifest),
    then the ``pre-rollback``/``post-rollback`` hooks of revision ``to``, which Helm runs with it."""
    history = helm.history(spec.release, spec.namespace)
    revision = helm.release(spec.release, spec.namespace, to)
    target = [as_helm_applies(o, spec.release, spec.namespace)
              for o in parse_manifest(revision.get("manifest") or "", spec.namespace)]
    current = parse_manifest(helm.manifest(spec.release, spec.namespace), spec.namespace)
    precondition = {"release": spec.release, "revision": _revision(history), "rollback_to": to}
    changes, rows = object_changes(cluster, target, current, precondition)
    hooks, hook_rows = hook_and_crd_changes(cluster, revision, spec, installing=False, precondition=precondition,
                                            events=ROLLBACK_HOOK_EVENTS)
    if changes:  # hooks run only with a rollback: no object to change, no rollback (plan_rollback)
        changes, rows = changes + hooks["hooks"], rows + hook_rows["hooks"]
    detail = PlanDetail(spec.release, spec.namespace, _revision(history), history[-1]["status"],
                        pd.DataFrame(rows, columns=["kind", "namespace", "name", "action", "changes"]),
                        [f"server-side apply dry run of revision {to}'s manifest: every object accepted"],
                        target_revision=to)
    _DETAILS[Plan(changes).digest] = detail
    return changes


def plan_rollback(run: Any, helm: Helm, spec: ReleaseSpec, *, force: bool = False) -> Plan | None:
    """The rollback plan when the release needs one: its latest revision failed or its rollout is stuck.

    With ``force`` a plan is made whenever a good earlier revision exists.
    Returns None when there is nothing to roll back to, no need, or the live
    objects are that revision's already.
    """
    history = helm.history(spec.release, spec.namespace)
    if not history:
        return None
    healthy = history[-1].get("status") == "deployed" and rollout_status(run.cluster, spec).get("complete")
    if healthy and not force:
        return None
    to = last_good_revision(history)
    if to is None:
        return None
    plan = run.bind(Plan(rollback_changes(run.cluster, helm, spec, to), rollback_changes,
                         {"helm": helm, "spec": spec, "to": to}), helm=helm_identity(helm, spec))
    if not plan.changes:
        return None  # the live objects are revision `to` already
    plan.validated = True
    plan.validation = list((_DETAILS.get(plan.digest) or PlanDetail("", "", 0, "", pd.DataFrame())).validation)
    return plan
