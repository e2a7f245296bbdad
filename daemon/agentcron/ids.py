"""Identifiers: a prefix plus a ULID (48-bit millisecond time + 80 random bits).

ULIDs are Crockford base32, 26 characters, and sort by creation time; within one millisecond
this process increments the random part so ids it makes stay strictly increasing.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = -1
_last_random = 0

DEPLOYMENT = "depl_"
RUN = "drun_"
SESSION = "sesn_"
REQUEST = "req_"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def ulid() -> str:
    """A new 26-character ULID, strictly greater than the previous one from this process."""
    global _last_ms, _last_random  # noqa: PLW0603 - the monotonic state is process-wide
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms
            _last_random = (_last_random + 1) & ((1 << 80) - 1)
        else:
            _last_ms = now_ms
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1
        return _encode(now_ms, 10) + _encode(_last_random, 16)


def new_id(prefix: str) -> str:
    """``prefix`` + a new ULID, e.g. ``new_id(DEPLOYMENT)`` -> ``depl_01JD3...``."""
    return prefix + ulid()
