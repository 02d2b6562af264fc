"""Fleets: one runbook against many environments at once, bounded, with one verdict.

Why this module exists: a team with ten clusters wants one command (and one exit code for
its scheduler) for "run cluster-health everywhere". ``runbooks run NAME --env a --env b``
or ``--fleet FILE`` does that here, on top of the single-run contract instead of beside it:

- **everything is validated first**: every environment goes through
  :func:`runbooks.execute.prepare` (parameters merged and validated, Kubernetes preflight
  and the ``expected_context`` guard) before any run starts; one bad environment refuses
  the whole fleet (exit 2, nothing ran);
- **each environment is its own ``runbooks run`` process** (at most ``--parallel`` at a
  time): its own run directory ``outputs/ENV/RUNBOOK/TIMESTAMP/``, secret scan, watchdog
  (which may end its process) and signal handling. Memory is bounded by the slots: a slot
  holds one ``runbooks run`` and its kernel, and a finished run gives its memory back;
  threads in one process would share one watchdog's ``os._exit`` and one heap that never
  shrinks. The fleet prepares once what every run needs and that holds no environment's data
  (:func:`warm`: papermill, nbconvert, pandas, IPython and the product imported, the report's
  templates compiled, plotly.js compressed) and *forks* each run, which then runs the ``runbooks
  run`` command itself: no interpreter start, imports or template compilation per environment, and
  those pages are shared. Each run still has its own kernel, a process of its own, so no run ever
  sees another's state; the kernels are forked by one kernel server that imported ipykernel and
  the runbook's modules once (:mod:`runbooks.forkserver`). Where forking is not safe (another thread in the process, no ``fork``) each run
  is a new ``python -m runbooks.cli run`` instead;
- **one verdict**: ``fleet.json`` in ``outputs/_fleet/RUNBOOK/TIMESTAMP/`` (an env name
  cannot start with ``_``, so it never collides with a run directory) with each
  environment's status, exit code, counts by severity, duration and run directory; each
  run's own output is in ``logs/ENV.log`` beside it. The fleet exits with the worst code in
  the order 3 > 2 > 1 > 0: a run that failed while running beats one that was refused, which
  beats findings.
- **object storage like a single run**: with ``--output-dir s3://BUCKET/PREFIX`` (``gs://``,
  ``abs://``) each run is given that URL and uploads its run directory and index entry itself
  (summary.json names the fleet, ``runbooks runs --from URL`` shows it); fleet.json, the logs and
  the record of a run that ended without one go to ``PREFIX/_fleet/…`` (:mod:`runbooks.fleetoutput`).

A plan id is bound to one environment and its cluster, so ``--approve`` is refused for a
fleet (exit 2): approve each environment's plan with its own ``runbooks run``.

SIGINT or SIGTERM stops the fleet cleanly: no new run starts, each running one is
interrupted the way ``runbooks run`` handles Ctrl-C (its kernel stops at the next safe point
and the run ends with exit 3, its summary saying so), and ``fleet.json`` lists the
environments that never started as ``not-run``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runbooks import execute, forkserver, model, preload, storage
from runbooks.environments import Project, load_mapping, new_run_dir
from runbooks.errors import EXIT_FAILED, EXIT_INVALID, InvalidInput, RunbookError, cut
from runbooks.fleetoutput import FleetOutput
from runbooks.processes import become
from runbooks.summary import write_json

FLEET_DIR = "_fleet"
"""``outputs/_fleet/RUNBOOK/TIMESTAMP/``: fleet.json and logs/ (env names start with a letter or digit)."""
FLEET_SCHEMA = 1
MAX_PARALLEL = 64
MAX_ENVIRONMENTS = 1000
ENV_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
STOP_GRACE = 60.0
"""Seconds a run has, after SIGINT, to stop its kernel and write its summary before it is killed."""


def default_parallel(count: int) -> int:
    """Runs at once when ``--parallel`` is not given: at most 8 (a run and its kernel are
    ~300 MB), and at most 4 per core (a run mostly waits on its kernel and the API)."""
    return max(1, min(8, count, 4 * (os.cpu_count() or 1)))


# --------------------------------------------------------------------------
# The fleet file
# --------------------------------------------------------------------------


class FleetEnv(BaseModel):
    """One environment of a fleet file, with parameters for it alone."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{ENV_NAME}$")
    parameters: dict[str, Any] = Field(default_factory=dict)


