"""The launcher's HTTP/1.1 client against raw loopback servers that answer byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from agentcron.launchers.http1 import Origin, Unanswered
from tests.support.hosted_api import refused_url

Answer = Callable[[bytes], bytes | None]  # request bytes -> answer bytes (None: close at once)


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A server that reads one request at a time (head + Content-Length body) and writes
    ``answer(request)`` (``None``: closes instead; an HTTP/1.0 or ``Connection: close`` answer:
    closes after it); yields its base URL, the requests seen and the connections accepted."""
    requests: list[bytes] = []
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                requests.append(request)
                reply = answer(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if reply.startswith(b"HTTP/1.0") or b"onnection: close" in reply:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", requests, accepted
    finally:
        server.close()


def origin(base_url: str, **options: float) -> Origin:
    return Origin(base_url, headers={"x-api-key": "k", "user-agent": "t"}, **options)  # type: ignore[arg-type]


async def test_a_request_carries_the_headers_and_body_and_reuses_its_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    async with raw_server(lambda _: answer) as (url, requests, accepted):
        client = origin(url + "/prefix/")
        assert await client.request("POST", "/v1/x", b'{"a":1}', within=5) == (200, b"{}")
        assert await client.request("GET", "/v1/y?z=1", None, within=5) == (200, b"{}")
        await client.aclose()
    port = url.rsplit(":", 1)[1]
    assert (
        requests[0]
        == (
            f"POST /prefix/v1/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: k\r\n"
            'user-agent: t\r\nContent-Length: 7\r\n\r\n{"a":1}'
        ).encode()
    )
    assert requests[1].startswith(b"GET /prefix/v1/y?z=1 HTTP/1.1\r\n")
    assert len(accepted) == 1  # kept alive


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello", (201, b"hello")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n",
            (200, b"hello"),
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", (204, b"")),
        (b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n", (429, b"")),
    ],
    ids=["length", "chunked", "interim-1xx", "empty"],
)
async def test_answers_are_read_by_each_framing(answer: bytes, expected: tuple[int, bytes]) -> None:
    async with raw_server(lambda _: answer) as (url, _, accepted):
        client = origin(url)
        for _ in range(2):  # the second exchange proves the first left the stream in step
            assert await client.request("POST", "/", b"x", within=5) == expected
        await client.aclose()
    assert len(accepted) == 1


async def test_connection_close_and_read_to_end_open_a_new_connection_next_time() -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
            b"HTTP/1.0 200 OK\r\n\r\nto the end",  # the server closes after writing it
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        ]
    )
    async with raw_server(lambda _: next(answers)) as (url, _, accepted):
        client = origin(url)
        assert await client.request("GET", "/", None, within=5) == (200, b"a")
        assert await client.request("GET", "/", None, within=5) == (200, b"to the end")
        assert await client.request("GET", "/", None, within=5) == (200, b"c")
        await client.aclose()
    assert len(accepted) == 3


async def test_a_lost_connection_a_garbled_answer_and_a_refusal_are_unanswered() -> None:
    async with raw_server(lambda _: None) as (url, requests, _):
        client = origin(url)
        with pytest.raises(Unanswered, match="lost before the whole answer"):
            await client.request("POST", "/", b"{}", within=5)
        await client.aclose()
    assert len(requests) == 1  # never sent twice
    async with raw_server(lambda _: b"SSH-2.0-nope\r\n\r\n") as (url, _, _):
        client = origin(url)
        with pytest.raises(Unanswered, match=r"no HTTP/1\.x answer"):
            await client.request("GET", "/", None, within=5)
        await client.aclose()
    client = origin(refused_url())
    with pytest.raises(Unanswered, match=r"Cannot connect to host 127\.0\.0\.1"):
        await client.request("GET", "/", None, within=5)
    assert client.open_connections == 0


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    async with raw_server(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart") as (
        url,
        _,
        _,
    ):
        client = origin(url)
        with pytest.raises(TimeoutError):
            await client.request("GET", "/", None, within=0.2)
        assert client.open_connections == 0
        await client.aclose()


async def test_the_pool_keeps_to_its_limit_and_warm_opens_connections_ahead() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(lambda _: answer) as (url, requests, accepted):
        client = origin(url, limit=3)
        await client.warm(10)
        assert client.open_connections == 3
        await asyncio.sleep(0.05)
        assert len(accepted) == 3
        assert requests == []
        results = await asyncio.gather(
            *(client.request("POST", "/", b"{}", within=5) for _ in range(20))
        )
        assert results == [(200, b"ok")] * 20
        assert len(accepted) == 3  # the burst used the warm connections only
        await client.warm(2)  # enough are open: nothing more
        assert client.open_connections == 3
        await client.aclose()


async def test_an_idle_connection_past_its_keepalive_or_closed_by_the_server_is_replaced() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_server(lambda _: answer) as (url, _, accepted):
        client = origin(url, keepalive=0.05)
        await client.request("GET", "/", None, within=5)
        await asyncio.sleep(0.1)
        await client.request("GET", "/", None, within=5)
        assert len(accepted) == 2
        assert client.open_connections == 1
        await client.aclose()
