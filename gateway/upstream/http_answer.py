"""Reading an HTTP/1.x answer from the bytes of one connection (gateway/upstream/http_client.py).

`AnswerParser.feed(data)` returns the `Answer` once it is whole: the status line, headers (names
lower-cased; repeated ones joined with ", "), and the body by Content-Length, chunked transfer
coding, or until the connection closes (`at_close()`). Informational answers (1xx) are skipped.
Anything that is not HTTP/1.x, or larger than the limits below, is a `BadAnswer`.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class HttpTransportError(Exception):
    """No whole answer came back; the message says why in plain words."""


class BadAnswer(HttpTransportError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"not a valid HTTP answer: {detail}")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type without parameters, as aiohttp's `content_type` gave it."""
        raw = self.headers.get("content-type")
        if raw is None:
            return "application/octet-stream"
        return raw.partition(";")[0].strip().lower()


class AnswerParser:
    """One answer on a connection; `keep_alive` says whether the connection may carry another."""

    def __init__(self, head_only: bool = False) -> None:
        self._buf = bytearray()
        self._head_only = head_only  # the answer to a HEAD has no body, whatever it says
        self._status = 0
        self._headers: dict[str, str] = {}
        self._length: int | None = None  # body bytes expected; None: chunked or until close
        self._chunked = False
        self._have_head = False
        self.keep_alive = True

    def feed(self, data: bytes) -> Answer | None:
        buf = self._buf
        buf += data
        while not self._have_head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise BadAnswer("header section too long")
                return None
            head = bytes(buf[:end])
            del buf[:end + 4]
            self._head(head)
        if self._length is not None:
            if len(buf) < self._length:
                return None
            body = bytes(buf[:self._length])
            if len(buf) > self._length:  # bytes past the answer: nothing was asked for them
                self.keep_alive = False
            return Answer(self._status, self._headers, body)
        if self._chunked:
            return self._dechunk()
        if len(buf) > MAX_BODY_BYTES:
            raise BadAnswer("body too large")
        return None  # until the connection closes

    def at_close(self) -> Answer | None:
        """The answer whose body ran until the connection closed; None if it was not whole."""
        if self._have_head and self._length is None and not self._chunked:
            return Answer(self._status, self._headers, bytes(self._buf))
        return None

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise BadAnswer(f"status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadAnswer(f"header line {line[:80]!r}")
            name = name.lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        status = int(code)
        if status < 200:  # 100 Continue, 103 Early Hints...: the real answer follows
            return
        self._status, self._headers, self._have_head = status, headers, True
        connection = headers.get("connection", "").lower()
        self.keep_alive = ("close" not in connection if version == "HTTP/1.1"
                           else "keep-alive" in connection)
        if self._head_only or status in (204, 304):
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            raw = headers["content-length"]
            if not raw.isdigit():
                raise BadAnswer(f"Content-Length {raw[:40]!r}")
            self._length = int(raw)
            if self._length > MAX_BODY_BYTES:
                raise BadAnswer("body too large")
        else:
            self.keep_alive = False  # the body ends when the connection does

    def _dechunk(self) -> Answer | None:
        """The body once the last chunk (and the trailers) arrived; the buffer untouched
        until then, so a chunk split across reads is read whole next time."""
        buf, pos = self._buf, 0
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_text = bytes(buf[pos:eol]).partition(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadAnswer(f"chunk size {size_text[:20]!r}") from None
            if size == 0:
                if buf.find(b"\r\n\r\n", eol) < 0:  # the end of the (usually no) trailers
                    return None
                return Answer(self._status, self._headers, b"".join(parts))
            start = eol + 2
            if len(buf) < start + size + 2:
                if start + size > MAX_BODY_BYTES:
                    raise BadAnswer("body too large")
                return None
            parts.append(bytes(buf[start:start + size]))
            pos = start + size + 2
