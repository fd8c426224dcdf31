"""How the pipeline reports rule failures (`RuleEngine.on_error`): every one counted, the last
one shown with whose it is, each kind logged with its traceback at most once an hour."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway import pipeline as pipeline_mod
from gateway.pipeline import Pipeline
from rules import RuleEngine, load_rule_files
from tests.rules.planted import plant

RULE = """
[[rule]]
id = "vib-sensor"
kind = "bad_quality"
asset = "pump-1"
signal = "vibration"
limit_seconds = 5
"""


async def test_each_kind_of_failure_is_logged_once_an_hour_and_every_one_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from rules.watch import BadQualityRule

    calls = [0]

    def tick(self: BadQualityRule, now: float) -> None:
        calls[0] += 1
        raise ZeroDivisionError(f"planted, value {calls[0] % 2}")  # two kinds, alternating

    planted = plant(monkeypatch, "BadQualityRule", tick=tick)
    (tmp_path / "r.toml").write_text(RULE)
    engine = RuleEngine(load_rule_files([tmp_path / "r.toml"]))
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        pipeline = Pipeline(engine, outbox, ["cmms"], "site", lambda: None)
    # Ticks alone, without the loop or the outbox: the clock can jump an hour.
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the pipeline's hourly limit
    caplog.set_level(logging.ERROR, logger="plantbridge.pipeline")

    def logged() -> int:
        return sum("failed at a tick" in r.getMessage() for r in caplog.records)

    for second in range(10):  # within the hour: each of the two kinds once
        assert engine.tick(float(second)) == ()
    assert (pipeline.stats.evaluation_errors, logged()) == (10, 2)
    assert pipeline.stats.last_evaluation_error == (
        "rule vib-sensor at a tick: ZeroDivisionError: planted, value 0")
    clock[0] += 3600.0  # an hour later: logged again, once each
    for second in range(10, 14):
        engine.tick(float(second))
    assert (pipeline.stats.evaluation_errors, logged()) == (14, 4)
    # At most _ERRORS_LOGGED kinds are remembered; past that, new kinds are only counted.
    monkeypatch.setattr(pipeline_mod, "_ERRORS_LOGGED", 2)
    monkeypatch.setattr(planted, "tick", lambda self, now: 1 / 0)  # a Python class: patchable
    engine.tick(20.0)
    assert (pipeline.stats.evaluation_errors, logged()) == (15, 4)
    assert pipeline.stats.last_evaluation_error.endswith("ZeroDivisionError: division by zero")
