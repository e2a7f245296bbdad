"""Session creations per second and creation latency through each launcher.

    python -m bench.launchers [--quick] [--repeat N]

- ``command``: ``/bin/true`` as the agent, 16 creations in flight; the rate counts creations
  (spawned and returned), the children's exits are awaited before the next scenario.
- ``managed_agents``: the loopback hosted-API stand-in (``python -m tests.support.hosted_api``,
  its own process), 64 creations in flight, with no server delay and with a 200 ms delay per
  answer. At 200 ms the 64 workers either start spread over one delay ("steady", the load
  jittered schedules produce) or all at once ("burst": they stay in lock-step, and each answer
  waits for the client to process the 63 that arrived with it).

Each scenario runs ``--repeat`` times; the table shows the median run (by rate).
Targets: ``command`` >= 200 creations/s, ``managed_agents`` >= 300 creations/s at 200 ms.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import structlog
from anyio.streams.text import TextReceiveStream

from agentcron.clock import SystemClock
from agentcron.config import AgentDecl, Declarations, EnvironmentDecl
from agentcron.core.models import AgentRef
from agentcron.launchers import CommandLauncher, ManagedAgentsLauncher
from agentcron.launchers.base import SessionRequest
from bench.common import scratch_dir

EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "benchmark"}]}]


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    scenario: str
    count: int
    concurrency: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def session_request(index: int) -> SessionRequest:
    return SessionRequest(
        deployment_id="depl_bench",
        run_id=f"drun_{index:08d}",
        agent=AgentRef(id="agent_bench", version=1),
        environment_id="env_bench",
        initial_events=EVENTS,
        metadata={"bench": "launchers"},
    )


async def drive(
    scenario: str,
    create: Callable[[int], Awaitable[str]],
    count: int,
    concurrency: int,
    stagger: float = 0.0,
) -> Result:
    """Run ``count`` creations with ``concurrency`` in flight; every one must succeed.

    With ``stagger`` the workers start spread evenly over that many seconds (a steady load);
    without, they all start at once and stay in lock-step (bursts).
    """
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker(number: int) -> None:
        await anyio.sleep(stagger * number / concurrency)
        for index in next_index:
            begun = time.perf_counter()
            await create(index)
            latencies.append(time.perf_counter() - begun)

    started = time.perf_counter()
    async with anyio.create_task_group() as task_group:
        for number in range(concurrency):
            task_group.start_soon(worker, number)
    seconds = time.perf_counter() - started
    return Result(
        scenario=scenario,
        count=count,
        concurrency=concurrency,
        seconds=seconds,
        latencies=latencies,
    )


async def bench_command(count: int, concurrency: int) -> Result:
    state = scratch_dir("agentcron-bench-")
    declarations = Declarations(
        agents={"agent_bench": AgentDecl(id="agent_bench", version=1, argv=("/bin/true",))},
        environments={"env_bench": EnvironmentDecl(id="env_bench", cwd=state)},
    )
    launcher = CommandLauncher(
        declarations=declarations,
        state_dir=state,
        max_concurrent_sessions=count + 1,
        stop_grace=5.0,
        clock=SystemClock(),
    )
    async with launcher:
        result = await drive(
            "command (/bin/true)",
            lambda index: launcher.create_session(session_request(index)),
            count,
            concurrency,
        )
        with anyio.fail_after(60):
            while launcher.running_sessions():  # noqa: ASYNC110 - polling a counter
                await anyio.sleep(0.01)
    return result


async def bench_managed(count: int, concurrency: int, delay: float, *, steady: bool) -> Result:
    """Against the stand-in in its own process, so that its CPU is not charged to the launcher."""
    command = [sys.executable, "-m", "tests.support.hosted_api", "--delay", str(delay)]
    command += ["--agent", "agent_bench", "--environment", "env_bench"]
    async with await anyio.open_process(command, stderr=None) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        with anyio.fail_after(30):
            first_line = await TextReceiveStream(server.stdout).receive()
        where = json.loads(first_line)
        async with ManagedAgentsLauncher(
            base_url=where["base_url"], api_key=where["api_key"], timeout=30.0
        ) as launcher:
            result = await drive(
                f"managed_agents {delay * 1000:.0f} ms {'steady' if steady else 'burst'}",
                lambda index: launcher.create_session(session_request(index)),
                count,
                concurrency,
                stagger=delay if steady else 0.0,
            )
        await server.stdin.aclose()  # the stand-in stops when its stdin closes
    return result


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'scenario':<32} {'n':>6} {'conc':>5} {'creations/s':>12} {'p50 ms':>9} {'p99 ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.scenario:<32} {r.count:>6} {r.concurrency:>5} {r.rate:>12.0f} "
            f"{r.percentile(0.50) * 1000:>9.1f} {r.percentile(0.99) * 1000:>9.1f}"
        )


async def run(quick: bool, repeat: int) -> list[Result]:
    plans: list[Callable[[], Awaitable[Result]]] = [
        lambda: bench_command(300 if quick else 2000, 16),
        lambda: bench_managed(1000 if quick else 6000, 64, 0.0, steady=False),
        lambda: bench_managed(640 if quick else 3200, 64, 0.2, steady=True),
        lambda: bench_managed(640 if quick else 3200, 64, 0.2, steady=False),
    ]
    medians = []
    for plan in plans:
        runs = [await plan() for _ in range(repeat)]
        rates = [r.rate for r in runs]
        median = statistics.median_low(rates)
        medians.append(next(r for r in runs if r.rate == median))
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launchers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (about 5 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per scenario")
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    # One info line per local session would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"agentcron launcher benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, median of {repeat}")
    print_table(anyio.run(run, args.quick, repeat))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
