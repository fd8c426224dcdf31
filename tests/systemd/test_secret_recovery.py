"""The README's dead-letter recovery for bad credentials, step by step as written there:
fix the credentials, `systemctl reload` (SIGHUP), `plantbridge dead-letters --requeue all`.

Real parts: Mosquitto, the CMMS simulator over a socket (401 for a wrong token), the daemon's
real SIGHUP handler, and the CLI as a separate process beside the running daemon.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from tests.e2e.stack import API_KEY, Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for


async def _dead_letters(stack: Stack, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "dead-letters", "--config",
        str(stack.tmp / "plantbridge.toml"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()


@pytest.mark.parametrize("source", ["file", "credential"])
async def test_fix_the_token_reload_and_requeue_delivers_exactly_once(
        stack: Stack, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = stack.tmp / "secrets"
    secrets.mkdir()
    token = secrets / "cmms-token"
    token.write_text("not-the-key\n")
    if source == "credential":
        # What systemd does for LoadCredential=cmms-token:...: a directory in the environment.
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
        ref = '{ credential = "cmms-token" }'
    else:
        ref = f'{{ file = "{token}" }}'
    inline = f'{{ value = "{API_KEY}" }}'
    assert inline in stack.rest_upstream()
    stack.write_config(vibration_rule(), upstream=stack.rest_upstream().replace(inline, ref))
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox

    await stack.play("pump-1", [3.0] + [8.0] * 10)

    async def dead() -> int:
        return (await outbox.stats(time.time())).dead.get("cmms", 0)

    async def one_dead() -> bool:
        return await dead() == 1

    await wait_for(one_dead, 15, "the request dead-lettered for the wrong token")
    listing = await _dead_letters(stack)
    assert "401" in listing and "pump-1" in listing, listing
    assert stack.sim.requests == []

    # 1. Fix the credentials.  2. systemctl reload (SIGHUP to the daemon).
    token.write_text(f"{API_KEY}\n")
    before = d.reload_state["at"]
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for(lambda: d.reload_state["at"] != before, 10, "the reload to finish")
    assert d.reload_state["error"] == ""
    assert d.reload_state["changes"] == ["upstream cmms stopped (its secret changed)",
                                         "upstream cmms started"]
    # 3. Requeue.
    said = await _dead_letters(stack, "--requeue", "all")
    assert "requeued 1" in said, said
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "the requeued request delivered")
    await stack.settled()
    assert await dead() == 0
    assert len(stack.sim.requests) == 1 and stack.sim.requests[0]["body"]["asset"] == "pump-1"
    assert_exactly_once(stack.sim)

