"""Notifications: a run's result in the team's Slack channel or any webhook receiver.

Why this module exists: a run's result should reach people where they are (a chat
channel, an incident tool) without them opening a terminal, and a scheduled runbook
must not page anyone every five minutes about the same thing. So this module holds
three things, all plain data in and out:

- **What is said**: one :class:`Message` per event (a run, a refusal, "resolved"), built
  from ``summary.json`` (already redacted). It renders two ways: a Slack Block Kit message
  (:meth:`Message.slack`, kept inside Slack's limits: 50 blocks, 3,000 characters per
  section, 150 per header) and a JSON document shaped like Alertmanager's webhook
  (:meth:`Message.payload`: ``version`` "4", ``status`` firing/resolved, ``groupLabels``,
  ``commonLabels``, ``alerts[]`` with ``labels`` ``alertname=RunbookFindings``, ``runbook``,
  ``env``, ``severity`` and ``annotations``), so a receiver written for Alertmanager takes it
  as it is. The run's own fields (``event``, ``text``, ``thread``, ``run_status``,
  ``exit_code``, ``findings`` …) ride along at the top level.
- **Whether to say it** (:func:`decide`): always, at or above a severity, or only when
  the run's state changed since the previous run of the same runbook and environment.
- **How it is sent**: Slack through ``slack_sdk``'s ``WebhookClient`` with its retry
  handlers (a 429 is retried after ``Retry-After``), the webhook with ``requests``. The
  URLs come from ``$RUNBOOKS_SLACK_WEBHOOK_URL`` and ``$RUNBOOKS_WEBHOOK_URL`` only (a
  webhook URL is a credential), are never quoted in an error, and are themselves
  redacted from every message.

A message carries a ``thread`` key: every message about one incident (the run's summary,
a refusal, "resolved") has the same key, so a receiver can keep them in one thread.

Nothing secret goes out: every rendered message passes through
:func:`runbooks.secrets.redact` with every known secret (and the key and token shapes)
and then through the secret scan; a message that still fails the scan is not sent.
Plans are never applied from here: a message names the plan id of a dry run and how to
approve it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import secrets as sec
from .errors import InvalidInput, RunbookError, Unavailable, cut
from .model import SEVERITIES

WEBHOOK_ENV = "RUNBOOKS_WEBHOOK_URL"
SLACK_ENV = "RUNBOOKS_SLACK_WEBHOOK_URL"
URL_ENV = {"slack": SLACK_ENV, "webhook": WEBHOOK_ENV}
KINDS = tuple(URL_ENV)
"""Notifiers ``runbooks run --notify`` knows."""
NOTIFY_ON = ("always", "change", "severity")
"""``--notify-on``: every run; only when the state changed since the previous run; at or above
``--notify-min-severity``."""
MIN_SEVERITIES = ("warning", "critical")
TIMEOUT = 10.0
RECEIVER = "kube-runbooks"
ALERTNAME = "RunbookFindings"
FAILED_ALERTNAME = "RunbookFailed"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` for an alert still firing."""

# Slack's limits (Block Kit reference): a message holds at most 50 blocks; a section's text
# at most 3,000 characters, each of its (at most 10) fields 2,000; a header's text 150.
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT = 3000
SLACK_FIELD_TEXT = 2000
SLACK_MAX_FIELDS = 10
SLACK_HEADER_TEXT = 150
SLACK_CONTEXT_TEXT = 2000
SLACK_FALLBACK_TEXT = 3000
SLACK_TOP_FINDINGS = 10
SLACK_MAX_RETRY_AFTER = 60
"""A 429 asking to wait longer than this (seconds) is not retried: the run must end."""
DETAIL_CHARS = 300
"""A finding's detail in a message (the report has the rest)."""

EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:",
         "ok": ":white_check_mark:", "failed": ":x:", "leaked": ":no_entry:", "rejected": ":no_entry_sign:",
         "findings": ":warning:", "resolved": ":white_check_mark:"}


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
    run_id: str | None = None
    start: str | None = None
    end: str | None = None
    cluster: str | None = None
    counts: dict[str, int] | None = None
    total_findings: int | None = None
    error: str | None = None
    change: str | None = None  # "critical -> ok" when --notify-on change decided it
    min_severity: str = "warning"  # the lowest severity that gets an alert in the webhook document

    # ---- the generic webhook: Alertmanager's webhook shape ------------------------------

    def firing(self) -> bool:
        """Alertmanager's group ``status``: firing when any of its alerts is."""
        return any(a["status"] == "firing" for a in self.alerts())

    def _alert(self, name: str, severity: str, firing: bool, summary: str, description: str) -> dict[str, Any]:
        labels = {"alertname": name, "runbook": self.runbook or "", "env": self.env or "", "severity": severity}
        fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "status": "firing" if firing else "resolved",
            "labels": labels,
            "annotations": {"summary": summary, "description": description},
            "startsAt": self.start or self.end or ZERO_TIME,
            "endsAt": ZERO_TIME if firing else (self.end or self.start or ZERO_TIME),
            "generatorURL": self.report if _is_url(self.report) else "",
            "fingerprint": fingerprint,
        }

    def alerts(self) -> list[dict[str, Any]]:
        """One alert per severity (firing when the run found any, resolved otherwise), and one
        ``RunbookFailed`` alert when the run failed or was refused."""
        where = f"{self.runbook} on {self.env}"
        out = []
        if self.event == "refused" or self.status in ("failed", "leaked", "rejected"):
            severity = "warning" if self.event == "refused" or self.status == "rejected" else "critical"
            out.append(self._alert(FAILED_ALERTNAME, severity, True, f"{where}: {self.status or 'refused'}",
                                   self.error or self.text))
        if self.event != "run" or self.counts is None:
            return out
        floor = SEVERITIES.index(self.min_severity if self.min_severity in MIN_SEVERITIES else "warning")
        for severity in [s for s in ("critical", "warning") if SEVERITIES.index(s) >= floor]:
            count = self.counts.get(severity, 0)
            listed = [f for f in self.findings if f.get("severity") == severity]
            description = "\n".join(_finding_line(f) for f in listed)
            if count > len(listed):
                description += f"\n… and {count - len(listed)} more"
            if count:
                out.append(self._alert(ALERTNAME, severity, True,
                                       f"{count} {severity} finding(s) from {where}", description.strip()))
            elif self.status in ("ok", "findings"):
                out.append(self._alert(ALERTNAME, severity, False, f"no {severity} finding from {where}", ""))
        return out

    def document(self) -> dict[str, Any]:
        """The webhook's JSON document before redaction."""
        alerts = self.alerts()
        group = {"runbook": self.runbook or "", "env": self.env or ""}
        common_labels = _common([a["labels"] for a in alerts]) if alerts else dict(group)
        common_annotations = _common([a["annotations"] for a in alerts]) if alerts else {}
        extension = {k: v for k, v in asdict(self).items() if v not in (None, [], {}) and k != "min_severity"}
        extension["run_status"] = extension.pop("status", None)
        if extension["run_status"] is None:
            del extension["run_status"]
        return {
            "version": "4",
            "groupKey": "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}",
            "truncatedAlerts": 0,
            "status": "firing" if self.firing() else "resolved",
            "receiver": RECEIVER,
            "groupLabels": group,
            "commonLabels": common_labels,
            "commonAnnotations": common_annotations,
            "externalURL": self.report if _is_url(self.report) else "",
            "alerts": alerts,
            **extension,
        }

    def payload(self, kubeconfig: str | None = None, secrets: Sequence[sec.Secret] | None = None) -> dict[str, Any]:
        """The webhook's JSON document, with every known secret redacted."""
        return guard(self.document(), _secrets(kubeconfig, secrets))

    # ---- Slack: Block Kit ----------------------------------------------------------------

    def slack_blocks(self, top: int = SLACK_TOP_FINDINGS) -> dict[str, Any]:
        """``{"text": fallback, "blocks": [...]}`` inside Slack's limits, before redaction."""
        state = "resolved" if self.event == "resolved" else (self.status or self.event)
        title = f"{self.runbook or 'runbooks'} on {self.env or '?'}: {state}"
        if self.change and " -> " in self.change:
            title += f" (was {self.change.split(' -> ')[0]})"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(title, SLACK_HEADER_TEXT), "emoji": True}},
            _section(f"{EMOJI.get(state, '')} {_esc(self.text)}".strip()),
        ]
        fields = [f"*Status*\n{_esc(state)}" + (f" (exit {self.exit_code})" if self.exit_code is not None else ""),
                  f"*Environment*\n{_esc(self.env or '?')}"]
        if self.cluster:
            fields.append(f"*Cluster*\n{_esc(self.cluster)}")
        if self.counts is not None:
            fields.append("*Findings*\n" + "  ".join(
                f"{EMOJI[s]} {self.counts.get(s, 0)} {s}" for s in ("critical", "warning", "info")))
        if self.change:
            fields.append(f"*Change*\n{_esc(self.change)}")
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _fit(f, SLACK_FIELD_TEXT, escaped=True)} for f in fields[:SLACK_MAX_FIELDS]]})
        tail: list[dict[str, Any]] = []
        if self.plan and self.plan.get("id"):
            state_of_plan = "applied" if self.plan.get("applied") else "not applied (dry run)"
            tail.append(_section(f"*Plan* `{_esc(self.plan['id'])}`: {self.plan.get('changes', 0)} change(s), "
                                 f"{state_of_plan}"))
        if self.error:
            tail.append(_section(f"*Error*\n{_esc(self.error)}"))
        if _is_url(self.report):
            tail.append({"type": "section", "text": {"type": "mrkdwn", "text": _fit(
                f"<{self.report}|Open the report>", SLACK_SECTION_TEXT, escaped=True)},
                "accessory": {"type": "button", "text": {"type": "plain_text", "text": "Report"},
                              "url": self.report}} if len(self.report or "") <= 3000 else
                        _section("Report: " + _esc(self.report or "")))
        context = [x for x in (f"run {self.run_id}" if self.run_id else "",
                               f"thread {self.thread}" if self.thread else "") if x]
        if context:
            tail.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": _fit(" · ".join(context), SLACK_CONTEXT_TEXT)}]})
        shown = [f for f in self.findings if f.get("severity") in ("critical", "warning", "info")][:top]
        room = SLACK_MAX_BLOCKS - len(blocks) - len(tail) - 3  # divider, heading, "and N more"
        shown = shown[:max(room, 0)]
        if shown:
            blocks.append({"type": "divider"})
            blocks.append(_section("*Top findings*"))
            for f in shown:
                blocks.append(_section(_finding_mrkdwn(f)))
            more = (self.total_findings or len(self.findings)) - len(shown)
            if more > 0:
                blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _fit(
                    f"… and {more} more finding(s) in the report and summary.json", SLACK_CONTEXT_TEXT)}]})
        blocks.extend(tail)
        return {"text": _cut(self.text, SLACK_FALLBACK_TEXT), "blocks": blocks[:SLACK_MAX_BLOCKS]}

    def slack(self, kubeconfig: str | None = None, secrets: Sequence[sec.Secret] | None = None) -> dict[str, Any]:
        """The Slack message, with every known secret redacted."""
        return guard(self.slack_blocks(), _secrets(kubeconfig, secrets))


