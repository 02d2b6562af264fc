"""Headless execution: the contract behind ``runbooks run``.

Why this module exists: papermill runs notebooks, but on its own it has three
pitfalls for scheduled use, which this module closes once for every runbook:

- **silent exit 0 after truncated output**: a cell calling ``sys.exit(0)``
  stops the notebook without an error. Here every code cell must have run,
  or the run fails (exit 3).
- **hangs when the kernel dies**: a dead kernel (``DeadKernelError``) and a
  cell running past ``--timeout`` (``CellTimeoutError``) end the run with exit
  3; a watchdog also guards the whole run (per-cell timeout × code cells +
  kernel start-up) by killing the kernel's process group and, if even that
  does not end it, the process.
- **secrets in the output notebook**: parameters are validated before a
  kernel starts (unknown names, wrong types, secret-looking names → exit 2,
  nothing executed); after the run the notebook and the HTML are scanned
  (:mod:`runbooks.secrets`) and a leak fails the run (exit 3) with no
  report.html.

The steps: :func:`prepare` (project, env, merged and validated parameters,
Kubernetes preflight) → :func:`execute` (papermill with a progress bar into a
run directory ``outputs/<env>/<runbook>/<UTC timestamp>/``) → records read
back from the executed notebook (:func:`runbooks.model.read_records`) →
``summary.json``, secret scan, ``report.html``, ``outputs/index.html``.

Exit codes: 0 no finding at or above ``--fail-on``; 1 findings at or above it;
2 bad input, configuration or approval (nothing executed or changed); 3 the
runbook failed while running, or the output failed the secret scan.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbooks import kube, model, notify, storage
from runbooks import secrets as sec
from runbooks.environments import (  # noqa: F401 - re-exported: the CLI and tests name them here
    PATH_PARAMETERS,
    EnvConfig,
    Project,
    load_mapping,
    merge,
    new_run_dir,
    parse_value,
)
from runbooks.errors import (
    EXIT_FAILED,
    EXIT_FINDINGS,
    EXIT_INVALID,
    EXIT_OK,
    InvalidInput,
    RunbookError,
    cut,
)
from runbooks.parameters import PROJECT_ROOT, ParamsBase, params_model, validate_params

DEFAULT_CELL_TIMEOUT = 600
MAX_CELL_TIMEOUT = 86400
KERNEL_START_TIMEOUT = 60
WATCHDOG_GRACE = 30
FAIL_ON_CHOICES = ("info", "warning", "critical")
SUMMARY_SCHEMA = 1


# --------------------------------------------------------------------------
# Notebook inspection
# --------------------------------------------------------------------------


def _unquoted(exc: Exception) -> str:
    """An error about a file, without any excerpt of the file (it may be a key given by mistake)."""
    text = str(exc)
    if any(q in text for q in "'\"`") or "\n" in text:
        return f"it is not a valid notebook ({type(exc).__name__})"
    return cut(text)


def read_notebook(path: str | os.PathLike[str]) -> Any:
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except (OSError, ValueError) as exc:  # never quote the file's content
        raise InvalidInput(f"notebook {str(path)!r} cannot be read: {_unquoted(exc)}") from exc


def notebook_parameters(path: str | os.PathLike[str]) -> list[Any]:
    """The notebook's parameters cell, as papermill infers it (name, type, default, help)."""
    from papermill import inspect_notebook
    from papermill.models import Parameter

    try:
        found = inspect_notebook(str(path))
    except (OSError, ValueError, AttributeError, KeyError) as exc:  # never quote the file: it may be a key
        raise InvalidInput(f"notebook {str(path)!r} cannot be inspected: {_unquoted(exc)}") from exc
    return [Parameter(**p) for p in found.values()]


def purpose(path: str | os.PathLike[str]) -> str:
    """One line from the first markdown cell: its title, and the first sentence after it."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return "(unreadable notebook)"
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        title, first = "", ""
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                title = title or line.lstrip("#").strip()
            elif not first:
                first = re.sub(r"[*_`]", "", line)
        line = f"{title}: {first}" if title and first else title or first
        return line if len(line) <= 110 else line[:109] + "…"
    return "(no description: the notebook has no markdown cell)"


# --------------------------------------------------------------------------
# Parameters: merge, parse, validate (before any kernel starts)
# --------------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything decided before a kernel starts."""

    project: Project
    runbook: str
    notebook: Path
    env: str
    model: type[ParamsBase]
    declared: list[str]
    given: dict[str, Any]
    validated: ParamsBase
    cluster: Any = None
    fail_on: str = "critical"
    timeout: int = DEFAULT_CELL_TIMEOUT


