"""The REST sink's HTTP client (gateway/upstream/http_client.py) over real sockets, and its
answer parser byte by byte: keep-alive reuse, the pool limit, bodies of every framing, servers
that close, stall or send garbage, on asyncio and on uvloop (the daemon's loop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from gateway.upstream.http_answer import Answer, AnswerParser, BadAnswer
from gateway.upstream.http_client import (
    ConnectFailed,
    Disconnected,
    HttpOrigin,
    Timeouts,
)
from tests.harness import free_port

OK = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
      b'{"id":1}')
# (request head, its index on its connection) -> the raw answer (None: close, no answer)
Reply = Callable[[bytes, int], Awaitable[bytes | None]]


class Server:
    """A raw HTTP/1.1 server: reads each request (head + Content-Length body), answers with
    `reply(head)`; counts connections and the most requests handled at once."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.heads: list[bytes] = []
        self.active = 0
        self.peak = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                for nth in range(1_000_000):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    body = await reader.readexactly(length)
                    self.heads.append(head + body)
                    self.active += 1
                    self.peak = max(self.peak, self.active)
                    try:
                        raw = await self.reply(head, nth)
                    finally:
                        self.active -= 1
                    if raw is None:
                        break
                    writer.write(raw)
                    await writer.drain()
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def serving(reply: Reply, limit: int = 4, total: float = 2.0, first_byte: float = 2.0,
                  base_path: str = "") -> AsyncIterator[tuple[Server, HttpOrigin]]:
    srv = Server(reply)
    url = await srv.start()
    origin = HttpOrigin(url + base_path, tls=None, limit=limit,
                        timeouts=Timeouts(1.0, first_byte, total),
                        headers={"Authorization": "Bearer k", "User-Agent": "test"})
    try:
        yield srv, origin
    finally:
        await origin.aclose()
        await srv.stop()


async def _ok(head: bytes, nth: int) -> bytes:
    return OK


async def _keep_alive_round(reply: Reply = _ok) -> tuple[int, list[bytes], list[int]]:
    async with serving(reply, base_path="/api/") as (srv, origin):
        statuses = []
        for i in range(3):
            a = await origin.request("POST", "/v1/items", body=b'{"n": %d}' % i,
                                     headers={"Idempotency-Key": f'"k{i}"'},
                                     params={"ref": "PB 1"} if i == 2 else None)
            statuses.append(a.status)
            assert a.body == b'{"id":1}' and a.content_type == "application/json"
        return srv.connections, srv.heads, statuses


async def test_requests_reuse_one_connection_and_carry_headers_path_and_body() -> None:
    connections, heads, statuses = await _keep_alive_round()
    assert connections == 1 and statuses == [201, 201, 201]
    first = heads[0].decode()
    assert first.startswith("POST /api/v1/items HTTP/1.1\r\n")
    for line in ("Host: 127.0.0.1:", "Authorization: Bearer k", 'Idempotency-Key: "k0"',
                 "Content-Length: 8"):
        assert f"\r\n{line}" in first, line
    assert first.endswith('\r\n\r\n{"n": 0}')
    assert heads[2].decode().startswith("POST /api/v1/items?ref=PB+1 HTTP/1.1\r\n")


def test_the_same_on_uvloop() -> None:
    connections, _, statuses = uvloop.run(_keep_alive_round())
    assert connections == 1 and statuses == [201, 201, 201]


async def test_connection_close_opens_a_new_connection_next_time() -> None:
    async def close(head: bytes, nth: int) -> bytes:
        return OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    async with serving(close) as (srv, origin):
        for _ in range(3):
            assert (await origin.request("GET", "/x")).status == 201
        assert srv.connections == 3


async def test_no_more_connections_than_the_limit() -> None:
    async def slow(head: bytes, nth: int) -> bytes:
        await asyncio.sleep(0.02)
        return OK
    async with serving(slow, limit=3) as (srv, origin):
        got = await asyncio.gather(*(origin.request("GET", f"/{i}") for i in range(12)))
        assert [a.status for a in got] == [201] * 12
        assert srv.peak == 3 and srv.connections == 3


async def test_no_first_byte_in_time_is_a_timeout_and_the_connection_is_not_reused() -> None:
    calls = []

    async def stall_once(head: bytes, nth: int) -> bytes:
        calls.append(head)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return OK
    async with serving(stall_once, first_byte=0.2, total=3.0) as (srv, origin):
        with pytest.raises(TimeoutError):
            await origin.request("GET", "/slow")
        assert (await origin.request("GET", "/again")).status == 201
        assert srv.connections == 2


async def test_a_body_that_stops_midway_times_out_on_the_total() -> None:
    async def half(head: bytes, nth: int) -> bytes:
        return OK[:-4]
    async with serving(half, first_byte=0.2, total=0.5) as (_, origin):
        with pytest.raises(TimeoutError):
            await origin.request("GET", "/half")


