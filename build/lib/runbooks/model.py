"""Findings and records: the facts a run leaves for summary.json and the report.

**Recording (the one mechanism).** Everything destined for ``summary.json``
(the run's context, preflight, findings, data-source state, the plan, each
applied change and the error that ended a run) is *displayed* as a MIME bundle
of type :data:`RECORD_MIME` whose payload is ``{"kind": ..., "data": {...}}``.
The records therefore live in the executed notebook itself: ``runbooks run``,
``runbooks report`` and anybody holding a notebook executed by plain papermill
read them back with :func:`read_records`. Re-running a cell in JupyterLab
replaces its outputs, so the saved notebook never holds stale duplicates; when
the same finding id, data source or plan is recorded twice, the last record
wins. The HTML report strips these outputs.

This is the bottom layer with :mod:`runbooks.errors`: every other module may
import it, it imports no other module of the package but errors.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RECORD_MIME = "application/vnd.kube-runbooks.record+json"
"""MIME type of the display outputs that carry records for summary.json."""

SEVERITIES: tuple[str, ...] = ("ok", "info", "warning", "critical")
"""Finding severities, lowest first."""

Severity = Literal["ok", "info", "warning", "critical"]


class Finding(BaseModel):
    """One thing a runbook found, for the report and summary.json.

    Args:
        id: stable identifier, e.g. ``"pod-crashloop/shop/web-5d9c"``; the same
            problem keeps the same id from run to run.
        severity: ``ok``, ``info``, ``warning`` or ``critical``.
        title: one line a person reads first.
        detail: what it means and what to do.
        resource: the object concerned, ``Kind/namespace/name`` or ``Kind/name``.
        evidence: small JSON-serialisable data backing it (never Secret data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    severity: Severity
    title: str = Field(min_length=1)
    detail: str = ""
    resource: str | None = None
    evidence: Any = None

    @model_validator(mode="before")
    @classmethod
    def _check_severity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("severity") not in SEVERITIES:
            raise ValueError(
                f"severity {data.get('severity')!r} is not one of {', '.join(SEVERITIES)}"
            )
        return data

    @property
    def rank(self) -> int:
        """Position of the severity in :data:`SEVERITIES` (0 = ok)."""
        return SEVERITIES.index(self.severity)

    def to_json(self) -> dict[str, Any]:
        """A plain dict, evidence made JSON-safe."""
        data = self.model_dump()
        data["evidence"] = json.loads(json.dumps(data["evidence"], default=str))
        return data


# ---- time and identity ------------------------------------------------------------


def utcnow() -> _dt.datetime:
    """Now, in UTC (one clock for run ids, audit lines and summaries)."""
    return _dt.datetime.now(_dt.UTC)


def iso(ts: _dt.datetime) -> str:
    """``2026-12-02T20:54:07Z``: the one timestamp format of summaries and audit lines."""
    return ts.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def who() -> str:
    """``user@host`` of this process, for audit lines and silences."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# ---- records ----------------------------------------------------------------------

_LOCAL_RECORDS: list[dict[str, Any]] = []


def shell() -> Any:
    """The running IPython shell, or None outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return None
    return get_ipython()


def headless() -> bool:
    """Whether nobody is looking: `runbooks run` (RUNBOOKS_HEADLESS=1), or no kernel at all."""
    return os.environ.get("RUNBOOKS_HEADLESS") == "1" or shell() is None


def record(kind: str, data: Mapping[str, Any]) -> None:
    """Record one fact for summary.json (the single recording mechanism).

    Inside a kernel this displays a :data:`RECORD_MIME` bundle, which ends up
    in the executed notebook; outside IPython (plain Python, unit tests) the
    record is kept in memory (see :func:`local_records`).
    """
    payload = {"kind": kind, "data": json.loads(json.dumps(dict(data), default=str))}
    if shell() is None:
        _LOCAL_RECORDS.append(payload)
        return
    from IPython.display import display

    display({RECORD_MIME: payload, "text/plain": ""}, raw=True)


def local_records(clear: bool = False) -> list[dict[str, Any]]:
    """Records made outside IPython (for tests and scripts)."""
    out = list(_LOCAL_RECORDS)
    if clear:
        _LOCAL_RECORDS.clear()
    return out


def iter_records(nb: Any) -> Iterable[dict[str, Any]]:
    """Every record payload in an executed notebook, in output order."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if RECORD_MIME in data:
                payload = data[RECORD_MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                yield payload


def fold_records(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold records into the summary sections (last record per id/name wins)."""
    state: dict[str, Any] = {
        "run": {}, "preflight": None, "findings": {}, "data_sources": {}, "plan": None,
        "changes": [], "window": None, "error": None,
    }
    for rec in records:
        kind, data = rec.get("kind"), rec.get("data") or {}
        if kind == "run":
            state["run"].update(data)
        elif kind == "finding":
            state["findings"][data.get("id")] = data
        elif kind == "source":
            state["data_sources"][data.get("name")] = {k: v for k, v in data.items() if k != "name"}
        elif kind == "change":
            state["changes"].append(data)
        elif kind in ("preflight", "plan", "window", "error"):
            state[kind] = data
    state["findings"] = sorted(
        state["findings"].values(),
        key=lambda f: (-SEVERITIES.index(f.get("severity", "ok")), str(f.get("id"))),
    )
    return state


def read_records(nb: Any) -> dict[str, Any]:
    """The summary sections recorded in an executed notebook (dict or NotebookNode).

    Returns a dict with ``run`` (context, server ...), ``preflight``,
    ``findings`` (worst first), ``data_sources``, ``plan``, ``changes``
    (applied changes), ``window`` and ``error`` (the exception that ended the
    run, with its ``exit_code``).
    """
    return fold_records(iter_records(nb))
