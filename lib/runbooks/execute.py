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
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbooks import model, notify, preflight, storage
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
    InvalidInput,
    RunbookError,
    cut,
)
from runbooks.parameters import PROJECT_ROOT, ParamsBase, params_model, validate_params
from runbooks.runner import (
    KERNEL_START_TIMEOUT,
    Outcome,
    Watchdog,
    classify,
    preload_report,
    run_papermill,
)
from runbooks.summary import RunResult, build_summary, publish, write_json

DEFAULT_CELL_TIMEOUT = 600
MAX_CELL_TIMEOUT = 86400
FAIL_ON_CHOICES = ("info", "warning", "critical")


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
            cluster = preflight.preflight(validated)
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
    fleet: str | None = None,
) -> RunResult:
    """Run a prepared runbook end to end and write its run directory.

    ``output_dir`` is a directory (default ``PROJECT/outputs``) or object storage
    (``s3://BUCKET/PREFIX``, a :class:`runbooks.storage.Store`): then the run executes in a
    temporary directory, its notebook is uploaded as it goes and the whole run directory when it
    ends, however it ends, with its entry in the bucket's run index. ``notify_settings`` sends the
    result (:func:`deliver`). ``fleet`` (``_fleet/RUNBOOK/FLEET_ID``) names the fleet the run belongs
    to in its summary and index entry. Never raises for a failure of the runbook itself: the exit code in
    the result says what happened (0/1/2/3).
    """
    store = output_dir if isinstance(output_dir, storage.Store) else (
        check_output_dir(output_dir) if storage.is_url(output_dir) else None)
    if store is not None:
        outputs = Path(tempfile.mkdtemp(prefix="runbooks-run-"))
    else:
        outputs = Path(output_dir).resolve() if output_dir else prepared.project.outputs_dir
    job = _Job.start(prepared, outputs, store, echo)
    job.fleet = fleet
    outcome, collected = _run_notebook(job, sys.stderr.isatty() if progress is None else progress)
    secrets = job.secrets + collected
    try:
        nb = read_notebook(job.output) if job.output.exists() else None
    except RunbookError as exc:
        nb = None
        if outcome.kind == "completed":
            outcome = Outcome("crashed", f"the executed notebook cannot be read: {exc}")
    outcome = classify(outcome, nb, prepared, job.deadline)
    result = publish(job.run_dir, nb, job.summary_for(outcome, nb), secrets)
    deliver(result, rel=job.rel, store=store, settings=notify_settings, report_base_url=report_base_url,
            secrets=secrets, echo=echo, outputs=None if store is not None else outputs)
    if store is not None and result.location is not None:
        shutil.rmtree(outputs, ignore_errors=True)
    else:
        try:
            write_index(outputs)
        except OSError:
            pass
    return result


@dataclass
class _Job:
    """One execution of a prepared runbook: its run directory, deadline, known secrets and parameters."""

    prepared: Prepared
    store: storage.Store | None
    echo: Callable[[str], None]
    start_time: _dt.datetime
    run_dir: Path
    rel: str
    output: Path
    parameters: dict[str, Any]
    deadline: float
    secrets: list[sec.Secret]
    redacted: dict[str, Any]
    fleet: str | None = None

    @classmethod
    def start(cls, prepared: Prepared, outputs: Path, store: storage.Store | None,
              echo: Callable[[str], None]) -> _Job:
        start = model.utcnow()
        run_dir = new_run_dir(outputs, prepared.env, prepared.runbook, start)
        parameters = dict(prepared.validated.model_dump(mode="json", include=set(prepared.given)))
        if "run_dir" in prepared.declared:
            parameters["run_dir"] = str(run_dir)
        nb_source = read_notebook(prepared.notebook)
        code_cells = sum(1 for c in nb_source.cells if c.cell_type == "code") + 1
        deadline = KERNEL_START_TIMEOUT + prepared.timeout * code_cells + 30
        kubeconfig = getattr(prepared.validated, "kubeconfig", None)
        client_config = getattr(getattr(prepared.cluster, "api_client", None), "configuration", None)
        secrets = sec.known_secrets(kubeconfig, extra=sec.client_secrets(client_config) + vault_secrets(prepared)
                                    + notify.url_secrets())
        effective = prepared.validated.model_copy(update={"run_dir": str(run_dir)}) \
            if "run_dir" in prepared.model.model_fields else prepared.validated
        return cls(prepared, store, echo, start, run_dir, run_dir.relative_to(outputs).as_posix(),
                   run_dir / f"{prepared.runbook}.ipynb", parameters, deadline, secrets,
                   redacted_parameters(effective, secrets))

    def summary_for(self, outcome: Outcome, nb: Any) -> dict[str, Any]:
        records = model.read_records(nb) if nb is not None else model.fold_records([])
        p = self.prepared
        summary = build_summary(
            runbook=p.runbook, env=p.env, run_id=self.run_dir.name, start=self.start_time, end=model.utcnow(),
            parameters=self.redacted, records=records, outcome=outcome, fail_on=p.fail_on,
            notebook_name=self.output.name, cluster=p.cluster,
        )
        if self.fleet:
            summary["fleet"] = self.fleet
        return summary

    def on_abort(self) -> None:
        """The watchdog's last resort (the kernel would not die): record the run as failed, upload it."""
        store, rel = self.store, self.rel
        outcome = Outcome("run-timeout", f"the run exceeded its overall limit of {self.deadline:.0f} s "
                          "and could not be stopped cleanly; the process was ended")
        summary = self.summary_for(outcome, None)
        summary["exit_code"], summary["status"] = EXIT_FAILED, "failed"
        if store is not None:
            summary["location"] = store.url_of(rel)
        write_json(self.run_dir / "summary.json", summary)
        where: Path | str = self.run_dir
        if store is not None:
            try:
                store.put_run(self.run_dir, rel)
                store.write_entry(rel, summary)
                where = store.url_of(rel)
            except RunbookError as exc:
                self.echo(f"runbooks: the run directory could not be uploaded: {exc}")
        self.echo(f"runbooks: {outcome.message}; run directory {where}")


def _run_notebook(job: _Job, progress: bool) -> tuple[Outcome, list[sec.Secret]]:
    """papermill under the watchdog, the notebook uploaded as it goes; what the kernel read on purpose."""
    store = job.store
    uploader = storage.Progress(store, job.output, f"{job.rel}/{job.output.name}", echo=job.echo).start() \
        if store is not None else None
    watchdog = Watchdog(job.deadline, job.on_abort).start()
    # the report's renderer (nbconvert, jinja2) loads while the kernel works, not after it
    threading.Thread(target=preload_report, name="preload-report", daemon=True).start()
    with sec.SecretSink() as sink:  # what the kernel reads on purpose (a TLS key), for the scan
        try:
            outcome = run_papermill(job.prepared, job.output, job.parameters, progress, watchdog, sink.path)
        finally:
            watchdog.cancel()
            if uploader is not None:
                uploader.stop()
        return outcome, sink.collected()


def previous_run(outputs: Path | None, store: storage.Store | None, env: str, runbook: str,
                 run_id: str) -> dict[str, Any] | None:
    """The summary (or index entry) of the run of ``runbook`` in ``env`` before ``run_id``."""
    if store is not None:
        return store.previous(env, runbook, run_id)
    if outputs is None:
        return None
    order = storage.run_order
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
        write_json(result.run_dir / "summary.json", summary)
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
        write_json(result.run_dir / "summary.json", summary)
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
