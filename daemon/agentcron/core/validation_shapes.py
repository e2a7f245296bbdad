"""Validation of the shapes stored inside a deployment: initial events with their content
blocks, and resources (hosted-api-notes §3.3, §3.4). Pure: no I/O, no logging.

Every rule raises ``InvalidRequest`` whose message starts with the path of the offending field
and states the rule; unknown keys and unknown ``type`` values are rejected by name. String
values are never echoed (a resource may carry a secret), only key names and JSON types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentcron.core.models import JSONObject
from agentcron.errors import InvalidRequest

MAX_INITIAL_EVENTS = 50
MAX_RESOURCES = 500
MAX_CONTENT_BLOCKS = 1000
MAX_OUTCOME_ITERATIONS = 20
MAX_INSTRUCTIONS = 4096

_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DOCUMENT_BASE64_MEDIA_TYPES = ("application/pdf",)


# --------------------------------------------------------------------------------------------
# Initial events and content blocks


def validate_initial_events(value: object) -> list[JSONObject]:
    if not isinstance(value, list):
        raise InvalidRequest(f"initial_events: must be an array, got {json_kind(value)}")
    if not 1 <= len(value) <= MAX_INITIAL_EVENTS:
        raise InvalidRequest(
            f"initial_events: must contain 1 to {MAX_INITIAL_EVENTS} events, got {len(value)}"
        )
    events = [_event(item, f"initial_events[{index}]") for index, item in enumerate(value)]
    if not any(event["type"] == "user.message" for event in events):
        raise InvalidRequest("initial_events: must contain the starting user.message event")
    return events


def _event(value: object, path: str) -> JSONObject:
    obj = require_object(value, path)
    kind = discriminator(
        obj, path, ("user.message", "user.define_outcome", "system.message"), "event type"
    )
    if kind == "user.message":
        only_keys(obj, path, {"type", "content"})
        blocks = require_array(obj.get("content"), f"{path}.content", 1, MAX_CONTENT_BLOCKS)
        content = [_block(b, f"{path}.content[{i}]") for i, b in enumerate(blocks)]
        return {"type": kind, "content": content}
    if kind == "system.message":
        only_keys(obj, path, {"type", "content"})
        blocks = require_array(obj.get("content"), f"{path}.content", 1, MAX_CONTENT_BLOCKS)
        content = [_text_block(b, f"{path}.content[{i}]") for i, b in enumerate(blocks)]
        return {"type": kind, "content": content}
    only_keys(obj, path, {"type", "description", "rubric", "max_iterations"})
    event: JSONObject = {
        "type": kind,
        "description": require_string(obj.get("description"), f"{path}.description"),
        "rubric": _rubric(obj.get("rubric"), f"{path}.rubric"),
    }
    if "max_iterations" in obj:
        iterations = obj["max_iterations"]
        if iterations is not None and (
            not is_int(iterations) or not 1 <= iterations <= MAX_OUTCOME_ITERATIONS
        ):
            raise InvalidRequest(
                f"{path}.max_iterations: must be an integer from 1 to "
                f"{MAX_OUTCOME_ITERATIONS} or null"
            )
        event["max_iterations"] = iterations
    return event


def _rubric(value: object, path: str) -> JSONObject:
    obj = require_object(value, path)
    kind = discriminator(obj, path, ("text", "file"), "rubric type")
    if kind == "text":
        only_keys(obj, path, {"type", "content"})
        return {"type": kind, "content": require_string(obj.get("content"), f"{path}.content")}
    only_keys(obj, path, {"type", "file_id"})
    return {"type": kind, "file_id": require_string(obj.get("file_id"), f"{path}.file_id")}


def _block(value: object, path: str) -> JSONObject:
    obj = require_object(value, path)
    kind = discriminator(obj, path, ("text", "image", "document", "redacted"), "content block type")
    if kind == "text":
        return _text_block(obj, path)
    if kind == "image":
        only_keys(obj, path, {"type", "source"})
        return {"type": kind, "source": _source(obj.get("source"), f"{path}.source", image=True)}
    if kind == "document":
        only_keys(obj, path, {"type", "source", "title", "context"})
        block: JSONObject = {
            "type": kind,
            "source": _source(obj.get("source"), f"{path}.source", image=False),
        }
        for optional in ("title", "context"):
            if optional in obj:
                block[optional] = optional_string(obj[optional], f"{path}.{optional}")
        return block
    only_keys(obj, path, {"type"})
    return {"type": kind}


def _text_block(value: object, path: str) -> JSONObject:
    obj = require_object(value, path)
    discriminator(obj, path, ("text",), "content block type")
    only_keys(obj, path, {"type", "text"})
    return {"type": "text", "text": require_string(obj.get("text"), f"{path}.text")}


def _source(value: object, path: str, *, image: bool) -> JSONObject:
    obj = require_object(value, path)
    kinds = ("base64", "url", "file") if image else ("base64", "text", "url", "file")
    kind = discriminator(obj, path, kinds, "source type")
    if kind in ("base64", "text"):
        only_keys(obj, path, {"type", "data", "media_type"})
        if kind == "text":
            allowed: tuple[str, ...] = ("text/plain",)
        else:
            allowed = _IMAGE_MEDIA_TYPES if image else _DOCUMENT_BASE64_MEDIA_TYPES
        media_type = obj.get("media_type")
        if media_type not in allowed:
            raise InvalidRequest(f"{path}.media_type: must be one of {', '.join(allowed)}")
        return {
            "type": kind,
            "data": require_string(obj.get("data"), f"{path}.data"),
            "media_type": media_type,
        }
    if kind == "url":
        only_keys(obj, path, {"type", "url"})
        return {"type": kind, "url": require_string(obj.get("url"), f"{path}.url")}
    only_keys(obj, path, {"type", "file_id"})
    return {"type": kind, "file_id": require_string(obj.get("file_id"), f"{path}.file_id")}


# --------------------------------------------------------------------------------------------
# Resources


def validate_resources(value: object) -> list[JSONObject]:
    items = require_array(value, "resources", 0, MAX_RESOURCES)
    return [_resource(item, f"resources[{index}]") for index, item in enumerate(items)]


def _resource(value: object, path: str) -> JSONObject:
    obj = require_object(value, path)
    kind = discriminator(obj, path, ("github_repository", "file", "memory_store"), "resource type")
    resource: JSONObject = {"type": kind}
    if kind == "github_repository":
        only_keys(obj, path, {"type", "url", "authorization_token", "checkout", "mount_path"})
        resource["url"] = require_string(obj.get("url"), f"{path}.url")
        if "authorization_token" in obj:
            token = obj["authorization_token"]
            if not isinstance(token, str) or not token:
                raise InvalidRequest(f"{path}.authorization_token: must be a non-empty string")
            resource["authorization_token"] = token
        if "checkout" in obj:
            resource["checkout"] = _checkout(obj["checkout"], f"{path}.checkout")
        if "mount_path" in obj:
            resource["mount_path"] = optional_string(obj["mount_path"], f"{path}.mount_path")
        return resource
    if kind == "file":
        only_keys(obj, path, {"type", "file_id", "mount_path"})
        resource["file_id"] = require_string(obj.get("file_id"), f"{path}.file_id")
        if "mount_path" in obj:
            resource["mount_path"] = optional_string(obj["mount_path"], f"{path}.mount_path")
        return resource
    only_keys(obj, path, {"type", "memory_store_id", "access", "instructions"})
    resource["memory_store_id"] = require_string(
        obj.get("memory_store_id"), f"{path}.memory_store_id"
    )
    if "access" in obj:
        access = obj["access"]
        if access not in (None, "read_write", "read_only"):
            raise InvalidRequest(f"{path}.access: must be read_write, read_only or null")
        resource["access"] = access
    if "instructions" in obj:
        instructions = optional_string(obj["instructions"], f"{path}.instructions")
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
    obj = require_object(value, path)
    kind = discriminator(obj, path, ("branch", "commit"), "checkout type")
    if kind == "branch":
        only_keys(obj, path, {"type", "name"})
        return {"type": kind, "name": require_string(obj.get("name"), f"{path}.name")}
    only_keys(obj, path, {"type", "sha"})
    return {"type": kind, "sha": require_string(obj.get("sha"), f"{path}.sha")}


# --------------------------------------------------------------------------------------------
# Small helpers


def require_object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{path}: must be an object, got {json_kind(value)}")
    return value


def require_array(value: object, path: str, minimum: int, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path}: must be an array, got {json_kind(value)}")
    if len(value) > maximum:
        raise InvalidRequest(f"{path}: at most {maximum} items, got {len(value)}")
    if len(value) < minimum:
        raise InvalidRequest(f"{path}: at least {minimum} item(s) required")
    return value


def only_keys(obj: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise InvalidRequest(f"{path}.{shown_key(key)}: unknown field")


def discriminator(
    obj: Mapping[str, Any], path: str, kinds: tuple[str, ...], what: str = "type"
) -> str:
    kind = obj.get("type")
    expected = ", ".join(kinds)
    if kind is None:
        raise InvalidRequest(f"{path}.type: required (expected {expected})")
    if kind not in kinds:
        shown = repr(kind[:40]) if isinstance(kind, str) else json_kind(kind)
        raise InvalidRequest(f"{path}.type: unknown {what} {shown} (expected {expected})")
    return str(kind)


def require_string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{path}: required, a non-empty string")
    return value


def optional_string(value: object, path: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{path}: must be a string or null, got {json_kind(value)}")
    return value


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shown_key(key: object) -> str:
    text = str(key)
    return text if len(text) <= 64 else text[:61] + "..."


def json_kind(value: object) -> str:
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
