"""Container logs for sandbox pods, generated on request from templates.

The sandbox stores no log files: a pod's log is a deterministic function of
the pod (uid or name), the container instance (its start time) and the
clock.  Each line belongs to a fixed time slot, and its content is drawn
from a random generator seeded by the pod and that slot, so asking twice
gives the same lines and a later request only adds lines at the end, just as
``kubectl logs`` behaves against a real kubelet.

Templates live in ``scenarios/<name>/logs.yaml``.  A pod is matched by its
``app``, ``app.kubernetes.io/name`` or ``k8s-app`` label; a pod that carries
the ``sandbox.kube-runbooks.io/fail`` annotation uses the profile's
``failing`` variant.  A profile has:

* ``rate``: body lines per minute;
* ``lines``: weighted body line templates (``{text, weight, stream}`` or a
  plain string);
* ``startup`` / ``crash``: sequences written when the container starts and
  just before a failed instance ends (``{text, after, stream}`` or a string;
  ``after`` is the gap in seconds before the line);
* ``fields``: named value lists for ``${name}`` / ``${name.attr}``.

Placeholders: ``${time}`` / ``${time:FORMAT}`` (iso, iso_us, rfc3339, nginx,
klog, pg, epoch, epoch_ms or a strftime pattern), ``${int:A-B}``,
``${float:A-B}``, ``${choice:a|b}``, ``${hex:N}``, ``${uuid}``, ``${ip}``
(a pod IP), ``${client_ip}`` (a public client), ``${pod}``,
``${namespace}``, ``${node}``, ``${container}``, ``${image_tag}`` and the
profile's fields.

Only what a request needs is generated: the last ``tail_lines`` lines, the
``since_seconds`` window, or by default the last 500 lines (a long-running
pod's log would have been truncated by rotation anyway), never more than
``MAX_LINES``.
"""

from __future__ import annotations

import functools
import math
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import yaml

from runbooks_sandbox.scenario import scenario_dir

DEFAULT_TAIL = 500
MAX_LINES = 10_000
FAIL_ANNOTATION = "sandbox.kube-runbooks.io/fail"
APP_LABELS = ("app", "app.kubernetes.io/name", "k8s-app")

NS = 1_000_000_000
_STARTUP_GAP = 0.05  # default seconds between startup lines
_CRASH_GAP = 0.001  # default seconds between crash lines (a stack trace is one burst)
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)(?:\.([a-z_]+))?(?::([^}]*))?\}")
_TIME_FORMATS = ("iso", "iso_us", "rfc3339", "nginx", "klog", "pg", "epoch", "epoch_ms")
_BUILTINS = (
    "time", "int", "float", "choice", "hex", "uuid", "ip", "client_ip",
    "pod", "namespace", "node", "container", "image_tag",
)  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class LogLine:
    """One line of container output."""

    time_ns: int  # nanoseconds since the epoch
    text: str
    stream: str = "stdout"

    @property
    def time(self) -> datetime:
        """The line's time (microsecond precision)."""
        return datetime.fromtimestamp(self.time_ns / NS, UTC)


@dataclass(frozen=True)
class _Instance:
    """One run of a container: when it started, when it ended (None: still running)."""

    start_ns: int
    end_ns: int | None
    failed: bool


@functools.lru_cache(maxsize=8)
def load_log_templates(scenario: str = "default") -> dict:
    """The parsed ``logs.yaml`` of a scenario (cached; do not modify it)."""
    text = scenario_dir(scenario).joinpath("logs.yaml").read_text(encoding="utf-8")
    templates = yaml.safe_load(text)
    _check_templates(templates, f"{scenario}/logs.yaml")
    return templates


def render_logs(
    pod: dict,
    container: str,
    *,
    now: datetime | None = None,
    tail_lines: int | None = None,
    since_seconds: int | None = None,
    timestamps: bool = False,
    previous: bool = False,
    templates: dict | None = None,
) -> str:
    """The text ``GET .../pods/NAME/log`` returns: one line per log line, newline-terminated.

    ``now`` defaults to the current time; the sandbox passes its own clock.
    Raises LookupError (message as the real API server words it; the server
    answers 400) when the container is unknown, has not started, or
    ``previous`` is asked for a container that never restarted.
    """
    lines = log_lines(
        pod,
        container,
        now=now,
        tail_lines=tail_lines,
        since_seconds=since_seconds,
        previous=previous,
        templates=templates,
    )
    if timestamps:
        return "".join(f"{format_timestamp(line.time_ns)} {line.text}\n" for line in lines)
    return "".join(f"{line.text}\n" for line in lines)


