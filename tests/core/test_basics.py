"""Identifiers and timestamps: the small shared pieces."""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentcron import ids
from agentcron.core.timeutil import format_ts, from_micros, parse_duration, parse_ts, to_micros
from agentcron.systemd import Notifier


def test_ids_have_prefix_and_sort_by_creation() -> None:
    made = [ids.new_id(ids.RUN) for _ in range(2000)]
    assert all(x.startswith("drun_") and len(x) == 5 + 26 for x in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


RANDOM_MASK = (1 << 80) - 1


def _decode(ulid: str) -> int:
    return sum(
        "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char) << (5 * (25 - position))
        for position, char in enumerate(ulid)
    )


def test_ulids_are_crockford_base32_with_the_creation_millisecond_first() -> None:
    """26 characters of Crockford's alphabet; the top 48 bits are the creation time in ms."""
    before = time.time_ns() // 1_000_000
    made = [ids.ulid() for _ in range(500)]
    after = time.time_ns() // 1_000_000
    for ulid in made:
        assert len(ulid) == 26
        assert set(ulid) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
        assert before <= _decode(ulid) >> 80 <= after
    values = [_decode(ulid) for ulid in made]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_ids_made_in_one_millisecond_count_up_by_one() -> None:
    """Within a millisecond each ULID is the previous one plus one, carries across the 10-bit
    digit pairs of the encoding included; a fresh millisecond draws 79 random bits."""
    by_millisecond: defaultdict[int, list[int]] = defaultdict(list)
    for value in map(_decode, (ids.ulid() for _ in range(20_000))):
        by_millisecond[value >> 80].append(value & RANDOM_MASK)
    carries = 0
    for index, randoms in enumerate(by_millisecond.values()):
        assert randoms == list(range(randoms[0], randoms[0] + len(randoms)))
        if index:  # the first millisecond may continue ids made before this test
            assert randoms[0] < 1 << 79
        carries += (randoms[-1] >> 10) - (randoms[0] >> 10)
    assert carries > 0, "no increment carried out of the lowest digit pair"


def test_ids_stay_increasing_across_milliseconds_and_random_pool_refills() -> None:
    """More fresh milliseconds than one pool of random bytes serves (409), still in order."""
    made: list[str] = []
    for _ in range(450):
        made += [ids.ulid(), ids.ulid()]  # two in one millisecond: the increment
        time.sleep(0.0011)  # then a fresh millisecond: new random bits from the pool
    assert len({ulid[:10] for ulid in made}) >= 450
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
    [
        ("10s", 10.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("90d", 7_776_000.0),
        (5, 5.0),
        ("1.5", 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten", "-1s", "5w", True])
def test_bad_durations_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


def test_a_notify_socket_nobody_reads_never_blocks_the_daemon(tmp_path: Path) -> None:
    """systemd always reads its socket; a stalled reader must not stall the event loop (the
    kernel queues only a few datagrams per unread socket): further messages are dropped."""
    path = tmp_path / "notify.sock"
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        for index in range(200):  # a blocking socket would hang here at the 11th
            notifier.status(f"line {index}")
        notifier.close()
        reader.settimeout(1)
        assert reader.recv(100) == b"STATUS=line 0"
    finally:
        reader.close()
