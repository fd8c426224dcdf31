"""A plant-wide incident through the whole stack: real Mosquitto, the daemon, the CMMS simulator.

120 assets on 3 lines trip within 5 s while the upstream is down, then it comes back: one
incident request per line, the individual requests of `always_individual` rules and of critical
raises, and every episode either requested on its own or listed in its line's incident, exactly
once; clears likewise; each incident clears once the flood is over; a restart mid-flood keeps
one incident. And shelving, set with the CLI beside the daemon, survives a restart and expires
on time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from gateway.model import Transition, TransitionKind
from gateway.shelve_cli import rollup_note
from simulators.storm import StormPublisher, Trip, asset_name, calm_plan, storm_plan
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for

LINES = ["l1", "l2", "l3"]
# In the suite: 120 assets within 5 s. The full storm (300 within a minute):
# STORM_ASSETS_PER_LINE=100 STORM_SPREAD_SECONDS=60 pytest tests/e2e/test_storm.py -k storm
PER_LINE = int(os.environ.get("STORM_ASSETS_PER_LINE", "40"))
SPREAD_SECONDS = float(os.environ.get("STORM_SPREAD_SECONDS", "5"))

RULES = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "l*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 3

[[rule]]
id = "smoke"
kind = "threshold"
asset_pattern = "l*"
signal = "smoke"
above = 0.5
severity = 3
always_individual = true

[[rule]]
id = "pressure-critical"
kind = "threshold"
asset_pattern = "l*"
signal = "pressure"
above = 10.0
severity = 1
"""

ALARMS = """
[alarms]
flood_raises = 10
flood_window_seconds = 15
incident_update_seconds = 0.5
""" + "".join(f"""
[alarms.lines.{line}]
assets = ["{line}-*"]
incident_asset = "LINE-{line.upper()}"
""" for line in LINES)


def plan() -> list[Trip]:
    trips = storm_plan(LINES, PER_LINE, SPREAD_SECONDS)
    for n, line in enumerate(LINES):
        trips += [Trip(1.0 + n + i / 10, asset_name(line, i), "smoke", 1.0) for i in range(3)]
        trips += [Trip(2.0 + n + i / 10, asset_name(line, 10 + i), "pressure", 20.0)
                  for i in range(2)]
    return sorted(trips, key=lambda t: (t.at, t.asset))


