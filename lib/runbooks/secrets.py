"""Secrets: the one secret-name rule, the one redaction format, the one output scan.

Credentials never travel as parameters (:func:`is_secret_name`), Secret objects
are redacted where they are read (:mod:`runbooks.kube` applies :func:`redact_secret` to every
answer), values read on purpose are remembered for the scan (:func:`remember`), and whatever is shown
in place of a secret is :data:`REDACTED` (or :func:`redacted_digest` where two
values must stay comparable, as in backups).

The scan runs on every run's outputs before anything is published.

Runbooks never display Secret data on purpose, but a stray ``print``, a
traceback or a library's repr can. So after each run the executed notebook
and the rendered HTML are scanned for three kinds of secret:

- PEM private keys (any ``-----BEGIN ... PRIVATE KEY-----`` block);
- the credentials of the kubeconfig in use: bearer tokens, passwords,
  client keys and auth-provider tokens of every user in it;
- values of secret-named environment variables (the same rule as parameter
  names, :func:`is_secret_name`: ``*_TOKEN``, ``*_PASSWORD``, ``*_API_KEY`` ...;
  ``*_FILE``/``*_PATH``/``*_ENV`` hold a location, not a secret) of 7+ characters.

Known values are also looked for base64-encoded (as Kubernetes Secret
``.data`` shows them) and HTML-escaped. A finding names the kind of secret and
where it is (cell index and part) but never the value; :func:`redact_notebook`
replaces every occurrence so the stored notebook no longer holds it.
"""

from __future__ import annotations

import base64
import hashlib
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
REDACTED = "<redacted>"
"""What is shown in place of a secret value, everywhere."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

MIN_ENV_SECRET = 7
SHELL_ENV = frozenset({"PWD", "OLDPWD"})
"""Environment variables whose names look secret but hold the shell's working directories."""

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
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError, RecursionError):  # not a kubeconfig: connect() says so
        return []
    users = config.get("users") if isinstance(config, dict) else None
    out: list[Secret] = []
    for entry in users if isinstance(users, list) else []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
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
        provider = (user.get("auth-provider") or {}).get("config") or {} \
            if isinstance(user.get("auth-provider"), dict) else {}
        provider = provider if isinstance(provider, dict) else {}
        for field in _AUTH_PROVIDER_FIELDS:
            value = provider.get(field)
            if isinstance(value, str) and len(value) >= 8:
                out.append(Secret(f"kubeconfig auth-provider {field}", value))
    return out


def env_secrets(environ: Mapping[str, str] | None = None) -> list[Secret]:
    """Values of secret-named environment variables (:func:`is_secret_name`) of 7+ characters."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in environ.items():
        if name not in SHELL_ENV and is_secret_name(name) and len(value) >= MIN_ENV_SECRET:
            out.append(Secret(f"value of environment variable {name}", value))
    return out


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def in_cluster_secrets(path: str = SERVICE_ACCOUNT_TOKEN) -> list[Secret]:
    """The pod's ServiceAccount token, when running in a cluster."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return []
    return [Secret("in-cluster ServiceAccount token", value)] if len(value) >= 8 else []


def client_secrets(configuration: Any) -> list[Secret]:
    """Credentials a connected Kubernetes client holds (an exec plugin's token, a refreshed one)."""
    out = []
    for value in (getattr(configuration, "api_key", None) or {}).values():
        if isinstance(value, str):
            token = value.removeprefix("Bearer ").strip()
            if len(token) >= 8:
                out.append(Secret("Kubernetes client token", token))
    password = getattr(configuration, "password", None)
    if isinstance(password, str) and len(password) >= 8:
        out.append(Secret("Kubernetes client password", password))
    return out


def known_secrets(kubeconfig: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None, extra: Iterable[Secret] = ()) -> list[Secret]:
    """Every secret value to look for: the kubeconfig's credentials, secret env values, the
    in-cluster token, what this process read on purpose (:func:`remember`) and ``extra`` (e.g.
    :func:`client_secrets`, vault values).

    ``kubeconfig`` defaults to ``$KUBECONFIG`` (first file) or ``~/.kube/config``.
    """
    environ = os.environ if environ is None else environ
    if kubeconfig is None:
        kc = environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
        kubeconfig = kc
    seen: set[str] = set()
    out = []
    for s in (kubeconfig_secrets(kubeconfig) + env_secrets(environ) + in_cluster_secrets() + remembered()
              + list(extra)):
        if s.value not in seen:
            seen.add(s.value)
            out.append(s)
    return out


