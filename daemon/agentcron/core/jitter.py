"""Per-deployment fire jitter: a stable offset derived from the deployment id (SPEC §3).

A deployment fires at ``scheduled_at + jitter_offset(deployment_id, max_jitter)``. The offset
depends only on the id and ``max_jitter``, so restarts and other processes compute the same
value; it is never re-rolled.
"""

from __future__ import annotations

import hashlib
import math

__all__ = ["jitter_offset"]

_PERSON = b"agentcron.jitter"  # blake2b personalization: this hash means nothing elsewhere


def jitter_offset(deployment_id: str, max_jitter: float) -> float:
    """The stable jitter, in seconds, in ``[0, max_jitter)`` with millisecond resolution.

    Derivation: ``h`` = the first 8 bytes of ``blake2b(utf8(deployment_id), digest_size=8,
    person=b"agentcron.jitter")`` read big-endian; its top 53 bits give a uniform fraction
    ``u = (h >> 11) / 2**53`` in ``[0, 1)``; the offset is ``floor(u * max_jitter * 1000) /
    1000`` (whole milliseconds, so always strictly below ``max_jitter``). ``max_jitter == 0``
    gives ``0.0``. Raises ``ValueError`` for a negative or non-finite ``max_jitter``.
    """
    if not math.isfinite(max_jitter) or max_jitter < 0:
        raise ValueError(f"max_jitter must be a finite number of seconds >= 0, got {max_jitter!r}")
    if max_jitter == 0:
        return 0.0
    digest = hashlib.blake2b(deployment_id.encode("utf-8"), digest_size=8, person=_PERSON).digest()
    fraction = (int.from_bytes(digest, "big") >> 11) / float(1 << 53)
    milliseconds = math.floor(fraction * max_jitter * 1000)
    offset = milliseconds / 1000
    if offset >= max_jitter:  # only when max_jitter is below one millisecond step's rounding
        return 0.0
    return offset
