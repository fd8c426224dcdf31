"""Issue 10, "never zero, never two": one stuck record, a second daemon, reloads in a burst.

Black box: the daemon as a subprocess, a real Mosquitto, the CMMS simulator counting what
arrives (and refusing one record for good where a test needs it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

from simulators.cmms import api
from tests.e2e.never_twice import FENCE_RULE, expect_exactly, threshold_rule
from tests.e2e.stack import Stack
from tests.harness import free_port, wait_for

TWO_RULES = (threshold_rule("vib-high", "vibration")
             + threshold_rule("temp-high", "temperature", above=80, clear_below=70))
DELAYED = threshold_rule("vib-high", "vibration",
                         extra="on_delay_seconds = 0.3\noff_delay_seconds = 0.3")


async def test_one_refused_create_does_not_hold_back_another_rules_raise(stack: Stack) -> None:
    stack.sim.faults.set("error_5xx", status=500, match_body="vib-high on pump-1")  # forever
    await stack.spawn_up(TWO_RULES)
    stack.publish("pump-1", "vibration", 8.0)
    await wait_for(lambda: stack.sim.count("POST", api.REQUESTS_PATH, 500) >= 2, 15,
                   "the vibration request to be refused and retried")
    t0 = time.monotonic()
    stack.publish("pump-1", "temperature", 90.0)  # another rule, the same asset
    await expect_exactly(1, lambda: [r for r in stack.requests_for("pump-1")
                                     if r["body"]["rule_id"] == "temp-high"],
                         "request for pump-1's high temperature while its vibration request "
                         "is refused with 500", 5, lambda: asyncio.sleep(0))
    assert time.monotonic() - t0 < 5.0
    assert stack.proc is not None and stack.proc.poll() is None
    assert [r["body"]["rule_id"] for r in stack.sim.requests] == ["temp-high"]
    await stack.terminate()


async def test_a_second_run_on_the_same_state_dir_is_refused(stack: Stack) -> None:
    port = await stack.spawn_up(DELAYED + FENCE_RULE)
    assert stack.proc is not None
    first_pid = stack.proc.pid
    # The same config but for the status port, so only the shared state dir can refuse it
    # (a foreground run beside the unit, with a copy of its config).
    cfg = stack.tmp / "plantbridge.toml"
    second_cfg = stack.tmp / "plantbridge-second.toml"
    second_cfg.write_text(cfg.read_text().replace(f"port = {port}\n", f"port = {free_port()}\n"))
    cuts_before = stack.daemon_log().count("unreachable")
    second = stack.spawn_cli(["run", "--config", str(second_cfg)], "second.log")
    try:
        t0 = time.monotonic()
        exited = True
        try:
            await wait_for(lambda: second.poll() is not None, 10, "the second run to exit")
        except AssertionError:
            exited = False
        output = (stack.tmp / "second.log").read_text(errors="replace")
        assert exited, ("a second `plantbridge run` on the same state dir was still running "
                        f"{time.monotonic() - t0:.0f} s later (expected it to refuse at once):\n"
                        f"{output[-600:]}")
        assert second.returncode != 0, f"the second run exited 0:\n{output[-1500:]}"
        assert str(first_pid) in output, (
            f"the second run's refusal does not name the PID {first_pid} holding the state "
            f"dir:\n{output[-1500:]}")
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            await asyncio.to_thread(second.wait, 10)
    assert stack.proc.poll() is None, f"the first daemon died:\n{stack.daemon_log()[-2000:]}"
    cuts = stack.daemon_log().count("unreachable") - cuts_before
    assert cuts == 0, (f"the first daemon's MQTT source was cut {cuts} times while the second "
                       "run was up (the same client id taking the session over)")
    await stack.wait_subprocess_up(port)
    await _one_episode_once(stack, port)


async def test_two_sighups_10_ms_apart_leave_one_forwarder_per_sink(stack: Stack) -> None:
    port = await stack.spawn_up(DELAYED + FENCE_RULE)
    assert stack.proc is not None
    before = (await stack.status_now(port))["reload"].get("at")
    cfg = stack.tmp / "plantbridge.toml"
    # A changed upstream setting: each reload stops the sink's forwarder and starts a new one.
    cfg.write_text(cfg.read_text().replace("total_timeout_seconds = 2",
                                           "total_timeout_seconds = 3"))
    stack.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.01)  # the point of the test: the second signal 10 ms after the first
    stack.proc.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:
        st = await stack.subprocess_status(port)
        return st is not None and st["reload"].get("at") != before

    await wait_for(reloaded, 15, "a reload to finish")
    # Bounded quiet period: the second reload, queued behind the first or (wrongly) beside it,
    # ends within this on a loaded machine; it has nothing to read that the first did not.
    await asyncio.sleep(2.0)
    st = await stack.status_now(port)
    assert st["reload"]["error"] == "", st["reload"]
    sinks = Counter(u["name"] for u in st["upstreams"])
    assert sinks == {"cmms": 1}, (
        f"expected one forwarder per sink after two SIGHUPs 10 ms apart, got {dict(sinks)}")
    assert "upstream cmms started" in stack.daemon_log(), "the upstream change was not applied"
    assert "Traceback" not in stack.daemon_log(), (
        f"a reload failed beside the other:\n{stack.daemon_log()[-2000:]}")
    await _one_episode_once(stack, port)


async def _one_episode_once(stack: Stack, port: int) -> None:
    await stack.episode("pump-1")
    await stack.fence(port)
    await expect_exactly(1, lambda: stack.requests_for("pump-1"), "request for pump-1", 0,
                         lambda: stack.wait_drained(port))
    await expect_exactly(1, lambda: stack.updates_for("pump-1"), "clear for pump-1", 10,
                         lambda: stack.wait_drained(port))
