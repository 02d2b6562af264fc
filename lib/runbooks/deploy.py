"""Helm deploys for runbooks: vault secrets and values → helm → a plan against the live objects → apply, watch, verify, roll back.

Why this module exists: the seed's team deploys every service with a Helm
chart and keeps its secrets in Ansible Vault. The provision-service runbook
does the same, safely: it shows exactly what will change, applies only an
approved plan, watches the rollout, proves the service answers, and rolls
back when it does not.

Design choices:

- **The real ``helm`` binary does every write** (Helm 4: server-side apply,
  ``--wait=watcher``, release history in ``sh.helm.release.v1.*`` Secrets), so
  releases, ``helm history`` and ``helm rollback`` are exactly Helm's. This
  module decides what to ask Helm for and checks the result.
- **The plan is a server-side diff**, like ``kubectl diff --server-side``: the
  manifest Helm would apply (``helm upgrade --install --dry-run=server``) is
  server-side applied object by object with ``dryRun=All`` as field manager
  ``helm``, and each answer is compared field by field with the live object:
  *create*, *patch* (with the changed fields) or nothing; objects of the current
  release that the new manifest drops are *delete*. An identical re-run
  therefore plans nothing. The same diff against the manifest of the last
  good revision is the rollback plan.
- **Secrets** come from an Ansible Vault file decrypted in memory with
  ansible-core's ``VaultLib`` (the reference implementation of the format,
  maintained with Ansible itself) and the password from an environment
  variable named by a parameter. They reach Helm on stdin (``--values -``),
  never a file; a Secret's diff says only that its data changed; everything
  Helm prints is redacted of the secret values before it is shown or raised;
  :class:`VaultValues` never shows a value in its ``repr``.
- **Plans reuse** :mod:`runbooks.plans`: :class:`~runbooks.plans.Change` and
  :class:`~runbooks.plans.Plan` (the plan id) and the run's audit log, with the
  approval rules of ``runbook.Run.apply``. Applying a Helm release is not a
  list of API writes, so :func:`apply_release` and :func:`apply_rollback` take
  its place (see their docstrings).
- Like every backend module it returns plain data (dataclasses, dicts,
  DataFrames) and never draws; the notebook passes drawing callbacks from
  :mod:`runbooks.report` where a progress display or a button is wanted.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import yaml
from pydantic import Field, field_validator, model_validator

from . import kube
from .errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PlanInvalid,
    PreflightFailed,
    RunbookError,
    Unavailable,
    cut,
)
from .model import Finding, iso, record, utcnow
from .parameters import MutatingParams, project_root
from .plans import Change, Plan, diff
from .secrets import REDACTED, is_secret_name, redact_text

__all__ = [
    "ApplyResult",
    "Helm",
    "HelmFailed",
    "ProvisionParams",
    "ReleaseSpec",
    "VaultValues",
    "apply_release",
    "apply_rollback",
    "diagnose",
    "find_helm",
    "plan_release",
    "plan_rollback",
    "preflight",
    "read_vault",
    "render",
    "rollout_status",
    "verify",
]

RUNBOOK = "provision-service"
FIELD_MANAGER = "helm"  # Helm 4's server-side apply field manager: the dry runs apply as Helm will
HELM_MIN_MAJOR = 4
HELM_INSTALL_HINT = (
    "install Helm 4: `conda install -c conda-forge kubernetes-helm` (or your package manager), "
    "or, in this project's virtualenv, `python tools/install_helm.py` (what make and CI do)"
)
CERTIFICATE_APPEARS = 10.0  # seconds verification waits for cert-manager to create the Certificate
IGNORED_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid",
                "selfLink")


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class HelmFailed(RunbookError):
    """A helm command failed; the message is Helm's (redacted of secret values)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


# --------------------------------------------------------------------------
# Parameters (checked before a kernel starts and again in preflight)
# --------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?\Z")
_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
# distribution/reference: [domain[:port]/]path[:tag][@digest]
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?P<repository>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def parse_image(image: str) -> tuple[str, str, str]:
    """``repository:tag`` or ``repository@sha256:…`` → (repository, tag, digest).

    >>> parse_image("registry.example.com/shop/web:1.4.2")
    ('registry.example.com/shop/web', '1.4.2', '')

    Raises:
        ValueError: not an image reference, or one without a tag or digest.
    """
    m = _IMAGE.fullmatch(image or "")
    if not m or len(image) > 255:
        raise ValueError(f"image {image!r} is not a valid image reference "
                         "([registry[:port]/]path:tag or …@sha256:<64 hex>, lowercase path)")
    if not m["tag"] and not m["digest"]:
        raise ValueError(f"image {image!r} has no tag: name the version to deploy "
                         "(repository:tag, e.g. registry.example.com/shop/web:1.4.2, or a @sha256 digest)")
    return m["repository"], m["tag"] or "", m["digest"] or ""


def _check_quantities(resources: dict[str, Any]) -> dict[str, Any]:
    for section, values in resources.items():
        if section not in ("requests", "limits") or not isinstance(values, dict):
            raise ValueError(f"resources must look like {{'requests': {{...}}, 'limits': {{...}}}}; "
                             f"got key {section!r}")
        for name, qty in values.items():
            if name not in ("cpu", "memory", "ephemeral-storage"):
                raise ValueError(f"resources.{section}.{name}: allowed resources are cpu, memory, "
                                 "ephemeral-storage")
            if not _QUANTITY.fullmatch(str(qty)):
                raise ValueError(f"resources.{section}.{name} = {qty!r} is not a quantity "
                                 "(e.g. 250m, 0.5, 128Mi, 1Gi)")
    return resources


