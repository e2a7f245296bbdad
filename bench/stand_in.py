"""The loopback stand-in of the hosted API alone: the floor under the zero-jitter storm.

    python -m bench.stand_in [--n N ...] [--in-flight K ...] [--server aiohttp|lean]
    python -m bench.stand_in --serve       the lean server alone, until stdin closes
    python -m bench.stand_in --client      the daemon's launcher alone against the stand-in

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

Two servers can play the hosted API (``--server``, and the storm's ``--stand-in``):

- ``aiohttp`` (the default): ``python -m tests.support.hosted_api``, the test suite's stand-in, a
  full aiohttp application (routing, request objects, JSON responses): about 100-190 µs of CPU
  per request on this project's machine, so at N=2,000 it alone takes 200-380 ms of its core.
- ``lean``: ``python -m bench.stand_in --serve``, the same answers (a session for a known agent
  version and environment with the right key, else the hosted API's 401/404/400; the agent and
  environment lookups) from one asyncio protocol object per connection: close to what an
  "instant" server costs, so that what remains is the daemon's own time.
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
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
from anyio.streams.text import TextReceiveStream

from agentcron import ids
from agentcron.core.models import AgentRef
from agentcron.core.timeutil import format_ts
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
    server: ServerKind
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


ServerKind = Literal["aiohttp", "lean"]
LEAN_KEY = "sk-lean-stand-in"


@asynccontextmanager
async def stand_in_process(kind: ServerKind = "aiohttp") -> AsyncIterator[StandIn]:
    """The stand-in in its own process, serving the storm's agent and environment with no
    delay: ``python -m tests.support.hosted_api`` or, ``lean``, ``python -m bench.stand_in
    --serve``."""
    if kind == "lean":
        command = [sys.executable, "-m", "bench.stand_in", "--serve"]
    else:
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


async def run_stand_in(n: int, in_flight: int, kind: ServerKind = "aiohttp") -> StandInResult:
    """One burst of ``n`` against a fresh stand-in process (see the module docstring)."""
    async with stand_in_process(kind) as server:
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
        server=kind,
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
    case = f"{result.server} stand-in alone, N={result.n:,} in-flight={result.in_flight}"

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


# -- the lean server ----------------------------------------------------------------------------


def _answer(status: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def _error(status: str, kind: str, message: str) -> bytes:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return _answer(status, body)


class _LeanServer(asyncio.Protocol):
    """One connection of the lean stand-in: reads requests (head + ``Content-Length`` body) and
    answers each as the hosted API would for the storm's one agent and environment."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, target, _ = lines[0].split(" ", 2)
            assert self.transport is not None
            self.transport.write(_respond(method, target, headers, body))


