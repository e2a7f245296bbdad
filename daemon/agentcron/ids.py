"""Identifiers: a prefix plus a ULID (48-bit millisecond time + 80 random bits).

ULIDs are Crockford base32, 26 characters, and sort by creation time; within one millisecond
this process increments the random part so ids it makes stay strictly increasing.

Encoding is table-driven: every 10 bits become one of 1,024 precomputed two-character
strings, and the 10 characters of the time part are computed once per millisecond. Random
bytes are drawn from ``os.urandom`` in blocks, not one system call per millisecond.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(first + second for first in _ALPHABET for second in _ALPHABET)  # 10 bits each
_RANDOM_MAX = (1 << 80) - 1
_POOL_BYTES = 4096  # random bytes fetched per system call (409 milliseconds' worth)
_lock = threading.Lock()
_last_ms = -1
_last_random = 0
_time_part = ""
_pool = b""
_pool_at = 0

DEPLOYMENT = "depl_"
RUN = "drun_"
SESSION = "sesn_"
REQUEST = "req_"
WEBHOOK_MESSAGE = "msg_"  # a webhook event: its `webhook-id` (the Standard Webhooks prefix)


def _encode(value: int, length: int) -> str:
    """``value`` as ``length`` Crockford base32 characters, most significant first."""
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def _encode_random(value: int) -> str:
    """An 80-bit ``value`` as 16 Crockford base32 characters (eight 10-bit table lookups)."""
    pairs = _PAIRS
    return (
        pairs[value >> 70]
        + pairs[(value >> 60) & 1023]
        + pairs[(value >> 50) & 1023]
        + pairs[(value >> 40) & 1023]
        + pairs[(value >> 30) & 1023]
        + pairs[(value >> 20) & 1023]
        + pairs[(value >> 10) & 1023]
        + pairs[value & 1023]
    )


def _fresh_random() -> int:
    """79 random bits (the top bit stays clear so increments within a millisecond never wrap)."""
    global _pool, _pool_at  # noqa: PLW0603 - the pool is process-wide, guarded by _lock
    if _pool_at + 10 > len(_pool):
        _pool = os.urandom(_POOL_BYTES)
        _pool_at = 0
    start = _pool_at
    _pool_at = start + 10
    return int.from_bytes(_pool[start : start + 10], "big") >> 1


def ulid() -> str:
    """A new 26-character ULID, strictly greater than the previous one from this process."""
    global _last_ms, _last_random, _time_part  # noqa: PLW0603 - the monotonic state is process-wide
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            _last_random = (_last_random + 1) & _RANDOM_MAX
        else:
            _last_ms = now_ms
            _time_part = _encode(now_ms, 10)
            _last_random = _fresh_random()
        return _time_part + _encode_random(_last_random)


def _forget_pool() -> None:
    """A forked child must not hand out its parent's unused random bytes."""
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_id(prefix: str) -> str:
    """``prefix`` + a new ULID, e.g. ``new_id(DEPLOYMENT)`` -> ``depl_01JD3...``."""
    return prefix + ulid()