class ProvisionParams(MutatingParams):
    """Parameters of notebooks/provision-service.ipynb."""

    APPLY_PARAMETERS = ("auto_rollback", "timeout_seconds")  # the upgrade's --timeout decides a rollback

    release: str = Field(default="web", max_length=53)
    namespace: str = Field(default="web", max_length=63)
    create_namespace: bool = True
    chart: str = Field(default="charts/web-service", min_length=1)
    chart_version: str | None = None
    values_files: list[str] = Field(default_factory=list)
    image: str = "registry.example.com/web:1.0.0"
    replicas: int = Field(default=2, ge=0, le=1000)
    port: int = Field(default=8080, ge=1, le=65535)
    host: str = "web.example.com"
    ingress_class: str = "nginx"
    cluster_issuer: str = "letsencrypt-prod"
    resources: dict[str, dict[str, str]] = Field(default_factory=lambda: {
        "requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}})
    config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    vault_file: str | None = None
    vault_keys: dict[str, str] = Field(default_factory=dict)
    vault_password_env: str = "VAULT_PASSWORD"
    timeout_seconds: int = Field(default=300, ge=10, le=3600)
    auto_rollback: bool = False
    ingress_url: str | None = None
    ingress_ca_file: str | None = None
    verify_timeout_seconds: int = Field(default=60, ge=1, le=900)

    @field_validator("release", "namespace")
    @classmethod
    def _label(cls, value: str, info: Any) -> str:
        if not _LABEL.fullmatch(value):
            raise ValueError(f"{info.field_name} {value!r} is not a valid name (lowercase RFC 1123 "
                             "label: a-z, 0-9 and '-', starting and ending with a letter or digit)")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        parse_image(value)
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if len(value) > 253 or not _HOST.fullmatch(value):
            raise ValueError(f"host {value!r} is not a valid DNS name (lowercase labels of a-z, 0-9 "
                             "and '-' separated by dots, e.g. web.example.com)")
        return value

    @field_validator("cluster_issuer", "ingress_class")
    @classmethod
    def _object_name(cls, value: str, info: Any) -> str:
        if value and (len(value) > 253 or not re.fullmatch(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", value)):
            raise ValueError(f"{info.field_name} {value!r} is not a valid object name")
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_quantities(value)

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"config keys become environment variables; not valid names: {bad}")
        secret = [k for k in value if is_secret_name(k)]
        if secret:
            raise ValueError(f"config keys {secret} look like credentials: config values are written into the "
                             "output notebook and the release; take them from the vault with vault_keys")
        return value

    @field_validator("values_files")
    @classmethod
    def _values_files(cls, value: list[str]) -> list[str]:
        root = project_root()
        outside = [f for f in value if not Path(f).expanduser().resolve().is_relative_to(root)]
        if outside:
            raise ValueError(f"values files {outside} are outside the project ({root.name}/): "
                             "only files of the project are read")
        return value

    @field_validator("vault_keys")
    @classmethod
    def _vault_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"vault_keys maps environment variable names to vault keys; "
                             f"not valid variable names: {bad}")
        return value

    @field_validator("vault_password_env")
    @classmethod
    def _password_env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"vault_password_env {value!r} is not an environment variable name; it "
                             "names the variable holding the password, never the password itself")
        return value

    @field_validator("pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _QUALIFIED.fullmatch(k) or len(k) > 316]
        if bad:
            raise ValueError(f"not valid annotation keys: {bad}")
        return value

    @field_validator("ingress_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"ingress_url {value!r} must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _chart_config(self) -> ProvisionParams:
        if set(self.config) & set(self.vault_keys):
            raise ValueError(f"keys in both config and vault_keys: {sorted(set(self.config) & set(self.vault_keys))}")
        return self


# --------------------------------------------------------------------------
# The helm binary
# --------------------------------------------------------------------------


def find_helm(binary: str | None = None) -> str:
    """The path of a Helm 4 binary: ``binary``, else next to this Python (the venv), else on PATH.

    Raises:
        PreflightFailed: none found, or it is older than Helm 4, with how to install it (exit 2).
    """
    candidates = [binary] if binary else [str(Path(sys.executable).with_name("helm")), "helm"]
    for candidate in candidates:
        path = shutil.which(candidate) if os.sep not in candidate else (
            candidate if os.access(candidate, os.X_OK) else None)
        if not path:
            continue
        try:
            proc = subprocess.run([path, "version", "--template", "{{.Version}}"], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PreflightFailed(f"{path} does not run ({exc}); {HELM_INSTALL_HINT}") from exc
        version = proc.stdout.strip()
        m = re.match(r"v?(\d+)\.", version)
        if proc.returncode != 0 or not m:
            raise PreflightFailed(f"{path} did not report a version ({cut(proc.stderr)}); {HELM_INSTALL_HINT}")
        if int(m[1]) < HELM_MIN_MAJOR:
            raise PreflightFailed(f"{path} is Helm {version}; this runbook needs Helm {HELM_MIN_MAJOR} "
                              f"(server-side apply, --wait=watcher): {HELM_INSTALL_HINT}")
        return path
    raise PreflightFailed(f"Helm is not installed (no `helm` next to {sys.executable} or on PATH): "
                      f"{HELM_INSTALL_HINT}")


class Helm:
    """Runs ``helm`` against one kubeconfig context, every call with a timeout.

    Args:
        kubeconfig, context: where to connect (None: Helm's defaults, e.g. in-cluster).
        binary: the helm executable (default: :func:`find_helm`).
        timeout: seconds for commands that do not wait for a rollout.
        secrets: values to redact from anything Helm prints.
    """

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, *,
                 binary: str | None = None, timeout: float = 120.0,
                 secrets: Iterable[str] = ()) -> None:
        self.binary = find_helm(binary)
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = timeout
        self.secrets = list(secrets)

    def __repr__(self) -> str:
        return f"Helm({self.binary!r}, context={self.context!r})"

    def hide(self, secrets: VaultValues) -> None:
        """Redact these secret values too from everything helm prints from now on."""
        self.secrets.extend(secrets.values.values())

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [self.binary, *args]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--kube-context", self.context]
        return argv

    def run(self, *args: str, stdin: bytes | None = None, timeout: float | None = None,
            check: bool = True, parse: bool = False) -> subprocess.CompletedProcess[str]:
        """Run one helm command; stderr comes back redacted, and stdout unless ``parse``.

        ``parse=True`` is for output this module parses and never shows (manifests, release
        JSON): redacting it would corrupt Secret data and hide secret changes from the plan id.

        Raises:
            HelmFailed: non-zero exit (with ``check``) or the timeout passed (the process is killed).
        """
        limit = timeout or self.timeout
        try:
            proc = subprocess.run(self._argv(args), input=stdin, capture_output=True, timeout=limit,
                                  check=False, env=_helm_env())
        except subprocess.TimeoutExpired as exc:
            raise HelmFailed(f"helm {args[0]} did not finish within {limit:.0f}s and was stopped") from exc
        out = proc.stdout.decode("utf-8", "replace")
        out = out if parse else redact_text(out, self.secrets)
        err = redact_text(proc.stderr.decode("utf-8", "replace"), self.secrets)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise HelmFailed(f"helm {args[0]} failed: {_helm_error(err)}", proc.returncode)
        return result

    def run_watching(self, *args: str, stdin: bytes | None, timeout: float,
                     tick: Callable[[], None] | None = None, every: float = 1.0,
                     ) -> subprocess.CompletedProcess[str]:
        """Like :meth:`run` without ``check``, calling ``tick()`` every ``every`` s while helm runs."""
        proc = subprocess.Popen(self._argv(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_helm_env())
        box: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: box.update(out=proc.communicate(stdin)), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while reader.is_alive():
            reader.join(every)
            if tick is not None and reader.is_alive():
                try:
                    tick()
                except RunbookError:
                    pass  # a progress read that fails must not stop the rollout watch
            if time.monotonic() > deadline and reader.is_alive():
                proc.kill()
                reader.join(10)
                raise HelmFailed(f"helm {args[0]} did not finish within {timeout:.0f}s and was stopped")
        out, err = box.get("out", (b"", b""))
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, redact_text(out.decode("utf-8", "replace"), self.secrets),
            redact_text(err.decode("utf-8", "replace"), self.secrets))

    # -- read-only commands ------------------------------------------------------

    def history(self, release: str, namespace: str) -> list[dict[str, Any]]:
        """``helm history`` as dicts (revision, status, description, updated, chart), oldest first."""
        proc = self.run("history", release, "--namespace", namespace, "--max", "256", "-o", "json",
                        check=False)
        if proc.returncode != 0:
            if "not found" in proc.stderr:
                return []
            raise HelmFailed(f"helm history failed: {_helm_error(proc.stderr)}", proc.returncode)
        return sorted(json.loads(proc.stdout or "[]"), key=lambda r: r.get("revision", 0))

    def manifest(self, release: str, namespace: str, revision: int | None = None) -> str:
        args = ["get", "manifest", release, "--namespace", namespace]
        if revision is not None:
            args += ["--revision", str(revision)]
        return self.run(*args, parse=True).stdout

    def release(self, release: str, namespace: str, revision: int) -> dict[str, Any]:
        """One revision of a release as Helm stores it (``helm status --revision N -o json``): its
        manifest and its hooks (name, kind, path, events, weight, manifest). Never shown: it may hold
        Secret data."""
        proc = self.run("status", release, "--namespace", namespace, "--revision", str(revision), "-o", "json",
                        parse=True)
        return json.loads(proc.stdout or "{}")


def _helm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HELM_NO_UPDATE_NOTIFIER", "1")
    return env


def _helm_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("I1", "W1"))]
    return cut("\n".join(lines[-6:]) or "no message", 600)


# --------------------------------------------------------------------------
# Vault
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultValues:
    """Secret values decrypted from a vault: env var name → value. Never shown.

    ``repr``/``str`` name the keys and the source only; :attr:`values` is the
    one way in, for the values document given to Helm on stdin.
    """

    source: str = ""
    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"VaultValues({len(self.values)} key(s) {sorted(self.values)} from {self.source!r})"

    __str__ = __repr__

    @property
    def keys(self) -> list[str]:
        return sorted(self.values)

    def __bool__(self) -> bool:
        return bool(self.values)


NO_SECRETS = VaultValues()


def _vault_lib(password: str) -> Any:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])


