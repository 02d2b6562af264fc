"""One root error and a subclass per meaning.

Callers catch :class:`RunbookError` to handle anything this package raises,
or a subclass when the meaning matters: a missing object is not a conflict,
and an unreachable data source is retriable where invalid input is not.
Messages name the bad value and what is allowed; response bodies are cut so
that no secret reaches a log.
"""

from __future__ import annotations

MAX_BODY = 300


def cut(text: str | bytes | None, limit: int = MAX_BODY) -> str:
    """Shorten a server response for an error message (never the whole body)."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class RunbookError(Exception):
    """Root of every error this package raises."""


class InvalidInput(RunbookError, ValueError):
    """A parameter, file or configuration value is not acceptable (exit code 2)."""


class NotFound(RunbookError, LookupError):
    """The object or data source asked for does not exist."""


class Conflict(RunbookError):
    """The object changed or exists already (HTTP 409); re-read and retry."""


class Unavailable(RunbookError):
    """A data source or API server cannot be reached now; retrying may help."""


class Forbidden(RunbookError):
    """Credentials were refused (HTTP 401/403); retrying will not help."""


def request_failed(service: str, url: str, exc: Exception) -> Unavailable:
    """The error for an HTTP request to a data source that got no answer: TLS or the connection."""
    from requests.exceptions import SSLError

    if isinstance(exc, SSLError):
        return Unavailable(f"TLS verification of {service} at {url} failed: {cut(str(exc))}")
    return Unavailable(f"{service} at {url} is unreachable: {cut(str(exc))}")
