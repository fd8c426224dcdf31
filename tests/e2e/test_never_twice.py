"""Issue 10, "never zero, never two": a restart is invisible upstream (black box).

The daemon runs as a subprocess against a real Mosquitto and the CMMS simulator. Sensors report
by exception (one sample per change, as MQTT and Sparkplug devices do), so whatever an
acknowledged sample started (an on or off delay, a mute, an N-of-M or rate window) must come
back from storage after kill -9 or SIGTERM: no later sample will rebuild it. Times are scaled
down (delays of 4 s instead of minutes) so the file runs in well under a minute.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.never_twice import (
    COMMIT_GRACE_SECONDS,
    expect_exactly,
    parse_iso,
    sleep_until,
    threshold_rule,
)
from tests.e2e.stack import Stack
from tests.harness import wait_for

ON_DELAY = 4.0
OFF_DELAY = 4.0
TICK = 0.1  # the stack's rules.tick_seconds
# A loaded 2-core box may run the ticker, the commit and the send this much late.
LATE_MARGIN = 1.5
RESTART_AT = 1.0  # seconds into the delay


def threshold(on_delay: float, off_delay: float, extra: str = "") -> str:
    return threshold_rule("vib-high", "vibration", extra=f"on_delay_seconds = {on_delay}\n"
                          f"off_delay_seconds = {off_delay}\n{extra}")


async def _restart(stack: Stack, port: int, how: str) -> float:
    return time.time() if how == "none" else await stack.restart_subprocess(port, how)


def _within_a_tick(at: float, deadline: float, up_at: float, what: str) -> None:
    """At the original deadline (never before it), or at start if it passed while down."""
    assert at >= deadline - TICK, (
        f"{what} {deadline - at:.2f} s before the original deadline: the delay restarted short")
    latest = max(deadline, up_at) + TICK + LATE_MARGIN
    assert at <= latest, (
        f"{what} {at - deadline:.2f} s after the original deadline (daemon back up "
        f"{up_at - deadline:+.2f} s from it): the delay restarted from the restart")


# "none" is the control: the same steps without a restart must pass today.
@pytest.mark.parametrize("how", ["none", "kill", "term"])
async def test_restart_during_on_delay_raises_once_at_the_original_deadline(
        stack: Stack, how: str) -> None:
    port = await stack.spawn_up(threshold(ON_DELAY, OFF_DELAY))
    stack.publish("pump-1", "vibration", 3.0)
    await stack.wait_evaluated(port, 1)
    crossing = time.time()
    stack.publish("pump-1", "vibration", 8.0, ts=crossing)  # the only sample: by exception
    await stack.wait_evaluated(port, 2)
    await sleep_until(crossing + RESTART_AT)
    assert stack.requests_for("pump-1") == [], "raised before the on-delay ended"
    up_at = await _restart(stack, port, how)
    [req] = await expect_exactly(
        1, lambda: stack.requests_for("pump-1"),
        f"request for pump-1 (restart by {how} {RESTART_AT} s into a {ON_DELAY} s on-delay)",
        ON_DELAY + 8, lambda: stack.wait_drained(port))
    _within_a_tick(parse_iso(req["body"]["raised_at"]), crossing + ON_DELAY, up_at, "raised")
    _within_a_tick(parse_iso(req["created_at"]), crossing + ON_DELAY, up_at,
                   "arrived at the simulator")


# "none" is the control: the same steps without a restart must pass today.
@pytest.mark.parametrize("how", ["none", "kill", "term"])
async def test_restart_during_off_delay_clears_once_and_a_later_excursion_raises_again(
        stack: Stack, how: str) -> None:
    port = await stack.spawn_up(threshold(0.3, OFF_DELAY))
    stack.publish("pump-1", "vibration", 3.0)
    stack.publish("pump-1", "vibration", 8.0)
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 15, "the raise upstream")
    back = time.time()
    stack.publish("pump-1", "vibration", 3.0, ts=back)  # back to normal, once
    await stack.wait_evaluated(port, 3)
    await sleep_until(back + RESTART_AT)
    assert stack.updates_for("pump-1") == [], "cleared before the off-delay ended"
    up_at = await _restart(stack, port, how)
    [clear] = await expect_exactly(
        1, lambda: stack.updates_for("pump-1"),
        f"clear for pump-1 (restart by {how} {RESTART_AT} s into a {OFF_DELAY} s off-delay)",
        OFF_DELAY + 8, lambda: stack.wait_drained(port))
    _within_a_tick(parse_iso(clear["body"]["cleared_at"]), back + OFF_DELAY, up_at, "cleared")
    _within_a_tick(parse_iso(clear["created_at"]), back + OFF_DELAY, up_at,
                   "the clear arrived at the simulator")
    # A later real excursion is a new episode: a second request, not swallowed by a stale one.
    stack.publish("pump-1", "vibration", 8.0)
    reqs = await expect_exactly(2, lambda: stack.requests_for("pump-1"),
                                "requests for pump-1 (the first episode and a later one)",
                                15, lambda: stack.wait_drained(port))
    assert reqs[0]["external_ref"] != reqs[1]["external_ref"]


MUTE = 'suppress_while = [{ signal = "maintenance_mode", equals = 1 }]'


async def test_a_mute_set_before_a_restart_still_mutes_after_it(stack: Stack) -> None:
    port = await stack.spawn_up(threshold(0.3, 0.3, MUTE))
    stack.publish("pump-1", "maintenance_mode", 1)  # the technician starts work: sent once
    stack.publish("pump-1", "vibration", 3.0)
    await stack.wait_evaluated(port, 2)
    await stack.restart_subprocess(port, "kill")
    stack.publish("pump-1", "vibration", 8.0)  # the pump is run up while being serviced
    await stack.wait_evaluated(port, 1)
    # The positive condition above says the sample was evaluated; this bounded quiet period
    # lets a wrongly unmuted rule's 0.3 s on-delay run out and its request be sent.
    quiet_until = time.time() + 0.3 + COMMIT_GRACE_SECONDS + LATE_MARGIN
    await sleep_until(quiet_until)
    await expect_exactly(0, lambda: stack.requests_for("pump-1"),
                         "requests for pump-1 while muted for maintenance across a restart",
                         0, lambda: stack.wait_drained(port))
    stack.publish("pump-1", "maintenance_mode", 0)  # work done
    stack.publish("pump-1", "vibration", 3.0)
    stack.publish("pump-1", "vibration", 8.0)
    await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                         "request for pump-1 after the unmute", 15,
                         lambda: stack.wait_drained(port))


async def test_an_n_of_m_window_survives_a_restart(stack: Stack) -> None:
    rules = threshold_rule("vib-high", "vibration", extra="count = 3\nof_last_samples = 5")
    port = await stack.spawn_up(rules)
    for v in (3.0, 8.0, 8.0):  # two of three needed alarm samples before the restart
        stack.publish("pump-1", "vibration", v)
    await stack.wait_evaluated(port, 3)
    await stack.restart_subprocess(port, "kill")
    stack.publish("pump-1", "vibration", 8.0)  # the third: 3 of the last 4
    await stack.wait_evaluated(port, 1)
    await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                         "request for pump-1 (3-of-5: two alarm samples, restart, one more)",
                         5 + COMMIT_GRACE_SECONDS, lambda: stack.wait_drained(port))


RATE = """
[[rule]]
id = "temp-rising"
kind = "rate"
asset = "pump-1"
signal = "temperature"
window_seconds = 30
above = 5.0
clear_below = 2.0
title = "Temperature rising fast on {asset}"
"""


async def test_a_rate_window_survives_a_restart(stack: Stack) -> None:
    port = await stack.spawn_up(RATE)
    stack.publish("pump-1", "temperature", 40.0)
    await stack.wait_evaluated(port, 1)
    await stack.restart_subprocess(port, "kill")
    stack.publish("pump-1", "temperature", 47.0)  # +7 within the 30 s window
    await stack.wait_evaluated(port, 1)
    await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                         "request for pump-1 (a 7 degree rise within the rate window, across a "
                         "restart)", 5 + COMMIT_GRACE_SECONDS, lambda: stack.wait_drained(port))


async def test_an_excursion_in_the_backlog_that_outlasted_its_delay_raises_and_clears_once(
        stack: Stack) -> None:
    """While the daemon is down the broker queues an excursion: above at t, back at t + 2.5 s,
    on- and off-delays of 1 s (device time). At start the backlog arrives as a burst, with no
    tick between the two samples; judged only at ticks, the pending raise was cancelled by the
    return to normal and the request was lost (the crash trials' "delays" profile lost 5 of 188
    this way). The delay that ran out before the next sample must flip first."""
    port = await stack.spawn_up(threshold(1.0, 1.0))
    stack.publish("pump-1", "vibration", 3.0)
    await stack.wait_evaluated(port, 1)
    stack.power_cut()
    now = time.time()
    stack.publish("pump-1", "vibration", 8.0, ts=now - 3.0)  # queued by the broker
    stack.publish("pump-1", "vibration", 3.0, ts=now - 0.5)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    [request] = await expect_exactly(1, lambda: stack.requests_for("pump-1"),
                                     "request for pump-1 (an excursion of 2.5 s in the backlog)",
                                     15, lambda: stack.wait_drained(port))
    [clear] = await expect_exactly(1, lambda: stack.updates_for("pump-1"),
                                   "clear for pump-1", 15, lambda: stack.wait_drained(port))
    # stamped when the delay ran out (device time: 1 s after the excursion began)
    assert abs(parse_iso(request["body"]["raised_at"]) - (now - 2.0)) < 0.01, request["body"]
    assert parse_iso(clear["body"]["cleared_at"]) >= now - 0.5 + 1.0 - TICK
