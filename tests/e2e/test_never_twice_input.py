"""Issue 10, "never zero, never two": device clocks, resent samples, the shipped rules.

Black box: the daemon as a subprocess, a real Mosquitto, the CMMS simulator counting what
arrives. Each "nothing may arrive" check first publishes a fence sample (`Stack.fence`): once
its own request arrived and the outbox drained, every earlier sample has had its effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from tests.e2e.never_twice import FENCE_RULE, expect_exactly, threshold_rule
from tests.e2e.stack import Stack

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.d"


async def _up(stack: Stack, rules: str) -> int:
    return await stack.spawn_up(rules + FENCE_RULE)


@contextlib.asynccontextmanager
async def _reporting(stack: Stack, signals: dict[str, float], interval: float,
                     asset: str = "pump-1", behind: timedelta | None = None,
                     ) -> AsyncIterator[list[int]]:
    """A device sending `signals` every `interval` s until the block ends (so a correct stale
    rule never sees a silence while the test looks). With `behind`, its clock is that much
    late and its timestamps carry no zone (local time, as many PLCs send). Yields a one-item
    list with the count of samples sent so far."""
    sent = [0]

    async def device() -> None:
        while True:
            for signal, value in signals.items():
                if behind is None:
                    stack.publish(asset, signal, value)
                else:
                    local = (datetime.now(UTC) - behind).replace(tzinfo=None)
                    stack.publish(asset, signal, value, raw=orjson.dumps(
                        {"value": value, "ts": local.isoformat(timespec="milliseconds")}))
                sent[0] += 1
            await asyncio.sleep(interval)  # the device's own pace, not a synchronisation

    task = asyncio.create_task(device(), name="device")
    try:
        yield sent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


STALE = """
[[rule]]
id = "vib-silent"
kind = "stale"
asset_pattern = "pump-*"
signal = "vibration"
limit_seconds = 2
title = "No vibration data from {asset}"
"""


async def test_a_device_clock_5_h_behind_with_zone_less_timestamps_raises_nothing(
        stack: Stack) -> None:
    """Scaled from the issue's 3 minutes of 10 s samples against a 120 s limit: 0.4 s samples
    for about 8 s against a 2 s limit. The device is never silent by the gateway's clock."""
    port = await _up(stack, STALE)
    async with _reporting(stack, {"vibration": 3.0}, 0.4, behind=timedelta(hours=5)) as sent:
        await stack.wait_evaluated(port, 20)  # about 8 s of the device's samples
        await stack.fence(port)
        assert sent[0] >= 20
        await expect_exactly(0, lambda: stack.requests_for("pump-1"),
                             "requests for pump-1 from a stale rule while it reported every "
                             "0.4 s with its clock 5 h behind", 0, lambda: stack.wait_drained(port))


ON_DELAY_RULE = threshold_rule("vib-high", "vibration", extra="on_delay_seconds = 5")


async def test_a_device_120_s_behind_cannot_beat_the_on_delay(stack: Stack) -> None:
    """Scaled from a 3 s spike against a 30 s on-delay: 0.6 s against 5 s."""
    port = await _up(stack, ON_DELAY_RULE)
    values = [3.0] + [8.0] * 6 + [3.0]  # 0.1 s apart: a 0.6 s spike
    for v in values:
        stack.publish("pump-1", "vibration", v, ts=time.time() - 120)
        await asyncio.sleep(0.1)  # the device's pace
    await stack.fence(port)
    await expect_exactly(0, lambda: stack.requests_for("pump-1"),
                         "requests for a 0.6 s spike against a 5 s on-delay (device 120 s "
                         "behind)", 0, lambda: stack.wait_drained(port))
    # The control: a real excursion from the same device raises once, after the on-delay.
    async with _reporting(stack, {"vibration": 8.0}, 0.25):
        await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                             "request for pump-1 held above the alarm for longer than the "
                             "on-delay", 15, lambda: stack.wait_drained(port))


def _count_rule(rule_id: str, signal: str) -> str:
    return threshold_rule(rule_id, signal, extra="count = 3\nof_last_samples = 5")


PLAIN = threshold_rule("temp-high", "temperature", above=80, clear_below=70)


