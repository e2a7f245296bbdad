"""Validation of deployment request bodies (create and update). Pure: no I/O, no logging.

Every rule raises ``InvalidRequest`` whose message starts with the path of the offending field
(``initial_events[0].content[1].type: ...``) and states the rule. Messages echo key names and
the values of small enumerations (``type``, ``access``), never other string values: a
``github_repository.authorization_token`` is a secret and must not appear in an error.

Unknown keys are rejected everywhere (top level, events, blocks, resources), so a typo never
silently drops a setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from agentcron.errors import InvalidRequest
from agentcron.models import JSONObject, Schedule
from agentcron.schedule import compile_schedule

MAX_INITIAL_EVENTS = 50
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_RESOURCES = 500
MAX_VAULT_IDS = 50
MAX_CONTENT_BLOCKS = 1000
MAX_OUTCOME_ITERATIONS = 20
MAX_INSTRUCTIONS = 4096

_AMOUNT = re.compile(r"[1-9][0-9]{0,17}")
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DOCUMENT_BASE64_MEDIA_TYPES = ("application/pdf",)


class Omitted(Enum):
    """Marks an update field that the body did not mention (kept as it is)."""

    OMITTED = "omitted"


OMITTED: Final = Omitted.OMITTED

CREATE_FIELDS = frozenset(
    {
        "name",
        "description",
        "agent",
        "environment_id",
        "initial_events",
        "metadata",
        "resources",
        "vault_ids",
        "budget",
        "schedule",
    }
)
UPDATE_FIELDS = CREATE_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """An agent as requested: an id, and a version or ``None`` for the latest."""

    id: str
    version: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRequest:
    """A validated create body (the agent still to be resolved by the launcher)."""

    name: str
    description: str | None
    agent: AgentSpec
    environment_id: str
    initial_events: list[JSONObject]
    metadata: dict[str, str]
    resources: list[JSONObject]
    vault_ids: list[str]
    budget: JSONObject | None
    schedule: Schedule | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRequest:
    """A validated update body; ``OMITTED`` keeps a field, ``None`` clears a clearable one.

    ``metadata`` is a patch: a string upserts the key, ``None`` deletes it.
    """

    name: str | Omitted = OMITTED
    description: str | Omitted | None = OMITTED
    agent: AgentSpec | Omitted = OMITTED
    environment_id: str | Omitted = OMITTED
    initial_events: list[JSONObject] | Omitted = OMITTED
    metadata: dict[str, str | None] | Omitted = OMITTED
    resources: list[JSONObject] | Omitted = OMITTED
    vault_ids: list[str] | Omitted = OMITTED
    budget: JSONObject | Omitted | None = OMITTED
    schedule: Schedule | Omitted | None = OMITTED


# --------------------------------------------------------------------------------------------
# Entry points


def validate_create(body: object) -> CreateRequest:
    """Validate a ``POST /v1/deployments`` body."""
    obj = _body(body, CREATE_FIELDS)
    for required in ("name", "agent", "environment_id", "initial_events"):
        if required not in obj:
            raise InvalidRequest(f"{required}: required")
    return CreateRequest(
        name=validate_name(obj["name"]),
        description=validate_description(obj.get("description")),
        agent=validate_agent(obj["agent"]),
        environment_id=validate_environment_id(obj["environment_id"]),
        initial_events=validate_initial_events(obj["initial_events"]),
        metadata=validate_metadata(obj.get("metadata", {})),
        resources=validate_resources(obj.get("resources", [])),
        vault_ids=validate_vault_ids(obj.get("vault_ids", [])),
        budget=validate_budget(obj.get("budget")),
        schedule=validate_schedule(obj.get("schedule")),
    )


def validate_update(body: object) -> UpdateRequest:
    """Validate a ``POST /v1/deployments/{id}`` body (every field optional)."""
    obj = _body(body, UPDATE_FIELDS)
    for unclearable in ("name", "agent", "environment_id", "initial_events"):
        if unclearable in obj and obj[unclearable] is None:
            raise InvalidRequest(f"{unclearable}: cannot be cleared (null is not allowed)")
    if "metadata" in obj and obj["metadata"] is None:
        raise InvalidRequest(
            'metadata: cannot be null; to delete keys send {"key": null} for each key'
        )

    def field(name: str, check: Callable[[Any], Any]) -> Any:
        return check(obj[name]) if name in obj else OMITTED

    return UpdateRequest(
        name=field("name", validate_name),
        description=field("description", validate_description),
        agent=field("agent", validate_agent),
        environment_id=field("environment_id", validate_environment_id),
        initial_events=field("initial_events", validate_initial_events),
        metadata=field("metadata", validate_metadata_patch),
        resources=field("resources", lambda v: [] if v is None else validate_resources(v)),
        vault_ids=field("vault_ids", lambda v: [] if v is None else validate_vault_ids(v)),
        budget=field("budget", validate_budget),
        schedule=field("schedule", validate_schedule),
    )


def _body(body: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidRequest(f"body: must be a JSON object, got {_kind(body)}")
    for key in body:
        if key not in allowed:
            raise InvalidRequest(f"{_key(key)}: unknown field")
    return body


# --------------------------------------------------------------------------------------------
# Top-level fields


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("name: must be a non-empty string")
    return value


def validate_description(value: object) -> str | None:
    """A description; ``None`` and ``""`` both mean no description."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"description: must be a string or null, got {_kind(value)}")
    return value or None


