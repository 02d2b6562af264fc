"""The Elasticsearch connection the log queries run on: field names, credentials, errors.

:func:`connect` makes a :class:`LogSource` (the client, the index pattern, the
:class:`LogFields`) with credentials only from the environment and TLS rules that refuse
credentials over plain ``http://`` except to loopback; :func:`call` runs one client call
and turns its failures into this package's errors (a refused credential is
``Forbidden``, an unreachable store ``Unavailable``); :func:`exact_field` resolves a
field to its aggregatable variant once per connection. :mod:`runbooks.logs` asks the
questions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    BadRequestError,
    Elasticsearch,
    NotFoundError,
    TransportError,
    UnsupportedProductError,
)

from .errors import Forbidden, InvalidInput, NotFound, Unavailable, cut
from .secrets import check_transport

DEFAULT_INDEX = "logstash-*"
_BAD_INDEX = re.compile(r'[\s\\/?"<>|#]')
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class LogFields:
    """Field names in the log documents (defaults: Fluent-bit kubernetes filter + Logstash_Format)."""

    timestamp: str = "@timestamp"
    log: str = "log"
    message: str = "message"  # the app's message when Merge_Log parsed a JSON line; else `log` is used
    level: str = "level"
    stream: str = "stream"
    namespace: str = "kubernetes.namespace_name"
    pod: str = "kubernetes.pod_name"
    container: str = "kubernetes.container_name"
    host: str = "kubernetes.host"
    labels: str = "kubernetes.labels"


@dataclass
class LogSource:
    """A connection to one log store: the client, the index pattern and the field names."""

    client: Elasticsearch
    url: str
    index: str = DEFAULT_INDEX
    fields: LogFields = field(default_factory=LogFields)
    replace_dots: bool = True  # Fluent-bit's Replace_Dots: label app.kubernetes.io/name -> app_kubernetes_io/name
    _exact: dict[str, str] = field(default_factory=dict, repr=False)

    def label_field(self, key: str) -> str:
        """The document field of a Kubernetes label key."""
        return f"{self.fields.labels}.{key.replace('.', '_') if self.replace_dots else key}"


def connect(
    url: str,
    index: str = DEFAULT_INDEX,
    *,
    fields: LogFields | None = None,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    timeout: float = 10.0,
    replace_dots: bool = True,
    env: Mapping[str, str] | None = None,
) -> LogSource:
    """A :class:`LogSource` for ``url``; no request is made until it is used.

    Args:
        url: ``http(s)://host:port`` of Elasticsearch.
        index: index pattern (comma lists and ``*`` allowed).
        fields: document field names (:class:`LogFields`).
        verify_certs: verify the server's TLS certificate (keep it on).
        ca_certs: path of a CA bundle for that verification.
        timeout: seconds per request.
        replace_dots: label keys are stored with dots replaced by ``_``.
        env: where credentials are read from (default: ``os.environ``).

    Raises:
        InvalidInput: a malformed parameter or an incomplete credential pair.
    """
    env = os.environ if env is None else env
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"log store url {url!r} must look like http(s)://host:port")
    check_transport(url, "Elasticsearch", env)
    if not isinstance(index, str) or not index.strip() or _BAD_INDEX.search(index):
        raise InvalidInput(f"index pattern {index!r} must be index names or wildcards like 'logstash-*', "
                           "comma-separated, without spaces or any of \\ / ? \" < > | #")
    if timeout is None or timeout <= 0:
        raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout!r}")
    if ca_certs is not None and not os.path.isfile(ca_certs):
        raise InvalidInput(f"ca_certs {ca_certs!r} is not a readable file (a PEM CA bundle)")
    auth = _credentials(env)
    if auth and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise InvalidInput(f"refusing to send log store credentials over plain http to {parts.hostname}; "
                           "use https")
    options: dict[str, Any] = {"request_timeout": timeout, "max_retries": 1, "retry_on_timeout": False}
    if parts.scheme == "https":
        options["verify_certs"] = verify_certs
        if ca_certs:
            options["ca_certs"] = ca_certs
    options.update(auth)
    client = Elasticsearch(url, **options)
    return LogSource(client, url, index, fields or LogFields(), replace_dots)


def _credentials(env: Mapping[str, str]) -> dict:
    api_key, token = env.get("ES_API_KEY"), env.get("ES_BEARER_TOKEN")
    user, password = env.get("ES_USERNAME"), env.get("ES_PASSWORD")
    given = [name for name, value in (("ES_API_KEY", api_key), ("ES_BEARER_TOKEN", token),
                                      ("ES_USERNAME/ES_PASSWORD", user or password)) if value]
    if len(given) > 1:
        raise InvalidInput(f"set only one kind of log store credentials, found {' and '.join(given)}")
    if api_key:
        key_id, sep, secret = api_key.partition(":")
        return {"api_key": (key_id, secret) if sep else api_key}
    if token:
        return {"bearer_auth": token}
    if user or password:
        if not (user and password):
            raise InvalidInput("ES_USERNAME and ES_PASSWORD must be set together")
        return {"basic_auth": (user, password)}
    return {}


# -- errors ---------------------------------------------------------------------------------


def _reason(error: ApiError) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        causes = err.get("root_cause") or [err]
        cause = causes[0] if causes else err
        return cut(f"{cause.get('type', err.get('type'))}: {cause.get('reason', err.get('reason'))}")
    return cut(str(getattr(error, "message", error)))


def call(src: LogSource, what: str, fn, **kwargs):
    """Run one client call, translating its errors into this package's."""
    try:
        return fn(**kwargs)
    except (AuthenticationException, AuthorizationException) as e:
        raise Forbidden(f"{what}: the log store at {src.url} refused the credentials "
                        f"(HTTP {e.meta.status}): {_reason(e)}") from e
    except UnsupportedProductError as e:
        raise InvalidInput(f"{what}: {src.url} does not answer as Elasticsearch "
                           "(no X-Elastic-Product header); check the URL") from e
    except NotFoundError as e:
        raise NotFound(f"{what}: {_reason(e)} (index pattern {src.index!r})") from e
    except BadRequestError as e:
        raise InvalidInput(f"{what}: the log store rejected the request: {_reason(e)}; "
                           "check the field names and index pattern") from e
    except ApiError as e:
        raise Unavailable(f"{what}: the log store at {src.url} answered HTTP {e.meta.status}: "
                          f"{_reason(e)}") from e
    except TransportError as e:
        raise Unavailable(f"{what}: cannot reach the log store at {src.url}: {cut(str(e))}") from e


