"""A small keep-alive HTTP/1.1 client for one origin: what the REST sink asks of HTTP.

A drain sends thousands of requests a second to one upstream, and aiohttp's client spent ~85 us
of CPU on each (request and response objects, header multidicts, URL parsing, cookie and trace
hooks, a timer per timeout); the sink needs none of it: one origin, fixed headers, bytes in,
status + headers + bytes out. Here a request is one `write` of a preformatted head and body on a
pooled connection, and its answer is parsed from the connection's buffer (~25 us).

What it does: keep-alive connections up to `limit` (one request per connection at a time), TLS
with the caller's context, Content-Length, chunked and read-until-close bodies, `Connection:
close`, informational (1xx) answers skipped, no redirects, no decompression (it sends no
Accept-Encoding). Timeouts: connect, first byte of the answer, whole request (checked by one
sweep of the pool every SWEEP_SECONDS, not a timer per request). A request on a
reused connection that the server had closed meanwhile (no byte came back) is sent once more on
a fresh connection when it is a GET or HEAD; anything else is the caller's to retry (a POST may
have been committed: the forwarder retries it under its Idempotency-Key, and says so). A
connection the server closed while idle is dropped from the pool before it is reused.
Failures are `HttpTransportError`s whose message is the plain reason (TimeoutError for time).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

from gateway.upstream.http_answer import Answer, AnswerParser, BadAnswer, HttpTransportError

SWEEP_SECONDS = 0.05  # how often timeouts are checked: a timeout fires up to this late

__all__ = ["Answer", "BadAnswer", "CertificateFailed", "ConnectFailed", "Disconnected",
           "HttpOrigin", "HttpTransportError", "TlsFailed"]


class ConnectFailed(HttpTransportError):
    """No connection: refused, unknown host, timed out, unreachable."""

    def __init__(self, host: str, port: int, err: BaseException) -> None:
        where = f"{host}:{port}"
        if isinstance(err, ConnectionRefusedError):
            said = f"connection refused by {where} (is the upstream running on that port?)"
        elif isinstance(err, socket.gaierror):
            said = f"cannot resolve the host name {host!r}: {err.strerror or err}"
        elif isinstance(err, TimeoutError):
            said = f"timed out connecting to {where}"
        else:
            said = f"cannot connect to {where}: {getattr(err, 'strerror', None) or err}"
        super().__init__(said)


class CertificateFailed(HttpTransportError):
    """The server's certificate did not verify (untrusted CA, wrong name, expired)."""

    def __init__(self, err: ssl.SSLCertVerificationError) -> None:
        said = err.verify_message or str(err)
        super().__init__(f"certificate verify failed: {said} "
                         "(check tls.ca_file and the server name)")


class TlsFailed(HttpTransportError):
    """The TLS handshake or session failed otherwise (a client certificate refused...)."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(f"TLS error: {err}")


class Disconnected(HttpTransportError):
    """The connection closed (or was reset) before the whole answer arrived."""

    def __init__(self) -> None:
        super().__init__("connection dropped before an answer (the request may have been "
                         "committed)")


class _Connection(asyncio.Protocol):
    """One connection: at most one request at a time; its answer parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: AnswerParser | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._total_at = 0.0
        # loop time by which the next byte (the first: first-byte timeout) or the whole answer
        # (after the first byte: total timeout) is due; HttpOrigin's sweep enforces it
        self.deadline = float("inf")
        self.got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes, method: str, first_byte_at: float,
             total_at: float) -> asyncio.Future[Answer]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._parser = AnswerParser(head_only=method == "HEAD")
        self._waiter = waiter = loop.create_future()
        self.got_bytes = False
        self._total_at = total_at
        self.deadline = min(first_byte_at, total_at)
        self.transport.write(data)
        return waiter

    @property
    def reusable(self) -> bool:
        """Open, and its last request answered: nothing of it can still arrive."""
        return self._waiter is None and not self.closed and self.transport is not None \
            and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        parser, waiter = self._parser, self._waiter
        if parser is None or waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: this connection cannot be trusted
            return
        if not self.got_bytes:
            self.got_bytes = True
            self.deadline = self._total_at  # the first byte came: the total applies
        try:
            answer = parser.feed(data)
        except BadAnswer as exc:
            self._fail(exc)
            self.abort()
            return
        if answer is not None:
            self._finish()
            waiter.set_result(answer)
            if not parser.keep_alive:
                self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser, waiter = self._parser, self._waiter
        if waiter is None or waiter.done():
            return
        answer = parser.at_close() if parser is not None else None
        if answer is not None:  # a body that runs until the connection closes
            self._finish()
            waiter.set_result(answer)
        elif isinstance(exc, ssl.SSLError):
            self._fail(TlsFailed(exc))
        else:
            self._fail(Disconnected())

    def time_out(self) -> None:
        """Past its deadline: the request fails, and the connection (mid-answer) is closed."""
        self._fail(TimeoutError())
        self.abort()

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        self._finish()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self) -> None:
        self.deadline = float("inf")
        self._waiter = None
        self._parser = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_seconds: float
    first_byte_seconds: float
    total_seconds: float


