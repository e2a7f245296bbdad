"""Benchmark: next fire instants for many deployments (``python -m bench.schedule [--quick]``).

A realistic mix: a few hundred distinct expressions (daily, weekday, weekly, monthly, every-N
minutes, leap day, OR-rule) spread over ~30 zones, plus a share of one-off expressions. Measures
``compile_schedule(expression, zone).next_after(now)`` for every deployment with a cold cache
(parse + zone load + compute) and a warm one, and ``upcoming(..., 5)`` for 100 deployments.
Prints the median (and min/max) over several repeats.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime

from agentcron.core import schedule
from agentcron.core.schedule import compile_schedule, upcoming

ZONES = (
    "UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Sao_Paulo", "America/Santiago", "America/Mexico_City", "America/Toronto",
    "America/St_Johns", "Europe/London", "Europe/Dublin", "Europe/Berlin", "Europe/Paris",
    "Europe/Madrid", "Europe/Moscow", "Europe/Istanbul", "Africa/Cairo", "Africa/Lagos",
    "Africa/Johannesburg", "Asia/Kolkata", "Asia/Dubai", "Asia/Shanghai", "Asia/Tokyo",
    "Asia/Singapore", "Asia/Kathmandu", "Australia/Sydney", "Australia/Lord_Howe",
    "Pacific/Auckland", "Pacific/Chatham",
)  # fmt: skip
NOW = datetime(2026, 5, 9, 12, 34, 56, tzinfo=UTC)


def shared_expressions(rng: random.Random, count: int) -> list[str]:
    """Distinct expressions of the kinds people schedule, ``count`` of them."""
    templates: list[Callable[[], str]] = [
        lambda: f"{rng.choice((0, 0, 15, 30, 45))} {rng.randrange(24)} * * *",
        lambda: f"{rng.choice((0, 30))} {rng.randrange(6, 20)} * * 1-5",
        lambda: f"0 {rng.randrange(24)} * * {rng.choice(('MON', 'FRI', 'SUN', '6'))}",
        lambda: f"0 {rng.randrange(24)} {rng.choice((1, 15, 28))} * *",
        lambda: f"*/{rng.choice((1, 2, 5, 10, 15, 20, 30))} * * * *",
        lambda: f"{rng.randrange(60)} */{rng.choice((2, 3, 4, 6, 12))} * * *",
        lambda: f"0 {rng.randrange(8, 18)} 1 */3 *",
        lambda: f"0 9 13 * {rng.choice(('FRI', '1', '0'))}",
        lambda: f"{rng.randrange(60)} {rng.randrange(24)} 29 2 *",
        lambda: f"*/15 {rng.randrange(0, 12)}-{rng.randrange(12, 24)} * * MON-FRI",
    ]
    found: set[str] = set()
    while len(found) < count:
        found.add(rng.choice(templates)())
    return sorted(found)


def deployments(size: int, seed: int = 7) -> list[tuple[str, str]]:
    """(expression, zone) for ``size`` deployments: 95% shared expressions, 5% one-offs."""
    rng = random.Random(seed)
    shared = shared_expressions(rng, 300)
    result = [(rng.choice(shared), rng.choice(ZONES)) for _ in range(size - size // 20)]
    for n in range(size // 20):
        minutes = ",".join(str(m) for m in sorted(rng.sample(range(60), 3)))
        result.append((f"{minutes} {n % 24} * * *", rng.choice(ZONES)))
    rng.shuffle(result)
    return result


def clear_caches() -> None:
    compile_schedule.cache_clear()
    schedule._parse_cached.cache_clear()
    zoneinfo.ZoneInfo.clear_cache()


def time_next_fire(deps: list[tuple[str, str]], *, cold: bool) -> float:
    if cold:
        clear_caches()
    started = time.perf_counter()
    for expression, zone in deps:
        compile_schedule(expression, zone).next_after(NOW)
    return time.perf_counter() - started


def time_upcoming(deps: list[tuple[str, str]]) -> float:
    started = time.perf_counter()
    for expression, zone in deps[:100]:
        upcoming(expression, zone, NOW, 5)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.schedule", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 deployments, 3 repeats")
    args = parser.parse_args(argv)
    size, repeats = (10_000, 3) if args.quick else (100_000, 5)
    deps = deployments(size)
    distinct = len(set(deps))
    print(
        f"{size:,} deployments, {len({e for e, _ in deps}):,} distinct expressions, "
        f"{len({z for _, z in deps})} zones, {distinct:,} distinct (expression, zone) pairs; "
        f"now = {NOW.isoformat()}; {repeats} repeats"
    )
    cold = [time_next_fire(deps, cold=True) for _ in range(repeats)]
    warm = [time_next_fire(deps, cold=False) for _ in range(repeats)]
    few = [time_upcoming(deps) for _ in range(repeats)]
    rows = [
        (f"next_after, cold cache ({size:,})", cold),
        (f"next_after, warm cache ({size:,})", warm),
        ("upcoming(5), warm (100)", few),
    ]
    print(f"{'measurement':<36} {'median':>10} {'min':>10} {'max':>10} {'per item':>10}")
    for label, samples in rows:
        items = 100 if label.startswith("upcoming") else size
        median = statistics.median(samples)
        print(
            f"{label:<36} {median * 1000:>8.1f}ms {min(samples) * 1000:>8.1f}ms "
            f"{max(samples) * 1000:>8.1f}ms {median / items * 1e6:>8.2f}us"
        )


if __name__ == "__main__":
    main()
