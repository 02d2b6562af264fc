"""Kernels forked from one warm process, for a fleet.

A fleet runs one runbook in many environments. Started the usual way, each run's kernel is a new
Python that imports ipykernel and the runbook's modules again: about 1 s of CPU per environment,
on machines where the fleet is CPU-bound. A fleet starts one fork server instead (:func:`start`):
a process that imports them once, freezes them for the garbage collector and, on each request,
forks a kernel. The kernel is the process jupyter_client would have started: the same
``ipykernel_launcher`` arguments, environment, working directory and standard streams (passed
over the socket), in a session of its own; only its start differs.

The runs find the server through ``RUNBOOKS_KERNEL_SERVER`` (a Unix socket in a private
directory); :class:`ForkedKernelManager` asks it for their kernel. The server is single-threaded
and does nothing but fork, so no lock is ever held across a fork; it ends with the fleet.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from jupyter_client import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from runbooks import preload
from runbooks.processes import become, descendants

ENV = "RUNBOOKS_KERNEL_SERVER"
_MAX_REQUEST = 1 << 20  # one request: argv, environment and working directory as JSON


# ---- the server (in the fleet: start, stop) --------------------------------------------


@dataclass
class Server:
    """The fleet's handle on its fork server."""

    pid: int
    path: str
    _dir: str

    def stop(self) -> None:
        """End the server, and any kernel still running (a run that was killed cannot end its own;
        the kernels are the server's children, not the runs'), and remove the socket."""
        for pid in [*descendants(self.pid), self.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        shutil.rmtree(self._dir, ignore_errors=True)


def start(modules: list[str]) -> Server:
    """Fork the server from this (single-threaded) process; it imports ipykernel and ``modules``."""
    private = tempfile.mkdtemp(prefix="runbooks-kernels-")  # 0700: this user's only
    path = os.path.join(private, "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _serve(listener, modules)
        finally:
            os._exit(0)
    listener.close()
    return Server(pid, path, private)


def _serve(listener: socket.socket, modules: list[str]) -> None:
    os.setsid()  # Ctrl-C reaches the fleet, which stops its runs and then this server
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.closerange(3, listener.fileno())  # nothing of the fleet's (its files, connections) but the socket
    os.closerange(listener.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fleet = os.getppid()
    from ipykernel import ipkernel, kernelapp  # noqa: F401 - what ipykernel_launcher imports

    preload.import_all(modules)
    while os.getppid() == fleet:
        ready, _, _ = select.select([listener], [], [], 0.5)
        if ready:
            conn, _ = listener.accept()
            with conn:
                _fork_kernel(conn, listener)
        _reap()


def _reap() -> None:
    """Collect the kernels that ended (their runs saw it through their pidfd); their CPU time then
    counts in this server's, and so in the fleet's, resource usage."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _fork_kernel(conn: socket.socket, listener: socket.socket) -> None:
    """Fork one kernel for the request on ``conn``; answer with its pid and a pidfd for it."""
    fds: list[int] = []
    try:
        msg, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
        request = json.loads(msg)
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors (stdin, stdout, stderr), got {len(fds)}")
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            _become_kernel(request, fds)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(conn, [json.dumps({"pid": pid}).encode()], [pidfd])
        finally:
            os.close(pidfd)
    except Exception as exc:  # noqa: BLE001 - the run that asked reports it; the server goes on
        try:
            conn.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        except OSError:
            pass
    finally:
        for fd in fds:
            os.close(fd)


def _become_kernel(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: with the run's streams, environment and directory, run ipykernel as
    ``ipykernel_launcher`` would, in a session of its own as jupyter_client starts it."""

    def kernel() -> None:
        _name_process(f"kernel {request['env'].get('RUNBOOKS_ENV', '')}")
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()

    become(fds, request["env"], kernel, failed=1, sigint=signal.default_int_handler)


def _name_process(name: str) -> None:
    """What ``ps -o comm`` and ``top`` show for a forked kernel (its command line stays the fleet's)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


# ---- the runs' side: a kernel manager that asks the server -----------------------------


class ForkedKernel:
    """A kernel forked by the server, as jupyter_client handles a ``Popen``: it is not this
    process's child, so it is watched through a pidfd and its exit status is not known."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid, self._pidfd = pid, pidfd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self.returncode = 0  # ended (how, only the server, its parent, learns)
            os.close(self._pidfd)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            select.select([self._pidfd], [], [], timeout)
        code = self.poll()
        if code is None:
            raise TimeoutError(f"kernel {self.pid} still running after {timeout} s")
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkedProvisioner(LocalProvisioner):  # type: ignore[misc]
    """jupyter_client's local provisioner, with the kernel forked by the fleet's server."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if cmd[1:3] != ["-m", "ipykernel_launcher"] or not os.environ.get(ENV):
            return await super().launch_kernel(cmd, **kwargs)  # another kernel: started as usual
        env = kwargs.get("env") or dict(os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        request = json.dumps({"argv": cmd[2:], "env": env, "cwd": cwd}).encode()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
                try:
                    conn.connect(os.environ[ENV])
                except OSError:  # the server is gone: the fleet's runs go on, each kernel started anew
                    return await super().launch_kernel(cmd, **kwargs)
                socket.send_fds(conn, [request], [null, 1, 2])  # this run's streams, as Popen passes them
                msg, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        finally:
            os.close(null)
        answer = json.loads(msg or b"{}")
        if "pid" not in answer or not fds:
            raise RuntimeError(f"the fleet's kernel server did not start a kernel: {answer.get('error', 'no answer')}")
        self.process = ForkedKernel(answer["pid"], fds[0])
        self.pid = self.pgid = answer["pid"]
        self.cwd = cwd
        return self.connection_info


class ForkedKernelManager(AsyncKernelManager):  # type: ignore[misc]
    """The kernel manager of a run in a fleet with a fork server (``$RUNBOOKS_KERNEL_SERVER``)."""

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
            self.provisioner = ForkedProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self)
        return await super()._async_pre_start_kernel(**kw)
