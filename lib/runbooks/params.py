"""Parameter models of runbooks whose job modules are expensive to import.

The CLI validates parameters before a kernel starts by importing the module
that registers a runbook's model (runbook.PARAM_MODULES). Keeping a model
here, with nothing heavier than pydantic, saves the CLI importing pandas and
the clients only to check a few numbers and names.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .runbook import RunbookParams, register

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
        for ns in value:
            if not isinstance(ns, str) or len(ns) > 63 or not _NAMESPACE.match(ns):
                raise ValueError(f"namespace {ns!r} is not a valid namespace name (lowercase RFC 1123 "
                                 "label: a-z, 0-9 and '-', at most 63 characters)")
        return value

    @model_validator(mode="after")
    def _critical_within_warning(self) -> ClusterHealthParams:
        if self.cert_critical_days > self.cert_warning_days:
            raise ValueError(f"cert_critical_days={self.cert_critical_days} must not exceed "
                             f"cert_warning_days={self.cert_warning_days}")
        return self