def prepare(
    project: Project,
    name: str,
    env: str,
    *,
    files: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] = (),
    approve: str | None = None,
    fail_on: str = "critical",
    timeout: int = DEFAULT_CELL_TIMEOUT,
    check_cluster: bool = True,
) -> Prepared:
    """Resolve and validate a run; raise :class:`InvalidInput` (exit 2) on any problem.

    Merge order, lowest first: ``parameters/<env>/env.yaml`` connections (only
    the keys the notebook declares) < ``parameters/<env>/<runbook>.yaml`` <
    each ``-f FILE`` < each ``-p NAME VALUE`` < ``--approve`` (sets
    ``approve_plan`` and ``dry_run=False``). Then the Kubernetes preflight
    (connection, context guard, API check) when the notebook declares
    ``kubeconfig`` — all before any kernel starts.
    """
    if fail_on not in FAIL_ON_CHOICES:
        raise InvalidInput(f"--fail-on {fail_on!r} is not one of {', '.join(FAIL_ON_CHOICES)}")
    if not 0 < timeout <= MAX_CELL_TIMEOUT:
        raise InvalidInput(f"--timeout {timeout} must be a number of seconds from 1 to {MAX_CELL_TIMEOUT} (a day)")
    notebook = project.notebook(name)
    runbook = notebook.stem
    inspected = notebook_parameters(notebook)
    declared = [p.name for p in inspected]
    model = params_model(runbook, inspected)
    given = merge(project, runbook, env, declared, model, files=files, pairs=pairs, approve=approve)
    token = PROJECT_ROOT.set(str(project.root))
    try:
        validated = validate_params(model, given)
    finally:
        PROJECT_ROOT.reset(token)

    cluster = None
    if check_cluster and ("kubeconfig" in declared or "kube_context" in declared):
        try:
            cluster = kube.preflight(validated)
        except RunbookError as exc:
            raise InvalidInput(f"preflight for env {env!r}: {exc}") from exc
    return Prepared(
        project=project, runbook=runbook, notebook=notebook, env=env, model=model,
        declared=declared, given=given, validated=validated, cluster=cluster,
        fail_on=fail_on, timeout=timeout,
    )


# --------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------