def _respond(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    if headers.get("x-api-key") != LEAN_KEY:
        return _error("401 Unauthorized", "authentication_error", "invalid x-api-key")
    path = target.split("?", 1)[0]
    if method == "POST" and path == "/v1/sessions":
        request = json.loads(body)
        agent = request.get("agent") or {}
        if agent.get("id") != AGENT:
            return _error("404 Not Found", "not_found_error", "agent not found")
        if agent.get("version") != 1:
            return _error("400 Bad Request", "invalid_request_error", "no such agent version")
        if request.get("environment_id") != ENVIRONMENT:
            return _error("404 Not Found", "not_found_error", "environment not found")
        now = format_ts(datetime.now(UTC))
        session = {
            "type": "session",
            "id": ids.new_id(ids.SESSION),
            "status": "idle",
            "agent": {"type": "agent", "id": AGENT, "version": 1},
            "environment_id": ENVIRONMENT,
            "metadata": request.get("metadata", {}),
            "vault_ids": request.get("vault_ids", []),
            "title": request.get("title"),
            "archived_at": None,
            "created_at": now,
            "updated_at": now,
        }
        return _answer("200 OK", session)
    if method == "GET" and path == f"/v1/agents/{AGENT}":
        return _answer("200 OK", {"type": "agent", "id": AGENT, "version": 1, "archived_at": None})
    if method == "GET" and path == f"/v1/environments/{ENVIRONMENT}":
        return _answer("200 OK", {"type": "environment", "id": ENVIRONMENT, "archived_at": None})
    return _error("404 Not Found", "not_found_error", f"{method} {path} not found")


async def serve_lean() -> None:
    """Serve on an ephemeral loopback port until stdin closes, after printing
    ``{"base_url", "api_key"}`` as one JSON line (as ``tests.support.hosted_api`` does)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_LeanServer, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"base_url": f"http://127.0.0.1:{port}", "api_key": LEAN_KEY}), flush=True)
    try:
        await anyio.to_thread.run_sync(sys.stdin.read)
    finally:
        server.close()


# -- the launcher alone -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResult:
    n: int
    in_flight: int
    server: ServerKind
    pool: str  # "cold": connections opened by the burst; "warm": opened before it
    wall_s: float
    cpu_us: float  # this process's event-loop thread, per session creation


async def run_client(n: int, in_flight: int, kind: ServerKind) -> list[ClientResult]:
    """``ManagedAgentsLauncher.create_session`` ``n`` times, ``in_flight`` at a time, against a
    fresh stand-in process: once on a new launcher (its pool opens connections during the
    burst), once on a launcher whose connections were opened before (``warm``, or, where the
    launcher has none, by a first burst of ``in_flight`` creations)."""
    from agentcron.launchers.managed_agents import ManagedAgentsLauncher  # noqa: PLC0415

    results: list[ClientResult] = []
    async with stand_in_process(kind) as server:
        for pool in ("cold", "warm"):
            launcher = ManagedAgentsLauncher(
                base_url=server.base_url, api_key=server.api_key, timeout=60, max_connections=256
            )
            async with launcher:
                if pool == "warm":
                    warm = getattr(launcher, "warm", None)
                    if warm is not None:
                        await warm(in_flight)
                    else:
                        await _creations(launcher, in_flight, in_flight)
                    await anyio.sleep(0.5)
                wall, cpu = await _creations(launcher, n, in_flight)
            results.append(
                ClientResult(
                    n=n,
                    in_flight=in_flight,
                    server=kind,
                    pool=pool,
                    wall_s=wall,
                    cpu_us=cpu / n * 1e6,
                )
            )
    return results


async def _creations(launcher: Any, n: int, in_flight: int) -> tuple[float, float]:
    """(wall seconds, event-loop thread CPU seconds) of ``n`` creations, ``in_flight`` at once."""
    indexes = iter(range(n))

    async def worker() -> None:
        for index in indexes:
            await launcher.create_session(
                SessionRequest(
                    deployment_id=f"depl_storm{index}",
                    run_id=f"drun_storm{index}",
                    agent=AgentRef(id=AGENT, version=1),
                    environment_id=ENVIRONMENT,
                    initial_events=EVENTS,
                    title=f"storm-{index}",
                )
            )

    started, cpu = time.perf_counter(), time.thread_time()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
    return time.perf_counter() - started, time.thread_time() - cpu


def client_rows(result: ClientResult) -> list[Row]:
    case = (
        f"launcher alone vs {result.server} stand-in, N={result.n:,} "
        f"in-flight={result.in_flight}, {result.pool} pool"
    )
    return [
        Row(bench="client", case=case, metric="burst wall", value=result.wall_s * 1000, unit="ms"),
        Row(
            bench="client",
            case=case,
            metric="event-loop CPU per creation",
            value=result.cpu_us,
            unit="µs",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stand_in", description=__doc__)
    parser.add_argument("--n", type=int, action="append", help="burst size (repeatable)")
    parser.add_argument("--in-flight", type=int, action="append", help="connections (repeatable)")
    parser.add_argument(
        "--server", choices=["aiohttp", "lean"], action="append", help="(repeatable; aiohttp)"
    )
    parser.add_argument("--serve", action="store_true", help="run the lean server alone")
    parser.add_argument(
        "--client", action="store_true", help="time the daemon's launcher instead of the server"
    )
    args = parser.parse_args(argv)
    if args.serve:
        anyio.run(serve_lean)
        return 0
    rows: list[Row] = []
    if args.client:
        for kind in args.server or ["aiohttp"]:
            for n in args.n or [2_000]:
                for in_flight in args.in_flight or [256]:
                    for result in anyio.run(run_client, n, in_flight, kind):
                        rows += client_rows(result)
        print(render_rows(rows))
        return 0
    for kind in args.server or ["aiohttp"]:
        for n in args.n or [2_000, 10_000]:
            for in_flight in args.in_flight or [256]:
                rows += stand_in_rows(anyio.run(run_stand_in, n, in_flight, kind))
    print(render_rows(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
