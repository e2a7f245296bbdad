"""Hostile input against the real daemon's control socket: never a 5xx, never a crash.

One ``agentcrond`` subprocess (``max_request_bytes`` = 1 MiB) serves the whole module. Covered:
hypothesis-generated requests on every route (methods, ids, query strings, bodies), oversized
bodies and lying ``Content-Length`` headers, 100,000-deep JSON nesting, huge metadata, invalid
UTF-8 in bodies and request lines, and slow-loris clients sending their headers byte by byte.
After each attack the daemon must still answer other clients, and its RSS must stay bounded.

CI runs a bounded number of generated requests; ``AGENTCRON_HOSTILE_EXAMPLES=10000`` runs the
full version.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.daemon_harness import (
    DaemonProcess,
    UnixHTTPConnection,
    create_body,
    write_config,
)

MAX_BYTES = 1024 * 1024
EXAMPLES = int(os.environ.get("AGENTCRON_HOSTILE_EXAMPLES", "150"))
RSS_GROWTH_LIMIT_MB = 64.0


class Hostile:
    def __init__(self, daemon: DaemonProcess, deployment_ids: list[str], run_ids: list[str]):
        self.daemon = daemon
        self.deployment_ids = deployment_ids
        self.run_ids = run_ids
        self.requests = 0

    @property
    def socket_path(self) -> Path:
        return self.daemon.socket_path

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS")

    def hwm_mb(self) -> float:
        return self._status_mb("VmHWM")

    def _status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} in /proc/{self.daemon.pid}/status")

    def assert_alive(self) -> None:
        """The daemon process runs and answers a health check promptly."""
        assert self.daemon.process is not None
        assert self.daemon.process.poll() is None, self.daemon.logs()[-3000:]
        started = time.monotonic()
        status, body = send(self.socket_path, "GET", "/v1/health")
        assert status == 200, body
        assert time.monotonic() - started < 2.0


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    directory = tmp_path_factory.mktemp("hostile")
    config = write_config(
        directory,
        agent_argv=["/bin/true"],
        extra_daemon=f"max_request_bytes = {MAX_BYTES}\nmax_deployments = 100000",
    )
    daemon = DaemonProcess(directory, config)
    try:
        daemon.start()
        deployment_ids = []
        for cron in ("*/5 * * * *", None, None):  # scheduled, a stable target, a fuzz victim
            status, body = daemon.request("POST", "/v1/deployments", create_body("h", cron=cron))
            assert status == 200, body
            deployment_ids.append(body["id"])
        status, run = daemon.request("POST", f"/v1/deployments/{deployment_ids[1]}/run")
        assert status == 200, run
        hostile = Hostile(daemon, deployment_ids, [run["id"]])
        rss_start = hostile.rss_mb()
        yield hostile
        summary = {
            "generated_requests": hostile.requests,
            "rss_start_mb": round(rss_start, 1),
            "rss_end_mb": round(hostile.rss_mb(), 1),
            "rss_peak_mb": round(hostile.hwm_mb(), 1),
        }
        print("hostile suite:", json.dumps(summary))
        assert daemon.stop() == 0
    finally:
        daemon.close()


def send(
    socket_path: Path,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One raw HTTP request; returns (status, parsed JSON or the raw bytes)."""
    conn = UnixHTTPConnection(socket_path, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        all_headers = {"content-type": "application/json", **(headers or {})}
        if "content-length" not in all_headers:
            all_headers["content-length"] = str(len(body or b""))
        for name, value in all_headers.items():
            conn.putheader(name, value)
        conn.endheaders(body or b"")
        response = conn.getresponse()
        data = response.read()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data
    finally:
        conn.close()


def assert_error_envelope(status: int, body: Any, expected: int | tuple[int, ...]) -> None:
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert status in allowed, (status, body)
    assert isinstance(body, dict), body
    assert body["type"] == "error", body
    assert isinstance(body["error"]["message"], str), body
    assert "Traceback" not in json.dumps(body)


# --- generated requests on every route ----------------------------------------------------------

ROUTES = [
    ("POST", "/v1/deployments"),
    ("GET", "/v1/deployments"),
    ("GET", "/v1/deployments/{id}"),
    ("POST", "/v1/deployments/{id}"),
    ("POST", "/v1/deployments/{id}/pause"),
    ("POST", "/v1/deployments/{id}/unpause"),
    ("POST", "/v1/deployments/{id}/archive"),
    ("POST", "/v1/deployments/{id}/run"),
    ("GET", "/v1/deployment_runs"),
    ("GET", "/v1/deployment_runs/{id}"),
    ("GET", "/v1/health"),
]
QUERY_NAMES = [
    "limit", "page", "agent_id", "status", "include_archived", "deployment_id", "has_error",
    "trigger_type", "created_at[gte]", "created_at[lte]", "created_at[gt]", "created_at[lt]", "x",
]  # fmt: skip
FIELDS = [
    "name", "agent", "environment_id", "initial_events", "description", "metadata", "resources",
    "vault_ids", "budget", "schedule", "status", "id",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def generated_request(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "GET", "POST"]))
    identifier = draw(
        st.sampled_from(["{deployment}", "{run}", "depl_", "drun_00000000000000000000000000"])
        | st.text(min_size=1, max_size=40)
    )
    path = template.replace("{id}", quote(identifier, safe=""))
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(QUERY_NAMES) | st.text(max_size=10),
                st.text(max_size=30)
                | st.sampled_from(["1", "0", "true", "-5", "1001", "2026-01-01"]),
            ),
            max_size=4,
        )
    )
    target = path + ("?" + urlencode(query) if query else "")
    body_kind = draw(st.sampled_from(["none", "json", "fields", "valid", "bytes"]))
    body: bytes | None
    if body_kind == "none":
        body = None
    elif body_kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif body_kind == "fields":
        fields = draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))
        body = json.dumps(fields).encode()
    elif body_kind == "valid":
        valid = create_body("generated", cron=draw(st.sampled_from([None, "0 9 * * 1-5"])))
        for name in draw(st.lists(st.sampled_from(list(valid)), max_size=2)):
            valid[name] = draw(json_values)
        body = json.dumps(valid).encode()
    else:
        body = draw(st.binary(max_size=200))
    return method, target, body


