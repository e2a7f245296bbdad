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

from agentcron.core.models import JSONObject, Schedule
from agentcron.core.schedule import compile_schedule
from agentcron.core.validation_shapes import (
    discriminator,
    is_int,
    json_kind,
    only_keys,
    shown_key,
    validate_initial_events,
    validate_resources,
)
from agentcron.errors import InvalidRequest

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_VAULT_IDS = 50
MAX_NAME_LENGTH = 256
"""The hosted API documents no limit for ``name``; this one keeps names fit for a table row."""

_AMOUNT = re.compile(r"[1-9][0-9]{0,17}")


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
        raise InvalidRequest(f"body: must be a JSON object, got {json_kind(body)}")
    for key in body:
        if key not in allowed:
            raise InvalidRequest(f"{shown_key(key)}: unknown field")
    return body


# --------------------------------------------------------------------------------------------
# Top-level fields


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("name: must be a non-empty string")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name: at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    return value


def validate_description(value: object) -> str | None:
    """A description; ``None`` and ``""`` both mean no description."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"description: must be a string or null, got {json_kind(value)}")
    return value or None


def validate_agent(value: object) -> AgentSpec:
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("agent: must be a non-empty agent id")
        return AgentSpec(id=value, version=None)
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f'agent: must be an agent id string or {{"type": "agent", "id": ..., "version": ...}}'
            f", got {json_kind(value)}"
        )
    only_keys(value, "agent", {"type", "id", "version"})
    discriminator(value, "agent", ("agent",))
    agent_id = value.get("id")
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidRequest("agent.id: required, a non-empty string")
    version = value.get("version")
    if version is None:
        return AgentSpec(id=agent_id, version=None)
    if not is_int(version) or version < 1:
        raise InvalidRequest("agent.version: must be an integer >= 1")
    return AgentSpec(id=agent_id, version=version)


def validate_environment_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest("environment_id: must be a non-empty string")
    return value


def validate_metadata(value: object) -> dict[str, str]:
    """A complete metadata bag (create)."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(
            f"metadata: must be an object of string values, got {json_kind(value)}"
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        _metadata_key(key)
        if not isinstance(item, str):
            raise InvalidRequest(f"metadata.{key}: value must be a string, got {json_kind(item)}")
        result[key] = item
    check_metadata_limits(result)
    return result


def validate_metadata_patch(value: object) -> dict[str, str | None]:
    """A metadata patch (update): string values upsert, ``None`` deletes."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"metadata: must be an object, got {json_kind(value)}")
    result: dict[str, str | None] = {}
    for key, item in value.items():
        _metadata_key(key)
        if item is not None and not isinstance(item, str):
            raise InvalidRequest(
                f"metadata.{key}: value must be a string (or null to delete), got {json_kind(item)}"
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
            f"metadata: key {shown_key(key)} is longer than {MAX_METADATA_KEY} characters "
            f"({len(key)})"
        )


def validate_vault_ids(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidRequest(f"vault_ids: must be an array of strings, got {json_kind(value)}")
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
        raise InvalidRequest(f"budget: must be an object or null, got {json_kind(value)}")
    only_keys(value, "budget", {"type", "max_list_cost"})
    discriminator(value, "budget", ("limit",))
    cost = value.get("max_list_cost")
    if not isinstance(cost, Mapping):
        raise InvalidRequest('budget.max_list_cost: required, {"amount": ..., "currency": "USD"}')
    only_keys(cost, "budget.max_list_cost", {"amount", "currency"})
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
        raise InvalidRequest(f"schedule: must be an object or null, got {json_kind(value)}")
    only_keys(value, "schedule", {"type", "expression", "timezone"})
    for key in ("type", "expression", "timezone"):
        if key not in value:
            raise InvalidRequest(f"schedule.{key}: required")
    discriminator(value, "schedule", ("cron",))
    expression, timezone = value["expression"], value["timezone"]
    if not isinstance(expression, str):
        raise InvalidRequest(f"schedule.expression: must be a string, got {json_kind(expression)}")
    if not isinstance(timezone, str):
        raise InvalidRequest(f"schedule.timezone: must be a string, got {json_kind(timezone)}")
    compile_schedule(expression, timezone)
    return Schedule(expression=expression, timezone=timezone)