def encrypt_vault(plaintext: str, password: str) -> str:
    """Encrypt text as ``ansible-vault encrypt`` does (``$ANSIBLE_VAULT;1.1;AES256``)."""
    return _vault_lib(password).encrypt(plaintext.encode()).decode()


def read_vault(path: str | os.PathLike[str] | None, password_env: str = "VAULT_PASSWORD",
               keys: Mapping[str, str] | None = None, *,
               environ: Mapping[str, str] | None = None) -> VaultValues:
    """Decrypt an Ansible Vault file in memory and pick the values to pass as secrets.

    The file is either encrypted as a whole (``ansible-vault encrypt``) and
    holds a YAML mapping, or a plain YAML mapping whose values are
    ``!vault``-tagged encrypted strings (``ansible-vault encrypt_string``).

    Args:
        path: the vault file (None: no secrets).
        password_env: the environment variable holding the vault password.
        keys: container env var name → key in the vault; empty: every key, as named.

    Raises:
        PreflightFailed: missing file or variable, wrong password, not a mapping, missing keys
            (exit 2: nothing was applied). Messages never contain a value from the vault.
    """
    if not path:
        return NO_SECRETS
    environ = os.environ if environ is None else environ
    password = environ.get(password_env)
    if not password:
        raise PreflightFailed(f"environment variable {password_env} (vault_password_env) is not set or "
                         f"empty: export the vault password there to decrypt {str(path)!r}")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PreflightFailed(f"vault file {str(path)!r} cannot be read: {exc.strerror}") from None
    from ansible.errors import AnsibleError

    vault = _vault_lib(password)
    try:
        if vault.is_encrypted(raw):
            text = vault.decrypt(raw).decode("utf-8")
            data = yaml.safe_load(text)
        else:
            data = yaml.load(raw, Loader=_vault_loader(vault))  # noqa: S506 - SafeLoader + !vault only
    except AnsibleError:
        raise PreflightFailed(f"cannot decrypt vault file {str(path)!r} with the password in ${password_env}: "
                         "wrong password, or not an Ansible Vault file") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise PreflightFailed(f"vault file {str(path)!r} does not hold YAML once decrypted") from None
    if not isinstance(data, dict):
        raise PreflightFailed(f"vault file {str(path)!r} must hold a mapping of names to values")
    wanted = dict(keys) if keys else {str(k): str(k) for k in data}
    missing = sorted(v for v in wanted.values() if v not in data)
    if missing:
        raise PreflightFailed(f"vault file {str(path)!r} has no key(s) {missing}; it has {sorted(map(str, data))}")
    bad = sorted(k for k in wanted if not _ENV_NAME.fullmatch(k))
    if bad:
        raise PreflightFailed(f"vault keys {bad} are not environment variable names: map them with vault_keys")
    values = {}
    for env_name, key in wanted.items():
        value = data[key]
        if isinstance(value, dict | list) or value is None:
            raise PreflightFailed(f"vault key {key!r} must hold a string or number, not {type(value).__name__}")
        values[env_name] = str(value).lower() if isinstance(value, bool) else str(value)
    return VaultValues(str(path), values)