@pytest.mark.timeout(max(120, EXAMPLES // 5))  # the full run: 10,000 requests
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=generated_request())
def test_generated_requests_on_every_route_never_get_a_5xx(
    hostile: Hostile, request: tuple[str, str, bytes | None]
) -> None:
    """Any method, id, query string and body on any route: a 2xx or a 4xx envelope, no 5xx."""
    method, target, body = request
    target = target.replace(quote("{deployment}", safe=""), hostile.deployment_ids[2])
    target = target.replace(quote("{run}", safe=""), hostile.run_ids[0])
    status, answer = send(hostile.socket_path, method, target, body)
    hostile.requests += 1
    assert status < 500, (method, target, body, status, answer)
    if status >= 400:
        assert_error_envelope(status, answer, status)


# --- oversized and lying bodies ------------------------------------------------------------------


def test_a_body_over_max_request_bytes_is_a_413_and_memory_stays_bounded(hostile: Hostile) -> None:
    """Bodies over max_request_bytes are refused with 413 on every POST route, repeatedly,
    without the daemon's memory growing."""
    before = hostile.rss_mb()
    oversized = b'{"name": "' + b"x" * (MAX_BYTES + 1024) + b'"}'
    targets = ["/v1/deployments", f"/v1/deployments/{hostile.deployment_ids[1]}"]
    for _ in range(10):
        for target in targets:
            status, body = send(hostile.socket_path, "POST", target, oversized)
            assert_error_envelope(status, body, 413)
    hostile.assert_alive()
    assert hostile.rss_mb() - before < RSS_GROWTH_LIMIT_MB


def test_a_lying_content_length_does_not_hold_memory_or_block_others(hostile: Hostile) -> None:
    """A client announcing 10 GiB (or a little under the limit) and sending a few bytes, then
    vanishing, costs nothing: others are answered meanwhile and memory stays bounded."""
    before = hostile.rss_mb()
    liars = []
    for length in (10 * 1024**3, MAX_BYTES - 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(hostile.socket_path))
        sock.sendall(
            b"POST /v1/deployments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
            + b'{"name": "'
        )
        liars.append(sock)
    hostile.assert_alive()
    for sock in liars:
        sock.close()
    hostile.assert_alive()
    assert hostile.rss_mb() - before < RSS_GROWTH_LIMIT_MB


# --- pathological JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000,
    ],
    ids=["arrays", "objects", "inside-a-field", "unterminated"],
)
def test_deeply_nested_json_is_a_400_not_a_crash(hostile: Hostile, body: bytes) -> None:
    """100,000 levels of nesting are refused as invalid requests, on create and update."""
    for target in ("/v1/deployments", f"/v1/deployments/{hostile.deployment_ids[1]}"):
        status, answer = send(hostile.socket_path, "POST", target, body)
        assert_error_envelope(status, answer, 400)
    hostile.assert_alive()


