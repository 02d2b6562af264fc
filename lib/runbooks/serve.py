"""``runbooks serve``: Alertmanager's webhook starts the runbook an alert calls for.

Why this module exists: an alert pages a person, who then opens a terminal and runs
``incident-investigation`` by hand. Here Alertmanager's webhook (payload version 4) starts
that run itself, so the report is in the channel before the person is.

The design, in one place:

- **A real ASGI server**: a Starlette app under uvicorn. ``POST /alertmanager`` takes the
  webhook; ``GET /healthz`` says the server lives; ``GET /metrics`` is Prometheus'
  text format (prometheus_client, one registry per app); ``GET /jobs`` lists recent jobs.
- **Security**: every request to ``/alertmanager`` and ``/jobs`` needs the bearer token of
  ``$RUNBOOKS_SERVE_TOKEN`` (or HTTP basic auth with ``$RUNBOOKS_SERVE_USERNAME`` and
  ``$RUNBOOKS_SERVE_PASSWORD``), compared in constant time: 401 otherwise. A body over
  the limit is 413 (checked from ``Content-Length`` and while reading), a body that is not
  JSON or fails the payload's JSON schema is 400, and nothing runs for any of them.
  Runs are dry runs: routes cannot set ``dry_run`` or ``approve_plan`` and the server never
  passes ``--approve``; a mitigation's plan id is in the message, to approve by hand.
- **Routes** (:mod:`runbooks.routes`) turn an alert into a runbook and parameters; a ``pod``
  label becomes its workload through the Kubernetes API of the environment.
- **Dedup**: one job per (runbook, parameters) while it is queued or running and for
  ``dedup_window`` seconds after it started, whatever the number of alerts, groups or
  Alertmanager repeats that ask for it. A resolved group closes the loop: "resolved" is
  posted to the thread, no run starts, and its jobs may run again if it fires again.
- **Bounds**: a queue of ``queue_size`` jobs and ``concurrency`` workers. When the queue is
  full the server takes what fits and answers 503, which Alertmanager retries: the jobs it
  took are deduplicated on the retry, so nothing is lost and nothing runs twice. The same
  503 answers an alert whose workload cannot be looked up because the API is unreachable.
- **Every run is a normal ``runbooks run``** in its own process (``--notify webhook``
  posts the summary to ``$RUNBOOKS_WEBHOOK_URL`` with the alert group's thread): its own
  run directory, report, summary.json, exit code, secret scan and watchdog. A crash or a
  hang of one run cannot take the server down. Parameters travel in a YAML file given
  with ``-f``, so a label value is never parsed as anything but text; the runbook's own
  validation refuses a bad value (exit 2) before any kernel starts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import notify
from . import secrets as sec
from .errors import InvalidInput, RunbookError, Unavailable, cut
from .execute import Project
from .processes import stop_process
from .routes import Route, Unresolved, route_for

TOKEN_ENV = "RUNBOOKS_SERVE_TOKEN"
USERNAME_ENV = "RUNBOOKS_SERVE_USERNAME"
PASSWORD_ENV = "RUNBOOKS_SERVE_PASSWORD"
DEFAULT_PORT = 8787
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_QUEUE = 100
DEFAULT_CONCURRENCY = 2
DEFAULT_DEDUP_WINDOW = 3600.0
JOB_HISTORY = 1000
RESULTS = {0: "ok", 1: "findings", 2: "rejected", 3: "failed"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")

_LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 4096},
           "propertyNames": {"maxLength": 256}}
WEBHOOK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Alertmanager webhook payload, version 4",
    "type": "object",
    "required": ["version", "status", "alerts", "groupKey"],
    "properties": {
        "version": {"const": "4"},
        "groupKey": {"type": "string", "maxLength": 8192},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": {"enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupLabels": _LABELS,
        "commonLabels": _LABELS,
        "commonAnnotations": _LABELS,
        "externalURL": {"type": "string"},
        "alerts": {
            "type": "array",
            "maxItems": 5000,
            "items": {
                "type": "object",
                "required": ["status", "labels", "startsAt", "fingerprint"],
                "properties": {
                    "status": {"enum": ["firing", "resolved"]},
                    "labels": {**_LABELS, "required": ["alertname"]},
                    "annotations": _LABELS,
                    "startsAt": {"type": "string"},
                    "endsAt": {"type": "string"},
                    "generatorURL": {"type": "string"},
                    "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{1,32}$"},
                },
            },
        },
    },
}


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """A shared bearer token, or a basic-auth user and password (from environment variables)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Auth:
        env = os.environ if environ is None else environ
        token = env.get(TOKEN_ENV) or None
        user, password = env.get(USERNAME_ENV) or None, env.get(PASSWORD_ENV) or None
        if not token and not (user and password):
            raise InvalidInput(f"runbooks serve needs a credential: set ${TOKEN_ENV} (a bearer token) or "
                               f"${USERNAME_ENV} and ${PASSWORD_ENV} (HTTP basic auth)")
        if token is not None and len(token) < 16:
            raise InvalidInput(f"${TOKEN_ENV} is too short: use at least 16 characters "
                               "(e.g. `openssl rand -hex 32`)")
        return cls(token, user, password)

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the credential (constant-time compare)."""
        scheme, _, value = (header or "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(value.encode(), self.token.encode())
        if scheme == "basic" and self.username and self.password:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            ok_user = hmac.compare_digest(user.encode(), self.username.encode())
            ok_password = hmac.compare_digest(password.encode(), self.password.encode())
            return ok_user and ok_password
        return False


def check_host(host: str, expose: bool) -> None:
    """Loopback unless ``--expose`` says otherwise (InvalidInput names the flag)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not expose:
        raise InvalidInput(f"--host {host!r} is not a loopback address: pass --expose to listen there "
                           "(and keep the token secret)")


