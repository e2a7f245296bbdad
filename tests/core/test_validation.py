"""Request-body validation: every rule, with the message each bad body gets."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from agentcron.core.models import Schedule
from agentcron.core.validation import (
    OMITTED,
    AgentSpec,
    validate_create,
    validate_update,
)
from agentcron.errors import InvalidRequest

TOKEN = "ghp_SECRET_TOKEN_value_123"


def valid_body() -> dict[str, Any]:
    return {
        "name": "Weekly compliance scan",
        "agent": "agent_test",
        "environment_id": "env_test",
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "Run the scan."}]}
        ],
    }


def with_changes(**changes: Any) -> dict[str, Any]:
    body = valid_body()
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()


def user_message(*blocks: Any) -> dict[str, Any]:
    return {"type": "user.message", "content": list(blocks)}


def text(value: str = "hi") -> dict[str, Any]:
    return {"type": "text", "text": value}


def events(*items: Any) -> list[Any]:
    return [user_message(text()), *items]


BAD_CREATE_BODIES: list[tuple[str, Any, str]] = [
    ("not-an-object", ["name"], "body: must be a JSON object, got array"),
    ("unknown-top-level-key", with_changes(colour="blue"), "colour: unknown field"),
    ("name-missing", with_changes(name=_DROP), "name: required"),
    ("name-empty", with_changes(name="  "), "name: must be a non-empty string"),
    ("name-number", with_changes(name=3), "name: must be a non-empty string"),
    ("agent-missing", with_changes(agent=_DROP), "agent: required"),
    ("agent-empty-string", with_changes(agent=""), "agent: must be a non-empty agent id"),
    ("agent-number", with_changes(agent=7), "agent: must be an agent id string or"),
    (
        "agent-wrong-type",
        with_changes(agent={"type": "agent_with_overrides", "id": "a"}),
        "agent.type: unknown type 'agent_with_overrides' (expected agent)",
    ),
    ("agent-no-id", with_changes(agent={"type": "agent"}), "agent.id: required"),
    (
        "agent-version-zero",
        with_changes(agent={"type": "agent", "id": "a", "version": 0}),
        "agent.version: must be an integer >= 1",
    ),
    (
        "agent-version-bool",
        with_changes(agent={"type": "agent", "id": "a", "version": True}),
        "agent.version: must be an integer >= 1",
    ),
    (
        "agent-extra-key",
        with_changes(agent={"type": "agent", "id": "a", "model": "x"}),
        "agent.model: unknown field",
    ),
    ("environment-missing", with_changes(environment_id=_DROP), "environment_id: required"),
    (
        "environment-empty",
        with_changes(environment_id=""),
        "environment_id: must be a non-empty string",
    ),
    ("description-number", with_changes(description=1), "description: must be a string or null"),
    ("events-missing", with_changes(initial_events=_DROP), "initial_events: required"),
    ("events-not-array", with_changes(initial_events={}), "initial_events: must be an array"),
    (
        "events-empty",
        with_changes(initial_events=[]),
        "initial_events: must contain 1 to 50 events, got 0",
    ),
    (
        "events-51",
        with_changes(initial_events=[user_message(text())] * 51),
        "initial_events: must contain 1 to 50 events, got 51",
    ),
    (
        "events-without-user-message",
        with_changes(
            initial_events=[{"type": "system.message", "content": [text()]}],
        ),
        "initial_events: must contain the starting user.message event",
    ),
    (
        "event-unknown-type",
        with_changes(initial_events=events({"type": "user.interrupt"})),
        "initial_events[1].type: unknown event type 'user.interrupt' (expected user.message, "
        "user.define_outcome, system.message)",
    ),
    (
        "event-no-type",
        with_changes(initial_events=[{"content": []}]),
        "initial_events[0].type: required",
    ),
    (
        "event-not-object",
        with_changes(initial_events=["hello"]),
        "initial_events[0]: must be an object, got string",
    ),
    (
        "user-message-empty-content",
        with_changes(initial_events=[user_message()]),
        "initial_events[0].content: at least 1 item(s) required",
    ),
    (
        "user-message-extra-key",
        with_changes(initial_events=[{**user_message(text()), "id": "x"}]),
        "initial_events[0].id: unknown field",
    ),
    (
        "content-block-unknown-type",
        with_changes(initial_events=[user_message(text(), {"type": "video"})]),
        "initial_events[0].content[1].type: unknown content block type 'video' "
        "(expected text, image, document, redacted)",
    ),
    (
        "text-block-empty",
        with_changes(initial_events=[user_message(text(""))]),
        "initial_events[0].content[0].text: required, a non-empty string",
    ),
    (
        "text-block-extra-key",
        with_changes(initial_events=[user_message({"type": "text", "text": "a", "x": 1})]),
        "initial_events[0].content[0].x: unknown field",
    ),
    (
        "image-no-source",
        with_changes(initial_events=[user_message({"type": "image"})]),
        "initial_events[0].content[0].source: must be an object, got null",
    ),
    (
        "image-bad-source-type",
        with_changes(initial_events=[user_message({"type": "image", "source": {"type": "s3"}})]),
        "initial_events[0].content[0].source.type: unknown source type 's3' "
        "(expected base64, url, file)",
    ),
    (
        "image-text-source",
        with_changes(
            initial_events=[
                user_message(
                    {
                        "type": "image",
                        "source": {"type": "text", "data": "x", "media_type": "text/plain"},
                    }
                )
            ]
        ),
        "initial_events[0].content[0].source.type: unknown source type 'text'",
    ),
    (
        "image-bad-media-type",
        with_changes(
            initial_events=[
                user_message(
                    {
                        "type": "image",
                        "source": {"type": "base64", "data": "AA==", "media_type": "image/bmp"},
                    }
                )
            ]
        ),
        "initial_events[0].content[0].source.media_type: must be one of image/jpeg, image/png",
    ),
    (
        "image-url-missing",
        with_changes(initial_events=[user_message({"type": "image", "source": {"type": "url"}})]),
        "initial_events[0].content[0].source.url: required, a non-empty string",
    ),
    (
        "document-title-number",
        with_changes(
            initial_events=[
                user_message(
                    {"type": "document", "source": {"type": "file", "file_id": "f"}, "title": 3}
                )
            ]
        ),
        "initial_events[0].content[0].title: must be a string or null, got number",
    ),
    (
        "document-base64-not-pdf",
        with_changes(
            initial_events=[
                user_message(
                    {
                        "type": "document",
                        "source": {"type": "base64", "data": "AA==", "media_type": "image/png"},
                    }
                )
            ]
        ),
        "initial_events[0].content[0].source.media_type: must be one of application/pdf",
    ),
    (
        "redacted-extra-key",
        with_changes(initial_events=[user_message({"type": "redacted", "text": "x"})]),
        "initial_events[0].content[0].text: unknown field",
    ),
    (
        "system-message-image",
        with_changes(
            initial_events=events(
                {
                    "type": "system.message",
                    "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                }
            )
        ),
        "initial_events[1].content[0].type: unknown content block type 'image' (expected text)",
    ),
    (
        "system-message-empty",
        with_changes(initial_events=events({"type": "system.message", "content": []})),
        "initial_events[1].content: at least 1 item(s) required",
    ),
    (
        "outcome-no-description",
        with_changes(
            initial_events=events(
                {"type": "user.define_outcome", "rubric": {"type": "text", "content": "c"}}
            )
        ),
        "initial_events[1].description: required, a non-empty string",
    ),
    (
        "outcome-bad-rubric",
        with_changes(
            initial_events=events(
                {"type": "user.define_outcome", "description": "d", "rubric": {"type": "url"}}
            )
        ),
        "initial_events[1].rubric.type: unknown rubric type 'url' (expected text, file)",
    ),
    (
        "outcome-too-many-iterations",
        with_changes(
            initial_events=events(
                {
                    "type": "user.define_outcome",
                    "description": "d",
                    "rubric": {"type": "file", "file_id": "f"},
                    "max_iterations": 21,
                }
            )
        ),
        "initial_events[1].max_iterations: must be an integer from 1 to 20 or null",
    ),
    ("metadata-not-object", with_changes(metadata=[]), "metadata: must be an object"),
    (
        "metadata-17-keys",
        with_changes(metadata={f"k{i}": "v" for i in range(17)}),
        "metadata: at most 16 keys, got 17",
    ),
    ("metadata-empty-key", with_changes(metadata={"": "v"}), "metadata: keys must be non-empty"),
    (
        "metadata-long-key",
        with_changes(metadata={"k" * 65: "v"}),
        "is longer than 64 characters (65)",
    ),
    (
        "metadata-long-value",
        with_changes(metadata={"k": "v" * 513}),
        "metadata.k: value at most 512 characters, got 513",
    ),
    (
        "metadata-number-value",
        with_changes(metadata={"k": 1}),
        "metadata.k: value must be a string, got number",
    ),
    ("resources-not-array", with_changes(resources={}), "resources: must be an array, got object"),
    (
        "resources-501",
        with_changes(resources=[{"type": "file", "file_id": "f"}] * 501),
        "resources: at most 500 items, got 501",
    ),
    (
        "resource-unknown-type",
        with_changes(resources=[{"type": "s3_bucket"}]),
        "resources[0].type: unknown resource type 's3_bucket' "
        "(expected github_repository, file, memory_store)",
    ),
    (
        "github-no-url",
        with_changes(resources=[{"type": "github_repository"}]),
        "resources[0].url: required, a non-empty string",
    ),
    (
        "github-bad-checkout",
        with_changes(
            resources=[{"type": "github_repository", "url": "u", "checkout": {"type": "tag"}}]
        ),
        "resources[0].checkout.type: unknown checkout type 'tag' (expected branch, commit)",
    ),
    (
        "github-token-number",
        with_changes(
            resources=[{"type": "github_repository", "url": "u", "authorization_token": 5}]
        ),
        "resources[0].authorization_token: must be a non-empty string",
    ),
    (
        "file-no-id",
        with_changes(resources=[{"type": "file"}]),
        "resources[0].file_id: required, a non-empty string",
    ),
    (
        "memory-store-bad-access",
        with_changes(resources=[{"type": "memory_store", "memory_store_id": "m", "access": "rw"}]),
        "resources[0].access: must be read_write, read_only or null",
    ),
    (
        "memory-store-long-instructions",
        with_changes(
            resources=[{"type": "memory_store", "memory_store_id": "m", "instructions": "i" * 4097}]
        ),
        "resources[0].instructions: at most 4096 characters, got 4097",
    ),
    (
        "vault-ids-not-array",
        with_changes(vault_ids="vlt_1"),
        "vault_ids: must be an array of strings, got string",
    ),
    (
        "vault-ids-51",
        with_changes(vault_ids=[f"vlt_{i}" for i in range(51)]),
        "vault_ids: at most 50 items, got 51",
    ),
    ("vault-id-empty", with_changes(vault_ids=[""]), "vault_ids[0]: must be a non-empty string"),
    ("budget-not-object", with_changes(budget="10"), "budget: must be an object or null"),
    (
        "budget-wrong-type",
        with_changes(budget={"type": "cap"}),
        "budget.type: unknown type 'cap' (expected limit)",
    ),
    (
        "budget-leading-zero",
        with_changes(
            budget={"type": "limit", "max_list_cost": {"amount": "0250", "currency": "USD"}}
        ),
        "budget.max_list_cost.amount: must be a positive integer string in minor units",
    ),
    (
        "budget-number-amount",
        with_changes(budget={"type": "limit", "max_list_cost": {"amount": 250, "currency": "USD"}}),
        "budget.max_list_cost.amount: must be a positive integer string",
    ),
    (
        "budget-decimal-amount",
        with_changes(
            budget={"type": "limit", "max_list_cost": {"amount": "2.50", "currency": "USD"}}
        ),
        "budget.max_list_cost.amount: must be a positive integer string",
    ),
    (
        "budget-euro",
        with_changes(
            budget={"type": "limit", "max_list_cost": {"amount": "250", "currency": "EUR"}}
        ),
        'budget.max_list_cost.currency: must be "USD"',
    ),
    (
        "budget-no-cost",
        with_changes(budget={"type": "limit"}),
        "budget.max_list_cost: required",
    ),
    ("schedule-not-object", with_changes(schedule="0 * * * *"), "schedule: must be an object"),
    (
        "schedule-no-timezone",
        with_changes(schedule={"type": "cron", "expression": "0 * * * *"}),
        "schedule.timezone: required",
    ),
    (
        "schedule-no-type",
        with_changes(schedule={"expression": "0 * * * *", "timezone": "UTC"}),
        "schedule.type: required",
    ),
    (
        "schedule-rrule",
        with_changes(schedule={"type": "rrule", "expression": "x", "timezone": "UTC"}),
        "schedule.type: unknown type 'rrule' (expected cron)",
    ),
    (
        "schedule-extra-key",
        with_changes(
            schedule={"type": "cron", "expression": "0 * * * *", "timezone": "UTC", "jitter": 1}
        ),
        "schedule.jitter: unknown field",
    ),
    (
        "schedule-six-fields",
        with_changes(schedule={"type": "cron", "expression": "0 0 * * * *", "timezone": "UTC"}),
        "schedule.expression: ",
    ),
    (
        "schedule-unknown-zone",
        with_changes(schedule={"type": "cron", "expression": "0 * * * *", "timezone": "Mars/Base"}),
        "schedule.timezone: ",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(body, message, id=name) for name, body, message in BAD_CREATE_BODIES],
)
def test_bad_create_body_is_rejected_naming_field_and_rule(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_create(body)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_valid_body_with_every_field_is_accepted_and_normalised() -> None:
    body = valid_body() | {
        "description": "",
        "agent": {"type": "agent", "id": "agent_x", "version": 3},
        "metadata": {"team": "ops"},
        "resources": [
            {
                "type": "github_repository",
                "url": "https://github.com/o/r",
                "authorization_token": TOKEN,
                "checkout": {"type": "branch", "name": "main"},
                "mount_path": None,
            },
            {"type": "file", "file_id": "file_1"},
            {"type": "memory_store", "memory_store_id": "ms", "access": "read_only"},
        ],
        "vault_ids": ["vlt_1"],
        "budget": {"type": "limit", "max_list_cost": {"amount": "2500", "currency": "USD"}},
        "schedule": {"type": "cron", "expression": "0 20 * * 5", "timezone": "America/New_York"},
        "initial_events": [
            user_message(
                text(),
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {
                    "type": "document",
                    "source": {"type": "text", "data": "notes", "media_type": "text/plain"},
                    "title": "Notes",
                    "context": None,
                },
                {"type": "redacted"},
            ),
            {
                "type": "user.define_outcome",
                "description": "a clean report",
                "rubric": {"type": "text", "content": "no findings"},
                "max_iterations": 5,
            },
            {"type": "system.message", "content": [text("be brief")]},
        ],
    }
    request = validate_create(copy.deepcopy(body))
    assert request.description is None  # "" means no description
    assert request.agent == AgentSpec(id="agent_x", version=3)
    assert request.schedule == Schedule(expression="0 20 * * 5", timezone="America/New_York")
    assert request.resources[0]["authorization_token"] == TOKEN
    assert request.initial_events == body["initial_events"]
    assert request.budget == body["budget"]


def test_agent_string_means_latest_version() -> None:
    assert validate_create(valid_body()).agent == AgentSpec(id="agent_test", version=None)


def test_no_error_message_echoes_the_authorization_token() -> None:
    """Messages name fields, never string values: the token's value is never echoed."""
    bad_resources: list[Any] = [
        [{"type": "github_repository", "url": "u", "authorization_token": TOKEN, "x": 1}],
        [{"type": "github_repository", "authorization_token": TOKEN}],
        [{"type": "github_repository", "url": "u", "authorization_token": TOKEN, "checkout": 1}],
        [{"type": "file", "file_id": "f", "authorization_token": TOKEN}],
        [{"type": "memory_store", "memory_store_id": "m", "access": TOKEN}],
    ]
    for resources in bad_resources:
        with pytest.raises(InvalidRequest) as caught:
            validate_create(with_changes(resources=resources))
        assert "SECRET" not in caught.value.message


