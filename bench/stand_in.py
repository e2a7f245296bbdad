"""The loopback stand-in of the hosted API alone: the floor under the zero-jitter storm.

    python -m bench.stand_in [--n N ...] [--in-flight K ...]

The stand-in (``python -m tests.support.hosted_api``, its own process, no delay) receives the burst
the daemon sends it in a zero-jitter ``managed_agents`` storm: N ``POST /v1/sessions`` with
the daemon's session body and headers, all due at one instant, ``K`` at a time over ``K``
keep-alive connections opened at that instant (the daemon's fire pool,
``[launcher] max_concurrent_creations``, opens as many). Before it, 1,000 requests over 16
other connections warm the stand-in up, as creating the deployments does in the storm.

The client is a small asyncio protocol sending request bytes built once; it runs in this
process, on the other core, and costs less than half of what the stand-in spends per request
(both are reported), so the stand-in is the limit. Each request's completion is measured from
the instant of the burst: that spread is what the storm's ``created_at - scheduled_at`` would
be if the daemon cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.streams.text import TextReceiveStream

from agentcron.core.models import AgentRef
from agentcron.launchers.base import SessionRequest
from agentcron.launchers.managed_agents import ANTHROPIC_VERSION, MANAGED_AGENTS_BETA
from bench.common import Row, Spread, host_busy_s, process_usage, render_rows

AGENT = "agent_rec"
ENVIRONMENT = "env_local"
WARM_UP = 1_000  # requests over 16 connections, closed before the burst
EVENTS = [{"type": "user.message", "content": [{"type": "text", "text": "hello storm-0"}]}]


@dataclass(frozen=True, slots=True, kw_only=True)
class StandInResult:
    n: int
    in_flight: int
    done_ms: Spread  # each request's completion after the burst's instant
    stand_in_cpu_s: float
    client_cpu_s: float
    others_cpu_s: float  # every other process on the machine, over the burst


def request_bytes(host: str, api_key: str) -> bytes:
    """One ``POST /v1/sessions`` as the daemon's launcher sends it."""
    session = SessionRequest(
        deployment_id="depl_storm",
        run_id="drun_storm",
        agent=AgentRef(id=AGENT, version=1),
        environment_id=ENVIRONMENT,
        initial_events=EVENTS,
        title="storm-0",
    )
    body = json.dumps(session.session_body(), ensure_ascii=False).encode()
    head = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: {host}\r\nx-api-key: {api_key}\r\n"
        f"anthropic-version: {ANTHROPIC_VERSION}\r\nanthropic-beta: {MANAGED_AGENTS_BETA}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """Sends one request at a time; reads each answer by its ``Content-Length``."""

    def __init__(self, burst: _Burst) -> None:
        self.burst = burst
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.burst.send_next(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.burst.answered(head, body)
            self.burst.send_next(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.burst.lost(exc)


class _Burst:
    def __init__(self, n: int, request: bytes) -> None:
        self.remaining = n
        self.request = request
        self.started = 0.0
        self.done: list[float] = []
        self.finished = asyncio.get_running_loop().create_future()
        self.n = n

    def send_next(self, connection: _Connection) -> None:
        if self.remaining <= 0:
            return
        self.remaining -= 1
        assert connection.transport is not None
        connection.transport.write(self.request)

    def answered(self, head: str, body: bytes) -> None:
        self.done.append((time.perf_counter() - self.started) * 1000)
        status = head.split(" ", 2)[1]
        if status != "200" or not json.loads(body).get("id", "").startswith("sesn_"):
            self._fail(RuntimeError(f"the stand-in answered {head.splitlines()[0]}: {body!r}"))
        elif len(self.done) == self.n and not self.finished.done():
            self.finished.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if len(self.done) < self.n:
            self._fail(RuntimeError(f"a connection to the stand-in was lost: {exc!r}"))

    def _fail(self, exc: Exception) -> None:
        if not self.finished.done():
            self.finished.set_exception(exc)


async def burst(host: str, port: int, api_key: str, n: int, in_flight: int) -> list[float]:
    """Send the burst; each request's completion in ms after its start."""
    loop = asyncio.get_running_loop()
    state = _Burst(n, request_bytes(f"{host}:{port}", api_key))
    state.started = time.perf_counter()
    connections = await asyncio.gather(
        *(
            loop.create_connection(lambda: _Connection(state), host, port)
            for _ in range(min(in_flight, n))
        )
    )
    try:
        await asyncio.wait_for(state.finished, timeout=120)
    finally:
        for transport, _ in connections:
            transport.close()
    return state.done


