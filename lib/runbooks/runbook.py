"""What a runbook notebook calls: parameters, preflight, findings, plan and apply.

This module is the thin public surface that ties a notebook to the execution
contract in DESIGN.md, so that every runbook gets validation, the context
guard, ``summary.json`` and the approval flow by calling the same few
functions, whether it runs in JupyterLab, under ``runbooks run`` or under a
plain ``papermill`` command.

A notebook uses it like this::

    import runbooks.runbook as rb
    run = rb.start("cluster-health", globals())   # validate, connect, context guard
    run.record(findings)                          # list[rb.Finding] from a lib/ call
    plan = run.plan(rb.rollout_restart, namespace="shop", name="web")
    run.apply(plan)                               # only with approval
    run.summary()                                 # findings table

**Parameters.** Each runbook has a pydantic model (subclass of
:class:`RunbookParams`) registered under the notebook's name with
:func:`register`. ``runbooks run`` validates the merged parameters with it
*before* a kernel starts and :func:`start` validates them again inside the
notebook, so the two checks cannot disagree. Notebooks without a registered
model (test fixtures, drafts) get a model derived from their ``parameters``
cell (:func:`derive_model`). Models forbid unknown names; names that look
like credentials are refused (:func:`is_secret_name`).

**Recording (the one mechanism).** Everything destined for ``summary.json``
(the run's context, preflight, findings, data-source state, the plan and each
applied change) is *displayed* as a MIME bundle of type
``application/vnd.kube-runbooks.record+json`` (:data:`RECORD_MIME`) whose
payload is ``{"kind": ..., "data": {...}}``. The records therefore live in
the executed notebook itself: ``runbooks run``, ``runbooks report`` and
anybody holding a notebook executed by plain papermill read them back with
:func:`read_records`. Re-running a cell in JupyterLab replaces its outputs, so
the saved notebook never holds stale duplicates; when the same finding id,
data source or plan is recorded twice, the last record wins. The HTML report
strips these outputs.

**Changes.** A mutating runbook builds a :class:`Plan` of idempotent
:class:`Change` objects with a builder function (for example
:func:`rollout_restart`). The plan id is a short hash of the canonical plan.
:meth:`Run.plan` validates every change with a server-side dry run
(``dryRun=All``); :meth:`Run.apply` applies only with approval (the
``approve_plan`` parameter headless, set by ``runbooks run --approve``; a
button naming the plan id interactively), recomputes the plan first and
applies nothing when its id differs (:class:`PlanMismatch`, exit code 2).
Every applied change appends a line to ``audit.jsonl`` in the run directory.
"""

from __future__ import annotations

import ast
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from runbooks.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RunbookError,
    Unavailable,
    cut,
)

__all__ = [
    "APPLY_TIME",
    "RECORD_MIME",
    "SEVERITIES",
    "ApplyFailed",
    "ApprovalRefused",
    "Change",
    "ContextMismatch",
    "Finding",
    "MutatingParams",
    "Plan",
    "PlanInvalid",
    "PlanMismatch",
    "PreflightFailed",
    "Run",
    "RunbookParams",
    "check_context",
    "derive_model",
    "is_secret_name",
    "params_model",
    "preflight_kube",
    "read_records",
    "record",
    "register",
    "rollout_restart",
    "start",
    "validate_params",
]

RECORD_MIME = "application/vnd.kube-runbooks.record+json"
"""MIME type of the display outputs that carry records for summary.json."""

SEVERITIES: tuple[str, ...] = ("ok", "info", "warning", "critical")
"""Finding severities, lowest first."""

Severity = Literal["ok", "info", "warning", "critical"]

APPLY_TIME = "<apply time>"
"""Placeholder in a change body, replaced by the UTC time when it is sent.

Keeps the plan id stable between the dry run and the approved run for
changes whose value is "now" (a rollout restart's ``restartedAt``)."""

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


# --------------------------------------------------------------------------
# Errors with a meaning for the exit code (execute.py maps them to 2)
# --------------------------------------------------------------------------


class PreflightFailed(InvalidInput):
    """Parameters, connection or context guard failed before the runbook did anything."""


class ContextMismatch(InvalidInput):
    """The active kube context is not the one the environment expects."""


class PlanInvalid(InvalidInput):
    """A plan could not be built or failed its server-side dry run; nothing was changed."""


class PlanMismatch(InvalidInput):
    """The approved plan id differs from the plan computed now; nothing was applied."""


class ApprovalRefused(InvalidInput):
    """An approval was given where applying is not allowed; nothing was applied."""


