"""SIGKILL in the middle of forwarding: every request still arrives exactly once."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import free_port, wait_for

ASSETS = [f"pump-{i}" for i in range(1, 21)]


@pytest.mark.slow
async def test_sigkill_mid_forwarding_loses_and_duplicates_nothing(stack: Stack) -> None:
    port = free_port()
    stack.write_config(vibration_rule(on_delay=0.2, off_delay=0.2), http_port=port)
    # deliveries are in flight when we kill: slow enough that 16 in flight do not finish first
    stack.sim.faults.set("slow", delay_seconds=0.8)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play_many(ASSETS, [3.0, 3.0] + [8.0] * 8 + [3.0] * 8)

    kills = 0
    t_end = time.monotonic() + 60
    while len(stack.sim.status_updates) < len(ASSETS) and time.monotonic() < t_end:
        # Kill as soon as some, but not all, of the burst went out, then start again.
        before = len(stack.sim.requests) + len(stack.sim.status_updates)

        def progress(b: int = before) -> bool:
            return (len(stack.sim.requests) + len(stack.sim.status_updates) > b
                    or len(stack.sim.status_updates) == len(ASSETS))

        await wait_for(progress, 30, "progress upstream")
        if kills < 3 and len(stack.sim.status_updates) < len(ASSETS):
            stack.power_cut()
            kills += 1
            stack.spawn_daemon()
            await stack.wait_subprocess_up(port)
    assert kills >= 1, "the burst finished before any kill: make the upstream slower"
    stack.sim.faults.clear()

    async def quiet() -> bool:
        st = await stack.subprocess_status(port)
        return st is not None and not any(st["outbox"]["pending"].values())
    await wait_for(quiet, 30, "the outbox drained after the restarts")
    assert len(stack.sim.requests) == len(ASSETS), stack.daemon_log()[-2000:]
    assert len(stack.sim.status_updates) == len(ASSETS)
    for asset in ASSETS:
        [req] = stack.requests_for(asset)
        [upd] = stack.updates_for(asset)
        assert upd["request_id"] == req["id"]
    assert_exactly_once(stack.sim)
    stack.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    await asyncio.to_thread(stack.proc.wait, 20)  # type: ignore[union-attr]
    assert stack.proc.returncode == 0, stack.daemon_log()[-2000:]  # type: ignore[union-attr]
