"""Environments: ``parameters/<env>/`` read, merged and validated the same way everywhere.

Why this module exists: an environment (how to reach a cluster and its data
sources, plus a runbook's parameter sets) must mean the same thing whether a
runbook runs headless (``runbooks run --env ENV``, :mod:`runbooks.execute`) or
interactively in JupyterLab (the ``env`` parameter / ``$RUNBOOKS_ENV``,
:func:`runbooks.runbook.start`). Both sides call :func:`merge` here, below
both of them in the layers, so the precedence and the checks cannot drift apart:

    parameters/ENV/env.yaml < parameters/ENV/<runbook>.yaml < -f FILE < the notebook's
    own values (interactive) < -p NAME VALUE < --approve

Only the keys a notebook declares are taken from ``env.yaml``; credentials
never travel as parameters (names and values that look like them are refused).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from runbooks import model
from runbooks import secrets as sec
from runbooks.errors import InvalidInput, RunbookError, cut
from runbooks.parameters import ParamsBase

ENV_VARIABLE = "RUNBOOKS_ENV"
"""The environment an interactive notebook uses when its ``env`` parameter is None."""

# --------------------------------------------------------------------------
# Project and environments
# --------------------------------------------------------------------------


class EnvConfig(BaseModel):
    """Schema of ``parameters/<env>/env.yaml``: how to reach an environment.

    Connection settings become the lowest-precedence notebook parameters;
    only the keys a notebook declares in its parameters cell are passed.
    Relative paths (``kubeconfig``) are relative to the project root.
    Credentials never belong here: they come from the kubeconfig and from
    environment variables.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    kubeconfig: str | None = None
    kube_context: str | None = None
    expected_context: str | None = None
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    elasticsearch_url: str | None = None
    ingress_url: str | None = None
    ingress_ca_file: str | None = None
    dns_resolver: str | None = None
    cluster_dns_server: str | None = None
    dns_providers: dict[str, dict[str, Any]] | None = None

    def connections(self) -> dict[str, Any]:
        """The settings that become parameters (everything but the description)."""
        return {k: v for k, v in self.model_dump(exclude={"description"}).items() if v is not None}


PATH_PARAMETERS = ("kubeconfig", "ingress_ca_file")
GUARD = "expected_context"
"""The context guard: set by env.yaml only, never by -p, -f, a notebook or a runbook's parameter file."""
MAX_FILE_BYTES = 1 << 20
"""Largest parameter or env file read (a parameter file is a few lines)."""
MAX_VALUE_BYTES = 64 << 10
"""Largest ``-p`` value."""
MAX_NODES = 10_000
"""Most values a parameter file or ``-p`` value may expand to (YAML aliases included)."""


PACKAGED_NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
"""The runbooks shipped inside the package (package data): found with no checkout at all."""


