"""Small helpers for tests (import as `from helpers import ...`)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def raw_request(cluster, method: str, path: str, body=None, query=None,
                content_type: str = "application/json"):
    """Send one request through the official client's transport; return (status, headers, body text).

    For bodies the generated models would refuse before sending (unknown fields).
    """
    api = cluster.api_client
    m, url, headers, _, _ = api.param_serialize(method, path, query_params=list(query or []),
                                                header_params={"Accept": "application/json",
                                                               "Content-Type": content_type},
                                                auth_settings=["BearerToken"])
    resp = api.call_api(m, url, header_params=headers, body=body)
    resp.read()
    return resp.status, resp.getheaders(), (resp.data or b"").decode()
