"""Upstreams that misbehave at the byte level: each case ends in RETRY or a dead letter with a
reason, never in a hang or a stuck queue. A raw TCP server scripts exactly what is sent."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import OutboxRecord, Outcome, RequestDetails, Transition, TransitionKind
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from gateway.upstream.rest import RestSink, RestSinkConfig
from tests.harness import wait_for

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _reply(raw: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()
    return script


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await reader.read()  # never answer; ends only when the client gives up and closes


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A 201 whose body comes a byte at a time: no read ever waits long (the first-byte
    timeout never fires), only the total timeout ends it."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    while True:
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.1)


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()


def _http(status: str, body: bytes = b"", ctype: str = "application/json",
          extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body


async def _429_in_a_minute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    date = formatdate(time.time() + 60, usegmt=True)  # computed when served, not at import
    await _reply(_http("429 Too Many Requests", extra=f"Retry-After: {date}\r\n"))(reader, writer)


PROBLEM = b'{"title": "Validation failed", "detail": "asset unknown"}'
CASES: list[tuple[str, Script, Outcome, str]] = [
    ("hang", _hang, Outcome.RETRY, "timed out"),
    ("trickle", _trickle, Outcome.RETRY, "timed out"),
    ("reset", _reset, Outcome.RETRY, ""),
    ("half-written", _reply(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"id\": \"MR-1"), Outcome.RETRY, ""),
    ("garbage status line", _reply(b"FOO BAR\r\n\r\n"), Outcome.RETRY, ""),
    ("200 invalid json", _reply(_http("201 Created", b"{not json")), Outcome.RETRY, ""),
    ("201 html", _reply(_http("201 Created", b"<html>ok</html>", "text/html")),
     Outcome.RETRY, ""),
    ("301", _reply(_http("301 Moved Permanently", extra="Location: http://x/\r\n")),
     Outcome.REJECTED, "301"),
    ("302", _reply(_http("302 Found", extra="Location: http://x/\r\n")),
     Outcome.REJECTED, "302"),
    ("429 seconds", _reply(_http("429 Too Many Requests", extra="Retry-After: 7\r\n")),
     Outcome.RETRY, "429"),
    ("429 http-date", _429_in_a_minute, Outcome.RETRY, "429"),
    ("503", _reply(_http("503 Service Unavailable")), Outcome.RETRY, "503"),
    ("400 problem", _reply(_http("400 Bad Request", PROBLEM, "application/problem+json")),
     Outcome.REJECTED, "asset unknown"),
    ("400 html", _reply(_http("400 Bad Request", b"<h1>nope</h1>", "text/html")),
     Outcome.REJECTED, "400"),
]


class ScriptedServer:
    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.default: Script = _reply(_http("201 Created", b'{"id": "MR-000001"}'))
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        script = self.scripts.pop(0) if self.scripts else self.default
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await script(reader, writer)
        finally:
            writer.transport.abort()
            self._writers.discard(writer)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # ends a hanging script's read
            writer.transport.abort()
        await self._server.wait_closed()
        await wait_for(lambda: not self._writers, 5, "scripted connections closed")


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedServer, RestSink]]:
    srv = ScriptedServer()
    url = await srv.start()
    sink = RestSinkConfig(type="rest", name="cmms", base_url=url, connect_timeout_seconds=1,
                          total_timeout_seconds=1.5).build()
    try:
        yield srv, sink
    finally:
        await sink.aclose()
        await srv.stop()


def _record(asset: str = "pump-1") -> OutboxRecord:
    now = time.time()  # a fresh record: no look-up before the create
    t = Transition(TransitionKind.RAISED, "vib", asset, "vibration", f"vib/{asset}/1", 2, 8.0,
                   now, "vibration 8 above 7.1", RequestDetails("High vibration"))
    return OutboxRecord(1, messages_for(t, ["cmms"], "s")[0], attempts=0)


@pytest.mark.parametrize(("name", "script", "outcome", "says"), CASES,
                         ids=[c[0] for c in CASES])
async def test_each_misbehaviour_ends_in_retry_or_dead_letter(
        server: tuple[ScriptedServer, RestSink], name: str, script: Script, outcome: Outcome,
        says: str) -> None:
    srv, sink = server
    srv.scripts = [script]
    async with asyncio.timeout(10):  # the sink's own timeouts must end every case
        [d] = await sink.send([_record()])
    assert d.outcome is outcome, (name, d)
    assert says.lower() in d.reason.lower(), (name, d.reason)
    assert d.reason, "every outcome other than accepted says why"
    if name == "429 seconds":
        assert d.retry_after_seconds == 7
    if name == "429 http-date":
        assert d.retry_after_seconds is not None and 50 < d.retry_after_seconds <= 61


async def test_a_storm_of_bad_answers_never_sticks_the_queue(
        server: tuple[ScriptedServer, RestSink], tmp_path: Path) -> None:
    """Every retryable case in a row, then a healthy answer: the record is delivered."""
    srv, sink = server
    srv.scripts = [c[1] for c in CASES if c[2] is Outcome.RETRY and c[0] != "429 http-date"]
    storm = len(srv.scripts)
    cfg = ForwardingConfig(retry_initial_seconds=0.01, retry_max_seconds=0.05,
                           retry_after_max_seconds=0.05, idle_poll_seconds=0.02,
                           breaker_failures=1000)
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        rec = _record()
        await outbox.commit([], [rec.message])
        fwd = Forwarder(sink, outbox, cfg, asyncio.Event())
        task = asyncio.create_task(fwd.run())
        try:
            async def delivered() -> bool:
                # The forwarder counts a delivery just after the outbox settles it: wait for
                # both, or a busy box cancels it in between (seen under xdist: accepted=0).
                return (not any((await outbox.stats(time.time())).pending.values())
                        and fwd.stats.accepted >= 1)
            await wait_for(delivered, 30, "delivery after the storm")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert srv.scripts == []  # every bad answer was served...
    assert fwd.stats.retried == storm and fwd.stats.accepted == 1  # ...then it got through