def _b64_at(raw: bytes, offset: int, alphabet: Any = base64.b64encode) -> str:
    """The base64 characters that encode ``raw`` wherever it starts ``offset`` bytes into a value.

    Only the characters fully determined by ``raw`` are kept: the first and last ones
    depend on the bytes around it.
    """
    text = alphabet(b"\0" * offset + raw).decode().rstrip("=")
    head = {0: 0, 1: 2, 2: 3}[offset]
    tail = ((offset + len(raw)) * 8) // 6  # characters fully inside offset + raw
    return text[head:tail]


def _needles(secret: Secret) -> Iterator[str]:
    """The secret as it may appear: raw, escaped, base64 at each of the three offsets (standard and
    URL-safe alphabets), hex and URL-encoded."""
    from urllib.parse import quote

    value = secret.value
    yield value
    escaped = html.escape(value)
    if escaped != value:
        yield escaped
    dumped = json.dumps(value)[1:-1]
    if dumped != value:
        yield dumped
    raw = value.encode()
    for offset in (0, 1, 2):
        for alphabet in (base64.b64encode, base64.urlsafe_b64encode):
            text = _b64_at(raw, offset, alphabet)
            if len(text) >= 8:
                yield text
    yield raw.hex()
    yield raw.hex().upper()
    quoted = quote(value, safe="")
    if quoted != value:
        yield quoted


def scan_text(text: str, secrets: Iterable[Secret], where: str) -> list[Leak]:
    """Leaks in one piece of text: PEM private keys and any known secret value."""
    leaks = []
    folded = fold(text)
    if PEM_BLOCK.search(text) or _PEM_FOLDED.search(folded):
        leaks.append(Leak(PEM_KIND, where))
    for kind, shape in SHAPES:
        if shape.search(text) or shape.search(folded):
            leaks.append(Leak(kind, where))
    kind = encoded_key(fold(PEM_BLOCK.sub("", text)))  # a PEM block's body is that key again: one leak
    if kind:
        leaks.append(Leak(kind, where))
    for secret in secrets:
        if any(n in text or n in folded for n in _needles(secret)):
            leaks.append(Leak(secret.kind, where))
    return leaks


SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("JSON Web Token", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])")),
    ("GitHub token", re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("Slack token", re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}")),
    ("PGP private key", re.compile(r"-----BEGIN PGP PRIVATE KEY BLOCK-----")),
    ("PuTTY private key", re.compile(r"PuTTY-User-Key-File-\d+:")),
)
"""Shapes of secrets nobody told us about: tokens and keys recognisable by their form."""

_PEM_FOLDED = re.compile(r"-----BEGIN[A-Z0-9]*PRIVATEKEY-----")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{44,}={0,2}")
_FOLD = re.compile(r"(?:\\n|\\r|\s|\"\s*\+?\s*\")+")


def fold(text: str) -> str:
    """``text`` without line breaks, escaped line breaks and spaces (a token split over lines)."""
    return _FOLD.sub("", text)


