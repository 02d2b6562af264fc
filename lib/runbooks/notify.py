"""Notifications: a plain webhook that receives one JSON document per event.

Why this module exists: a run's result should reach people where they are (a chat
channel, an incident tool) without them opening a terminal. The first notifier is the
simplest one every tool can receive: ``POST`` of a small JSON document to the URL in
``$RUNBOOKS_WEBHOOK_URL``. A Slack notifier can sit beside :func:`post_webhook` later and
take the same :class:`Message`.

A message carries a ``thread`` key: every message about one incident (the run's summary,
a refusal, "resolved") has the same key, so a receiver can keep them in one thread.

Nothing secret goes out: messages are built from ``summary.json`` (already redacted) and
pass through :func:`runbooks.secrets.redact` with every known secret before they are sent.
Plans are never applied from here: a message names the plan id of a dry run and how to
approve it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from . import secrets as sec
from .errors import InvalidInput, Unavailable, cut

WEBHOOK_ENV = "RUNBOOKS_WEBHOOK_URL"
TIMEOUT = 10.0
KINDS = ("webhook",)
"""Notifiers ``runbooks run --notify`` knows."""


@dataclass
class Message:
    """One notification: what happened, in one line and a few details."""

    event: str  # run | refused | resolved | failed
    text: str
    thread: str | None = None
    runbook: str | None = None
    env: str | None = None
    status: str | None = None
    exit_code: int | None = None
    run_dir: str | None = None
    report: str | None = None
    plan: dict[str, Any] | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    alert: dict[str, Any] | None = None

    def payload(self, kubeconfig: str | None = None) -> dict[str, Any]:
        """The JSON document sent, with every known secret redacted."""
        data = {k: v for k, v in asdict(self).items() if v not in (None, [], {})}
        return sec.redact(data, sec.known_secrets(kubeconfig))


def webhook_url(environ: Any = None) -> str:
    """``$RUNBOOKS_WEBHOOK_URL``, or InvalidInput saying it is needed."""
    url = (environ if environ is not None else os.environ).get(WEBHOOK_ENV, "").strip()
    if not url:
        raise InvalidInput(f"--notify webhook needs the receiver's URL in ${WEBHOOK_ENV}")
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"${WEBHOOK_ENV} must be an http:// or https:// URL")
    return url


def post_webhook(url: str, message: Message, *, kubeconfig: str | None = None,
                 timeout: float = TIMEOUT) -> None:
    """POST the message as JSON; raise :class:`runbooks.errors.Unavailable` when it is not taken.

    The URL is never quoted in an error (a webhook URL often holds its own credential).
    """
    import requests

    try:
        resp = requests.post(url, json=message.payload(kubeconfig), timeout=timeout)
    except requests.RequestException as exc:
        raise Unavailable(f"the webhook receiver (${WEBHOOK_ENV}) is unreachable: "
                          f"{type(exc).__name__}") from exc
    if resp.status_code >= 300:
        raise Unavailable(f"webhook receiver answered {resp.status_code}: {cut(resp.text, 120)}")


def run_message(summary: dict[str, Any], run_dir: str | None = None, *, thread: str | None = None,
                alert: dict[str, Any] | None = None, limit: int = 5) -> Message:
    """The message for a finished run, from its summary.json."""
    counts = summary.get("counts") or {}
    worst = [f for f in summary.get("findings") or [] if f.get("severity") in ("critical", "warning")]
    worst.sort(key=lambda f: f.get("severity") != "critical")
    params = summary.get("parameters") or {}
    target = "/".join(str(params[k]) for k in ("namespace", "service") if params.get(k))
    head = f"{summary.get('runbook')} on {summary.get('env')}" + (f" for {target}" if target else "")
    text = (f"{head}: {summary.get('status')} (exit {summary.get('exit_code')}), "
            f"{counts.get('critical', 0)} critical, {counts.get('warning', 0)} warning")
    plan = summary.get("plan")
    plan_info = None
    if plan and plan.get("id"):
        plan_info = {"id": plan["id"], "changes": len(plan.get("changes") or []),
                     "applied": bool(plan.get("applied"))}
        if not plan.get("applied"):
            text += (f"; dry run, plan {plan['id']} not applied (approve with `runbooks run "
                     f"{summary.get('runbook')} --env {summary.get('env')} ... --approve {plan['id']}`)")
    if summary.get("error"):
        text += f"; error: {cut(summary['error'].get('message') or '', 200)}"
    report = None
    if run_dir and summary.get("report"):
        report = os.path.join(run_dir, summary["report"])
    return Message(
        event="run", text=text, thread=thread, runbook=summary.get("runbook"), env=summary.get("env"),
        status=summary.get("status"), exit_code=summary.get("exit_code"), run_dir=run_dir,
        report=report, plan=plan_info, alert=alert,
        findings=[{k: f.get(k) for k in ("severity", "title", "resource")} for f in worst[:limit]],
    )
