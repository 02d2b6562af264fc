"""A process runtime for the sandbox's kubelet: pods of chosen images run as local processes.

Why this module exists: the sandbox has no containers, so a Job pod normally "runs" for a
fixed time and exits with an annotated code. A scheduled runbook is only proven when its
CronJob really fires, its pod authenticates with the ServiceAccount token the kubelet mounts,
and its exit code and logs come back the way a kubelet reports them. For pods whose container
image is one of ``images`` (repository without the tag), this runtime does what a kubelet and
a container runtime do, with a local executable standing in for the image:

* the container's ``command`` + ``args``, resolved on ``PATH`` with the image's ``bin`` directory
  first (e.g. the virtualenv where ``runbooks`` is installed);
* the container's environment as the kubelet computes it (``env``, ``valueFrom``, ``envFrom``,
  service links), with ``KUBERNETES_SERVICE_HOST``/``_PORT`` pointing at this API server;
* its volumes: ConfigMap, Secret and projected files, emptyDirs, and the ServiceAccount's
  projected token (a bound token of the pod's ``serviceAccountName``), ``ca.crt`` (this
  server's CA) and ``namespace`` in ``/var/run/secrets/kubernetes.io/serviceaccount`` --
  mounted at their container paths in a private mount namespace (``unshare --mount``, so
  root), from a directory per pod under ``root`` where the test can read what it wrote;
* its stdout and stderr as the container's log (``kubectl logs``), and on exit the pod's
  ``phase`` (``Succeeded``/``Failed``) and ``state.terminated`` (``exitCode``, ``reason``),
  from which the Job controller counts it; a deleted pod's process is killed (a Job past its
  ``activeDeadlineSeconds``).

The process runs as the sandbox's own user (``runAsUser`` is not applied) and shares the
host's network (127.0.0.1), root filesystem and ``/etc``.

Example:
    >>> runtime = PodRunner(api, {"kube-runbooks": ".venv/bin"}, state_dir / "pods")  # doctest: +SKIP
    >>> sandbox.cluster_controllers.process_runtime = runtime.install()  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .kubelet import SA_DIR
from .store import Change, rfc3339

if TYPE_CHECKING:
    from .server import ApiServer

TOKEN_SECONDS = 3607  # what the kubelet asks for a projected token (an hour and a bit)


def image_repository(image: str) -> str:
    """``registry/name:tag`` or ``name@sha256:…`` -> ``registry/name``."""
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition("/")
    return (head + "/" if head else "") + tail.split(":", 1)[0]


@dataclass
class _Proc:
    popen: subprocess.Popen
    container: str
    log: Path
    started: datetime


class PodRunner:
    """Runs pods of ``images`` (repository -> directory of the executables) as local processes."""

    def __init__(self, api: ApiServer, images: dict[str, str | os.PathLike[str]], root: str | os.PathLike[str]):
        self.api, self.images, self.root = api, {k: str(v) for k, v in images.items()}, Path(root)
        self._procs: dict[str, _Proc] = {}
        self._lock = threading.Lock()
        self._previous_logs: Any = None

    # ---- wiring ----------------------------------------------------------------------------

    def install(self) -> PodRunner:
        """Serve these pods' logs and kill the processes of deleted pods (returns self)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._previous_logs = self.api.log_source
        self.api.log_source = self.logs
        self.api.store.add_listener(self._on_change)
        return self

    def stop(self) -> None:
        """Kill every process still running and hand the logs back to the sandbox."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _kill(proc.popen)
        if self.api.log_source == self.logs:
            self.api.log_source = self._previous_logs
        listeners = getattr(self.api.store, "_listeners", [])
        if self._on_change in listeners:
            listeners.remove(self._on_change)

    def claims(self, pod: dict) -> bool:
        """A pod with a container whose image is one of ``images``."""
        return self._container(pod) is not None

    def _container(self, pod: dict) -> dict | None:
        for c in (pod.get("spec") or {}).get("containers") or []:
            if image_repository(c.get("image", "")) in self.images:
                return c
        return None

    def _on_change(self, change: Change) -> None:
        obj = change.entry.obj
        if change.type == "DELETED" and obj.get("kind") == "Pod":
            with self._lock:
                proc = self._procs.get(obj["metadata"].get("uid", ""))
            if proc is not None:
                _kill(proc.popen)

    # ---- the kubelet's part ----------------------------------------------------------------

    def sync(self, pod: dict, controllers: Any) -> None:
        """Start the pod's process once it is Running; report its exit when it has ended."""
        status = pod.get("status") or {}
        if status.get("phase") != "Running":
            return
        uid = pod["metadata"]["uid"]
        with self._lock:
            proc = self._procs.get(uid)
        if proc is None:
            self._start(pod)
            return
        code = proc.popen.poll()
        if code is None:
            return
        finished = datetime.now(UTC)
        new = copy.deepcopy(status)
        new["phase"] = "Succeeded" if code == 0 else "Failed"
        for cs in new.get("containerStatuses") or []:
            if cs.get("name") == proc.container:
                cs.update(ready=False, started=False, state={"terminated": {
                    "exitCode": code if code >= 0 else 128 - code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": rfc3339(proc.started), "finishedAt": rfc3339(finished),
                    "containerID": cs.get("containerID", "")}})
        for c in new.get("conditions") or []:
            if c.get("type") in ("Ready", "ContainersReady"):
                c.update(status="False", reason="PodCompleted", lastTransitionTime=rfc3339(finished))
                c.pop("message", None)
        controllers._status("Pod", pod, new)

    def pod_dir(self, pod: dict) -> Path:
        """Where the pod's files live on this machine (``root/<uid>/rootfs`` holds its mounts)."""
        return self.root / pod["metadata"]["uid"]

    def _start(self, pod: dict) -> None:
        container = self._container(pod)
        assert container is not None
        name = container["name"]
        pod_dir = self.pod_dir(pod)
        rootfs = pod_dir / "rootfs"
        kubelet = self.api.kubelet
        files, dirs = kubelet.files(pod, name)
        mounts = sorted(d for d in dirs if d == SA_DIR or any(
            m.get("mountPath", "").rstrip("/") == d for m in container.get("volumeMounts") or []))
        spec = pod.get("spec") or {}
        if spec.get("automountServiceAccountToken", True):
            files[f"{SA_DIR}/token"] = self._token(pod).encode()
            files[f"{SA_DIR}/ca.crt"] = Path(self.api.ca_file).read_bytes()
        for d in mounts:
            (rootfs / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            if any(path.startswith(d + "/") for d in mounts):
                target = rootfs / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        env = dict(kubelet.environment(pod, name))
        host, port = self.api.url.split("://", 1)[1].rsplit(":", 1)
        env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=port,
                   KUBERNETES_SERVICE_PORT_HTTPS=port)
        env["PATH"] = self.images[image_repository(container["image"])] + os.pathsep + env.get("PATH", "")
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        exec_spec = {"rootfs": str(rootfs), "mounts": mounts, "argv": argv, "env": env,
                     "workdir": container.get("workingDir") or "/"}
        spec_file = pod_dir / "exec.json"
        spec_file.write_text(json.dumps(exec_spec))
        spec_file.chmod(0o600)
        log = pod_dir / f"{name}.log"
        unshare = shutil.which("unshare")
        with open(log, "wb") as out:
            if not argv or unshare is None:
                out.write(b"no command, or no unshare(1) to mount the pod's volumes\n")
                popen = subprocess.Popen([sys.executable, "-c", "raise SystemExit(128)"])
            else:
                popen = subprocess.Popen(
                    [unshare, "--mount", "--propagation", "private", sys.executable, "-m",
                     "runbooks_sandbox.podrunner", str(spec_file)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        with self._lock:
            self._procs[pod["metadata"]["uid"]] = _Proc(popen, name, log, datetime.now(UTC))

    def _token(self, pod: dict) -> str:
        """A bound token of the pod's ServiceAccount, as the kubelet's projected volume holds."""
        from .auth import ISSUER, SA_PREFIX, sign

        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns, sa_name = meta["namespace"], spec.get("serviceAccountName") or "default"
        sa_rt = self.api.registry.lookup("", "v1", "serviceaccounts")
        sa = self.api.store.get(sa_rt, ns, sa_name)
        now = int(time.time())
        claims = {"aud": [ISSUER], "exp": now + TOKEN_SECONDS, "iat": now, "iss": ISSUER, "jti": str(uuid.uuid4()),
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa_name, "uid": sa["metadata"]["uid"]},
                                    "pod": {"name": meta["name"], "uid": meta["uid"]}},
                  "nbf": now, "sub": f"{SA_PREFIX}{ns}:{sa_name}"}
        return sign(self.api, claims)

    def logs(self, pod: dict, container: str, **options: Any) -> str:
        """The container log of a pod run here (else the sandbox's generated logs)."""
        with self._lock:
            proc = self._procs.get(pod["metadata"].get("uid", ""))
        if proc is None or proc.container != container:
            return self._previous_logs(pod, container, **options) if self._previous_logs else ""
        text = proc.log.read_text(errors="replace")
        tail = options.get("tail_lines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-tail:]) if tail else ""
        return text


def parse_run_image(text: str) -> tuple[str, str]:
    """``REPOSITORY[=BINDIR]`` (``runbooks sandbox up --run-image``); BINDIR defaults to this
    interpreter's directory (the virtualenv where ``runbooks`` is installed)."""
    repo, _, bin_dir = text.partition("=")
    if not repo or not repo.strip():
        raise ValueError(f"--run-image {text!r}: expected REPOSITORY[=BINDIR], e.g. kube-runbooks")
    bin_dir = bin_dir or str(Path(sys.executable).parent)
    if not Path(bin_dir).is_dir():
        raise ValueError(f"--run-image {text!r}: {bin_dir!r} is not a directory")
    return image_repository(repo.strip()), bin_dir


class PodRunnerAddon:
    """The runtime as a sandbox add-on: pods of ``images`` run while the sandbox runs."""

    def __init__(self, box: Any, images: dict[str, str]):
        self.box, self.images = box, images
        self.runner: PodRunner | None = None

    def start(self) -> dict[str, str] | None:
        self.runner = PodRunner(self.box.api, self.images, Path(self.box.state_dir) / "pods").install()
        self.box.cluster_controllers.process_runtime = self.runner
        return None

    def stop(self) -> None:
        if self.runner is not None:
            self.box.cluster_controllers.process_runtime = None
            self.runner.stop()


def _kill(popen: subprocess.Popen) -> None:
    if popen.poll() is None:
        try:
            os.killpg(popen.pid, signal.SIGTERM)
            popen.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- inside the pod's mount namespace ------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _make_dir(target: str, stage: str, scaffolds: list[str]) -> None:
    """``target`` as a directory, without writing to the host: a missing one is made in a tmpfs
    laid over its deepest existing ancestor, whose entries stay visible as symlinks."""
    if os.path.isdir(target):
        return
    ancestor = target
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    real = os.path.realpath(ancestor)
    if not any(real == s or real.startswith(s + "/") for s in scaffolds):
        shadow = os.path.join(stage, "shadow", str(len(scaffolds)))
        os.makedirs(shadow)
        _mount("--bind", real, shadow)
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", real)
        for entry in os.listdir(shadow):
            os.symlink(os.path.join(shadow, entry), os.path.join(real, entry))
        scaffolds.append(real)
    os.makedirs(target, exist_ok=True)


def exec_pod(spec_file: str) -> None:
    """Mount the pod's volumes at their container paths, then exec its command (never returns)."""
    spec = json.loads(Path(spec_file).read_text())
    stage = "/mnt"  # a tmpfs here holds the pod's files and the shadows, out of the mounts' way
    _mount("-t", "tmpfs", "-o", "mode=0700", "tmpfs", stage)
    os.makedirs(os.path.join(stage, "pod"))
    _mount("--bind", spec["rootfs"], os.path.join(stage, "pod"))
    scaffolds: list[str] = []
    for target in sorted(spec["mounts"], key=lambda p: (p.count("/"), p)):
        _make_dir(target, stage, scaffolds)
        _mount("--bind", os.path.join(stage, "pod", target.lstrip("/")), target)
    os.chdir(spec["workdir"])
    env = spec["env"]
    argv = spec["argv"]
    path = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    sys.stdout.flush()
    os.execve(path, argv, env)


if __name__ == "__main__":
    exec_pod(sys.argv[1])