def _vault_loader(vault: Any) -> type[yaml.SafeLoader]:
    class VaultLoader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> str:
        return vault.decrypt(loader.construct_scalar(node).encode()).decode("utf-8")

    VaultLoader.add_constructor("!vault", construct)
    return VaultLoader


# --------------------------------------------------------------------------
# What to deploy
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseSpec:
    """A release to install or upgrade: chart, values (never secrets) and limits.

    Build it from the runbook's parameters with :meth:`from_params`.
    """

    release: str
    namespace: str
    chart: str
    values: dict[str, Any]
    values_files: tuple[str, ...] = ()
    chart_version: str | None = None
    create_namespace: bool = True
    timeout: int = 300
    host: str = ""
    tls_secret: str = ""

    @classmethod
    def from_params(cls, p: Any, root: str | os.PathLike[str] | None = None) -> ReleaseSpec:
        """The spec for ``ProvisionParams`` ``p``; relative paths are relative to ``root``.

        ``root`` defaults to ``$RUNBOOKS_HOME`` (set by ``runbooks run``) or the working directory.
        """
        base = Path(root or os.environ.get("RUNBOOKS_HOME") or ".")
        repository, tag, digest = parse_image(p.image)
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "digest": digest},
            "replicaCount": p.replicas,
            "containerPort": p.port,
            "resources": p.resources,
            "config": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in p.config.items()},
            "podAnnotations": dict(p.pod_annotations),
            "ingress": {"enabled": True, "host": p.host, "className": p.ingress_class,
                        "clusterIssuer": p.cluster_issuer},
        }
        return cls(
            release=p.release, namespace=p.namespace, chart=_resolve(p.chart, base),
            values=values, values_files=tuple(_resolve(f, base) for f in p.values_files),
            chart_version=p.chart_version, create_namespace=p.create_namespace,
            timeout=p.timeout_seconds, host=p.host,
            tls_secret=f"{p.release}-tls" if p.cluster_issuer else "",
        )

    def values_document(self, secrets: VaultValues = NO_SECRETS) -> bytes:
        """The values Helm reads on stdin (``--values -``): parameters plus the vault's secrets."""
        doc = json.loads(json.dumps(self.values))
        if secrets:
            doc["secretEnv"] = dict(secrets.values)
        return yaml.safe_dump(doc, sort_keys=True).encode()

    def chart_args(self) -> list[str]:
        args = [self.release, self.chart, "--namespace", self.namespace]
        if self.chart_version:
            args += ["--version", self.chart_version]
        for f in self.values_files:
            args += ["--values", f]
        return args + ["--values", "-"]


def _resolve(path: str, base: Path) -> str:
    """A local path relative to ``base``; repository (``repo/chart``) and ``oci://`` references as given."""
    if "://" in path or Path(path).is_absolute():
        return path
    candidate = base / path
    local = candidate.exists() or path.startswith((".", "charts" + os.sep)) or path.endswith(".tgz")
    return str(candidate) if local else path