class FleetFile(BaseModel):
    """Schema of a ``--fleet`` file.

    Example::

        parallel: 4                 # optional; --parallel wins
        parameters:                 # optional; every environment
          restart_threshold: 5
        environments:
          - prod-eu
          - name: prod-us
            parameters: {namespaces: [shop]}   # this environment only
    """

    model_config = ConfigDict(extra="forbid")

    environments: list[str | FleetEnv] = Field(min_length=1, max_length=MAX_ENVIRONMENTS)
    parameters: dict[str, Any] = Field(default_factory=dict)
    parallel: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)

    @field_validator("environments")
    @classmethod
    def _names(cls, value: list[str | FleetEnv]) -> list[str | FleetEnv]:
        for item in value:
            if isinstance(item, str) and not re.fullmatch(ENV_NAME, item):
                raise ValueError(f"{item!r} is not an env name (letters, digits, '_', '.', '-'; "
                                 "starting with a letter or digit)")
        return value

    def members(self) -> list[Member]:
        out = []
        for item in self.environments:
            name, own = (item, {}) if isinstance(item, str) else (item.name, item.parameters)
            out.append(Member(name, {**self.parameters, **own}))
        return out


@dataclass
class Member:
    """An environment of the fleet and the parameters the fleet file gives it."""

    env: str
    parameters: dict[str, Any] = field(default_factory=dict)


def load_fleet(path: str | os.PathLike[str]) -> FleetFile:
    """Read and validate a fleet file; :class:`InvalidInput` (exit 2) names each problem."""
    data = load_mapping(path, "fleet file")
    try:
        return FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("str", "FleetEnv")))
            if err["type"] == "extra_forbidden":
                allowed = FleetEnv.model_fields if "." in loc else FleetFile.model_fields
                problems.append(f"unknown key {loc!r}; allowed: {', '.join(allowed)}")
            elif err["type"] == "missing":
                problems.append(f"{loc}: required")
            else:
                problems.append(f"{loc or 'file'}: {err['msg']}")
        seen: list[str] = []
        for p in problems:  # a union reports one error per branch: say each thing once
            if p not in seen:
                seen.append(p)
        raise InvalidInput(f"fleet file {str(path)!r}: " + "; ".join(seen)) from exc


def fleet_members(envs: Sequence[str], fleet: FleetFile | None) -> list[Member]:
    """The fleet file's environments, then each ``--env`` (each name once)."""
    members = (fleet.members() if fleet else []) + [Member(e) for e in envs]
    seen: set[str] = set()
    for m in members:
        if m.env in seen:
            raise InvalidInput(f"env {m.env!r} is given twice: each environment runs once in a fleet")
        seen.add(m.env)
    if not members:
        raise InvalidInput("no environment: give --env ENV (repeatable) or --fleet FILE")
    return members


# --------------------------------------------------------------------------
# Validation of every environment (before any run starts)
# --------------------------------------------------------------------------


@dataclass
class FleetPlan:
    """A validated fleet: what each process runs."""

    project: Project
    runbook: str
    members: list[Member]
    workdir: Path
    files: dict[str, list[str]]
    pairs: list[tuple[str, str]]
    fail_on: str
    timeout: int