# -- field resolution -------------------------------------------------------------------------


def exact_field(src: LogSource, name: str) -> str:
    """The variant of ``name`` that supports exact matches and aggregations.

    Resolved through ``_field_caps`` (cached on ``src``): a ``keyword``-like
    field is used as is, a ``text`` field through its ``.keyword`` sub-field;
    when the store does not know the field (no document has it yet, or
    field capabilities are not readable) ``name.keyword``, the dynamic
    mapping's convention.
    """
    if name in src._exact:
        return src._exact[name]
    f = src.fields
    wanted = {f.timestamp, f.log, f.message, f.level, f.stream, f.namespace, f.pod, f.container, f.host, name}
    request = sorted(wanted | {w + ".keyword" for w in wanted} | {f.labels + ".*"})
    try:
        caps = call(src, "reading field capabilities", src.client.field_caps, index=src.index,
                     fields=request, ignore_unavailable=True, allow_no_indices=True)["fields"]
    except (Forbidden, InvalidInput, NotFound):
        caps = {}
    for field_name in set(caps) | wanted:
        src._exact.setdefault(field_name, _pick_exact(field_name, caps))
    if name not in src._exact:
        src._exact[name] = _pick_exact(name, caps)
    return src._exact[name]


def _pick_exact(name: str, caps: dict) -> str:
    def aggregatable(field_name: str) -> bool:
        return any(entry.get("aggregatable") for entry in (caps.get(field_name) or {}).values())

    if aggregatable(name):
        return name
    if aggregatable(name + ".keyword"):
        return name + ".keyword"
    if name in caps:  # text without a keyword sub-field: exact queries cannot work on it
        return name
    return name if name.endswith(".keyword") else name + ".keyword"
