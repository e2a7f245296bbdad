"""A lean HTTP/1.1 client for the ``managed_agents`` launcher: keep-alive connections to one
origin, one request at a time on each.

The launcher's requests are few and simple (a JSON ``POST /v1/sessions`` per fire, a ``GET``
per lookup, no redirects, no cookies, no proxies, no compression), and a storm sends thousands
at one instant. A general client (aiohttp) spent about 230 µs of the event loop per session
creation on this project's benchmark machine, most of the daemon's whole cost per fire; this
one builds the request head from bytes prepared once and parses the answer in one protocol
object (see ``docs/benchmarks.md``, "Storm lag as users see it").

What it does:

- ``Origin.request(method, target, body)`` returns the ``(status, body)`` of one exchange, or
  raises ``Unanswered`` (connection refused or lost, a malformed answer, ``within`` seconds
  without the whole answer). Nothing is retried: a request that may have reached the server
  is never sent twice.
- Answers framed by ``Content-Length``, by ``Transfer-Encoding: chunked``, or by the end of
  the connection; ``1xx`` interim answers are skipped. ``Connection: close`` (or HTTP/1.0)
  closes the connection after the answer.
- At most ``limit`` connections; a request finding none idle opens one (or waits for one).
  An idle connection is closed ``keepalive`` seconds after its last answer (checked whenever a
  connection is taken) or as soon as the server closes it.
- ``warm(count)`` opens connections ahead of a burst until ``count`` (at most ``limit``) are
  open, so the burst's requests do not pay for TCP and TLS handshakes at the due instant.
- ``https://`` uses the default TLS context (certificates verified, SNI set).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Origin", "Unanswered"]

_MAX_HEAD = 64 * 1024  # an answer's status line and headers, at most
_MAX_BODY = 16 * 1024 * 1024  # an answer's body, at most


class Unanswered(Exception):
    """No complete HTTP answer arrived (the message says why, and names no secret)."""


class _Exchange(asyncio.Protocol):
    """One connection: sends a request, parses its answer, then waits for the next request."""

    __slots__ = (
        "_body",
        "_chunk_left",
        "_head_done",
        "_length",
        "_mode",
        "_status",
        "_waiter",
        "buffer",
        "closed",
        "idle_since",
        "keep_alive",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.keep_alive = True
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        self._head_done = False
        self._status = 0
        self._mode = ""  # "length", "chunked" or "close"
        self._length = 0
        self._body = bytearray()
        self._chunk_left = -1  # chunked: bytes left in this chunk; -1: a size line; -2: trailers

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self.keep_alive = False
            self.close()
            return
        self.buffer += data
        try:
            self._parse()
        except Unanswered as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.keep_alive = False
        return False  # close the transport; ``connection_lost`` follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._head_done and self._mode == "close":
            self._finish()
            return
        detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        self._fail(Unanswered(f"the connection was lost before the whole answer arrived{detail}"))

    # -- requests ------------------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._reset()
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- parsing -------------------------------------------------------------------------------

    def _parse(self) -> None:
        while self._waiter is not None and not self._waiter.done():
            if not self._head_done:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > _MAX_HEAD:
                        raise Unanswered("the answer's headers are too large")
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[: end + 4]
                if not self._read_head(head):
                    continue  # an interim 1xx answer: the real one follows
            if not self._read_body():
                return

    def _read_head(self, head: bytes) -> bool:
        """Parse a status line and headers; False for an interim (1xx) answer."""
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise Unanswered(f"the server sent no HTTP/1.x answer ({lines[0][:80]!r})")
        status = int(code)
        if 100 <= status < 200:
            return False
        length: int | None = None
        chunked = False
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                value = value.strip()
                if not value.isdigit():
                    raise Unanswered("the answer has an invalid Content-Length")
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value.strip().lower().endswith("chunked")
            elif name == "connection":
                tokens = {token.strip().lower() for token in value.split(",")}
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
        self._status = status
        self._head_done = True
        if not keep_alive:
            self.keep_alive = False
        if status in (204, 304):
            self._mode, self._length = "length", 0
        elif chunked:
            self._mode = "chunked"
        elif length is not None:
            if length > _MAX_BODY:
                raise Unanswered("the answer's body is too large")
            self._mode, self._length = "length", length
        else:
            self._mode = "close"
            self.keep_alive = False
        return True

    def _read_body(self) -> bool:
        """Consume body bytes; True once the answer is complete (and delivered)."""
        buffer = self.buffer
        if self._mode == "length":
            if len(buffer) < self._length:
                return False
            self._body = buffer[: self._length]
            del buffer[: self._length]
            self._finish()
            return True
        if self._mode == "close":
            self._body += buffer
            buffer.clear()
            if len(self._body) > _MAX_BODY:
                raise Unanswered("the answer's body is too large")
            return False
        while True:  # chunked
            if self._chunk_left == -2:  # after the last chunk: trailers up to a blank line
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[: end + 2]
                if end == 0:
                    self._finish()
                    return True
                continue
            if self._chunk_left == -1:  # a chunk-size line
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise Unanswered("the answer has an invalid chunk size") from None
                del buffer[: end + 2]
                if self._chunk_left == 0:
                    self._chunk_left = -2
                continue
            if len(buffer) < self._chunk_left + 2:
                return False
            self._body += buffer[: self._chunk_left]
            del buffer[: self._chunk_left + 2]
            if len(self._body) > _MAX_BODY:
                raise Unanswered("the answer's body is too large")
            self._chunk_left = -1

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, bytes(self._body)))
        if self.buffer:  # bytes after a complete answer: the connection is out of step
            self.keep_alive = False

    def _fail(self, exc: Unanswered) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()


class Origin:
    """Keep-alive HTTP/1.1 connections to the origin of ``base_url`` (module docstring).

    ``headers`` are sent with every request (names as given); ``base_url``'s path, if any, is
    put before every request target.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        limit: int = 100,
        keepalive: float = 15.0,
        connect_timeout: float = 30.0,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        self._prefix = parts.path.rstrip("/")
        fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._fixed = f"Host: {authority}\r\n{fixed}".encode("latin-1")
        self._limit = limit
        self._keepalive = keepalive
        self._connect_timeout = connect_timeout
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.tls else None
        self._idle: deque[_Exchange] = deque()  # most recently used on the right
        self._open = 0  # connections open or being opened
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for a slot
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def request(
        self, method: str, target: str, body: bytes | None, *, within: float
    ) -> tuple[int, bytes]:
        """One exchange; ``(status, body)`` or ``Unanswered``; ``TimeoutError`` after
        ``within`` seconds without the whole answer (connecting included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        head = f"{method} {self._prefix}{target} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        if body is not None:
            data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        else:
            data = head + b"\r\n"
        connection = await self._take(deadline)
        try:
            waiter = connection.send(data)
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                return await waiter
            finally:
                timer.cancel()
        except BaseException:
            connection.abort()
            raise
        finally:
            self._give_back(connection)

    async def warm(self, count: int) -> None:
        """Open connections until ``min(count, limit)`` are open; failures are left to the
        requests (a warm-up is only a head start)."""
        wanted = min(count, self._limit) - self._open
        if wanted <= 0 or self._closed:
            return
        self._open += wanted
        opened = await asyncio.gather(
            *(asyncio.wait_for(self._connect(), self._connect_timeout) for _ in range(wanted)),
            return_exceptions=True,
        )
        loop = asyncio.get_running_loop()
        for connection in opened:
            if not isinstance(connection, _Exchange):
                self._open -= 1
            elif self._is_closed():  # closed while connecting
                connection.close()
                self._open -= 1
            else:
                connection.idle_since = loop.time()
                self._idle.append(connection)
            self._slot_freed()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(Unanswered("the client is closed"))

    # -- the pool ------------------------------------------------------------------------------

    def _is_closed(self) -> bool:
        return self._closed

    async def _take(self, deadline: float) -> _Exchange:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise Unanswered("the client is closed")
            now = loop.time()
            idle = self._idle
            while idle and (idle[0].closed or now - idle[0].idle_since > self._keepalive):
                self._drop(idle.popleft())
            while idle:
                connection = idle.pop()
                if not connection.closed:
                    return connection
                self._drop(connection)
            if self._open < self._limit:
                self._open += 1
                try:
                    return await asyncio.wait_for(self._connect(), max(0.0, deadline - now))
                except BaseException:
                    self._open -= 1
                    self._slot_freed()
                    raise
            slot: asyncio.Future[None] = loop.create_future()
            self._waiting.append(slot)
            timer = loop.call_at(deadline, _expire, slot)
            try:
                await slot
            finally:
                timer.cancel()
                if not slot.done():
                    slot.cancel()

    async def _connect(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Exchange,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
                happy_eyeballs_delay=0.25,
            )
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise Unanswered(f"Cannot connect to host {self.host}:{self.port} ({reason})") from exc
        return connection

    def _give_back(self, connection: _Exchange) -> None:
        if connection.keep_alive and not connection.closed and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()
            self._open -= 1
        self._slot_freed()

    def _drop(self, connection: _Exchange) -> None:
        connection.close()
        self._open -= 1

    def _slot_freed(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