def test_huge_metadata_is_refused_naming_the_field(hostile: Hostile) -> None:
    """50,000 metadata pairs, or one huge value, are a 400 that names ``metadata``."""
    many = create_body("meta")
    many["metadata"] = {f"k{i}": "v" for i in range(50_000)}
    big = create_body("meta")
    big["metadata"] = {"k": "v" * 500_000}
    for body in (many, big):
        status, answer = send(
            hostile.socket_path, "POST", "/v1/deployments", json.dumps(body).encode()
        )
        assert_error_envelope(status, answer, 400)
        assert "metadata" in answer["error"]["message"]
    hostile.assert_alive()


# --- invalid UTF-8 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"name": "\xff\xfe"}', b"\xc3\x28", b'{"name": "ok", "description": "\xed\xa0\x80"}'],
    ids=["in-a-string", "whole-body", "surrogate"],
)
def test_invalid_utf8_bodies_are_a_400(hostile: Hostile, body: bytes) -> None:
    """Bodies that are not UTF-8 are refused with a 400 envelope."""
    status, answer = send(hostile.socket_path, "POST", "/v1/deployments", body)
    assert_error_envelope(status, answer, 400)
    hostile.assert_alive()


def raw_exchange(socket_path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /v1/deployments/\xff\xfe HTTP/1.1",
        b"GET /v1/deployments/%ff%fe HTTP/1.1",
        b"GET /v1/deployment_runs?deployment_id=%ff HTTP/1.1",
        b"GET /v1/deployment_runs?\xff=\xfe HTTP/1.1",
        b"\xff\xfe / HTTP/1.1",
    ],
    ids=["raw-path", "encoded-path", "encoded-query", "raw-query", "raw-method"],
)
def test_invalid_utf8_in_the_request_line_is_never_a_5xx(
    hostile: Hostile, request_line: bytes
) -> None:
    """Bytes that are not UTF-8 in the path, query or method get a 4xx (or, for a percent-encoded
    query value, the empty page of an unknown id), never a 5xx."""
    answer = raw_exchange(hostile.socket_path, request_line + b"\r\nHost: x\r\n\r\n")
    status_line = answer.split(b"\r\n", 1)[0]
    # aiohttp's parser answers what it cannot parse itself (HTTP/1.0, plain text).
    assert status_line.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4", b"HTTP/1.1 200")), answer[:300]
    hostile.assert_alive()


# --- slow-loris ----------------------------------------------------------------------------------

LORIS = 200


async def test_slow_loris_clients_do_not_block_others_or_grow_memory(hostile: Hostile) -> None:
    """200 connections dribbling their headers byte by byte: other clients are still answered
    within a second each, and memory stays bounded."""
    before = hostile.rss_mb()
    header = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 64
    streams = [await anyio.connect_unix(str(hostile.socket_path)) for _ in range(LORIS)]
    latencies: list[float] = []
    try:
        async with anyio.create_task_group() as tg:

            async def dribble() -> None:
                for offset in range(len(header)):
                    for stream in streams:
                        try:
                            await stream.send(header[offset : offset + 1])
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                            continue  # the daemon may drop slow clients: that is fine
                    await anyio.sleep(0.03)

            tg.start_soon(dribble)
            for _ in range(20):
                started = time.monotonic()
                status, body = await anyio.to_thread.run_sync(
                    send, hostile.socket_path, "GET", "/v1/deployments?limit=5"
                )
                latencies.append(time.monotonic() - started)
                assert status == 200, body
                await anyio.sleep(0.1)
    finally:
        for stream in streams:
            await stream.aclose()
    assert max(latencies) < 1.0, latencies
    hostile.assert_alive()
    assert hostile.rss_mb() - before < RSS_GROWTH_LIMIT_MB