def _der_private_key(data: bytes) -> bool:
    """ASN.1 DER of a private key: SEQUENCE, then version INTEGER 0 or 1, then an INTEGER,
    SEQUENCE or OCTET STRING (PKCS#1 RSA, PKCS#8, SEC1 EC). A certificate's SEQUENCE
    starts with another SEQUENCE and does not match."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    i = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
    return data[i:i + 3] in (b"\x02\x01\x00", b"\x02\x01\x01") and len(data) > i + 3 and \
        data[i + 3] in (0x02, 0x30, 0x04)


def encoded_key(text: str) -> str | None:
    """The kind of private key some base64 in ``text`` holds (PEM text, or DER with no header), if any."""
    for match in _BASE64_RUN.finditer(text):
        run = match.group(0).replace("-", "+").replace("_", "/").rstrip("=")
        for start in (0, 1, 2, 3):  # the run may begin anywhere inside a 4-character group
            chunk = run[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            try:
                data = base64.b64decode(chunk[:4096])
            except ValueError:
                continue
            if start == 0 and _der_private_key(data):
                return "DER private key (base64)"
            if b"PRIVATE KEY-----" in data or b"PRIVATE KEY BLOCK-----" in data:
                return "PEM private key (base64)"
            if b"-----BEGIN" in data and b"PRIVATE" in data:
                return "PEM private key (base64)"
    return None


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
        for _, shape in SHAPES:
            value = shape.sub(REDACTED, value)
        value = _BASE64_RUN.sub(lambda m: REDACTED if encoded_key(m.group(0)) else m.group(0), value)
        for n in needles:
            value = value.replace(n, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, needles) for v in value]
    return value


def redact(value: Any, secrets: Iterable[Secret]) -> Any:
    """A copy of a JSON-like value with every PEM key and known secret replaced by :data:`REDACTED`."""
    needles = sorted({n for s in secrets for n in _needles(s)}, key=len, reverse=True)
    return _redact(value, needles)


def redact_text(text: str, values: Iterable[str], kind: str = "secret value") -> str:
    """``text`` with each of ``values`` (raw, base64, escaped) and any PEM key replaced."""
    return redact(text, [Secret(kind, v) for v in values if v and len(v) >= 4])


def redacted_digest(value: Any) -> str:
    """``<redacted sha256:…>``: a secret value replaced, still comparable with another."""
    return f"<redacted sha256:{hashlib.sha256(str(value).encode()).hexdigest()}>"


_REDACTED_VALUE = re.compile(r"<redacted(?: sha256:[0-9a-f]{64})?>")


def _digest_once(value: Any) -> str:
    """:func:`redacted_digest` of a value, leaving one that is redacted already as it is."""
    return value if isinstance(value, str) and _REDACTED_VALUE.fullmatch(value) else redacted_digest(value)


def redact_secret(obj: Any) -> Any:
    """A Secret's fields (``data``, ``stringData``, the ``last-applied-configuration`` annotation)
    replaced by their digests, whatever its ``kind`` says (list items carry none).

    Idempotent: a value already redacted stays as it is, so redacting twice changes nothing and
    digests stay comparable.
    """
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for key in ("data", "stringData"):
        if isinstance(obj.get(key), dict):
            out[key] = {k: _digest_once(v) for k, v in obj[key].items()}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        out["metadata"] = {**obj["metadata"], "annotations": {
            k: (_digest_once(v) if k == LAST_APPLIED else v) for k, v in annotations.items()}}
    return out


def redact_object(obj: Any) -> Any:
    """A Kubernetes Secret with every value replaced by its digest (other objects unchanged).

    Covers ``data``, ``stringData`` and the ``last-applied-configuration``
    annotation that ``kubectl apply`` leaves with the whole Secret in it.
    """
    if not isinstance(obj, dict) or obj.get("kind") != "Secret":
        return obj
    return redact_secret(obj)


_READ: dict[str, Secret] = {}
MAX_REMEMBERED = 256
"""Values kept per process: each costs the scan about 15 substring searches; beyond this many, keys
are still found by their shapes (PEM, base64 PEM or DER)."""
SINK_ENV = "RUNBOOKS_SCAN_SOCKET"
"""The Unix socket of the ``runbooks run`` that started this kernel (:class:`SecretSink`): what the kernel
reads on purpose is sent there, so that run's output scan looks for it too."""
_sink: Any = None


