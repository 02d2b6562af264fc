"""Alertmanager (API v2): alerts by label matchers, and silences (list, build, create, expire).

Reading is direct: :func:`alerts` (a DataFrame) or :func:`alert_dicts` (plain
dicts), :func:`silences`. Changing goes through the runbook's plan/approve flow:
:func:`plan_silence` / :func:`plan_expire` return plain-data plan entries
(operation, kind ``Silence``, name, diff, body, precondition) whose identity does
not depend on the clock, and :func:`apply_entry` performs one when approved.
:func:`create_silence` and :func:`expire_silence` are the underlying calls.

Matchers can be given as a dict (``{"alertname": "KubePodCrashLooping"}``, equality),
as Alertmanager matcher text (``'namespace="shop"'``, ``'pod=~"checkout-.*"'``,
``'severity!="info"'``, also several in one string: ``'{a="b", c=~"d"}'``) or as API
matcher objects (``{"name", "value", "isRegex", "isEqual"}``).

TLS is verified by default; credentials only come from the environment:
``$ALERTMANAGER_TOKEN`` (bearer) or ``$ALERTMANAGER_USERNAME`` / ``$ALERTMANAGER_PASSWORD``.
Errors: :class:`~runbooks.errors.Unavailable` (unreachable), :class:`~runbooks.errors.InvalidInput`
(a request Alertmanager rejects, with its message), :class:`~runbooks.errors.NotFound`
(unknown silence), :class:`~runbooks.errors.Forbidden` (credentials refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from .durations import parse_duration
from .errors import Forbidden, InvalidInput, NotFound, Unavailable, cut, request_failed
from .secrets import check_transport

MAX_SILENCE = timedelta(days=30)
ALERT_COLUMNS = ["alertname", "state", "severity", "namespace", "startsAt", "endsAt", "summary", "description",
                 "labels", "annotations", "fingerprint", "silencedBy", "inhibitedBy", "receivers", "generatorURL"]
SILENCE_COLUMNS = ["id", "state", "matchers", "startsAt", "endsAt", "createdBy", "comment", "updatedAt"]

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


# ---- connection --------------------------------------------------------------------


@dataclass
class Client:
    """An Alertmanager base URL with a configured requests session."""

    url: str
    session: Any
    timeout: float = 15.0

    def request(self, method: str, path: str, *, params: Any = None, body: Any = None,
                not_found: str | None = None) -> Any:
        import requests

        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"  # Alertmanager answers 415 without it
            data = json.dumps(body)
        try:
            resp = self.session.request(method, f"{self.url}{path}", params=params, data=data, headers=headers,
                                        timeout=self.timeout)
        except requests.exceptions.RequestException as exc:
            raise request_failed("Alertmanager", self.url, exc) from None
        if resp.status_code in (401, 403):
            raise Forbidden(f"Alertmanager at {self.url} refused the credentials (HTTP {resp.status_code})")
        message = _message(resp.text)
        if resp.status_code == 404 or (not_found and "not found" in message.lower()):
            raise NotFound(not_found or f"Alertmanager has no {path}")
        if resp.status_code in (400, 415, 422):
            raise InvalidInput(f"Alertmanager rejected {method} {path}: {message}")
        if resp.status_code >= 300:
            raise Unavailable(f"Alertmanager at {self.url} answered HTTP {resp.status_code} to {method} {path}: "
                              f"{message}")
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise Unavailable(f"{self.url} answered {method} {path} with something else than JSON: "
                              f"{cut(resp.text)}") from None


def _message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return cut(text)
    if isinstance(data, dict):
        return cut(str(data.get("message") or data.get("error") or data))
    return cut(str(data))


def connect(url: str, *, verify: bool | str = True, timeout: float = 15.0,
            token_env: str = "ALERTMANAGER_TOKEN", username_env: str = "ALERTMANAGER_USERNAME",
            password_env: str = "ALERTMANAGER_PASSWORD") -> Client:
    """A client for the Alertmanager at `url` (TLS verified unless `verify` is False or a CA path)."""
    import requests

    if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
        raise InvalidInput(f"Alertmanager URL {url!r} is not an http(s) URL (e.g. http://127.0.0.1:9093)")
    check_transport(url, "Alertmanager")
    session = requests.Session()
    session.verify = verify
    token = os.environ.get(token_env)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif os.environ.get(username_env):
        session.auth = (os.environ[username_env], os.environ.get(password_env, ""))
    return Client(url.rstrip("/"), session, timeout)


def _client(am: str | Client) -> Client:
    return connect(am) if isinstance(am, str) else am


def check(am: str | Client) -> dict[str, Any]:
    """Preflight: Alertmanager answers its v2 API. Returns url, version and cluster status."""
    c = _client(am)
    data = c.request("GET", "/api/v2/status")
    if not isinstance(data, dict) or "versionInfo" not in data:
        raise Unavailable(f"{c.url} does not look like Alertmanager (no versionInfo in /api/v2/status)")
    return {"ok": True, "url": c.url, "version": data["versionInfo"].get("version", ""),
            "cluster": (data.get("cluster") or {}).get("status", "")}


# ---- matchers ----------------------------------------------------------------------


def parse_matchers(matchers: Any) -> list[dict[str, Any]]:
    """Matchers in any accepted form -> API matcher objects (validated)."""
    if matchers is None:
        return []
    out: list[dict[str, Any]] = []
    if isinstance(matchers, str):
        text = matchers.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        pos = 0
        while pos < len(text):
            m = _MATCHER.match(text, pos)
            if not m:
                raise InvalidInput(f"cannot read a matcher at {text[pos:]!r}; write name=\"value\", "
                                   'name=~"regex", name!="value" or name!~"regex"')
            name, op, value = m.group(1), m.group(2), m.group(3)
            value = re.sub(r"\\(.)", r"\1", value)
            out.append({"name": name, "value": value, "isRegex": "~" in op, "isEqual": not op.startswith("!")})
            pos = m.end()
            if pos < len(text):
                if text[pos] != ",":
                    raise InvalidInput(f"matchers must be separated by commas: {matchers!r}")
                pos += 1
    elif isinstance(matchers, Mapping):
        if {"name", "value"} <= set(matchers):
            out.append(_api_matcher(matchers))
        else:
            for name, value in matchers.items():
                out.append({"name": str(name), "value": str(value), "isRegex": False, "isEqual": True})
    elif isinstance(matchers, Iterable):
        for m in matchers:
            out.extend(parse_matchers(m))
    else:
        raise InvalidInput(f"matchers must be a dict, matcher text or a list of them, not {type(matchers).__name__}")
    for m in out:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", m["name"]):
            raise InvalidInput(f"{m['name']!r} is not a label name")
        if m["isRegex"]:
            try:
                re.compile(m["value"])
            except re.error as exc:
                raise InvalidInput(f"matcher {matcher_text(m)} has a bad regex: {exc}") from None
    return out


def _api_matcher(m: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": str(m["name"]), "value": str(m["value"]), "isRegex": bool(m.get("isRegex", False)),
            "isEqual": bool(m.get("isEqual", True))}


def matcher_text(m: Mapping[str, Any]) -> str:
    """An API matcher as Alertmanager text (``name=~"value"``)."""
    op = ("=" if m.get("isEqual", True) else "!") + ("~" if m.get("isRegex") else "")
    if op == "!":
        op = "!="
    value = str(m["value"]).replace("\\", "\\\\").replace('"', '\\"')
    return f'{m["name"]}{op}"{value}"'


def _matches(m: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    value = labels.get(m["name"], "")
    hit = re.fullmatch(m["value"], value) is not None if m["isRegex"] else value == m["value"]
    return hit if m["isEqual"] else not hit


# ---- alerts ------------------------------------------------------------------------


def _ts(value: str | None) -> pd.Timestamp | None:
    if not value or value.startswith("0001-"):
        return None
    return pd.Timestamp(value).tz_convert("UTC")


def alert_dicts(am: str | Client, matchers: Any = None, *, active: bool = True, silenced: bool = True,
                inhibited: bool = True, unprocessed: bool = True, receiver: str | None = None) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds that match all `matchers`, as plain dicts.

    Each: alertname, state (active | suppressed | unprocessed), severity, namespace,
    startsAt, endsAt (pandas Timestamps), summary, description, labels, annotations,
    fingerprint, silencedBy, inhibitedBy, receivers, generatorURL.
    """
    c = _client(am)
    ms = parse_matchers(matchers)
    params: list[tuple[str, str]] = [("active", _b(active)), ("silenced", _b(silenced)),
                                     ("inhibited", _b(inhibited)), ("unprocessed", _b(unprocessed))]
    params += [("filter", matcher_text(m)) for m in ms]
    if receiver:
        params.append(("receiver", receiver))
    raw = c.request("GET", "/api/v2/alerts", params=params) or []
    out = []
    for a in raw:
        labels = a.get("labels") or {}
        if not all(_matches(m, labels) for m in ms):  # the server filters too; be sure
            continue
        ann = a.get("annotations") or {}
        status = a.get("status") or {}
        out.append({
            "alertname": labels.get("alertname", ""), "state": status.get("state", ""),
            "severity": labels.get("severity", ""), "namespace": labels.get("namespace", ""),
            "startsAt": _ts(a.get("startsAt")), "endsAt": _ts(a.get("endsAt")),
            "summary": ann.get("summary", ""), "description": ann.get("description", ""),
            "labels": dict(labels), "annotations": dict(ann), "fingerprint": a.get("fingerprint", ""),
            "silencedBy": list(status.get("silencedBy") or []), "inhibitedBy": list(status.get("inhibitedBy") or []),
            "receivers": [r.get("name") for r in a.get("receivers") or []], "generatorURL": a.get("generatorURL", ""),
        })
    out.sort(key=lambda d: (d["state"] != "active", d["alertname"], sorted(d["labels"].items())))
    return out