# --------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------


def _is_url(value: str | None) -> bool:
    return bool(value) and str(value).startswith(("http://", "https://"))


def _common(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The pairs every dict has (Alertmanager's commonLabels / commonAnnotations)."""
    first, *rest = dicts
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def _cut(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def _esc(text: Any) -> str:
    """Slack mrkdwn escaping: only ``&``, ``<`` and ``>`` are special."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fit(text: str, limit: int, escaped: bool = True) -> str:
    """Escaped text cut to ``limit`` characters without splitting an entity."""
    text = text if escaped else _esc(text)
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _fit(mrkdwn, SLACK_SECTION_TEXT)}}


def _finding_line(f: Mapping[str, Any]) -> str:
    where = f" [{f['resource']}]" if f.get("resource") else ""
    return f"{str(f.get('severity', '')).upper()}: {f.get('title')}{where}"


def _finding_mrkdwn(f: Mapping[str, Any]) -> str:
    severity = str(f.get("severity", "info"))
    text = f"{EMOJI.get(severity, '')} *{severity.upper()}* {_esc(f.get('title') or '')}"
    if f.get("resource"):
        text += f" `{_esc(f['resource'])}`"
    if f.get("detail"):
        text += "\n" + _esc(_cut(" ".join(str(f["detail"]).split()), DETAIL_CHARS))
    return text


def _secrets(kubeconfig: str | None, secrets: Sequence[sec.Secret] | None) -> list[sec.Secret]:
    found = list(secrets) if secrets is not None else sec.known_secrets(kubeconfig)
    return found + url_secrets()


def url_secrets(environ: Mapping[str, str] | None = None) -> list[sec.Secret]:
    """The receivers' URLs: a webhook URL carries its own credential, so it is a secret too."""
    environ = os.environ if environ is None else environ
    return [sec.Secret(f"value of ${name}", environ[name].strip()) for name in URL_ENV.values()
            if len(environ.get(name, "").strip()) >= sec.MIN_ENV_SECRET]


def guard(document: dict[str, Any], secrets: Sequence[sec.Secret]) -> dict[str, Any]:
    """``document`` with every known secret and key shape redacted; :class:`Unavailable` if the
    secret scan still finds one (the message is then not sent)."""
    redacted = sec.redact(document, secrets)
    leaks = sec.scan_text(json.dumps(redacted), secrets, "the notification")
    if leaks:
        raise Unavailable(f"the message failed the secret scan ({sec.describe(leaks)}): not sent")
    return redacted


# --------------------------------------------------------------------------
# Receivers' URLs and sending
# --------------------------------------------------------------------------


def url_for(kind: str, environ: Mapping[str, str] | None = None) -> str:
    """The receiver's URL for ``kind`` from its environment variable, or InvalidInput saying it is needed."""
    if kind not in URL_ENV:
        raise InvalidInput(f"--notify {kind!r} is not one of {', '.join(KINDS)}")
    name = URL_ENV[kind]
    url = (environ if environ is not None else os.environ).get(name, "").strip()
    if not url:
        raise InvalidInput(f"--notify {kind} needs the receiver's URL in ${name}")
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"${name} must be an http:// or https:// URL")
    return url


def webhook_url(environ: Any = None) -> str:
    """``$RUNBOOKS_WEBHOOK_URL``, or InvalidInput saying it is needed."""
    return url_for("webhook", environ)


def post_webhook(url: str, message: Message, *, kubeconfig: str | None = None,
                 secrets: Sequence[sec.Secret] | None = None, timeout: float = TIMEOUT) -> None:
    """POST the message as JSON; raise :class:`runbooks.errors.Unavailable` when it is not taken.

    The URL is never quoted in an error (a webhook URL often holds its own credential).
    """
    import requests

    body = message.payload(kubeconfig, secrets)
    try:
        resp = requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise Unavailable(f"the webhook receiver (${WEBHOOK_ENV}) is unreachable: "
                          f"{type(exc).__name__}") from exc
    if resp.status_code >= 300:
        raise Unavailable(f"webhook receiver answered {resp.status_code}: {cut(resp.text, 120)}")


def _slack_client(url: str, timeout: float) -> Any:
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
    )
    from slack_sdk.webhook import WebhookClient

    class BoundedRateLimitRetry(RateLimitErrorRetryHandler):
        """Slack's 429 handler, except when Retry-After asks for more than a run can wait."""

        def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            if response is not None and response.status_code == 429:
                headers = {k.lower(): v for k, v in (response.headers or {}).items()}
                value = headers.get("retry-after")
                value = value[0] if isinstance(value, list) and value else value
                try:
                    if float(value) > SLACK_MAX_RETRY_AFTER:
                        return False
                except (TypeError, ValueError):
                    pass
            return super()._can_retry(state=state, request=request, response=response, error=error)

    return WebhookClient(url, timeout=max(1, int(timeout)), retry_handlers=[
        ConnectionErrorRetryHandler(max_retry_count=1), BoundedRateLimitRetry(max_retry_count=2)])


def post_slack(url: str, message: Message, *, kubeconfig: str | None = None,
               secrets: Sequence[sec.Secret] | None = None, timeout: float = TIMEOUT) -> None:
    """Send the Block Kit message to a Slack incoming webhook (429: retried after ``Retry-After``).

    Raises:
        Unavailable: Slack (or the receiver) did not take it; the URL is never quoted.
    """
    body = message.slack(kubeconfig, secrets)
    client = _slack_client(url, timeout)
    try:
        resp = client.send(text=body["text"], blocks=body["blocks"])
    except Exception as exc:  # noqa: BLE001 - urllib's errors, slack_sdk's: never let one end the run
        raise Unavailable(f"the Slack webhook (${SLACK_ENV}) is unreachable: {type(exc).__name__}") from exc
    if resp.status_code != 200:
        raise Unavailable(f"Slack answered {resp.status_code}: {cut(resp.body, 120)}")


SENDERS = {"slack": post_slack, "webhook": post_webhook}


# --------------------------------------------------------------------------
# Noise control and settings
# --------------------------------------------------------------------------


def state_of(summary: Mapping[str, Any] | None, min_severity: str = "warning") -> str | None:
    """What ``--notify-on change`` compares: ``ok``, the worst severity at or above
    ``min_severity`` (``warning``/``critical``), or the status of a run that did not complete
    (``failed``, ``leaked``, ``rejected``). None for no run."""
    if not summary:
        return None
    status = summary.get("status") or "failed"
    if status not in ("ok", "findings"):
        return status
    counts = summary.get("counts") or {}
    floor = SEVERITIES.index(min_severity)
    for severity in ("critical", "warning"):
        if SEVERITIES.index(severity) >= floor and counts.get(severity):
            return severity
    return "ok"


def decide(summary: Mapping[str, Any], previous: Mapping[str, Any] | None, on: str = "always",
           min_severity: str = "warning") -> tuple[bool, str]:
    """Whether to notify about this run, and why (or why not), for ``--notify-on``.

    - ``always``: every run;
    - ``severity``: the run has a finding at or above ``min_severity``, or did not complete;
    - ``change``: its state (:func:`state_of`) differs from the previous run's of the same
      runbook and environment; with no previous run, when the state is not ``ok``.
    """
    state = state_of(summary, min_severity)
    if on == "always":
        return True, f"--notify-on always ({state})"
    if on == "severity":
        if state == "ok":
            return False, f"nothing at or above {min_severity}"
        return True, f"{state} (at or above {min_severity})" if state in SEVERITIES else f"run {state}"
    before = state_of(previous, min_severity)
    if before is None:
        return (state != "ok"), (f"first run: {state}" if state != "ok" else "first run: ok, nothing to say")
    if state == before:
        return False, f"no change: {state} as in the previous run ({previous.get('run_id')})"  # type: ignore[union-attr]
    return True, f"{before} -> {state}"


@dataclass
class Settings:
    """``--notify`` and its options, with the receivers' URLs read from the environment."""

    kinds: tuple[str, ...] = ()
    on: str = "always"
    min_severity: str = "warning"
    thread: str | None = None
    urls: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, kinds: Sequence[str], *, on: str = "always", min_severity: str = "warning",
                 thread: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Check the options and find each receiver's URL; InvalidInput (exit 2) naming what is wrong."""
        if on not in NOTIFY_ON:
            raise InvalidInput(f"--notify-on {on!r} is not one of {', '.join(NOTIFY_ON)}")
        if min_severity not in MIN_SEVERITIES:
            raise InvalidInput(f"--notify-min-severity {min_severity!r} is not one of {', '.join(MIN_SEVERITIES)}")
        unique = tuple(dict.fromkeys(kinds))
        return cls(unique, on, min_severity, thread, {k: url_for(k, environ) for k in unique})

    def send(self, message: Message, *, secrets: Sequence[sec.Secret] | None = None,
             kubeconfig: str | None = None, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Send to every receiver; one result per receiver (``sent`` or ``error``), never raising."""
        message.thread = message.thread or self.thread
        results = []
        for kind in self.kinds:
            try:
                SENDERS[kind](self.urls[kind], message, kubeconfig=kubeconfig, secrets=secrets, timeout=timeout)
            except RunbookError as exc:
                results.append({"kind": kind, "sent": False, "error": str(exc)})
            else:
                results.append({"kind": kind, "sent": True})
        return results


def run_message(summary: dict[str, Any], run_dir: str | None = None, *, thread: str | None = None,
                alert: dict[str, Any] | None = None, limit: int = SLACK_TOP_FINDINGS,
                report_url: str | None = None, change: str | None = None,
                secrets: Sequence[sec.Secret] | None = None, min_severity: str = "warning") -> Message:
    """The message for a finished run, from its summary.json (redacted again with ``secrets``
    before anything is cut, so no secret survives half cut)."""
    if secrets is not None:
        summary = sec.redact(summary, secrets)
    counts = summary.get("counts") or {}
    findings = [f for f in summary.get("findings") or [] if f.get("severity") in ("critical", "warning", "info")]
    findings.sort(key=lambda f: -SEVERITIES.index(f.get("severity", "info")))
    worst = [f for f in findings if f.get("severity") in ("critical", "warning")]
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
    error = None
    if summary.get("error"):
        error = cut(summary["error"].get("message") or "", 500)
        text += f"; error: {cut(error, 200)}"
    report = report_url
    if report is None and run_dir and summary.get("report"):
        report = os.path.join(run_dir, summary["report"])
    cluster = summary.get("kube_context") or summary.get("server")
    if summary.get("kube_context") and summary.get("server"):
        cluster = f"{summary['kube_context']} ({summary['server']})"
    return Message(
        event="run", text=text, thread=thread, runbook=summary.get("runbook"), env=summary.get("env"),
        status=summary.get("status"), exit_code=summary.get("exit_code"), run_dir=run_dir,
        report=report, plan=plan_info, alert=alert, run_id=summary.get("run_id"),
        start=summary.get("start"), end=summary.get("end"), cluster=cluster,
        counts={s: int(counts.get(s, 0)) for s in SEVERITIES}, total_findings=len(findings), error=error,
        change=change, min_severity=min_severity,
        findings=[{k: (cut(str(f.get(k)), DETAIL_CHARS) if k == "detail" and f.get(k) else f.get(k))
                   for k in ("severity", "title", "resource", "detail")} for f in (worst or findings)[:limit]],
    )