class HttpOrigin:
    """Requests to one origin (`base_url`'s scheme, host and port; its path prefixes every
    request path) over at most `limit` keep-alive connections. Create it inside the loop."""

    def __init__(self, base_url: str, *, tls: ssl.SSLContext | None, limit: int,
                 timeouts: Timeouts, headers: Mapping[str, str]) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = tls if url.scheme == "https" else None
        if url.scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context()
        default_port = self._port == (443 if url.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._prefix = url.path.rstrip("/")
        self._head_tail = _header_lines(
            {"Host": host if default_port else f"{host}:{self._port}", **headers})
        self._timeouts = timeouts
        self._slots = asyncio.Semaphore(limit)
        self._idle: collections.deque[_Connection] = collections.deque()
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False  # after aclose: requests still under way do not pool their connection

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None,
                      params: Mapping[str, str] | None = None) -> Answer:
        """The answer, whatever its status; HttpTransportError or TimeoutError without one."""
        target = self._prefix + path
        if not target.isascii():  # as a browser (and aiohttp) would send it
            target = quote(target, safe="/?&=%:@!$'()*+,;~-._")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        lines = _header_lines(headers) if headers else ""
        if body is not None:
            lines += f"Content-Length: {len(body)}\r\n"
        data = f"{method} {target} HTTP/1.1\r\n{self._head_tail}{lines}\r\n".encode()
        if body:
            data += body
        async with self._slots:
            total_at = asyncio.get_running_loop().time() + self._timeouts.total_seconds
            conn, reused = await self._connection(total_at)
            try:
                return await self._send(conn, data, method, total_at)
            except Disconnected:
                if not (reused and not conn.got_bytes and method in ("GET", "HEAD")):
                    raise
            # the server had closed the idle connection: once more, on a fresh one
            conn, _ = await self._connection(total_at, fresh=True)
            return await self._send(conn, data, method, total_at)

    async def _send(self, conn: _Connection, data: bytes, method: str,
                    total_at: float) -> Answer:
        first_byte_at = asyncio.get_running_loop().time() + self._timeouts.first_byte_seconds
        self._busy.add(conn)
        if self._sweeper is None:
            self._arm_sweep()
        try:
            return await conn.send(data, method, first_byte_at, total_at)
        finally:
            self._busy.discard(conn)
            if conn.reusable and not self._closed:
                self._idle.append(conn)
            else:  # closed, or abandoned mid-answer (cancelled): its late bytes meet no one
                conn.abort()

    def _arm_sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Time out the requests past their deadline. One timer for the whole pool, every
        SWEEP_SECONDS while requests are in flight, where a timer per request cost more
        than parsing its answer."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for conn in [c for c in self._busy if c.deadline <= now]:
            conn.time_out()
        if self._busy:
            self._arm_sweep()

    async def _connection(self, total_at: float, fresh: bool = False
                          ) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.reusable:  # else the server closed it while it was idle
                return conn, True
        loop = asyncio.get_running_loop()
        budget = min(self._timeouts.connect_seconds, total_at - loop.time())
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                transport, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateFailed(exc) from exc
        except ssl.SSLError as exc:
            raise TlsFailed(exc) from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(self._host, self._port, exc) from exc
        # uvloop may call connection_made only after this returns: the transport is known now
        conn.transport = transport
        return conn, False

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def _header_lines(headers: Mapping[str, str]) -> str:
    """`Name: value\\r\\n` lines; a CR or LF in a name or value is refused (no injection)."""
    out = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if out.count("\r") != len(headers) or out.count("\n") != len(headers) \
            or any(":" in name for name in headers):
        raise ValueError(f"a header of {list(headers)} has a character HTTP forbids there")
    return out
