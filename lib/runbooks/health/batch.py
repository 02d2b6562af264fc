"""Jobs and CronJobs: failed, missed, suspended or piling-up runs, Jobs past their deadline, and
the cron schedule reader that says when a CronJob was due.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import kube
from ..model import Finding
from .core import Check, frame, guarded

# ---- Jobs and CronJobs -----------------------------------------------------------------

_CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_CRON_NAMES = {**{m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                                  "oct", "nov", "dec"))},
               **{d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}}


def _cron_field(text: str, low: int, high: int) -> set[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if rng in ("*", "?"):
            a, b = low, high
        else:
            lo, _, hi = rng.partition("-")
            a = int(_CRON_NAMES.get(lo, lo))
            b = int(_CRON_NAMES.get(hi, hi)) if hi else (high if step else a)
        out.update(range(a, b + 1, int(step) if step else 1))
    if high == 6 and 7 in out:  # Sunday as 7
        out.add(0)
    return out


def cron_next(schedule: str, after: datetime, tz: str | None = None) -> datetime | None:
    """The first time after `after` that a CronJob `schedule` fires (standard 5-field cron).

    Handles ``*``, lists, ranges, steps, month and day names, the ``@daily``-style macros,
    ``CRON_TZ=``/``TZ=`` prefixes and ``spec.timeZone``. Day of month and day of week
    combine as cron does (either matches when both are restricted). None when the schedule
    cannot be read or never fires within five years.
    """
    text = schedule.strip()
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        tz = prefix.split("=", 1)[1]
    text = _CRON_ALIASES.get(text, text)
    fields = text.split()
    if len(fields) != 5:
        return None
    try:
        minutes, hours = _cron_field(fields[0], 0, 59), _cron_field(fields[1], 0, 23)
        days, months = _cron_field(fields[2], 1, 31), _cron_field(fields[3], 1, 12)
        weekdays = _cron_field(fields[4], 0, 6)
        zone = ZoneInfo(tz) if tz else UTC
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return None
    any_day, any_weekday = fields[2] in ("*", "?"), fields[4] in ("*", "?")
    t = after.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = t + timedelta(days=5 * 366)
    while t < limit:
        if t.month not in months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            continue
        dom, dow = t.day in days, (t.weekday() + 1) % 7 in weekdays
        day_ok = (dom and dow) if any_day or any_weekday else (dom or dow)
        if not day_ok:
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if t.hour not in hours:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        if t.minute not in minutes:
            t += timedelta(minutes=1)
            continue
        return t.astimezone(UTC)
    return None


BATCH_COLUMNS = ["kind", "namespace", "name", "schedule", "last_schedule", "active", "problem"]


def _failed(job: dict) -> dict:
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Failed" and c.get("status") == "True"), {})


def check_batch(cronjobs: Iterable[dict], jobs: Iterable[dict], *, now: datetime | None = None,
                grace_minutes: int = 5) -> Check:
    """CronJobs whose last Job failed, that missed their schedule, are suspended or pile up; Jobs past their deadline.

    Jobs are consumed first (streamed): only the newest Job of each CronJob and the Jobs past
    their deadline are kept. Severity: batch work that did not happen (a failed or missed
    run: backups, reports, cleanups) is a warning, like overlapping runs; a suspended CronJob
    is info (someone chose it, but it is easy to forget).
    """
    now = now or datetime.now(UTC)
    rows: list[dict] = []
    findings: list[Finding] = []
    latest = _scan_jobs(jobs, now, rows, findings)
    for cj in cronjobs:
        meta = cj["metadata"]
        row = _check_cronjob(cj, latest.get((meta.get("namespace") or "", meta["name"])), now, grace_minutes,
                             findings)
        if row:
            rows.append(row)
    return Check(frame(rows, BATCH_COLUMNS), findings)


def _scan_jobs(jobs: Iterable[dict], now: datetime, rows: list[dict],
               findings: list[Finding]) -> dict[tuple[str, str], tuple[str, str, dict]]:
    """The newest Job of each CronJob, (namespace, cronjob) → (created, job, Failed condition); Jobs
    of their own past their deadline go to `rows` and `findings`."""
    latest: dict[tuple[str, str], tuple[str, str, dict]] = {}
    for job in jobs:
        meta, spec, status = job["metadata"], job.get("spec") or {}, job.get("status") or {}
        ns, name = meta.get("namespace") or "", meta["name"]
        owner = next((r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == "CronJob"), None)
        failed = _failed(job)
        if owner:
            created = meta.get("creationTimestamp") or ""
            if (ns, owner) not in latest or created > latest[(ns, owner)][0]:
                latest[(ns, owner)] = (created, name, failed)
            continue
        deadline = spec.get("activeDeadlineSeconds")
        started = kube.parse_time(status.get("startTime"))
        done = any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                   for c in status.get("conditions") or [])
        over = (failed.get("reason") == "DeadlineExceeded"
                or (deadline and started and not done and now - started > timedelta(seconds=deadline)))
        if over:
            rows.append({"kind": "Job", "namespace": ns, "name": name, "schedule": "", "last_schedule": "",
                         "active": status.get("active", 0), "problem": "past its deadline"})
            findings.append(Finding(
                id=f"job-deadline-exceeded/{ns}/{name}", severity="warning",
                title=f"Job {ns}/{name} ran past its activeDeadlineSeconds ({deadline}s)",
                detail=failed.get("message") or "It is still running after its deadline.",
                resource=f"Job/{ns}/{name}", evidence={"deadline_seconds": deadline,
                                                       "started": status.get("startTime")}))
    return latest


def _check_cronjob(cj: dict, newest: tuple[str, str, dict] | None, now: datetime, grace_minutes: int,
                   findings: list[Finding]) -> dict | None:
    """One CronJob's findings (to `findings`) and its table row, None when it has no problem."""
    meta, spec, status = cj["metadata"], cj.get("spec") or {}, cj.get("status") or {}
    ns, name = meta.get("namespace") or "", meta["name"]
    resource = f"CronJob/{ns}/{name}"
    schedule = spec.get("schedule", "")
    last = status.get("lastScheduleTime") or ""
    active = len(status.get("active") or [])
    problems = []
    if spec.get("suspend"):
        problems.append("suspended")
        findings.append(Finding(id=f"cronjob-suspended/{ns}/{name}", severity="info",
                                title=f"CronJob {ns}/{name} is suspended", resource=resource,
                                detail=f"It does not run ({schedule}) until spec.suspend is false.",
                                evidence={"last_schedule": last}))
    else:
        base = kube.parse_time(last) or kube.parse_time(meta.get("creationTimestamp"))
        due = cron_next(schedule, base, spec.get("timeZone")) if base else None
        if due and due + timedelta(minutes=grace_minutes) < now:
            problems.append("missed schedule")
            findings.append(Finding(
                id=f"cronjob-missed-schedule/{ns}/{name}", severity="warning",
                title=f"CronJob {ns}/{name} has not run since {last or 'its creation'} "
                      f"(due {due:%Y-%m-%d %H:%M} UTC by '{schedule}')",
                detail="The CronJob controller did not start a Job when the schedule said: it may be "
                       "down, the startingDeadlineSeconds passed, or concurrencyPolicy Forbid waits "
                       "on a stuck Job.", resource=resource,
                evidence={"schedule": schedule, "last_schedule": last, "due": due.isoformat()}))
    if newest and newest[2]:
        problems.append("last Job failed")
        findings.append(Finding(
            id=f"cronjob-last-job-failed/{ns}/{name}", severity="warning",
            title=f"CronJob {ns}/{name}: its last Job {newest[1]} failed ({newest[2].get('reason', '')})",
            detail=newest[2].get("message", ""), resource=resource,
            evidence={"job": newest[1], "reason": newest[2].get("reason", "")}))
    if active > 1:
        problems.append(f"{active} active Jobs")
        findings.append(Finding(
            id=f"cronjob-too-many-active/{ns}/{name}", severity="warning",
            title=f"CronJob {ns}/{name} has {active} active Jobs",
            detail="Runs overlap: each takes longer than the schedule's interval, or they hang. "
                   "concurrencyPolicy Forbid or Replace stops the pile-up.", resource=resource,
            evidence={"active": [a.get("name") for a in status.get("active") or []][:10]}))
    if not problems:
        return None
    return {"kind": "CronJob", "namespace": ns, "name": name, "schedule": schedule,
            "last_schedule": last, "active": active, "problem": ", ".join(problems)}


@guarded("Jobs and CronJobs", BATCH_COLUMNS)
def batch(cluster: kube.Cluster, namespaces: list[str] | None = None) -> Check:
    """:func:`check_batch` over the cluster's Jobs and CronJobs, streamed."""
    jobs = kube.objects(cluster, "jobs", namespaces)
    cronjobs = kube.objects(cluster, "cronjobs", namespaces)
    return check_batch(cronjobs, jobs)