def helm_for(p: Any, secrets: VaultValues = NO_SECRETS) -> Helm:
    """A :class:`Helm` for the runbook's connection parameters that redacts ``secrets``."""
    return Helm(p.kubeconfig, p.kube_context, timeout=120, secrets=secrets.values.values())


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def parse_manifest(text: str, namespace: str) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest; namespaced ones without a namespace get ``namespace``."""
    objects = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            objects.extend(doc["items"])
        else:
            objects.append(doc)
    for obj in objects:
        obj.setdefault("metadata", {})
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"].setdefault("namespace", namespace)
    return objects


CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer",
                            "CustomResourceDefinition", "IngressClass", "PriorityClass",
                            "StorageClass", "PersistentVolume", "Node"})


def render(helm: Helm, spec: ReleaseSpec, secrets: VaultValues = NO_SECRETS) -> list[dict[str, Any]]:
    """``helm template`` of the release (no cluster needed): the objects it would create.

    Raises:
        HelmFailed: the chart does not render (schema violation, ``fail`` in a template).
    """
    proc = helm.run("template", *spec.chart_args(), stdin=spec.values_document(secrets), parse=True)
    return parse_manifest(proc.stdout, spec.namespace)


def objects_table(objects: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per rendered object: kind, name, and what matters about it (never Secret data)."""
    rows = []
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        kind = obj.get("kind", "")
        what = ""
        if kind == "Deployment":
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            what = f"{spec.get('replicas', '(hpa)')} replica(s), " + ", ".join(c.get("image", "") for c in containers)
        elif kind == "Service":
            what = ", ".join(f"{p.get('port')}→{p.get('targetPort')}" for p in spec.get("ports") or [])
        elif kind == "Ingress":
            hosts = [r.get("host") for r in spec.get("rules") or []]
            tls = [t.get("secretName") for t in spec.get("tls") or []]
            what = ", ".join(h for h in hosts if h) + (f" (TLS secret {', '.join(tls)})" if tls else "")
        elif kind == "ConfigMap":
            what = f"{len(obj.get('data') or {})} key(s): {', '.join(sorted(obj.get('data') or {}))}"
        elif kind == "Secret":
            what = f"{len(obj.get('data') or {})} key(s) (values not shown)"
        rows.append({"kind": kind, "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                     "summary": what})
    return pd.DataFrame(rows, columns=["kind", "namespace", "name", "summary"])


# --------------------------------------------------------------------------
# The API: discovery, reads, server-side dry runs
# --------------------------------------------------------------------------


def _ref(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


def get_live(cluster: Any, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live object for a manifest object, or None."""
    api_version, kind, ns, name = _ref(obj)
    res = kube.kind_for(cluster, api_version, kind)
    try:
        return kube.request(cluster, "GET", res.path(ns, name))
    except NotFound:
        return None


def dry_run_apply(cluster: Any, obj: Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
    """Server-side apply ``obj`` with ``dryRun=All`` as Helm would (field manager ``helm``).

    Raises:
        PlanInvalid: the server refused it (invalid object, field conflict ...).
    """
    api_version, kind, ns, name = _ref(obj)
    res = kube.kind_for(cluster, api_version, kind)
    query = [("dryRun", "All"), ("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict"),
             ("force", "true" if force else "false")]
    try:
        return kube.request(cluster, "PATCH", res.path(ns, name), query=query, body=dict(obj),
                              content_type="application/apply-patch+yaml")
    except (InvalidInput, Conflict, NotFound) as exc:
        raise PlanInvalid(f"the server-side dry run of {kind} {ns + '/' if ns else ''}{name} failed: "
                             f"{exc}") from exc


# --------------------------------------------------------------------------
# Field-level diff
# --------------------------------------------------------------------------


def _strip(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_META}
    out["metadata"] = meta
    return out


def diff_objects(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves from ``live`` to ``desired``: ``[{"path", "from", "to"}]``.

    Server-set metadata (``managedFields``, ``resourceVersion``, ``generation``,
    ``uid``, ``creationTimestamp``) and ``status`` are ignored; lists of
    objects with a ``name`` are matched by name (``containers[web].image``).
    """
    return diff(_strip(live), _strip(desired))


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _revision(history: list[dict[str, Any]]) -> int:
    return int(history[-1]["revision"]) if history else 0


def as_helm_applies(obj: Mapping[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """``obj`` with the ownership metadata Helm adds when it applies (its ``setMetadataVisitor``).

    Without them a dry run as field manager ``helm`` would remove what Helm's last apply set.
    """
    out = json.loads(json.dumps(obj))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), "app.kubernetes.io/managed-by": "Helm"}
    meta["annotations"] = {**(meta.get("annotations") or {}), "meta.helm.sh/release-name": release,
                           "meta.helm.sh/release-namespace": namespace}
    return out


def object_changes(cluster: Any, desired: list[dict[str, Any]], current: list[dict[str, Any]],
                   precondition: dict[str, Any], *, namespace_exists: bool = True,
                   ) -> tuple[list[Change], list[dict[str, Any]]]:
    """Changes that turn the live objects into ``desired`` (and drop what only ``current`` has).

    ``desired`` objects are what Helm sends (see :func:`as_helm_applies`).
    Returns the changes and one status row per object (for :func:`plan_table`).
    """
    changes: list[Change] = []
    rows: list[dict[str, Any]] = []
    wanted = {_ref(o) for o in desired}
    for obj in desired:
        api_version, kind, ns, name = _ref(obj)
        kube.kind_for(cluster, api_version, kind)
        live = get_live(cluster, obj) if namespace_exists else None
        body = {"sha256": _digest(obj)}  # what is applied, hashed: the plan id follows every value
        if live is None:
            if namespace_exists:
                dry_run_apply(cluster, obj)  # validates it; answers what would be created
            changes.append(Change(operation="create", kind=kind, namespace=ns or None, name=name,
                                     body=body, precondition=precondition))
            rows.append({"kind": kind, "namespace": ns, "name": name, "action": "create", "changes": ""})
            continue
        result = dry_run_apply(cluster, obj)
        diff = diff_objects(live, result)
        if kind == "Secret" and diff:
            diff = [{"path": "data", "from": REDACTED, "to": REDACTED}]  # changed-or-not only
        if not diff:
            rows.append({"kind": kind, "namespace": ns, "name": name, "action": "unchanged", "changes": ""})
            continue
        changes.append(Change(operation="patch", kind=kind, namespace=ns or None, name=name,
                                 diff=diff, body=body, precondition=precondition))
        rows.append({"kind": kind, "namespace": ns, "name": name, "action": "change",
                     "changes": "; ".join(d["path"] for d in diff)})
    for obj in current:
        if _ref(obj) in wanted:
            continue
        api_version, kind, ns, name = _ref(obj)
        try:
            kube.kind_for(cluster, api_version, kind)
        except InvalidInput:
            continue
        if get_live(cluster, obj) is None:
            continue
        changes.append(Change(operation="delete", kind=kind, namespace=ns or None, name=name,
                                 precondition=precondition))
        rows.append({"kind": kind, "namespace": ns, "name": name, "action": "delete", "changes": ""})
    return changes, rows


HOOK_EVENTS = {True: ("pre-install", "post-install"), False: ("pre-upgrade", "post-upgrade")}
"""The hook events ``helm upgrade --install`` runs: installing, or upgrading (``test`` hooks run only
under ``helm test``, which runbooks never call)."""
ROLLBACK_HOOK_EVENTS = ("pre-rollback", "post-rollback")
"""The hook events ``helm rollback`` runs: the hooks of the revision it rolls back to."""


def hook_and_crd_changes(cluster: Any, release: Mapping[str, Any], spec: ReleaseSpec, *, installing: bool,
                         precondition: dict[str, Any], events: Sequence[str] | None = None,
                         ) -> tuple[dict[str, list[Change]], dict[str, list[dict]]]:
    """What Helm sends besides the manifest: the hooks it will run and, on install, the chart's ``crds/``.

    Each becomes a change of the plan (shown, audited, and hashed into the plan id by the digest of
    what is sent), so a changed hook or CRD gives another plan id. ``events`` are the hook events
    the action runs (default: :data:`HOOK_EVENTS` of installing or upgrading; a rollback passes
    :data:`ROLLBACK_HOOK_EVENTS` and the target revision's release).
    """
    changes: dict[str, list[Change]] = {"hooks": [], "crds": []}
    rows: dict[str, list[dict]] = {"hooks": [], "crds": []}
    wanted = tuple(events) if events is not None else HOOK_EVENTS[installing]
    for hook in sorted(release.get("hooks") or [], key=lambda h: (h.get("weight") or 0, h.get("name") or "")):
        events = [e for e in hook.get("events") or [] if e in wanted]
        if not events:
            continue
        obj = yaml.safe_load(hook.get("manifest") or "") or {}
        if not isinstance(obj, dict):
            continue
        kind, name = obj.get("kind") or hook.get("kind") or "", (obj.get("metadata") or {}).get("name") or ""
        ns = (obj.get("metadata") or {}).get("namespace") or spec.namespace
        found = kube.kind_for(cluster, obj.get("apiVersion") or "v1", kind)
        digest = _digest(obj)
        shown = f"sha256 {digest[:16]}" if kind != "Secret" else REDACTED
        changes["hooks"].append(Change(
            operation="create", kind=kind, namespace=ns if found.namespaced else None, name=name,
            diff=[{"path": f"helm hook {','.join(events)} (weight {hook.get('weight') or 0}, "
                           f"from {hook.get('path', '')})", "from": None, "to": shown}],
            body={"sha256": digest}, precondition={**precondition, "hook": events}))
        rows["hooks"].append({"kind": kind, "namespace": ns, "name": name, "action": f"hook {','.join(events)}",
                              "changes": f"{hook.get('path', '')}: {shown}"})
    if not installing:  # Helm installs crds/ only with the release, and never upgrades them
        return changes, rows
    for f in (release.get("chart") or {}).get("files") or []:
        if not str(f.get("name", "")).startswith("crds/"):
            continue
        try:
            text = base64.b64decode(f.get("data") or "").decode("utf-8")
        except ValueError:
            continue
        for obj in yaml.safe_load_all(text):
            if not isinstance(obj, dict) or obj.get("kind") != "CustomResourceDefinition":
                continue
            name = (obj.get("metadata") or {}).get("name") or ""
            kube.kind_for(cluster, obj.get("apiVersion") or "apiextensions.k8s.io/v1", "CustomResourceDefinition")
            exists = get_live(cluster, obj) is not None
            if exists:  # Helm skips a CRD that exists already
                rows["crds"].append({"kind": "CustomResourceDefinition", "namespace": "", "name": name,
                                     "action": "unchanged", "changes": f"{f['name']}: exists (Helm keeps it)"})
                continue
            digest = _digest(obj)
            changes["crds"].append(Change(
                operation="create", kind="CustomResourceDefinition", name=name,
                diff=[{"path": f"CRD from {f['name']}", "from": None, "to": f"sha256 {digest[:16]}"}],
                body={"sha256": digest}, precondition=precondition))
            rows["crds"].append({"kind": "CustomResourceDefinition", "namespace": "", "name": name,
                                 "action": "create", "changes": f"{f['name']}"})
    return changes, rows


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
                                    body={"sha256": _digest(spec.namespace)}, precondition=precondition))
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


# --------------------------------------------------------------------------
# Preflight
# --------------------------------------------------------------------------


def preflight(cluster: Any, helm: Helm, spec: ReleaseSpec, p: Any) -> list[Finding]:
    """Cluster-side checks before anything is planned; a blocking problem raises.

    Namespace exists or will be created, the host is not another Ingress's,
    the ClusterIssuer exists, the chart exists, Helm is present, the vault is
    readable (checked by :func:`read_vault`).

    Raises:
        PreflightFailed: naming every blocking problem (exit 2, nothing changed).
    """
    problems: list[str] = []
    findings: list[Finding] = []
    resource = f"Release/{spec.namespace}/{spec.release}"
    if namespace_exists(cluster, spec.namespace):
        findings.append(Finding(id=f"preflight/namespace/{spec.namespace}", severity="ok",
                                   title=f"namespace {spec.namespace} exists", resource=resource))
    elif spec.create_namespace:
        findings.append(Finding(id=f"preflight/namespace/{spec.namespace}", severity="info",
                                   title=f"namespace {spec.namespace} will be created", resource=resource))
    else:
        problems.append(f"namespace {spec.namespace!r} does not exist (set create_namespace=True to create it)")
    for ing in _list(cluster, "/apis/networking.k8s.io/v1/ingresses"):
        meta = ing["metadata"]
        if (meta.get("namespace"), meta.get("name")) == (spec.namespace, spec.release):
            continue
        hosts = {r.get("host") for r in (ing.get("spec") or {}).get("rules") or []}
        if spec.host in hosts:
            problems.append(f"host {spec.host!r} is already served by Ingress "
                            f"{meta.get('namespace')}/{meta['name']}: choose another host or remove that rule")
    issuer = p.cluster_issuer
    if issuer:
        try:
            kube.request(cluster, "GET", f"/apis/cert-manager.io/v1/clusterissuers/{issuer}")
            findings.append(Finding(id=f"preflight/issuer/{issuer}", severity="ok",
                                       title=f"ClusterIssuer {issuer} exists", resource=f"ClusterIssuer/{issuer}"))
        except NotFound:
            names = [i["metadata"]["name"] for i in _list(cluster, "/apis/cert-manager.io/v1/clusterissuers")]
            problems.append(f"ClusterIssuer {issuer!r} does not exist (cert-manager could not issue the "
                            f"certificate); existing: {', '.join(names) or 'none'}")
    problem = check_chart(helm, spec)
    if problem:
        problems.append(problem)
    for f in spec.values_files:
        if not Path(f).is_file():
            problems.append(f"values file {f!r} does not exist")
    if p.vault_file and not Path(p.vault_file).is_file():
        problems.append(f"vault file {p.vault_file!r} does not exist")
    if problems:
        raise PreflightFailed("preflight of provision-service: " + "; ".join(problems))
    return findings


def check_chart(helm: Helm, spec: ReleaseSpec) -> str | None:
    """Why the chart cannot be used, or None: a local directory needs Chart.yaml; a repository or
    OCI reference must resolve (``helm show chart``)."""
    chart = Path(spec.chart)
    if chart.is_dir():
        return None if (chart / "Chart.yaml").is_file() else f"chart {spec.chart!r} is a directory without Chart.yaml"
    if chart.is_file():
        return None
    if "://" not in spec.chart and (chart.is_absolute() or spec.chart.startswith(".") or spec.chart.endswith(".tgz")
                                    or (chart.parent.exists() and str(chart.parent) not in ("", "."))):
        return (f"chart {spec.chart!r} does not exist; give a chart directory, a packaged .tgz, a "
                "repository reference (repo/chart) or an oci:// reference")
    args = ["show", "chart", spec.chart] + (["--version", spec.chart_version] if spec.chart_version else [])
    proc = helm.run(*args, timeout=60, check=False)
    if proc.returncode != 0:
        return f"chart {spec.chart!r} cannot be found: {_helm_error(proc.stderr)}"
    return None


def _list(cluster: Any, path: str) -> list[dict[str, Any]]:
    try:
        return (kube.request(cluster, "GET", path) or {}).get("items") or []
    except NotFound:
        return []


# --------------------------------------------------------------------------
# Approval and apply
# --------------------------------------------------------------------------


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
                       message="" if ok else _helm_error(proc.stderr))


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


# --------------------------------------------------------------------------
# Rollout status and diagnosis
# --------------------------------------------------------------------------


def _deployments(cluster: Any, spec: ReleaseSpec) -> list[dict[str, Any]]:
    return _list_selected(cluster, f"/apis/apps/v1/namespaces/{spec.namespace}/deployments",
                          f"app.kubernetes.io/instance={spec.release}")


def _list_selected(cluster: Any, path: str, selector: str = "", fields: str = "") -> list[dict[str, Any]]:
    query = [("labelSelector", selector)] if selector else []
    if fields:
        query.append(("fieldSelector", fields))
    try:
        return (kube.request(cluster, "GET", path, query=query) or {}).get("items") or []
    except NotFound:
        return []


def rollout_status(cluster: Any, spec: ReleaseSpec) -> dict[str, Any]:
    """The release's Deployments summed up: desired/updated/ready/available and whether it is complete."""
    desired = updated = ready = available = 0
    reasons = []
    deployments = _deployments(cluster, spec)
    complete = bool(deployments)
    for d in deployments:
        st, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
        desired += want
        updated += st.get("updatedReplicas", 0)
        ready += st.get("readyReplicas", 0)
        available += st.get("availableReplicas", 0)
        progressing = kube.condition(d, "Progressing")
        reasons.append(progressing.get("reason", ""))
        complete &= (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
                     and st.get("updatedReplicas", 0) == want and st.get("availableReplicas", 0) >= want
                     and st.get("replicas", 0) == want)
    return {"deployments": len(deployments), "desired": desired, "updated": updated, "ready": ready,
            "available": available, "complete": complete, "reason": ", ".join(r for r in reasons if r)}


def diagnose(cluster: Any, spec: ReleaseSpec, *, events_per_pod: int = 5) -> tuple[pd.DataFrame, list[Finding]]:
    """Pods of the release that are not ready: container, reason, restarts, message and their events.

    Returns a table (one row per unhealthy container) and one critical finding per stuck pod.
    """
    rows, findings = [], []
    pods = _list_selected(cluster, f"/api/v1/namespaces/{spec.namespace}/pods",
                          f"app.kubernetes.io/instance={spec.release}")
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        bad = []
        for st in status.get("containerStatuses") or []:
            waiting = (st.get("state") or {}).get("waiting") or {}
            last = (st.get("lastState") or {}).get("terminated") or {}
            if st.get("ready"):
                continue
            reason = waiting.get("reason") or (
                f"{last['reason']} (restarting)" if last.get("reason") and st.get("restartCount") else
                last.get("reason")) or "NotReady"
            bad.append({"container": st["name"], "reason": reason, "restarts": st.get("restartCount", 0),
                        "last_exit": last.get("exitCode"), "last_termination": last.get("reason", ""),
                        "message": cut(waiting.get("message", ""), 160)})
        if not bad and status.get("phase") in ("Running", "Succeeded"):
            continue
        events = _list_selected(cluster, f"/api/v1/namespaces/{spec.namespace}/events",
                                fields=f"involvedObject.name={meta['name']}")
        # warnings last, so that the newest ones are kept
        events.sort(key=lambda e: (e.get("type") == "Warning", e.get("lastTimestamp") or e.get("eventTime") or ""))
        lines = [f"{e.get('type', '')} {e.get('reason', '')}: {cut(e.get('message', ''), 140)}"
                 + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else "")
                 for e in events[-events_per_pod:]]
        for b in bad or [{"container": "", "reason": status.get("phase", "Pending"), "restarts": 0,
                          "last_exit": None, "last_termination": "", "message": ""}]:
            rows.append({"pod": meta["name"], **b, "events": " | ".join(lines)})
        reasons = sorted({b["reason"] for b in bad}) or [status.get("phase", "Pending")]
        findings.append(Finding(
            id=f"stuck-pod/{spec.namespace}/{meta['name']}", severity="critical",
            title=f"pod {meta['name']} is not ready: {', '.join(reasons)}",
            detail="; ".join(lines[-3:]) or "no events", resource=f"Pod/{spec.namespace}/{meta['name']}",
            evidence={"containers": bad, "events": lines}))
    cols = ["pod", "container", "reason", "restarts", "last_exit", "last_termination", "message", "events"]
    return pd.DataFrame(rows, columns=cols), findings


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


