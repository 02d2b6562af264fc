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


def fleet_project(root, box, names, notebooks=None, settings=None):
    """A project whose environments `names` each have their own kubeconfig context on one sandbox.

    The kubeconfig gets one context per environment (same cluster and user, another name), and
    parameters/NAME/env.yaml selects and guards it (`kube_context` = `expected_context` = NAME),
    the way a fleet of clusters is described. `settings` (the sandbox's other env.yaml settings,
    e.g. `stack.env_settings(box)`) default to the Kubernetes API alone.
    """
    import os
    import shutil
    from pathlib import Path

    import yaml

    root = Path(root)
    src = Path(__file__).resolve().parents[1] / "notebooks"
    shutil.copytree(notebooks or src, root / "notebooks")
    config = yaml.safe_load(Path(box.kubeconfig).read_text())
    base = config["contexts"][0]["context"]
    config["contexts"] = [{"name": n, "context": dict(base)} for n in names]
    config["current-context"] = names[0]
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(kubeconfig, 0o600)
    for n in names:
        (root / "parameters" / n).mkdir(parents=True)
        env = {**(settings or {}), "description": f"fleet member {n}", "kubeconfig": str(kubeconfig),
               "kube_context": n, "expected_context": n}
        (root / "parameters" / n / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


class HttpReceiver:
    """A real HTTP server on loopback recording every POST (path, headers, JSON body).

    `replies` is a list of (status, headers, body) answered in order, one per request; when it is
    empty the answer is 200 "ok" (what Slack's incoming webhooks answer).
    """

    def __init__(self, replies=None) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.replies = list(replies or [])
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status, headers, body = receiver.replies.pop(0) if receiver.replies else (200, {}, "ok")
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "raw": raw,
                                              "json": json.loads(raw or b"null"), "status": status,
                                              "at": time.monotonic()})
                    receiver.lock.notify_all()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                data = body.encode()
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path: str | None = None) -> list:
        with self.lock:
            return [r["json"] for r in self.requests if path is None or r["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