@dataclass
class Project:
    """Where notebooks, parameters and outputs live.

    ``root`` is ``--project-dir`` / ``$RUNBOOKS_HOME``, else the nearest directory
    upwards from the working directory holding ``notebooks/`` and ``parameters/``,
    else the working directory itself. The runbooks are the ones shipped in the package
    (:data:`PACKAGED_NOTEBOOKS`), to which ``root/notebooks`` (when it exists) adds its own
    and overrides those of the same name. ``--notebooks-dir`` / ``$RUNBOOKS_NOTEBOOKS``
    instead names the one directory to use (e.g. test fixtures), while parameters and
    outputs stay under ``root``.

    A container image needs no checkout: ``$RUNBOOKS_HOME`` names a directory whose
    ``parameters/ENV/`` is mounted from a ConfigMap, and the runbooks come from the package.
    """

    root: Path
    notebooks_dir: Path
    packaged: bool = False  # the package's runbooks are the base layer (no explicit --notebooks-dir)

    @classmethod
    def discover(cls, project_dir: str | os.PathLike[str] | None = None,
                 notebooks_dir: str | os.PathLike[str] | None = None) -> Project:
        if project_dir:
            root = Path(project_dir).resolve()
            if not root.is_dir():
                raise InvalidInput(f"project directory {str(project_dir)!r} does not exist")
        else:
            here = Path.cwd().resolve()
            for candidate in (here, *here.parents):
                if (candidate / "notebooks").is_dir() and (candidate / "parameters").is_dir():
                    root = candidate
                    break
            else:
                root = here  # no checkout: the packaged runbooks, parameters/ and outputs/ here
        if notebooks_dir:
            nbdir = Path(notebooks_dir).resolve()
            if not nbdir.is_dir():
                raise InvalidInput(f"notebooks directory {str(nbdir)!r} does not exist")
            return cls(root, nbdir)
        return cls(root, root / "notebooks", packaged=True)

    @property
    def parameters_dir(self) -> Path:
        return self.root / "parameters"

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    def notebooks(self) -> dict[str, Path]:
        """Runbook name → notebook path (kebab-case names, sorted); the project's win over the package's."""
        dirs = ([PACKAGED_NOTEBOOKS] if self.packaged else []) + [self.notebooks_dir]
        books = {p.stem: p for d in dirs if d.is_dir() for p in sorted(d.glob("*.ipynb"))
                 if not p.name.startswith(".") and not p.stem.endswith("-checkpoint")}
        return dict(sorted(books.items()))

    def notebook(self, name: str) -> Path:
        """The notebook of a runbook name, or a path to a ``.ipynb`` file."""
        if name.endswith(".ipynb") or os.sep in name:
            path = Path(name).resolve()
            if not path.is_file():
                raise InvalidInput(f"notebook {name!r} does not exist")
            if path.suffix != ".ipynb":
                raise InvalidInput(f"{name!r} is not a notebook: allowed are a runbook name or a .ipynb file")
            return path
        books = self.notebooks()
        if name not in books:
            raise InvalidInput(
                f"unknown runbook {name!r}; known runbooks: {', '.join(books) or 'none'} "
                f"(in {self.notebooks_dir})"
            )
        return books[name]

    def envs(self) -> list[str]:
        if not self.parameters_dir.is_dir():
            return []
        return sorted(p.name for p in self.parameters_dir.iterdir() if p.is_dir())

    def load_env(self, env: str) -> EnvConfig:
        """Read and validate ``parameters/<env>/env.yaml`` (missing file: no connections)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", env) or env not in self.envs():
            raise InvalidInput(
                f"unknown env {env!r}; known envs: {', '.join(self.envs()) or 'none'} "
                f"(directories under {self.parameters_dir})"
            )
        path = self.parameters_dir / env / "env.yaml"
        if not path.exists():
            return EnvConfig()
        data = load_mapping(path, "env file")
        try:
            cfg = EnvConfig.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(x) for x in err["loc"])
                if err["type"] == "extra_forbidden":
                    problems.append(
                        f"unknown key {key!r}; allowed: {', '.join(EnvConfig.model_fields)}"
                    )
                else:
                    problems.append(f"{key} = {err.get('input')!r}: {err['msg']}")
            raise InvalidInput(f"{path}: " + "; ".join(problems)) from exc
        if cfg.kubeconfig and not Path(cfg.kubeconfig).expanduser().is_absolute():
            cfg.kubeconfig = str((self.root / cfg.kubeconfig).resolve())
        elif cfg.kubeconfig:
            cfg.kubeconfig = str(Path(cfg.kubeconfig).expanduser())
        return cfg


def _expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` holds once YAML aliases are expanded, counting up to ``limit`` + 1."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def bounded(data: Any, what: str) -> Any:
    """``data`` if it holds at most :data:`MAX_NODES` values once YAML aliases are expanded.

    A few hundred bytes of nested aliases (a "billion laughs" file) would otherwise expand
    to gigabytes when the values are validated or serialised.
    """
    if _expanded_size(data, MAX_NODES) > MAX_NODES:
        raise InvalidInput(f"{what} expands to more than {MAX_NODES} values (YAML aliases?): refused")
    return data


def safe_yaml(text: str, what: str) -> Any:
    """YAML text as data, bounded (:func:`bounded`).

    Raises:
        InvalidInput: not YAML, nested too deeply, or too large once expanded.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{what} is not valid YAML: {cut(str(exc))}") from exc
    except RecursionError:
        raise InvalidInput(f"{what} is nested too deeply") from None
    return bounded(data, what)


