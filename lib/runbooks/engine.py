"""The papermill engine `runbooks run` uses: watched, and with paced saves.

- It hands its notebook client to the run's watchdog, so a run that exceeds
  its limit can have its kernel killed (exit 3, never a hang).
- It starts the kernel with the run's environment (headless, project root) and the
  :mod:`runbooks.preload` extension, which imports the run's modules while papermill sets up.
- It writes the output notebook at most every :data:`SAVE_EVERY` seconds
  while cells run. papermill rewrites the whole notebook before and after
  every cell (markdown ones too); with a few hundred kB of figures that
  costs more than many of the cells themselves. The price: while a long cell
  runs without output, the file may not yet show the quick cells just before
  it. The final write (after success, a failing cell, a cell timeout, a dead
  kernel or Ctrl-C) always happens, and for a hung run the watchdog writes
  the notebook (:meth:`PacedManager.flush`) before it ends the process.
- Once the run is interrupted (SIGINT or SIGTERM of ``runbooks run``), no
  further cell starts. The kernel ignores an interrupt that arrives between
  cells, so without this check a stopped run would go on with its next cell.
- In a fleet with a kernel fork server (:mod:`runbooks.forkserver`), the kernel is forked
  from that warm process instead of started anew.
- On POSIX it talks to the kernel over Unix sockets in a private directory
  (ZeroMQ's ``ipc`` transport) instead of loopback TCP ports. With TCP,
  jupyter_client picks five free ports and the kernel binds them a second
  later; runs started side by side (a fleet) and their HTTP connections take
  ephemeral ports in between, and the kernel dies with "Address already in
  use". A socket path of the run's own cannot be taken, and no other local
  user can reach the kernel.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from nbclient.exceptions import CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import (
    NBClientEngine,
    NotebookExecutionManager,
    catch_nb_assignment,
    papermill_engines,
)
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

from runbooks import forkserver, preload

NAME = "runbooks"
SAVE_EVERY = 2.0  # seconds between writes of the output notebook while cells run


class PacedManager(NotebookExecutionManager):
    """papermill's execution manager, writing at most every SAVE_EVERY s until the final write."""

    _saved_at: float | None = None
    _final = False

    @catch_nb_assignment
    def save(self, **kwargs: Any) -> None:
        now = time.monotonic()
        if self._final or self._saved_at is None or now - self._saved_at >= SAVE_EVERY:
            super().save(**kwargs)
            self._saved_at = now

    def flush(self) -> None:
        """Write the notebook now, whatever the pacing."""
        super().save()
        self._saved_at = time.monotonic()

    def notebook_complete(self, **kwargs: Any) -> None:
        self._final = True
        super().notebook_complete(**kwargs)


class WatchedClient(PapermillNotebookClient):
    """papermill's client, which starts no cell once the run's watchdog says it was interrupted."""

    watchdog: Any = None

    def papermill_execute_cells(self) -> None:
        # papermill's loop (clientwrap.PapermillNotebookClient), with the interrupt check.
        for index, cell in enumerate(self.nb.cells):
            if self.watchdog is not None and self.watchdog.interrupted:
                return  # the cells left stay "pending" in the saved notebook
            try:
                self.nb_man.cell_start(cell, index)
                self.execute_cell(cell, index)
            except CellExecutionError as ex:
                self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                break
            finally:
                self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)


class WatchedEngine(NBClientEngine):
    """nbclient through papermill, with the paced manager, a watchdog hook and the kernel env."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None,
                         progress_bar: bool = True, log_output: bool = False,
                         autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        """papermill's ``Engine.execute_notebook``, with :class:`PacedManager`."""
        nb_man = PacedManager(nb, output_path=output_path, progress_bar=progress_bar,
                              log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                 execution_timeout: int | None = None, watchdog: Any = None,
                                 kernel_env: dict[str, str] | None = None, **kwargs: Any) -> Any:
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        final = merge_kwargs(
            kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
            kernel_name=kernel_name, log=logger, log_output=log_output,
            stdout_file=stdout_file, stderr_file=stderr_file,
            extra_arguments=["--IPKernelApp.log_level=CRITICAL", f"--IPKernelApp.extensions={preload.EXTENSION}"],
            shutdown_kernel="immediate",
        )
        sockets = None
        if os.name == "posix" and "config" not in final:
            from traitlets.config import Config

            sockets = tempfile.mkdtemp(prefix="runbooks-kernel-")  # 0700: this user's only
            final["config"] = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "k")}})
        if os.environ.get(forkserver.ENV) and "kernel_manager_class" not in final:
            final["kernel_manager_class"] = forkserver.ForkedKernelManager  # in a fleet: a forked kernel
        try:
            client = WatchedClient(nb_man, **final)
            if watchdog is not None:
                client.watchdog = watchdog
                watchdog.client = client
            return client.execute(env=kernel_env) if kernel_env else client.execute()
        finally:
            if sockets is not None:
                shutil.rmtree(sockets, ignore_errors=True)


def register() -> None:
    """Make the engine available to ``papermill.execute_notebook(engine_name=NAME)``."""
    papermill_engines.register(NAME, WatchedEngine)
