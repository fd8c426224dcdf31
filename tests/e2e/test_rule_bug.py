"""A bug in one rule costs nothing but that rule: the daemon as a subprocess, a real broker,
the CMMS simulator counting what arrived.

The bug is planted in the real process (a `sitecustomize.py` first on the child's path): the
bad-quality rule kind raises on one poison value and at every tick. Its rule comes first on the
vibration signal, ahead of a debounced threshold. Before the engine contained rule failures,
the poison sample was skipped for every rule (the threshold never saw the 666 mm/s, and an
episode raised by an earlier rule on that sample would have been lost), and the first tick that
hit the bug ended the rule ticker's task and with it the daemon: systemd would restart it into
the same bug, once a tick, with no debounce, stale rule or request going out meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for

SENSOR_RULE = """
[[rule]]
id = "vib-sensor"
kind = "bad_quality"
asset_pattern = "pump-*"
signal = "vibration"
limit_seconds = 5
"""

PLANTED = '''
"""Planted bugs (tests/e2e/test_rule_bug.py): the bad-quality rule kind fails on 666 and 3.25
and at every tick. In a subclass that rules/build.py builds, not a patched method, which would
not reach a compiled engine (tests/rules/planted.py)."""
import rules.build
from rules.watch import BadQualityRule


class PlantedBadQualityRule(BadQualityRule):
    def evaluate(self, sample):
        if sample.value in (666.0, 3.25):
            raise ZeroDivisionError("planted bug in evaluate")
        return BadQualityRule.evaluate(self, sample)

    def tick(self, now):
        raise ZeroDivisionError("planted bug in tick")


rules.build.BadQualityRule = PlantedBadQualityRule
'''


def plant(tmp: Path) -> Path:
    where = tmp / "planted"
    where.mkdir()
    (where / "sitecustomize.py").write_text(PLANTED)
    return where


async def test_a_rule_that_raises_costs_no_other_rule_its_request(stack: Stack) -> None:
    stack.child_path = plant(stack.tmp)
    port = await stack.spawn_up(SENSOR_RULE + vibration_rule(on_delay=0.3, off_delay=0.3))
    assert stack.proc is not None

    # The poison value: the sensor rule fails on it, the threshold still sees it, and its
    # on-delay runs out at a tick where the sensor rule fails again.
    stack.publish("pump-1", "vibration", 666.0)

    def requested() -> bool:
        assert stack.proc is not None
        if stack.proc.poll() is not None:
            raise AssertionError(f"the daemon exited:\n{stack.daemon_log()[-3000:]}")
        return len(stack.requests_for("pump-1")) == 1

    await wait_for(requested, 20, "pump-1's request despite the failing rule ahead of it")
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: len(stack.updates_for("pump-1")) == 1, 20, "pump-1's clear")

    # Ticks go on failing for the sensor rule; another episode still raises and clears.
    await stack.episode("pump-2")
    await wait_for(lambda: len(stack.updates_for("pump-2")) == 1, 20, "pump-2's episode")
    await stack.wait_drained(port)
    # The same failure again, between failing ticks: counted, not logged again.
    # Ticks fail all the while: wait until the sample was evaluated (counted), then for two
    # more failures after it, so the last one shown is a tick's.
    before = (await stack.status_now(port))["pipeline"]["samples"]
    stack.publish("pump-1", "vibration", 3.25)
    seen: list[int] = []

    async def failed_since_the_sample(more: int) -> bool:
        st = await stack.subprocess_status(port)
        if st is None or st["pipeline"]["samples"] <= before:
            return False
        seen.append(st["pipeline"]["evaluation_errors"])
        return seen[-1] >= seen[0] + more

    await wait_for(lambda: failed_since_the_sample(2), 20,
                   "the second evaluate failure, then two more at ticks")

    assert stack.proc.poll() is None, stack.daemon_log()[-3000:]
    assert len(stack.sim.requests) == 2, stack.sim.requests
    assert len(stack.sim.status_updates) == 2, stack.sim.status_updates
    assert_exactly_once(stack.sim)
    st = await stack.status_now(port)
    assert st["pipeline"]["evaluation_errors"] >= 2, st["pipeline"]  # the sample and ticks
    # The last failure, and whose it is: the sensor rule at a tick (they go on every second).
    assert any("rule evaluation error(s)" in p
               and "rule vib-sensor at a tick: ZeroDivisionError: planted bug in tick" in p
               for p in st["problems"]), st["problems"]
    log = stack.daemon_log()
    assert ("rule vib-sensor failed on pump-1/vibration = 666.0; the other rules saw the "
            "sample") in log, log[-3000:]
    assert "rule vib-sensor failed at a tick; the other rules ticked" in log, log[-3000:]
    # Each kind of failure logged once, with its traceback, though they alternate.
    assert log.count("ZeroDivisionError: planted bug in tick") == 1, log[-3000:]
    assert log.count("ZeroDivisionError: planted bug in evaluate") == 1, log[-3000:]