class ApplyFailed(RunbookError):
    """A change was refused by the API server while applying (see audit.jsonl)."""


#: Exception class names that mean "bad input, configuration or approval —
#: nothing was executed or changed": execute.py maps them to exit code 2 when
#: they end a run inside the kernel.
EXIT_2_ERRORS = frozenset(
    {"PreflightFailed", "ContextMismatch", "PlanInvalid", "PlanMismatch", "ApprovalRefused"}
)


# --------------------------------------------------------------------------
# Secret-looking parameter names
# --------------------------------------------------------------------------

SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "pwd", "secret", "secrets", "token", "tokens",
        "credential", "credentials", "creds", "apikey", "bearer", "privatekey", "cookie",
    }
)
"""Words that make a parameter name secret-looking (compared per word)."""

KEY_QUALIFIERS = frozenset(
    {"api", "private", "secret", "access", "signing", "encryption", "ssh", "tls", "client",
     "service", "master", "auth", "account", "session"}
)
"""``key`` is secret-looking alone or after one of these (``api_key``), not in ``label_key``."""

REFERENCE_SUFFIXES = frozenset(
    {"name", "names", "namespace", "ref", "env", "var", "path", "file", "dir", "days", "ttl",
     "expiry", "age", "count", "kind", "selector", "label", "labels"}
)
"""A last word that makes the name *refer to* a secret rather than hold one
(``tls_secret_name``, ``api_token_env``, ``private_key_path``): allowed."""


def _words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_secret_name(name: str) -> bool:
    """Whether a parameter name looks like it holds a credential.

    Credentials never travel as parameters (papermill writes parameters into
    the output notebook): they come from the kubeconfig or environment
    variables. The rule, per ``_``/camelCase-separated word:

    - any of :data:`SECRET_WORDS` (``password``, ``token``, ``secret``,
      ``credentials``, ``apikey``, ``bearer`` ...) makes it secret-looking;
    - ``key`` does when it stands alone or follows a qualifier such as
      ``api``, ``private``, ``access``, ``tls`` (``api_key``, ``tls_key``),
      but ``keys``, ``label_key`` or ``sort_key`` do not;
    - a name whose last word is a reference suffix (``name``, ``env``,
      ``path``, ``file``, ``ref`` ... see :data:`REFERENCE_SUFFIXES`) names
      where a secret is, not the secret, and is allowed.

    >>> [is_secret_name(n) for n in ("api_token", "api_key", "keys", "tls_secret_name")]
    [True, True, False, False]
    """
    words = _words(name)
    if not words or words[-1] in REFERENCE_SUFFIXES:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    for i, w in enumerate(words):
        if w == "key" and (len(words) == 1 or (i > 0 and words[i - 1] in KEY_QUALIFIERS)):
            return True
    return False


_PEM_PRIVATE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def _secret_value_kind(value: Any) -> str | None:
    """Name the kind of credential a parameter *value* looks like, if any."""
    texts: list[str] = []
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list | tuple):
        texts = [v for v in value if isinstance(v, str)]
    elif isinstance(value, dict):
        texts = [v for v in value.values() if isinstance(v, str)]
    for text in texts:
        if _PEM_PRIVATE.search(text):
            return "a PEM private key"
        if _JWT.search(text):
            return "a bearer token (JWT)"
    return None


def shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut, never a credential-looking one."""
    if _secret_value_kind(value):
        return "<redacted>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------
# Parameter models
# --------------------------------------------------------------------------


class ParamsBase(BaseModel):
    """Config shared by every parameter model: unknown names are refused."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    @model_validator(mode="after")
    def _approval_needs_apply_mode(self) -> ParamsBase:
        approve = getattr(self, "approve_plan", None)
        if approve is not None and getattr(self, "dry_run", False) is True:
            raise ValueError(
                f"approve_plan={approve!r} needs dry_run=False: an approval applies the plan "
                "(runbooks run --approve sets both)"
            )
        return self


class RunbookParams(ParamsBase):
    """Connection parameters every runbook that talks to Kubernetes declares.

    ``kubeconfig``, ``kube_context`` and ``expected_context`` normally come from
    ``parameters/<env>/env.yaml``; ``run_dir`` is set by ``runbooks run``.
    """

    kubeconfig: str | None = None
    kube_context: str | None = None
    expected_context: str | None = None
    run_dir: str | None = None


class MutatingParams(RunbookParams):
    """Parameters of a runbook that can change something: dry run by default."""

    dry_run: bool = True
    approve_plan: str | None = Field(default=None, pattern=r"^[0-9a-f]{12}$")


