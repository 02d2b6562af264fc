"""What a runbook notebook calls: start, findings, plan and apply, summary.

This module is the notebook side of the execution contract in DESIGN.md: every
runbook gets validation, the context guard, records for ``summary.json`` and
the approval flow by calling the same few functions, whether it runs in
JupyterLab, under ``runbooks run`` or under a plain ``papermill`` command.

A notebook uses it like this::

    import runbooks.runbook as rb
    run = rb.start("cluster-health", globals())   # validate, connect, context guard
    run.record(findings)                          # list[Finding] from a lib/ call
    plan = run.plan(plans.rollout_restart, namespace="shop", name="web")
    run.apply(plan)                               # only with approval
    run.summary()                                 # findings table

Parameters are validated with the runbook's model (:mod:`runbooks.parameters`),
findings and records are :mod:`runbooks.model`'s, plans and their application
:mod:`runbooks.plans`'. What is decided here is *whether* a plan is applied:
only with approval (the ``approve_plan`` parameter headless, set by ``runbooks
run --approve``; a button naming the plan id interactively), only under the
environment's ``expected_context`` guard, and only when the recomputed plan
still has the approved id (:class:`~runbooks.errors.PlanMismatch`, exit code 2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import onboarding, plans, report, widgets
from .environments import ENV_VARIABLE, Project, explicit_values, merge, new_run_dir
from .errors import (
    SOURCE_ERRORS,
    ApprovalRefused,
    InvalidInput,
    PlanInvalid,
    PlanMismatch,
    PreflightFailed,
    RunbookError,
    cut,
)
from .kube import check_context, preflight
from .model import Finding, headless, iso, record, shell, utcnow
from .parameters import ParamsBase, params_model, validate_params
from .plans import Change, Plan

__all__ = ["Run", "check_context", "preflight", "start"]


class Run:
    """A runbook's execution as seen from inside the notebook.

    Created by :func:`start`. Attributes: ``runbook``, ``params`` (the
    validated model), ``cluster`` (a ``runbooks.kube.Cluster`` or ``None``),
    ``run_id``, ``findings`` (id → :class:`Finding`), ``sources``.
    """

    def __init__(self, runbook: str, params: ParamsBase, cluster: Any = None, *,
                 env: str | None = None, project: Project | None = None) -> None:
        self.runbook = runbook
        self.params = params
        self.cluster = cluster
        # the environment: given, a parameter, or $RUNBOOKS_ENV (`runbooks run` sets it in the kernel)
        self.env = env or getattr(params, "env", None) or os.environ.get("RUNBOOKS_ENV") or None
        self.project = project
        self.started = utcnow()
        run_dir = getattr(params, "run_dir", None)
        self.run_dir: Path | None = Path(run_dir) if run_dir else None
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        self.run_id = self.run_dir.name if self.run_dir else (
            stamp if self.env and project is not None else "interactive-" + stamp)
        self.findings: dict[str, Finding] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.last_plan: Plan | None = None
        self.applied: dict[str, list[dict[str, Any]]] = {}

    # -- findings and sources ------------------------------------------------

    def finding(
        self,
        id: str,
        severity: str,
        title: str,
        detail: str = "",
        resource: str | None = None,
        evidence: Any = None,
    ) -> Finding:
        """Create and record one finding (same id again: the last one wins)."""
        try:
            f = Finding(
                id=id, severity=severity, title=title, detail=detail, resource=resource,
                evidence=evidence,
            )
        except ValidationError as exc:
            raise InvalidInput(f"finding {id!r}: {exc.errors()[0]['msg']}") from exc
        self.record(f)
        return f

    def record(self, findings: Finding | Iterable[Finding]) -> list[Finding]:
        """Record findings built elsewhere (e.g. returned by a lib/ function)."""
        items = [findings] if isinstance(findings, Finding) else list(findings)
        for f in items:
            if not isinstance(f, Finding):
                raise InvalidInput(f"run.record() takes Finding objects, not {type(f).__name__}")
            self.findings[f.id] = f
            record("finding", f.to_json())
        return items

    def source(self, name: str, ok: bool, detail: str = "") -> None:
        """Record the state of a data source (``ok`` or ``down``) for summary.json."""
        state = {"name": name, "state": "ok" if ok else "down", "detail": cut(detail)}
        self.sources[name] = state
        record("source", state)

    def check_source(self, name: str, probe: Callable[[], Any]) -> bool:
        """Probe a data source; if it is down, record that and a warning, and go on.

        A data source that is down must not crash an investigation: its
        section says so, a warning finding records it, the report renders.

        Returns:
            True when ``probe()`` returned, False when it raised.
        """
        try:
            result = probe()
        except SOURCE_ERRORS as exc:  # connection, HTTP, credentials; a bug fails the run
            self.source(name, False, f"{type(exc).__name__}: {exc}")
            self.finding(
                f"data-source-down/{name}",
                "warning",
                f"{name} is unavailable: its checks were skipped",
                detail=cut(str(exc)),
                resource=name,
            )
            return False
        self.source(name, True, "" if result is None else cut(str(result)))
        return True

    def window(self, start: Any, end: Any) -> None:
        """Record the time window the runbook looked at (shown in the report header)."""
        record("window", {"start": str(start), "end": str(end)})

    # -- plan and apply ------------------------------------------------------

    def _require_cluster(self) -> Any:
        if self.cluster is None:
            raise PlanInvalid("no Kubernetes connection: start() with kubeconfig parameters first")
        return self.cluster

    def binding(self, plan: Plan, **extra: Any) -> dict[str, Any]:
        """What a plan's id is bound to besides its changes (see :class:`~runbooks.plans.Plan`).

        The environment name, the identity of each system the plan changes (the
        target's ``identity``: API server URL, context and cluster uid; Alertmanager's
        URL ...), the values of the model's ``APPLY_PARAMETERS``, and ``extra``
        (e.g. Helm's release, namespace and context).
        """
        identities = {}
        for name in sorted({c.target for c in plan.changes}):
            identity = getattr(plans.TARGETS.get(name), "identity", None)
            if identity is not None:
                identities[name] = identity(self)
        names = getattr(type(self.params), "APPLY_PARAMETERS", ())
        return {
            "env": self.env or "",
            "targets": identities,
            "parameters": {k: getattr(self.params, k, None) for k in names},
            **extra,
        }

    def bind(self, plan: Plan, **extra: Any) -> Plan:
        """Bind ``plan``'s id to this run's environment, targets and parameters (returns ``plan``)."""
        plan.binding = self.binding(plan, **extra)
        return plan

    def plan(self, builder: Callable[..., Iterable[Change]], /, **kwargs: Any) -> Plan:
        """Compute a plan with ``builder(cluster, **kwargs)``, dry-run it on the server, show it.

        The plan's id is bound to this run (:meth:`bind`): the same changes on another
        cluster or in another environment get another id.

        Raises:
            PlanInvalid: the builder refused (e.g. the object does not exist)
                or the server's dry run rejected a change. Nothing was changed.
        """
        plan = plans.dry_run(self, self.bind(plans.build_plan(self._require_cluster(), builder, kwargs)))
        self.last_plan = plan
        record("plan", plan.public(applied=False))
        report.show_plan(plan, self.approval_hint(plan))
        return plan

    def approval_hint(self, plan: Plan, what: str = "this plan") -> str:
        """The line under a plan: nothing to do, the approved id, or how to approve it."""
        if not plan.changes:
            return "Nothing to change."
        if getattr(self.params, "approve_plan", None) == plan.id:
            return f"Approved plan id: {plan.id}."
        command = f"runbooks run {self.runbook} --env {self.env or 'ENV'} --approve {plan.id}"
        if self.resumes(plan):
            return (f"Resuming approved plan {self.params.approve_plan}: its {len(plan.changes)} change(s) left "
                    f"after an interrupted apply (plan id {plan.id}).")
        if self._offers(plan):
            return f"Dry run: nothing was changed. To apply {what}, click the button below, or headless: {command}"
        return f"Dry run: nothing was changed. To apply {what} headless: {command}"

    def _offers(self, plan: Plan) -> bool:
        return bool(plan.changes and not getattr(self.params, "approve_plan", None)
                    and getattr(self.params, "dry_run", True) and not headless())

    def check_approval(self, *candidates: Plan | None) -> None:
        """Refuse an approval that names none of the plans computed now (exit 2, nothing applied).

        Raises:
            PlanMismatch: ``approve_plan`` is set and is none of these plans' ids.
        """
        approve = getattr(self.params, "approve_plan", None)
        ids = [p.id for p in candidates if p is not None]
        if any(self.resumes(p) for p in candidates if p is not None):
            return
        if approve and approve not in ids:
            raise PlanMismatch(
                f"approved plan {approve} does not match the plan(s) computed now ({', '.join(ids) or 'none'}): "
                "the cluster or the parameters changed since it was approved. Nothing was applied; review "
                "the new plan and approve its id")

    def approved(self, plan: Plan) -> bool:
        """Whether this run was started with ``--approve`` naming this plan, or the interrupted
        apply of an approved plan that this plan finishes (:meth:`resumes`)."""
        if not plan.changes:
            return False
        return getattr(self.params, "approve_plan", None) == plan.id or self.resumes(plan)

    def resumes(self, plan: Plan) -> bool:
        """Whether ``plan`` is what is left of the approved plan after an interrupted apply.

        An earlier run of this runbook in this environment (a sibling run directory) applied part
        of the approved plan and stopped (interrupted, a conflict, a failure). Re-running it with the
        same ``--approve`` finishes the job: allowed when this plan, bound to the same environment and
        targets, is exactly the approved plan's changes that its audit does not list as applied.
        """
        approve, run_dir = getattr(self.params, "approve_plan", None), getattr(self.params, "run_dir", None)
        if not approve or not run_dir or not plan.changes or approve == plan.id:
            return False
        import json

        def key(change: Mapping[str, Any]) -> tuple:
            return (change.get("operation"), change.get("resource"),
                    json.dumps(change.get("diff"), sort_keys=True), json.dumps(change.get("precondition"), sort_keys=True))

        wanted = [key(c) for c in plan.public()["changes"]]
        for path in sorted(Path(run_dir).parent.glob("*/summary.json")):
            try:
                earlier = (json.loads(path.read_text(encoding="utf-8")).get("plan") or {})
            except (OSError, ValueError):
                continue
            if earlier.get("id") != approve or earlier.get("binding") != plan.binding:
                continue
            applied = {(c.get("change") or {}).get("resource") for c in earlier.get("applied_changes") or []
                       if c.get("result") == "applied"}
            if not applied:
                continue
            left = [key(c) for c in earlier.get("changes") or [] if c.get("resource") not in applied]
            if left == wanted:
                return True
        return False

    def offer(self, plan: Plan, apply: Callable[[], Any], label: str = "Apply plan") -> None:
        """Interactive dry runs only: a button naming the plan id that calls ``apply()`` once."""
        if self._offers(plan):
            widgets.approval_button(plan, apply, label)

    def guard(self, plan: Plan) -> Plan:
        """The last checks before anything is applied; returns the plan recomputed now.

        Raises:
            ApprovalRefused: the environment sets no ``expected_context``.
            PlanMismatch: the recomputed plan has another id. Nothing was applied.
        """
        if not getattr(self.params, "expected_context", None):
            where = (f"parameters/{self.env}/env.yaml" if self.env else
                     f"an environment: set the env parameter or ${ENV_VARIABLE}")
            raise ApprovalRefused(
                f"applying a plan needs expected_context ({where}) so that "
                "changes never reach a cluster by accident; nothing was applied")
        self._require_cluster()
        fresh = plan
        if plan.builder is not None:
            extra = {k: v for k, v in plan.binding.items() if k not in ("env", "targets", "parameters")}
            fresh = self.bind(plan.recompute(self.cluster), **extra)
        if fresh.id != plan.id:
            raise PlanMismatch(f"plan {plan.id} changed to {fresh.id} just before applying: nothing was applied")
        fresh.validated, fresh.validation = plan.validated, plan.validation
        return fresh

    def apply(self, plan: Plan) -> list[dict[str, Any]]:
        """Apply the plan if, and only if, it is approved; otherwise change nothing.

        Headless: applies when the ``approve_plan`` parameter equals the plan
        id (``runbooks run --approve ID``, which also sets ``dry_run=False``).
        Interactive (JupyterLab) with ``dry_run=True``: shows a button naming
        the plan id; clicking it applies.

        Raises:
            PlanMismatch: the approved id is not this plan's id (the cluster or
                the parameters changed since): nothing applied, exit code 2.
            ApprovalRefused: applying without ``expected_context`` set.
            ApplyFailed: the API server refused a change while applying.
        """
        self.check_approval(plan)
        if self.approved(plan):
            return self._apply(plan)
        if plan.changes and not getattr(self.params, "dry_run", True):
            print(f"dry_run=False but no plan was approved: nothing was changed. "
                  f"Approve this plan with --approve {plan.id}")
        self.offer(plan, lambda: f"{len(self._apply(plan))} change(s) applied")
        return []

    def audit_path(self) -> Path:
        """``audit.jsonl`` in the run directory (see :meth:`directory`)."""
        return self.audit_log().path

    def directory(self) -> Path:
        """The run directory, made on first use.

        Headless: the one ``runbooks run`` made. Interactive with an environment:
        ``outputs/<env>/<runbook>/<UTC timestamp>/`` like a headless run; without
        one ``outputs/interactive/<runbook>/<run id>/``.
        """
        if self.run_dir is None:
            if self.env and self.project is not None:
                self.run_dir = new_run_dir(self.project.outputs_dir, self.env, self.runbook, self.started)
                self.run_id = self.run_dir.name
            else:
                self.run_dir = (Path(os.environ.get("RUNBOOKS_HOME", ".")) / "outputs" / "interactive"
                                / self.runbook / self.run_id)
        return self.run_dir

    def audit_log(self) -> plans.AuditLog:
        base = self.directory()
        return plans.AuditLog(base, runbook=self.runbook, run_id=self.run_id, cluster=self.cluster)

    def output_path(self, name: str) -> Path:
        """A file in the run directory (made on first use), e.g. a CSV with every row of a long table."""
        base = self.directory()
        base.mkdir(parents=True, exist_ok=True)
        return base / name

    def _apply(self, plan: Plan) -> list[dict[str, Any]]:
        fresh = self.guard(plan)
        audit = self.audit_log()
        results = plans.apply(self, fresh, audit)
        self.applied[plan.id] = results
        print(f"Applied plan {plan.id}: {len(results)} change(s), audit in {audit.path}")
        return results

    def applied_results(self, plan: Plan | None) -> list[dict[str, Any]]:
        """What applying ``plan`` returned in this run (headless or from the button), else []."""
        return self.applied.get(plan.id, []) if plan is not None else []

    # -- summary ---------------------------------------------------------------

    def summary(self) -> None:
        """Show the findings table (worst first): the runbook's closing cell."""
        report.show_findings(list(self.findings.values()))