def validate_agent(value: object) -> AgentSpec:
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("agent: must be a non-empty agent id")
        return AgentSpec(id=value, version=None)
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f'agent: must be an agent id string or {{"type": "agent", "id": ..., "version": ...}}'
            f", got {_kind(value)}"
        )
    _only(value, "agent", {"type", "id", "version"})
    _discriminator(value, "agent", ("agent",))
    agent_id = value.get("id")
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidRequest("agent.id: required, a non-empty string")
    version = value.get("version")
    if version is None:
        return AgentSpec(id=agent_id, version=None)
    if not _is_int(version) or version < 1:
        raise InvalidRequest("agent.version: must be an integer >= 1")
    return AgentSpec(id=agent_id, version=version)


def validate_environment_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("environment_id: must be a non-empty string")
    return value


def validate_metadata(value: object) -> dict[str, str]:
    """A complete metadata bag (create)."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"metadata: must be an object of string values, got {_kind(value)}")
    result: dict[str, str] = {}
    for key, item in value.items():
        _metadata_key(key)
        if not isinstance(item, str):
            raise InvalidRequest(f"metadata.{key}: value must be a string, got {_kind(item)}")
        result[key] = item
    check_metadata_limits(result)
    return result


def validate_metadata_patch(value: object) -> dict[str, str | None]:
    """A metadata patch (update): string values upsert, ``None`` deletes."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"metadata: must be an object, got {_kind(value)}")
    result: dict[str, str | None] = {}
    for key, item in value.items():
        _metadata_key(key)
        if item is not None and not isinstance(item, str):
            raise InvalidRequest(
                f"metadata.{key}: value must be a string (or null to delete), got {_kind(item)}"
            )
        result[key] = item
    return result


def check_metadata_limits(metadata: Mapping[str, str]) -> None:
    """The limits a stored metadata bag must respect (also after a patch)."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"metadata: at most {MAX_METADATA_PAIRS} keys, got {len(metadata)}")
    for key, item in metadata.items():
        if len(item) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata.{key}: value at most {MAX_METADATA_VALUE} characters, got {len(item)}"
            )


def _metadata_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidRequest("metadata: keys must be non-empty strings")
    if len(key) > MAX_METADATA_KEY:
        raise InvalidRequest(
            f"metadata: key {_key(key)} is longer than {MAX_METADATA_KEY} characters ({len(key)})"
        )


def validate_vault_ids(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest(f"vault_ids: must be an array of strings, got {_kind(value)}")
    if len(value) > MAX_VAULT_IDS:
        raise InvalidRequest(f"vault_ids: at most {MAX_VAULT_IDS} items, got {len(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidRequest(f"vault_ids[{index}]: must be a non-empty string")
    return list(value)


def validate_budget(value: object) -> JSONObject | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"budget: must be an object or null, got {_kind(value)}")
    _only(value, "budget", {"type", "max_list_cost"})
    _discriminator(value, "budget", ("limit",))
    cost = value.get("max_list_cost")
    if not isinstance(cost, Mapping):
        raise InvalidRequest('budget.max_list_cost: required, {"amount": ..., "currency": "USD"}')
    _only(cost, "budget.max_list_cost", {"amount", "currency"})
    amount = cost.get("amount")
    if not isinstance(amount, str) or not _AMOUNT.fullmatch(amount):
        raise InvalidRequest(
            "budget.max_list_cost.amount: must be a positive integer string in minor units "
            'without leading zeros (e.g. "2500" for $25.00)'
        )
    if cost.get("currency") != "USD":
        raise InvalidRequest('budget.max_list_cost.currency: must be "USD"')
    return {"type": "limit", "max_list_cost": {"amount": amount, "currency": "USD"}}


def validate_schedule(value: object) -> Schedule | None:
    """A cron schedule or ``None`` (manual runs only); checks the expression and the zone."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"schedule: must be an object or null, got {_kind(value)}")
    _only(value, "schedule", {"type", "expression", "timezone"})
    for key in ("type", "expression", "timezone"):
        if key not in value:
            raise InvalidRequest(f"schedule.{key}: required")
    _discriminator(value, "schedule", ("cron",))
    expression, timezone = value["expression"], value["timezone"]
    if not isinstance(expression, str):
        raise InvalidRequest(f"schedule.expression: must be a string, got {_kind(expression)}")
    if not isinstance(timezone, str):
        raise InvalidRequest(f"schedule.timezone: must be a string, got {_kind(timezone)}")
    compile_schedule(expression, timezone)
    return Schedule(expression=expression, timezone=timezone)


