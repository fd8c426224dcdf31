"""An admin replays what an upstream refused, while the daemon runs."""

from __future__ import annotations

import asyncio
import sys
import time

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for


async def _cli(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "dead-letters", "--config",
        str(stack.tmp / "plantbridge.toml"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_list_and_requeue_a_dead_letter(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox
    stack.sim.faults.set("error_5xx", count=1, status=400)  # refused for good, once
    await stack.play("pump-1", [3.0] + [8.0] * 10)

    async def one_dead() -> bool:
        return (await outbox.stats(time.time())).dead.get("cmms", 0) == 1

    await wait_for(one_dead, 15, "the request dead-lettered")
    code, listing = await _cli(stack)
    assert code == 0, listing
    assert "pump-1" in listing and "400" in listing and "1 dead letter(s)" in listing
    assert stack.sim.requests == []

    code, said = await _cli(stack, "--requeue", "all")
    assert code == 0 and "requeued 1" in said, said
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "the requeued request delivered")
    code, listing = await _cli(stack)
    assert "no dead letters" in listing