def prepare(project: Project, runbook: str, members: list[Member], *, files: Sequence[str] = (),
            pairs: Sequence[tuple[str, str]] = (), approve: str | None = None, fail_on: str = "critical",
            timeout: int = execute.DEFAULT_CELL_TIMEOUT, parallel: int = 4,
            workdir: Path | None = None) -> FleetPlan:
    """Validate every environment as ``runbooks run`` would; raise one :class:`InvalidInput` naming each bad one.

    Parameters merge, lowest first: env.yaml < parameters/ENV/RUNBOOK.yaml < the fleet
    file's ``parameters`` < its environment's ``parameters`` < ``-f FILE`` < ``-p NAME VALUE``.
    """
    if approve:
        raise InvalidInput(
            f"--approve {approve!r} with a fleet of {len(members)} environment(s): a plan id is bound "
            "to one environment and its cluster; approve it with `runbooks run NAME --env ENV --approve "
            "PLAN_ID` for that environment alone")
    workdir = workdir or Path(tempfile.mkdtemp(prefix="runbooks-fleet-"))
    plan_files: dict[str, list[str]] = {}
    for m in members:
        own = []
        if m.parameters:
            path = workdir / f"{m.env}.yaml"
            path.write_text(yaml.safe_dump(m.parameters, sort_keys=True), encoding="utf-8")
            own.append(str(path))
        plan_files[m.env] = own + [str(Path(f).resolve()) for f in files]

    def check(m: Member) -> str | None:
        try:
            execute.prepare(project, runbook, m.env, files=plan_files[m.env], pairs=list(pairs),
                            fail_on=fail_on, timeout=timeout)
        except RunbookError as exc:
            return f"env {m.env!r}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(members)))) as pool:
        problems = [p for p in pool.map(check, members) if p]
    if problems:
        raise InvalidInput(f"fleet refused, nothing ran ({len(problems)} of {len(members)} environment(s) "
                           "failed validation):\n  " + "\n  ".join(problems))
    return FleetPlan(project, project.notebook(runbook).stem, members, workdir, plan_files,
                     list(pairs), fail_on, timeout)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def worst(codes: Sequence[int | None]) -> int:
    """The fleet's exit code: 3 > 2 > 1 > 0; a run killed by a signal or with another code counts as 3."""
    ranked = [c if c in (0, 1, 2, 3) else EXIT_FAILED for c in codes if c is not None]
    return max(ranked, default=0)


@dataclass
class EnvResult:
    env: str
    status: str = "not-run"
    exit_code: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    run_dir: str | None = None
    log: str | None = None
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    started: str | None = None
    ended: str | None = None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FleetResult:
    exit_code: int
    fleet_dir: Path
    results: list[EnvResult]
    summary: dict[str, Any]
    location: str | None = None
    """Where fleet.json is, as it is shown: ``s3://…/_fleet/RUNBOOK/FLEET_ID`` in object storage."""


def _arguments(plan: FleetPlan, env: str, output_dir: str | None, extra: Sequence[str]) -> list[str]:
    """The ``runbooks`` arguments of one environment's run."""
    argv = ["--project-dir", str(plan.project.root), "--notebooks-dir", str(plan.project.notebooks_dir),
            "run", plan.runbook, "--env", env, "--no-progress", "--fail-on", plan.fail_on,
            "--timeout", str(plan.timeout)]
    for f in plan.files[env]:
        argv += ["-f", f]
    for name, value in plan.pairs:
        argv += ["-p", name, value]
    if output_dir:
        argv += ["--output-dir", output_dir]
    return argv + list(extra)


def warm() -> None:
    """Prepare, before the fleet forks, what every run needs and that holds no environment's data, so
    the runs share it (CPU and memory) instead of each paying for it: the executor's and the report's
    modules (pandas and IPython among them), and the report's renderer with its templates compiled,
    its parsers' tables built and plotly.js compressed, by rendering the report of a tiny notebook once."""
    import ipykernel.kernelspec  # noqa: F401 - how each run finds its kernel
    import IPython  # noqa: F401 - reading the records of a run imports it (runbooks.model)
    import nbclient  # noqa: F401
    import nbconvert  # noqa: F401
    import nbformat
    import pandas  # noqa: F401
    import papermill  # noqa: F401

    from runbooks import engine, report, reporthtml, runner, summary  # noqa: F401

    try:
        v4 = nbformat.v4  # markdown, HTML and an entity: the parsers' tables are built on first use
        html = v4.new_output("display_data", data={"text/html": "<p>a&nbsp;b</p>"})
        nb = v4.new_notebook(cells=[v4.new_markdown_cell("# -\n*a* &amp; `b`"), v4.new_code_cell(outputs=[html])])
        reporthtml.render_html(nb, {"runbook": "-", "env": "-", "findings": []})
        reporthtml.plotly_js_blob()
    except Exception:  # noqa: BLE001 - only a head start: each run renders its own report and says why it fails
        pass


