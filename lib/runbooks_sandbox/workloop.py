"""One worker thread fed by a set of (kind, namespace, name) work items and a tick.

Both controller managers run this way, as kube-controller-manager's controllers do: store
changes queue work (duplicates collapse, as in client-go's workqueue), the worker drains the
queue in passes, and a tick advances time-dependent state (restarts, deadlines, leases).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

Work = tuple[str, str, str]


def stop_worker(stop: threading.Event, cond: threading.Condition, thread: threading.Thread | None) -> None:
    """Tell a worker to stop, wake it, and wait for it (a bounded wait: daemon threads)."""
    stop.set()
    with cond:
        cond.notify_all()
    if thread:
        thread.join(timeout=5)


class WorkLoop:
    """Queue, worker thread and tick; subclasses define :meth:`process` and :meth:`on_tick`."""

    thread_name = "sandbox-worker"

    def __init__(self, tick: float = 2.0):
        self.tick = tick
        self._queue: set[Work] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def process(self, work: set[Work]) -> None:
        raise NotImplementedError

    def on_tick(self) -> None:
        raise NotImplementedError

    def enqueue(self, work: set[Work]) -> None:
        if work:
            with self._cond:
                self._queue |= work
                self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        stop_worker(self._stop, self._cond, self._thread)
        self._thread = None

    def _run(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            with self._cond:
                if not self._queue:
                    self._cond.wait(timeout=max(0.05, self.tick - (time.monotonic() - last_tick)))
                work, self._queue = self._queue, set()
            try:
                if work:
                    self.process(work)
                if time.monotonic() - last_tick >= self.tick:
                    last_tick = time.monotonic()
                    self.on_tick()
            except Exception:  # keep the cluster alive; a controller bug shows in the log
                log.exception("%s pass failed", self.thread_name)

    def settle(self, rounds: int = 50) -> None:
        """Run queued work synchronously until nothing is left (start-up and tests)."""
        for _ in range(rounds):
            with self._cond:
                work, self._queue = self._queue, set()
            if not work:
                return
            self.process(work)
