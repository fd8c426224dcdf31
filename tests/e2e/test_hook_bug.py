"""A bug in a message hook (shelving, the plant-wide roll-up) costs no request: the daemon as a
subprocess, a real broker, the CMMS simulator counting what arrived.

The bug is planted in the real process (a `sitecustomize.py` first on the child's path): the
hook does its work, then raises on any group with a transition of pump-1. Before the pipeline
contained hook failures, that exception ended the pipeline and with it the daemon; systemd
would restart it, the broker would hand the unacknowledged sample back, the hook would fail
again: a crash loop with no request going out for any asset. Now the hook is switched off (the
status page says so) and transitions go out without it: each problem still exactly one request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for

PLANTED = '''
"""Planted bug (tests/e2e/test_hook_bug.py): {cls}.shape raises after doing its work."""
import {module} as planted

_shape = planted.{cls}.shape


def shape(self, transitions, now, sinks):
    shaped = _shape(self, transitions, now, sinks)  # its own state changed, then the bug
    if any(t.asset == "pump-1" for t in transitions):
        raise ZeroDivisionError("planted bug in {cls}.shape")
    return shaped


shape.__qualname__ = "{cls}.shape"  # as the real method's
planted.{cls}.shape = shape
'''


def plant(tmp: Path, module: str, cls: str) -> Path:
    where = tmp / "planted"
    where.mkdir()
    (where / "sitecustomize.py").write_text(PLANTED.format(module=module, cls=cls))
    return where


@pytest.mark.parametrize(("module", "cls"), [("gateway.shelving", "Shelving"),
                                             ("gateway.rollup", "RollUp")])
async def test_a_message_hook_that_raises_is_switched_off_and_costs_no_request(
        stack: Stack, module: str, cls: str) -> None:
    stack.child_path = plant(stack.tmp, module, cls)
    port = await stack.spawn_up(vibration_rule(on_delay=0.3, off_delay=0.3))
    assert stack.proc is not None

    def alive() -> None:
        assert stack.proc is not None
        if stack.proc.poll() is not None:
            raise AssertionError(f"the daemon exited:\n{stack.daemon_log()[-3000:]}")

    def requested(asset: str) -> bool:
        alive()
        return len(stack.requests_for(asset)) == 1

    await stack.episode("pump-1")  # its raise meets the bug
    await wait_for(lambda: requested("pump-1"), 20, "pump-1's request despite the failing hook")
    await wait_for(lambda: len(stack.updates_for("pump-1")) == 1, 20, "pump-1's clear")
    await stack.episode("pump-2")  # the hook is off now: its episode goes out all the same
    await wait_for(lambda: requested("pump-2"), 20, "pump-2's request")
    await wait_for(lambda: len(stack.updates_for("pump-2")) == 1, 20, "pump-2's clear")
    await stack.wait_drained(port)

    alive()
    assert len(stack.sim.requests) == 2, stack.sim.requests
    assert len(stack.sim.status_updates) == 2, stack.sim.status_updates
    assert_exactly_once(stack.sim)
    st = await stack.status_now(port)
    assert st["pipeline"]["hooks_off"] == [
        f"{cls}.shape (ZeroDivisionError: planted bug in {cls}.shape)"], st["pipeline"]
    assert any(p.startswith(f"message hook {cls}.shape (ZeroDivisionError")
               and "is off after a bug" in p for p in st["problems"]), st["problems"]
    log = stack.daemon_log()
    assert f"message hook {cls}.shape failed (a bug); it is off until the daemon restarts" in log
    assert log.count(f"ZeroDivisionError: planted bug in {cls}.shape") == 1, log[-3000:]