# --------------------------------------------------------------------------------------------
# Initial events and content blocks


def validate_initial_events(value: object) -> list[JSONObject]:
    if not isinstance(value, list):
        raise InvalidRequest(f"initial_events: must be an array, got {_kind(value)}")
    if not 1 <= len(value) <= MAX_INITIAL_EVENTS:
        raise InvalidRequest(
            f"initial_events: must contain 1 to {MAX_INITIAL_EVENTS} events, got {len(value)}"
        )
    events = [_event(item, f"initial_events[{index}]") for index, item in enumerate(value)]
    if not any(event["type"] == "user.message" for event in events):
        raise InvalidRequest("initial_events: must contain the starting user.message event")
    return events


def _event(value: object, path: str) -> JSONObject:
    obj = _object(value, path)
    kind = _discriminator(
        obj, path, ("user.message", "user.define_outcome", "system.message"), "event type"
    )
    if kind == "user.message":
        _only(obj, path, {"type", "content"})
        blocks = _array(obj.get("content"), f"{path}.content", 1, MAX_CONTENT_BLOCKS)
        content = [_block(b, f"{path}.content[{i}]") for i, b in enumerate(blocks)]
        return {"type": kind, "content": content}
    if kind == "system.message":
        _only(obj, path, {"type", "content"})
        blocks = _array(obj.get("content"), f"{path}.content", 1, MAX_CONTENT_BLOCKS)
        content = [_text_block(b, f"{path}.content[{i}]") for i, b in enumerate(blocks)]
        return {"type": kind, "content": content}
    _only(obj, path, {"type", "description", "rubric", "max_iterations"})
    event: JSONObject = {
        "type": kind,
        "description": _string(obj.get("description"), f"{path}.description"),
        "rubric": _rubric(obj.get("rubric"), f"{path}.rubric"),
    }
    if "max_iterations" in obj:
        iterations = obj["max_iterations"]
        if iterations is not None and (
            not _is_int(iterations) or not 1 <= iterations <= MAX_OUTCOME_ITERATIONS
        ):
            raise InvalidRequest(
                f"{path}.max_iterations: must be an integer from 1 to "
                f"{MAX_OUTCOME_ITERATIONS} or null"
            )
        event["max_iterations"] = iterations
    return event


def _rubric(value: object, path: str) -> JSONObject:
    obj = _object(value, path)
    kind = _discriminator(obj, path, ("text", "file"), "rubric type")
    if kind == "text":
        _only(obj, path, {"type", "content"})
        return {"type": kind, "content": _string(obj.get("content"), f"{path}.content")}
    _only(obj, path, {"type", "file_id"})
    return {"type": kind, "file_id": _string(obj.get("file_id"), f"{path}.file_id")}


def _block(value: object, path: str) -> JSONObject:
    obj = _object(value, path)
    kind = _discriminator(
        obj, path, ("text", "image", "document", "redacted"), "content block type"
    )
    if kind == "text":
        return _text_block(obj, path)
    if kind == "image":
        _only(obj, path, {"type", "source"})
        return {"type": kind, "source": _source(obj.get("source"), f"{path}.source", image=True)}
    if kind == "document":
        _only(obj, path, {"type", "source", "title", "context"})
        block: JSONObject = {
            "type": kind,
            "source": _source(obj.get("source"), f"{path}.source", image=False),
        }
        for optional in ("title", "context"):
            if optional in obj:
                block[optional] = _optional_string(obj[optional], f"{path}.{optional}")
        return block
    _only(obj, path, {"type"})
    return {"type": kind}


def _text_block(value: object, path: str) -> JSONObject:
    obj = _object(value, path)
    _discriminator(obj, path, ("text",), "content block type")
    _only(obj, path, {"type", "text"})
    return {"type": "text", "text": _string(obj.get("text"), f"{path}.text")}


