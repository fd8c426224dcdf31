"""The log tells each event's story once, with the same correlation fields on every line.

Formatting is checked on real handlers; the story itself on a real daemon (real Mosquitto, the
CMMS simulator over a socket) whose log records are captured.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway import logs
from gateway.logs import JsonFormatter, TextFormatter, fields_tail
from gateway.story import CORRELATION, extra, log_transition
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for


def _record(message: str, **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("plantbridge.forwarder", logging.INFO, __file__, 1, message, (), None)
    for k, v in extra(**fields).items():
        setattr(rec, k, v)
    return rec


# --- formatting ---------------------------------------------------------------------------


def test_text_tail_is_stable_and_quotes_values_with_spaces() -> None:
    rec = _record("accepted", sink="cmms", asset="pump 1", key="request:PBX:cmms",
                  episode_id="e1", receipt='MR-"1"', rule_id="vib-high", latency_ms=12.5)
    line = TextFormatter().format(rec)
    assert line.endswith(' accepted episode_id=e1 key=request:PBX:cmms receipt="MR-\\"1\\""'
                         ' rule_id=vib-high asset="pump 1" sink=cmms latency_ms=12.5'), line
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO ", line), line
    assert fields_tail({"a": None, "b": ""}) == ' b=""'


def test_json_carries_the_fields_as_top_level_keys() -> None:
    rec = _record("accepted", sink="cmms", asset="pump-1", key="k", episode_id="e1",
                  receipt="MR-1", rule_id="r", msg="cannot overwrite the message")
    entry = orjson.loads(JsonFormatter().format(rec))
    assert entry["msg"] == "accepted" and entry["level"] == "info"
    assert {k: entry[k] for k in CORRELATION} == {
        "episode_id": "e1", "key": "k", "receipt": "MR-1", "rule_id": "r", "asset": "pump-1",
        "sink": "cmms"}


def test_under_journald_the_text_has_no_timestamp_but_a_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = (tmp_path / "journal").open("w+")
    try:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup("info", "text", out)
        logging.getLogger("plantbridge.test").warning("link down", extra=extra(sink="cmms"))
        other = io.StringIO()  # same variable, another stream: a shell, not the journal
        assert not logs.under_journald(other)
        out.flush()
        out.seek(0)
        assert out.read() == "<4>WARNING plantbridge.test: link down sink=cmms\n"
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        out.close()


# --- the story of a real daemon -----------------------------------------------------------


def _lines(caplog: pytest.LogCaptureFixture, needle: str,
           level: int = logging.INFO) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage() and r.levelno >= level]


def _fields(rec: logging.LogRecord) -> dict[str, Any]:
    return dict(logs.record_fields(rec))


async def test_one_line_per_raise_accept_and_clear_with_correlation_fields(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plantbridge")
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.pipeline is not None
    if log_transition not in d.pipeline.listeners:  # what the daemon wiring adds (see report)
        d.pipeline.listeners.append(log_transition)
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.updates_for("pump-1")) == 1, 20, "raise and clear upstream")
    await stack.settled()
    receipt = stack.requests_for("pump-1")[0]["id"]

    raised, cleared = _lines(caplog, "raised vib-high on pump-1"), _lines(caplog, "cleared vib")
    accepted = _lines(caplog, f"accepted as {receipt}")
    assert (len(raised), len(cleared), len(accepted)) == (1, 1, 2), caplog.text
    episode = _fields(raised[0])["episode_id"]
    for rec in raised + cleared:
        assert orjson.loads(JsonFormatter().format(rec))["episode_id"] == episode
        f = _fields(rec)
        assert f["episode_id"] == episode and f["rule_id"] == "vib-high"
        assert f["asset"] == "pump-1" and f["key"].startswith("PB")
    for rec, intent in zip(accepted, ("request", "cleared"), strict=True):
        f = _fields(rec)
        assert f == f | {"episode_id": episode, "receipt": receipt, "rule_id": "vib-high",
                         "asset": "pump-1", "sink": "cmms"}
        assert f["key"] == f"{intent}:{_fields(raised[0])['key']}:cmms"
        assert f["latency_ms"] >= 0
        text = TextFormatter().format(rec)  # the same fields in the text tail
        assert f" receipt={receipt} " in text and f" episode_id={episode} " in text
        assert orjson.loads(JsonFormatter().format(rec))["receipt"] == receipt
    assert not _lines(caplog, "failing", logging.WARNING)


async def test_a_503_burst_logs_one_start_and_one_end(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plantbridge")
    stack.write_config(vibration_rule())
    await stack.start_daemon()
    stack.sim.faults.set("error_5xx", count=4, status=503)
    await stack.play("pump-2", [3.0] + [8.0] * 10)
    await wait_for(lambda: len(stack.requests_for("pump-2")) == 1, 30, "request after the burst")
    await wait_for(lambda: bool(_lines(caplog, "delivered after")), 10, "the end line")

    start = _lines(caplog, "failing, will retry")
    end = _lines(caplog, "delivered after")
    assert (len(start), len(end)) == (1, 1), caplog.text
    assert "HTTP 503" in start[0].getMessage()
    # 4 injected 503s; a probe of the upstream (if any) may meet some of them instead
    tries = re.search(r"after (\d+) attempts in [\d.]+ s: accepted as MR-", end[0].getMessage())
    assert tries is not None and 2 <= int(tries.group(1)) <= 5, end[0].getMessage()
    assert _fields(start[0])["key"] == _fields(end[0])["key"]
    assert _fields(end[0])["receipt"] == stack.requests_for("pump-2")[0]["id"]
    link_down, link_up = _lines(caplog, "upstream failing"), _lines(caplog, "upstream recovered")
    assert (len(link_down), len(link_up)) == (1, 1), caplog.text


async def test_an_outage_under_a_backlog_is_one_link_line_not_a_line_per_record(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Seen by hand: 200 pumps raising while the CMMS answered 503 gave 200 WARNING lines. The
    link's line says it once, one record's line is the example; each request still gets its
    line when it is delivered, after how many attempts."""
    caplog.set_level(logging.DEBUG, logger="plantbridge")
    stack.write_config(vibration_rule())
    await stack.start_daemon()
    stack.sim.faults.set("error_5xx", count=100_000, status=503)
    pumps = [f"pump-{i}" for i in range(20)]
    await stack.play_many(pumps, [3.0] + [8.0] * 10)
    await wait_for(lambda: len(_lines(caplog, "failing, will retry", logging.DEBUG)) == 20, 30,
                   "every request failing once")
    stack.sim.faults.clear()
    await wait_for(lambda: all(stack.requests_for(p) for p in pumps), 30, "every request")
    await wait_for(lambda: len(_lines(caplog, "delivered after")) == 20, 10, "the end lines")

    assert len(_lines(caplog, "failing, will retry", logging.WARNING)) == 1, caplog.text
    assert len(_lines(caplog, "upstream failing", logging.WARNING)) == 1, caplog.text
    assert len(_lines(caplog, "upstream recovered")) == 1, caplog.text
    assert all(len(stack.requests_for(p)) == 1 for p in pumps)