def start(runbook: str, namespace: Mapping[str, Any], *, connect: bool | None = None) -> Run:
    """Preflight: validate the parameters, connect, guard the context; record it all.

    Args:
        runbook: the notebook's name (``cluster-health``), which selects its
            registered parameter model.
        namespace: where the parameters are, normally ``globals()``: only the
            model's fields are read from it.
        connect: connect to Kubernetes (default: when the model has ``kubeconfig``).

    Raises:
        PreflightFailed: any parameter, connection or context problem, with
            the cause chained; the run stops before touching anything (exit 2).
    """
    model = params_model(runbook)
    fields = model.model_fields
    values = {k: namespace[k] for k in fields if k in namespace}
    env, project = None, None
    try:
        env, project, values = _environment(runbook, model, values)
        params = validate_params(model, values)
        cluster = None
        if connect if connect is not None else "kubeconfig" in fields:
            cluster = preflight(params)
    except RunbookError as exc:
        record("preflight", {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        where = f" in env {env}" if env else ""
        raise PreflightFailed(f"preflight of {runbook}{where}: {exc}") from exc
    run = Run(runbook, params, cluster, env=env, project=project)
    info = {"runbook": runbook, "run_id": run.run_id, "started": iso(run.started), "env": run.env}
    if cluster is not None:
        info.update(
            kube_context=getattr(cluster, "context", None),
            server=getattr(cluster, "server", None),
            expected_context=getattr(params, "expected_context", None),
        )
        run.source("kubernetes", True, f"context {info['kube_context']} at {info['server']}")
        unverified = getattr(cluster, "unverified_namespaces", None)
        if unverified:
            run.finding("namespaces-unverified", "warning",
                        f"namespaces {', '.join(unverified)} could not be checked (listing namespaces is forbidden)",
                        detail="the run goes on; a namespace that does not exist shows no objects")
    record("run", info)
    _record_errors()
    if cluster is not None:
        _check_access(run, runbook, params)
    record("preflight", {"ok": True})
    report.setup_notebook()
    if project is not None and "env" in namespace and not headless():
        widgets.env_picker(run.env, project.envs(), info.get("kube_context"), namespace)
    return run


def scope_of(params: Any) -> list[str]:
    """The namespaces a run is limited to (``namespaces``, else ``namespace``); empty: the cluster."""
    listed = [n for n in (getattr(params, "namespaces", None) or []) if isinstance(n, str) and n]
    if listed:
        return listed
    one = getattr(params, "namespace", None)
    return [one] if isinstance(one, str) and one else []


def _check_access(run: Run, runbook: str, params: Any) -> None:
    """Stop before any check when the identity lacks a permission the runbook declares.

    A scheduled run with a least-privilege ServiceAccount must not pass for healthy because a
    403 emptied a table: each missing permission (``onboarding.PERMISSIONS``, asked with
    ``SelfSubjectAccessReview`` s; the writes only when a plan is to be applied) is a critical
    finding ``forbidden: VERB RESOURCE in all namespaces`` (or ``in NAMESPACE`` for a run scoped
    to namespaces, see :func:`scope_of`) and the run stops with exit 2.
    Where the access reviews cannot be asked (no such API, or no answer) the run goes on, as
    before, with the data source ``access-review`` down.
    """
    needed = onboarding.reads(runbook)
    if not getattr(params, "dry_run", True):
        needed += onboarding.writes(runbook)
    if not needed:
        return
    try:
        missing = onboarding.denied(run.cluster, needed, scope_of(params))
    except SOURCE_ERRORS as exc:  # no access review API (404), or it did not answer
        run.source("access-review", False, f"permissions not checked: {type(exc).__name__}: {cut(str(exc))}")
        return
    if not missing:
        return
    for text in missing:
        run.finding(f"forbidden/{text.split(': ', 1)[1].replace(' ', '-')}", "critical", text,
                    detail=f"the identity of context {getattr(run.cluster, 'context', None)!r} may not do "
                           f"this; {runbook} needs it (grant it: charts/kube-runbooks, or check with "
                           f"`runbooks env check ENV`)")
    report.show_findings(list(run.findings.values()))
    record("preflight", {"ok": False, "error": "; ".join(missing)})
    raise PreflightFailed(f"preflight of {runbook}: " + "; ".join(missing))


def _environment(runbook: str, model: type[ParamsBase], values: dict[str, Any]
                 ) -> tuple[str | None, Project | None, dict[str, Any]]:
    """The environment of an interactive run and the parameters it gives, merged as headless.

    A run prepared by ``runbooks run`` (``run_dir`` set) has its parameters merged and
    validated already. A notebook that declares ``env`` uses it, else ``$RUNBOOKS_ENV``;
    ``parameters/<env>/env.yaml`` < ``parameters/<env>/<runbook>.yaml`` < the values
    changed in the notebook (:func:`runbooks.environments.merge`).
    """
    if values.get("run_dir") or "env" not in values:
        return values.get("env"), None, values
    env = values.get("env") or os.environ.get(ENV_VARIABLE) or None
    if not env:
        return None, None, values
    project = Project.discover(os.environ.get("RUNBOOKS_HOME") or None,
                               os.environ.get("RUNBOOKS_NOTEBOOKS") or None)
    merged = merge(project, runbook, env, list(values), model, overrides=explicit_values(model, values))
    return env, project, merged


def _record_errors() -> None:
    """Have the kernel record the exit code of an exception that ends a cell (``error`` record).

    ``runbooks run`` takes a run's exit code from that record, so an error
    class decides its own code (:attr:`RunbookError.exit_code`) and nobody
    matches class names. The traceback is shown as usual.
    """
    ip = shell()
    if ip is None:
        return

    def handler(self: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> Any:
        code = getattr(value, "exit_code", 3) if isinstance(value, RunbookError) else 3
        record("error", {"ename": etype.__name__, "exit_code": code, "message": cut(str(value))})
        self.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)
        return []

    ip.set_custom_exc((Exception,), handler)
