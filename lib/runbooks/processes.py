"""Processes a run starts and leaves behind: the life of a forked child (a fleet's run, a forked
kernel), every descendant found, a run stopped the way Ctrl-C does, then killed.

Why a module of its own: ``runbooks serve`` and fleets both start ``runbooks run`` processes whose
kernels lead sessions of their own, and both must never leave one behind when they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn


def become(stdio: Sequence[int], environ: Mapping[str, str], main: Callable[[], Any], *, failed: int,
           sigint: Any = signal.SIG_DFL) -> NoReturn:
    """The whole life of a forked child that must never return into its parent's code.

    It leads a session of its own, takes ``stdio`` (three file descriptors) as 0-2 with new
    ``sys`` streams on them and ``environ`` as its environment, runs ``main()`` and ends with its
    exit code: ``SystemExit``'s, or ``failed`` for an exception (its traceback on stderr). It
    leaves through ``os._exit``: no parent's ``atexit`` handler or ``finally`` runs twice.
    """
    code = failed
    try:
        os.setsid()
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        for fd in set(stdio) - {0, 1, 2}:
            os.close(fd)
        reopen_standard_streams()
        os.environ.clear()
        os.environ.update(environ)
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the child reports and ends here, whatever happened
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def reopen_standard_streams() -> None:
    """Bind ``sys.stdin``/``stdout``/``stderr`` (and their ``__x__`` originals) to file descriptors
    0-2, as a new interpreter has them. A forked child that moved its output to a log with
    ``dup2`` needs this: the parent's streams may be anything (a test runner's capture, say)."""
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                                       closefd=False, buffering=1)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a run's kernel lives in a session of its own), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


RUN_STOP_GRACE = 15.0
"""Seconds a run gets to end after SIGINT when the server stops. With uvicorn's 10 s of graceful
shutdown this stays within Kubernetes' 30 s termination grace, so the server can still SIGKILL
whatever a run left behind before the kubelet kills the server itself."""


async def stop_process(proc: Any, grace: float = RUN_STOP_GRACE) -> None:
    """SIGINT (``runbooks run`` interrupts its kernel, records what it did and starts no further cell),
    then SIGKILL of the run and everything it started, so that no kernel outlives a stopped server."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        below = descendants(proc.pid)
        proc.kill()
        for pid in below:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        await proc.wait()