def alerts(am: str | Client, matchers: Any = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`alert_dicts` as a DataFrame (columns :data:`ALERT_COLUMNS`)."""
    return pd.DataFrame(alert_dicts(am, matchers, **kwargs), columns=ALERT_COLUMNS)


def _b(v: bool) -> str:
    return "true" if v else "false"


# ---- silences ----------------------------------------------------------------------


def _silence_row(s: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": s.get("id", ""), "state": (s.get("status") or {}).get("state", ""),
            "matchers": ", ".join(matcher_text(m) for m in s.get("matchers") or []),
            "startsAt": _ts(s.get("startsAt")), "endsAt": _ts(s.get("endsAt")),
            "createdBy": s.get("createdBy", ""), "comment": s.get("comment", ""), "updatedAt": _ts(s.get("updatedAt"))}


def silence_dicts(am: str | Client, matchers: Any = None, *, state: str | Iterable[str] | None = None) -> list[dict]:
    """Silences, as plain dicts; `matchers` keeps those with all these matchers; `state`
    keeps active, pending and/or expired ones."""
    c = _client(am)
    ms = parse_matchers(matchers)
    wanted = {state} if isinstance(state, str) else set(state or [])
    rows = []
    for s in c.request("GET", "/api/v2/silences") or []:
        have = {matcher_text(m) for m in s.get("matchers") or []}
        if ms and not {matcher_text(m) for m in ms} <= have:
            continue
        row = _silence_row(s)
        if wanted and row["state"] not in wanted:
            continue
        rows.append(row)
    order = {"active": 0, "pending": 1, "expired": 2}
    rows.sort(key=lambda r: (order.get(r["state"], 3), r["endsAt"] or pd.Timestamp.min.tz_localize("UTC")))
    return rows


def silences(am: str | Client, matchers: Any = None, *, state: str | Iterable[str] | None = None) -> pd.DataFrame:
    """:func:`silence_dicts` as a DataFrame (columns :data:`SILENCE_COLUMNS`)."""
    return pd.DataFrame(silence_dicts(am, matchers, state=state), columns=SILENCE_COLUMNS)


def get_silence(am: str | Client, silence_id: str) -> dict[str, Any]:
    """One silence (raw API object); NotFound if Alertmanager does not know it."""
    if not isinstance(silence_id, str) or not _UUID.fullmatch(silence_id):
        raise InvalidInput(f"{silence_id!r} is not a silence id (a UUID)")
    return _client(am).request("GET", f"/api/v2/silence/{silence_id}",
                               not_found=f"Alertmanager has no silence {silence_id}")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def build_silence(matchers: Any, duration: Any, comment: str, created_by: str, *,
                  starts_at: datetime | None = None, max_duration: timedelta = MAX_SILENCE) -> dict[str, Any]:
    """The API body of a silence: `matchers` for `duration` (e.g. "2h") from `starts_at` (default now).

    Needs at least one matcher, a comment saying why and who creates it; the duration
    must be positive and at most `max_duration` (30 days).
    """
    ms = parse_matchers(matchers)
    if not ms:
        raise InvalidInput("a silence needs at least one matcher (it would silence everything)")
    if all(m["isRegex"] and m["value"] in (".*", ".+", "") for m in ms):
        raise InvalidInput("a silence whose matchers match every alert is refused; name the alert")
    d = timedelta(seconds=parse_duration(duration, "silence duration"))
    if d <= timedelta(0) or d > max_duration:
        limit = f"{max_duration.days}d" if max_duration.seconds == 0 else f"{int(max_duration.total_seconds())}s"
        raise InvalidInput(f"silence duration {duration!r} must be positive and at most {limit}")
    if not isinstance(comment, str) or not comment.strip():
        raise InvalidInput("a silence needs a comment saying why")
    if not isinstance(created_by, str) or not created_by.strip():
        raise InvalidInput("a silence needs created_by (who creates it)")
    start = (starts_at or datetime.now(UTC)).astimezone(UTC)
    return {"matchers": ms, "startsAt": _iso(start), "endsAt": _iso(start + d), "createdBy": created_by.strip(),
            "comment": comment.strip()}


def create_silence(am: str | Client, silence: Mapping[str, Any]) -> str:
    """Create `silence` (see :func:`build_silence`); returns its id."""
    body = {k: silence[k] for k in ("matchers", "startsAt", "endsAt", "createdBy", "comment") if k in silence}
    if "id" in silence:  # Alertmanager would update that silence instead
        body["id"] = silence["id"]
    data = _client(am).request("POST", "/api/v2/silences", body=body)
    return str((data or {}).get("silenceID", ""))


def expire_silence(am: str | Client, silence_id: str) -> bool:
    """Expire a silence. Returns False if it had expired already (idempotent); NotFound if unknown.

    (Alertmanager answers 500, not 404, when deleting an unknown silence: it is looked up first.)
    """
    c = _client(am)
    current = get_silence(c, silence_id)
    if (current.get("status") or {}).get("state") == "expired":
        return False
    c.request("DELETE", f"/api/v2/silence/{silence_id}", not_found=f"Alertmanager has no silence {silence_id}")
    return True


# ---- plan / apply ------------------------------------------------------------------


def _canonical_matchers(ms: list[dict[str, Any]]) -> list[str]:
    return sorted(matcher_text(m) for m in ms)


def silence_plan_entry(matchers: Any, duration: Any, comment: str, created_by: str) -> dict[str, Any]:
    """A plan entry (plain data) for creating a silence, independent of the clock.

    Shape: ``{"operation": "create", "kind": "Silence", "namespace": None, "name":
    "silence-<hash>", "diff": [...], "body": {...}, "precondition": {...}}``; the body
    holds the duration, not absolute times, which :func:`apply_entry` sets when applied.
    """
    probe = build_silence(matchers, duration, comment, created_by)  # validates everything
    ms = probe["matchers"]
    seconds = int(parse_duration(duration, "silence duration"))
    canon = {"matchers": _canonical_matchers(ms), "duration_seconds": seconds, "comment": probe["comment"],
             "createdBy": probe["createdBy"]}
    digest = hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:12]
    return {
        "operation": "create", "kind": "Silence", "namespace": None, "name": f"silence-{digest}",
        "diff": [{"path": "matchers", "from": None, "to": ", ".join(canon["matchers"])},
                 {"path": "duration", "from": None, "to": _human(seconds)},
                 {"path": "comment", "from": None, "to": probe["comment"]},
                 {"path": "createdBy", "from": None, "to": probe["createdBy"]}],
        "body": {"matchers": ms, "duration_seconds": seconds, "comment": probe["comment"],
                 "createdBy": probe["createdBy"]},
        "precondition": {"equivalent_silence": None},
    }


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _equivalent(am: str | Client, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """An active or pending silence with the same matchers, comment and author as `entry`."""
    body = entry["body"]
    want = _canonical_matchers(body["matchers"])
    for s in _client(am).request("GET", "/api/v2/silences") or []:
        if (s.get("status") or {}).get("state") not in ("active", "pending"):
            continue
        if (_canonical_matchers(s.get("matchers") or []) == want and s.get("comment") == body["comment"]
                and s.get("createdBy") == body["createdBy"]):
            return s
    return None


def plan_silence(am: str | Client, matchers: Any, duration: Any, comment: str, created_by: str) -> list[dict]:
    """Plan entries to silence `matchers`: one create, or none if an equivalent silence is active."""
    entry = silence_plan_entry(matchers, duration, comment, created_by)
    return [] if _equivalent(am, entry) else [entry]


def plan_expire(am: str | Client, silence_id: str) -> list[dict]:
    """Plan entries to expire a silence: one delete, or none if it has expired already."""
    s = get_silence(am, silence_id)
    state = (s.get("status") or {}).get("state")
    if state == "expired":
        return []
    matchers = ", ".join(matcher_text(m) for m in s.get("matchers") or [])
    return [{"operation": "delete", "kind": "Silence", "namespace": None, "name": silence_id,
             "diff": [{"path": "status.state", "from": state, "to": "expired"}], "body": None,
             "precondition": {"state": state, "matchers": matchers, "endsAt": s.get("endsAt")}}]


def apply_entry(am: str | Client, entry: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """Perform one plan entry (idempotently). Returns ``{"id", "result"}`` with result
    ``created``, ``exists`` (an equivalent silence was active), ``expired`` or ``already expired``."""
    if entry.get("kind") != "Silence":
        raise InvalidInput(f"not a silence plan entry: kind {entry.get('kind')!r}")
    c = _client(am)
    if entry.get("operation") == "create":
        existing = _equivalent(c, entry)
        if existing:
            return {"id": existing["id"], "result": "exists"}
        body = entry["body"]
        silence = build_silence(body["matchers"], body["duration_seconds"], body["comment"], body["createdBy"],
                                starts_at=now)
        return {"id": create_silence(c, silence), "result": "created"}
    if entry.get("operation") == "delete":
        changed = expire_silence(c, entry["name"])
        return {"id": entry["name"], "result": "expired" if changed else "already expired"}
    raise InvalidInput(f"unknown silence operation {entry.get('operation')!r} (create or delete)")
