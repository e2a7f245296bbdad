"""Per-deployment jitter: stable, bounded, millisecond-grained and evenly spread."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from agentcron.core.jitter import jitter_offset


def test_same_id_gives_the_same_offset_every_time() -> None:
    """Repeated calls never re-roll the offset."""
    assert {jitter_offset("depl_01JD3ABCDEF", 10.0) for _ in range(100)} == {
        jitter_offset("depl_01JD3ABCDEF", 10.0)
    }


def test_offset_is_stable_across_processes() -> None:
    """Another interpreter (a restarted daemon) computes the same offsets."""
    ids = [f"depl_{n:026d}" for n in range(20)]
    code = (
        "import sys; from agentcron.core.jitter import jitter_offset; "
        "print(' '.join(repr(jitter_offset(i, 10.0)) for i in sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *ids], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == [repr(jitter_offset(i, 10.0)) for i in ids]


@pytest.mark.parametrize("max_jitter", [10.0, 1.0, 0.25, 0.0015, 7.5])
def test_offset_is_within_zero_and_max_in_whole_milliseconds(max_jitter: float) -> None:
    """Every offset lies in [0, max_jitter) and is a whole number of milliseconds."""
    for n in range(2000):
        offset = jitter_offset(f"depl_{n}", max_jitter)
        assert 0.0 <= offset < max_jitter
        assert math.isclose(offset * 1000, round(offset * 1000), abs_tol=1e-6)


def test_zero_max_jitter_gives_zero() -> None:
    """With max_jitter 0 every deployment fires exactly at scheduled_at."""
    assert {jitter_offset(f"depl_{n}", 0) for n in range(100)} == {0.0}


def test_offsets_spread_evenly_over_the_window() -> None:
    """10,000 ids fill ten 1-second buckets of a 10 s window roughly equally (about 1,000 each)."""
    buckets = [0] * 10
    for n in range(10_000):
        buckets[int(jitter_offset(f"depl_{n:08d}", 10.0))] += 1
    assert all(850 <= count <= 1150 for count in buckets), buckets
    distinct = {jitter_offset(f"depl_{n:08d}", 10.0) for n in range(10_000)}
    assert len(distinct) > 6000  # 10,000 draws from 10,000 milliseconds: ~63% distinct


def test_offset_depends_on_the_id() -> None:
    """Different ids get different offsets (ids are not all folded onto one value)."""
    assert jitter_offset("depl_a", 10.0) != jitter_offset("depl_b", 10.0)


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_negative_or_non_finite_max_jitter_is_rejected(bad: float) -> None:
    """max_jitter must be a finite number of seconds >= 0."""
    with pytest.raises(ValueError, match="max_jitter must be a finite number"):
        jitter_offset("depl_a", bad)


@pytest.mark.parametrize(
    ("deployment_id", "offset"),
    [("depl_01JD3Z8Q4V5W6X7Y8Z9A0B1C2D", 1.915), ("depl_00000000000000000000000000", 5.073)],
)
def test_offsets_never_change_between_versions(deployment_id: str, offset: float) -> None:
    """Known values: an upgrade must not re-roll any deployment's jitter (SPEC §3)."""
    assert jitter_offset(deployment_id, 10.0) == offset