def incident_parts(sim: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    incidents = [r for r in sim.requests if r["body"].get("incident")]
    ids = {r["id"] for r in incidents}
    return incidents, [u for u in sim.status_updates if u["request_id"] in ids]


def tallies(sim: Any) -> tuple[Counter[str], Counter[str]]:
    """Per episode: requests of its own, and mentions as rolled up in an incident's texts."""
    incidents, updates = incident_parts(sim)
    own = Counter(r["body"]["episode_id"] for r in sim.requests if not r["body"].get("incident"))
    listed = Counter(e for doc in [*(r["body"] for r in incidents), *(u["body"] for u in updates)]
                     for e in doc.get("rolled_up", ()))
    return own, listed


async def all_arrived(stack: Stack, episodes: Iterable[str]) -> None:
    """Until each episode arrived upstream one way or the other, then until nothing is left to
    send. (An incident lists later members within `incident_update_seconds`: an empty outbox
    alone does not mean that all were listed.)"""
    wanted = list(episodes)

    def arrived() -> bool:
        own, listed = tallies(stack.sim)
        return all(own[e] + listed[e] >= 1 for e in wanted)

    await wait_for(arrived, 60, "every episode requested or listed upstream")
    await stack.settled(60)


def not_once(episodes: Iterable[str], own: Counter[str], listed: Counter[str]
             ) -> dict[str, tuple[int, int]]:
    return {e: (own[e], listed[e]) for e in episodes if own[e] + listed[e] != 1}


async def test_storm_rolls_up_per_line_and_loses_nothing(stack: Stack) -> None:
    stack.write_config(RULES, extra=ALARMS)
    daemon = await stack.start_daemon()
    assert daemon.pipeline is not None
    raised: dict[str, Transition] = {}
    cleared: set[str] = set()

    def seen(t: Transition) -> None:
        if t.kind is TransitionKind.RAISED:
            raised[t.episode_id] = t
        else:
            cleared.add(t.episode_id)

    daemon.pipeline.listeners.append(seen)
    trips = plan()
    await stack.sim.go_down()
    pub = StormPublisher("127.0.0.1", stack.broker.port)
    try:
        await pub.play(trips)
        await wait_for(lambda: len(raised) == len(trips), 30, f"{len(trips)} raises")
        await stack.sim.come_up()
        back = time.monotonic()
        await all_arrived(stack, raised)
        print(f"storm: {len(trips)} raises -> {len(stack.sim.requests)} requests upstream, "
              f"delivered {time.monotonic() - back:.1f} s after the upstream came back")

        incidents, updates = incident_parts(stack.sim)
        assert sorted(r["body"]["asset"] for r in incidents) == [f"LINE-{x.upper()}"
                                                                  for x in LINES]
        assert all(r["body"]["title"].startswith("Plant incident on l") for r in incidents)
        own, listed = tallies(stack.sim)
        assert not_once(raised, own, listed) == {}
        for episode_id, t in raised.items():
            if t.rule_id != "vib-high":  # always_individual and critical keep their request
                assert own[episode_id] == 1, episode_id
        assert len(listed) >= 3 * (PER_LINE - 10 - 2)  # the storm really was rolled up
        # `trace` of a rolled-up episode names its incident (read beside the daemon).
        some = sorted(listed)[0]
        note = await rollup_note(daemon.cfg, some)
        assert note is not None and f"incident incident/{raised[some].asset[:2]}/" in note
        assert await rollup_note(daemon.cfg, next(iter(own))) is None
        refs = [r["external_ref"] for r in stack.sim.requests]
        assert len(refs) == len(set(refs))
        keys = [u["idempotency_key"] for u in stack.sim.status_updates]
        assert len(keys) == len(set(keys))

        # Calm: every clear once, folded into its incident or on its own request; the
        # incidents clear once the window no longer holds a flood.
        await pub.play(calm_plan(trips, value=0.0))
        await wait_for(lambda: len(cleared) == len(raised), 30, "every episode cleared")

        def incidents_cleared() -> bool:
            _, ups = incident_parts(stack.sim)
            return bool(sum(u["body"]["status"] == "cleared" for u in ups) == len(LINES))

        await wait_for(incidents_cleared, 40, "each incident cleared")
        await stack.settled(30)
        incidents, updates = incident_parts(stack.sim)
        folded = Counter(e for u in updates for e in u["body"].get("rolled_up_cleared", ()))
        assert set(folded) == set(listed) and max(folded.values()) == 1
        per_request = Counter(u["request_id"] for u in stack.sim.status_updates
                              if u not in updates)
        assert len(per_request) == sum(own.values()) and set(per_request.values()) == {1}
    finally:
        pub.close()


async def test_shelving_survives_a_restart_and_expires_on_time(stack: Stack) -> None:
    config = stack.write_config(vibration_rule(0.0, 0.0))
    daemon = await stack.start_daemon()

    async def cli_shelve(duration: str) -> None:
        proc = stack.spawn_cli(["shelve", "vib-high", "--for", duration, "--reason",
                                "bearing on order", "--config", str(config)], "shelve.log")
        assert await asyncio.to_thread(proc.wait, 30) == 0, \
            (stack.tmp / "shelve.log").read_text()

    def shelves(d: Any) -> list[dict[str, Any]]:
        return list(d.alarms.snapshot()["shelving"]["shelves"])

    await cli_shelve("10m")  # long enough for any restart on a loaded machine
    await wait_for(lambda: bool(shelves(daemon)), 10, "the daemon to read the shelf")
    stack.publish("pump-1", "vibration", 9.0)  # held: the condition holds from now on
    await wait_for(lambda: daemon.alarms.shelving.suppressed == 1, 10, "the raise held back")
    stack.publish("pump-2", "vibration", 3.0)

    await stack.stop_daemon()
    daemon = await stack.start_daemon()
    snap = daemon.alarms.snapshot()["shelving"]
    assert [h["asset"] for h in snap["hidden_episodes"]] == ["pump-1"]
    assert shelves(daemon), "the shelf is read before the first sample"
    await asyncio.sleep(1.5)  # a few ticks: nothing may be released while the shelf holds
    assert not stack.requests_for("pump-1")

    # Shelve again for a short while (replaces the expiry). No new sample comes: at expiry the
    # rule's own state (still above) raises.
    await cli_shelve("4s")
    assert daemon.outbox is not None
    shelf_until = (await daemon.outbox.shelves())[0].until  # exactly what the CLI wrote
    await wait_for(lambda: bool(stack.requests_for("pump-1")), 20, "the raise at expiry")
    arrived = time.time()
    assert shelf_until <= arrived <= shelf_until + 5.0
    assert "held while shelved" in stack.requests_for("pump-1")[0]["body"]["reason"]
    assert not shelves(daemon)


async def test_restart_mid_flood_keeps_one_incident(stack: Stack) -> None:
    stack.write_config(RULES, extra=ALARMS)
    raised: dict[str, Transition] = {}

    def seen(t: Transition) -> None:
        if t.kind is TransitionKind.RAISED:
            raised[t.episode_id] = t

    daemon = await stack.start_daemon()
    assert daemon.pipeline is not None
    daemon.pipeline.listeners.append(seen)
    await stack.sim.go_down()
    first = storm_plan(["l1"], 15, 1.0)
    pub = StormPublisher("127.0.0.1", stack.broker.port)
    try:
        await pub.play(first)
        await wait_for(lambda: len(raised) == len(first), 20, "the first half raised")
        assert daemon.alarms.snapshot()["rollup"]["incidents"], "no flood before the restart"
        await stack.stop_daemon()
        daemon = await stack.start_daemon()
        assert daemon.pipeline is not None
        daemon.pipeline.listeners.append(seen)
        assert [i["line"] for i in daemon.alarms.snapshot()["rollup"]["incidents"]] == ["l1"]
        second = [Trip(t.at, t.asset.replace("-a0", "-b0"), t.signal, t.value) for t in first]
        await pub.play(second)
        await wait_for(lambda: len(raised) == 2 * len(first), 20, "the second half raised")
        await stack.sim.come_up()
        await all_arrived(stack, raised)
    finally:
        pub.close()
    incidents, _ = incident_parts(stack.sim)
    assert len(incidents) == 1
    own, listed = tallies(stack.sim)
    assert not_once(raised, own, listed) == {}
    assert len(own) == 10  # only the raises before the limit went on their own
