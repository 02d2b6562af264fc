"""Parameter models of runbooks whose job modules are expensive to import.

The CLI validates parameters before a kernel starts by loading the model that
the runbook's ``runbooks.runbooks`` entry point names (``pyproject.toml``), which
imports that model's module. Keeping a model here, with nothing heavier than
pydantic, saves the CLI importing pandas and the clients only to check a few
numbers and names.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .durations import parse_duration
from .errors import InvalidInput
from .parameters import MutatingParams, RunbookParams
from .secrets import check_transport

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ALERT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_:.-]*")
_INDEX = re.compile(r"[a-z0-9*][a-z0-9._*+-]*(,[a-z0-9*][a-z0-9._*+-]*)*")
_HTTP_URL = re.compile(r"https?://[^\s/?#@]+(:\d{1,5})?(/[^\s]*)?")
MAX_SILENCE_SECONDS = 30 * 86400
MAX_COMMENT = 1000


def check_url(value: str | None, what: str) -> str | None:
    """An http(s) URL of a data source, checked whole (no spaces, no credentials in it)."""
    if value is None:
        return value
    if not isinstance(value, str) or len(value) > 2048 or not _HTTP_URL.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not an http(s) URL without credentials "
                         "(e.g. http://127.0.0.1:9090; credentials come from environment variables)")
    return value


def check_regex(value: str, what: str) -> str:
    """A PromQL ``=~`` regex, compiled here so that a bad one exits 2 before a kernel starts."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{what} {value!r} is not a valid regular expression ({exc})") from None
    return value


def check_namespaces(value: list[str]) -> list[str]:
    """Namespace names as Kubernetes allows them (for pydantic validators: ValueError names the bad one)."""
    for ns in value:
        if not isinstance(ns, str) or len(ns) > 63 or not _NAMESPACE.fullmatch(ns):
            raise ValueError(f"namespace {ns!r} is not a valid namespace name (lowercase RFC 1123 "
                             "label: a-z, 0-9 and '-', at most 63 characters)")
    return value