async def test_a_dropped_connection_is_disconnected_for_a_post() -> None:
    async def drop(head: bytes, nth: int) -> bytes | None:
        return None
    async with serving(drop) as (_, origin):
        with pytest.raises(Disconnected, match="connection dropped before an answer"):
            await origin.request("POST", "/x", body=b"{}")


async def test_a_server_that_closed_the_idle_connection_costs_a_get_nothing() -> None:
    """The connection is closed by the server after each answer, without saying so: a GET on
    it goes out again on a fresh connection; a POST is never sent twice by the client."""
    async def once(head: bytes, nth: int) -> bytes | None:
        return OK if nth == 0 else None
    async with serving(once) as (srv, origin):
        assert (await origin.request("GET", "/a")).status == 201
        assert (await origin.request("GET", "/b")).status == 201  # resent once
        assert srv.connections == 2
        with pytest.raises(Disconnected):
            await origin.request("POST", "/c", body=b"{}")
        assert sum(h.startswith(b"POST") for h in srv.heads) == 1


async def test_refused_connection_says_so() -> None:
    origin = HttpOrigin(f"http://127.0.0.1:{free_port()}", tls=None, limit=1,
                        timeouts=Timeouts(1.0, 1.0, 1.0), headers={})
    with pytest.raises(ConnectFailed, match=r"connection refused by 127\.0\.0\.1"):
        await origin.request("GET", "/")


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="forbids"):
        HttpOrigin("http://127.0.0.1:1", tls=None, limit=1, timeouts=Timeouts(1, 1, 1),
                   headers={"X-Key": "a\r\nEvil: 1"})


# --- the parser, byte by byte --------------------------------------------------------------


def _feed_bytewise(raw: bytes, head_only: bool = False
                   ) -> tuple[AnswerParser, Answer | None]:
    p = AnswerParser(head_only)
    got = None
    for i in range(len(raw)):
        got = p.feed(raw[i:i + 1])
        if got is not None:
            assert i == len(raw) - 1, "answer complete before its last byte"
    return p, got


def test_content_length_body_split_anywhere() -> None:
    p, a = _feed_bytewise(OK)
    assert a is not None and a.status == 201 and a.body == b'{"id":1}' and p.keep_alive


def test_chunked_body_with_extensions_and_trailers_split_anywhere() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
           b"4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nTrailer: t\r\n\r\n")
    _, a = _feed_bytewise(raw)
    assert a is not None and a.body == b"Wikipedia " and a.headers["x-a"] == "1, 2"


def test_informational_answers_are_skipped_and_204_has_no_body() -> None:
    _, a = _feed_bytewise(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert a is not None and a.status == 204 and a.body == b""


def test_head_answer_has_no_body_whatever_its_length_says() -> None:
    _, a = _feed_bytewise(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head_only=True)
    assert a is not None and a.body == b""


def test_body_until_close_and_http_1_0_keep_alive_rules() -> None:
    p = AnswerParser()
    assert p.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome") is None
    assert p.feed(b" text") is None and not p.keep_alive
    a = p.at_close()
    assert a is not None and a.body == b"some text" and a.content_type == "text/plain"
    p = AnswerParser()
    assert p.feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") is not None
    assert not p.keep_alive
    p = AnswerParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab") is not None
    assert p.keep_alive and AnswerParser().at_close() is None


@pytest.mark.parametrize("raw", [
    b"FOO BAR\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_what_is_not_http_is_a_bad_answer(raw: bytes) -> None:
    with pytest.raises(BadAnswer):
        AnswerParser().feed(raw)


def test_a_header_section_without_end_is_bounded() -> None:
    p = AnswerParser()
    p.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(BadAnswer, match="too long"):
        p.feed(b"X-Pad: " + b"a" * 70_000)


async def test_an_abandoned_request_never_hands_its_late_answer_to_the_next() -> None:
    """Cancelled while waiting (the forwarder's own timeout, a stop): its connection is closed,
    not pooled, so the answer that arrives late is read by no one."""
    async def late_first(head: bytes, nth: int) -> bytes:
        if head.startswith(b"GET /first"):
            await asyncio.sleep(0.3)
            return OK.replace(b'{"id":1}', b'{"id":8}')
        return OK
    async with serving(late_first) as (srv, origin):
        first = asyncio.create_task(origin.request("GET", "/first"))
        await asyncio.sleep(0.05)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert (await origin.request("GET", "/second")).body == b'{"id":1}'
        await asyncio.sleep(0.4)  # the late answer has been sent by now
        assert (await origin.request("GET", "/third")).body == b'{"id":1}'
        assert srv.connections == 2


async def test_a_path_with_non_ascii_characters_is_sent_percent_encoded() -> None:
    async with serving(_ok) as (srv, origin):
        assert (await origin.request("GET", "/assets/Pumpe-Süd 1")).status == 201
        assert srv.heads[0].startswith(b"GET /assets/Pumpe-S%C3%BCd%201 HTTP/1.1\r\n")
