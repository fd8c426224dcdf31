"""The text log format's cheap paths say exactly what the plain ones said."""

from __future__ import annotations

import logging
import time

import pytest

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
