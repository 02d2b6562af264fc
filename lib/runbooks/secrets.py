"""The secret scan run on every run's outputs before anything is published.

Runbooks never display Secret data on purpose, but a stray ``print``, a
traceback or a library's repr can. So after each run the executed notebook
and the rendered HTML are scanned for three kinds of secret:

- PEM private keys (any ``-----BEGIN ... PRIVATE KEY-----`` block);
- the credentials of the kubeconfig in use: bearer tokens, passwords,
  client keys and auth-provider tokens of every user in it;
- values of secret-named environment variables (``*TOKEN*``, ``*PASSWORD*``,
  ``*SECRET*``, ``*API_KEY*`` ...; names ending in ``_FILE``/``_PATH``/``_DIR``
  hold a location, not a secret) longer than 6 characters.

Known values are also looked for base64-encoded (as Kubernetes Secret
``.data`` shows them) and HTML-escaped. A finding names the kind of secret and
where it is (cell index and part) but never the value; :func:`redact_notebook`
replaces every occurrence so the stored notebook no longer holds it.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PEM_BLOCK = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
PEM_KIND = "PEM private key"
REDACTED = "[REDACTED]"

SECRET_ENV = re.compile(
    r"TOKEN|PASSWORD|PASSWD|PASSPHRASE|SECRET|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL",
    re.IGNORECASE,
)
REFERENCE_ENV = re.compile(r"_(FILE|PATH|DIR|URL|NAME)$", re.IGNORECASE)
MIN_ENV_SECRET = 7

_KUBECONFIG_USER_FIELDS = {
    "token": "kubeconfig bearer token",
    "password": "kubeconfig password",
    "client-key-data": "kubeconfig client key",
}
_AUTH_PROVIDER_FIELDS = ("id-token", "refresh-token", "access-token", "client-secret")


@dataclass(frozen=True)
class Secret:
    """A value that must never appear in outputs, and what to call it in messages."""

    kind: str
    value: str


@dataclass(frozen=True)
class Leak:
    """Where a secret was found (never the value)."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.where}"


def kubeconfig_secrets(path: str | os.PathLike[str] | None) -> list[Secret]:
    """Credentials held by a kubeconfig file (every user), or none if unreadable."""
    if not path:
        return []
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    out: list[Secret] = []
    for entry in config.get("users") or []:
        user = (entry or {}).get("user") or {}
        for field, kind in _KUBECONFIG_USER_FIELDS.items():
            value = user.get(field)
            if isinstance(value, str) and len(value) >= 8:
                out.append(Secret(kind, value))
        token_file = user.get("tokenFile") or user.get("token-file")
        if token_file:
            try:
                value = Path(token_file).read_text().strip()
            except OSError:
                value = ""
            if len(value) >= 8:
                out.append(Secret("kubeconfig bearer token", value))
        provider = (user.get("auth-provider") or {}).get("config") or {}
        for field in _AUTH_PROVIDER_FIELDS:
            value = provider.get(field)
            if isinstance(value, str) and len(value) >= 8:
                out.append(Secret(f"kubeconfig auth-provider {field}", value))
    return out


def env_secrets(environ: Mapping[str, str] | None = None) -> list[Secret]:
    """Values of secret-named environment variables longer than 6 characters."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in environ.items():
        if SECRET_ENV.search(name) and not REFERENCE_ENV.search(name) and len(value) >= MIN_ENV_SECRET:
            out.append(Secret(f"value of environment variable {name}", value))
    return out


def known_secrets(kubeconfig: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> list[Secret]:
    """Every secret value to look for: the kubeconfig's credentials and secret env values.

    ``kubeconfig`` defaults to ``$KUBECONFIG`` (first file) or ``~/.kube/config``.
    """
    environ = os.environ if environ is None else environ
    if kubeconfig is None:
        kc = environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
        kubeconfig = kc
    seen: set[str] = set()
    out = []
    for s in kubeconfig_secrets(kubeconfig) + env_secrets(environ):
        if s.value not in seen:
            seen.add(s.value)
            out.append(s)
    return out


def _needles(secret: Secret) -> Iterator[str]:
    yield secret.value
    escaped = html.escape(secret.value)
    if escaped != secret.value:
        yield escaped
    dumped = json.dumps(secret.value)[1:-1]
    if dumped != secret.value:
        yield dumped
    yield base64.b64encode(secret.value.encode()).decode()


def scan_text(text: str, secrets: Iterable[Secret], where: str) -> list[Leak]:
    """Leaks in one piece of text: PEM private keys and any known secret value."""
    leaks = []
    if PEM_BLOCK.search(text):
        leaks.append(Leak(PEM_KIND, where))
    for secret in secrets:
        if any(n in text for n in _needles(secret)):
            leaks.append(Leak(secret.kind, where))
    return leaks


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _texts(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _texts(v)
    elif value is not None:
        yield str(value)


def _parts(nb: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    yield "notebook metadata", "\n".join(_texts(nb.get("metadata", {})))
    for index, cell in enumerate(nb.get("cells", [])):
        yield f"cell {index} source", "".join(_texts(cell.get("source", "")))
        outputs = cell.get("outputs") or []
        if outputs:
            yield f"cell {index} output", "\n".join(_texts(outputs))
        attachments = cell.get("attachments")
        if attachments:
            yield f"cell {index} attachments", "\n".join(_texts(attachments))


def scan_notebook(nb: Mapping[str, Any], secrets: Iterable[Secret], name: str = "executed notebook") -> list[Leak]:
    """Leaks in a notebook, located by cell index (0-based) and part (source/output)."""
    secrets = list(secrets)
    leaks: list[Leak] = []
    for where, text in _parts(nb):
        leaks.extend(scan_text(text, secrets, f"{name}, {where}"))
    return leaks


def _redact(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        value = PEM_BLOCK.sub(REDACTED, value)
        for n in needles:
            value = value.replace(n, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, needles) for v in value]
    return value


def redact(value: Any, secrets: Iterable[Secret]) -> Any:
    """A copy of a JSON-like value with every PEM key and known secret replaced by [REDACTED]."""
    needles = sorted({n for s in secrets for n in _needles(s)}, key=len, reverse=True)
    return _redact(value, needles)


def redact_notebook(nb: Any, secrets: Iterable[Secret]) -> Any:
    """Redact a notebook in place (cells and metadata) and return it."""
    secrets = list(secrets)
    for cell in nb["cells"]:
        for key in ("source", "outputs", "attachments"):
            if key in cell:
                cell[key] = redact(cell[key], secrets)
    nb["metadata"] = redact(nb["metadata"], secrets)
    return nb


def describe(leaks: Iterable[Leak]) -> str:
    """One line per distinct leak, for the CLI and summary.json (no values)."""
    seen: list[str] = []
    for leak in leaks:
        text = str(leak)
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)
