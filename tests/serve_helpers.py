"""`runbooks serve` in a subprocess, and a local webhook receiver collecting what it posts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

TOKEN = "test-token-" + "0123456789abcdef"


class Receiver:
    """An HTTP server on loopback that keeps every JSON document POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.messages.append(json.loads(body))
                    receiver.lock.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float, count: int = 1) -> list[dict]:
        """Wait until `count` messages satisfy `predicate`; return them (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [m for m in self.messages if predicate(m)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(found)} of {count} expected messages arrived: {self.messages[-5:]}"
                self.lock.wait(left)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`runbooks serve` started as a user starts it; `stop()` ends only that process."""

    def __init__(self, root: Path, routes: Path, receiver: Receiver | None, *args: str, port: int = 0,
                 notebooks_dir: Path | None = None, token: str = TOKEN, timeout: float = 60.0) -> None:
        env = dict(os.environ, RUNBOOKS_SERVE_TOKEN=token, RUNBOOKS_HOME=str(root))
        env.pop("RUNBOOKS_SERVE_USERNAME", None)
        if receiver is not None:
            env["RUNBOOKS_WEBHOOK_URL"] = receiver.url
        argv = [sys.executable, "-m", "runbooks.cli", "--project-dir", str(root)]
        if notebooks_dir is not None:
            argv += ["--notebooks-dir", str(notebooks_dir)]
        argv += ["serve", "--env", "sandbox", "--port", str(port), "--routes", str(routes), *args]
        if receiver is None:
            argv.append("--no-notify")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if "listening on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.stop()
            raise AssertionError("runbooks serve did not start: " + "".join(self.lines))
        line = next(x for x in self.lines if "listening on" in x)
        self.url = line.split("listening on ", 1)[1].split(" ", 1)[0]
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, payload: Any = None, *, data: bytes | None = None, headers: dict | None = None,
             auth: bool = True) -> requests.Response:
        hdrs = {**(self.auth if auth else {}), **(headers or {})}
        if data is None:
            return requests.post(f"{self.url}/alertmanager", json=payload, headers=hdrs, timeout=30)
        return requests.post(f"{self.url}/alertmanager", data=data,
                             headers={"Content-Type": "application/json", **hdrs}, timeout=30)

    def jobs(self) -> dict:
        resp = requests.get(f"{self.url}/jobs", headers=self.auth, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=10).text

    def wait_jobs(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """Poll /jobs until `predicate(answer)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.jobs()
            if predicate(answer):
                return answer
            assert time.monotonic() < deadline, f"condition not met; jobs: {answer}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def alert(alertname: str, labels: dict[str, str] | None = None, status: str = "firing",
          fingerprint: str = "0123456789abcdef") -> dict:
    return {"status": status, "labels": {"alertname": alertname, **(labels or {})}, "annotations": {},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint}


def payload(*alerts: dict, status: str = "firing", group_key: str = '{}:{alertname="X"}') -> dict:
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": status,
            "receiver": "runbooks", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1", "alerts": list(alerts)}
