"""Parsing what a request carries: query parameters and JSON bodies (pure, except reading).

Every failure is an ``InvalidRequest`` whose message names the parameter and the rule, or a
``RequestTooLarge``. Query names arrive percent-encoded (``created_at%5Bgte%5D``); the URL
parser decodes them before they reach this module. Unknown query parameters are ignored (the
hosted API does the same, and the SDK's ``extra_query`` may add some); a known parameter given
twice is an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from agentcron.core.pagination import DEFAULT_LIMIT, DEPLOYMENTS_MAX_LIMIT, RUNS_MAX_LIMIT
from agentcron.core.timeutil import parse_ts
from agentcron.core.validation_shapes import json_kind
from agentcron.errors import InvalidRequest, RequestTooLarge

MAX_JSON_DEPTH = 64
_READ_CHUNK = 64 * 1024
_DIGITS = re.compile(r"^[0-9]{1,9}$")
# A "+hh:mm" offset sent unencoded in a query string arrives as " hh:mm": put the "+" back.
_SPACE_OFFSET = re.compile(r"^(.*\d) (\d\d:?\d\d)$")


class MultiQuery(Protocol):
    """The part of aiohttp's query ``MultiDict`` this module reads."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentListQuery:
    """The filters of ``GET /v1/deployments``."""

    agent_id: str | None = None
    status: str | None = None
    include_archived: bool = False
    created_at_gte: datetime | None = None
    created_at_lte: datetime | None = None
    limit: int = DEFAULT_LIMIT
    page: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunListQuery:
    """The filters of ``GET /v1/deployment_runs``."""

    deployment_id: str | None = None
    has_error: bool | None = None
    trigger_type: str | None = None
    created_at_gt: datetime | None = None
    created_at_gte: datetime | None = None
    created_at_lt: datetime | None = None
    created_at_lte: datetime | None = None
    limit: int = DEFAULT_LIMIT
    page: str | None = None


def parse_deployment_list_query(query: MultiQuery) -> DeploymentListQuery:
    """Parse and check the query of ``GET /v1/deployments``."""
    status = _text(query, "status")
    include_archived = _bool(query, "include_archived")
    if status is not None and status not in ("active", "paused"):
        raise InvalidRequest(f"status: must be 'active' or 'paused', got {status!r}")
    if status is not None and include_archived is not None:
        raise InvalidRequest(
            "include_archived: cannot be combined with status (archived deployments have no "
            "status filter); send one of them"
        )
    return DeploymentListQuery(
        agent_id=_text(query, "agent_id"),
        status=status,
        include_archived=bool(include_archived),
        created_at_gte=_timestamp(query, "created_at[gte]"),
        created_at_lte=_timestamp(query, "created_at[lte]"),
        limit=_limit(query, DEPLOYMENTS_MAX_LIMIT),
        page=_page(query),
    )


def parse_run_list_query(query: MultiQuery) -> RunListQuery:
    """Parse and check the query of ``GET /v1/deployment_runs``."""
    trigger_type = _text(query, "trigger_type")
    if trigger_type is not None and trigger_type not in ("schedule", "manual"):
        raise InvalidRequest(f"trigger_type: must be 'schedule' or 'manual', got {trigger_type!r}")
    return RunListQuery(
        deployment_id=_text(query, "deployment_id"),
        has_error=_bool(query, "has_error"),
        trigger_type=trigger_type,
        created_at_gt=_timestamp(query, "created_at[gt]"),
        created_at_gte=_timestamp(query, "created_at[gte]"),
        created_at_lt=_timestamp(query, "created_at[lt]"),
        created_at_lte=_timestamp(query, "created_at[lte]"),
        limit=_limit(query, RUNS_MAX_LIMIT),
        page=_page(query),
    )


class BodyStream(Protocol):
    """The part of aiohttp's request ``StreamReader`` this module reads."""

    async def read(self, n: int = -1) -> bytes: ...


async def read_body(stream: BodyStream, content_length: int | None, max_bytes: int) -> bytes:
    """Read a request body, refusing (413) one larger than ``max_bytes`` before buffering it."""
    if content_length is not None and content_length > max_bytes:
        raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"request body is larger than max_request_bytes ({max_bytes} bytes); send a smaller body"
    )


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidRequest(
            f"request body is nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an integer with too many digits
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {json_kind(value)}")
    _check_structure(value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_structure(value: dict[str, Any]) -> None:
    """Reject bodies nested too deeply or holding strings that are not encodable as UTF-8."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "request body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
        ) from None


def _one(query: MultiQuery, name: str) -> str | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest(f"{name}: given {len(values)} times; give it at most once")
    return values[0]


def _text(query: MultiQuery, name: str) -> str | None:
    value = _one(query, name)
    if value is not None:
        _check_query_text(name, value)
    return value


def _check_query_text(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name}: is not valid UTF-8") from None


def _bool(query: MultiQuery, name: str) -> bool | None:
    value = _one(query, name)
    if value is None:
        return None
    if value == "true":
        return True
    if value == "false":
        return False
    raise InvalidRequest(f"{name}: must be 'true' or 'false', got {value!r}")


def _limit(query: MultiQuery, maximum: int) -> int:
    value = _one(query, "limit")
    if value is None:
        return DEFAULT_LIMIT
    if not _DIGITS.match(value) or not 1 <= int(value) <= maximum:
        raise InvalidRequest(f"limit: must be an integer from 1 to {maximum}, got {value!r}")
    return int(value)


def _page(query: MultiQuery) -> str | None:
    value = _text(query, "page")
    return value or None  # the SDK stops paging on an empty cursor; treat it as absent


def _timestamp(query: MultiQuery, name: str) -> datetime | None:
    value = _one(query, name)
    if value is None:
        return None
    _check_query_text(name, value)
    candidate = _SPACE_OFFSET.sub(r"\1+\2", value)
    try:
        return parse_ts(candidate)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{name}: must be an RFC 3339 timestamp such as 2026-05-01T00:00:00Z, got {value!r}"
        ) from None