async def test_an_identical_resend_is_evaluated_once(stack: Stack) -> None:
    port = await _up(stack, _count_rule("vib-3-of-5", "vibration") + PLAIN)
    t = time.time()
    # 8, 3, 3, 8, 3 with the fourth sent twice (the same payload: value and timestamp).
    for v, ts in [(8.0, t), (3.0, t + 0.1), (3.0, t + 0.2), (8.0, t + 0.3), (8.0, t + 0.3),
                  (3.0, t + 0.4)]:
        stack.publish("pump-1", "vibration", v, ts=ts)
    # A plain threshold: raise, clear, then the device resends its old alarm sample.
    for v, ts in [(60.0, t), (90.0, t + 0.1), (90.0, t + 0.1), (60.0, t + 0.2),
                  (90.0, t + 0.1)]:
        stack.publish("pump-1", "temperature", v, ts=ts)
    await stack.fence(port)
    requests = [r["body"]["rule_id"] for r in stack.requests_for("pump-1")]
    assert requests.count("vib-3-of-5") == 0, (
        f"expected 0 requests from the 3-of-5 rule for 8, 3, 3, 8 (twice), 3, got "
        f"{requests.count('vib-3-of-5')}: the resent copy was evaluated again")
    assert requests.count("temp-high") == 1, (
        f"expected exactly 1 request from the plain threshold, got "
        f"{requests.count('temp-high')}: a resent old sample raised a second episode")


async def test_a_resend_after_a_kill_is_evaluated_once(stack: Stack) -> None:
    """A device resends its last reading after our restart (a retained message, a device that
    republishes on reconnect). Its mark (newest device time evaluated) must have survived the
    kill -9 with the rule state, also between the rule engine's checkpoints, when both live in
    its journal: else the copy completes the 3-of-5 window and raises a request."""
    port = await _up(stack, _count_rule("vib-3-of-5", "vibration"))
    t = time.time()
    for n, (v, ts) in enumerate([(3.0, t - 1.0), (8.0, t), (3.0, t + 0.1), (8.0, t + 0.2)]):
        stack.publish("pump-1", "vibration", v, ts=ts)
        await stack.wait_evaluated(port, n + 1)  # a commit group each: journal rows
    await stack.restart_subprocess(port, "kill")
    stack.publish("pump-1", "vibration", 8.0, ts=t + 0.2)  # the resend: 2 of 5 stays 2
    await stack.fence(port)
    assert [r["body"]["rule_id"] for r in stack.requests_for("pump-1")] == [], (
        "the resent copy was evaluated again after the restart and completed 3 of 5")
    stack.publish("pump-1", "vibration", 8.0, ts=t + 0.3)  # a new reading: now 3 of 5
    await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                         "request for pump-1 (8, 3, 8, kill, resend, 8)", 15,
                         lambda: stack.wait_drained(port))


def shipped_rules_scaled(factor: float) -> str:
    """The shipped rule files, every `*_seconds = N` divided by `factor` (text substitution,
    so the test runs in seconds instead of minutes; the rules are otherwise as shipped)."""
    def scale(m: re.Match[str]) -> str:
        return f"{m.group(1)} = {float(m.group(2)) / factor:g}"

    text = "\n".join(p.read_text() for p in sorted(SHIPPED_RULES.glob("*.toml")))
    return re.sub(r"^(\w+_seconds) = ([0-9.]+)", scale, text, flags=re.MULTILINE)


async def test_the_shipped_rules_with_only_pump_1_reporting_normal_values_raise_nothing(
        stack: Stack) -> None:
    """The issue's 150 s with the shipped 120 s stale limit, scaled by 40: 3 s limit, and
    pump-1 reports normal values every 0.5 s for twice the limit (6 s)."""
    rules = shipped_rules_scaled(40)
    assert re.search(r"^limit_seconds = 3 ", rules, re.MULTILINE), "the stale rule is not scaled"
    port = await _up(stack, rules)
    normal = {"vibration": 2.5, "temperature": 50.0, "current": 12.0, "running": 1.0}
    async with _reporting(stack, normal, 0.5):
        started = time.monotonic()
        await stack.wait_evaluated(port, 4 * 12)  # 12 rounds of 0.5 s: at least 6 s
        assert time.monotonic() - started >= 5.0
        await stack.fence(port)
        await expect_exactly(0, lambda: [r for r in stack.sim.requests
                                         if r["body"]["rule_id"] != "fence"],
                             "requests from the shipped rules with only pump-1 reporting "
                             "normal values", 0, lambda: stack.wait_drained(port))
