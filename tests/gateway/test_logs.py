"""The text log format's cheap paths say exactly what the plain ones said."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from gateway import logs
from gateway.logs import TextFormatter, fields_tail


def _record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("plantbridge.forwarder", logging.INFO, "", 0, "accepted", (), None)
    rec.created = created
    return rec


def test_the_timestamp_is_the_second_of_each_record_even_when_formatted_once_a_second() -> None:
    fmt = TextFormatter()
    base = 1_764_900_000.0
    for created in (base + 0.1, base + 0.9, base + 1.0, base + 1.5, base + 61.2, base + 0.2):
        want = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        assert fmt.format(_record(created)).startswith(want + " INFO "), created
    # another date format asked for explicitly is honoured and does not stick
    assert fmt.formatTime(_record(base), "%H") == time.strftime("%H", time.gmtime(base))
    assert fmt.format(_record(base)).startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base)))


@pytest.mark.parametrize(("value", "shown"), [
    ("WR-17", "WR-17"), ("a b", '"a b"'), ('say "x"', '"say \\"x\\""'), ("k=v", '"k=v"'),
    ("back\\slash", '"back\\\\slash"'), ("tab\there", '"tab\there"'),
    ("two\nlines", '"two\\nlines"'), ("", '""'), (12.5, "12.5"),
])
def test_tail_values_with_a_separator_are_quoted(value: object, shown: str) -> None:
    assert fields_tail({"v": value}) == f" v={shown}"


class CountingStream(io.StringIO):
    """What a handler wrote, and how often it flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.at_flush: list[str] = []  # the text written by each flush

    def flush(self) -> None:
        self.flushes += 1
        self.at_flush.append(self.getvalue())


@pytest.fixture
def logged() -> Iterator[CountingStream]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = CountingStream()
    logs.setup("info", "text", out)
    try:
        yield out
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_burst_writes_every_line_and_flushes_once_at_its_end(logged: CountingStream) -> None:
    log = logging.getLogger("plantbridge.forwarder")
    log.info("before")
    assert logged.flushes == 1  # outside a burst: a flush per line, as before
    with logs.burst():
        for i in range(5):
            log.info("accepted %d", i)
        with logs.burst():  # nested: still the outer one's single flush
            log.warning("inner")
        assert logged.flushes == 1
    assert logged.flushes == 2
    lines = logged.at_flush[-1].splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "before", *(f"accepted {i}" for i in range(5)), "inner"]


def test_a_burst_that_raises_still_flushes_its_lines(logged: CountingStream) -> None:
    with pytest.raises(RuntimeError), logs.burst():
        logging.getLogger("plantbridge.forwarder").error("before the fault")
        raise RuntimeError("fault")
    assert logged.flushes == 1 and "before the fault" in logged.at_flush[-1]
    logging.getLogger("plantbridge.forwarder").info("after")
    assert logged.flushes == 2  # and the next line is flushed on its own again


def _reference(record: logging.LogRecord, journald: bool) -> str:
    """The line as logging.Formatter makes it from our format, the tail after the first line."""
    fmt = ("%(levelname)s %(name)s: %(message)s" if journald
           else "%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    plain = logging.Formatter(fmt, "%Y-%m-%dT%H:%M:%S")
    plain.converter = time.gmtime
    line = plain.format(record)
    head, sep, rest = line.partition("\n")
    line = head + fields_tail(logs.record_fields(record)) + sep + rest
    return f"<{ {logging.WARNING: 4, logging.ERROR: 3}.get(record.levelno, 6)}>{line}" \
        if journald else line


@pytest.mark.parametrize("journald", [False, True])
def test_the_direct_line_is_the_one_logging_formatter_makes(journald: bool) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    cases = [
        ("accepted %s in %.0f ms", ("WR-1", 12.34), None, {"key": "request:PB1", "ms": 12.3}),
        ("two\nlines %d", (7,), None, {"receipt": "WR 9"}),
        ("no fields", (), None, {}),
        ("with a traceback", (), failure, {"sink": "cmms"}),
        ("percent %% kept", (), None, {"n": None}),
    ]
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        for msg, args, exc, fields in cases:
            made = [logging.LogRecord("plantbridge.forwarder", level, __file__, 1, msg, args, exc)
                    for _ in range(2)]
            for rec in made:
                rec.created = 1_764_900_000.25
                setattr(rec, logs.FIELDS_ATTR, fields)
            assert TextFormatter(journald).format(made[0]) == _reference(made[1], journald)