def release_history(helm: Helm, spec: ReleaseSpec) -> pd.DataFrame:
    """``helm history`` as a table."""
    rows = helm.history(spec.release, spec.namespace)
    cols = ["revision", "updated", "status", "chart", "app_version", "description"]
    return pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass
class Probe:
    """One HTTP(S) request through the ingress endpoint."""

    url: str
    host: str
    status: int | None = None
    body: str = ""
    error: str = ""
    certificate: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def http_probe(base_url: str, host: str, path: str = "/", *, ca_file: str | None = None,
               timeout: float = 5.0) -> Probe:
    """GET ``path`` from ``base_url`` with ``Host: host`` (and SNI ``host`` over HTTPS, verified).

    TLS verification is on: against ``ca_file`` when given, else the system trust store.
    """
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    probe = Probe(url=f"{parts.scheme}://{host}{path} via {parts.hostname}:{port}", host=host)
    started = time.monotonic()
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_file)
            sock = ctx.wrap_socket(sock, server_hostname=host)
            probe.certificate = _peer(sock)
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request("GET", path, headers={"Host": host, "User-Agent": "kube-runbooks/provision-service"})
        resp = conn.getresponse()
        probe.status = resp.status
        probe.body = resp.read(4096).decode("utf-8", "replace")
        conn.close()
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        probe.error = f"{type(exc).__name__}: {cut(str(exc), 200)}"
    probe.seconds = round(time.monotonic() - started, 3)
    return probe