_BASE_FIELDS = MutatingParams.model_fields

_REGISTRY: dict[str, type[ParamsBase]] = {}

PARAM_MODULES: dict[str, str] = {
    "cluster-health": "runbooks.params",
    "incident-investigation": "runbooks.params",
    "provision-service": "runbooks.deploy",
    "certificate-rotation": "runbooks.rotation",
}
"""Runbook name → module that registers its model (imported on first look-up), for
models defined next to the checks they parameterise rather than in this module."""


def register(name: str) -> Callable[[type[ParamsBase]], type[ParamsBase]]:
    """Class decorator: register the parameter model of the notebook ``notebooks/<name>.ipynb``.

    Example::

        @register("cluster-health")
        class ClusterHealthParams(RunbookParams):
            namespaces: list[str] = []
            cert_warning_days: int = Field(default=21, ge=0)
    """

    def decorate(model: type[ParamsBase]) -> type[ParamsBase]:
        if not issubclass(model, ParamsBase):
            raise TypeError(f"{model.__name__} must subclass runbooks.runbook.RunbookParams")
        _REGISTRY[name] = model
        return model

    return decorate


def _import_models(names: Iterable[str]) -> None:
    import importlib

    for name in names:
        module = PARAM_MODULES.get(name)
        if module and name not in _REGISTRY:
            importlib.import_module(module)


def registered_models() -> dict[str, type[ParamsBase]]:
    """Name → model for every registered runbook (imports :data:`PARAM_MODULES` first)."""
    _import_models(PARAM_MODULES)
    return dict(_REGISTRY)


_TYPE_NAMES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
}


def _annotation_for(type_name: str, default: Any) -> Any:
    name = (type_name or "None").strip()
    optional = False
    match = re.fullmatch(r"Optional\[(.+)\]", name)
    if match:
        name, optional = match.group(1).strip(), True
    base = re.split(r"\[", name)[0].strip().lower()
    annotation: Any = _TYPE_NAMES.get(base)
    if annotation is None and default is not None:
        annotation = type(default) if type(default) in _TYPE_NAMES.values() else Any
    if annotation is None:
        return Any
    if optional or default is None:
        return annotation | None
    return annotation


def derive_model(name: str, parameters: Sequence[Any]) -> type[ParamsBase]:
    """A model for a notebook without a registered one, from its parameters cell.

    ``parameters`` are papermill's inspection results (``name``,
    ``inferred_type_name``, ``default``, ``help``). Base parameters
    (``kubeconfig``, ``dry_run`` ...) keep their base definitions; the type of
    any other is its annotation or the type of its default.
    """
    fields: dict[str, Any] = {}
    for p in parameters:
        if p.name in _BASE_FIELDS:
            f = _BASE_FIELDS[p.name]
            fields[p.name] = (f.annotation, f)
            continue
        try:
            default = ast.literal_eval(p.default)
        except (ValueError, SyntaxError):
            default = None
        fields[p.name] = (_annotation_for(p.inferred_type_name, default), default)
    model_name = "".join(w.capitalize() for w in _words(name)) + "Params"
    return create_model(model_name, __base__=ParamsBase, **fields)


def params_model(name: str, parameters: Sequence[Any] | None = None) -> type[ParamsBase]:
    """The parameter model of runbook ``name``.

    The registered model if there is one; else one derived from
    ``parameters`` (papermill's inspection of the notebook); else
    :class:`MutatingParams` (inside a kernel, which cannot see the notebook).
    """
    _import_models([name])
    if name in _REGISTRY:
        return _REGISTRY[name]
    if parameters is not None:
        return derive_model(name, parameters)
    return MutatingParams


def _describe_allowed(model: type[ParamsBase], field: str) -> str:
    info = model.model_fields.get(field)
    if info is None:
        return ""
    annotation = info.annotation
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = text.replace("typing.", "").replace("NoneType", "None")
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("pattern", "matching")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sym} {value}")
    return text + (" " + ", ".join(bounds) if bounds else "")


