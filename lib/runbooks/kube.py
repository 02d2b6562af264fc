"""Kubernetes access for runbooks: connect, one kind table, one request path, list fast, read pods and events.

Connections come from a kubeconfig context or the in-cluster service account,
never from parameters carrying credentials. Every request goes through the
redacting transport (:class:`runbooks.kubesecrets.ApiClient`): Secret objects come back
with ``<redacted sha256:…>`` digests, for gets, lists, watch events and error answers alike.
Code that needs key material asks for it by name through :func:`read_secret_keys` /
:func:`iter_secret_keys`, which hand out certificates and facts about private keys, never the
keys. Large lists go through :func:`iter_objects`, which asks for raw JSON pages
(`_preload_content=False`, `limit`/`continue`) and yields plain dicts page by page: the official
client's model deserialisation is an order of magnitude slower and holds every object twice.
Results are plain data; nothing here draws. Built on this: :mod:`runbooks.kubestream` (watches,
``pods/exec``), :mod:`runbooks.rollouts` (revisions), :mod:`runbooks.preflight`.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RunbookError,
    Unavailable,
    cut,
)
from .kubesecrets import (
    CERTIFICATE_KEYS,
    ApiClient,
    RedactedResponse,
    SecretKeys,
    redact_body,
)
from .kubesecrets import redact_secrets as redact_secrets  # rotation's name for it
from .secrets import (
    client_secrets,
    redact,
    redact_secret,
    redact_text,
    remember,
    remembered,
)

PAGE_SIZE = 500



@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind: the one kind table every request path is built from."""

    kind: str
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """``/apis/apps/v1/namespaces/shop/deployments/web[/scale]`` (a list path without ``name``)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        tail = (f"/{name}" if name else "") + (f"/{subresource}" if name and subresource else "")
        return f"{prefix}{ns}/{self.plural}{tail}"


def _kinds(*rows: tuple[str, str, str, bool]) -> dict[str, Kind]:
    return {kind: Kind(kind, api_version, plural, namespaced) for kind, api_version, plural, namespaced in rows}


KINDS: dict[str, Kind] = _kinds(
    ("Namespace", "v1", "namespaces", False),
    ("Node", "v1", "nodes", False),
    ("Pod", "v1", "pods", True),
    ("Service", "v1", "services", True),
    ("Endpoints", "v1", "endpoints", True),
    ("Event", "v1", "events", True),
    ("Secret", "v1", "secrets", True),
    ("ConfigMap", "v1", "configmaps", True),
    ("Deployment", "apps/v1", "deployments", True),
    ("ReplicaSet", "apps/v1", "replicasets", True),
    ("StatefulSet", "apps/v1", "statefulsets", True),
    ("DaemonSet", "apps/v1", "daemonsets", True),
    ("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True),
    ("Job", "batch/v1", "jobs", True),
    ("CronJob", "batch/v1", "cronjobs", True),
    ("PersistentVolumeClaim", "v1", "persistentvolumeclaims", True),
    ("PersistentVolume", "v1", "persistentvolumes", False),
    ("ResourceQuota", "v1", "resourcequotas", True),
    ("HorizontalPodAutoscaler", "autoscaling/v2", "horizontalpodautoscalers", True),
    ("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets", True),
    ("ValidatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations",
     False),
    ("MutatingWebhookConfiguration", "admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", False),
    ("APIService", "apiregistration.k8s.io/v1", "apiservices", False),
    ("Ingress", "networking.k8s.io/v1", "ingresses", True),
    ("IngressClass", "networking.k8s.io/v1", "ingressclasses", False),
    ("Certificate", "cert-manager.io/v1", "certificates", True),
    ("CertificateRequest", "cert-manager.io/v1", "certificaterequests", True),
    ("Issuer", "cert-manager.io/v1", "issuers", True),
    ("ClusterIssuer", "cert-manager.io/v1", "clusterissuers", False),
)
"""Kind → where it is served: the built-in kinds runbooks use, plus what :func:`kind_for`
discovered (a chart's CRDs). Lists name a kind by its plural (:func:`resource`)."""


def resource(plural: str) -> Kind:
    """The kind served under a plural (``pods``, ``deployments`` ...)."""
    for k in KINDS.values():
        if k.plural == plural:
            return k
    raise InvalidInput(f"resource {plural!r} is not known; pass api_path= or use one of: "
                       f"{', '.join(sorted(k.plural for k in KINDS.values()))}")



@dataclass
class Cluster:
    """A connection to one cluster: the API client and the context it came from."""

    api_client: client.ApiClient
    context: str
    server: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api_client)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client)


