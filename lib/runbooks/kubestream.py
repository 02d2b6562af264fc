"""Streaming calls to the API server: watches and ``pods/exec`` (the WebSocket ``kubectl exec`` uses).

Both keep a connection open and read as the server sends; both build their URL and credentials
like every other request (:mod:`runbooks.kube`) and map errors through ``kube.check_response``.
Watch events come through the redacting transport (:mod:`runbooks.kubesecrets`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from . import kube
from .errors import Unavailable, cut
from .kubesecrets import RedactedResponse, RedactedStream


def watch(cluster: kube.Cluster, resource: str, namespace: str | None = None, *, resource_version: str = "",
          timeout_seconds: int = 30, label_selector: str = "", field_selector: str = "") -> Iterator[dict]:
    """Watch events (``{"type", "object"}``) of a list until the server ends the watch; Secrets redacted."""
    path = kube.list_path(resource, namespace)
    query: list[tuple[str, Any]] = [("watch", "true"), ("timeoutSeconds", timeout_seconds)]
    for name, value in (("resourceVersion", resource_version), ("labelSelector", label_selector),
                        ("fieldSelector", field_selector)):
        if value:
            query.append((name, value))
    api = cluster.api_client
    method, url, headers, _, _ = api.param_serialize(
        "GET", path, query_params=query, header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    try:  # the client reads nothing before it is asked to: the events are read as they come
        resp = api.call_api(method, url, header_params=headers, _request_timeout=timeout_seconds + 10)
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
        raise kube.translate(e, f"watching {resource}") from None
    stream = resp.response if isinstance(resp, RedactedResponse) else RedactedStream(resp.response, path)
    if not 200 <= resp.status <= 299:
        raise kube.check_response(resp.status, stream.data or b"", f"watching {resource}")
    try:
        for line in stream.stream(65536):
            if line.strip():
                yield json.loads(line)
    finally:
        stream.release_conn()


@dataclass
class ExecResult:
    """What a command run in a container gave back: its output and exit code."""

    stdout: str
    stderr: str
    exit_code: int


def exec_status(text: str) -> tuple[int, str]:
    """The exit code and message in the kubelet's error-channel Status (``{}`` or none: still 0)."""
    try:
        status = json.loads(text) if text.strip() else {}
    except ValueError:
        return 1, cut(text)
    if not status or status.get("status") == "Success":
        return 0, ""
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    return (int(code) if code and str(code).isdigit() else 1), str(status.get("message") or "")


def exec_command(cluster: kube.Cluster, namespace: str, pod: str, argv: Sequence[str], *, container: str | None = None,
                 timeout: float = 60.0) -> ExecResult:
    """Run ``argv`` in a container over the ``pods/exec`` WebSocket (``kubectl exec`` without a tty).

    The official client's WebSocket transport (``kubernetes.stream.ws_client``, what
    ``kubernetes.stream.stream`` calls), with the URL and credentials serialised like every other
    request here: going through ``stream(CoreV1Api.connect_get_namespaced_pod_exec, ...)`` would
    first import the generated CoreV1Api and its models, 2 to 4 s of a fresh kernel. The exit code
    comes from the kubelet's Status on the error channel. One exec at a time per ``cluster``.

    Raises:
        Forbidden: ``create pods/exec`` is not allowed (HTTP 403 on the upgrade).
        NotFound: no such pod. InvalidInput: the container is not running or not there (400).
        Unavailable: the connection failed, or the command outlived ``timeout``.
    """
    from kubernetes.stream import ws_client

    what = f"exec in {namespace}/{pod}"
    query = [("command", a) for a in argv] + [("stdout", "true"), ("stderr", "true")]
    if container:
        query.append(("container", container))
    api = cluster.api_client
    try:
        _, url, headers, _, _ = api.param_serialize(
            method="GET", resource_path=kube.KINDS["Pod"].path(namespace, pod, "exec"), query_params=query,
            header_params={}, auth_settings=["BearerToken"])
        ws = ws_client.websocket_call(api.configuration, "GET", url, headers=headers, _preload_content=False,
                                      _request_timeout=timeout)
    except ApiException as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # the transport wraps everything, interrupts too
            raise KeyboardInterrupt from None
        m = re.search(r"Handshake status (\d{3})", str(exc.reason or ""))
        if m:
            body = str(exc.reason).rsplit(" -+-+- ", 1)[-1]
            body = body[2:-1].encode().decode("unicode_escape") if body.startswith(("b'", 'b"')) else body
            raise kube.scrubbed(cluster, kube.check_response(int(m.group(1)), body, f"create pods/exec in {namespace}")) \
                from None
        raise kube.scrubbed(cluster, kube.translate(exc, what)) from None
    try:
        ws.run_forever(timeout=timeout)
        if ws.is_open():
            raise Unavailable(f"{what}: {' '.join(argv)[:80]} did not end within {timeout:.0f} s")
        code, message = exec_status(ws.read_channel(ws_client.ERROR_CHANNEL))
        stderr = ws.read_stderr() or ""
        if code and message and not message.startswith("command terminated with non-zero exit code"):
            stderr += message  # the kubelet's own refusal (container not found ...)
        return ExecResult(ws.read_stdout() or "", stderr, code)
    finally:
        ws.close()
