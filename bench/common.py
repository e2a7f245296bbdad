"""Helpers shared by the whole-daemon benchmarks: percentiles, process RSS/CPU, result tables."""

from __future__ import annotations

import atexit
import functools
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, removed when the benchmark process exits.

    Not at the end of the benchmark that used it: on ext4 without a journal (as on this
    project's development machine) the inode allocator skips inodes freed in the last one to
    five minutes, so right after 10,000 session logs were deleted every new file costs a scan
    of them (measured: 18 µs per create before, 250-650 µs after). Deferring the deletions
    keeps one storm from paying for the previous one's clean-up. With ``AGENTCRON_BENCH_KEEP=1``
    the directories are kept (and named on stderr), to read the daemon's log and session logs
    afterwards, or to run benchmarks back to back without any deletion in between.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("AGENTCRON_BENCH_KEEP") == "1":
        atexit.register(print, f"kept {path}", file=sys.stderr)
    else:
        atexit.register(functools.partial(shutil.rmtree, path, ignore_errors=True))
    return path


def file_create_us(directory: Path, count: int = 200) -> float:
    """Mean µs to create (and close) one new empty file in ``directory``; the files stay.

    The cost the ``command`` launcher pays per session log, taken just before a run so a
    table shows the state of the file system it ran on.
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index in range(count):
        os.close(os.open(directory / f"probe-{index}.log", _CREATE_FLAGS, 0o600))
    return (time.perf_counter() - started) / count * 1e6


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in [0, 1]) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    """p50 / p99 / max of a sample, in the sample's unit."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            count=len(values),
            p50=percentile(values, 0.50),
            p99=percentile(values, 0.99),
            max=max(values) if values else math.nan,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessUsage:
    """Memory and CPU of one process, read from ``/proc``."""

    rss_mb: float  # VmRSS
    hwm_mb: float  # VmHWM: the peak resident set size
    cpu_s: float  # utime + stime


def process_usage(pid: int) -> ProcessUsage:
    """Read ``/proc/<pid>/status`` (VmRSS, VmHWM) and ``/proc/<pid>/stat`` (utime + stime)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) / 1024  # kB -> MB
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15 of stat
    return ProcessUsage(
        rss_mb=fields.get("VmRSS", math.nan),
        hwm_mb=fields.get("VmHWM", math.nan),
        cpu_s=(utime + stime) / _CLOCK_TICKS,
    )


def host_steal_s() -> float:
    """CPU seconds the hypervisor has taken from this machine's cores since boot (``steal`` in
    ``/proc/stat``; 0 on bare metal). The difference over a run says how much of the machine
    other tenants had meanwhile."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / _CLOCK_TICKS if len(fields) > 8 else math.nan


def host_busy_s() -> float:
    """CPU seconds all cores of this machine have been busy since boot (every ``/proc/stat``
    field but idle and iowait). The difference over a run, minus what the benchmark's own
    processes used, is what everything else on the machine took meanwhile."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the final table: which benchmark, what was measured, the value and target."""

    bench: str
    case: str
    metric: str
    value: float | str
    unit: str = ""
    target: str = ""

    def cells(self) -> list[str]:
        return [self.bench, self.case, self.metric, fmt(self.value), self.unit, self.target]


def fmt(value: float | str) -> str:
    """Numbers with a precision that suits their size; strings unchanged."""
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (readable as plain text too)."""
    body = [list(row) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in body
    ]
    return "\n".join(lines)


def render_rows(rows: Iterable[Row]) -> str:
    return render_table(
        ["bench", "case", "metric", "value", "unit", "target"], [r.cells() for r in rows]
    )