BAD_UPDATE_BODIES: list[tuple[str, Any, str]] = [
    ("name-null", {"name": None}, "name: cannot be cleared"),
    ("agent-null", {"agent": None}, "agent: cannot be cleared"),
    ("environment-null", {"environment_id": None}, "environment_id: cannot be cleared"),
    ("events-null", {"initial_events": None}, "initial_events: cannot be cleared"),
    ("metadata-null", {"metadata": None}, "metadata: cannot be null"),
    ("metadata-number-value", {"metadata": {"k": 2}}, "metadata.k: value must be a string"),
    ("unknown-key", {"status": "paused"}, "status: unknown field"),
    ("name-empty", {"name": ""}, "name: must be a non-empty string"),
    ("events-empty", {"initial_events": []}, "initial_events: must contain 1 to 50 events"),
    ("schedule-partial", {"schedule": {"type": "cron"}}, "schedule.expression: required"),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(body, message, id=name) for name, body, message in BAD_UPDATE_BODIES],
)
def test_bad_update_body_is_rejected_naming_field_and_rule(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        validate_update(body)


def test_update_tells_omitted_from_null() -> None:
    request = validate_update(
        {"description": None, "schedule": None, "resources": None, "metadata": {"k": None}}
    )
    assert request.name is OMITTED
    assert request.agent is OMITTED
    assert request.description is None
    assert request.schedule is None
    assert request.resources == []
    assert request.vault_ids is OMITTED
    assert request.metadata == {"k": None}
    assert validate_update({}).budget is OMITTED