def load_mapping(path: str | os.PathLike[str], what: str = "parameters file") -> dict[str, Any]:
    """A YAML file holding a mapping of names to values.

    Raises:
        InvalidInput: unreadable, not YAML, or not a mapping with string keys.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidInput(f"{what} {str(path)!r} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {str(path)!r} is not UTF-8 text") from None
    data = safe_yaml(text, f"{what} {str(path)!r}")
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidInput(
            f"{what} {str(path)!r} must be a mapping of parameter names to values, "
            f"not {type(data).__name__}"
        )
    return data


def _accepts_str(annotation: Any) -> bool:
    """`str` or a union with `str` (`str | None`); not a container of strings (`list[str]`)."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) is typing.Literal:  # a choice of words: `-p mode off` is the word
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return str in typing.get_args(annotation)
    return False


def parse_value(raw: str, annotation: Any) -> Any:
    """A ``-p NAME VALUE`` value: kept as text for string parameters, else a YAML scalar/flow value.

    ``-p namespaces "[shop, web]"`` gives a list, ``-p cert_warning_days 14``
    an int, ``-p dry_run false`` a bool, ``-p namespace 007`` the text ``007``.
    """
    if _accepts_str(annotation) and not any(
        a in (int, float, bool, list, dict) for a in getattr(annotation, "__args__", ())
    ):
        return None if raw in ("null", "None", "~") and annotation is not str else raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # not YAML: the model says what is allowed
    except RecursionError:
        raise InvalidInput("the value is nested too deeply") from None
    return None if raw == "None" else bounded(value, "the value")


def merge(
    project: Project,
    runbook: str,
    env: str,
    declared: Sequence[str],
    model_cls: type[ParamsBase],
    *,
    files: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    approve: str | None = None,
) -> dict[str, Any]:
    """The parameter values of one run, merged from every source (not yet validated by the model).

    Order, lowest first: ``parameters/<env>/env.yaml`` connections (only the
    keys in ``declared``) < ``parameters/<env>/<runbook>.yaml`` < each ``-f FILE``
    < ``overrides`` (values a notebook's own cells set) < each ``-p NAME VALUE``
    < ``approve`` (sets ``approve_plan`` and ``dry_run=False``). A declared
    ``env`` parameter is set to ``env``.

    Raises:
        InvalidInput: unknown env, unreadable files, unknown parameter names,
            an approval for a runbook that changes nothing, a credential in a value.
    """
    env_cfg = project.load_env(env)
    given = {key: value for key, value in env_cfg.connections().items() if key in declared}
    own = project.parameters_dir / env / f"{runbook}.yaml"
    sources = _file_sources(own, files)
    _refuse_guard(env, env_cfg, sources, overrides, pairs)
    for _, data in sources:
        given.update(data)
    given.update(overrides or {})
    for key, raw in pairs:
        given[key] = _pair_value(model_cls, key, raw)
    if "env" in declared:
        if given.get("env") not in (None, env):
            raise InvalidInput(f"parameter env={given['env']!r} contradicts --env {env!r}: "
                               "the environment is chosen once")
        given["env"] = env
    if approve is not None:
        _approve(given, runbook, declared, approve)
    refuse_known_secret_values(given)
    problems = [k for k in given if k not in declared and not sec.is_secret_name(k)]
    if problems:
        raise InvalidInput("; ".join(
            f"unknown parameter {k!r} for runbook {runbook!r} (its value is not shown: an unknown "
            f"name may hold a credential); known parameters: {', '.join(declared) or 'none'}"
            for k in problems))
    return given


