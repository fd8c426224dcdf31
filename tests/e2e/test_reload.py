"""SIGHUP reload: unchanged rules keep episodes, removed rules clear, bad files change nothing."""

from __future__ import annotations

import os
import signal

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for

TEMP_RULE = """
[[rule]]
id = "temp-high"
kind = "threshold"
asset = "pump-1"
signal = "temperature"
above = 80
clear_below = 70
"""


async def _raise_pump1(stack: Stack) -> None:
    await stack.play("pump-1", [3.0] + [8.0] * 12)
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "the request upstream")


async def _sighup_and_wait(stack: Stack, before: str) -> None:
    d = stack.daemon
    assert d is not None
    os.kill(os.getpid(), signal.SIGHUP)  # the real signal, handled by the daemon's loop
    await wait_for(lambda: d.reload_state["at"] != before, 10, "the reload to finish")


async def test_unchanged_rule_keeps_its_open_episode(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    await _raise_pump1(stack)
    before = d.reload_state["at"]
    (stack.tmp / "rules.d" / "rules.toml").write_text(vibration_rule() + TEMP_RULE)
    await _sighup_and_wait(stack, before)
    assert d.reload_state["error"] == ""
    assert d.reload_state["rules"] == 2
    assert [e.rule_id for e in d.pipeline.engine.open_episodes()] == ["vib-high"]  # type: ignore[union-attr]
    # Still above the alarm after the reload: no second request; then the clear.
    await stack.play("pump-1", [8.5] * 10 + [3.0] * 12)
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    await stack.settled()
    assert len(stack.sim.requests) == 1


async def test_removed_rule_closes_its_episode_with_a_reason(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    await _raise_pump1(stack)
    before = d.reload_state["at"]
    (stack.tmp / "rules.d" / "rules.toml").write_text(TEMP_RULE)
    await _sighup_and_wait(stack, before)
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    [upd] = stack.sim.status_updates
    assert upd["request_id"] == stack.sim.requests[0]["id"]
    assert "removed" in upd["body"]["reason"]
    assert d.pipeline is not None and d.pipeline.engine.open_episodes() == []


async def test_broken_file_keeps_the_running_config(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    before = d.reload_state["at"]
    (stack.tmp / "rules.d" / "rules.toml").write_text(vibration_rule().replace(
        "clear_below = 6.0", "clear_below = 9.0"))
    await _sighup_and_wait(stack, before)
    assert "clear level 9 is above the alarm level 7.1" in d.reload_state["error"]
    assert any("last reload failed" in p for p in d.problems())
    # The old rule still works: one episode, one request, one clear.
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    assert len(stack.sim.requests) == 1


async def test_reload_restarts_a_changed_source_and_starts_a_new_upstream(stack: Stack) -> None:
    from simulators.cmms import CmmsSimulator
    from tests.e2e.stack import API_KEY

    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    second = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
    await second.start()
    try:
        before = d.reload_state["at"]
        cfg = stack.tmp / "plantbridge.toml"
        cfg.write_text(cfg.read_text().replace("reconnect_max_seconds = 0.5",
                                               "reconnect_max_seconds = 0.6") + f"""
[[upstreams]]
type = "rest"
name = "second"
base_url = "{second.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
""")
        await _sighup_and_wait(stack, before)
        assert d.reload_state["error"] == ""
        assert d.reload_state["changes"] == ["upstream second started", "source plant stopped",
                                             "source plant started"]
        await stack.wait_subscribed()
        await stack.episode("pump-1")
        await wait_for(lambda: len(second.status_updates) == 1
                       and len(stack.sim.status_updates) == 1, 15, "both upstreams served")
        assert len(second.requests) == 1 and len(stack.sim.requests) == 1
    finally:
        await second.stop()


async def test_settings_that_need_a_restart_are_reported(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    before = d.reload_state["at"]
    cfg = stack.tmp / "plantbridge.toml"
    cfg.write_text(cfg.read_text().replace('site = "e2e"', 'site = "elsewhere"'))
    await _sighup_and_wait(stack, before)
    assert d.reload_state["restart_needed"] == ["gateway"]
    assert d.cfg.gateway.site == "e2e"  # the running value is kept until a restart
    assert any("restart needed" in p for p in d.problems())