def log_lines(
    pod: dict,
    container: str,
    *,
    now: datetime | None = None,
    tail_lines: int | None = None,
    since_seconds: int | None = None,
    previous: bool = False,
    templates: dict | None = None,
) -> list[LogLine]:
    """The lines :func:`render_logs` would return, oldest first, with time and stream."""
    if tail_lines is not None and tail_lines < 0:
        raise ValueError(f"tail_lines must be >= 0, got {tail_lines}")
    if since_seconds is not None and since_seconds <= 0:
        raise ValueError(f"since_seconds must be greater than 0, got {since_seconds}")
    now = now if now is not None else datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    templates = templates if templates is not None else load_log_templates()

    spec_container = _container_spec(pod, container)
    instance = _instance(pod, container, now, previous)
    profile = _profile(pod, templates)
    context = _Context(pod, spec_container, profile.get("fields", {}))

    now_ns = _ns(now)
    end_ns = min(instance.end_ns, now_ns) if instance.end_ns is not None else now_ns
    cutoff_ns = now_ns - since_seconds * NS if since_seconds is not None else None
    if tail_lines is not None:
        limit = min(tail_lines, MAX_LINES)
    else:
        limit = MAX_LINES if since_seconds is not None else DEFAULT_TAIL

    seed = f"{_pod_key(pod)}|{container}|{instance.start_ns}"
    newest_first = _generate_backwards(profile, context, instance, seed, end_ns)
    picked: list[LogLine] = []
    for line in newest_first:
        if len(picked) >= limit or (cutoff_ns is not None and line.time_ns < cutoff_ns):
            break
        if line.time_ns <= end_ns:
            picked.append(line)
    picked.reverse()
    return picked


def follow_logs(
    pod: dict,
    container: str,
    *,
    clock: Callable[[], datetime],
    stop: threading.Event,
    tail_lines: int | None = None,
    since_seconds: int | None = None,
    timestamps: bool = False,
    previous: bool = False,
    templates: dict | None = None,
    interval: float = 0.5,
) -> Iterator[tuple[str, bytes]]:
    """``GET .../log?follow=true``: (stream, bytes) chunks, the lines so far first, then each new line
    as the clock reaches it, until ``stop`` is set or the consumer goes away (as ``kubectl logs -f``).

    The first chunk is produced eagerly, so a LookupError surfaces before anything is streamed.
    """
    lines = log_lines(pod, container, now=clock(), tail_lines=tail_lines, since_seconds=since_seconds,
                      previous=previous, templates=templates)

    def fmt(line: LogLine) -> str:
        return f"{format_timestamp(line.time_ns)} {line.text}\n" if timestamps else f"{line.text}\n"

    def stream() -> Iterator[tuple[str, bytes]]:
        yield "stdout", "".join(fmt(line) for line in lines).encode()
        if previous:
            return
        last = lines[-1].time_ns if lines else _ns(clock())
        while not stop.wait(interval):
            now = clock()
            window = max(1, math.ceil((_ns(now) - last) / NS) + 1)
            for line in log_lines(pod, container, now=now, since_seconds=window, templates=templates):
                if line.time_ns > last:
                    last = line.time_ns
                    yield line.stream, fmt(line).encode()

    return stream()


def format_timestamp(time_ns: int) -> str:
    """The kubelet's ``timestamps=true`` prefix: RFC 3339 with 9 fractional digits."""
    seconds, fraction = divmod(time_ns, NS)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


# -- which instance, which profile ---------------------------------------------


def _container_spec(pod: dict, container: str) -> dict:
    spec = pod.get("spec") or {}
    for item in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if item.get("name") == container:
            return item
    raise LookupError(f"container {container} is not valid for pod {pod['metadata']['name']}")


def _instance(pod: dict, container: str, now: datetime, previous: bool) -> _Instance:
    """The container run whose logs are asked for, chosen the way the kubelet chooses."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    current = next((item for item in statuses if item.get("name") == container), None)
    last = ((current or {}).get("lastState") or {}).get("terminated")
    if previous:
        if not last:
            raise LookupError(f'previous terminated container "{container}" in pod "{name}" not found')
        return _terminated(last, now)
    if current is None:  # no status reported yet: assume it runs since the pod was created
        started = status.get("startTime") or pod["metadata"].get("creationTimestamp")
        return _Instance(_ns(_parse_time(started) if started else now), None, False)
    state = current.get("state") or {}
    if "running" in state:
        started = state["running"].get("startedAt") or pod["metadata"].get("creationTimestamp")
        return _Instance(_ns(_parse_time(started)), None, False)
    if "terminated" in state:
        return _terminated(state["terminated"], now)
    if last:  # waiting to restart (e.g. CrashLoopBackOff): the last run's logs
        return _terminated(last, now)
    reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        reason = "trying and failing to pull image"
    raise LookupError(f'container "{container}" in pod "{name}" is waiting to start: {reason}')


def _terminated(state: dict, now: datetime) -> _Instance:
    end = _parse_time(state["finishedAt"]) if state.get("finishedAt") else now
    start_ns = _ns(_parse_time(state["startedAt"])) if state.get("startedAt") else _ns(end) - 30 * NS
    failed = state.get("exitCode", 1) != 0 or state.get("reason") not in (None, "Completed")
    return _Instance(start_ns, _ns(end), failed)


def _profile(pod: dict, templates: dict) -> dict:
    """The pod's template profile (its ``failing`` variant when the pod is set up to fail)."""
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    apps = templates.get("apps", {})
    app = next((labels[key] for key in APP_LABELS if labels.get(key) in apps), None)
    profile = apps[app] if app else templates["default"]
    if FAIL_ANNOTATION in (meta.get("annotations") or {}) and "failing" in profile:
        failing = profile["failing"]
        return {**failing, "fields": {**profile.get("fields", {}), **failing.get("fields", {})}}
    return profile


