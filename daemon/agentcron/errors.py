"""The one exception tree of agentcron.

Every error the project raises on purpose is an ``AgentcronError``; foreign exceptions
(aiosqlite, aiohttp, OSError) are translated once, at the boundary that meets them, with
``raise ... from exc``::

    AgentcronError
    ├── ApiError                  carries an HTTP status and the API's error type
    │   ├── InvalidRequest        400 invalid_request_error (names the field and the rule)
    │   │   └── ScheduleError     400, a bad cron expression or timezone
    │   ├── PermissionDenied      403 permission_error (SO_PEERCRED allow-list)
    │   ├── NotFound              404 not_found_error
    │   ├── Conflict              409 invalid_request_error (archived deployment, ...)
    │   ├── RequestTooLarge       413 request_too_large
    │   └── ServiceUnavailable    503 api_error (the journal cannot be written right now)
    ├── LaunchFailure             a session could not be created; carries a run error type
    ├── JournalError              the journal cannot be opened or used (too new, corrupt)
    └── ConfigError               the configuration is invalid; lists every problem
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentcronError(Exception):
    """Base of every error agentcron raises on purpose."""


class ApiError(AgentcronError):
    """An error the control API reports with ``status`` and ``error_type``."""

    status: int = 500
    error_type: str = "api_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ApiError):
    """400: the request is malformed or breaks a rule; the message names the field."""

    status = 400
    error_type = "invalid_request_error"


class ScheduleError(InvalidRequest):
    """400: a cron expression or timezone is invalid; the message names the field and rule."""


class PermissionDenied(ApiError):
    """403: the peer's uid/gid is not on the allow-list."""

    status = 403
    error_type = "permission_error"


class NotFound(ApiError):
    """404: the named object does not exist."""

    status = 404
    error_type = "not_found_error"


class Conflict(ApiError):
    """409: the request conflicts with the object's state (e.g. it is archived)."""

    status = 409
    error_type = "invalid_request_error"


class RequestTooLarge(ApiError):
    """413: the body is larger than ``max_request_bytes``."""

    status = 413
    error_type = "request_too_large"


class ServiceUnavailable(ApiError):
    """503: the daemon cannot serve this right now (for example the journal's disk is full)."""

    status = 503
    error_type = "api_error"


class LaunchFailure(AgentcronError):
    """A session could not be created.

    ``error_type`` is one of the run error types (``agentcron.core.models.RunErrorType``); the
    message is what the run records and must never contain a secret.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class JournalError(AgentcronError):
    """The journal cannot be opened or used (written by a newer version, corrupt, ...)."""


class ConfigError(AgentcronError):
    """The configuration is invalid. ``problems`` lists every problem, each naming its key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
