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
    │   ├── MethodNotAllowed      405 invalid_request_error (a route without that method)
    │   ├── Conflict              409 invalid_request_error (archived deployment, ...)
    │   ├── RequestTooLarge       413 request_too_large
    │   └── ServiceUnavailable    503 api_error (the journal cannot be written right now)
    ├── LaunchFailure             a session could not be created; carries a RunErrorType
    ├── JournalError              the journal cannot be opened or used (too new, corrupt)
    ├── ConfigError               the configuration is invalid; lists every problem
    └── StartupError              the daemon cannot start (state directory locked, ...)

``api_error_class(status)`` and ``API_ERROR_TYPES`` derive the status -> error maps the server
and the client use from this tree, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentcron.core.models import RunErrorType


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


class MethodNotAllowed(ApiError):
    """405: the route exists but not with this method."""

    status = 405
    error_type = "invalid_request_error"


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

    ``error_type`` is the run error type the run records; the message is what the run records
    and must never contain a secret.
    """

    def __init__(self, error_type: RunErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = RunErrorType(error_type)
        self.message = message


class JournalError(AgentcronError):
    """The journal cannot be opened or used (written by a newer version, corrupt, ...)."""


class ConfigError(AgentcronError):
    """The configuration is invalid. ``problems`` lists every problem, each naming its key."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class StartupError(AgentcronError):
    """The daemon cannot start: the message says why and what to do."""


def _api_error_classes() -> dict[int, type[ApiError]]:
    """The most general ``ApiError`` subclass of each status (``InvalidRequest``, not
    ``ScheduleError``), walking the tree breadth first."""
    found: dict[int, type[ApiError]] = {}
    level: list[type[ApiError]] = [ApiError]
    while level:
        below: list[type[ApiError]] = []
        for cls in level:
            found.setdefault(cls.status, cls)
            below.extend(cls.__subclasses__())
        level = below
    del found[ApiError.status]  # 500 has no class of its own: ApiError itself
    return found


_API_ERROR_CLASSES = _api_error_classes()
API_ERROR_TYPES: dict[int, str] = {
    status: cls.error_type for status, cls in _API_ERROR_CLASSES.items()
}
"""The API's error type for each status the tree defines (500 and unknown 5xx: ``api_error``)."""


def api_error_class(status: int) -> type[ApiError]:
    """The ``ApiError`` class an error response of ``status`` stands for (``ApiError`` if none)."""
    return _API_ERROR_CLASSES.get(status, ApiError)
