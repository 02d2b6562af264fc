"""Preflight: connect as the parameters say, guard the context, check the API and the namespaces.

Shared by ``runbooks run`` (:func:`runbooks.execute.prepare`, before a kernel starts) and
``rb.start`` (inside the notebook), so that both refuse the same runs with the same message.
"""

from __future__ import annotations

from typing import Any

from . import kube
from .errors import ContextMismatch, Forbidden, InvalidInput, NotFound


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


def preflight(params: Any) -> kube.Cluster:
    """Connect to Kubernetes as the parameters say, guard the context, check the API.

    Shared by ``runbooks run`` (before a kernel starts) and :func:`start`
    (inside the notebook).

    Raises:
        InvalidInput: missing kubeconfig or unknown context.
        ContextMismatch: the active context is not ``expected_context``.
        Forbidden: credentials refused. Unavailable: API server unreachable.
    """
    cluster = kube.connect(getattr(params, "kubeconfig", None), getattr(params, "kube_context", None))
    check_context(cluster, getattr(params, "expected_context", None))
    kube.check_api(cluster)
    check_namespaces(cluster, params)
    return cluster


def check_namespaces(cluster: kube.Cluster, params: Any) -> None:
    """The namespaces a run names (the model's ``EXISTING_NAMESPACES`` fields) must exist.

    Where reading namespaces is forbidden, they stay unchecked: ``cluster.unverified_namespaces``
    lists them (the notebook records a warning finding).

    Raises:
        InvalidInput: naming each namespace that does not exist.
    """
    names: list[str] = []
    for field in getattr(type(params), "EXISTING_NAMESPACES", ()):
        value = getattr(params, field, None)
        names.extend([value] if isinstance(value, str) else list(value or []))
    missing, unverified = [], []
    for name in dict.fromkeys(names):
        try:
            kube.request(cluster, "GET", kube.KINDS["Namespace"].path(None, name))
        except NotFound:
            missing.append(name)
        except Forbidden:
            unverified.append(name)
    cluster.unverified_namespaces = unverified
    if missing:
        raise InvalidInput(f"namespace{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                           "does not exist in the cluster; allowed: existing namespaces "
                           "(kubectl get namespaces)")