def connect(kubeconfig: str | None = None, context: str | None = None) -> Cluster:
    """Connect with a kubeconfig context (default: $KUBECONFIG / ~/.kube/config), else in-cluster.

    Example:
        >>> cluster = connect(".sandbox/kubeconfig", "sandbox")  # doctest: +SKIP
        >>> cluster.context
        'sandbox'
    """
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    in_cluster = not kubeconfig and not os.path.exists(path) and os.environ.get("KUBERNETES_SERVICE_HOST")
    cfg = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=cfg)
        return Cluster(ApiClient(cfg), "in-cluster", cfg.host)
    if not os.path.exists(path):
        raise InvalidInput(f"kubeconfig {path!r} does not exist; pass an existing file "
                           "(for the sandbox: start it with `runbooks sandbox up`)")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except Exception as e:
        raise InvalidInput(f"kubeconfig {path!r} cannot be read: {cut(str(e))}") from e
    names = [c["name"] for c in contexts]
    name = context or (active or {}).get("name")
    if name not in names:
        raise InvalidInput(f"context {name!r} is not in kubeconfig {path!r}; available: {', '.join(names)}")
    try:
        config.load_kube_config(config_file=path, context=name, client_configuration=cfg,
                                persist_config=False)
    except Exception as e:
        raise InvalidInput(f"context {name!r} in {path!r} cannot be loaded: {cut(str(e))}") from e
    return Cluster(ApiClient(cfg), name, cfg.host)


def check_response(status: int, body: str | bytes | None, what: str) -> RunbookError:
    """The one mapping of an API server's error answer to this package's errors.

    404 NotFound, 409 Conflict, 401/403 Forbidden, 400/422 InvalidInput, anything
    else Unavailable; the message is the Status ``message`` (cut), never the body.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        message = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        message = text
    message = _clean(str(message))
    prefix = f"{what}: " if what else ""
    if status == 401:
        return Forbidden(f"{prefix}the API server refused the credentials (HTTP 401: {cut(message)})")
    if status == 403:
        return Forbidden(f"{prefix}HTTP 403: {cut(message)}")
    if status == 404:
        return NotFound(f"{prefix}{cut(message)}")
    if status == 409:
        return Conflict(f"{prefix}{cut(message)}")
    if status in (400, 422):
        return InvalidInput(f"{prefix}{cut(message)}")
    return Unavailable(f"{prefix}HTTP {status} from the API server: {cut(message)}")


def _clean(message: str) -> str:
    """An error message without Secret data: a Secret object in it redacted, keys and known values removed."""
    return str(redact(redact_body(message), remembered()))


def translate(e: ApiException | urllib3.exceptions.HTTPError | OSError, what: str = "") -> RunbookError:
    """Map a client or connection exception to this package's errors (callers chain the cause).

    Callers catch only these exception types, so that a bug never masquerades as an outage.
    """
    if isinstance(e, ApiException):
        return check_response(e.status or 0, e.body or e.reason, what)
    prefix = f"{what}: " if what else ""
    return Unavailable(f"{prefix}the API server cannot be reached: {cut(str(e))}")


def scrubbed(cluster: Any, error: RunbookError) -> RunbookError:
    """``error`` with the client's own credentials removed from its message (a library may quote them)."""
    configuration = getattr(getattr(cluster, "api_client", None), "configuration", None)
    values = [s.value for s in client_secrets(configuration)]
    text = redact_text(str(error), values)
    return error if text == str(error) else type(error)(text)


def check_api(cluster: Cluster, timeout: float = 5.0) -> dict:
    """Prove the API answers and accepts our credentials; return its version."""
    try:
        # raw GETs: the generated API classes cost a second to import, a preflight needs none
        raw = get_raw(cluster, "/version", timeout=timeout)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise scrubbed(cluster, translate(e, f"API server {cluster.server}")) from None
    except ValueError as e:  # the request could not be sent (a credential that is no header value ...)
        raise InvalidInput(f"API server {cluster.server}: the request cannot be sent with this kubeconfig's "
                           f"credentials ({type(e).__name__}); check the user entry of the context") from None
    try:
        version = json.loads(raw)
    except ValueError:  # /version answered, but not with JSON: not a Kubernetes API server
        raise Unavailable(f"API server {cluster.server}: /version is not JSON") from None
    try:
        # /version is public on most clusters: also make one authenticated call, one every identity
        # may make (discovery: the default system:discovery role), so a namespace-scoped one passes
        get_raw(cluster, "/api", timeout=timeout)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise scrubbed(cluster, translate(e, f"API server {cluster.server}")) from None
    return {"gitVersion": version.get("gitVersion", ""), "platform": version.get("platform", "")}



