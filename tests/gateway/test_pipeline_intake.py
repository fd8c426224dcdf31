"""Pipeline intake, a batch at a time: invalid values counted, resends gated, the rest
evaluated in order and committed before the batch is acknowledged (real SQLite outbox)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from buffer.store import OutboxStore
from gateway.model import Quality, Sample, SampleBatch
from gateway.pipeline import Pipeline
from rules import RuleEngine, load_rule_files
from tests.harness import wait_for

T0 = 1_780_000_000.0
RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 5.0
count = 3
of_last_samples = 5
"""


def vib(value: float | None, device_ts: float | None,
        quality: Quality = Quality.GOOD) -> Sample:
    return Sample("pump-1", "vibration", value, quality, T0 + 100, device_ts)


async def test_a_batch_is_checked_gated_evaluated_and_acknowledged_after_commit(
        tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(RULE)
    engine = RuleEngine(load_rule_files([tmp_path / "r.toml"]))
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        pipeline = Pipeline(engine, outbox, ["cmms"], "site", lambda: None)
        seen: list[Sample] = []
        pipeline.sample_listeners.append(seen.append)
        acked: list[str] = []
        first = [vib(8, T0 + 1), vib(math.nan, T0 + 2), vib(None, T0 + 3), vib(8, T0 + 4),
                 vib(None, T0 + 5, Quality.BAD), vib(math.inf, None)]
        # a redelivery of the first batch's readings, then one newer reading that completes
        # 3 of 5 above the limit (the copies must not have completed it already)
        second = [vib(8, T0 + 1), vib(8, T0 + 4), vib(9, T0 + 6)]
        runner = asyncio.create_task(pipeline.run())
        try:
            await pipeline.submit(SampleBatch(first, lambda: acked.append("first")), "mqtt")
            await wait_for(lambda: acked == ["first"], 10)
            assert await outbox.open_episodes() == []  # 8, 8 and a bad reading: not yet
            await pipeline.submit(SampleBatch(second, lambda: acked.append("second")), "mqtt")
            await wait_for(lambda: acked == ["first", "second"], 10)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert seen == [first[0], first[3], first[4], second[2]]
        assert (pipeline.stats.samples, pipeline.stats.rejected_invalid) == (9, 3)
        assert pipeline.gate.skipped == {"mqtt": 2}
        assert [e.rule_id for e in await outbox.open_episodes()] == ["vib-high"]


async def test_a_failing_sample_listener_costs_the_rules_nothing(tmp_path: Path) -> None:
    """A listener (the page's trend ring) that raises is counted; the rules still see the
    sample, and the episode it completes is committed."""
    (tmp_path / "r.toml").write_text(RULE)
    engine = RuleEngine(load_rule_files([tmp_path / "r.toml"]))
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        pipeline = Pipeline(engine, outbox, ["cmms"], "site", lambda: None)

        def broken(sample: Sample) -> None:
            raise RuntimeError("trend ring bug")

        pipeline.sample_listeners.append(broken)
        acked: list[str] = []
        runner = asyncio.create_task(pipeline.run())
        try:
            batch = [vib(8, T0 + 1), vib(8, T0 + 2), vib(8, T0 + 3)]
            await pipeline.submit(SampleBatch(batch, lambda: acked.append("batch")), "mqtt")
            await wait_for(lambda: acked == ["batch"], 10)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert [e.rule_id for e in await outbox.open_episodes()] == ["vib-high"]
        assert pipeline.stats.evaluation_errors == 3
        assert pipeline.stats.last_evaluation_error == ("a sample listener: RuntimeError: "
                                                        "trend ring bug")
