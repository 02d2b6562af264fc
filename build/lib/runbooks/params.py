"""Parameter models of runbooks whose job modules are expensive to import.

The CLI validates parameters before a kernel starts by importing the module
that registers a runbook's model (parameters.PARAM_MODULES). Keeping a model
here, with nothing heavier than pydantic, saves the CLI importing pandas and
the clients only to check a few numbers and names.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .durations import parse_duration
from .errors import InvalidInput
from .parameters import MutatingParams, RunbookParams, register

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def check_namespaces(value: list[str]) -> list[str]:
    """Namespace names as Kubernetes allows them (for pydantic validators: ValueError names the bad one)."""
    for ns in value:
        if not isinstance(ns, str) or len(ns) > 63 or not _NAMESPACE.match(ns):
            raise ValueError(f"namespace {ns!r} is not a valid namespace name (lowercase RFC 1123 "
                             "label: a-z, 0-9 and '-', at most 63 characters)")
    return value


@register("cluster-health")
class ClusterHealthParams(RunbookParams):
    """Parameters of notebooks/cluster-health.ipynb (checked before a kernel starts and in preflight)."""

    namespaces: list[str] = Field(default_factory=list)
    restart_threshold: int = Field(default=5, ge=1)
    pending_minutes: int = Field(default=10, ge=0)
    event_window_hours: int = Field(default=24, ge=1, le=24 * 30)
    cert_warning_days: int = Field(default=30, ge=0)
    cert_critical_days: int = Field(default=7, ge=0)

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        return check_namespaces(value)

    @model_validator(mode="after")
    def _critical_within_warning(self) -> ClusterHealthParams:
        if self.cert_critical_days > self.cert_warning_days:
            raise ValueError(f"cert_critical_days={self.cert_critical_days} must not exceed "
                             f"cert_warning_days={self.cert_warning_days}")
        return self


@register("incident-investigation")
class IncidentParams(MutatingParams):
    """Parameters of notebooks/incident-investigation.ipynb."""

    namespace: str = "shop"
    service: str = "checkout"
    lookback: str = "6h"
    start: str | None = None
    end: str | None = None
    alert_name: str | None = None
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    elasticsearch_url: str | None = None
    log_index: str = "logstash-*"
    verify_tls: bool = True
    ingress: str = ".+"
    queries: dict[str, str] = Field(default_factory=dict)
    rollout_window_minutes: int = Field(default=30, ge=1, le=24 * 60)
    mitigation: Literal["none", "rollback", "silence"] = "none"
    rollback_to_revision: int | None = Field(default=None, ge=1)
    silence_duration: str = "2h"
    silence_comment: str = "Investigating with the incident-investigation runbook"

    @field_validator("namespace", "service")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAMESPACE.match(value or "") or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid name (lowercase RFC 1123 label: a-z, 0-9, '-')")
        return value

    @field_validator("lookback", "silence_duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"{value!r} must be a positive duration such as 30m, 6h or 2d")
        return value

    @field_validator("queries")
    @classmethod
    def _known_queries(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            return value
        from .metrics import DEFAULT_QUERIES  # only when overrides are given: it imports pandas

        unknown = sorted(set(value) - set(DEFAULT_QUERIES))
        if unknown:
            raise ValueError(f"unknown query names {unknown}; known: {', '.join(sorted(DEFAULT_QUERIES))}")
        return value

    @model_validator(mode="after")
    def _window(self) -> IncidentParams:
        resolve_window(self, datetime.now(UTC))  # raises on a bad start/end
        return self


def resolve_window(params: IncidentParams, now: datetime) -> tuple[datetime, datetime]:
    """The investigated window: `start`..`end` when given, else the last `lookback` up to now."""
    def parse(text: str, what: str) -> datetime:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what}={text!r} is not an ISO 8601 time (e.g. 2026-01-31T14:00:00Z)") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    end = parse(params.end, "end") if params.end else now
    start = parse(params.start, "start") if params.start else end - timedelta(
        seconds=parse_duration(params.lookback))
    if start >= end:
        raise InvalidInput(f"start {start.isoformat()} must be before end {end.isoformat()}")
    if end - start > timedelta(days=31):
        raise InvalidInput(f"the window {start.isoformat()}..{end.isoformat()} is longer than 31 days")
    return start, end