# --------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------


@dataclass
class Job:
    """One run the server was asked for."""

    id: str
    runbook: str
    parameters: dict[str, Any]
    thread: str
    alertname: str
    fingerprint: str
    key: str
    state: str = "queued"  # queued | running | done | refused
    received: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    result: str | None = None
    run_dir: str | None = None
    message: str = ""
    pid: int | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


def job_key(runbook: str, parameters: Mapping[str, Any]) -> str:
    text = json.dumps([runbook, parameters], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def thread_key(group_key: str) -> str:
    """A short, stable id of an Alertmanager group (its groupKey can hold label values)."""
    return hashlib.sha256(group_key.encode()).hexdigest()[:16]


@dataclass
class ServeConfig:
    """What ``runbooks serve`` was started with."""

    project: Project
    env: str
    routes: list[Route]
    auth: Auth
    queue_size: int = DEFAULT_QUEUE
    concurrency: int = DEFAULT_CONCURRENCY
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    max_body: int = DEFAULT_MAX_BODY
    timeout: int = 600
    output_dir: str | None = None
    notify: bool = True
    python: str = sys.executable
    forced: dict[str, dict[str, Any]] = field(default_factory=dict)  # runbook -> parameters set by check()

    def check(self) -> None:
        for name, value, low in (("--queue-size", self.queue_size, 1), ("--concurrency", self.concurrency, 1),
                                 ("--max-body", self.max_body, 1024)):
            if value < low:
                raise InvalidInput(f"{name} {value} must be at least {low}")
        if self.dedup_window < 0:
            raise InvalidInput(f"--dedup-window {self.dedup_window} must not be negative")
        known = self.project.notebooks()
        unknown = sorted({r.runbook for r in self.routes} - set(known))
        if unknown:
            raise InvalidInput(f"routes name unknown runbooks {unknown}; known: {', '.join(known)}")
        from .execute import notebook_parameters

        for runbook in {r.runbook for r in self.routes}:
            declared = {p.name for p in notebook_parameters(known[runbook])}
            # a dry run whatever parameters/ENV/RUNBOOK.yaml says (the job's -f file comes later)
            self.forced[runbook] = {"dry_run": True} if "dry_run" in declared else {}
        self.project.load_env(self.env)
        if self.notify:
            notify.webhook_url()


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("runbooks_serve_requests", "Authenticated endpoints' requests, by path "
                                "and HTTP status code.", ["path", "code"], registry=self.registry)
        self.alerts = Counter("runbooks_serve_alerts", "Alerts received, by what was done with them "
                              "(queued, deduplicated, unrouted, refused, resolved).", ["action"],
                              registry=self.registry)
        self.runs_started = Counter("runbooks_serve_runs_started", "Runs started, by runbook.",
                                    ["runbook"], registry=self.registry)
        self.runs = Counter("runbooks_serve_runs", "Runs finished, by runbook and result "
                            "(ok, findings, rejected, failed).", ["runbook", "result"], registry=self.registry)
        self.queue_depth = Gauge("runbooks_serve_queue_depth", "Jobs waiting for a worker.",
                                 registry=self.registry)
        self.running = Gauge("runbooks_serve_runs_in_progress", "Runs in progress.", registry=self.registry)
        self.duration = Histogram("runbooks_serve_run_duration_seconds", "Run duration, by runbook.",
                                  ["runbook"], registry=self.registry,
                                  buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
        self.notifications = Counter("runbooks_serve_notifications", "Messages the server posted itself, "
                                     "by event and outcome.", ["event", "outcome"], registry=self.registry)


class Dispatcher:
    """The bounded queue, the workers, dedup and the job history (all on the server's event loop)."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.queue_size)
        self.jobs: deque[Job] = deque(maxlen=JOB_HISTORY)
        self.active: dict[str, Job] = {}  # key -> newest job of that key (for dedup)
        self.groups: dict[str, dict[str, Any]] = {}  # thread -> notifications seen, last status
        self.workers: list[asyncio.Task] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="runbooks-serve-"))
        self._count = 0

    def start(self) -> None:
        for i in range(self.config.concurrency):
            self.workers.append(asyncio.create_task(self._worker(), name=f"runbooks-worker-{i}"))

    async def stop(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        for path in self.workdir.glob("*"):
            path.unlink(missing_ok=True)
        self.workdir.rmdir()

    def duplicate(self, key: str) -> Job | None:
        job = self.active.get(key)
        if job is None:
            return None
        if job.state in ("queued", "running"):
            return job
        if job.started is not None and time.time() - job.started < self.config.dedup_window:
            return job
        if job.state == "refused" and time.time() - job.received < self.config.dedup_window:
            return job
        return None

    def new_job(self, runbook: str, parameters: dict[str, Any], thread: str, alert: Mapping[str, Any]) -> Job:
        self._count += 1
        return Job(id=f"{int(time.time())}-{self._count}", runbook=runbook, parameters=parameters,
                   thread=thread, alertname=alert["labels"].get("alertname", ""),
                   fingerprint=alert["fingerprint"], key=job_key(runbook, parameters))

    def offer(self, job: Job) -> bool:
        """Queue a job; False when the queue is full."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        self.active[job.key] = job
        self.jobs.append(job)
        self.metrics.queue_depth.set(self.queue.qsize())
        return True

    def refuse(self, job: Job, message: str) -> None:
        job.state, job.message, job.ended = "refused", message, time.time()
        self.active[job.key] = job
        self.jobs.append(job)

    def forget_thread(self, thread: str) -> None:
        """A resolved group: its finished jobs no longer hold back a new run when it fires again."""
        for key, job in list(self.active.items()):
            if job.thread == thread and job.state in ("done", "refused"):
                del self.active[key]

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            self.metrics.queue_depth.set(self.queue.qsize())
            try:
                await self._run(job)
            except Exception as exc:  # noqa: BLE001 - a job's failure must not stop the worker
                job.state, job.result, job.message = "done", "failed", f"{type(exc).__name__}: {cut(str(exc))}"
            finally:
                job.ended = job.ended or time.time()
                self.queue.task_done()

    def command(self, job: Job, params_file: Path) -> list[str]:
        cfg = self.config
        argv = [cfg.python, "-m", "runbooks.cli", "--project-dir", str(cfg.project.root)]
        if not cfg.project.packaged:  # an explicit notebooks directory replaces the packaged runbooks
            argv += ["--notebooks-dir", str(cfg.project.notebooks_dir)]
        argv += ["run", job.runbook, "--env", cfg.env, "-f", str(params_file), "--no-progress",
                 "--timeout", str(cfg.timeout)]
        if cfg.output_dir:
            argv += ["--output-dir", cfg.output_dir]
        if cfg.notify:
            argv += ["--notify", "webhook", "--notify-thread", job.thread]
        return argv

    async def _run(self, job: Job) -> None:
        params_file = self.workdir / f"{job.id}.yaml"
        params = {**job.parameters, **self.config.forced.get(job.runbook, {"dry_run": True})}
        params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, USERNAME_ENV, PASSWORD_ENV)}
        env["RUNBOOKS_HOME"] = str(self.config.project.root)
        job.state, job.started = "running", time.time()
        self.metrics.runs_started.labels(job.runbook).inc()
        self.metrics.running.inc()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(job, params_file), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
                cwd=str(self.config.project.root))
            job.pid = proc.pid
            try:
                out, err = await proc.communicate()
            except asyncio.CancelledError:  # the server stops: end the run the way Ctrl-C does
                await stop_process(proc)
                raise
        finally:
            self.metrics.running.dec()
            params_file.unlink(missing_ok=True)
        job.ended = time.time()
        job.exit_code = proc.returncode
        job.result = RESULTS.get(proc.returncode, "failed")
        job.state = "done"
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        found = re.search(r"^run directory: (.+)$", stdout, re.MULTILINE)
        job.run_dir = found[1].strip() if found else None
        last = [line for line in (stderr.strip() or stdout.strip()).splitlines() if line.strip()]
        job.message = sec.redact(cut(last[-1], 400), sec.known_secrets()) if last else ""
        self.metrics.runs.labels(job.runbook, job.result).inc()
        self.metrics.duration.labels(job.runbook).observe(job.ended - job.started)