def get_raw(cluster: Cluster, path: str, query: list[tuple[str, Any]] | None = None,
            timeout: float = 60.0) -> bytes:
    """GET an API path and return the response body unparsed (no model deserialisation).

    Uses the client's own request building (auth, TLS, proxy settings from the
    kubeconfig) and reads the raw bytes, as `_preload_content=False` does for
    the generated API methods; non-2xx answers raise ApiException with the body.
    Secrets in it are redacted (:func:`redact_body`).
    """
    return _get(cluster, path, query, timeout)


def _get(cluster: Cluster, path: str, query: list[tuple[str, Any]] | None = None, timeout: float = 60.0,
         *, unredacted: bool = False) -> bytes:
    """:func:`get_raw`; ``unredacted`` only for :func:`read_secret_keys` (an error body is redacted anyway)."""
    api = cluster.api_client
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=list(query or []), header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    for attempt in range(READ_ATTEMPTS):
        try:
            resp = api.call_api(method, url, header_params=headers, _request_timeout=timeout)
            resp.read()
        except urllib3.exceptions.TimeoutError:
            if attempt + 1 == READ_ATTEMPTS:
                raise
            _backoff(attempt)
            continue
        if resp.status in RETRIABLE and attempt + 1 < READ_ATTEMPTS:
            _backoff(attempt)
            continue
        break
    data = redact_body(resp.data, path) if resp.data else resp.data  # whatever ApiClient the cluster has
    if not 200 <= resp.status <= 299:
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = data.decode("utf-8", "replace") if data else ""
        raise err
    if unredacted:  # a plain RESTResponse (a cluster made without this module's ApiClient) holds it raw
        return resp.unredacted() if isinstance(resp, RedactedResponse) else resp.data
    return data


def get_text(cluster: Cluster, path: str, query: list[tuple[str, Any]] | None = None,
             timeout: float = 30.0) -> tuple[int, str]:
    """GET a plain-text path (``/readyz?verbose``) and return its status and body, whatever the status.

    For endpoints whose error answer is the information (a failing health check answers 500
    with the list of checks). Connection failures raise Unavailable.
    """
    try:
        return 200, get_raw(cluster, path, query, timeout).decode("utf-8", "replace")
    except ApiException as e:
        return e.status or 0, str(e.body or e.reason or "")
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, f"GET {path}") from e


READ_ATTEMPTS = 4
"""Attempts of a read (GET) that got 429/5xx or timed out; writes are sent once (never blindly again)."""
RETRIABLE = frozenset({429, 500, 502, 503, 504})
BACKOFF_S = 0.25


def _backoff(attempt: int) -> None:
    time.sleep(BACKOFF_S * (2 ** attempt))


def request(cluster: Cluster, method: str, path: str, *, query: Sequence[tuple[str, Any]] = (),
            body: Any = None, content_type: str = "application/json", timeout: float = 30.0) -> Any:
    """One request to the API server, JSON in and out, errors mapped by :func:`check_response`.

    The one way runbooks write to Kubernetes (plans, Helm's dry runs, rotations),
    and read single objects by path.

    Raises:
        NotFound, Conflict, Forbidden, InvalidInput, Unavailable (see :func:`check_response`).
    """
    api = cluster.api_client
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    what = f"{method} {path}"
    attempts = READ_ATTEMPTS if method == "GET" else 1  # a write is never sent blindly again
    for attempt in range(attempts):
        last = attempt + 1 == attempts
        try:
            verb, url, hdrs, data, _ = api.param_serialize(
                method=method, resource_path=path, query_params=list(query), header_params=dict(headers),
                body=body, auth_settings=["BearerToken"])
            response = api.call_api(verb, url, header_params=hdrs, body=data, _request_timeout=timeout)
            raw = response.read()
            status = response.status
        except ApiException as exc:
            status, raw = exc.status or 0, exc.body or exc.reason or ""
        except urllib3.exceptions.TimeoutError as exc:
            if not last:
                _backoff(attempt)
                continue
            raise scrubbed(cluster, Unavailable(f"{what}: the API server did not answer in {timeout:.0f} s"
                                                + (f" ({attempts} attempts)" if attempts > 1 else ""))) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise scrubbed(cluster, Unavailable(f"{what}: cannot reach the API server: {cut(str(exc))}")) from None
        if status in RETRIABLE and not last:
            _backoff(attempt)
            continue
        break
    raw = redact_body(raw, path) if raw else raw  # whatever ApiClient the cluster has
    if 200 <= status < 300:
        return json.loads(raw) if raw else None
    raise check_response(status, raw, what)


