"""Where a fleet's records go: the output directory, or object storage exactly as for a single run.

Why this module exists: a fleet writes to the same places as ``runbooks run --output-dir``,
through the same code. Each environment's ``runbooks run`` is given the fleet's ``--output-dir``
(a directory or ``s3://BUCKET/PREFIX``, ``gs://…``, ``abs://…``) and writes its run directory and,
in object storage, its index entry itself (:mod:`runbooks.execute` and :mod:`runbooks.storage`):
nothing is uploaded twice and there is one uploader. What belongs to the fleet goes beside them
through :class:`runbooks.storage.Store` as well:

- ``_fleet/RUNBOOK/FLEET_ID/fleet.json`` and ``logs/ENV.log`` (each log as its run ends, with the
  credentials of the environment redacted);
- the record of a run that ended without writing its own (killed, refused when it started): a
  ``summary.json`` with status ``failed`` or ``rejected``, its exit code and why, in a run directory
  of its own with its index entry, so ``runbooks runs --from URL`` lists every environment that ran.

With object storage the fleet works in a local temporary directory, removed once everything is
uploaded (kept, and named, when an upload fails: the fleet then exits 3 like a single run whose
upload failed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from runbooks import model, storage
from runbooks import secrets as sec
from runbooks.environments import new_run_dir
from runbooks.errors import EXIT_INVALID, RunbookError
from runbooks.summary import SUMMARY_SCHEMA, write_json


class FleetOutput:
    """The fleet's output location: ``local`` is where it writes first (the output directory itself,
    or a temporary one for object storage, whose :class:`~runbooks.storage.Store` is ``store``)."""

    def __init__(self, target: str | Path | storage.Store | None, default: Path,
                 echo: Callable[[str], None] = print) -> None:
        if isinstance(target, storage.Store):
            self.store: storage.Store | None = target
        else:
            self.store = storage.open_store(str(target)) if storage.is_url(target) else None
        if self.store is not None:
            self.local = Path(tempfile.mkdtemp(prefix="runbooks-fleet-"))
        else:
            self.local = Path(target).resolve() if target else default  # type: ignore[arg-type]
        self.echo = echo
        self.failed_uploads: list[str] = []

    @property
    def target(self) -> str:
        """What each environment's ``runbooks run`` gets as ``--output-dir``."""
        return self.store.url if self.store is not None else str(self.local)

    def where(self, rel: str) -> str:
        """How a path relative to the output location is shown (a URL in object storage)."""
        return self.store.url_of(rel) if self.store is not None else str(self.local / rel)

    def read_run(self, shown: str) -> tuple[str, dict[str, Any]]:
        """(run directory relative to the output location, its summary.json or ``{}``) of the run
        directory a run printed (a URL in object storage, a local path when its upload failed)."""
        store = self.store
        if store is not None and shown.startswith(store.url + "/"):
            rel = shown[len(store.url) + 1:]
            try:
                return rel, json.loads(store.read_bytes(f"{rel}/{storage.SUMMARY}"))
            except (RunbookError, ValueError):
                return rel, {}
        path = Path(shown)
        try:
            summary = json.loads((path / storage.SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {}
        try:
            return path.relative_to(self.local).as_posix(), summary
        except ValueError:
            return shown, summary

    def record_unfinished(self, *, env: str, runbook: str, started: datetime, exit_code: int, error: str,
                          fail_on: str, fleet: str, log: str | None) -> str:
        """A run that ended without its summary.json: write one saying so (and its index entry).

        Returns its run directory relative to the output location.
        """
        end = model.utcnow()
        run_dir = new_run_dir(self.local, env, runbook, started)
        rel = run_dir.relative_to(self.local).as_posix()
        summary = {
            "schema": SUMMARY_SCHEMA, "runbook": runbook, "env": env, "run_id": run_dir.name,
            "start": model.iso(started), "end": model.iso(end),
            "duration_s": round((end - started).total_seconds(), 1),
            "status": "rejected" if exit_code == EXIT_INVALID else "failed", "exit_code": exit_code,
            "fail_on": fail_on, "findings": [], "counts": {s: 0 for s in model.SEVERITIES},
            "error": {"kind": "no-summary", "message": error, "cell_index": None, "ename": None},
            "notebook": None, "report": None, "fleet": fleet, "log": log,
        }
        write_json(run_dir / storage.SUMMARY, summary)
        if self.store is not None:
            self._upload(lambda s: (s.put_run(run_dir, rel), s.write_entry(rel, summary)), rel)
        return rel

    def put_log(self, log: Path, rel: str) -> None:
        """A run's log, as it ended, beside fleet.json in object storage (credentials redacted)."""
        if self.store is None or not log.exists():
            return
        text = sec.redact_text(log.read_text(encoding="utf-8", errors="replace"),
                               [s.value for s in sec.env_secrets()])
        self._upload(lambda s: s.write_bytes(rel, text.encode()), rel)

    def finish(self, fleet_dir: Path, summary: dict[str, Any]) -> str:
        """Write fleet.json (and upload it); the fleet directory's location as it is shown."""
        rel = fleet_dir.relative_to(self.local).as_posix()
        if self.store is not None:
            summary["location"] = self.store.url_of(rel)
        write_json(fleet_dir / "fleet.json", summary)
        if self.store is None:
            return str(fleet_dir)
        data = json.dumps(summary, indent=2, default=str).encode() + b"\n"
        self._upload(lambda s: s.write_bytes(f"{rel}/fleet.json", data), f"{rel}/fleet.json")
        if self.failed_uploads:
            self.echo(f"runbooks: {len(self.failed_uploads)} upload(s) of the fleet failed; "
                      f"its records are kept at {self.local}")
            return str(fleet_dir)
        shutil.rmtree(self.local, ignore_errors=True)
        return self.store.url_of(rel)

    def _upload(self, action: Callable[[storage.Store], Any], rel: str) -> None:
        assert self.store is not None
        try:
            action(self.store)
        except RunbookError as exc:
            self.failed_uploads.append(rel)
            self.echo(f"runbooks: {rel} could not be uploaded to {self.store.url}: {exc}")