# --------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------


class TooLarge(Exception):
    pass


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, or TooLarge as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def workload_resolver(cluster: Any) -> Callable[[str, str, str], str]:
    """A resolver for :meth:`Route.parameters_for`: a pod's owner, or the Deployment a Service selects.

    Only names Kubernetes would accept are looked up; anything else is passed on as it is,
    for the runbook's validation to refuse. Answers are cached for five minutes.
    """
    from . import kube
    from .errors import NotFound

    cache: dict[tuple[str, str, str], tuple[float, str]] = {}

    def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def lookup(label: str, namespace: str, name: str) -> str:
        if label == "pod":
            try:
                pod = kube.get_object(cluster, "pods", namespace, name)
            except NotFound:
                raise Unresolved(f"pod {namespace}/{name} no longer exists: its workload is unknown") from None
            return kube.owner_workload(pod).split("/", 1)[1]
        try:  # service: the one Deployment whose pods it selects, else the Service's own name
            selector = (kube.get_object(cluster, "services", namespace, name).get("spec") or {}).get("selector")
        except NotFound:
            return name
        found = [d["metadata"]["name"] for d in kube.iter_objects(cluster, "deployments", namespace)
                 if selects(selector or {}, ((d.get("spec") or {}).get("template") or {}).get("metadata", {})
                            .get("labels") or {})]
        return found[0] if len(found) == 1 else name

    def resolve(label: str, namespace: str, name: str) -> str:
        if not (_NAME.match(namespace) and len(name) <= 253 and re.fullmatch(r"[a-z0-9][-a-z0-9.]*", name)):
            return name  # not a Kubernetes name: the runbook's validation refuses it, nothing is asked
        hit = cache.get((label, namespace, name))
        if hit and time.monotonic() - hit[0] < 300:
            return hit[1]
        workload = lookup(label, namespace, name)
        cache[(label, namespace, name)] = (time.monotonic(), workload)
        return workload

    return resolve


