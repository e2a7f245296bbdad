"""Pages and their opaque cursors.

Lists are ordered newest first by ``(created_at, id)``. A cursor records only the position of
the last item of a page (its ``created_at`` in microseconds and its id) plus a tag naming the
list it belongs to, so filters are applied afresh to every page and rows inserted meanwhile
can neither repeat nor push others out of a later page. The text form is URL-safe base64 of a
small JSON array ``[kind, created_at_micros, id]``, without padding.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from agentcron.errors import InvalidRequest

T = TypeVar("T")

DEFAULT_LIMIT = 20
"""Items per page when ``limit`` is not given (both lists)."""
DEPLOYMENTS_MAX_LIMIT = 100
"""The largest ``limit`` of the deployments list."""
RUNS_MAX_LIMIT = 1000
"""The largest ``limit`` of the runs list."""

_MAX_CURSOR_CHARS = 256


class CursorKind(StrEnum):
    """Which list a cursor belongs to; a cursor from one list is refused by the other."""

    DEPLOYMENTS = "d"
    RUNS = "r"


@dataclass(frozen=True, slots=True, kw_only=True)
class Page(Generic[T]):
    """One page of a list: the items and the cursor of the next page (``None`` on the last)."""

    data: list[T]
    next_page: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Where a page ended: the last item's ``created_at`` (microseconds) and id."""

    created_at: int
    id: str


def encode_cursor(kind: CursorKind, position: Position) -> str:
    """The opaque ``next_page`` text for a page of ``kind`` that ended at ``position``."""
    raw = json.dumps([kind.value, position.created_at, position.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: CursorKind, cursor: str) -> Position:
    """The position encoded in ``cursor``.

    Raises ``InvalidRequest`` naming ``page`` when the cursor is malformed or was issued by a
    different list.
    """
    invalid = InvalidRequest(
        "page: not a valid cursor for this list; pass the next_page value of a previous response"
    )
    if not cursor or len(cursor) > _MAX_CURSOR_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    match decoded:
        case [str(tag), int(created_at), str(item_id)] if (
            tag == kind.value and not isinstance(created_at, bool) and item_id
        ):
            return Position(created_at=created_at, id=item_id)
        case _:
            raise invalid
