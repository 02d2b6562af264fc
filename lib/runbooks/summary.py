"""A run's record: ``summary.json`` (exit code, findings, plan, data sources, error) and its publication.

:func:`build_summary` folds the records the notebook displayed (:func:`runbooks.model.read_records`)
and how the execution ended (:class:`runbooks.runner.Outcome`) into the summary; :func:`publish`
scans the notebook, the summary and the rendered HTML for secrets and writes ``summary.json``
and ``report.html`` only when they are clean.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbooks import model
from runbooks import secrets as sec
from runbooks.errors import EXIT_FAILED, EXIT_FINDINGS, EXIT_INVALID, EXIT_OK, cut
from runbooks.runner import Outcome

SUMMARY_SCHEMA = 1


EXIT_BY_KIND = {
    "completed": EXIT_OK, "rejected": EXIT_INVALID, "cell-error": EXIT_FAILED,
    "dead-kernel": EXIT_FAILED, "cell-timeout": EXIT_FAILED, "run-timeout": EXIT_FAILED,
    "truncated": EXIT_FAILED, "crashed": EXIT_FAILED, "secret-leak": EXIT_FAILED,
    "report-failed": EXIT_FAILED, "interrupted": EXIT_FAILED,
}


def exit_code_for(findings: Iterable[Mapping[str, Any]], fail_on: str) -> int:
    """1 if any finding is at or above ``fail_on`` (``ok`` findings never count), else 0."""
    threshold = model.SEVERITIES.index(fail_on)
    worst = max((model.SEVERITIES.index(f.get("severity", "ok")) for f in findings), default=0)
    return EXIT_FINDINGS if worst >= threshold and worst > 0 else EXIT_OK


def status_for(code: int, kind: str) -> str:
    """summary.json's ``status`` for an exit code and how the execution ended."""
    if kind == "secret-leak":
        return "leaked"
    return {EXIT_OK: "ok", EXIT_FINDINGS: "findings", EXIT_INVALID: "rejected"}.get(code, "failed")


@dataclass
class RunResult:
    """What ``runbooks run`` reports: exit code, run directory, summary."""

    exit_code: int
    run_dir: Path
    summary: dict[str, Any]
    report: Path | None = None
    messages: list[str] = field(default_factory=list)
    location: str | None = None
    """Where the run directory is kept when it is not ``run_dir`` (``s3://…/ENV/RUNBOOK/RUN_ID``)."""
    report_url: str | None = None


def build_summary(
    *, runbook: str, env: str, run_id: str, start: _dt.datetime, end: _dt.datetime,
    parameters: Mapping[str, Any], records: Mapping[str, Any], outcome: Outcome,
    fail_on: str, notebook_name: str, cluster: Any = None,
) -> dict[str, Any]:
    """summary.json (before the secret scan decides about the report)."""
    findings = list(records.get("findings") or [])
    counts = {s: 0 for s in model.SEVERITIES}
    for f in findings:
        counts[f.get("severity", "ok")] = counts.get(f.get("severity", "ok"), 0) + 1
    code = EXIT_BY_KIND.get(outcome.kind, EXIT_FAILED)
    if code == EXIT_OK:
        code = exit_code_for(findings, fail_on)
    run_info = records.get("run") or {}
    plan = records.get("plan")
    if plan is not None:
        plan = {k: plan.get(k) for k in ("id", "binding", "changes", "validated", "applied")}
        plan["applied_changes"] = records.get("changes") or []
    sources = dict(records.get("data_sources") or {})
    return {
        "schema": SUMMARY_SCHEMA,
        "runbook": runbook,
        "env": env,
        "run_id": run_id,
        "start": model.iso(start),
        "end": model.iso(end),
        "duration_s": round((end - start).total_seconds(), 1),
        "status": status_for(code, outcome.kind),
        "exit_code": code,
        "fail_on": fail_on,
        "kube_context": run_info.get("kube_context") or getattr(cluster, "context", None),
        "server": run_info.get("server") or getattr(cluster, "server", None),
        "window": records.get("window"),
        "parameters": dict(parameters),
        "findings": findings,
        "counts": counts,
        "plan": plan,
        "data_sources": sources,
        "error": None if outcome.kind == "completed" else {
            "kind": outcome.kind, "message": outcome.message, "cell_index": outcome.cell_index,
            "ename": outcome.ename,
        },
        "notebook": notebook_name,
        "report": None,
        "secret_scan": {"clean": True, "leaks": []},
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def publish(run_dir: Path, nb: Any, summary: dict[str, Any], secrets: list[sec.Secret]) -> RunResult:
    """Secret-scan the notebook, render and scan the HTML, write summary.json and report.html.

    A leak: the stored notebook is redacted, no report.html is written (an
    old one is removed), the run fails with exit 3 and the summary says what
    kind of secret leaked and where, never the value.
    """
    import nbformat

    from runbooks import reporthtml

    notebook_path = run_dir / summary["notebook"]
    leaks = sec.scan_notebook(nb, secrets) if nb is not None else []
    # the summary too: an exception's message (error.message) or a finding may carry a secret
    leaks += sec.scan_text(json.dumps(summary, default=str), secrets, "summary.json")
    html_text = None
    if nb is not None and not leaks:
        try:
            html_text = reporthtml.render_html(nb, summary)
        except Exception as exc:  # a rendering bug must not hide the run's result
            summary["error"] = summary["error"] or {
                "kind": "report-failed", "message": f"report.html could not be rendered: "
                f"{type(exc).__name__}: {cut(str(exc))}", "cell_index": None, "ename": None,
            }
            summary["exit_code"], summary["status"] = EXIT_FAILED, "failed"
        else:
            leaks = sec.scan_text(reporthtml.without_plotly_js(html_text), secrets, "report.html")
    report_path = run_dir / "report.html"
    if leaks:
        if nb is not None:
            nb = sec.redact_notebook(nb, secrets)
            nbformat.write(nbformat.from_dict(nb), str(notebook_path))
        text = sec.describe(leaks)
        summary.update(sec.redact(summary, secrets))
        summary["secret_scan"] = {"clean": False, "leaks": [
            {"kind": leak.kind, "where": leak.where} for leak in leaks
        ]}
        summary["error"] = {
            "kind": "secret-leak",
            "message": f"secret scan failed: {text}. report.html was not published and the "
                       "stored notebook was redacted",
            "cell_index": None, "ename": None,
        }
        summary["exit_code"], summary["status"] = EXIT_FAILED, "leaked"
        html_text = None
        if report_path.exists():
            report_path.unlink()
    else:
        summary.update(sec.redact(summary, secrets))
    if html_text is not None:
        report_path.write_text(html_text, encoding="utf-8")
        summary["report"] = "report.html"
    write_json(run_dir / "summary.json", summary)
    return RunResult(summary["exit_code"], run_dir, summary,
                     report_path if html_text is not None else None)