class Receiver:
    """The HTTP side: authentication, the webhook's checks, routing alerts to jobs, health and metrics.

    One instance per app; the dispatcher is created on the server's event loop (the lifespan).
    """

    def __init__(self, config: ServeConfig, cluster: Any = None) -> None:
        import jsonschema

        self.config = config
        self.metrics = Metrics()
        self.validator = jsonschema.Draft202012Validator(WEBHOOK_SCHEMA)
        self.resolver = workload_resolver(cluster) if cluster is not None else None
        self.dispatcher: Dispatcher | None = None
        self.tasks: set[asyncio.Future] = set()

    # ---- answers ----

    def answer(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None,
               path: str = "/alertmanager") -> Any:
        from starlette.responses import JSONResponse

        self.metrics.requests.labels(path, str(code)).inc()
        return JSONResponse(body, status_code=code, headers=headers)

    def authorized(self, request: Any) -> bool:
        return self.config.auth.allows(request.headers.get("authorization"))

    def unauthorized(self, path: str = "/alertmanager") -> Any:
        return self.answer(401, {"error": "missing or wrong credential"},
                           {"WWW-Authenticate": 'Bearer realm="runbooks"' if self.config.auth.token
                            else 'Basic realm="runbooks"'}, path)

    # ---- messages ----

    async def post_message(self, message: notify.Message) -> None:
        from starlette.concurrency import run_in_threadpool

        if not self.config.notify:
            return
        try:
            url = notify.webhook_url()
            await run_in_threadpool(notify.post_webhook, url, message)
            self.metrics.notifications.labels(message.event, "sent").inc()
        except RunbookError:
            self.metrics.notifications.labels(message.event, "failed").inc()

    def background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ---- POST /alertmanager ----

    async def alertmanager(self, request: Any) -> Any:
        if not self.authorized(request):
            return self.unauthorized()
        try:
            body = await read_body(request, self.config.max_body)
        except TooLarge:
            return self.answer(413, {"error": f"request body over {self.config.max_body} bytes"})
        try:
            payload = json.loads(body)
        except ValueError:
            return self.answer(400, {"error": "the body is not JSON"})
        errors = sorted(self.validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(the payload)"
            return self.answer(400, {"error": f"not an Alertmanager webhook payload (version 4): {where}: "
                                              f"{cut(first.message, 200)}"})
        dispatcher = self.dispatcher
        assert dispatcher is not None  # the lifespan started it before the first request
        thread = thread_key(payload["groupKey"])
        group = dispatcher.groups.setdefault(thread, {"notifications": 0})
        group.update(notifications=group["notifications"] + 1, status=payload["status"],
                     alertnames=sorted({a["labels"].get("alertname", "") for a in payload["alerts"]}))
        summary: dict[str, Any] = {"thread": thread, "queued": [], "deduplicated": [], "unrouted": 0,
                                   "refused": [], "truncated": payload.get("truncatedAlerts", 0)}
        if payload["status"] == "resolved":
            return self.resolved(payload, thread, summary)
        full = False
        for alert in payload["alerts"]:
            if alert["status"] == "firing":
                full = await self.route(alert, thread, summary, full)
        if full:
            return self.answer(503, {**summary, "error": "the run queue is full or the Kubernetes API is "
                                                         "unreachable: retry later"}, {"Retry-After": "5"})
        return self.answer(200, summary)

    def resolved(self, payload: dict[str, Any], thread: str, summary: dict[str, Any]) -> Any:
        """A resolved group: post "resolved" to its thread; never a run."""
        assert self.dispatcher is not None
        self.metrics.alerts.labels("resolved").inc(len(payload["alerts"]))
        self.dispatcher.forget_thread(thread)
        names = sorted({a["labels"].get("alertname", "") for a in payload["alerts"]})
        self.background(self.post_message(notify.Message(
            event="resolved", thread=thread, env=self.config.env,
            text=f"resolved: {', '.join(names)} ({len(payload['alerts'])} alert(s)); no run started",
            alert={"alertnames": names, "fingerprints": [a["fingerprint"] for a in payload["alerts"]]})))
        return self.answer(200, {**summary, "resolved": len(payload["alerts"])})

    async def route(self, alert: dict[str, Any], thread: str, summary: dict[str, Any], full: bool) -> bool:
        """One firing alert: queued, deduplicated, unrouted or refused (in ``summary``); True once full."""
        from starlette.concurrency import run_in_threadpool

        dispatcher = self.dispatcher
        assert dispatcher is not None
        route = route_for(self.config.routes, alert["labels"])
        if route is None:
            summary["unrouted"] += 1
            self.metrics.alerts.labels("unrouted").inc()
            return full
        params: dict[str, Any] | None = None
        problem = ""
        try:
            params = await run_in_threadpool(route.parameters_for, alert["labels"], self.resolver)
        except Unavailable:  # the API is down for now: Alertmanager retries the notification
            return True
        except (Unresolved, RunbookError) as exc:
            problem = str(exc)
        key_params = params if params is not None else {"unresolved": alert["fingerprint"]}
        job = dispatcher.new_job(route.runbook, key_params, thread, alert)
        earlier = dispatcher.duplicate(job.key)
        if earlier:
            summary["deduplicated"].append(earlier.id)
            self.metrics.alerts.labels("deduplicated").inc()
            return full
        if params is None:
            dispatcher.refuse(job, problem)
            summary["refused"].append(job.id)
            self.metrics.alerts.labels("refused").inc()
            self.background(self.post_message(notify.Message(
                event="refused", thread=thread, runbook=route.runbook, env=self.config.env,
                text=f"{job.alertname}: no {route.runbook} run: {problem}",
                alert={"alertname": job.alertname, "fingerprint": job.fingerprint})))
            return full
        if full or not dispatcher.offer(job):
            return True
        summary["queued"].append(job.id)
        self.metrics.alerts.labels("queued").inc()
        return full

    # ---- the other endpoints ----

    async def healthz(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        dispatcher = self.dispatcher
        alive = dispatcher is not None and all(not t.done() for t in dispatcher.workers)
        return JSONResponse({"ok": alive, "queue": dispatcher.queue.qsize() if dispatcher else None},
                            status_code=200 if alive else 503)

    async def metrics_endpoint(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from starlette.responses import Response

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def jobs(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.authorized(request):
            return self.unauthorized("/jobs")
        dispatcher = self.dispatcher
        assert dispatcher is not None
        return JSONResponse({"queue": dispatcher.queue.qsize(), "groups": dispatcher.groups,
                             "jobs": [j.public() for j in dispatcher.jobs]})

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any):
        self.dispatcher = Dispatcher(self.config, self.metrics)
        self.dispatcher.start()
        try:
            yield
        finally:
            await self.dispatcher.stop()


def build_app(config: ServeConfig, cluster: Any = None) -> Any:
    """The Starlette app (``cluster``: a :func:`runbooks.kube.connect` result for pod labels)."""
    from starlette.applications import Starlette
    from starlette.routing import Route as HttpRoute

    receiver = Receiver(config, cluster)
    return Starlette(routes=[
        HttpRoute("/alertmanager", receiver.alertmanager, methods=["POST"]),
        HttpRoute("/healthz", receiver.healthz, methods=["GET"]),
        HttpRoute("/metrics", receiver.metrics_endpoint, methods=["GET"]),
        HttpRoute("/jobs", receiver.jobs, methods=["GET"]),
    ], lifespan=receiver.lifespan)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so ``--port 0`` can print the port it got)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    return sock


def serve(config: ServeConfig, host: str, port: int, *, cluster: Any = None,
          echo: Callable[[str], None] = print) -> None:
    """Run the server until SIGINT/SIGTERM."""
    import uvicorn

    sock = bind(host, port)
    bound = sock.getsockname()[1]
    app = build_app(config, cluster)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=10))
    shown = f"[{host}]" if ":" in host else host
    echo(f"runbooks serve: listening on http://{shown}:{bound} (env {config.env}, "
         f"{len(config.routes)} route(s), queue {config.queue_size}, concurrency {config.concurrency})")
    server.run(sockets=[sock])