def _source(value: object, path: str, *, image: bool) -> JSONObject:
    obj = _object(value, path)
    kinds = ("base64", "url", "file") if image else ("base64", "text", "url", "file")
    kind = _discriminator(obj, path, kinds, "source type")
    if kind in ("base64", "text"):
        _only(obj, path, {"type", "data", "media_type"})
        if kind == "text":
            allowed: tuple[str, ...] = ("text/plain",)
        else:
            allowed = _IMAGE_MEDIA_TYPES if image else _DOCUMENT_BASE64_MEDIA_TYPES
        media_type = obj.get("media_type")
        if media_type not in allowed:
            raise InvalidRequest(f"{path}.media_type: must be one of {', '.join(allowed)}")
        return {
            "type": kind,
            "data": _string(obj.get("data"), f"{path}.data"),
            "media_type": media_type,
        }
    if kind == "url":
        _only(obj, path, {"type", "url"})
        return {"type": kind, "url": _string(obj.get("url"), f"{path}.url")}
    _only(obj, path, {"type", "file_id"})
    return {"type": kind, "file_id": _string(obj.get("file_id"), f"{path}.file_id")}


# --------------------------------------------------------------------------------------------
# Resources


def validate_resources(value: object) -> list[JSONObject]:
    items = _array(value, "resources", 0, MAX_RESOURCES)
    return [_resource(item, f"resources[{index}]") for index, item in enumerate(items)]


def _resource(value: object, path: str) -> JSONObject:
    obj = _object(value, path)
    kind = _discriminator(obj, path, ("github_repository", "file", "memory_store"), "resource type")
    resource: JSONObject = {"type": kind}
    if kind == "github_repository":
        _only(obj, path, {"type", "url", "authorization_token", "checkout", "mount_path"})
        resource["url"] = _string(obj.get("url"), f"{path}.url")
        if "authorization_token" in obj:
            token = obj["authorization_token"]
            if not isinstance(token, str) or not token:
                raise InvalidRequest(f"{path}.authorization_token: must be a non-empty string")
            resource["authorization_token"] = token
        if "checkout" in obj:
            resource["checkout"] = _checkout(obj["checkout"], f"{path}.checkout")
        if "mount_path" in obj:
            resource["mount_path"] = _optional_string(obj["mount_path"], f"{path}.mount_path")
        return resource
    if kind == "file":
        _only(obj, path, {"type", "file_id", "mount_path"})
        resource["file_id"] = _string(obj.get("file_id"), f"{path}.file_id")
        if "mount_path" in obj:
            resource["mount_path"] = _optional_string(obj["mount_path"], f"{path}.mount_path")
        return resource
    _only(obj, path, {"type", "memory_store_id", "access", "instructions"})
    resource["memory_store_id"] = _string(obj.get("memory_store_id"), f"{path}.memory_store_id")
    if "access" in obj:
        access = obj["access"]
        if access not in (None, "read_write", "read_only"):
            raise InvalidRequest(f"{path}.access: must be read_write, read_only or null")
        resource["access"] = access
    if "instructions" in obj:
        instructions = _optional_string(obj["instructions"], f"{path}.instructions")
        if instructions is not None and len(instructions) > MAX_INSTRUCTIONS:
            raise InvalidRequest(
                f"{path}.instructions: at most {MAX_INSTRUCTIONS} characters, "
                f"got {len(instructions)}"
            )
        resource["instructions"] = instructions
    return resource


def _checkout(value: object, path: str) -> JSONObject | None:
    if value is None:
        return None
    obj = _object(value, path)
    kind = _discriminator(obj, path, ("branch", "commit"), "checkout type")
    if kind == "branch":
        _only(obj, path, {"type", "name"})
        return {"type": kind, "name": _string(obj.get("name"), f"{path}.name")}
    _only(obj, path, {"type", "sha"})
    return {"type": kind, "sha": _string(obj.get("sha"), f"{path}.sha")}


# --------------------------------------------------------------------------------------------
# Small helpers


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{path}: must be an object, got {_kind(value)}")
    return value


def _array(value: object, path: str, minimum: int, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path}: must be an array, got {_kind(value)}")
    if len(value) > maximum:
        raise InvalidRequest(f"{path}: at most {maximum} items, got {len(value)}")
    if len(value) < minimum:
        raise InvalidRequest(f"{path}: at least {minimum} item(s) required")
    return value


def _only(obj: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidRequest(f"{path}.{_key(key)}: unknown field")


def _discriminator(
    obj: Mapping[str, Any], path: str, kinds: tuple[str, ...], what: str = "type"
) -> str:
    kind = obj.get("type")
    expected = ", ".join(kinds)
    if kind is None:
        raise InvalidRequest(f"{path}.type: required (expected {expected})")
    if kind not in kinds:
        shown = repr(kind[:40]) if isinstance(kind, str) else _kind(kind)
        raise InvalidRequest(f"{path}.type: unknown {what} {shown} (expected {expected})")
    return str(kind)


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{path}: required, a non-empty string")
    return value


def _optional_string(value: object, path: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{path}: must be a string or null, got {_kind(value)}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _key(key: object) -> str:
    text = str(key)
    return text if len(text) <= 64 else text[:61] + "..."


def _kind(value: object) -> str:
    """The JSON type of ``value`` for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