def _pod_key(pod: dict) -> str:
    meta = pod["metadata"]
    return meta.get("uid") or f"{meta.get('namespace', 'default')}/{meta['name']}"


# -- generation -----------------------------------------------------------------


def _generate_backwards(
    profile: dict, context: _Context, instance: _Instance, seed: str, end_ns: int
) -> Iterator[LogLine]:
    """Every line of the instance up to ``end_ns``, newest first, generated lazily."""
    startup = _sequence(profile.get("startup", []), _STARTUP_GAP, f"{seed}|startup")
    crash = []
    if instance.failed and instance.end_ns is not None:
        crash = _sequence(profile.get("crash", []), _CRASH_GAP, f"{seed}|crash")

    startup_times = []
    t = instance.start_ns
    for gap, _ in startup:
        t += gap
        startup_times.append(t)
    body_start = startup_times[-1] + 1 if startup_times else instance.start_ns

    crash_times = []
    if crash:
        t = max(instance.end_ns - sum(gap for gap, _ in crash), body_start)
        for gap, _ in crash:
            t += gap
            crash_times.append(t)
    body_end = min(crash_times[0] - 1 if crash_times else end_ns, end_ns)

    for (_, entry), t in zip(reversed(crash), reversed(crash_times), strict=True):
        yield context.line(entry, t, random.Random(f"{seed}|crash|{t}"))

    lines, weights = _weighted(profile.get("lines", []))
    rate = float(profile.get("rate", 0))
    if lines and rate > 0 and body_end > body_start:
        slot = max(int(60 * NS / rate), 1)
        for k in range(body_end // slot, math.ceil(body_start / slot) - 1, -1):
            rng = random.Random(f"{seed}|{k}")
            t = k * slot + rng.randrange(slot)
            if body_start <= t <= body_end:
                entry = rng.choices(lines, weights)[0]
                yield context.line(entry, t, rng)

    for (_, entry), t in zip(reversed(startup), reversed(startup_times), strict=True):
        yield context.line(entry, t, random.Random(f"{seed}|startup|{t}"))


def _sequence(entries: list, default_gap: float, seed: str) -> list[tuple[int, dict]]:
    """(gap before the line in ns, entry) for a startup or crash sequence.

    Gaps vary by up to 40% either way (deterministically) so that the times
    do not look machine-made.
    """
    rng = random.Random(seed)
    out = []
    for entry in entries:
        entry = {"text": entry} if isinstance(entry, str) else entry
        gap = float(entry.get("after", default_gap)) * rng.uniform(0.6, 1.4)
        out.append((max(int(gap * NS), 1), entry))
    return out


def _weighted(entries: list) -> tuple[list[dict], list[float]]:
    lines = [{"text": entry} if isinstance(entry, str) else entry for entry in entries]
    return lines, [float(line.get("weight", 1)) for line in lines]


class _Context:
    """Renders templates for one pod container."""

    def __init__(self, pod: dict, container: dict, fields: dict) -> None:
        meta = pod["metadata"]
        image = container.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
        self.values = {
            "pod": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "node": pod.get("spec", {}).get("nodeName", ""),
            "container": container["name"],
            "image_tag": tag,
        }
        self.fields = fields

    def line(self, entry: dict, time_ns: int, rng: random.Random) -> LogLine:
        return LogLine(time_ns, self.render(entry["text"], time_ns, rng, {}), entry.get("stream", "stdout"))

    def render(self, text: str, time_ns: int, rng: random.Random, picks: dict, depth: int = 0) -> str:
        """Fill the ``${...}`` placeholders of one template."""

        def fill(match: re.Match) -> str:
            name, attr, arg = match.groups()
            if name in self.fields:
                return self.field(name, attr, time_ns, rng, picks, depth)
            return _builtin(name, arg, time_ns, rng, self.values)

        return _PLACEHOLDER.sub(fill, text)

    def field(self, name: str, attr: str | None, time_ns: int, rng: random.Random, picks: dict, depth: int) -> str:
        """A value of field ``name`` (picked once per line, so ``${f.a}`` and ``${f.b}`` agree)."""
        if depth > 2:
            raise ValueError(f"log template field {name!r} nests placeholders too deeply")
        if name not in picks:
            picks[name] = rng.choice(self.fields[name])
        value = picks[name]
        if isinstance(value, dict):
            if attr not in value:
                raise ValueError(f"log template field {name!r} has no attribute {attr!r}; it has: {', '.join(value)}")
            value = value[attr]
        key = f"{name}.{attr}"
        if key not in picks:  # render nested placeholders once per line
            picks[key] = self.render(str(value), time_ns, rng, picks, depth + 1)
        return picks[key]


def _builtin(name: str, arg: str | None, time_ns: int, rng: random.Random, values: dict) -> str:
    if name in values:
        return values[name]
    if name == "time":
        return _format_time(time_ns, arg or "iso")
    if name == "int":
        low, high = _range(arg, int)
        return str(rng.randint(low, high))
    if name == "float":
        low, high = _range(arg, float)
        decimals = max(len(part.partition(".")[2]) for part in arg.split("-"))
        return f"{rng.uniform(low, high):.{decimals}f}"
    if name == "choice":
        return rng.choice((arg or "").split("|"))
    if name == "hex":
        return f"{rng.getrandbits(4 * int(arg or 16)):0{int(arg or 16)}x}"
    if name == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if name == "ip":
        return f"10.244.{rng.randint(0, 2)}.{rng.randint(2, 254)}"
    if name == "client_ip":
        return f"{rng.choice(('198.51.100', '203.0.113', '192.0.2'))}.{rng.randint(1, 254)}"
    raise ValueError(f"unknown log template placeholder ${{{name}}}; known: {', '.join(_BUILTINS)} and the profile's fields")


def _range(arg: str | None, kind: type) -> tuple:
    try:
        low, high = (kind(part) for part in (arg or "").split("-"))
    except ValueError:
        raise ValueError(f"log template range {arg!r} must look like 'LOW-HIGH', e.g. '1-500' or '0.001-0.250'") from None
    return low, high


def _format_time(time_ns: int, fmt: str) -> str:
    seconds, fraction = divmod(time_ns, NS)
    moment = datetime.fromtimestamp(seconds, UTC)
    millis, micros = fraction // 1_000_000, fraction // 1_000
    if fmt == "iso":
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    if fmt == "iso_us":
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{micros:06d}Z"
    if fmt == "rfc3339":
        return f"{moment:%Y-%m-%dT%H:%M:%S}Z"
    if fmt == "nginx":
        return f"{moment.day:02d}/{_MONTHS[moment.month - 1]}/{moment:%Y:%H:%M:%S} +0000"
    if fmt == "klog":
        return f"{moment:%m%d %H:%M:%S}.{micros:06d}"
    if fmt == "pg":
        return f"{moment:%Y-%m-%d %H:%M:%S}.{millis:03d} UTC"
    if fmt == "epoch":
        return f"{seconds}.{millis:03d}"
    if fmt == "epoch_ms":
        return str(seconds * 1000 + millis)
    if "%" in fmt:
        return moment.strftime(fmt)
    raise ValueError(f"unknown time format {fmt!r}; use one of {', '.join(_TIME_FORMATS)} or a strftime pattern")


def _check_templates(templates: dict, where: str) -> None:
    """Fail early, naming the profile, on a malformed logs.yaml."""
    if not isinstance(templates, dict) or "default" not in templates:
        raise ValueError(f"{where}: expected a mapping with 'default' and 'apps'")
    profiles = [("default", templates["default"])]
    for app, profile in (templates.get("apps") or {}).items():
        profiles.append((app, profile))
        if isinstance(profile, dict) and "failing" in profile:
            profiles.append((f"{app}.failing", profile["failing"]))
    for name, profile in profiles:
        if not isinstance(profile, dict):
            raise ValueError(f"{where}: profile {name!r} must be a mapping")
        unknown = set(profile) - {"rate", "lines", "startup", "crash", "fields", "failing", "format"}
        if unknown:
            raise ValueError(f"{where}: profile {name!r} has unknown key(s) {', '.join(sorted(unknown))}")
        if profile.get("lines") and not float(profile.get("rate", 0)) > 0:
            raise ValueError(f"{where}: profile {name!r} has lines but no positive 'rate' (lines per minute)")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ns(moment: datetime) -> int:
    """Exact nanoseconds since the epoch."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
