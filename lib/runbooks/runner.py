"""Running one notebook: papermill under a watchdog, and how the execution ended.

papermill on its own can hang on a kernel that never answers and can end with exit 0 after a
cell called ``sys.exit``. Here a :class:`Watchdog` guards the whole run (kill the kernel's
process group at the deadline; if even that does not end it, the process), SIGINT/SIGTERM
interrupt the kernel so that a cell ends cleanly, and :func:`classify` reads the executed
notebook back: a cell that never ran is a truncated run, and each failure gets the cell and
the step it belongs to.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbooks import model
from runbooks import secrets as sec
from runbooks.errors import EXIT_FAILED, EXIT_INVALID, cut

if TYPE_CHECKING:
    from runbooks.execute import Prepared

KERNEL_START_TIMEOUT = 60
WATCHDOG_GRACE = 30


class Watchdog:
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

    def start(self) -> Watchdog:
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


def preload_report() -> None:
    """Import the report's renderer (nbconvert, jinja2) now, in a thread, while the kernel works."""
    try:
        import nbconvert.exporters.html  # noqa: F401
    except Exception:  # noqa: BLE001 - only a head start: publishing imports it again and reports errors
        pass


def run_papermill(prepared: Prepared, output: Path, parameters: dict[str, Any],
                   progress: bool, watchdog: Watchdog, secret_sink: str = "") -> Outcome:
    """Execute the prepared notebook into ``output`` with papermill (the paced engine, the kernel's
    environment, SIGINT/SIGTERM interrupting the kernel) and say how the execution ended."""
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from runbooks import engine, preload

    engine.register()
    kernel_env = dict(os.environ)
    kernel_env.update(
        RUNBOOKS_HEADLESS="1",
        RUNBOOKS_HOME=str(prepared.project.root),
        RUNBOOKS_ENV=prepared.env,  # part of every plan id (runbook.Run.binding)
        PLOTLY_RENDERER="plotly_mimetype",
        PYTHONUNBUFFERED="1",
    )
    kernel_env[preload.ENV] = ",".join(preload.modules(nbformat.read(prepared.notebook, as_version=4), parameters))
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


def classify(outcome: Outcome, nb: Any, prepared: Prepared, deadline: float) -> Outcome:
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
