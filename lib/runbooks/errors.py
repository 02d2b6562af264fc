"""One root error and a subclass per meaning, each carrying its exit code.

Callers catch :class:`RunbookError` to handle anything this package raises,
or a subclass when the meaning matters: a missing object is not a conflict,
and an unreachable data source is retriable where invalid input is not.
Messages name the bad value and what is allowed; response bodies are cut so
that no secret reaches a log.

The exit code of a run that an error ends is the error's ``exit_code``
(DESIGN.md: 2 bad input, configuration or approval with nothing changed; 3 a
failure while running). The kernel records it when the error ends a cell, so
``runbooks run`` never guesses it from a class name.
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


EXIT_OK, EXIT_FINDINGS, EXIT_INVALID, EXIT_FAILED = 0, 1, 2, 3
"""The exit codes of `runbooks run` (DESIGN.md, README)."""


class RunbookError(Exception):
    """Root of every error this package raises; a run it ends exits 3."""

    exit_code = EXIT_FAILED


class InvalidInput(RunbookError, ValueError):
    """A parameter, file or configuration value is not acceptable (exit code 2)."""

    exit_code = EXIT_INVALID


class PreflightFailed(InvalidInput):
    """Parameters, connection or context guard failed before the runbook did anything."""


class ContextMismatch(InvalidInput):
    """The active kube context is not the one the environment expects."""


class PlanInvalid(InvalidInput):
    """A plan could not be built or failed its server-side dry run; nothing was changed."""


class PlanMismatch(InvalidInput):
    """The approved plan id differs from the plan computed now; nothing was applied."""


class ApplyConflict(PlanMismatch):
    """An object changed between the recomputed plan and its write (HTTP 409); the apply stopped there."""


class ApprovalRefused(InvalidInput):
    """An approval was given where applying is not allowed; nothing was applied."""


class ApplyFailed(RunbookError):
    """A change was refused by the API server while applying (see audit.jsonl)."""


class NotFound(RunbookError, LookupError):
    """The object or data source asked for does not exist."""


class Conflict(RunbookError):
    """The object changed or exists already (HTTP 409); re-read and retry."""


class Unavailable(RunbookError):
    """A data source or API server cannot be reached now; retrying may help."""


class Forbidden(RunbookError):
    """Credentials were refused (HTTP 401/403); retrying will not help."""


SOURCE_ERRORS: tuple[type[Exception], ...] = (Unavailable, Forbidden, NotFound, OSError)
"""What degrades a data source (connection, HTTP and authentication failures): anything
else raised while reading one is a bug and fails the run."""


def request_failed(service: str, url: str, exc: Exception) -> Unavailable:
    """The error for an HTTP request to a data source that got no answer: TLS or the connection."""
    from requests.exceptions import SSLError

    if isinstance(exc, SSLError):
        return Unavailable(f"TLS verification of {service} at {url} failed: {cut(str(exc))}")
    return Unavailable(f"{service} at {url} is unreachable: {cut(str(exc))}")