async def test_a_hung_upstream_is_said_once_and_its_recovery_once(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plantbridge")
    stack.write_config(vibration_rule(), forwarding="hung_after_seconds = 0.5")
    d = await stack.start_daemon()
    fwd = d.forwarders[0]
    stack.sim.faults.set("hang")  # until cleared; the sink gives up after 2 s each time
    await stack.play("pump-3", [3.0] + [8.0] * 10)
    await wait_for(lambda: fwd.stats.hung, 20, "the hung upstream noticed")
    await wait_for(lambda: fwd.stats.sent >= 2, 20, "a second send into the hang")
    assert fwd.stats.hung
    stack.sim.faults.clear()
    await wait_for(lambda: len(stack.requests_for("pump-3")) == 1, 30, "delivered after the hang")
    await wait_for(lambda: not fwd.stats.hung, 10, "hung cleared")

    hung = _lines(caplog, "not answering for", logging.WARNING)
    back = _lines(caplog, "answering again")
    assert (len(hung), len(back)) == (1, 1), caplog.text
    assert "requests in flight" in hung[0].getMessage()
    assert _fields(hung[0]) == {"sink": "cmms"}


async def test_json_log_format_of_a_real_daemon_process(stack: Stack) -> None:
    path = stack.write_config(vibration_rule())
    path.write_text(path.read_text().replace('site = "e2e"', 'site = "e2e"\nlog_format = "json"'))
    stack.spawn_daemon()

    def entries() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in stack.daemon_log().splitlines()
                if line.startswith("{")]

    await wait_for(lambda: any("running" in e["msg"] for e in entries()), 30, "daemon running")
    await stack.episode("pump-4")
    await wait_for(lambda: sum("accepted as" in e["msg"] for e in entries()) == 2, 30,
                   "two accepted lines")
    lines = stack.daemon_log().splitlines()
    assert all(line.startswith("{") for line in lines), lines  # nothing but JSON on stdout
    receipt = stack.requests_for("pump-4")[0]["id"]
    accepted = [e for e in entries() if "accepted as" in e["msg"]]
    assert [e["key"].split(":")[0] for e in accepted] == ["request", "cleared"]
    for e in accepted:
        assert e == e | {"receipt": receipt, "sink": "cmms", "asset": "pump-4",
                         "rule_id": "vib-high", "level": "info", "logger": "plantbridge.forwarder"}
        assert e["episode_id"] == accepted[0]["episode_id"] and e["latency_ms"] >= 0