def _kernel_modules(plan: FleetPlan) -> list[str]:
    """What the kernel server imports for every run: the notebook's imports and each data source's client."""
    nb = execute.read_notebook(plan.project.notebook(plan.runbook))
    return preload.modules(nb, dict.fromkeys(preload.SOURCE_MODULES, True))


class _Run:
    """One environment's ``runbooks run``: a forked child of the fleet, or a new process."""

    def __init__(self, pid: int, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.proc = pid, proc
        self.code: int | None = None

    def poll(self) -> int | None:
        """The run's exit code once it ended (``-N`` for signal N), else None."""
        if self.proc is not None:
            return self.proc.poll()
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass


def _fork_run(child_main: Callable[[list[str]], Any], args: list[str], log: Path, environ: dict[str, str]) -> _Run:
    """Fork, and in the child run the ``runbooks`` command with ``args`` (output into ``log``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _Run(pid)
    try:  # the child: never returns into the fleet's code
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        os._exit(EXIT_FAILED)
    # a session of its own: the fleet alone decides when a run is interrupted
    become((null, log_fd, log_fd), environ, lambda: child_main(args), failed=EXIT_FAILED)


def _spawn_run(args: list[str], log: Path, environ: dict[str, str], cwd: str) -> _Run:
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "runbooks.cli", *args], stdin=subprocess.DEVNULL,
                                stdout=fh, stderr=subprocess.STDOUT, env=environ, cwd=cwd,
                                start_new_session=True)  # the fleet alone decides when a run is interrupted
    return _Run(proc.pid, proc)


def _kill_tree(run: _Run) -> None:
    """A run that did not stop within its grace: kill it and everything it started (its kernel)."""
    from runbooks.processes import descendants

    for pid in [run.pid, *descendants(run.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _read_result(result: EnvResult, out: FleetOutput, log: Path) -> bool:
    """Fill ``result`` from the run's log and summary.json; whether the run wrote its summary."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    found = re.findall(r"^run directory: (.+)$", text, re.MULTILINE)
    if found:
        result.run_dir = found[-1].strip()
    elif (m := re.findall(r"; run directory (\S+)$", text, re.MULTILINE)):
        result.run_dir = m[-1].strip()
    summary: dict[str, Any] = {}
    if result.run_dir:
        result.run_dir, summary = out.read_run(result.run_dir)
    if summary:
        result.status = summary.get("status") or result.status
        result.counts = {k: int((summary.get("counts") or {}).get(k, 0)) for k in model.SEVERITIES if k != "ok"}
        if summary.get("error"):
            result.error = cut(summary["error"].get("message") or "", 300)
    elif result.exit_code == EXIT_INVALID:
        result.status = "rejected"
    else:
        result.status = "failed"
    if not result.error and result.exit_code not in (0, 1):
        lines = [x for x in text.splitlines() if x.startswith("runbooks:")]
        if lines:
            result.error = cut(lines[-1], 300)
    return bool(summary)


def _fork_safe() -> bool:
    """No thread but this one, or object storage's: fsspec's event loop (``fsspecIO``) and the
    loop's resolver pool (``asyncio_N``). fsspec drops its loop in a forked child and makes a new
    one (``os.register_at_fork``), and ``concurrent.futures`` reinitialises its lock there, so a
    forked run never touches what those threads hold."""
    ours = threading.current_thread()
    return all(t is ours or t.name == "fsspecIO" or t.name.startswith("asyncio_") for t in threading.enumerate())


def run(plan: FleetPlan, *, parallel: int, output_dir: str | os.PathLike[str] | storage.Store | None = None,
        extra_args: Sequence[str] = (), echo: Callable[[str], None] = print,
        child_main: Callable[[list[str]], Any] | None = None, start_method: str | None = None,
        stop_grace: float = STOP_GRACE) -> FleetResult:
    """Run every environment as its own ``runbooks run``, ``parallel`` at a time; write fleet.json.

    ``start_method``: ``fork`` runs ``child_main(args)`` (the ``runbooks`` command) in a forked
    child, which shares the imports the fleet made once (:func:`warm`) instead of paying a new
    interpreter's start and imports for each environment; ``spawn`` starts ``python -m
    runbooks.cli`` per environment. The default is ``fork`` when it is safe (POSIX, a
    ``child_main``, and no other thread in this process but fsspec's), else ``spawn``.

    ``output_dir`` is a directory (default ``PROJECT/outputs``) or object storage
    (``s3://BUCKET/PREFIX`` or its :class:`runbooks.storage.Store`): see :mod:`runbooks.fleetoutput`.
    """
    if start_method is None:
        start_method = "fork" if (hasattr(os, "fork") and child_main is not None and _fork_safe()) else "spawn"
    if start_method not in ("fork", "spawn") or (start_method == "fork" and child_main is None):
        raise InvalidInput(f"start method {start_method!r}: allowed are 'fork' (with child_main) and 'spawn'")
    out = FleetOutput(output_dir, plan.project.outputs_dir, echo)
    start = model.utcnow()
    fleet_dir = new_run_dir(out.local, FLEET_DIR, plan.runbook, start)
    (fleet_dir / "logs").mkdir()
    server = None
    if start_method == "fork":
        warm()
        server = forkserver.start(_kernel_modules(plan))
    scheduler = _Scheduler(plan, out, fleet_dir, extra_args, echo, child_main, start_method)
    if server is not None:
        scheduler.environ[forkserver.ENV] = server.path
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, scheduler.on_signal)
    try:
        scheduler.run(parallel, stop_grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
    ordered = [scheduler.results[m.env] for m in plan.members]
    code = EXIT_FAILED if scheduler.stopping else worst([r.exit_code for r in ordered])
    summary = _fleet_summary(plan, fleet_dir, ordered, start, parallel=parallel, start_method=start_method,
                             interrupted=bool(scheduler.stopping), code=code)
    location = out.finish(fleet_dir, summary)
    if out.failed_uploads:  # the fleet's record would be lost, as for a single run whose upload failed
        code = summary["exit_code"] = EXIT_FAILED
        write_json(fleet_dir / "fleet.json", summary)
    return FleetResult(code, fleet_dir, ordered, summary, location)


class _Scheduler:
    """The fleet's loop: start members up to ``parallel``, reap the ones that ended, stop on a signal."""

    def __init__(self, plan: FleetPlan, out: FleetOutput, fleet_dir: Path, extra_args: Sequence[str],
                 echo: Callable[[str], None], child_main: Callable[[list[str]], Any] | None,
                 start_method: str) -> None:
        self.plan, self.out, self.logs = plan, out, fleet_dir / "logs"
        self.fleet = fleet_dir.relative_to(out.local).as_posix()
        self.extra_args = [*extra_args, "--fleet-id", self.fleet]
        self.echo, self.child_main, self.start_method = echo, child_main, start_method
        self.results = {m.env: EnvResult(m.env, parameters=m.parameters) for m in plan.members}
        self.total = len(plan.members)
        self.width = len(str(self.total))
        self.environ = {**os.environ, "RUNBOOKS_HOME": str(plan.project.root), "PYTHONUNBUFFERED": "1"}
        self.pending = list(enumerate(plan.members, 1))
        self.running: dict[str, tuple[_Run, float, Path]] = {}
        self.stopping: list[float] = []
        self.finished = 0

    def on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.echo(f"runbooks: {signal.Signals(signum).name}: stopping the fleet ({len(self.running)} run(s) "
                      f"interrupted, {len(self.pending)} not started)")
        self.stopping.append(time.monotonic())
        for r, _, _ in list(self.running.values()):
            r.signal(signal.SIGINT)  # `runbooks run` interrupts its kernel and records it

    def run(self, parallel: int, stop_grace: float) -> None:
        while self.pending or self.running:
            while self.pending and len(self.running) < parallel and not self.stopping:
                self.start_next()
            self.reap()
            if self.stopping and self.pending:
                self.pending.clear()
            if self.stopping and time.monotonic() - self.stopping[0] > stop_grace:
                for handle, _, _ in list(self.running.values()):
                    _kill_tree(handle)
            time.sleep(0.05)

    def start_next(self) -> None:
        index, member = self.pending.pop(0)
        result = self.results[member.env]
        log = self.logs / f"{member.env}.log"
        result.log = log.relative_to(self.out.local).as_posix()
        result.started = model.utcnow().isoformat()
        args = _arguments(self.plan, member.env, self.out.target, self.extra_args)
        handle = (_fork_run(self.child_main, args, log, self.environ)  # type: ignore[arg-type]
                  if self.start_method == "fork"
                  else _spawn_run(args, log, self.environ, str(self.plan.project.root)))
        self.running[member.env] = (handle, time.monotonic(), log)
        self.echo(f"[{index:>{self.width}}/{self.total}] {member.env}: started")

    def reap(self) -> None:
        for env, (handle, began, log) in list(self.running.items()):
            code = handle.poll()
            if code is None:
                continue
            del self.running[env]
            self.finished += 1
            result = self.results[env]
            result.exit_code = code if code >= 0 else 128 - code
            result.duration_s = round(time.monotonic() - began, 1)
            result.ended = model.utcnow().isoformat()
            if not _read_result(result, self.out, log) and result.exit_code is not None:
                error = result.error or (f"the run ended with exit {result.exit_code} without writing its "
                                         f"summary; see {result.log}")
                result.run_dir = self.out.record_unfinished(
                    env=env, runbook=self.plan.runbook, started=datetime.fromisoformat(str(result.started)),
                    exit_code=result.exit_code, error=error, fail_on=self.plan.fail_on, fleet=self.fleet,
                    log=result.log)
            self.out.put_log(log, str(result.log))
            self.echo(f"[{self.finished:>{self.width}}/{self.total}] {env}: {result.status} "
                      f"(exit {result.exit_code}) in {result.duration_s} s")


def _fleet_summary(plan: FleetPlan, fleet_dir: Path, ordered: list[EnvResult], start: datetime, *,
                   parallel: int, start_method: str, interrupted: bool, code: int) -> dict[str, Any]:
    """fleet.json: the fleet's exit code, statuses, and each environment's result."""
    end = model.utcnow()
    by_status: dict[str, int] = {}
    for r in ordered:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    return {
        "schema": FLEET_SCHEMA,
        "runbook": plan.runbook,
        "fleet_id": fleet_dir.name,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "duration_s": round((end - start).total_seconds(), 1),
        "parallel": parallel,
        "start_method": start_method,
        "fail_on": plan.fail_on,
        "interrupted": interrupted,
        "exit_code": code,
        "statuses": by_status,
        "environments": [r.public() for r in ordered],
    }


def format_table(result: FleetResult) -> str:
    """The fleet summary ``runbooks run`` prints at the end."""
    header = ("ENV", "STATUS", "EXIT", "CRITICAL", "WARNING", "INFO", "DURATION", "RUN DIR")
    rows = [header]
    for r in result.results:
        rows.append((r.env, r.status, "-" if r.exit_code is None else str(r.exit_code),
                     str(r.counts.get("critical", "-")), str(r.counts.get("warning", "-")),
                     str(r.counts.get("info", "-")), "-" if r.duration_s is None else f"{r.duration_s} s",
                     r.run_dir or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    s = result.summary
    statuses = ", ".join(f"{n} {k}" for k, n in s["statuses"].items())
    lines.append(f"fleet {s['runbook']}: {len(result.results)} environment(s): {statuses}; "
                 f"exit {result.exit_code} in {s['duration_s']} s"
                 + (" (interrupted)" if s["interrupted"] else ""))
    lines.append(f"fleet: {result.location or result.fleet_dir}/fleet.json")
    errors = [r for r in result.results if r.error]
    for r in errors:
        lines.append(f"  {r.env}: {r.error}")
    return "\n".join(lines)
