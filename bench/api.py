"""Control API throughput and latency over the Unix socket.

    python -m bench.api [--quick] [--duration SECONDS]

The server (journal + service + scheduler + API, as the daemon wires them) runs in a separate
process started by this module (``--serve``); the load generator is an aiohttp client on a
``UnixConnector`` with 1 and with 16 concurrent connections. Measured: ``GET
/v1/deployments/{id}``, a 100-item ``GET /v1/deployments?limit=100`` page and ``POST
/v1/deployments``. Target: >= 3,000 GET/s with 16 connections and p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from agentcron import ids
from agentcron.api.app import create_app
from agentcron.api.socket import bind_control_socket, serve
from agentcron.clock import SystemClock
from agentcron.config import Declarations
from agentcron.core.models import AgentRef, RunErrorType
from agentcron.daemon import build_stack
from agentcron.errors import InvalidRequest, LaunchFailure
from agentcron.journal import SqliteJournal
from agentcron.launchers.base import SessionRequest
from agentcron.logs import configure_logging

AGENT = "agent_bench"
ENVIRONMENT = "env_bench"
SEED_DEPLOYMENTS = 150
TARGET_GETS_PER_SECOND = 3000.0
TARGET_P99_MS = 10.0


def create_body(index: int) -> dict[str, Any]:
    return {
        "name": f"bench {index}",
        "agent": AGENT,
        "environment_id": ENVIRONMENT,
        "initial_events": [
            {"type": "user.message", "content": [{"type": "text", "text": "Benchmark."}]}
        ],
        "schedule": {"type": "cron", "expression": "0 3 * * *", "timezone": "Europe/Berlin"},
        "metadata": {"index": str(index)},
    }


class BenchLauncher:
    """Resolves one agent and one environment; sessions are ids only (creates never launch)."""

    async def resolve_agent(self, agent_id: str, version: int | None) -> AgentRef:
        if agent_id != AGENT:
            raise InvalidRequest(f"agent: unknown agent {agent_id!r}")
        return AgentRef(id=agent_id, version=version or 1)

    async def validate_environment(self, environment_id: str) -> None:
        if environment_id != ENVIRONMENT:
            raise InvalidRequest(f"environment_id: unknown environment {environment_id!r}")

    async def create_session(self, request: SessionRequest) -> str:
        if request.agent.id != AGENT:
            raise LaunchFailure(
                RunErrorType.AGENT_ARCHIVED, f"agent `{request.agent.id}` is unknown"
            )
        return ids.new_id(ids.SESSION)

    async def validate_vaults(self, vault_ids: Sequence[str]) -> None:
        """Every vault is fine here."""

    def unavailable_reason(self) -> str | None:
        return None

    def reload(self, declarations: Declarations) -> None:
        """Nothing declared locally."""

    async def aclose(self) -> None:
        return None


# --- the server process ---------------------------------------------------------------------


async def serve_forever(socket_path: Path, state_dir: Path) -> None:
    configure_logging("warning", "json")
    clock = SystemClock()
    launcher = BenchLauncher()
    async with SqliteJournal.open(state_dir / "journal.db") as journal:
        stack = build_stack(journal=journal, launcher=launcher, clock=clock, max_deployments=10**7)
        scheduler = stack.scheduler
        app = create_app(
            service=stack.service,
            manual_runs=stack.firing,
            scheduler=scheduler,
            clock=clock,
            journal_path=journal.path,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            await tg.start(serve, app, bind_control_socket(socket_path))
            print("ready", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break


# --- the load generator ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    operation: str
    connections: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1]


async def measure(
    socket_path: Path, operation: str, connections: int, duration: float, deployment_id: str
) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=connections)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            if operation == "get":
                url = f"http://localhost/v1/deployments/{deployment_id}"
                async with session.get(url) as response:
                    await response.read()
                    return response.status
            if operation == "list100":
                async with session.get("http://localhost/v1/deployments?limit=100") as response:
                    await response.read()
                    return response.status
            body = json.dumps(create_body(next(counter)))
            async with session.post(
                "http://localhost/v1/deployments", data=body, headers=headers
            ) as response:
                await response.read()
                return response.status

        for _ in range(min(connections, 4)):  # warm up connections and caches
            await one()
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status = await one()
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors += 1

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(connections):
                tg.start_soon(worker)
        elapsed = time.perf_counter() - started
    return Result(
        operation=operation,
        connections=connections,
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )


async def seed(socket_path: Path) -> str:
    connector = aiohttp.UnixConnector(path=str(socket_path))
    async with aiohttp.ClientSession(connector=connector) as session:
        deployment_id = ""
        for index in range(SEED_DEPLOYMENTS):
            async with session.post(
                "http://localhost/v1/deployments", json=create_body(index)
            ) as response:
                response.raise_for_status()
                deployment_id = (await response.json())["id"]
        return deployment_id


async def run_load(socket_path: Path, duration: float) -> list[Result]:
    deployment_id = await seed(socket_path)
    results = []
    for operation in ("get", "list100", "create"):
        for connections in (1, 16):
            results.append(
                await measure(socket_path, operation, connections, duration, deployment_id)
            )
    return results


def render(results: Sequence[Result]) -> str:
    names = {
        "get": "GET /v1/deployments/{id}",
        "list100": "GET /v1/deployments?limit=100",
        "create": "POST /v1/deployments",
    }
    header = (
        f"{'operation':<31} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{names[r.operation]:<31} {r.connections:>5} {r.per_second:>9.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>6}"
        )
    return "\n".join(lines)


def verdict(results: Sequence[Result]) -> tuple[bool, str]:
    gets = next(r for r in results if r.operation == "get" and r.connections == 16)
    met = gets.per_second >= TARGET_GETS_PER_SECOND and gets.p99_ms < TARGET_P99_MS
    return met, (
        f"target (GET by id, 16 connections): >= {TARGET_GETS_PER_SECOND:.0f}/s and p99 < "
        f"{TARGET_P99_MS:.0f} ms -> {gets.per_second:.0f}/s, p99 {gets.p99_ms:.2f} ms: "
        f"{'met' if met else 'MISSED'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1.5 s per measurement")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 5)")
    parser.add_argument("--serve", nargs=2, metavar=("SOCKET", "STATE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        anyio.run(serve_forever, Path(args.serve[0]), Path(args.serve[1]), backend="asyncio")
        return 0
    duration = args.duration or (1.5 if args.quick else 5.0)
    workdir = Path(tempfile.mkdtemp(prefix="acbench-"))
    socket_path = workdir / "run" / "control.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.api", "--serve", str(socket_path), str(workdir / "state")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            print("the API server did not start", file=sys.stderr)
            return 1
        results = anyio.run(run_load, socket_path, duration, backend="asyncio")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"control API over a Unix socket, {duration:g} s per row, server in its own process")
    print(render(results))
    print(verdict(results)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