def validate_params(model: type[ParamsBase], values: Mapping[str, Any]) -> ParamsBase:
    """Validate parameter values against a model, with messages an SRE can act on.

    Raises:
        InvalidInput: naming each bad parameter, its value and what is allowed;
            unknown names list the known ones; secret-looking names and
            credential-looking values are refused.

    >>> validate_params(MutatingParams, {"dry_run": False}).dry_run
    False
    """
    problems: list[str] = []
    known = sorted(model.model_fields)
    for key, value in values.items():
        if is_secret_name(key):
            problems.append(
                f"parameter {key!r} looks like a credential: credentials never travel as "
                "parameters (they would be written into the output notebook); use the "
                "kubeconfig or an environment variable"
            )
        elif key not in model.model_fields:
            problems.append(
                f"unknown parameter {key!r} (value {shown(value)}); known parameters: "
                + (", ".join(known) or "none")
            )
        else:
            kind = _secret_value_kind(value)
            if kind:
                problems.append(
                    f"parameter {key!r} holds what looks like {kind}: credentials never travel "
                    "as parameters; use the kubeconfig or an environment variable"
                )
    if problems:
        raise InvalidInput("; ".join(problems))
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            field = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "missing":
                problems.append(f"Required parameter {loc!r} not supplied")
                continue
            allowed = _describe_allowed(model, field)
            value = err.get("input")
            msg = err["msg"].removeprefix("Value error, ")
            if not field:
                problems.append(msg)
            else:
                problems.append(
                    f"parameter {loc!r} = {shown(value)} is not allowed: {msg}"
                    + (f" (allowed: {allowed})" if allowed else "")
                )
        raise InvalidInput("; ".join(problems)) from exc


# --------------------------------------------------------------------------
# Findings and records
# --------------------------------------------------------------------------


