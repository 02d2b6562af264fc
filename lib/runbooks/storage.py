"""Run directories in object storage: ``--output-dir s3://bucket/prefix`` (``gs://``, ``abs://``).

Why this module exists: a runbook scheduled in many clusters (a CronJob per cluster)
should leave its reports in one place the team can browse, not on a pod's disk that
disappears with it. Object storage is that place. This module is the one path to it,
through fsspec, so S3, Google Cloud Storage and Azure Blob Storage are one code path with
one backend package each (``s3fs``, ``gcsfs``, ``adlfs``: the extras ``kube-runbooks[s3]``,
``[gcs]``, ``[azure]``); a backend that is not installed is named with the extra to install.

Design choices:

- **A run executes locally and is uploaded** (:meth:`Store.put_run`): papermill, nbconvert
  and the notebook's own files want local paths, so the run directory is made in a
  temporary directory and uploaded when the run ends, however it ends. The notebook goes
  up while the run is going too (:class:`Progress`), so a run that hangs can be watched.
- **Atomic enough**: every file first, ``summary.json`` last, then the run's entry in the
  index; whoever lists runs through the index only sees complete runs.
- **The index is one small object per run** (``PREFIX/_index/ENV/RUNBOOK/RUN_ID.json``), so
  runs of a whole fleet writing at once never overwrite each other, the previous run of a
  runbook in an environment is one listing away (``--notify-on change``), and
  ``runbooks runs --from URL`` lists every run with one paginated listing.
- **Credentials only from each backend's standard chain**: for S3 the AWS chain
  (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, web identity, the instance
  role) and the endpoint from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), as every AWS SDK
  reads them. Nothing is a parameter, and no error quotes a credential.

Layout under the URL (the same as ``outputs/``)::

    ENV/RUNBOOK/RUN_ID/{RUNBOOK.ipynb, report.html, summary.json, audit.jsonl, *.csv}
    _index/ENV/RUNBOOK/RUN_ID.json     the run index: one entry per run
    _fleet/RUNBOOK/FLEET_ID/           a fleet's fleet.json and logs/ENV.log (runbooks.fleetoutput)
    index.html                         every run, written by ``runbooks runs --from URL``
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import secrets as sec
from .errors import InvalidInput, RunbookError, Unavailable, cut

INDEX = "_index"
SUMMARY = "summary.json"
PROGRESS_INTERVAL = 10.0
"""Seconds between uploads of the notebook while a run is going (only when it changed);
``$RUNBOOKS_UPLOAD_INTERVAL`` sets another (0.5 to 3600)."""


@dataclass(frozen=True)
class Backend:
    """An fsspec protocol, the package that provides it and the extra that installs it."""

    protocol: str
    package: str
    extra: str
    credentials: str


S3 = Backend("s3", "s3fs", "s3", "the AWS credential chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
             "AWS_PROFILE, web identity, instance role)")
GCS = Backend("gcs", "gcsfs", "gcs", "Google application default credentials")
AZURE = Backend("az", "adlfs", "azure", "Azure's credential chain (AZURE_STORAGE_CONNECTION_STRING, "
                "AZURE_STORAGE_ACCOUNT_KEY, a managed identity)")
SCHEMES: dict[str, Backend] = {"s3": S3, "gs": GCS, "gcs": GCS, "abs": AZURE, "az": AZURE, "abfs": AZURE}
"""URL schemes ``--output-dir`` takes besides a local directory."""
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,221}[A-Za-z0-9]")
_RUN_ID = re.compile(r"(\d{8}T\d{6}Z)(?:-(\d+))?")


def is_url(value: Any) -> bool:
    """Whether ``--output-dir`` names object storage (``scheme://…``) rather than a directory."""
    return value is not None and "://" in str(value) and not str(value).startswith("file://")


def _safe(text: str) -> str:
    """An error text without any credential from the environment."""
    return sec.redact_text(cut(text, 200), [s.value for s in sec.env_secrets()])


def run_order(run_id: str) -> tuple[str, int]:
    """The sort key of a run id (``20260101T000000Z``, then ``-2``, ``-3`` … for runs in the same second)."""
    m = _RUN_ID.fullmatch(run_id)
    return (m[1], int(m[2] or 1)) if m else (run_id, 0)


@dataclass
class Store:
    """A place for run directories in object storage: ``url`` is ``scheme://bucket/prefix``."""

    url: str
    backend: Backend
    bucket: str
    root: str  # the prefix inside the bucket, no slashes at either end ("" for the bucket itself)
    options: dict[str, Any]
    _fs: Any = None

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (made on first use, not shared with other instances)."""
        if self._fs is None:
            import fsspec

            try:
                self._fs = fsspec.filesystem(self.backend.protocol, skip_instance_cache=True,
                                             use_listings_cache=False, **self.options)
            except ImportError as exc:
                raise InvalidInput(self._missing_backend()) from exc
        return self._fs

    def _missing_backend(self) -> str:
        return (f"--output-dir {self.url!r} needs fsspec's {self.backend.protocol} backend, which is not "
                f"installed: pip install 'kube-runbooks[{self.backend.extra}]' (it brings {self.backend.package})")

    def path(self, rel: str = "") -> str:
        """The object path (``bucket/prefix/rel``) fsspec takes."""
        return "/".join(p for p in (self.bucket, self.root, rel.strip("/")) if p)

    def url_of(self, rel: str) -> str:
        """The URL of a file or run directory under the store (what people are shown)."""
        return f"{self.url}/{rel.strip('/')}" if rel else self.url

    def error(self, exc: BaseException, doing: str) -> RunbookError:
        """The error for a failed storage call: it names the bucket, never a credential."""
        name = type(exc).__name__
        where = f"{self.backend.protocol}://{self.bucket}"
        if isinstance(exc, ImportError):
            return InvalidInput(self._missing_backend())
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                    "DefaultCredentialsError", "ClientAuthenticationError"):
            return InvalidInput(f"{doing} {self.url!r}: no credentials found in {self.backend.credentials}")
        if isinstance(exc, FileNotFoundError):
            return InvalidInput(f"{doing} {self.url!r}: bucket {self.bucket!r} does not exist at {where} "
                                "(or these credentials cannot see it)")
        if isinstance(exc, PermissionError):
            return InvalidInput(f"{doing} {self.url!r}: access denied for the credentials of "
                                f"{self.backend.credentials}: {_safe(str(exc))}")
        return Unavailable(f"{doing} {self.url!r}: {name}: {_safe(str(exc))}")

    # ---- checks --------------------------------------------------------------------

    def check_writable(self) -> None:
        """Preflight: the backend is installed, the bucket exists and an object can be written
        and deleted under the prefix. InvalidInput (exit 2) otherwise, before any kernel starts."""
        probe = self.path(f"{INDEX}/.write-check")
        try:
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except RunbookError:
            raise
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            err = self.error(exc, "--output-dir")
            raise (err if isinstance(err, InvalidInput) else InvalidInput(str(err))) from exc

    # ---- writing -------------------------------------------------------------------

    def put_file(self, local: Path, rel: str) -> None:
        try:
            self.fs.put_file(str(local), self.path(rel))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"uploading {rel} to") from exc

    def write_bytes(self, rel: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self.path(rel), data)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"writing {rel} to") from exc

    def read_bytes(self, rel: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self.path(rel)))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, f"reading {rel} from") from exc

    def put_run(self, run_dir: Path, rel: str) -> list[str]:
        """Upload a run directory: every file, then ``summary.json`` last. The uploaded paths."""
        files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        files.sort(key=lambda p: p.name == SUMMARY)
        done = []
        for local in files:
            target = f"{rel}/{local.relative_to(run_dir).as_posix()}"
            self.put_file(local, target)
            done.append(target)
        return done

    def write_entry(self, rel: str, summary: Mapping[str, Any]) -> None:
        """The run's entry in the index (written after its files: listed runs are complete)."""
        entry = index_entry(rel, summary)
        self.write_bytes(f"{INDEX}/{entry['env']}/{entry['runbook']}/{entry['run_id']}.json",
                         json.dumps(entry, sort_keys=True).encode())

    # ---- reading -------------------------------------------------------------------

    def entries(self, env: str | None = None, runbook: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(run directory relative to the URL, index entry) of every run, newest first."""
        sub = INDEX + "".join(f"/{x}" for x in ((env, runbook) if env and runbook else (env,) if env else ()))
        try:
            paths = [p for p in self.fs.find(self.path(sub)) if p.endswith(".json")]
            blobs = self.fs.cat(paths) if paths else {}
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "listing runs in") from exc
        runs = []
        for blob in blobs.values():
            try:
                entry = json.loads(blob)
            except (ValueError, TypeError):
                continue
            if not isinstance(entry, dict) or (runbook and entry.get("runbook") != runbook):
                continue
            runs.append((str(entry.get("path") or ""), entry))
        runs.sort(key=lambda r: (r[1].get("start") or "", r[0]), reverse=True)
        return runs

    def previous(self, env: str, runbook: str, run_id: str) -> dict[str, Any] | None:
        """The index entry of the run of ``runbook`` in ``env`` just before ``run_id``, if any."""
        folder = self.path(f"{INDEX}/{env}/{runbook}")
        try:
            names = [p.rsplit("/", 1)[-1][:-5] for p in self.fs.find(folder) if p.endswith(".json")]
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "reading the run index in") from exc
        before = sorted((n for n in names if run_order(n) < run_order(run_id)), key=run_order)
        if not before:
            return None
        try:
            return json.loads(self.fs.cat_file(f"{folder}/{before[-1]}.json"))
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "reading the run index in") from exc


ENTRY_KEYS = ("schema", "runbook", "env", "run_id", "start", "end", "duration_s", "status", "exit_code",
              "fail_on", "kube_context", "counts", "notebook", "report", "report_url", "fleet")


def index_entry(rel: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A run's entry in the index: what ``runbooks runs`` shows and ``--notify-on change`` compares."""
    entry = {k: summary.get(k) for k in ENTRY_KEYS if summary.get(k) is not None}
    plan = summary.get("plan") or {}
    if plan.get("id"):
        entry["plan"] = {"id": plan["id"], "applied": bool(plan.get("applied"))}
    if summary.get("error"):
        entry["error"] = {"kind": summary["error"].get("kind"), "message": cut(summary["error"].get("message"), 300)}
    entry["path"] = rel
    return entry


def open_store(url: str) -> Store:
    """Parse ``scheme://bucket/prefix`` (``abs://ACCOUNT.blob.core.windows.net/CONTAINER/prefix`` for
    Azure, as papermill writes it). InvalidInput naming the URL and what is allowed."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    allowed = ", ".join(f"{s}://" for s in SCHEMES)
    if scheme not in SCHEMES:
        raise InvalidInput(f"--output-dir {url!r}: {scheme}:// is not supported; allowed: a directory, "
                           f"or {allowed}BUCKET/PREFIX")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput(f"--output-dir {scheme}://{parts.hostname or ''}/…: no query, fragment or credentials in the URL "
                           f"(credentials come from {SCHEMES[scheme].credentials})")
    backend = SCHEMES[scheme]
    host, path = parts.netloc, parts.path.strip("/")
    options: dict[str, Any] = {}
    if scheme == "abs":
        account, _, domain = host.partition(".")
        if not account or not domain.startswith("blob."):
            raise InvalidInput(f"--output-dir {url!r}: an abs:// URL is "
                               "abs://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX")
        options["account_name"] = account
        host, _, path = path.partition("/")
    if not _BUCKET.fullmatch(host or "") or ".." in (host or ""):
        raise InvalidInput(f"--output-dir {url!r}: {host!r} is not a bucket name; allowed: "
                           f"{scheme}://BUCKET/PREFIX (3-63 letters, digits, dots, dashes)")
    prefix = "/".join(p for p in path.split("/") if p)
    if any(p in (".", "..") for p in prefix.split("/")):
        raise InvalidInput(f"--output-dir {url!r}: '.' and '..' are not allowed in the prefix")
    if importlib.util.find_spec(backend.package) is None:
        raise InvalidInput(f"--output-dir {url!r} needs fsspec's {backend.protocol} backend, which is not "
                           f"installed: pip install 'kube-runbooks[{backend.extra}]' (it brings {backend.package})")
    given = "/".join(p for p in parts.path.split("/") if p)
    shown = f"{scheme}://{parts.netloc}" + (f"/{given}" if given else "")
    return Store(url=shown, backend=backend, bucket=host, root=prefix, options=options)


def upload_interval(environ: Mapping[str, str] | None = None) -> float:
    """``$RUNBOOKS_UPLOAD_INTERVAL`` within bounds, else :data:`PROGRESS_INTERVAL`."""
    try:
        value = float((os.environ if environ is None else environ).get("RUNBOOKS_UPLOAD_INTERVAL", ""))
    except ValueError:
        return PROGRESS_INTERVAL
    return value if 0.5 <= value <= 3600 else PROGRESS_INTERVAL


class Progress:
    """Uploads the notebook while a run is going, whenever it changed (papermill saves it after
    each cell), so a long or hanging run can be followed in the bucket. Best effort."""

    def __init__(self, store: Store, local: Path, rel: str, interval: float | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.store, self.local, self.rel, self.echo = store, local, rel, echo
        self.interval = interval if interval is not None else upload_interval()
        self.stop_event = threading.Event()
        self.last: float | None = None
        self.uploads = 0
        self.warned = False
        self.thread = threading.Thread(target=self._loop, name="runbooks-upload", daemon=True)

    def start(self) -> Progress:
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.upload()

    def upload(self) -> None:
        try:
            mtime = self.local.stat().st_mtime
        except OSError:
            return
        if mtime == self.last:
            return
        try:
            self.store.put_file(self.local, self.rel)
        except RunbookError as exc:  # the upload at the end says so if it fails too
            if self.echo and not self.warned:
                self.echo(f"runbooks: the notebook could not be uploaded while running: {exc}")
            self.warned = True
            return
        self.last = mtime
        self.uploads += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
