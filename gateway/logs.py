"""Structured logs to stdout, readable by a person in `journalctl -f` and by a log shipper.

A log line about one event carries correlation fields (episode id, idempotency key, upstream
receipt, rule, asset, sink) in `extra={"pb": {...}}` (see gateway/story.py). The JSON format
emits them as top-level keys; the text format appends them as a stable ` key=value` tail, so
`journalctl -u plantbridge | grep key=request:PB...` finds one event's whole story.

Under journald (stdout is the stream named by `JOURNAL_STREAM`) the text format leaves out our
own timestamp, which journald adds, and starts each line with the `<N>` priority prefix that
journald turns into the entry's priority (so `journalctl -p warning` works).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import IO, Any

import orjson

FIELDS_ATTR = "pb"  # the LogRecord attribute that holds correlation fields
# syslog priorities for the sd-daemon(3) line prefix
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})
# a tail value with one of these is quoted (one regex search: a drain logs thousands a second)
_NEEDS_QUOTES = re.compile(r'[ "=\\\t\n]')


def record_fields(record: logging.LogRecord) -> Mapping[str, Any]:
    """The correlation fields a log call passed with `extra={"pb": {...}}` (may be empty)."""
    got = getattr(record, FIELDS_ATTR, None)
    return got if isinstance(got, Mapping) else {}


def _text_value(value: Any) -> str:
    """A value of the key=value tail: bare when it is one token, quoted (logfmt) otherwise."""
    text = value if isinstance(value, str) else str(value)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def fields_tail(fields: Mapping[str, Any]) -> str:
    """` key=value` for each field that has a value, in the order given."""
    tail = ""
    for key, value in fields.items():  # a plain loop: a line per accepted request in a drain
        if value is not None:
            tail += f" {key}={_text_value(value)}"
    return tail


class JsonFormatter(logging.Formatter):
    """One JSON object per line; correlation fields are top-level keys beside `msg`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3),
                                 "level": record.levelname.lower(),
                                 "logger": record.name, "msg": record.getMessage()}
        for key, value in record_fields(record).items():
            if value is not None and key not in _RESERVED:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value...`; without TIME (and with the priority prefix)
    when journald timestamps the line itself."""

    def __init__(self, journald: bool = False) -> None:
        fmt = ("%(levelname)s %(name)s: %(message)s" if journald
               else "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        super().__init__(fmt, "%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime
        self._journald = journald
        self._second = -1  # the whole second `_stamp` shows: formatted once per second
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging's, to the second (no milliseconds in our format), formatted once per
        second: at a drain of thousands of lines a second strftime was a tenth of a line."""
        if datefmt != self.datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, super().formatTime(record, datefmt)
        return self._stamp

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            line = super().format(record)
        else:  # what logging.Formatter makes of our format, less its generic steps (a drain
            # logs a line per accepted request)
            record.message = record.getMessage()
            if self._journald:
                line = f"{record.levelname} {record.name}: {record.message}"
            else:
                record.asctime = self.formatTime(record, self.datefmt)
                line = f"{record.asctime} {record.levelname:<7} {record.name}: {record.message}"
        tail = fields_tail(record_fields(record))
        if tail:
            # after the message but before a traceback, so the tail stays on the first line
            head, sep, rest = line.partition("\n")
            line = head + tail + sep + rest
        if self._journald:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


def under_journald(stream: IO[str]) -> bool:
    """True when `stream` is the journal stream systemd connected (JOURNAL_STREAM=dev:inode).

    Comparing device and inode, as sd_journal_stream_fd(3) advises, keeps a shell started from a
    service (which inherits the variable, not the stream) from losing its timestamps.
    """
    named = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = named.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class LineHandler(logging.StreamHandler[IO[str]]):
    """The one stdout handler: a StreamHandler whose flush waits while a `burst` is logged."""

    pending = False  # a flush was asked for during a burst

    def flush(self) -> None:
        if _burst_depth:
            self.pending = True
            return
        self.pending = False
        super().flush()


_burst_depth = 0


@contextlib.contextmanager
def burst() -> Iterator[None]:
    """Lines logged inside reach stdout with one flush at the end, not one each: a drain's
    round logs dozens of accepted lines, and a flush per line was a write(2) per line. For the
    event loop's short synchronous stretches only; a line another thread logs meanwhile waits
    for the same flush."""
    global _burst_depth
    _burst_depth += 1
    try:
        yield
    finally:
        _burst_depth -= 1
        if not _burst_depth:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, LineHandler) and handler.pending:
                    handler.flush()


# The level and format `setup` chose, handed to the helper processes the daemon starts (the
# MQTT ingest worker) in their environment, so their lines read like the daemon's: the same
# timestamps, journald priorities (`journalctl -p warning` shows a worker's warnings too) and
# JSON when the config says so.
_CHILD_ENV = "PLANTBRIDGE_LOG"
_chosen = {"level": "info", "format": "text"}


def setup(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Route every logger to one stdout handler in the configured format."""
    _chosen.update(level=level, format=fmt)
    out = sys.stdout if stream is None else stream
    handler = LineHandler(out)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(journald=under_journald(out)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # no format of ours shows the thread or process: a LogRecord need not look them up (the
    # multiprocessing lookup alone was a tenth of a drain's accepted line)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Libraries that log every retry or frame: keep their warnings, drop their chatter.
    for noisy in ("asyncua", "pymodbus", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def child_env() -> dict[str, str]:
    """Environment entries for a helper process to log as this one does (`setup_child`)."""
    return {_CHILD_ENV: f"{_chosen['level']} {_chosen['format']}"}


def setup_child(stream: IO[str]) -> None:
    """In a helper process: `setup` as the parent chose it (`child_env`), to `stream`."""
    level, _, fmt = os.environ.get(_CHILD_ENV, "info text").partition(" ")
    setup(level, fmt or "text", stream)