class Finding(BaseModel):
    """One thing a runbook found, for the report and summary.json.

    Args:
        id: stable identifier, e.g. ``"pod-crashloop/shop/web-5d9c"``; the same
            problem keeps the same id from run to run.
        severity: ``ok``, ``info``, ``warning`` or ``critical``.
        title: one line a person reads first.
        detail: what it means and what to do.
        resource: the object concerned, ``Kind/namespace/name`` or ``Kind/name``.
        evidence: small JSON-serialisable data backing it (never Secret data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    severity: Severity
    title: str = Field(min_length=1)
    detail: str = ""
    resource: str | None = None
    evidence: Any = None

    @model_validator(mode="before")
    @classmethod
    def _check_severity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("severity") not in SEVERITIES:
            raise ValueError(
                f"severity {data.get('severity')!r} is not one of {', '.join(SEVERITIES)}"
            )
        return data

    @property
    def rank(self) -> int:
        """Position of the severity in :data:`SEVERITIES` (0 = ok)."""
        return SEVERITIES.index(self.severity)

    def to_json(self) -> dict[str, Any]:
        """A plain dict, evidence made JSON-safe."""
        data = self.model_dump()
        data["evidence"] = json.loads(json.dumps(data["evidence"], default=str))
        return data


_LOCAL_RECORDS: list[dict[str, Any]] = []


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return None
    return get_ipython()


def record(kind: str, data: Mapping[str, Any]) -> None:
    """Record one fact for summary.json (the single recording mechanism).

    Inside a kernel this displays a :data:`RECORD_MIME` bundle, which ends up
    in the executed notebook; outside IPython (plain Python, unit tests) the
    record is kept in memory (see :func:`local_records`).
    """
    payload = {"kind": kind, "data": json.loads(json.dumps(dict(data), default=str))}
    shell = _shell()
    if shell is None:
        _LOCAL_RECORDS.append(payload)
        return
    from IPython.display import display

    display({RECORD_MIME: payload, "text/plain": ""}, raw=True)


def local_records(clear: bool = False) -> list[dict[str, Any]]:
    """Records made outside IPython (for tests and scripts)."""
    out = list(_LOCAL_RECORDS)
    if clear:
        _LOCAL_RECORDS.clear()
    return out


def iter_records(nb: Any) -> Iterable[dict[str, Any]]:
    """Every record payload in an executed notebook, in output order."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if RECORD_MIME in data:
                payload = data[RECORD_MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                yield payload


def fold_records(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold records into the summary sections (last record per id/name wins)."""
    state: dict[str, Any] = {
        "run": {}, "preflight": None, "findings": {}, "data_sources": {}, "plan": None,
        "changes": [], "window": None,
    }
    for rec in records:
        kind, data = rec.get("kind"), rec.get("data") or {}
        if kind == "run":
            state["run"].update(data)
        elif kind == "preflight":
            state["preflight"] = data
        elif kind == "finding":
            state["findings"][data.get("id")] = data
        elif kind == "source":
            state["data_sources"][data.get("name")] = {
                k: v for k, v in data.items() if k != "name"
            }
        elif kind == "plan":
            state["plan"] = data
        elif kind == "change":
            state["changes"].append(data)
        elif kind == "window":
            state["window"] = data
    state["findings"] = sorted(
        state["findings"].values(),
        key=lambda f: (-SEVERITIES.index(f.get("severity", "ok")), str(f.get("id"))),
    )
    return state


def read_records(nb: Any) -> dict[str, Any]:
    """The summary sections recorded in an executed notebook (dict or NotebookNode).

    Returns a dict with ``run`` (context, server ...), ``preflight``,
    ``findings`` (worst first), ``data_sources``, ``plan``, ``changes``
    (applied changes) and ``window``.
    """
    return fold_records(iter_records(nb))


# --------------------------------------------------------------------------
# Preflight: connection and context guard
# --------------------------------------------------------------------------


def check_context(cluster: Any, expected: str | None) -> None:
    """Refuse to go on unless the active context is the one the environment expects.

    ``expected`` matches the context name, or the API server URL when it is
    one (``https://...``). Call it after building the client and before any
    API request.

    Raises:
        ContextMismatch: naming the active context and server and the expected one.
    """
    if not expected:
        return
    context = getattr(cluster, "context", None)
    server = str(getattr(cluster, "server", "") or "")
    if expected == context or (
        "://" in expected and expected.rstrip("/") == server.rstrip("/")
    ):
        return
    raise ContextMismatch(
        f"the active kube context is {context!r} (server {server}) but this environment "
        f"expects {expected!r}: refusing to run. Choose the context with kube_context, or fix "
        "expected_context in parameters/<env>/env.yaml"
    )


def preflight_kube(params: Any) -> Any:
    """Connect to Kubernetes as the parameters say, guard the context, check the API.

    Shared by ``runbooks run`` (before a kernel starts) and :func:`start`
    (inside the notebook). Returns a ``runbooks.kube.Cluster``.

    Raises:
        InvalidInput: missing kubeconfig or unknown context.
        ContextMismatch: the active context is not ``expected_context``.
        Forbidden: credentials refused. Unavailable: API server unreachable.
    """
    from runbooks import kube

    cluster = kube.connect(
        getattr(params, "kubeconfig", None), getattr(params, "kube_context", None)
    )
    check_context(cluster, getattr(params, "expected_context", None))
    kube.check_api(cluster)
    return cluster


# --------------------------------------------------------------------------
# Changes and plans
# --------------------------------------------------------------------------


class KindInfo(BaseModel):
    """Where the API serves a kind."""

    api_version: str
    plural: str
    namespaced: bool = True


KINDS: dict[str, KindInfo] = {
    "Deployment": KindInfo(api_version="apps/v1", plural="deployments"),
    "StatefulSet": KindInfo(api_version="apps/v1", plural="statefulsets"),
    "DaemonSet": KindInfo(api_version="apps/v1", plural="daemonsets"),
    "ReplicaSet": KindInfo(api_version="apps/v1", plural="replicasets"),
    "Pod": KindInfo(api_version="v1", plural="pods"),
    "Service": KindInfo(api_version="v1", plural="services"),
    "ConfigMap": KindInfo(api_version="v1", plural="configmaps"),
    "Secret": KindInfo(api_version="v1", plural="secrets"),
    "Namespace": KindInfo(api_version="v1", plural="namespaces", namespaced=False),
    "Node": KindInfo(api_version="v1", plural="nodes", namespaced=False),
    "Ingress": KindInfo(api_version="networking.k8s.io/v1", plural="ingresses"),
    "Certificate": KindInfo(api_version="cert-manager.io/v1", plural="certificates"),
}
"""Kinds a :class:`Change` can touch (a registry: add a kind here to support it)."""

_CONTENT_TYPES = {"patch": "application/merge-patch+json", "create": "application/json"}
_METHODS = {"patch": "PATCH", "create": "POST", "delete": "DELETE"}


class Change(BaseModel):
    """One idempotent change of a plan.

    Args:
        operation: ``patch`` (JSON merge patch of ``body``), ``create`` (``body``
            is the object) or ``delete``.
        kind, namespace, name: the object (``kind`` from :data:`KINDS`).
        diff: what changes, for people: ``[{"path", "from", "to"}]``. Values of
            Secrets are replaced by ``<redacted>``.
        body: what is sent; may contain :data:`APPLY_TIME`. Never displayed.
        precondition: facts about the object the change was planned against
            (e.g. ``{"generation": 4}``); part of the plan id, so a plan
            computed against a changed object gets another id.
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

    @model_validator(mode="after")
    def _check(self) -> Change:
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r} is not registered; registered: {', '.join(TARGETS)}")
        if self.target != "kubernetes":
            if self.operation != "delete" and self.body is None:
                raise ValueError(f"a {self.operation} change needs a body")
            return self
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not supported; supported: {', '.join(KINDS)}")
        if KINDS[self.kind].namespaced and not self.namespace:
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
            {**d, "from": "<redacted>", "to": "<redacted>"} if ("from" in d or "to" in d) else d
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
        }


class Plan:
    """An ordered list of changes with a stable id, and the builder that made it.

    The id is the first 12 hex digits of the SHA-256 of the canonical JSON of
    the changes: the same changes planned against the same objects give the
    same id in any process, and any difference gives another.
    """

    def __init__(
        self,
        changes: Iterable[Change],
        builder: Callable[..., Iterable[Change]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.changes: tuple[Change, ...] = tuple(changes)
        self.builder = builder
        self.kwargs = dict(kwargs or {})
        self.validated: bool = False
        self.validation: list[str] = []

    @property
    def id(self) -> str:
        """Short hash of the canonical plan."""
        text = json.dumps(
            [c.canonical() for c in self.changes],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.changes)

    def __repr__(self) -> str:
        return f"Plan(id={self.id!r}, changes={len(self.changes)})"

    def public(self, applied: bool = False) -> dict[str, Any]:
        """The plan section of summary.json."""
        return {
            "id": self.id,
            "changes": [c.public() for c in self.changes],
            "validated": self.validated,
            "applied": applied,
        }

    def recompute(self, cluster: Any) -> Plan:
        """Build the plan again from the current state (same builder and arguments)."""
        if self.builder is None:
            raise PlanInvalid("this plan has no builder to recompute it with")
        return _build_plan(cluster, self.builder, self.kwargs)


def _build_plan(cluster: Any, builder: Callable[..., Iterable[Change]], kwargs: Mapping[str, Any]) -> Plan:
    try:
        changes = list(builder(cluster, **kwargs))
    except (InvalidInput, NotFound, ValueError) as exc:
        raise PlanInvalid(f"cannot plan {getattr(builder, '__name__', 'changes')}: {exc}") from exc
    return Plan(changes, builder, kwargs)


def _path(change: Change, *, with_name: bool = True) -> str:
    info = KINDS[change.kind]
    prefix = "/api/v1" if info.api_version == "v1" else f"/apis/{info.api_version}"
    ns = f"/namespaces/{change.namespace}" if info.namespaced else ""
    sub = f"/{change.subresource}" if with_name and change.subresource else ""
    return f"{prefix}{ns}/{info.plural}" + (f"/{change.name}" if with_name else "") + sub


def _materialize(value: Any, now: str) -> Any:
    if isinstance(value, dict):
        return {k: _materialize(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v, now) for v in value]
    return now if value == APPLY_TIME else value


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _iso(ts: _dt.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def api_request(
    cluster: Any,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str = "application/json",
) -> Any:
    """One raw request to the API server, JSON in and out, errors mapped.

    Raises:
        NotFound (404), Conflict (409), Forbidden (401/403), InvalidInput
        (400/422), Unavailable (unreachable, 5xx); messages carry a cut body.
    """
    from kubernetes.client.exceptions import ApiException

    client = cluster.api_client
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    try:
        method, url, headers, body, post = client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        raw = response.read()
        status = response.status
    except ApiException as exc:
        status, raw = exc.status or 0, exc.body or exc.reason or ""
    except Exception as exc:  # urllib3 connection errors and the like
        raise Unavailable(f"{method} {path}: cannot reach the API server: {cut(str(exc))}") from exc
    if 200 <= status < 300:
        return json.loads(raw) if raw else None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        message = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        message = text
    msg = f"{method} {path}: HTTP {status}: {cut(message)}"
    if status == 404:
        raise NotFound(msg)
    if status == 409:
        raise Conflict(msg)
    if status in (401, 403):
        raise Forbidden(msg)
    if status in (400, 422):
        raise InvalidInput(msg)
    raise Unavailable(msg)


def _send(cluster: Any, change: Change, *, dry_run: bool, now: str) -> Any:
    query = [("dryRun", "All")] if dry_run else []
    body = _materialize(change.body, now) if change.body is not None else None
    with_name = change.operation != "create"
    return api_request(
        cluster,
        _METHODS[change.operation],
        _path(change, with_name=with_name),
        query=query,
        body=body,
        content_type=_CONTENT_TYPES.get(change.operation, "application/json"),
    )


class Target(Protocol):
    """How the changes for one system are sent (a registry: :func:`register_target`).

    ``send`` applies a change, or validates it without applying when
    ``dry_run`` is true (the Kubernetes target uses the server's ``dryRun=All``);
    ``current`` returns the object as it is now, for the backup taken before
    applying (None when there is nothing to back up).
    """

    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any: ...

    def current(self, run: Run, change: Change) -> Any: ...


class _KubernetesTarget:
    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any:
        return _send(run._require_cluster(), change, dry_run=dry_run, now=now)

    def current(self, run: Run, change: Change) -> Any:
        if change.operation == "create":
            return None
        try:
            obj = api_request(run._require_cluster(), "GET", _path(_main_resource(change)))
        except NotFound:
            return None
        return redact_secret(obj)


def redact_secret(obj: Any) -> Any:
    """A Secret with each value replaced by its SHA-256 (backups on disk never hold secret data)."""
    if not isinstance(obj, dict) or obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            out[key] = {k: "sha256:" + hashlib.sha256(str(v).encode()).hexdigest() for k, v in obj[key].items()}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        out["metadata"] = {**obj["metadata"], "annotations": {
            k: ("<redacted>" if k == "kubectl.kubernetes.io/last-applied-configuration" else v)
            for k, v in annotations.items()}}
    return out


def _main_resource(change: Change) -> Change:
    """The same change addressed to the main resource (backups read the whole object)."""
    return change.model_copy(update={"subresource": None}) if change.subresource else change


TARGETS: dict[str, Target] = {"kubernetes": _KubernetesTarget()}


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
    probe = Change(operation="delete", kind=kind, namespace=namespace, name=name)
    obj = api_request(cluster, "GET", _path(probe))
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
        )
    ]


# --------------------------------------------------------------------------
# The run: what a notebook holds after start()
# --------------------------------------------------------------------------


def _headless() -> bool:
    return os.environ.get("RUNBOOKS_HEADLESS") == "1" or _shell() is None


class Run:
    """A runbook's execution as seen from inside the notebook.

    Created by :func:`start`. Attributes: ``runbook``, ``params`` (the
    validated model), ``cluster`` (a ``runbooks.kube.Cluster`` or ``None``),
    ``run_id``, ``findings`` (id → :class:`Finding`), ``sources``.
    """

    def __init__(self, runbook: str, params: ParamsBase, cluster: Any = None) -> None:
        self.runbook = runbook
        self.params = params
        self.cluster = cluster
        self.started = _utcnow()
        run_dir = getattr(params, "run_dir", None)
        self.run_id = Path(run_dir).name if run_dir else "interactive-" + self.started.strftime(
            "%Y%m%dT%H%M%SZ"
        )
        self.findings: dict[str, Finding] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.last_plan: Plan | None = None

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
        except (RunbookError, OSError) as exc:
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

    def plan(self, builder: Callable[..., Iterable[Change]], /, **kwargs: Any) -> Plan:
        """Compute a plan with ``builder(cluster, **kwargs)``, dry-run it on the server, show it.

        Raises:
            PlanInvalid: the builder refused (e.g. the object does not exist)
                or the server's dry run rejected a change. Nothing was changed.
        """
        cluster = self._require_cluster()
        plan = _build_plan(cluster, builder, kwargs)
        now = _iso(_utcnow())
        for change in plan.changes:
            try:
                TARGETS[change.target].send(self, change, dry_run=True, now=now)
            except (InvalidInput, NotFound, Conflict) as exc:
                raise PlanInvalid(
                    f"server-side dry run rejected {change.operation} {change.resource}: {exc}"
                ) from exc
            plan.validation.append(f"{change.operation} {change.resource}: dry run accepted")
        plan.validated = True
        self.last_plan = plan
        record("plan", plan.public(applied=False))
        from runbooks import report

        report.show_plan(plan, self._approval_hint(plan))
        return plan

    def _approval_hint(self, plan: Plan) -> str:
        if not plan.changes:
            return "Nothing to change."
        if getattr(self.params, "approve_plan", None):
            return f"Approved plan id: {self.params.approve_plan}."
        return (
            f"Dry run: nothing was changed. To apply this plan headless: "
            f"runbooks run {self.runbook} --env ENV --approve {plan.id}"
        )

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
        approve = getattr(self.params, "approve_plan", None)
        dry_run = getattr(self.params, "dry_run", True)
        if approve:
            if approve != plan.id:
                raise PlanMismatch(
                    f"approved plan {approve} does not match the plan computed now ({plan.id}): "
                    "the cluster or the parameters changed since it was approved. Nothing was "
                    "applied; review the new plan and approve its id"
                )
            return self._apply(plan)
        if not plan.changes:
            return []
        if not dry_run:
            _print(f"dry_run=False but no plan was approved: nothing was changed. "
                   f"Approve this plan with --approve {plan.id}")
            return []
        if not _headless():
            self._approval_button(plan)
        return []

    def _approval_button(self, plan: Plan) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        button = widgets.Button(
            description=f"Apply plan {plan.id}",
            button_style="danger",
            tooltip=f"Apply the {len(plan.changes)} change(s) of plan {plan.id}",
            layout=widgets.Layout(width="auto"),
        )
        out = widgets.Output()

        def on_click(_: Any) -> None:
            button.disabled = True
            with out:
                try:
                    results = self._apply(plan)
                    print(f"Applied plan {plan.id}: {len(results)} change(s); see audit.jsonl")
                except RunbookError as exc:
                    print(f"Nothing more was applied: {exc}")

        button.on_click(on_click)
        display(widgets.VBox([button, out]))

    def audit_path(self) -> Path:
        """``audit.jsonl`` in the run directory (``outputs/interactive/...`` without one)."""
        run_dir = getattr(self.params, "run_dir", None)
        if run_dir:
            base = Path(run_dir)
        else:
            base = Path(os.environ.get("RUNBOOKS_HOME", ".")) / "outputs" / "interactive" / self.runbook / self.run_id
        base.mkdir(parents=True, exist_ok=True)
        return base / "audit.jsonl"

    def _audit(self, plan_id: str, change: Change, result: str, now: str) -> dict[str, Any]:
        line = {
            "time": _iso(_utcnow()),
            "user": _who(),
            "context": getattr(self.cluster, "context", None),
            "server": getattr(self.cluster, "server", None),
            "run_id": self.run_id,
            "runbook": self.runbook,
            "plan_id": plan_id,
            "change": _materialize(change.public(), now),
            "result": result,
        }
        with self.audit_path().open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
        return line

    def _backup(self, change: Change) -> None:
        obj = TARGETS[change.target].current(self, change)
        if obj is None:
            return
        folder = self.audit_path().parent / "backups"
        folder.mkdir(exist_ok=True)
        target = folder / (change.resource.replace("/", "_") + ".json")
        target.write_text(json.dumps(obj, indent=1, sort_keys=True))
        target.chmod(0o600)

    def _apply(self, plan: Plan) -> list[dict[str, Any]]:
        if not getattr(self.params, "expected_context", None):
            raise ApprovalRefused(
                "applying a plan needs expected_context (parameters/<env>/env.yaml) so that "
                "changes never reach a cluster by accident; nothing was applied"
            )
        cluster = self._require_cluster()
        fresh = plan.recompute(cluster) if plan.builder is not None else plan
        if fresh.id != plan.id:
            raise PlanMismatch(
                f"plan {plan.id} changed to {fresh.id} just before applying: nothing was applied"
            )
        results = []
        for change in fresh.changes:
            self._backup(change)
            now = _iso(_utcnow())
            try:
                TARGETS[change.target].send(self, change, dry_run=False, now=now)
            except RunbookError as exc:
                line = self._audit(fresh.id, change, f"failed: {cut(str(exc))}", now)
                record("change", line)
                raise ApplyFailed(f"{change.operation} {change.resource} failed: {exc}") from exc
            line = self._audit(fresh.id, change, "applied", now)
            record("change", line)
            results.append(line)
        fresh.validated = plan.validated
        record("plan", fresh.public(applied=True))
        _print(f"Applied plan {fresh.id}: {len(results)} change(s), audit in {self.audit_path()}")
        return results

    # -- summary ---------------------------------------------------------------

    def summary(self) -> None:
        """Show the findings table (worst first): the runbook's closing cell."""
        from runbooks import report

        report.show_findings(list(self.findings.values()))


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _print(text: str) -> None:
    print(text)


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
    try:
        params = validate_params(model, values)
        cluster = None
        if connect if connect is not None else "kubeconfig" in fields:
            cluster = preflight_kube(params)
    except RunbookError as exc:
        record("preflight", {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise PreflightFailed(f"preflight of {runbook}: {exc}") from exc
    run = Run(runbook, params, cluster)
    info = {"runbook": runbook, "run_id": run.run_id, "started": _iso(run.started)}
    if cluster is not None:
        info.update(
            kube_context=getattr(cluster, "context", None),
            server=getattr(cluster, "server", None),
            expected_context=getattr(params, "expected_context", None),
        )
        run.source("kubernetes", True, f"context {info['kube_context']} at {info['server']}")
    record("run", info)
    record("preflight", {"ok": True})
    from runbooks import report

    report.setup_notebook()
    return run