def check_output_dir(output_dir: str | os.PathLike[str] | storage.Store | None) -> storage.Store | None:
    """``--output-dir`` must be a directory, or not exist yet (it is created), or object storage
    (``s3://BUCKET/PREFIX``, ``gs://…``, ``abs://…``) whose bucket exists and takes a write.

    Returns the :class:`runbooks.storage.Store` for object storage (None for a directory).
    """
    if output_dir is None:
        return None
    if isinstance(output_dir, storage.Store):
        return output_dir
    if storage.is_url(output_dir):
        store = storage.open_store(str(output_dir))
        store.check_writable()
        return store
    path = Path(output_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InvalidInput(f"--output-dir {str(output_dir)!r} is not a directory ({str(existing)!r} is a file)")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(f"--output-dir {str(output_dir)!r} cannot be written")
    return None


def check_report_base_url(url: str | None) -> str | None:
    """``--report-base-url``: where the output location is served over HTTP(S), for links in messages."""
    if url is None or not url.strip():
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise InvalidInput(f"--report-base-url {sec.shown(url)} must be an http:// or https:// URL "
                           "without query, fragment or credentials")
    return url.strip().rstrip("/")


class _Watchdog:
    """Guards a whole run: at the deadline kill the kernel; if that does not end it, exit 3."""

    def __init__(self, seconds: float, on_abort: Callable[[], None]) -> None:
        self.seconds = seconds
        self.on_abort = on_abort
        self.client: Any = None
        self.expired = False
        self.interrupted = False
        self.done = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> _Watchdog:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self.done.set()
        self._timer.cancel()

    def kill_kernel(self) -> None:
        km = getattr(self.client, "km", None)
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the kernel leads its own session
        except (ProcessLookupError, PermissionError, OSError):
            process.kill()

    def interrupt_kernel(self) -> bool:
        """SIGINT to the kernel (what Jupyter's interrupt sends): the running cell stops at its next
        safe point; an apply finishes the change it is sending and records it first."""
        km = getattr(self.client, "km", None)
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is None or process.poll() is not None:
            return False
        try:
            os.kill(process.pid, signal.SIGINT)
        except OSError:
            return False
        self.interrupted = True
        return True

    def flush_notebook(self) -> None:
        """Best effort: save the executed notebook as it stands (it shows the cell that hung)."""
        flush = getattr(getattr(self.client, "nb_man", None), "flush", None)
        if flush is not None:
            try:
                flush()
            except Exception:  # noqa: BLE001 - the process is about to end either way
                pass

    def _expire(self) -> None:
        if self.done.is_set():
            return
        self.expired = True
        self.kill_kernel()
        if not self.done.wait(WATCHDOG_GRACE):
            try:
                self.flush_notebook()
                self.on_abort()
            finally:
                os._exit(EXIT_FAILED)


@dataclass
class Outcome:
    """How the execution itself ended (before findings and the secret scan)."""

    kind: str  # completed | cell-error | dead-kernel | cell-timeout | run-timeout | truncated | crashed | interrupted
    message: str = ""
    cell_index: int | None = None
    ename: str | None = None


def _running_cell(nb: Any) -> int | None:
    """The cell that was executing when the run ended: the last code cell that started."""
    last = None
    for index, cell in enumerate(nb.cells if nb is not None else []):
        if cell.cell_type == "code" and cell.get("metadata", {}).get("papermill", {}).get("start_time"):
            last = index
    return last


def _unexecuted_code_cell(nb: Any) -> int | None:
    """The first code cell that never ran (papermill status ``pending``, no execution count)."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status == "pending" or (status is None and cell.get("execution_count") is None):
            return index
    return None


def _error_output(nb: Any, index: int | None) -> tuple[str | None, str]:
    if nb is None or index is None or index >= len(nb.cells):
        return None, ""
    for output in nb.cells[index].get("outputs", []):
        if output.get("output_type") == "error":
            return output.get("ename"), output.get("evalue", "")
    return None, ""


def _preload_report() -> None:
    try:
        import nbconvert.exporters.html  # noqa: F401
    except Exception:  # noqa: BLE001 - only a head start: publishing imports it again and reports errors
        pass


def _run_papermill(prepared: Prepared, output: Path, parameters: dict[str, Any],
                   progress: bool, watchdog: _Watchdog, secret_sink: str = "") -> Outcome:
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from runbooks import engine

    engine.register()
    kernel_env = dict(os.environ)
    kernel_env.update(
        RUNBOOKS_HEADLESS="1",
        RUNBOOKS_HOME=str(prepared.project.root),
        RUNBOOKS_ENV=prepared.env,  # part of every plan id (runbook.Run.binding)
        PLOTLY_RENDERER="plotly_mimetype",
        PYTHONUNBUFFERED="1",
    )
    if secret_sink:
        kernel_env[sec.SINK_ENV] = secret_sink
    def stop(signum: int, frame: Any) -> None:
        """SIGINT/SIGTERM: interrupt the kernel and let the cell end cleanly; a second one stops hard."""
        if watchdog.interrupted or not watchdog.interrupt_kernel():
            raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop)
    try:
        pm.execute_notebook(
            str(prepared.notebook), str(output), parameters=parameters,
            engine_name=engine.NAME, progress_bar=progress, log_output=False,
            start_timeout=KERNEL_START_TIMEOUT, execution_timeout=prepared.timeout,
            cwd=str(prepared.project.root), request_save_on_cell_execute=True,
            watchdog=watchdog, kernel_env=kernel_env,
        )
    except pm.PapermillExecutionError as exc:
        if watchdog.interrupted:
            return Outcome("interrupted", f"interrupted (SIGINT or SIGTERM) in cell {exc.cell_index}: the run was "
                           f"stopped; {exc.ename}: {exc.evalue}", exc.cell_index, exc.ename)
        return Outcome("cell-error", f"cell {exc.cell_index} raised {exc.ename}: {exc.evalue}",
                       exc.cell_index, exc.ename)
    except DeadKernelError:
        kind = "run-timeout" if watchdog.expired else "dead-kernel"
        return Outcome(kind, "", None)
    except CellTimeoutError:
        return Outcome("cell-timeout", "", None)
    except KeyboardInterrupt:
        return Outcome("crashed", "interrupted (Ctrl-C or SIGINT): the run was stopped")
    except Exception as exc:  # kernel failed to start, papermill I/O ...
        if watchdog.expired:
            return Outcome("run-timeout", "", None)
        return Outcome("crashed", f"{type(exc).__name__}: {cut(str(exc))}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if watchdog.interrupted:
        return Outcome("interrupted", "interrupted (SIGINT or SIGTERM): the run was stopped")
    return Outcome("completed")


def step_of(nb: Any, index: int | None) -> str | None:
    """The step a cell belongs to: the nearest markdown heading above it (``## Diagnosis: pods``)."""
    if nb is None or index is None:
        return None
    for cell in reversed(nb.cells[: index + 1]):
        if cell.cell_type != "markdown":
            continue
        for line in "".join(cell.source).splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or None
    return None


def _classify(outcome: Outcome, nb: Any, prepared: Prepared, deadline: float) -> Outcome:
    """Fill in the failing cell and the step it belongs to, with a message an SRE can act on."""
    found = _classify_cell(outcome, nb, prepared, deadline)
    step = step_of(nb, found.cell_index)
    if step and found.kind != "completed":
        found.message = f"step {step!r} (cell {found.cell_index}): {found.message}"
    return found


def _classify_cell(outcome: Outcome, nb: Any, prepared: Prepared, deadline: float) -> Outcome:
    running = _running_cell(nb)
    if outcome.kind == "completed" and nb is not None:
        missing = _unexecuted_code_cell(nb)
        if missing is not None:
            ename = None
            stopped = next(
                (i for i in range(missing - 1, -1, -1)
                 if nb.cells[i].cell_type == "code" and _error_output(nb, i)[0]),
                None,
            )
            if stopped is not None:
                ename, evalue = _error_output(nb, stopped)
                why = f"cell {stopped} raised {ename}: {cut(evalue, 120)}"
            else:
                why = f"cell {missing} never ran"
            return Outcome(
                "truncated",
                f"the notebook stopped early without a papermill error ({why}); "
                f"cells from {missing} on did not run, so its results are incomplete",
                stopped if stopped is not None else missing,
                ename,
            )
        return outcome
    if outcome.kind == "dead-kernel":
        return Outcome("dead-kernel", f"the kernel died while running cell {running} "
                       "(out of memory, a crash or os._exit?)", running)
    if outcome.kind == "cell-timeout":
        return Outcome("cell-timeout", f"cell {running} ran longer than the {prepared.timeout} s "
                       "per-cell timeout (--timeout) and was stopped", running)
    if outcome.kind == "run-timeout":
        return Outcome("run-timeout", f"the run exceeded its overall limit of {deadline:.0f} s "
                       f"and was stopped at cell {running}", running)
    error = model.read_records(nb).get("error") if nb is not None else None
    if outcome.kind == "cell-error" and (error or {}).get("exit_code") == EXIT_INVALID:
        return Outcome("rejected", outcome.message, outcome.cell_index, outcome.ename)
    return outcome


EXIT_BY_KIND = {
    "completed": EXIT_OK, "rejected": EXIT_INVALID, "cell-error": EXIT_FAILED,
    "dead-kernel": EXIT_FAILED, "cell-timeout": EXIT_FAILED, "run-timeout": EXIT_FAILED,
    "truncated": EXIT_FAILED, "crashed": EXIT_FAILED, "secret-leak": EXIT_FAILED,
    "report-failed": EXIT_FAILED, "interrupted": EXIT_FAILED,
}


def exit_code_for(findings: Iterable[Mapping[str, Any]], fail_on: str) -> int:
    """1 if any finding is at or above ``fail_on`` (``ok`` findings never count), else 0."""
    threshold = model.SEVERITIES.index(fail_on)
    worst = max((model.SEVERITIES.index(f.get("severity", "ok")) for f in findings), default=0)
    return EXIT_FINDINGS if worst >= threshold and worst > 0 else EXIT_OK


def status_for(code: int, kind: str) -> str:
    if kind == "secret-leak":
        return "leaked"
    return {EXIT_OK: "ok", EXIT_FINDINGS: "findings", EXIT_INVALID: "rejected"}.get(code, "failed")


@dataclass
class RunResult:
    """What ``runbooks run`` reports: exit code, run directory, summary."""

    exit_code: int
    run_dir: Path
    summary: dict[str, Any]
    report: Path | None = None
    messages: list[str] = field(default_factory=list)
    location: str | None = None
    """Where the run directory is kept when it is not ``run_dir`` (``s3://…/ENV/RUNBOOK/RUN_ID``)."""
    report_url: str | None = None


def build_summary(
    *, runbook: str, env: str, run_id: str, start: _dt.datetime, end: _dt.datetime,
    parameters: Mapping[str, Any], records: Mapping[str, Any], outcome: Outcome,
    fail_on: str, notebook_name: str, cluster: Any = None,
) -> dict[str, Any]:
    """summary.json (before the secret scan decides about the report)."""
    findings = list(records.get("findings") or [])
    counts = {s: 0 for s in model.SEVERITIES}
    for f in findings:
        counts[f.get("severity", "ok")] = counts.get(f.get("severity", "ok"), 0) + 1
    code = EXIT_BY_KIND.get(outcome.kind, EXIT_FAILED)
    if code == EXIT_OK:
        code = exit_code_for(findings, fail_on)
    run_info = records.get("run") or {}
    plan = records.get("plan")
    if plan is not None:
        plan = {k: plan.get(k) for k in ("id", "binding", "changes", "validated", "applied")}
        plan["applied_changes"] = records.get("changes") or []
    sources = dict(records.get("data_sources") or {})
    return {
        "schema": SUMMARY_SCHEMA,
        "runbook": runbook,
        "env": env,
        "run_id": run_id,
        "start": model.iso(start),
        "end": model.iso(end),
        "duration_s": round((end - start).total_seconds(), 1),
        "status": status_for(code, outcome.kind),
        "exit_code": code,
        "fail_on": fail_on,
        "kube_context": run_info.get("kube_context") or getattr(cluster, "context", None),
        "server": run_info.get("server") or getattr(cluster, "server", None),
        "window": records.get("window"),
        "parameters": dict(parameters),
        "findings": findings,
        "counts": counts,
        "plan": plan,
        "data_sources": sources,
        "error": None if outcome.kind == "completed" else {
            "kind": outcome.kind, "message": outcome.message, "cell_index": outcome.cell_index,
            "ename": outcome.ename,
        },
        "notebook": notebook_name,
        "report": None,
        "secret_scan": {"clean": True, "leaks": []},
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def publish(run_dir: Path, nb: Any, summary: dict[str, Any], secrets: list[sec.Secret]) -> RunResult:
    """Secret-scan the notebook, render and scan the HTML, write summary.json and report.html.

    A leak: the stored notebook is redacted, no report.html is written (an
    old one is removed), the run fails with exit 3 and the summary says what
    kind of secret leaked and where, never the value.
    """
    import nbformat

    from runbooks import reporthtml

    notebook_path = run_dir / summary["notebook"]
    leaks = sec.scan_notebook(nb, secrets) if nb is not None else []
    # the summary too: an exception's message (error.message) or a finding may carry a secret
    leaks += sec.scan_text(json.dumps(summary, default=str), secrets, "summary.json")
    html_text = None
    if nb is not None and not leaks:
        try:
            html_text = reporthtml.render_html(nb, summary)
        except Exception as exc:  # a rendering bug must not hide the run's result
            summary["error"] = summary["error"] or {
                "kind": "report-failed", "message": f"report.html could not be rendered: "
                f"{type(exc).__name__}: {cut(str(exc))}", "cell_index": None, "ename": None,
            }
            summary["exit_code"], summary["status"] = EXIT_FAILED, "failed"
        else:
            leaks = sec.scan_text(html_text, secrets, "report.html")
    report_path = run_dir / "report.html"
    if leaks:
        if nb is not None:
            nb = sec.redact_notebook(nb, secrets)
            nbformat.write(nbformat.from_dict(nb), str(notebook_path))
        text = sec.describe(leaks)
        summary.update(sec.redact(summary, secrets))
        summary["secret_scan"] = {"clean": False, "leaks": [
            {"kind": leak.kind, "where": leak.where} for leak in leaks
        ]}
        summary["error"] = {
            "kind": "secret-leak",
            "message": f"secret scan failed: {text}. report.html was not published and the "
                       "stored notebook was redacted",
            "cell_index": None, "ename": None,
        }
        summary["exit_code"], summary["status"] = EXIT_FAILED, "leaked"
        html_text = None
        if report_path.exists():
            report_path.unlink()
    else:
        summary.update(sec.redact(summary, secrets))
    if html_text is not None:
        report_path.write_text(html_text, encoding="utf-8")
        summary["report"] = "report.html"
    _write_json(run_dir / "summary.json", summary)
    return RunResult(summary["exit_code"], run_dir, summary,
                     report_path if html_text is not None else None)


def vault_secrets(prepared: Prepared) -> list[sec.Secret]:
    """Every value of the run's Ansible Vault (``vault_file``), decrypted here too so the scan knows them."""
    vault_file = getattr(prepared.validated, "vault_file", None)
    if not vault_file:
        return []
    from runbooks import deploy

    path = Path(vault_file)
    path = path if path.is_absolute() else prepared.project.root / path
    try:
        found = deploy.read_vault(str(path), getattr(prepared.validated, "vault_password_env", "VAULT_PASSWORD"))
    except RunbookError:
        return []  # the runbook's preflight says why; nothing was decrypted, so nothing can leak
    return [sec.Secret(f"vault value {key}", str(value)) for key, value in found.values.items()
            if len(str(value)) >= 6]


def redacted_parameters(validated: ParamsBase, secrets: list[sec.Secret]) -> dict[str, Any]:
    """Every effective parameter value, with secret-looking names and known secrets masked."""
    values = validated.model_dump(mode="json")
    values = {k: (sec.REDACTED if sec.is_secret_name(k) else v) for k, v in values.items()}
    return sec.redact(values, secrets)


def execute(
    prepared: Prepared,
    *,
    output_dir: str | os.PathLike[str] | storage.Store | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    notify_settings: notify.Settings | None = None,
    report_base_url: str | None = None,
) -> RunResult:
    """Run a prepared runbook end to end and write its run directory.

    ``output_dir`` is a directory (default ``PROJECT/outputs``) or object storage
    (``s3://BUCKET/PREFIX``, a :class:`runbooks.storage.Store`): then the run executes in a
    temporary directory, its notebook is uploaded as it goes and the whole run directory when it
    ends, however it ends, with its entry in the bucket's run index. ``notify_settings`` sends the
    result (:func:`deliver`). Never raises for a failure of the runbook itself: the exit code in
    the result says what happened (0/1/2/3).
    """
    store = output_dir if isinstance(output_dir, storage.Store) else (
        check_output_dir(output_dir) if storage.is_url(output_dir) else None)
    if store is not None:
        outputs = Path(tempfile.mkdtemp(prefix="runbooks-run-"))
    else:
        outputs = Path(output_dir).resolve() if output_dir else prepared.project.outputs_dir
    start = model.utcnow()
    run_dir = new_run_dir(outputs, prepared.env, prepared.runbook, start)
    run_id = run_dir.name
    rel = run_dir.relative_to(outputs).as_posix()
    parameters = dict(prepared.validated.model_dump(mode="json", include=set(prepared.given)))
    if "run_dir" in prepared.declared:
        parameters["run_dir"] = str(run_dir)
    output = run_dir / f"{prepared.runbook}.ipynb"
    nb_source = read_notebook(prepared.notebook)
    code_cells = sum(1 for c in nb_source.cells if c.cell_type == "code") + 1
    deadline = KERNEL_START_TIMEOUT + prepared.timeout * code_cells + 30
    kubeconfig = getattr(prepared.validated, "kubeconfig", None)
    client_config = getattr(getattr(prepared.cluster, "api_client", None), "configuration", None)
    secrets = sec.known_secrets(kubeconfig, extra=sec.client_secrets(client_config) + vault_secrets(prepared)
                                + notify.url_secrets())
    effective = prepared.validated.model_copy(update={"run_dir": str(run_dir)}) \
        if "run_dir" in prepared.model.model_fields else prepared.validated
    redacted = redacted_parameters(effective, secrets)

    def summary_for(outcome: Outcome, nb: Any) -> dict[str, Any]:
        records = model.read_records(nb) if nb is not None else model.fold_records([])
        return build_summary(
            runbook=prepared.runbook, env=prepared.env, run_id=run_id, start=start, end=model.utcnow(),
            parameters=redacted, records=records, outcome=outcome, fail_on=prepared.fail_on,
            notebook_name=output.name, cluster=prepared.cluster,
        )

    def on_abort() -> None:
        outcome = Outcome("run-timeout", f"the run exceeded its overall limit of {deadline:.0f} s "
                          "and could not be stopped cleanly; the process was ended")
        summary = summary_for(outcome, None)
        summary["exit_code"], summary["status"] = EXIT_FAILED, "failed"
        if store is not None:
            summary["location"] = store.url_of(rel)
        _write_json(run_dir / "summary.json", summary)
        where = run_dir
        if store is not None:
            try:
                store.put_run(run_dir, rel)
                store.write_entry(rel, summary)
                where = store.url_of(rel)  # type: ignore[assignment]
            except RunbookError as exc:
                echo(f"runbooks: the run directory could not be uploaded: {exc}")
        echo(f"runbooks: {outcome.message}; run directory {where}")

    if progress is None:
        progress = sys.stderr.isatty()
    uploader = storage.Progress(store, output, f"{rel}/{output.name}", echo=echo).start() \
        if store is not None else None
    watchdog = _Watchdog(deadline, on_abort).start()
    # the report's renderer (nbconvert, jinja2) loads while the kernel works, not after it
    threading.Thread(target=_preload_report, name="preload-report", daemon=True).start()
    with sec.SecretSink() as sink:  # what the kernel reads on purpose (a TLS key), for the scan
        try:
            outcome = _run_papermill(prepared, output, parameters, progress, watchdog, sink.path)
        finally:
            watchdog.cancel()
            if uploader is not None:
                uploader.stop()
        secrets = secrets + sink.collected()
    try:
        nb = read_notebook(output) if output.exists() else None
    except RunbookError as exc:
        nb = None
        if outcome.kind == "completed":
            outcome = Outcome("crashed", f"the executed notebook cannot be read: {exc}")
    outcome = _classify(outcome, nb, prepared, deadline)
    summary = summary_for(outcome, nb)
    result = publish(run_dir, nb, summary, secrets)
    deliver(result, rel=rel, store=store, settings=notify_settings, report_base_url=report_base_url,
            secrets=secrets, echo=echo, outputs=None if store is not None else outputs)
    if store is not None and result.location is not None:
        shutil.rmtree(outputs, ignore_errors=True)
    else:
        try:
            write_index(outputs)
        except OSError:
            pass
    return result


def previous_run(outputs: Path | None, store: storage.Store | None, env: str, runbook: str,
                 run_id: str) -> dict[str, Any] | None:
    """The summary (or index entry) of the run of ``runbook`` in ``env`` before ``run_id``."""
    if store is not None:
        return store.previous(env, runbook, run_id)
    if outputs is None:
        return None
    order = storage._run_order
    earlier = [s for _, s in list_runs(outputs, env, runbook)
               if s.get("run_id") and order(str(s["run_id"])) < order(run_id)]
    return max(earlier, key=lambda s: order(str(s["run_id"])), default=None)


def deliver(result: RunResult, *, rel: str, store: storage.Store | None = None,
            settings: notify.Settings | None = None, report_base_url: str | None = None,
            secrets: Sequence[sec.Secret] = (), echo: Callable[[str], None] = print,
            outputs: Path | None = None) -> RunResult:
    """After :func:`publish`: the report's URL, the upload to object storage, the notifications.

    Order: the run directory is uploaded first (``summary.json`` last, then its index entry), so the
    link in a message works when the message arrives. An upload that fails keeps the local copy,
    names it and fails the run (exit 3: its record would be lost). A notification that fails is a
    warning in ``summary.json`` and on stderr and never changes the exit code.
    """
    summary = result.summary
    env, runbook, run_id = summary["env"], summary["runbook"], summary["run_id"]
    if report_base_url and summary.get("report"):
        result.report_url = summary["report_url"] = f"{report_base_url}/{rel}/{summary['report']}"
    previous = None
    if settings and settings.kinds and settings.on == "change":
        try:  # before this run's entry exists
            previous = previous_run(outputs, store, env, runbook, run_id)
        except RunbookError as exc:
            summary.setdefault("warnings", []).append(f"the previous run could not be read: {exc}")
    if store is not None:
        summary["location"] = store.url_of(rel)
        _write_json(result.run_dir / "summary.json", summary)
        try:
            store.put_run(result.run_dir, rel)
            store.write_entry(rel, summary)
        except RunbookError as exc:
            message = (f"the run directory could not be uploaded to {store.url_of(rel)}: {exc}; "
                       f"it is kept at {result.run_dir}")
            echo(f"runbooks: {message}")
            summary["location"] = None
            if summary.get("error") is None:
                summary["error"] = {"kind": "upload-failed", "message": message, "cell_index": None, "ename": None}
                summary["exit_code"], summary["status"] = EXIT_FAILED, "failed"
            else:
                summary.setdefault("warnings", []).append(message)
            result.exit_code = summary["exit_code"]
        else:
            result.location = summary["location"]
    if settings and settings.kinds:
        send, why = notify.decide(summary, previous, settings.on, settings.min_severity)
        if send:
            message = notify.run_message(summary, result.location or str(result.run_dir), thread=settings.thread,
                                         report_url=result.report_url, secrets=secrets,
                                         change=why if settings.on == "change" else None,
                                         min_severity=settings.min_severity)
            outcomes = settings.send(message, secrets=secrets)
        else:
            outcomes = [{"kind": kind, "sent": False, "skipped": why} for kind in settings.kinds]
        summary["notifications"] = outcomes
        for item in outcomes:
            if item.get("error"):
                warning = f"notification {item['kind']} not sent: {item['error']}"
                summary.setdefault("warnings", []).append(warning)
                echo(f"runbooks: {warning}")
    if settings or store is not None or result.report_url:
        summary.update(sec.redact(summary, secrets))
        _write_json(result.run_dir / "summary.json", summary)
        if store is not None and result.location is not None:
            try:
                store.put_file(result.run_dir / "summary.json", f"{rel}/summary.json")
            except RunbookError as exc:
                echo(f"runbooks: summary.json could not be uploaded again (notifications): {exc}")
    return result


def run(project: Project, name: str, env: str, *, files: Sequence[str] = (),
        pairs: Sequence[tuple[str, str]] = (), approve: str | None = None,
        fail_on: str = "critical", timeout: int = DEFAULT_CELL_TIMEOUT,
        output_dir: str | os.PathLike[str] | storage.Store | None = None, progress: bool | None = None,
        echo: Callable[[str], None] = print, notify_settings: notify.Settings | None = None,
        report_base_url: str | None = None) -> RunResult:
    """:func:`prepare` then :func:`execute` (raises InvalidInput for exit 2 before any kernel)."""
    store = check_output_dir(output_dir)
    prepared = prepare(project, name, env, files=files, pairs=pairs, approve=approve,
                       fail_on=fail_on, timeout=timeout)
    return execute(prepared, output_dir=store or output_dir, progress=progress, echo=echo,
                   notify_settings=notify_settings, report_base_url=check_report_base_url(report_base_url))


# --------------------------------------------------------------------------
# Re-rendering and the index of runs
# --------------------------------------------------------------------------


def load_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"{str(run_dir)!r} is not a run directory: {path.name} cannot be read "
                           f"({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {cut(str(exc))}") from exc


def rerender(run_dir: str | os.PathLike[str]) -> RunResult:
    """Render report.html again from the run's notebook and summary.json (with the secret scan)."""
    run_dir = Path(run_dir).resolve()
    summary = load_summary(run_dir)
    notebook = run_dir / str(summary.get("notebook") or "")
    if not notebook.is_file():
        raise InvalidInput(f"{run_dir} holds no executed notebook {summary.get('notebook')!r}")
    nb = read_notebook(notebook)
    kubeconfig = (summary.get("parameters") or {}).get("kubeconfig")
    secrets = sec.known_secrets(kubeconfig)
    if summary.get("status") == "leaked":
        return RunResult(EXIT_FAILED, run_dir, summary, None,
                         ["this run failed its secret scan: no report is published for it"])
    return publish(run_dir, nb, summary, secrets)


def list_runs(outputs: Path, env: str | None = None, runbook: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(path relative to outputs/, summary) of every run, newest first, optionally filtered."""
    runs = []
    for path in outputs.glob("*/*/*/summary.json"):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if env and summary.get("env") != env:
            continue
        if runbook and summary.get("runbook") != runbook:
            continue
        runs.append((path.parent.relative_to(outputs).as_posix(), summary))
    runs.sort(key=lambda r: (r[1].get("start") or "", r[0]), reverse=True)
    return runs


def write_index(outputs: Path) -> Path:
    """Regenerate ``outputs/index.html`` from every run's summary.json."""
    from runbooks import reporthtml

    outputs.mkdir(parents=True, exist_ok=True)
    path = outputs / "index.html"
    path.write_text(reporthtml.index_html(list_runs(outputs)), encoding="utf-8")
    return path


def format_summary(result: RunResult, limit: int = 15) -> str:
    """The one-screen summary ``runbooks run`` prints after a run."""
    s = result.summary
    counts = s.get("counts") or {}
    lines = [
        f"{s['runbook']} on {s['env']}: {s['status']} (exit {s['exit_code']}) in {s.get('duration_s')} s",
        "findings: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in reversed(model.SEVERITIES)),
    ]
    for f in (s.get("findings") or [])[:limit]:
        if f.get("severity") == "ok":
            continue
        where = f" [{f['resource']}]" if f.get("resource") else ""
        lines.append(f"  {f['severity'].upper():8} {f.get('title')}{where}")
    shown = [f for f in (s.get("findings") or []) if f.get("severity") != "ok"]
    if len(shown) > limit:
        lines.append(f"  ... and {len(shown) - limit} more in summary.json")
    plan = s.get("plan")
    if plan:
        state = "applied" if plan.get("applied") else "not applied"
        lines.append(f"plan {plan['id']}: {len(plan.get('changes') or [])} change(s), {state}")
    down = [k for k, v in (s.get("data_sources") or {}).items() if v.get("state") != "ok"]
    if down:
        lines.append("data sources down: " + ", ".join(down))
    if s.get("error"):
        lines.append(f"error: {s['error']['message']}")
    lines.append(f"run directory: {result.location or result.run_dir}")
    if result.report_url:
        lines.append(f"report: {result.report_url}")
    elif result.report and result.location:
        lines.append(f"report: {result.location}/{result.report.name}")
    elif result.report:
        lines.append(f"report: {result.report}")
    for item in s.get("notifications") or []:
        state = "sent" if item.get("sent") else (f"not sent ({item['skipped']})" if item.get("skipped")
                                                 else f"NOT SENT: {item.get('error')}")
        lines.append(f"notification {item['kind']}: {state}")
    return "\n".join(lines)
