"""The one entry point of the benchmarks.

    python -m bench all [--quick]          every benchmark (storm and peer first), one summary table
    python -m bench storm|peer [--quick]   the whole-daemon storm / the APScheduler peer
    python -m bench storm+peer [--quick]   both, side by side with the ratios
    python -m bench storm+peer --n 10000   only that size (repeatable)
    python -m bench storm --max-jitter 0 --n 2000 --n 10000
                                           every deployment due at one instant: the runs'
                                           created_at - scheduled_at, read through the SDK
    python -m bench storm --launcher managed_agents   one launcher (repeatable; default both)
    python -m bench schedule|journal|journal_pg|launchers|scheduler|api|retention|failover [--quick]
    python -m bench.storm --journal sqlite --journal postgresql   both journals, side by side

``--quick`` is the CI-sized run (storm and peer at N=1,000). The component benchmarks
(``bench/<name>.py``) run as ``python -m bench.<name> [--quick]`` subprocesses; their own tables
are printed as they finish and listed in the summary with their exit status and duration.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from bench.common import Row, fmt, render_rows
from bench.peer_apscheduler import PeerResult, peer_rows, run_peer
from bench.storm import (
    LauncherName,
    StormResult,
    floor_rows,
    run_storm,
    storm_rows,
    storm_sizes,
    wants_floor,
)

COMPONENTS = (
    "schedule",
    "journal",
    "journal_pg",
    "launchers",
    "scheduler",
    "api",
    "retention",
    "failover",
)
WHOLE = ("storm", "peer")
PEER_LAUNCHER: LauncherName = "command"


def peer_sizes(quick: bool) -> list[int]:
    return [1_000] if quick else [1_000, 10_000]


def run_component(name: str, quick: bool) -> tuple[Row, str]:
    """``python -m bench.<name> [--quick]`` in a subprocess: its summary row and its output."""
    if not (Path(__file__).parent / f"{name}.py").exists():
        return Row(bench=name, case="-", metric="status", value="not available"), ""
    command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if quick else [])]
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=900 if quick else 3600,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else ""
        return Row(bench=name, case="-", metric="status", value="timed out"), output
    seconds = time.monotonic() - started
    status = "ok" if completed.returncode == 0 else f"exit {completed.returncode}"
    output = completed.stdout
    if completed.returncode != 0:
        output += "\n" + completed.stderr[-3000:]
    row = Row(
        bench=name,
        case=" ".join(command[1:]).replace(sys.executable, "python"),
        metric="status, wall time",
        value=f"{status}, {fmt(seconds)} s",
    )
    return row, output


def ratio_rows(storm: StormResult, peer: PeerResult) -> list[Row]:
    """APScheduler's number divided by ours (> 1 means we are better), per metric."""
    case = f"apscheduler / agentcron, N={storm.n:,}"

    pairs = [
        ("setup time", peer.setup_s, storm.create_s),
        ("fire lag p50", peer.lag_ms.p50, storm.lag_ms.p50),
        ("fire lag p99", peer.lag_ms.p99, storm.lag_ms.p99),
        (
            "all done after last due",
            peer.completed_after_last_due_s,
            storm.completed_after_last_due_s,
        ),
        ("RSS peak", peer.hwm_mb, storm.hwm_mb),
    ]
    return [
        Row(
            bench="ratio",
            case=case,
            metric=metric,
            value=theirs / ours if ours > 0 else float("nan"),
            unit="x",
        )
        for metric, theirs, ours in pairs
    ]


def run_whole(
    which: Sequence[str],
    quick: bool,
    sizes: Sequence[int] = (),
    *,
    launchers: Sequence[LauncherName] = ("command", "managed_agents"),
    max_jitter: float = 10.0,
) -> list[Row]:
    rows: list[Row] = []
    storms: dict[tuple[str, int], StormResult] = {}
    floors: dict[tuple[str, int], list[Row]] = {}
    peers: dict[int, PeerResult] = {}
    if "storm" in which:
        for launcher in launchers:
            for n in sizes or storm_sizes(quick):
                storm = functools.partial(run_storm, n, launcher, max_jitter=max_jitter)
                result = anyio.run(storm)
                storms[(launcher, n)] = result
                floors[(launcher, n)] = floor_rows(result) if wants_floor(result) else []
                _show(storm_rows(result) + floors[(launcher, n)])
    if "peer" in which:
        for n in sizes or peer_sizes(quick):
            peers[n] = run_peer(n)
            _show(peer_rows(peers[n]))
    for key, result in storms.items():
        rows += storm_rows(result) + floors[key]
    for n, peer in peers.items():
        rows += peer_rows(peer)
        ours = storms.get((PEER_LAUNCHER, n))
        if ours is not None:
            rows += ratio_rows(ours, peer)
    return rows


def _show(rows: list[Row]) -> None:
    print(render_rows(rows), end="\n\n", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "which",
        choices=["all", "storm+peer", *WHOLE, *COMPONENTS],
        help="what to run",
    )
    parser.add_argument("--quick", action="store_true", help="the short, CI-sized run")
    parser.add_argument(
        "--n", type=int, action="append", default=[], help="storm/peer size (repeatable)"
    )
    parser.add_argument(
        "--launcher",
        choices=["command", "managed_agents"],
        action="append",
        default=[],
        help="storm launcher (repeatable; default both)",
    )
    parser.add_argument(
        "--max-jitter",
        type=float,
        default=10.0,
        help="the storm daemon's max_jitter in seconds (0: all due at the minute boundary)",
    )
    args = parser.parse_args(argv)
    if args.which == "all":
        components, whole = list(COMPONENTS), list(WHOLE)
    elif args.which == "storm+peer":
        components, whole = [], list(WHOLE)
    elif args.which in WHOLE:
        components, whole = [], [args.which]
    else:
        components, whole = [args.which], []
    summary: list[Row] = []
    if whole:  # first: the components' clean-up would slow the storm's file creation
        print(f"== {' + '.join(whole)}", flush=True)
        launchers = tuple(args.launcher) or ("command", "managed_agents")
        summary += run_whole(
            whole, args.quick, args.n, launchers=launchers, max_jitter=args.max_jitter
        )
    for name in components:
        print(f"== bench.{name}", flush=True)
        row, output = run_component(name, args.quick)
        print(output, flush=True)
        summary.append(row)
    print("== summary")
    print(render_rows(summary))
    failed = [
        r for r in summary if r.metric.startswith("status") and not str(r.value).startswith("ok")
    ]
    return 1 if any(str(r.value).startswith(("exit", "timed")) for r in failed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
