"""What keeps the daemon lean, on the real daemon: start-up's objects frozen out of the
collector's reach, and trend rings only for the signals the rules read (at start and after a
reload), so a source with many unruled points costs no page memory."""

from __future__ import annotations

import gc

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for

SPEED_RULE = """
[[rule]]
id = "slow"
kind = "threshold"
asset_pattern = "pump-*"
signal = "speed"
below = 100
severity = 3
title = "Slow {asset}"
"""


async def test_start_up_is_frozen_and_trends_follow_the_rules(stack: Stack) -> None:
    gc.unfreeze()  # whatever earlier tests froze: the daemon must freeze its own start-up
    stack.write_config(vibration_rule(0, 0))
    d = await stack.start_daemon()
    assert gc.get_freeze_count() > 0
    feed, pipeline = d.page_feed, d.pipeline
    assert feed is not None and pipeline is not None
    for k in range(3):
        stack.publish("pump-1", "vibration", 2.0 + k)
        stack.publish("pump-1", "speed", 1500.0)  # no rule reads it
        stack.publish("pump-1", f"spare-{k}", 1.0)
    await wait_for(lambda: pipeline.stats.samples >= 9, 10, "every sample evaluated")
    assert {"vibration"} == {sig for sig in ("vibration", "speed", "spare-0")
                             if feed.trends.ring("pump-1", sig) is not None}
    assert len(feed.trends) == 1

    (stack.tmp / "rules.d" / "rules.toml").write_text(SPEED_RULE)
    assert await d.reload()
    assert len(feed.trends) == 0  # the vibration trend went with its rule
    stack.publish("pump-1", "speed", 1400.0)
    stack.publish("pump-1", "vibration", 3.0)
    await wait_for(lambda: pipeline.stats.samples >= 11, 10, "the new samples evaluated")
    ring = feed.trends.ring("pump-1", "speed")
    assert ring is not None and ring.last_value == 1400.0
    assert feed.trends.ring("pump-1", "vibration") is None