def _file_sources(own: Path, files: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``parameters/<env>/<runbook>.yaml`` then each ``-f FILE`` (relative paths in them made absolute)."""
    sources: list[tuple[str, dict[str, Any]]] = []
    if own.exists():
        sources.append((str(own), load_mapping(own)))
    for f in files:
        data = load_mapping(f)
        for key in PATH_PARAMETERS:
            if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
                data[key] = str(Path(data[key]).expanduser().resolve())
        sources.append((f, data))
    return sources


def _refuse_guard(env: str, env_cfg: EnvConfig, sources: Sequence[tuple[str, dict[str, Any]]],
                  overrides: Mapping[str, Any] | None, pairs: Sequence[tuple[str, str]]) -> None:
    """The apply guard comes from ``env.yaml`` only: refuse it from a file, ``-p`` or the notebook."""
    guarded = [where for where, data in sources if GUARD in data] + \
        [f"-p {GUARD}" for key, _ in pairs if key == GUARD]
    if GUARD in (overrides or {}) and overrides[GUARD] != env_cfg.expected_context:
        guarded.append("the notebook")
    if guarded:
        raise InvalidInput(
            f"{GUARD} is the apply guard and comes from parameters/{env}/env.yaml only; "
            f"it was also given by {', '.join(guarded)}: remove it there")


def _pair_value(model_cls: type[ParamsBase], key: str, raw: str) -> Any:
    """One ``-p NAME VALUE``, parsed as the model's field type (size bounded, paths made absolute)."""
    if len(raw.encode("utf-8", "replace")) > MAX_VALUE_BYTES:
        raise InvalidInput(f"-p {key}: the value is larger than {MAX_VALUE_BYTES // 1024} KiB")
    field_info = model_cls.model_fields.get(key)
    try:
        value = parse_value(raw, field_info.annotation if field_info else Any)
    except InvalidInput as exc:
        raise InvalidInput(f"-p {key}: {exc}") from None
    if key in PATH_PARAMETERS and isinstance(value, str) and value and not os.path.isabs(value):
        value = str(Path(value).expanduser().resolve())
    return value


def _approve(given: dict[str, Any], runbook: str, declared: Sequence[str], approve: str) -> None:
    """``--approve ID``: sets ``approve_plan`` and ``dry_run=False``, for a runbook that has plans."""
    if "approve_plan" not in declared:
        raise InvalidInput(
            f"runbook {runbook!r} declares no approve_plan parameter: it changes nothing, "
            "so --approve does not apply"
        )
    if not re.fullmatch(r"[0-9a-f]{12}", approve):
        raise InvalidInput(f"--approve {approve!r} is not a plan id (12 hex digits, as printed by a dry run)")
    given["approve_plan"] = approve
    if "dry_run" in declared:
        given["dry_run"] = False


def explicit_values(model_cls: type[ParamsBase], namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The model's fields whose value in ``namespace`` differs from the default (what a person set).

    In JupyterLab the parameters cell holds every parameter; the ones left at
    their defaults must not hide what ``parameters/<env>/`` says (a
    ``prometheus_url = None`` left alone keeps the environment's URL).
    """
    out: dict[str, Any] = {}
    for name, info in model_cls.model_fields.items():
        if name not in namespace:
            continue
        value = namespace[name]
        if info.is_required() or value != info.get_default(call_default_factory=True):
            out[name] = value
    return out


def refuse_known_secret_values(given: Mapping[str, Any]) -> None:
    """A parameter must not carry a credential we know (it would land in the notebook)."""
    kubeconfig = given.get("kubeconfig") if isinstance(given.get("kubeconfig"), str) else None
    secrets = sec.known_secrets(kubeconfig)
    problems = []
    for key, value in given.items():
        text = json.dumps(value, default=str)
        for secret in secrets:
            if secret.value in text or json.dumps(secret.value)[1:-1] in text:
                problems.append(
                    f"parameter {key!r} holds the {secret.kind}: credentials never travel as "
                    "parameters (they would be written into the output notebook)"
                )
                break
    if problems:
        raise InvalidInput("; ".join(problems))


def new_run_dir(outputs: Path, env: str, runbook: str, now: _dt.datetime | None = None) -> Path:
    """``outputs/<env>/<runbook>/<UTC timestamp>/``, created (``-2``, ``-3`` ... on collision)."""
    stamp = (now or model.utcnow()).strftime("%Y%m%dT%H%M%SZ")
    base = outputs / env / runbook
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunbookError(f"cannot create a run directory under {base}")
