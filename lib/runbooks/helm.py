"""Helm, the client: the ``helm`` binary run with a timeout, its output redacted, its manifests parsed.

Why this module exists: the provision-service runbook lets the real ``helm`` binary (Helm 4:
server-side apply, ``--wait=watcher``, release history in ``sh.helm.release.v1.*`` Secrets) do
every write, so that releases, ``helm history`` and ``helm rollback`` are exactly Helm's. This
module only runs it: one kubeconfig context, a timeout on every call, stderr (and stdout unless it
is parsed) redacted of the secret values it was given, and Helm's multi-document manifests turned
into objects. What to ask Helm for is :mod:`runbooks.deploy`'s job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import PreflightFailed, RunbookError, cut
from .secrets import redact_text

if TYPE_CHECKING:
    from .vault import VaultValues

__all__ = ["CLUSTER_SCOPED", "Helm", "HelmFailed", "error_text", "find_helm", "parse_manifest"]

HELM_MIN_MAJOR = 4
HELM_INSTALL_HINT = (
    "install Helm 4: `conda install -c conda-forge kubernetes-helm` (or your package manager), "
    "or, in this project's virtualenv, `python tools/install_helm.py` (what make and CI do)"
)


class HelmFailed(RunbookError):
    """A helm command failed; the message is Helm's (redacted of secret values)."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def find_helm(binary: str | None = None) -> str:
    """The path of a Helm 4 binary: ``binary``, else next to this Python (the venv), else on PATH.

    Raises:
        PreflightFailed: none found, or it is older than Helm 4, with how to install it (exit 2).
    """
    candidates = [binary] if binary else [str(Path(sys.executable).with_name("helm")), "helm"]
    for candidate in candidates:
        path = shutil.which(candidate) if os.sep not in candidate else (
            candidate if os.access(candidate, os.X_OK) else None)
        if not path:
            continue
        try:
            proc = subprocess.run([path, "version", "--template", "{{.Version}}"], capture_output=True,
                                  text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PreflightFailed(f"{path} does not run ({exc}); {HELM_INSTALL_HINT}") from exc
        version = proc.stdout.strip()
        m = re.match(r"v?(\d+)\.", version)
        if proc.returncode != 0 or not m:
            raise PreflightFailed(f"{path} did not report a version ({cut(proc.stderr)}); {HELM_INSTALL_HINT}")
        if int(m[1]) < HELM_MIN_MAJOR:
            raise PreflightFailed(f"{path} is Helm {version}; this runbook needs Helm {HELM_MIN_MAJOR} "
                              f"(server-side apply, --wait=watcher): {HELM_INSTALL_HINT}")
        return path
    raise PreflightFailed(f"Helm is not installed (no `helm` next to {sys.executable} or on PATH): "
                      f"{HELM_INSTALL_HINT}")


class Helm:
    """Runs ``helm`` against one kubeconfig context, every call with a timeout.

    Args:
        kubeconfig, context: where to connect (None: Helm's defaults, e.g. in-cluster).
        binary: the helm executable (default: :func:`find_helm`).
        timeout: seconds for commands that do not wait for a rollout.
        secrets: values to redact from anything Helm prints.
    """

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, *,
                 binary: str | None = None, timeout: float = 120.0,
                 secrets: Iterable[str] = ()) -> None:
        self.binary = find_helm(binary)
        self.kubeconfig = kubeconfig
        self.context = context
        self.timeout = timeout
        self.secrets = list(secrets)

    def __repr__(self) -> str:
        return f"Helm({self.binary!r}, context={self.context!r})"

    def hide(self, secrets: VaultValues) -> None:
        """Redact these secret values too from everything helm prints from now on."""
        self.secrets.extend(secrets.values.values())

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = [self.binary, *args]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self.context:
            argv += ["--kube-context", self.context]
        return argv

    def run(self, *args: str, stdin: bytes | None = None, timeout: float | None = None,
            check: bool = True, parse: bool = False) -> subprocess.CompletedProcess[str]:
        """Run one helm command; stderr comes back redacted, and stdout unless ``parse``.

        ``parse=True`` is for output this module parses and never shows (manifests, release
        JSON): redacting it would corrupt Secret data and hide secret changes from the plan id.

        Raises:
            HelmFailed: non-zero exit (with ``check``) or the timeout passed (the process is killed).
        """
        limit = timeout or self.timeout
        try:
            proc = subprocess.run(self._argv(args), input=stdin, capture_output=True, timeout=limit,
                                  check=False, env=_helm_env())
        except subprocess.TimeoutExpired as exc:
            raise HelmFailed(f"helm {args[0]} did not finish within {limit:.0f}s and was stopped") from exc
        out = proc.stdout.decode("utf-8", "replace")
        out = out if parse else redact_text(out, self.secrets)
        err = redact_text(proc.stderr.decode("utf-8", "replace"), self.secrets)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise HelmFailed(f"helm {args[0]} failed: {error_text(err)}", proc.returncode)
        return result

    def run_watching(self, *args: str, stdin: bytes | None, timeout: float,
                     tick: Callable[[], None] | None = None, every: float = 1.0,
                     ) -> subprocess.CompletedProcess[str]:
        """Like :meth:`run` without ``check``, calling ``tick()`` every ``every`` s while helm runs."""
        proc = subprocess.Popen(self._argv(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_helm_env())
        box: dict[str, Any] = {}
        reader = threading.Thread(target=lambda: box.update(out=proc.communicate(stdin)), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while reader.is_alive():
            reader.join(every)
            if tick is not None and reader.is_alive():
                try:
                    tick()
                except RunbookError:
                    pass  # a progress read that fails must not stop the rollout watch
            if time.monotonic() > deadline and reader.is_alive():
                proc.kill()
                reader.join(10)
                raise HelmFailed(f"helm {args[0]} did not finish within {timeout:.0f}s and was stopped")
        out, err = box.get("out", (b"", b""))
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, redact_text(out.decode("utf-8", "replace"), self.secrets),
            redact_text(err.decode("utf-8", "replace"), self.secrets))

    # -- read-only commands ------------------------------------------------------

    def history(self, release: str, namespace: str) -> list[dict[str, Any]]:
        """``helm history`` as dicts (revision, status, description, updated, chart), oldest first."""
        proc = self.run("history", release, "--namespace", namespace, "--max", "256", "-o", "json",
                        check=False)
        if proc.returncode != 0:
            if "not found" in proc.stderr:
                return []
            raise HelmFailed(f"helm history failed: {error_text(proc.stderr)}", proc.returncode)
        return sorted(json.loads(proc.stdout or "[]"), key=lambda r: r.get("revision", 0))

    def manifest(self, release: str, namespace: str, revision: int | None = None) -> str:
        args = ["get", "manifest", release, "--namespace", namespace]
        if revision is not None:
            args += ["--revision", str(revision)]
        return self.run(*args, parse=True).stdout

    def release(self, release: str, namespace: str, revision: int) -> dict[str, Any]:
        """One revision of a release as Helm stores it (``helm status --revision N -o json``): its
        manifest and its hooks (name, kind, path, events, weight, manifest). Never shown: it may hold
        Secret data."""
        proc = self.run("status", release, "--namespace", namespace, "--revision", str(revision), "-o", "json",
                        parse=True)
        return json.loads(proc.stdout or "{}")


def _helm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HELM_NO_UPDATE_NOTIFIER", "1")
    return env


def error_text(stderr: str) -> str:
    """What Helm said went wrong: the last lines of its stderr without klog lines, cut to 600 characters."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("I1", "W1"))]
    return cut("\n".join(lines[-6:]) or "no message", 600)



def parse_manifest(text: str, namespace: str) -> list[dict[str, Any]]:
    """The objects of a multi-document manifest; namespaced ones without a namespace get ``namespace``."""
    objects = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            objects.extend(doc["items"])
        else:
            objects.append(doc)
    for obj in objects:
        obj.setdefault("metadata", {})
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"].setdefault("namespace", namespace)
    return objects


CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer",
                            "CustomResourceDefinition", "IngressClass", "PriorityClass",
                            "StorageClass", "PersistentVolume", "Node"})