class ClusterHealthParams(RunbookParams):
    """Parameters of notebooks/cluster-health.ipynb (checked before a kernel starts and in preflight)."""

    EXISTING_NAMESPACES = ("namespaces",)

    namespaces: list[str] = Field(default_factory=list)
    restart_threshold: int = Field(default=5, ge=1)
    pending_minutes: int = Field(default=10, ge=0)
    event_window_hours: int = Field(default=24, ge=1, le=24 * 30)
    cert_warning_days: int = Field(default=30, ge=0)
    cert_critical_days: int = Field(default=7, ge=0)
    production_namespaces: list[str] = Field(default_factory=list)
    quota_percent: int = Field(default=90, ge=1, le=100)
    prometheus_url: str | None = None
    verify_tls: bool = True
    volume_warning_percent: int = Field(default=85, ge=1, le=100)
    volume_critical_percent: int = Field(default=97, ge=1, le=100)

    @field_validator("namespaces", "production_namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        return check_namespaces(value)

    @model_validator(mode="after")
    def _critical_within_warning(self) -> ClusterHealthParams:
        if self.cert_critical_days > self.cert_warning_days:
            raise ValueError(f"cert_critical_days={self.cert_critical_days} must not exceed "
                             f"cert_warning_days={self.cert_warning_days}")
        if self.volume_critical_percent < self.volume_warning_percent:
            raise ValueError(f"volume_critical_percent={self.volume_critical_percent} must not be below "
                             f"volume_warning_percent={self.volume_warning_percent}")
        return self


class IncidentParams(MutatingParams):
    """Parameters of notebooks/incident-investigation.ipynb."""

    EXISTING_NAMESPACES = ("namespace",)

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
    silence_comment: str = Field(default="Investigating with the incident-investigation runbook",
                                 min_length=1, max_length=MAX_COMMENT)
    # how long verification waits for the rollback to roll out or the silence to suppress the alerts;
    # it changes what the run reports, not what is applied, so it is not part of the plan id
    verify_timeout_seconds: int = Field(default=120, ge=1, le=3600)

    @field_validator("namespace", "service")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63:
            raise ValueError(f"{value!r} is {len(value)} characters long; the limit is 63")
        if not _NAMESPACE.fullmatch(value or ""):
            raise ValueError(f"{value!r} is not a valid name (lowercase RFC 1123 label: a-z, 0-9, '-', "
                             "at most 63 characters)")
        return value

    @field_validator("prometheus_url", "alertmanager_url", "elasticsearch_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        return check_url(value, info.field_name)

    @field_validator("ingress")
    @classmethod
    def _ingress(cls, value: str) -> str:
        return check_regex(value, "ingress")

    @field_validator("log_index")
    @classmethod
    def _log_index(cls, value: str) -> str:
        if len(value) > 255 or not _INDEX.fullmatch(value):
            raise ValueError(f"log_index {value!r} is not an index pattern (lowercase index names or "
                             "wildcards, comma-separated, no spaces, e.g. logstash-*)")
        return value

    @field_validator("alert_name")
    @classmethod
    def _alert_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 128 or not _ALERT_NAME.fullmatch(value)):
            raise ValueError(f"alert_name {value!r} is not an alert name (letters, digits, '_', ':', '.' "
                             "and '-', starting with a letter or '_')")
        return value

    @field_validator("lookback", "silence_duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError(f"{value!r} must be a positive duration such as 30m, 6h or 2d")
        return value

    @field_validator("silence_duration")
    @classmethod
    def _silence_bound(cls, value: str) -> str:
        if parse_duration(value) > MAX_SILENCE_SECONDS:
            raise ValueError(f"silence_duration {value!r} is longer than 30d, the longest silence allowed")
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
    def _transport(self) -> IncidentParams:
        for url, source in ((self.prometheus_url, "Prometheus"), (self.alertmanager_url, "Alertmanager"),
                            (self.elasticsearch_url, "Elasticsearch")):
            check_transport(url, source)
        return self

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


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ENDPOINT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def check_host(value: str) -> str:
    """A DNS name an Ingress rule may hold (lowercase; ``*.`` wildcard allowed), or ``all``."""
    host = (value or "").strip().lower().rstrip(".")
    if host == "all":
        return host
    labels = host.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    if (not host or len(host) > 253 or len(labels) < 2
            or not all(_HOST_LABEL.match(label) for label in labels)):
        raise ValueError(f"host {value!r} is not a valid DNS name (labels of a-z, 0-9 and '-', at most 63 "
                         "characters each, 253 in all, at least two labels, e.g. checkout.shop.example.com) "
                         "nor 'all'")
    return host


def check_endpoint(value: str) -> str:
    """``host:port`` (or ``host``, ``[v6]:port``) of a DNS server."""
    if not _ENDPOINT.match(value or "") or (":" in value and not value.startswith("[")
                                            and not 0 < int(value.rsplit(":", 1)[1]) < 65536):
        raise ValueError(f"DNS server {value!r} is not host[:port] (e.g. 127.0.0.1:5353 or ns1.example.com)")
    return value


class ReachabilityParams(RunbookParams):
    """Parameters of notebooks/service-reachability.ipynb (read-only: no dry_run)."""

    host: str
    path: str = "/"
    dns_resolver: str | None = None
    dns_providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    ingress_url: str | None = None
    ingress_ca_file: str | None = None
    prometheus_url: str | None = None
    elasticsearch_url: str | None = None
    log_index: str = "logstash-*"
    log_lookback: str = "15m"
    verify_tls: bool = True
    ingress_controller: str = "ingress-nginx/ingress-nginx-controller"
    max_5xx_ratio: float = Field(default=0.05, ge=0, le=1)
    max_p99_seconds: float = Field(default=2.0, gt=0)
    probe_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    concurrency: int = Field(default=16, ge=1, le=256)
    event_window_hours: int = Field(default=1, ge=1, le=24 * 7)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value) or "#" in value \
                or "?" in value or len(value) > 2048:
            raise ValueError(f"path {value!r} is not a URL path (starts with '/', no spaces, '?' or '#', "
                             "e.g. /api)")
        return value

    @field_validator("dns_resolver")
    @classmethod
    def _resolver(cls, value: str | None) -> str | None:
        if not value:
            return None
        return value if value == "system" else check_endpoint(value)

    @field_validator("log_lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        if parse_duration(value) > 7 * 24 * 3600:
            raise ValueError(f"log_lookback {value!r} is longer than 7d")
        return value

    @field_validator("dns_providers")
    @classmethod
    def _providers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from . import dns  # dnspython: only when providers are configured

        for name, settings in value.items():
            dns.provider(name, settings)  # dns-audit's settings, checked the same way (InvalidInput names it)
        return value

    @field_validator("ingress_controller")
    @classmethod
    def _controller(cls, value: str) -> str:
        ns, _, name = value.partition("/")
        if value and not (_NAMESPACE.fullmatch(ns) and _NAMESPACE.fullmatch(name)):
            raise ValueError(f"{value!r} is not namespace/name of a Deployment")
        return value