def remember(kind: str, value: str | bytes) -> None:
    """Add a secret value this process read (a Secret's private key) to what the scan looks for,
    here and in the output scan of the ``runbooks run`` whose kernel this is."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if len(text) < 8 or text in _READ or len(_READ) >= MAX_REMEMBERED:
        return
    _READ[text] = Secret(kind, text)
    _send(_READ[text])


def remembered() -> list[Secret]:
    """The values :func:`remember` was given in this process."""
    return list(_READ.values())


def _send(secret: Secret) -> None:
    global _sink
    path = os.environ.get(SINK_ENV)
    if not path:
        return
    import socket

    try:
        if _sink is None:
            _sink = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _sink.connect(path)
        _sink.sendall(json.dumps({"kind": secret.kind, "value": secret.value}).encode() + b"\n")
    except OSError:  # the run is gone: nothing will be scanned by it
        _sink = None


class SecretSink:
    """What a run's kernel read on purpose, collected in memory by ``runbooks run`` for its output scan.

    A Unix socket in a private directory (0700) whose path the kernel gets in :data:`SINK_ENV`;
    the values travel over it and are never written to a file.

    Example:
        >>> with SecretSink() as sink:  # doctest: +SKIP
        ...     run_the_kernel(env={SINK_ENV: sink.path})
        ...     found = sink.collected()
    """

    def __init__(self) -> None:
        self.path = ""
        self._secrets: list[Secret] = []
        self._readers: list[Any] = []

    def __enter__(self) -> SecretSink:
        import socket
        import tempfile
        import threading

        self._dir = tempfile.mkdtemp(prefix="runbooks-")
        self.path = os.path.join(self._dir, "sink")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(8)
        self._threading = threading
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            reader = self._threading.Thread(target=self._read, args=(conn,), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, conn: Any) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                try:
                    item = json.loads(line)
                    if len(self._secrets) < 4 * MAX_REMEMBERED:
                        self._secrets.append(Secret(str(item["kind"]), str(item["value"])))
                except (ValueError, KeyError, TypeError):
                    continue

    def collected(self, timeout: float = 5.0) -> list[Secret]:
        """Everything sent so far; waits for the connections of kernels that have ended."""
        for reader in list(self._readers):
            reader.join(timeout)
        return list(self._secrets)

    def __exit__(self, *exc: Any) -> None:
        import shutil

        self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)


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


# ---- secret-looking names and values -----------------------------------------------

SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "pwd", "secret", "secrets", "token", "tokens",
        "credential", "credentials", "creds", "apikey", "bearer", "privatekey", "cookie",
        "pw", "pass", "pat", "authorization", "otp",
    }
)
_ENGLISH = frozenset({"bypass", "compass", "encompass", "surpass", "overpass", "underpass", "trespass"})
SECRET_ENDINGS = ("pass", "passwd", "password", "pwd", "token", "secret")
"""A word ending in one of these (``dbpass``, ``vaultpw`` is caught by ``pw``...) is secret-looking too."""
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
    if any(w in SECRET_WORDS or (w.endswith(SECRET_ENDINGS) and w not in _ENGLISH) for w in words):
        return True
    if "auth" in words and words[-1] in ("header", "headers", "value"):
        return True
    for i, w in enumerate(words):
        if w == "key" and (len(words) == 1 or (i > 0 and words[i - 1] in KEY_QUALIFIERS)):
            return True
    return False


_PEM_PRIVATE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


def secret_value_kind(value: Any) -> str | None:
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
    if secret_value_kind(value):
        return REDACTED
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


CREDENTIAL_ENV: dict[str, tuple[str, ...]] = {
    "Prometheus": ("PROMETHEUS_TOKEN", "PROMETHEUS_USERNAME", "PROMETHEUS_PASSWORD"),
    "Alertmanager": ("ALERTMANAGER_TOKEN", "ALERTMANAGER_USERNAME", "ALERTMANAGER_PASSWORD"),
    "Elasticsearch": ("ES_API_KEY", "ES_BEARER_TOKEN", "ES_USERNAME", "ES_PASSWORD"),
}
"""The environment variables each data source takes its credentials from."""


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(url: str | None, source: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to send credentials over plain http:// to anything but loopback.

    Raises:
        InvalidInput: naming the source, the URL's host and the variables holding credentials.
    """
    from urllib.parse import urlsplit

    from .errors import InvalidInput

    environ = os.environ if environ is None else environ
    if not url:
        return
    parts = urlsplit(url)
    given = [name for name in CREDENTIAL_ENV.get(source, ()) if environ.get(name)]
    if parts.scheme == "http" and given and not _loopback(parts.hostname or ""):
        raise InvalidInput(
            f"{source} at {parts.hostname} is reached over plain http:// but credentials are set "
            f"({', '.join(given)}): they would cross the network unencrypted. Allowed: an https:// URL, "
            "or http:// to loopback only")