def identity(cluster: Any) -> dict[str, Any]:
    """Which cluster this is: API server URL, context and the cluster's uid (part of a plan id).

    The uid is the ``kube-system`` Namespace's ``metadata.uid``, created with the cluster
    and never reused: two clusters built from the same manifests, or one recreated
    behind the same URL, differ there. Where reading it is forbidden it is None
    (the server URL still binds the plan).
    """
    if not hasattr(cluster, "_cluster_uid"):
        try:
            ns = request(cluster, "GET", KINDS["Namespace"].path(None, "kube-system"))
            uid = ((ns or {}).get("metadata") or {}).get("uid")
        except (NotFound, Forbidden):
            uid = None
        cluster._cluster_uid = uid  # the uid of a cluster never changes: read it once per connection
    return {"server": str(getattr(cluster, "server", "") or "").rstrip("/"),
            "context": getattr(cluster, "context", None), "cluster_uid": cluster._cluster_uid}


def kind_for(cluster: Cluster, api_version: str, kind: str) -> Kind:
    """Where ``kind`` of ``api_version`` is served: the table, else discovery (then cached in it).

    Raises:
        InvalidInput: the cluster does not serve that kind (e.g. a CRD that is not installed).
    """
    known = KINDS.get(kind)
    if known is not None and known.api_version == api_version:
        return known
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        doc = request(cluster, "GET", path)
    except NotFound:
        doc = {"resources": []}
    for r in doc.get("resources") or []:
        if r.get("kind") == kind and "/" not in r["name"]:
            found = Kind(kind, api_version, r["name"], bool(r.get("namespaced")))
            KINDS.setdefault(kind, found)
            return found
    raise InvalidInput(f"the cluster does not serve {kind} in {api_version} (is its CRD installed?)")


def list_path(plural: str, namespace: str | None, api_path: str | None = None) -> str:
    """The list path of a plural (``api_path``: a group/version prefix for a kind not in the table)."""
    if api_path:
        return f"{api_path}/namespaces/{namespace}/{plural}" if namespace else f"{api_path}/{plural}"
    return resource(plural).path(namespace)


def iter_pages(cluster: Cluster, resource: str, namespace: str | None = None, *,
               label_selector: str = "", field_selector: str = "", page_size: int = PAGE_SIZE,
               api_path: str | None = None, timeout: float = 60.0) -> Iterator[list[dict]]:
    """Raw JSON pages of a list, following `continue` tokens; one page in memory at a time."""
    path = list_path(resource, namespace, api_path)
    token = ""
    while True:
        query = [("limit", page_size)]
        if token:
            query.append(("continue", token))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        try:
            data = json.loads(get_raw(cluster, path, query, timeout))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise translate(e, f"listing {resource}") from e
        yield data.get("items") or []
        token = (data.get("metadata") or {}).get("continue") or ""
        if not token:
            return


def iter_objects(cluster: Cluster, resource: str, namespace: str | None = None, **kw: Any) -> Iterator[dict]:
    """Every object of a list as a plain dict, fetched page by page (see :func:`iter_pages`).

    Example:
        >>> sum(1 for _ in iter_objects(cluster, "pods"))  # doctest: +SKIP
        42
    """
    for page in iter_pages(cluster, resource, namespace, **kw):
        yield from page


def pages(cluster: Cluster, resource: str, namespaces: Sequence[str] | None = None,
          **kw: Any) -> Iterator[list[dict]]:
    """Raw pages of a list over the given namespaces (None or empty: all), one page in memory at a time.

    What streaming checks consume (``health.scan_pods``): memory stays one page, whatever the
    cluster's size. A namespaced resource listed with namespaces lists each in turn.
    """
    if not namespaces or not resource_namespaced(resource, kw.get("api_path")):
        yield from iter_pages(cluster, resource, None, **kw)
        return
    for ns in namespaces:
        yield from iter_pages(cluster, resource, ns, **kw)



