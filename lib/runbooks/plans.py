"""Plans: ordered, idempotent changes with an id bound to what they were planned against.

A mutating runbook builds a :class:`Plan` of :class:`Change` objects with a
builder function (for example :func:`rollout_restart`); :func:`dry_run`
validates every change on the server (``dryRun=All``) and :func:`apply` sends
them after recomputing the plan, backing up what it replaces and appending
each result to ``audit.jsonl``. *Whether* a plan may be applied (approval, the
context guard, the button) is decided by the caller, ``runbook.Run.apply``.

Changes to systems other than Kubernetes (Alertmanager silences, cert-manager
renewals) go through :class:`Target` objects registered with
:func:`register_target`. A target's ``send``/``current`` get the run (anything
with ``cluster``, ``params``, ``run_id`` and ``runbook``) so they can reach
their system.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from . import kube
from .errors import (
    ApplyConflict,
    ApplyFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PlanInvalid,
    RunbookError,
    cut,
)
from .model import iso, record, utcnow, who
from .secrets import REDACTED, redact_object

APPLY_TIME = "<apply time>"
"""Placeholder in a change body, replaced by the UTC time when it is sent.

Keeps the plan id stable between the dry run and the approved run for
changes whose value is "now" (a rollout restart's ``restartedAt``)."""

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

_CONTENT_TYPES = {"patch": "application/merge-patch+json", "create": "application/json"}
_METHODS = {"patch": "PATCH", "create": "POST", "delete": "DELETE"}


class Change(BaseModel):
    """One idempotent change of a plan.

    Args:
        operation: ``patch`` (JSON merge patch of ``body``), ``create`` (``body``
            is the object) or ``delete``.
        kind, namespace, name: the object (``kind`` from :data:`runbooks.kube.KINDS`).
        diff: what changes, for people: ``[{"path", "from", "to"}]``. Values of
            Secrets are replaced by :data:`~runbooks.secrets.REDACTED`.
        body: what is sent; may contain :data:`APPLY_TIME`. Never displayed.
        precondition: facts about the object the change was planned against
            (e.g. ``{"generation": 4}``); part of the plan id, so a plan
            computed against a changed object gets another id.
        resource_version: the object's ``metadata.resourceVersion`` when the plan
            was computed. Not part of the id (controllers bump it all the time), but
            every write of an approved plan carries the one its recomputation saw, so
            the API server refuses (409) a write to an object changed since.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: Literal["patch", "create", "delete"]
    kind: str
    namespace: str | None = None
    name: str
    diff: list[dict[str, Any]] = []
    body: dict[str, Any] | None = None
    precondition: dict[str, Any] = {}
    subresource: Literal["status", "scale"] | None = None
    target: str = "kubernetes"
    resource_version: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Change:
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not registered; registered: {', '.join(TARGETS)}")
        if self.target != "kubernetes":
            if self.operation != "delete" and self.body is None:
                raise ValueError(f"a {self.operation} change needs a body")
            return self
        if self.kind not in kube.KINDS:
            raise ValueError(f"kind {self.kind!r} is not supported; supported: {', '.join(kube.KINDS)}")
        if kube.KINDS[self.kind].namespaced and not self.namespace:
            raise ValueError(f"{self.kind} {self.name!r} needs a namespace")
        if self.operation != "delete" and self.body is None:
            raise ValueError(f"a {self.operation} change needs a body")
        return self

    @field_validator("diff")
    @classmethod
    def _no_secret_values(cls, diff: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        if info.data.get("kind") != "Secret":
            return diff
        return [
            {**d, "from": REDACTED, "to": REDACTED} if ("from" in d or "to" in d) else d
            for d in diff
        ]

    @property
    def resource(self) -> str:
        """``Kind/namespace/name`` (or ``Kind/name`` for cluster-scoped kinds)."""
        return "/".join(x for x in (self.kind, self.namespace, self.name) if x)

    def canonical(self) -> dict[str, Any]:
        """The stable form hashed into the plan id (keys sorted when serialised)."""
        extra = {k: v for k, v in (("subresource", self.subresource), ("target", self.target))
                 if v not in (None, "kubernetes")}
        return {
            **extra,
            "operation": self.operation,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "diff": self.diff,
            "body": self.body,
            "precondition": self.precondition,
        }

    def public(self) -> dict[str, Any]:
        """What summary.json, audit.jsonl and the report show (no body)."""
        extra = {k: v for k, v in (("subresource", self.subresource), ("target", self.target))
                 if v not in (None, "kubernetes")}
        return {
            **extra,
            "operation": self.operation,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "resource": self.resource,
            "diff": self.diff,
            "precondition": self.precondition,
            **({"resource_version": self.resource_version} if self.resource_version else {}),
        }


def resource_version(obj: Mapping[str, Any] | None) -> str | None:
    """``metadata.resourceVersion`` of an object a builder read (for :attr:`Change.resource_version`)."""
    return ((obj or {}).get("metadata") or {}).get("resourceVersion") or None


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Plan:
    """An ordered list of changes with a stable id, and the builder that made it.

    The id is the first 12 hex digits of the SHA-256 of the canonical JSON of
    the changes and of the plan's *binding*: the environment name, the
    identity of every system it changes (API server URL and cluster uid,
    Alertmanager's URL, Helm's release, namespace and context) and the
    parameters that change what applying does (``runbook.Run.bind`` sets it).
    The same changes planned against the same objects of the same cluster give
    the same id in any process; any difference, including another cluster
    started from the same scenario or another environment, gives another.
    An unbound plan's id is :attr:`digest`.
    """

    def __init__(
        self,
        changes: Iterable[Change],
        builder: Callable[..., Iterable[Change]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        binding: Mapping[str, Any] | None = None,
    ) -> None:
        self.changes: tuple[Change, ...] = tuple(changes)
        self.builder = builder
        self.kwargs = dict(kwargs or {})
        self.binding: dict[str, Any] = dict(binding or {})
        self.validated: bool = False
        self.validation: list[str] = []

    @property
    def digest(self) -> str:
        """Short hash of the canonical changes alone (what a builder keys its own details by)."""
        return _hash([c.canonical() for c in self.changes])

    @property
    def id(self) -> str:
        """Short hash of the canonical plan and its binding (the id an approval names)."""
        if not self.binding:
            return self.digest
        return _hash({"binding": self.binding, "changes": [c.canonical() for c in self.changes]})

    def __len__(self) -> int:
        return len(self.changes)

    def __repr__(self) -> str:
        return f"Plan(id={self.id!r}, changes={len(self.changes)})"

    def public(self, applied: bool = False) -> dict[str, Any]:
        """The plan section of summary.json."""
        return {
            "id": self.id,
            "binding": self.binding,
            "changes": [c.public() for c in self.changes],
            "validated": self.validated,
            "applied": applied,
        }

    def recompute(self, cluster: Any) -> Plan:
        """Build the plan again from the current state (same builder and arguments)."""
        if self.builder is None:
            raise PlanInvalid("this plan has no builder to recompute it with")
        fresh = build_plan(cluster, self.builder, self.kwargs)
        fresh.binding = dict(self.binding)  # the caller binds it again to what it sees now (Run.guard)
        return fresh


def build_plan(cluster: Any, builder: Callable[..., Iterable[Change]], kwargs: Mapping[str, Any]) -> Plan:
    try:
        changes = list(builder(cluster, **kwargs))
    except (InvalidInput, NotFound, ValueError) as exc:
        raise PlanInvalid(f"cannot plan {getattr(builder, '__name__', 'changes')}: {exc}") from exc
    return Plan(changes, builder, kwargs)


def path(change: Change, *, with_name: bool = True) -> str:
    """The API path a Kubernetes change is sent to (the collection for a create)."""
    kind = kube.KINDS[change.kind]
    if not with_name:
        return kind.path(change.namespace)
    return kind.path(change.namespace, change.name, change.subresource)


def materialize(value: Any, now: str) -> Any:
    if isinstance(value, dict):
        return {k: materialize(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v, now) for v in value]
    return now if value == APPLY_TIME else value


class Target(Protocol):
    """How the changes for one system are sent (a registry: :func:`register_target`).

    ``send`` applies a change, or validates it without applying when
    ``dry_run`` is true (the Kubernetes target uses the server's ``dryRun=All``);
    ``current`` returns the object as it is now, for the backup taken before
    applying (None when there is nothing to back up); ``identity`` says which
    system the changes go to (part of the plan id, see :class:`Plan`).
    """

    def send(self, run: Any, change: Change, *, dry_run: bool, now: str) -> Any: ...

    def current(self, run: Any, change: Change) -> Any: ...

    def identity(self, run: Any) -> dict[str, Any]: ...


class KubernetesTarget:
    """Changes sent to the API server: merge patches, creates and deletes, ``dryRun=All`` to validate."""

    def identity(self, run: Any) -> dict[str, Any]:
        return kube.identity(run.cluster)

    def body(self, change: Change, *, dry_run: bool, now: str) -> Any:
        """What is sent: the change's body at ``now``, carrying the resourceVersion it was planned on."""
        body = materialize(change.body, now) if change.body is not None else None
        if change.resource_version and not dry_run:  # optimistic concurrency: a 409 if it changed since
            if change.operation == "patch":
                body = {**(body or {}), "metadata": {**((body or {}).get("metadata") or {}),
                                                     "resourceVersion": change.resource_version}}
            elif change.operation == "delete":
                body = {"apiVersion": "v1", "kind": "DeleteOptions",
                        "preconditions": {"resourceVersion": change.resource_version}}
        return body

    def send(self, run: Any, change: Change, *, dry_run: bool, now: str) -> Any:
        body = self.body(change, dry_run=dry_run, now=now)
        return kube.request(
            run.cluster, _METHODS[change.operation], path(change, with_name=change.operation != "create"),
            query=[("dryRun", "All")] if dry_run else [], body=body,
            content_type=_CONTENT_TYPES.get(change.operation, "application/json"))

    def current(self, run: Any, change: Change) -> Any:
        if change.operation == "create":
            return None
        try:
            obj = kube.request(run.cluster, "GET", path(_main_resource(change)))
        except NotFound:
            return None
        return redact_object(obj)


def _main_resource(change: Change) -> Change:
    """The same change addressed to the main resource (backups read the whole object)."""
    return change.model_copy(update={"subresource": None}) if change.subresource else change


TARGETS: dict[str, Target] = {"kubernetes": KubernetesTarget()}


def register_target(name: str, target: Target) -> None:
    """Let plans change another system (e.g. ``alertmanager`` silences): ``Change(target=name)``."""
    TARGETS[name] = target


def rollout_restart(cluster: Any, namespace: str, name: str, kind: str = "Deployment") -> list[Change]:
    """Plan builder: restart a workload the way ``kubectl rollout restart`` does.

    Sets ``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]``
    to the apply time. The plan records the object's ``metadata.generation``,
    so an approval given before somebody else changed the workload (or before
    this restart already happened) no longer matches.

    Raises:
        NotFound: the workload does not exist.
    """
    if kind not in ("Deployment", "StatefulSet", "DaemonSet"):
        raise InvalidInput(f"kind {kind!r} cannot be restarted; allowed: Deployment, StatefulSet, DaemonSet")
    obj = kube.request(cluster, "GET", kube.KINDS[kind].path(namespace, name))
    template_meta = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    old = (template_meta.get("annotations") or {}).get(RESTARTED_AT)
    return [
        Change(
            operation="patch",
            kind=kind,
            namespace=namespace,
            name=name,
            diff=[{
                "path": f"spec.template.metadata.annotations[{RESTARTED_AT}]",
                "from": old,
                "to": APPLY_TIME,
            }],
            body={"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: APPLY_TIME}}}}},
            precondition={"generation": (obj.get("metadata") or {}).get("generation")},
            resource_version=resource_version(obj),
        )
    ]


# ---- what a change changes ------------------------------------------------------


def diff(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """Changed leaves from ``a`` to ``b``: ``[{"path", "from", "to"}]``, for people reading a plan.

    Lists of objects with a unique ``name`` are matched by name
    (``spec.containers[web].image``), so a reordering is no change and an
    inserted container is one; other lists are compared whole.
    """
    out: list[dict[str, Any]] = []
    _diff(a, b, path, out)
    return out


def _key(k: str) -> str:
    return f"[{k}]" if re.search(r"[./\[\]]", k) else f".{k}"


def _diff(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _diff(a.get(k), b.get(k), path + _key(k), out)
        return
    if isinstance(a, list) and isinstance(b, list) and a != b and _named(a) and _named(b):
        na, nb = {x["name"]: x for x in a}, {x["name"]: x for x in b}
        if [x["name"] for x in a if x["name"] in nb] == [x["name"] for x in b if x["name"] in na]:
            for name in list(na) + [n for n in nb if n not in na]:
                _diff(na.get(name), nb.get(name), f"{path}[{name}]", out)
            return
    if a != b:
        out.append({"path": path.lstrip("."), "from": a, "to": b})


def _named(items: list[Any]) -> bool:
    names = [x.get("name") for x in items if isinstance(x, dict)]
    return len(names) == len(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


# ---- validate and apply -----------------------------------------------------------


def dry_run(run: Any, plan: Plan) -> Plan:
    """Validate every change without applying it (the server's ``dryRun=All`` for Kubernetes).

    Raises:
        PlanInvalid: a change was rejected; nothing was changed.
    """
    now = iso(utcnow())
    for change in plan.changes:
        try:
            TARGETS[change.target].send(run, change, dry_run=True, now=now)
        except (InvalidInput, NotFound, Conflict) as exc:
            raise PlanInvalid(f"server-side dry run rejected {change.operation} {change.resource}: {exc}") from exc
        plan.validation.append(f"{change.operation} {change.resource}: dry run accepted")
    plan.validated = True
    return plan


class AuditLog:
    """``audit.jsonl`` and ``backups/`` of one run directory: what was changed, and what it replaced."""

    def __init__(self, run_dir: Path, *, runbook: str, run_id: str, cluster: Any = None) -> None:
        self.path = Path(run_dir) / "audit.jsonl"
        self.runbook, self.run_id, self.cluster = runbook, run_id, cluster

    def write(self, plan_id: str, change: Change, result: str, now: str) -> dict[str, Any]:
        """Append one line (time, who, context, run id, change, result) and record it for summary.json."""
        line = {
            "time": iso(utcnow()), "user": who(),
            "context": getattr(self.cluster, "context", None), "server": getattr(self.cluster, "server", None),
            "run_id": self.run_id, "runbook": self.runbook, "plan_id": plan_id,
            "change": materialize(change.public(), now), "result": result,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        record("change", line)
        return line

    def backup(self, change: Change, obj: Any) -> None:
        """Keep the object a change replaces (Secrets with their values replaced by digests)."""
        if obj is None:
            return
        folder = self.path.parent / "backups"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (change.resource.replace("/", "_") + ".json")
        target.write_text(json.dumps(redact_object(obj), indent=1, sort_keys=True))
        target.chmod(0o600)


def apply(run: Any, fresh: Plan, audit: AuditLog) -> list[dict[str, Any]]:
    """Back up, send and audit each change of a plan just recomputed, in order.

    The caller has decided the plan may be applied and recomputed it
    (``runbook.Run.guard``); the first refused change stops the apply (later
    changes are not sent). Kubernetes writes carry the resourceVersion the
    recomputed plan saw: an object changed since (a ``kubectl set image`` in
    between) is refused by the API server, never overwritten.

    Raises:
        ApplyConflict: an object changed after the plan was recomputed (HTTP 409;
            exit 2). Recorded in the audit log; later changes were not sent.
        ApplyFailed: the target refused a change (recorded in the audit log).
    """
    results = []
    for change in fresh.changes:
        with _interrupt_after() as interrupted:  # each change is sent and audited, or not sent
            results.append(_apply_one(run, fresh, change, audit, len(results)))
        if interrupted:
            raise KeyboardInterrupt(f"interrupted after {len(results)} of {len(fresh.changes)} change(s) of "
                                    f"plan {fresh.id}; audit.jsonl lists exactly those")
    record("plan", fresh.public(applied=True))
    return results


class _interrupt_after:
    """Hold SIGINT (an interrupted kernel, Ctrl-C) until the change being applied is sent and audited.

    A change cut off between its write and its audit line would be applied and unrecorded; held
    here, the interrupt stops the apply right after it instead (the context is truthy then).
    """

    def __init__(self) -> None:
        self.hit = False
        self.previous: Any = None

    def __bool__(self) -> bool:
        return self.hit

    def __enter__(self) -> _interrupt_after:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _apply_one(run: Any, fresh: Plan, change: Change, audit: AuditLog, earlier: int) -> dict[str, Any]:
    """Back up, send and audit one change (``earlier``: how many of the plan were applied before it)."""
    audit.backup(change, TARGETS[change.target].current(run, change))
    now = iso(utcnow())
    try:
        TARGETS[change.target].send(run, change, dry_run=False, now=now)
    except Conflict as exc:
        audit.write(fresh.id, change, f"conflict: {cut(str(exc))}", now)
        done = f"; {earlier} earlier change(s) were applied (audit.jsonl)" if earlier else ""
        raise ApplyConflict(
            f"{change.operation} {change.resource} was refused: the object changed after the plan was "
            f"recomputed ({exc}). It and the changes after it were not applied{done}; review a new "
            "dry run and approve its id") from exc
    except RunbookError as exc:
        audit.write(fresh.id, change, f"failed: {cut(str(exc))}", now)
        raise ApplyFailed(f"{change.operation} {change.resource} failed: {exc}") from exc
    return audit.write(fresh.id, change, "applied", now)