def _peer(sock: ssl.SSLSocket) -> dict[str, Any]:
    cert = sock.getpeercert() or {}
    subject = dict(x[0] for x in cert.get("subject", ()))
    issuer = dict(x[0] for x in cert.get("issuer", ()))
    der = sock.getpeercert(binary_form=True) or b""
    return {"subject": subject.get("commonName", ""), "issuer": issuer.get("commonName", ""),
            "not_after": cert.get("notAfter", ""), "dns_names": [v for k, v in cert.get("subjectAltName", ())
                                                                if k == "DNS"],
            "sha256": hashlib.sha256(der).hexdigest()}


def ingress_address(cluster: Any, spec: ReleaseSpec) -> str | None:
    """``https://ADDRESS[:PORT]`` from the Ingress's load balancer status, if it has one."""
    try:
        ing = kube.request(cluster, "GET",
                             f"/apis/networking.k8s.io/v1/namespaces/{spec.namespace}/ingresses/{spec.release}")
    except NotFound:
        return None
    for lb in ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        addr = lb.get("hostname") or lb.get("ip")
        if not addr:
            continue
        ports = {p.get("port") for p in lb.get("ports") or []}
        scheme = "https" if spec.tls_secret else "http"
        default = 443 if scheme == "https" else 80
        port = default if not ports or default in ports else sorted(ports)[0]
        return f"{scheme}://{addr}" + ("" if port == default else f":{port}")
    return None