@dataclass(frozen=True, slots=True, kw_only=True)
class StandIn:
    """A running stand-in process: where it listens, the key it wants, its pid."""

    base_url: str
    api_key: str
    pid: int

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.base_url.removeprefix("http://").partition(":")
        return host, int(port)


@asynccontextmanager
async def stand_in_process() -> AsyncIterator[StandIn]:
    """``python -m tests.support.hosted_api`` serving the storm's agent and environment, with
    no delay."""
    command = [sys.executable, "-m", "tests.support.hosted_api", "--agent", AGENT]
    command += ["--environment", ENVIRONMENT]
    async with await anyio.open_process(command, stderr=None) as server:
        assert server.stdout is not None
        assert server.stdin is not None
        with anyio.fail_after(30):
            where = json.loads(await TextReceiveStream(server.stdout).receive())
        try:
            yield StandIn(base_url=where["base_url"], api_key=where["api_key"], pid=server.pid)
        finally:
            await server.stdin.aclose()  # the stand-in stops when its stdin closes


async def run_stand_in(n: int, in_flight: int) -> StandInResult:
    """One burst of ``n`` against a fresh stand-in process (see the module docstring)."""
    async with stand_in_process() as server:
        host, port = server.host_port
        # Warm, as in the storm, where the deployments' creation looked up their agent and
        # environment: every code path of the stand-in has run, but no connection stays open.
        await burst(host, port, server.api_key, WARM_UP, 16)
        await anyio.sleep(0.5)
        server_before = process_usage(server.pid).cpu_s
        client_before = _own_cpu_s()
        busy_before = host_busy_s()
        done = await burst(host, port, server.api_key, n, in_flight)
        client_cpu = _own_cpu_s() - client_before
        server_cpu = process_usage(server.pid).cpu_s - server_before
        others = host_busy_s() - busy_before - client_cpu - server_cpu
    return StandInResult(
        n=n,
        in_flight=in_flight,
        done_ms=Spread.of(done),
        stand_in_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
        others_cpu_s=max(0.0, others),
    )


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def stand_in_rows(result: StandInResult) -> list[Row]:
    case = f"stand-in alone, N={result.n:,} in-flight={result.in_flight}"

    def row(metric: str, value: float | str, unit: str = "") -> Row:
        return Row(bench="stand-in", case=case, metric=metric, value=value, unit=unit)

    done = result.done_ms
    return [
        row("answered after the burst p50", done.p50, "ms"),
        row("answered after the burst p99", done.p99, "ms"),
        row("answered after the burst max", done.max, "ms"),
        row("answers / s", result.n / (done.max / 1000), "/s"),
        row("stand-in CPU per request", result.stand_in_cpu_s / result.n * 1e6, "µs"),
        row("client CPU per request", result.client_cpu_s / result.n * 1e6, "µs"),
        row("other processes' CPU over the burst", result.others_cpu_s, "s"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stand_in", description=__doc__)
    parser.add_argument("--n", type=int, action="append", help="burst size (repeatable)")
    parser.add_argument("--in-flight", type=int, action="append", help="connections (repeatable)")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for n in args.n or [2_000, 10_000]:
        for in_flight in args.in_flight or [64]:
            rows += stand_in_rows(anyio.run(run_stand_in, n, in_flight))
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
