"""Fluent-bit-shaped log documents for the sandbox's log store, generated from the cluster.

The log store must tell the same story as ``kubectl logs``: the same pods,
the same container restarts, the same templates.  So nothing here invents
log text: every line comes from :mod:`runbooks_sandbox.podlogs` and the
scenario's ``logs.yaml``, rendered for the pods that exist in the sandbox
*after* it started (pod names and uids are generated at start-up), and
back-dated over the retention window (7 days by default).

What a document looks like (Fluent-bit ``tail`` input with the ``cri``
parser, the ``kubernetes`` filter, the ``es`` output with
``Logstash_Format On`` and ``Replace_Dots On``)::

    index  logstash-YYYY.MM.DD            UTC day of @timestamp
    @timestamp                            2026-01-02T03:04:05.678Z (milliseconds)
    time                                  2026-01-02T03:04:05.678901234Z (the runtime's)
    stream                                stdout | stderr
    log                                   the raw line, as ``kubectl logs`` prints it
    kubernetes.namespace_name / pod_name / pod_id / container_name /
    kubernetes.container_image / container_hash / docker_id / host
    kubernetes.labels.<key>               dots in label keys become ``_``
                                          (``app.kubernetes.io/name`` ->
                                          ``app_kubernetes_io/name``)
    level, message                        only for lines that are JSON objects
                                          (``Merge_Log On``): ``level`` lower-cased
                                          (``info``, ``warn``, ``error``, ``fatal``,
                                          ``debug``; pino's numeric levels mapped),
                                          ``message`` from ``message``/``msg``.

Only JSON lines get ``level``: the scenario's Fluent-bit has no parser for
klog, logfmt or plain text, so those documents carry ``log`` alone, as they
would in a real cluster with that configuration (``logs.py`` falls back to
keywords in ``log`` for them).  Unlike the scenario's ``Keep_Log Off``, the
raw ``log`` is kept on JSON lines too, so every document has it.  Stack
traces stay one document per line (the input's multiline parsers are only
``docker, cri``).  Documents of one container share their ``kubernetes``
mapping: treat documents as read-only.

Volume: a week of every line would be millions of documents, so ordinary
output is *sampled*: a healthy container's body lines are generated at
``rate / every`` lines per minute with the same templates (``every`` is
chosen so that the whole cluster comes to about ``target_docs``; the
default, about 120,000 documents, takes about 3 s).  Startup and crash
sequences, and every line of a pod running a ``failing`` profile (the
incident's evidence), are kept whole: those are line for line, to the
nanosecond, what ``kubectl logs`` / ``kubectl logs --previous`` show for that
container instance (with the default ``seed``).  A crash-looping container
contributes every one of its lives in the window, on the kubelet's back-off
schedule that the controllers use.  Pods that no longer exist left no logs:
history starts when the current pods started.

Serving: :func:`serve` starts a :class:`~runbooks_sandbox.logstore.LogStore`
holding a running sandbox's documents and, with ``follow``, appends the
lines written since, so the newest document stays minutes old.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from runbooks_sandbox import podlogs
from runbooks_sandbox.controllers import BACKOFF_MAX, BACKOFF_START, CRASH_RUNTIME, FAIL_ANNOTATION

log = logging.getLogger(__name__)

NS = podlogs.NS
DEFAULT_DAYS = 7
DEFAULT_TARGET = 120_000
INDEX_PREFIX = "logstash-"
KINDS = ("Node", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Pod")
CRASHING = ("CrashLoopBackOff", "OOMKilled")
_PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_LEVEL_NAMES = {"warning": "warn", "err": "error", "critical": "fatal", "crit": "fatal", "panic": "fatal"}


def generate_documents(
    objects: Iterable[dict],
    now: datetime,
    *,
    seed: int = 0,
    days: float = DEFAULT_DAYS,
    start: datetime | None = None,
    target_docs: int = DEFAULT_TARGET,
    every: int | None = None,
    templates: dict | None = None,
) -> Iterator[dict]:
    """Documents for every container of every pod in ``objects``, from ``now - days`` to ``now``.

    Args:
        objects: the cluster's objects (pods are used; other kinds are ignored,
            so passing the whole store is fine).
        now: the sandbox's clock; nothing is generated after it.
        seed: 0 keeps podlogs' random draws; another value varies the sampled lines of
            healthy containers (not the incident's lines).
        days: retention window; ``start`` overrides it (e.g. to append the lines
            written since the last call, with the same ``every``).
        target_docs: about how many documents to produce; sets ``every``.
        every: keep one body line in ``every`` of a healthy container (1: all).
        templates: parsed ``logs.yaml`` (default: the default scenario's).

    Yields plain dicts (the ``_source``); :func:`index_name` gives their index.

    Example:
        >>> docs = list(generate_documents(pods, datetime.now(UTC)))  # doctest: +SKIP
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    templates = templates if templates is not None else podlogs.load_log_templates()
    window_start = start if start is not None else now - timedelta(days=days)
    start_ns, now_ns = _ns(window_start), _ns(now)
    plans = list(_plan(objects, templates, start_ns, now_ns))
    if every is None:
        every = choose_every(plans, start_ns, now_ns, target_docs)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    for plan in plans:
        yield from _container_documents(plan, start_ns, now_ns, every, seed)


def sampling_step(objects: Iterable[dict], now: datetime, *, days: float = DEFAULT_DAYS,
                  target_docs: int = DEFAULT_TARGET, templates: dict | None = None) -> int:
    """The ``every`` that :func:`generate_documents` would choose for these objects."""
    templates = templates if templates is not None else podlogs.load_log_templates()
    start_ns, now_ns = _ns(now - timedelta(days=days)), _ns(now)
    return choose_every(list(_plan(objects, templates, start_ns, now_ns)), start_ns, now_ns, target_docs)


def choose_every(plans: list[_Plan], start_ns: int, now_ns: int, target_docs: int) -> int:
    """The sampling step that brings the expected document count near ``target_docs``."""
    sampled = fixed = 0.0
    for plan in plans:
        rate = float(plan.profile.get("rate", 0)) if plan.profile.get("lines") else 0.0
        for inst in plan.instances:
            lo, hi = max(inst.start_ns, start_ns), min(inst.end_ns or now_ns, now_ns)
            lines = max(hi - lo, 0) / NS / 60 * rate
            if plan.failing:
                fixed += lines
            else:
                sampled += lines
            fixed += len(plan.profile.get("startup", [])) + len(plan.profile.get("crash", []))
    room = max(target_docs - fixed, target_docs * 0.1)
    return max(1, math.ceil(sampled / room)) if sampled else 1


def index_name(doc: dict, prefix: str = INDEX_PREFIX) -> str:
    """``logstash-YYYY.MM.DD`` for the UTC day of the document's ``@timestamp``."""
    ts = doc["@timestamp"]
    return f"{prefix}{ts[0:4]}.{ts[5:7]}.{ts[8:10]}"


def sandbox_objects(sandbox) -> list[dict]:
    """The objects :func:`generate_documents` needs, read from a running ``Sandbox``."""
    out: list[dict] = []
    for kind in KINDS:
        rt = sandbox.registry.by_kind_any_version(kind)
        if rt is not None:
            out.extend(sandbox.store.items(rt))
    return out


def populate(store, objects: Iterable[dict], now: datetime, **options) -> int:
    """Generate the documents and add them to a :class:`~runbooks_sandbox.logstore.LogStore`.

    Returns how many documents were added.
    """
    return store.add(generate_documents(objects, now, **options))


class SandboxLogs:
    """A log store serving a sandbox's logs; with ``follow``, new lines keep arriving.

    Attributes: ``store`` (the :class:`~runbooks_sandbox.logstore.LogStore`),
    ``url``, ``documents`` (generated at start), ``every`` (the sampling step),
    ``seconds`` (generation and loading time).
    """

    def __init__(self, store, sandbox, every: int, seed: int, documents: int, seconds: float, since: datetime,
                 templates: dict | None = None):
        self.store, self.sandbox, self.every, self.seed = store, sandbox, every, seed
        self.templates = templates
        self.documents, self.seconds, self.url = documents, seconds, store.url
        self._since = since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, interval: float) -> None:
        """Append, every ``interval`` seconds, the lines written since the previous append."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, args=(interval,), name="loggen-follow", daemon=True)
            self._thread.start()

    def step(self) -> int:
        """Append the lines written since the last call (or start); returns how many."""
        now = self.sandbox.store.clock()
        if now <= self._since:
            return 0
        docs = generate_documents(sandbox_objects(self.sandbox), now, start=self._since + timedelta(microseconds=1),
                                  every=self.every, seed=self.seed, templates=self.templates)
        self._since = now
        return self.store.add(docs)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.step()
            except Exception:  # keep following; the next step retries
                log.exception("appending sandbox log documents failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.stop()


def serve(sandbox, port: int = 0, *, follow: float | None = 30.0, seed: int = 0, **options) -> SandboxLogs:
    """Start a log store on 127.0.0.1:``port`` holding ``sandbox``'s logs (``options`` go to
    :func:`generate_documents`); with ``follow`` seconds, newly written lines are appended
    that often, so the newest document stays recent.  ``stop()`` it with the sandbox.

    Example:
        >>> box = Sandbox(state_dir, "default").start()        # doctest: +SKIP
        >>> logs = serve(box, 9200)                             # doctest: +SKIP
        >>> logs.url
        'http://127.0.0.1:9200'
    """
    from runbooks_sandbox.logstore import LogStore

    started = time.perf_counter()
    now = sandbox.store.clock()
    objects = sandbox_objects(sandbox)
    every = options.pop("every", None) or sampling_step(
        objects, now, days=options.get("days", DEFAULT_DAYS), target_docs=options.pop("target_docs", DEFAULT_TARGET),
        templates=options.get("templates"))
    store = LogStore(clock=sandbox.store.clock)
    count = store.add(generate_documents(objects, now, every=every, seed=seed, **options))
    store.start(port)
    served = SandboxLogs(store, sandbox, every, seed, count, time.perf_counter() - started, now,
                         options.get("templates"))
    if follow:
        served.follow(follow)
    return served


def parse_level(text: str) -> tuple[str | None, str | None]:
    """(level, message) of a JSON log line, as Merge_Log plus a level normaliser yields them."""
    if not text.startswith("{"):
        return None, None
    try:
        record = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    raw = next((record[k] for k in ("level", "log.level", "severity", "lvl") if k in record), None)
    if isinstance(raw, int) and not isinstance(raw, bool):
        level = _PINO_LEVELS.get(raw, str(raw))
    elif isinstance(raw, str):
        level = raw.strip().lower()
        level = _LEVEL_NAMES.get(level, level)
    else:
        level = None
    message = record.get("message", record.get("msg"))
    return level, message if isinstance(message, str) else None


# -- which containers, which instances ------------------------------------------


class _Plan:
    """One container of one pod: its profile, render context and instances in the window."""

    __slots__ = ("pod", "container", "profile", "context", "instances", "failing", "kubernetes")

    def __init__(self, pod, container, profile, context, instances, failing, kubernetes):
        self.pod, self.container, self.profile, self.context = pod, container, profile, context
        self.instances, self.failing, self.kubernetes = instances, failing, kubernetes


def _plan(objects: Iterable[dict], templates: dict, start_ns: int, now_ns: int) -> Iterator[_Plan]:
    now = datetime.fromtimestamp(now_ns / NS, UTC)
    for obj in objects:
        if obj.get("kind") != "Pod" or not obj.get("spec", {}).get("nodeName"):
            continue  # a pod never scheduled never ran: it has no logs
        meta = obj.get("metadata", {})
        annotations = meta.get("annotations") or {}
        profile = podlogs._profile(obj, templates)
        failing = FAIL_ANNOTATION in annotations and "failing" in _app_profile(obj, templates)
        for spec in obj.get("spec", {}).get("containers", []):
            name = spec["name"]
            if annotations.get(FAIL_ANNOTATION) in CRASHING:
                instances = _crash_lives(obj, now)
            else:
                instances = _kubelet_instances(obj, name, now)
            instances = [i for i in instances if (i.end_ns or now_ns) >= start_ns and i.start_ns <= now_ns]
            if not instances:
                continue
            context = _FastContext(obj, spec, profile.get("fields", {}))
            yield _Plan(obj, name, profile, context, instances, failing, _kubernetes_meta(obj, spec))


def _app_profile(pod: dict, templates: dict) -> dict:
    labels = pod.get("metadata", {}).get("labels") or {}
    apps = templates.get("apps", {})
    app = next((labels[key] for key in podlogs.APP_LABELS if labels.get(key) in apps), None)
    return apps[app] if app else templates["default"]


def _kubelet_instances(pod: dict, container: str, now: datetime) -> list[podlogs._Instance]:
    """The current and previous runs, exactly as ``kubectl logs [--previous]`` picks them."""
    out = []
    for previous in (True, False):
        try:
            out.append(podlogs._instance(pod, container, now, previous))
        except LookupError:
            continue
    if len(out) == 2 and out[0].start_ns == out[1].start_ns:
        out.pop(0)  # waiting to restart: the "current" logs are the previous run's
    return out


def _crash_lives(pod: dict, now: datetime) -> list[podlogs._Instance]:
    """Every life of a crash-looping container, on the schedule of ``controllers.crash_history``."""
    created = podlogs._parse_time(pod["metadata"]["creationTimestamp"])
    t = created + timedelta(seconds=2)
    delay = BACKOFF_START
    lives = []
    while t <= now:
        death = t + timedelta(seconds=CRASH_RUNTIME)
        if death > now:
            lives.append(podlogs._Instance(_ns(t), None, False))
            break
        lives.append(podlogs._Instance(_ns(t), _ns(death), True))
        t = death + timedelta(seconds=delay)
        delay = min(delay * 2, BACKOFF_MAX)
    return lives


def _kubernetes_meta(pod: dict, spec: dict) -> dict:
    meta, status = pod["metadata"], pod.get("status", {})
    cstatus = next((c for c in status.get("containerStatuses", []) if c.get("name") == spec["name"]), {})
    out = {
        "pod_name": meta["name"],
        "namespace_name": meta.get("namespace", "default"),
        "pod_id": meta.get("uid", ""),
        "labels": {key.replace(".", "_"): value for key, value in (meta.get("labels") or {}).items()},
        "host": pod.get("spec", {}).get("nodeName", ""),
        "container_name": spec["name"],
        "docker_id": cstatus.get("containerID", "").rpartition("//")[2],
        "container_hash": cstatus.get("imageID", ""),
        "container_image": cstatus.get("image") or spec.get("image", ""),
    }
    return {key: value for key, value in out.items() if value != ""}


# -- documents --------------------------------------------------------------------


def _container_documents(plan: _Plan, start_ns: int, now_ns: int, every: int, seed: int) -> Iterator[dict]:
    profile = plan.profile
    if not plan.failing and every > 1 and profile.get("lines"):
        profile = {**profile, "rate": float(profile.get("rate", 0)) / every}
    key = podlogs._pod_key(plan.pod)
    kubernetes = plan.kubernetes
    for inst in plan.instances:
        line_seed = f"{key}|{plan.container}|{inst.start_ns}"  # podlogs' seed: the same startup/crash lines
        if seed and profile is not plan.profile:
            line_seed = f"{line_seed}|seed={seed}"
        end_ns = min(inst.end_ns, now_ns) if inst.end_ns is not None else now_ns
        for line in podlogs._generate_backwards(profile, plan.context, inst, line_seed, end_ns):
            if line.time_ns > end_ns:
                continue
            if line.time_ns < start_ns:
                break
            yield _document(line, kubernetes)


_MINUTES: dict[int, str] = {}


def _document(line: podlogs.LogLine, kubernetes: dict) -> dict:
    seconds, fraction = divmod(line.time_ns, NS)
    minute, second = divmod(seconds, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) > 100_000:
            _MINUTES.clear()
        prefix = _MINUTES[minute] = f"{datetime.fromtimestamp(minute * 60, UTC):%Y-%m-%dT%H:%M:}"
    stamp = f"{prefix}{second:02d}"
    doc = {
        "@timestamp": f"{stamp}.{fraction // 1_000_000:03d}Z",
        "time": f"{stamp}.{fraction:09d}Z",
        "stream": line.stream,
        "log": line.text,
        "kubernetes": kubernetes,
    }
    if line.text.startswith("{"):
        level, message = parse_level(line.text)
        if level is not None:
            doc["level"] = level
        if message is not None:
            doc["message"] = message
    return doc


class _FastContext(podlogs._Context):
    """podlogs' renderer, with each template compiled once instead of a regex pass per line.

    Placeholders are filled left to right with the same random calls as
    ``podlogs._builtin`` makes, so the text is identical to what ``podlogs``
    renders for the same line (tests/test_logs.py checks this on every
    profile of the scenario).  Anything unusual goes to ``podlogs._builtin``.
    """

    _compiled: dict[tuple[str, frozenset], tuple] = {}

    def __init__(self, pod: dict, container: dict, fields: dict) -> None:
        super().__init__(pod, container, fields)
        self._shadow = frozenset(fields) & frozenset(podlogs._BUILTINS)

    def render(self, text: str, time_ns: int, rng: random.Random, picks: dict, depth: int = 0) -> str:
        if "${" not in text:
            return text
        key = (text, self._shadow)
        ops = self._compiled.get(key)
        if ops is None:
            ops = self._compiled[key] = _compile(text, self._shadow)
        out = []
        for op, a, b in ops:
            if op is _LIT:
                out.append(a)
            elif op is _INT:
                out.append(str(rng.randint(a, b)))
            elif op is _FIELD:
                if a in self.fields:
                    out.append(self.field(a, b[0], time_ns, rng, picks, depth))
                else:  # unknown placeholder: podlogs raises the error that names it
                    out.append(podlogs._builtin(a, b[1], time_ns, rng, self.values))
            elif op is _VALUE:
                out.append(self.values[a] if a in self.values else podlogs._builtin(a, b, time_ns, rng, self.values))
            elif op is _TIME:
                out.append(podlogs._format_time(time_ns, a))
            elif op is _HEX:
                out.append(f"{rng.getrandbits(4 * a):0{a}x}")
            elif op is _CHOICE:
                out.append(rng.choice(a))
            elif op is _FLOAT:
                out.append(f"{rng.uniform(a[0], a[1]):.{b}f}")
            elif op is _UUID:
                out.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
            elif op is _IP:
                out.append(f"10.244.{rng.randint(0, 2)}.{rng.randint(2, 254)}")
            elif op is _CLIENT_IP:
                out.append(f"{rng.choice(_CLIENT_NETS)}.{rng.randint(1, 254)}")
            else:
                out.append(podlogs._builtin(a, b, time_ns, rng, self.values))
        return "".join(out)


_LIT, _INT, _FIELD, _VALUE, _TIME, _HEX, _CHOICE, _FLOAT, _UUID, _IP, _CLIENT_IP, _OTHER = (
    "lit", "int", "field", "value", "time", "hex", "choice", "float", "uuid", "ip", "client_ip", "other")
_CLIENT_NETS = ("198.51.100", "203.0.113", "192.0.2")
_CONTEXT_VALUES = ("pod", "namespace", "node", "container", "image_tag")


def _compile(text: str, shadow: frozenset = frozenset()) -> tuple:
    """A template as (op, a, b) steps; fields are resolved per context at render time."""
    ops: list[tuple] = []
    last = 0
    for match in podlogs._PLACEHOLDER.finditer(text):
        if match.start() > last:
            ops.append((_LIT, text[last:match.start()], None))
        last = match.end()
        name, attr, arg = match.groups()
        ops.append(_compile_placeholder(name, attr, arg, shadow))
    if last < len(text):
        ops.append((_LIT, text[last:], None))
    return tuple(ops)


def _compile_placeholder(name: str, attr: str | None, arg: str | None, shadow: frozenset) -> tuple:
    # a profile field wins over a builtin of the same name, as in podlogs
    if name in shadow or name not in podlogs._BUILTINS:
        return (_FIELD, name, (attr, arg))
    if name in _CONTEXT_VALUES:
        return (_VALUE, name, arg)
    try:
        if name == "int":
            low, high = podlogs._range(arg, int)
            return (_INT, low, high)
        if name == "float":
            low, high = podlogs._range(arg, float)
            decimals = max(len(part.partition(".")[2]) for part in arg.split("-"))
            return (_FLOAT, (low, high), decimals)
    except ValueError:
        return (_OTHER, name, arg)
    if name == "time":
        return (_TIME, arg or "iso", None)
    if name == "hex":
        return (_HEX, int(arg or 16), None)
    if name == "choice":
        return (_CHOICE, tuple((arg or "").split("|")), None)
    if name == "uuid":
        return (_UUID, None, None)
    if name == "ip":
        return (_IP, None, None)
    if name == "client_ip":
        return (_CLIENT_IP, None, None)
    return (_OTHER, name, arg)


def _ns(moment: datetime) -> int:
    return podlogs._ns(moment)