def objects(cluster: Cluster, resource: str, namespaces: Sequence[str] | None = None,
            **kw: Any) -> Iterator[dict]:
    """Every object of :func:`pages`, one at a time (a check that consumes a generator holds no list)."""
    for page in pages(cluster, resource, namespaces, **kw):
        yield from page


def resource_namespaced(plural: str, api_path: str | None = None) -> bool:
    """Whether a plural names a namespaced kind (unknown plurals behind api_path: assume so)."""
    if api_path:
        return True
    return resource(plural).namespaced


def list_objects(cluster: Cluster, resource: str, namespaces: list[str] | None = None, **kw: Any) -> list[dict]:
    """All objects in the given namespaces (None: all namespaces)."""
    if not namespaces:
        return list(iter_objects(cluster, resource, None, **kw))
    out: list[dict] = []
    for ns in namespaces:
        out.extend(iter_objects(cluster, resource, ns, **kw))
    return out


def get_object(cluster: Cluster, resource: str, namespace: str | None, name: str,
               api_path: str | None = None) -> dict:
    path = list_path(resource, namespace, api_path) + f"/{name}"
    try:
        return json.loads(get_raw(cluster, path))
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, f"reading {resource} {namespace + '/' if namespace else ''}{name}") from e



def read_secret_keys(cluster: Cluster, namespace: str, name: str,
                     keys: Sequence[str] | None = ("tls.crt", "ca.crt", "tls.key")) -> SecretKeys:
    """One Secret's key material, for code that needs it (``keys``: which data keys; None: all).

    Raises:
        NotFound, Forbidden, Unavailable: as any read.
    """
    path = KINDS["Secret"].path(namespace, name)
    try:
        raw = json.loads(_get(cluster, path, unredacted=True))
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, f"reading secrets {namespace}/{name}") from None
    return SecretKeys(raw, keys)


def iter_secret_keys(cluster: Cluster, namespace: str | None = None,
                     keys: Sequence[str] | None = ("tls.crt", "ca.crt", "tls.key"), *,
                     label_selector: str = "", field_selector: str = "", page_size: int = PAGE_SIZE,
                     timeout: float = 60.0) -> Iterator[SecretKeys]:
    """:func:`read_secret_keys` for every Secret of a list (page by page, as :func:`iter_pages`)."""
    path = KINDS["Secret"].path(namespace)
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("limit", page_size)]
        for name, value in (("continue", token), ("labelSelector", label_selector),
                            ("fieldSelector", field_selector)):
            if value:
                query.append((name, value))
        try:
            data = json.loads(_get(cluster, path, query, timeout, unredacted=True))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
            raise translate(e, "listing secrets") from None
        for item in data.get("items") or []:
            yield SecretKeys(item, keys)
        token = (data.get("metadata") or {}).get("continue") or ""
        if not token:
            return


def list_secret_keys(cluster: Cluster, namespaces: Sequence[str] | None = None,
                     keys: Sequence[str] | None = ("tls.crt", "ca.crt", "tls.key"), **kw: Any) -> list[SecretKeys]:
    """:func:`iter_secret_keys` over the given namespaces (None or empty: all)."""
    out: list[SecretKeys] = []
    for ns in namespaces or [None]:
        out.extend(iter_secret_keys(cluster, ns, keys, **kw))
    return out


def write_secret_copy(cluster: Cluster, method: str, path: str, body: dict, source: tuple[str, str], *,
                      query: Sequence[tuple[str, Any]] = (), content_type: str = "application/json") -> Any:
    """Send a Secret write whose ``data`` values are digests of ``source``'s values (a backup, a restore).

    The values are put in here, from ``source`` read now, so that no key leaves this module; a
    digest that ``source`` no longer has (it changed since the plan) refuses the write.

    Raises:
        Conflict: ``source`` no longer holds a value the body names.
        NotFound, Forbidden, InvalidInput, Unavailable: as :func:`request`.
    """
    ns, name = source
    spath = KINDS["Secret"].path(ns, name)
    try:
        raw = json.loads(_get(cluster, spath, unredacted=True))
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, f"reading secrets {ns}/{name}") from None
    by_digest = {redact_secret({"data": {k: v}})["data"][k]: v for k, v in (raw.get("data") or {}).items()}
    data = {}
    for key, digest in (body.get("data") or {}).items():
        if digest not in by_digest:
            raise Conflict(f"Secret {ns}/{name} changed since the plan: its {key} is not the value planned; "
                           "nothing was written")
        data[key] = by_digest[digest]
    for key, value in data.items():
        if key not in CERTIFICATE_KEYS:
            remember(f"{key} of Secret {ns}/{name}", base64.b64decode(value or ""))
    return request(cluster, method, path, query=query, body={**body, "data": data}, content_type=content_type)