def recheck(cluster: Any, spec: ReleaseSpec, plan: Plan, result: ApplyResult,
            findings: Iterable[Finding]) -> list[Finding]:
    """After an applied plan, the preflight's finding about the namespace as it is now.

    The dry run says "namespace NS will be created"; once the approved plan
    created it, that describes a state that is gone: the finding is recorded
    again as it is now ("namespace NS exists") so the run reports no stale plan.
    """
    from . import resolution

    if not result.applied:
        return []
    key = f"preflight/namespace/{spec.namespace}"
    before = [f for f in findings if f.id == key]
    after = [Finding(id=key, severity="ok", title=f"namespace {spec.namespace} exists (created by plan {plan.id})",
                        resource=f"Release/{spec.namespace}/{spec.release}")] \
        if namespace_exists(cluster, spec.namespace) else []
    return resolution.reevaluate(before, after, {f.resource for f in before if f.resource}, plan.id)


def verify(cluster: Any, helm: Helm, spec: ReleaseSpec, *, ingress_url: str | None = None,
           ca_file: str | None = None, timeout: float = 60.0, path: str = "/",
           ) -> tuple[pd.DataFrame, list[Finding]]:
    """Prove the service works: Deployment available, Service endpoints ready, a request through the
    ingress answered, and (where cert-manager runs) the host's certificate issued and served.

    Each check waits up to ``timeout`` seconds in total. Returns a table (one row per check) and
    findings: ``ok`` when a check passed, ``critical`` when it failed, ``info`` when it could not run.
    """
    deadline = time.monotonic() + timeout
    res = f"Release/{spec.namespace}/{spec.release}"
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []

    def add(check: str, severity: str, title: str, detail: str = "", evidence: Any = None) -> None:
        rows.append({"check": check, "result": "passed" if severity == "ok" else
                     ("not checked" if severity == "info" else "FAILED"), "detail": title})
        findings.append(Finding(id=f"verify/{check}/{spec.namespace}/{spec.release}", severity=severity,
                                   title=title, detail=detail, resource=res, evidence=evidence))

    if not helm.history(spec.release, spec.namespace):
        add("release", "info", f"release {spec.release} is not installed: nothing to verify yet")
        return pd.DataFrame(rows, columns=["check", "result", "detail"]), findings

    status = _wait(lambda: rollout_status(cluster, spec), lambda s: s["complete"], deadline)
    if status["complete"]:
        add("deployment", "ok", f"Deployment available: {status['available']}/{status['desired']} pods, "
            "rollout complete", evidence=status)
    else:
        add("deployment", "critical", f"Deployment not available: {status['available']}/{status['desired']} "
            f"available, {status['updated']} updated ({status['reason'] or 'no progress'})", evidence=status)

    def endpoints() -> int:
        try:
            ep = kube.request(cluster, "GET", f"/api/v1/namespaces/{spec.namespace}/endpoints/{spec.release}")
        except NotFound:
            return 0
        return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])

    ready = _wait(endpoints, bool, deadline)
    if ready:
        add("endpoints", "ok", f"Service {spec.release} has {ready} ready endpoint(s)")
    else:
        add("endpoints", "critical", f"Service {spec.release} has no ready endpoint: every request fails")

    base = ingress_url or ingress_address(cluster, spec)
    probe: Probe | None = None
    if not base:
        add("http", "info", "request through the ingress not checked: no ingress_url and the Ingress has "
            "no load balancer address")
    else:
        probe = _wait(lambda: http_probe(base, spec.host, path, ca_file=ca_file),
                      lambda pr: pr.status is not None and 200 <= pr.status < 400, deadline)
        evidence = {"url": probe.url, "status": probe.status, "seconds": probe.seconds,
                    "body": cut(probe.body, 200), "certificate": probe.certificate}
        if probe.status is not None and 200 <= probe.status < 400:
            add("http", "ok", f"GET {probe.url} answered {probe.status}", cut(probe.body, 200), evidence)
        else:
            add("http", "critical", f"GET {probe.url} failed: {probe.error or f'HTTP {probe.status}'}",
                cut(probe.body, 200), evidence)
    _verify_certificate(cluster, spec, probe, deadline, add)
    return pd.DataFrame(rows, columns=["check", "result", "detail"]), findings


def _verify_certificate(cluster: Any, spec: ReleaseSpec, probe: Probe | None, deadline: float,
                        add: Callable[..., None]) -> None:
    if not spec.tls_secret:
        add("certificate", "info", "no TLS: cluster_issuer is empty")
        return
    path = f"/apis/cert-manager.io/v1/namespaces/{spec.namespace}/certificates/{spec.tls_secret}"

    def ready() -> dict[str, Any] | None:
        try:
            cert = kube.request(cluster, "GET", path)
        except (NotFound, InvalidInput, Unavailable):
            return None
        return cert if kube.condition(cert, "Ready").get("status") == "True" else {"pending": cert}

    # ingress-shim creates the Certificate within seconds of the Ingress: wait briefly for it to
    # appear (it never will without cert-manager), then up to the deadline for it to be issued
    cert = _wait(ready, lambda c: c is not None, min(deadline, time.monotonic() + CERTIFICATE_APPEARS))
    if cert is not None:
        cert = _wait(ready, lambda c: c is not None and "pending" not in c, deadline)
    if cert is None:
        add("certificate", "info", f"certificate not checked: no cert-manager Certificate {spec.tls_secret} "
            "(cert-manager is not running here, or has not seen the Ingress)")
        return
    if "pending" in cert:
        why = kube.condition(cert["pending"], "Ready").get("message", "not Ready")
        add("certificate", "critical", f"Certificate {spec.tls_secret} is not issued: {cut(why, 200)}")
        return
    served = (probe.certificate if probe else {}) or {}
    if served and spec.host not in served.get("dns_names", []):
        add("certificate", "critical", f"the certificate served for {spec.host} does not name it "
            f"(names {served.get('dns_names')})", evidence=served)
        return
    add("certificate", "ok", f"Certificate {spec.tls_secret} is issued"
        + (f" and served for {spec.host} (issuer {served.get('issuer')}, until {served.get('not_after')})"
           if served else ""), evidence=served or None)


def _wait(fetch: Callable[[], Any], good: Callable[[Any], bool], deadline: float, every: float = 1.0) -> Any:
    value = fetch()
    while not good(value) and time.monotonic() < deadline:
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
        value = fetch()
    return value

