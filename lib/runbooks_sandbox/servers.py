"""The real servers the sandbox runs (Prometheus, Alertmanager, BIND, PowerDNS) as child processes.

Finding each binary (an environment override, the PATH, then how to install it), starting it
so it dies with the sandbox, waiting until it answers, and stopping only the pid we started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple


class Unavailable(RuntimeError):
    """A server the sandbox needs could not be started or reached."""


class MissingBinary(Unavailable):
    """A server binary the sandbox needs is not installed."""


class Binary(NamedTuple):
    env: str  # environment variable that overrides the lookup
    names: tuple[str, ...]  # names on the PATH, in order
    package: str  # the Debian/Ubuntu package(s) that install it


def find_binary(binaries: dict[str, Binary], name: str, extra_path: str = "") -> str:
    """Path of `name`, or MissingBinary naming the override and the package to install."""
    b = binaries[name]
    override = os.environ.get(b.env)
    if override:
        found = shutil.which(override)
        if found:
            return found
        raise MissingBinary(f"${b.env} is {override!r}, which is not an executable")
    path = os.environ.get("PATH", "") + (os.pathsep + extra_path if extra_path else "")
    for candidate in b.names:
        found = shutil.which(candidate, path=path)
        if found:
            return found
    raise MissingBinary(f"{name} is not installed (looked for {' or '.join(b.names)} on PATH): install the "
                        f"Debian/Ubuntu package(s) with `apt-get install --no-install-recommends {b.package}`, "
                        f"or set ${b.env} to its path")


def missing_binaries(binaries: dict[str, Binary], extra_path: str = "") -> list[str]:
    """One message per missing binary (empty when everything is installed)."""
    out = []
    for name in binaries:
        try:
            find_binary(binaries, name, extra_path)
        except MissingBinary as exc:
            out.append(str(exc))
    return out


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """The server gets SIGTERM when the sandbox process dies, whatever way it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, Linux only
        pass


def wait_ready(proc: subprocess.Popen, name: str, ready: Callable[[], bool], log_path: Path,
               timeout: float) -> None:
    """Poll `ready()` until it is true; Unavailable with the log's tail if the server exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            raise Unavailable(f"{name} exited with {proc.returncode} while starting; its log ends:\n{tail}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise Unavailable(f"{name} did not answer within {timeout:.0f}s (log: {log_path})")


def stop(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; only this pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