# ---- pods, events, logs ----------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(obj: dict, type_: str) -> dict:
    """The ``status.conditions`` entry of a type (``Ready``, ``Progressing`` ...), or ``{}``."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def container_problems(pod: dict) -> list[dict]:
    """One row per unhealthy container: waiting reason, last termination, restarts."""
    rows = []
    meta, status = pod["metadata"], pod.get("status") or {}
    for st in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (st.get("state") or {}).get("waiting") or {}
        last = (st.get("lastState") or {}).get("terminated") or {}
        if st.get("ready") and not waiting and not st.get("restartCount"):
            continue
        rows.append({
            "namespace": meta.get("namespace"), "pod": meta["name"], "container": st["name"],
            "ready": bool(st.get("ready")), "waiting_reason": waiting.get("reason", ""),
            "restarts": st.get("restartCount", 0), "last_termination_reason": last.get("reason", ""),
            "last_exit_code": last.get("exitCode"), "last_finished": last.get("finishedAt", ""),
            "node": (pod.get("spec") or {}).get("nodeName", ""),
        })
    return rows


def owner_workload(pod: dict) -> str:
    """`Deployment/checkout`-style owner of a pod (ReplicaSet names lose their hash)."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            if ref["kind"] == "ReplicaSet":
                labels = pod["metadata"].get("labels") or {}
                h = labels.get("pod-template-hash")
                name = ref["name"][: -len(h) - 1] if h and ref["name"].endswith("-" + h) else ref["name"]
                return f"Deployment/{name}"
            return f"{ref['kind']}/{ref['name']}"
    return f"Pod/{pod['metadata']['name']}"


def events(cluster: Cluster, namespace: str | None = None, *, object_name: str = "", kind: str = "",
           since: timedelta | None = None, warnings_only: bool = False) -> list[dict]:
    """Events (newest last), optionally for one object, a type, and a time window."""
    fields = []
    if object_name:
        fields.append(f"involvedObject.name={object_name}")
    if kind:
        fields.append(f"involvedObject.kind={kind}")
    if warnings_only:
        fields.append("type=Warning")
    cutoff = datetime.now(UTC) - since if since else None
    out = []
    for ev in iter_objects(cluster, "events", namespace, field_selector=",".join(fields)):
        last = parse_time(ev.get("lastTimestamp") or ev.get("eventTime")
                          or ev["metadata"].get("creationTimestamp"))
        if cutoff and last and last < cutoff:
            continue
        io = ev.get("involvedObject") or {}
        out.append({
            "namespace": ev["metadata"].get("namespace"), "type": ev.get("type", ""),
            "reason": ev.get("reason", ""), "object": f"{io.get('kind', '')}/{io.get('name', '')}",
            "message": ev.get("message", ""), "count": ev.get("count", 1), "last_seen": last,
        })
    out.sort(key=lambda e: e["last_seen"] or datetime.min.replace(tzinfo=UTC))
    return out


def pod_logs(cluster: Cluster, namespace: str, pod: str, container: str | None = None, *,
             tail_lines: int | None = None, since_seconds: int | None = None, previous: bool = False,
             timestamps: bool = False) -> str:
    """A container's log text (the previous instance's with previous=True)."""
    kw: dict[str, Any] = {"previous": previous, "timestamps": timestamps}
    if container:
        kw["container"] = container
    if tail_lines is not None:
        kw["tail_lines"] = tail_lines
    if since_seconds is not None:
        kw["since_seconds"] = since_seconds
    try:
        return cluster.core.read_namespaced_pod_log(pod, namespace, **kw)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise translate(e, f"logs of {namespace}/{pod}") from e



# ---- label selectors ----------------------------------------------------------------


def selector_string(selector: dict | None) -> str:
    """A metav1.LabelSelector as the `labelSelector` query string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


