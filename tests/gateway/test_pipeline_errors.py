"""How the pipeline reports rule failures (`RuleEngine.on_error`): every one counted, the last
one shown with whose it is, each kind logged with its traceback at most once an hour."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway import pipeline as pipeline_mod
from gateway.model import MessageKind, RequestDetails, Transition, TransitionKind
from gateway.pipeline import MessageHook, Pipeline, Shaped
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


def _transition(kind: TransitionKind, ts: float) -> Transition:
    return Transition(kind, "vib", "pump-1", "vibration", "vib/pump-1/1", 3, 8.0, ts,
                      "vibration 8 above 7.1", RequestDetails("High vibration"))


async def test_a_message_hook_that_raises_is_skipped_from_then_on_and_the_others_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: dict[str, list[list[TransitionKind]]] = {"before": [], "failing": [], "after": []}

    def hook(name: str, fails: bool = False) -> MessageHook:
        def shape(transitions: Sequence[Transition], now: float, sinks: Sequence[str]) -> Shaped:
            seen[name].append([t.kind for t in transitions])
            if fails:
                raise ZeroDivisionError("planted")
            return Shaped(transitions)
        shape.__qualname__ = f"Planted.{name}"
        return shape

    caplog.set_level(logging.ERROR, logger="plantbridge.pipeline")
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        pipeline = Pipeline(RuleEngine(load_rule_files([])), outbox, ["cmms"], "site",
                            lambda: None)
        pipeline.message_hooks[:] = [hook("before"), hook("failing", fails=True), hook("after")]
        await pipeline.apply([_transition(TransitionKind.RAISED, 1000.0)])
        await pipeline.apply([_transition(TransitionKind.CLEARED, 1010.0)])
        leased = await outbox.lease("cmms", 10, time.time())
        [request] = leased  # the clear waits behind its raise (head of line per episode)
        assert request.message.kind is MessageKind.MAINTENANCE_REQUEST
        stats = await outbox.stats(time.time())
    raised, cleared = [TransitionKind.RAISED], [TransitionKind.CLEARED]
    assert seen == {"before": [raised, cleared], "failing": [raised],
                    "after": [raised, cleared]}
    assert stats.pending == {"cmms": 2}, stats  # the raise's request and the clear's update
    assert pipeline.stats.hooks_off == ["Planted.failing (ZeroDivisionError: planted)"]
    assert pipeline.stats.evaluation_errors == 1
    assert [r.getMessage() for r in caplog.records] == [
        "message hook Planted.failing failed (a bug); it is off until the daemon restarts, "
        "and transitions go out without it"]
