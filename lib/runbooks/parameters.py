"""Parameter models: how a runbook's parameters are declared, registered and validated.

Each runbook has a pydantic model (subclass of :class:`RunbookParams`), named
after its notebook by an entry point of the group ``runbooks.runbooks``
(:data:`RUNBOOK_GROUP`; ``NAME = "module:Class"`` in ``pyproject.toml``), so
adding a runbook, in this package or in a project's own, edits no central map.
``runbooks run`` validates the merged parameters with it *before* a kernel
starts and ``runbook.start`` validates them again inside the notebook, so the
two checks cannot disagree. Notebooks without a registered model (test fixtures, drafts)
get a model derived from their ``parameters`` cell (:func:`derive_model`).
Models forbid unknown names; names that look like credentials are refused
(:func:`runbooks.secrets.is_secret_name`).
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from .errors import InvalidInput
from .secrets import is_secret_name, secret_value_kind, shown


class ParamsBase(BaseModel):
    """Config shared by every parameter model: unknown names are refused.

    ``MULTILINE`` names the text parameters that may hold line breaks; in every other
    one a line break or control character is refused (:func:`validate_params`).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)

    MULTILINE: ClassVar[tuple[str, ...]] = ()

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
    ``parameters/<env>/env.yaml``; ``env`` names that environment (``runbooks run
    --env`` sets it; interactively None means ``$RUNBOOKS_ENV``); ``run_dir`` is
    set by ``runbooks run``.
    """

    env: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kubeconfig: str | None = None
    kube_context: str | None = None
    expected_context: str | None = None
    run_dir: str | None = None

    EXISTING_NAMESPACES: ClassVar[tuple[str, ...]] = ()
    """Fields naming namespaces that must exist (checked in preflight, ``kube.check_namespaces``)."""


class MutatingParams(RunbookParams):
    """Parameters of a runbook that can change something: dry run by default."""

    dry_run: bool = True
    approve_plan: str | None = Field(default=None, pattern=r"^[0-9a-f]{12}$")

    APPLY_PARAMETERS: ClassVar[tuple[str, ...]] = ()
    """Parameters that change what applying a plan does beyond its changes (``auto_rollback``,
    a timeout after which the apply rolls back ...): part of the plan id."""


_BASE_FIELDS = MutatingParams.model_fields

PROJECT_ROOT: ContextVar[str | None] = ContextVar("PROJECT_ROOT", default=None)
"""The project being validated for (``runbooks run`` sets it); else ``$RUNBOOKS_HOME``, else the
working directory (where a kernel of ``runbooks run`` runs)."""


def project_root() -> Path:
    """The project's root: files a run reads (values files) must be inside it."""
    return Path(PROJECT_ROOT.get() or os.environ.get("RUNBOOKS_HOME") or ".").resolve()

RUNBOOK_GROUP = "runbooks.runbooks"
"""The entry-point group naming each runbook's parameter model: ``NAME = "module:Class"``.

The product declares its own in ``pyproject.toml``; a project with runbooks of its own
declares theirs the same way in its own ``pyproject.toml`` and installs it (``pip install
-e .``). The model's module is imported on first look-up only, so the CLI never imports a
job's heavier dependencies to check a few numbers and names."""

_REGISTRY: dict[str, type[ParamsBase]] = {}


def register(name: str) -> Callable[[type[ParamsBase]], type[ParamsBase]]:
    """Class decorator: register a model in this process only (tests, a notebook's own model).

    Runbooks that ``runbooks run`` validates declare their model as an entry point of
    :data:`RUNBOOK_GROUP` instead, so that a new runbook needs no edit here.

    Example::

        @register("demo")
        class DemoParams(RunbookParams):
            threshold: int = Field(default=7, ge=0)
    """

    def decorate(model: type[ParamsBase]) -> type[ParamsBase]:
        _REGISTRY[name] = _checked(name, model)
        return model

    return decorate


def _checked(name: str, model: Any) -> type[ParamsBase]:
    if not (isinstance(model, type) and issubclass(model, ParamsBase)):
        raise TypeError(f"the parameter model of runbook {name!r} ({model!r}) must subclass "
                        "runbooks.parameters.RunbookParams")
    return model


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=RUNBOOK_GROUP)}


def _load(name: str, entry_point: importlib.metadata.EntryPoint) -> type[ParamsBase]:
    if name not in _REGISTRY:
        _REGISTRY[name] = _checked(name, entry_point.load())
    return _REGISTRY[name]


def registered_models() -> dict[str, type[ParamsBase]]:
    """Name → model for every runbook with a model: the entry points and :func:`register`."""
    for name, entry_point in _entry_points().items():
        _load(name, entry_point)
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
    model_name = "".join(w.capitalize() for w in re.split(r"[^a-zA-Z0-9]+", name) if w) + "Params"
    return create_model(model_name, __base__=ParamsBase, **fields)


def params_model(name: str, parameters: Sequence[Any] | None = None) -> type[ParamsBase]:
    """The parameter model of runbook ``name``.

    The registered model if there is one; else one derived from
    ``parameters`` (papermill's inspection of the notebook); else
    :class:`MutatingParams` (inside a kernel, which cannot see the notebook).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry_point = _entry_points().get(name)
    if entry_point is not None:
        return _load(name, entry_point)
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


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _control(value: Any) -> bool:
    """Whether a text (or a text inside a list or mapping) holds a control character (tab is allowed)."""
    if isinstance(value, str):
        return bool(_CONTROL.search(value))
    if isinstance(value, (list, tuple)):
        return any(_control(v) for v in value)
    if isinstance(value, dict):
        return any(_control(k) or _control(v) for k, v in value.items())
    return False


def _numeric(annotation: Any) -> bool:
    """int or float (or optional), where pydantic would silently take True for 1."""
    import typing

    args = typing.get_args(annotation) or (annotation,)
    return bool({int, float} & set(args)) and bool not in args


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
                f"unknown parameter {key!r} (its value is not shown); known parameters: "
                + (", ".join(known) or "none")
            )
        else:
            kind = secret_value_kind(value)
            if kind:
                problems.append(
                    f"parameter {key!r} holds what looks like {kind}: credentials never travel "
                    "as parameters; use the kubeconfig or an environment variable"
                )
        if key in model.model_fields and isinstance(value, bool) and _numeric(model.model_fields[key].annotation):
            problems.append(f"parameter {key!r} = {value!r} is not allowed: a number is needed, not true/false "
                            f"(allowed: {_describe_allowed(model, key)})")
        if key in model.model_fields and key not in getattr(model, "MULTILINE", ()) and _control(value):
            problems.append(
                f"parameter {key!r} = {shown(value)} holds a line break or control character; "
                "allowed: one line of printable text")
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
