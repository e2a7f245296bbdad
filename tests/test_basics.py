"""Identifiers and timestamps: the small shared pieces."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentcron import ids
from agentcron.timeutil import format_ts, from_micros, parse_duration, parse_ts, to_micros


def test_ids_have_prefix_and_sort_by_creation() -> None:
    made = [ids.new_id(ids.RUN) for _ in range(2000)]
    assert all(x.startswith("drun_") and len(x) == 5 + 26 for x in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_timestamps_on_the_wire_are_utc_with_z() -> None:
    value = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert format_ts(value) == "2026-11-01T05:30:00Z"
    assert format_ts(value.replace(microsecond=1500)) == "2026-11-01T05:30:00.001500Z"
    assert parse_ts("2026-11-01T01:30:00-04:00") == value
    assert parse_ts("2026-11-01T05:30:00") == value  # no offset means UTC
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_ts("yesterday")


def test_micros_round_trip_exactly() -> None:
    value = datetime(2026, 3, 8, 7, 0, 0, 123456, tzinfo=UTC)
    assert from_micros(to_micros(value)) == value


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0), (5, 5.0), ("1.5", 1.5)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten", "-1s", "5d", True])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)
