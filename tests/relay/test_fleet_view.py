"""The fleet view: what each gateway's heartbeat says (open episodes, outbox backlog) and how
old it is. The rules of the view on their own (clock given), then the real daemon's heartbeat
through a real nats-server to a relay process."""

from __future__ import annotations

from pathlib import Path

import nats
import orjson

from gateway.relay.fleet import FleetView, fleet_text
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import Mosquitto, free_port, wait_for
from tests.relay.conftest import SinkMaker
from tests.relay.fleetstack import Fleet
from tests.relay.killtrials import nats_upstream
from tests.relay.test_relay import relay_cli

SUBJECT = "plantbridge.site-a.gateway.gw-1.heartbeat"


def beat(**over: object) -> bytes:
    doc = {"gateway_id": "gw-1", "site": "site-a", "area": "line-1", "interval_seconds": 10,
           "published": 7, "open_episodes": 2, "backlog": {"backbone": 0, "cmms": 5},
           "dead": {"cmms": 1}, "oldest_pending_age_seconds": 42.0,
           "open": [{"episode_id": "ep-1", "asset": "pump-1"}]} | over
    return orjson.dumps(doc)


def test_a_heartbeat_brings_open_episodes_and_backlog_and_goes_stale_after_three_intervals(
        ) -> None:
    view = FleetView()
    assert view.heartbeat(SUBJECT, beat(), now=1000.0)
    [row] = view.rows(now=1029.0)
    assert (row["open_episodes"], row["backlog"], row["backlog_total"]) == \
        (2, {"backbone": 0, "cmms": 5}, 5)
    assert row["open"] == [{"episode_id": "ep-1", "asset": "pump-1"}]
    assert not row["stale"] and row["stale_after_seconds"] == 30.0
    text = fleet_text(view.rows(now=1029.0))
    assert "gw-1" in text and " ok" in text and "42 s" in text
    [row] = view.rows(now=1031.0)  # three of its 10 s intervals without a heartbeat
    assert row["stale"]
    assert "STALE (no heartbeat for 31 s; figures as of then)" in fleet_text([row])


def test_a_heartbeat_without_the_new_figures_or_with_bad_ones_still_counts() -> None:
    view = FleetView()
    assert view.heartbeat(SUBJECT, beat(open_episodes="many", backlog=[1], open=None,
                                        interval_seconds=None), now=0.0)
    [row] = view.rows(now=60.0)
    assert row["open_episodes"] is None and row["backlog"] == {} and row["open"] == []
    assert not row["stale"]  # no interval said: 3 x 30 s
    assert not view.heartbeat(SUBJECT, b"not json")
    assert " ? " in fleet_text(view.rows(now=60.0))


async def test_the_daemons_heartbeat_shows_its_open_episode_and_backlog_at_the_relay(
        tmp_path: Path, mosquitto: Mosquitto, fleet: Fleet) -> None:
    stack = Stack(tmp_path, mosquitto, fleet.sim)
    # a second, direct upstream that is down: its records wait in the outbox (the backlog)
    down = f"""
[[upstreams]]
type = "rest"
name = "cmms-direct"
base_url = "http://127.0.0.1:{free_port()}"
auth = {{ kind = "bearer", token = {{ value = "x" }} }}
connect_timeout_seconds = 0.5
total_timeout_seconds = 1
"""
    stack.write_config(vibration_rule(0.2, 0.2), upstream=nats_upstream(fleet.servers) + down)
    relay = fleet.relay("r1")
    relay.start()
    try:
        await stack.start_daemon()
        await relay.wait_ready()
        await stack.play("pump-1", [3.0] * 2 + [8.0] * 10)  # raised, not cleared

        async def reported() -> bool:
            st = await relay.status()
            rows = [] if st is None else [g for g in st["fleet"] if g["gateway_id"] == "e2e"]
            return bool(rows) and rows[0]["open_episodes"] == 1 \
                and rows[0]["backlog"].get("cmms-direct", 0) >= 1 and not rows[0]["stale"]

        await wait_for(reported, 20, "the open episode and the backlog in the fleet view",
                       interval=0.2)
        st = await relay.status()
        assert st is not None
        [row] = [g for g in st["fleet"] if g["gateway_id"] == "e2e"]
        assert row["open"][0]["asset"] == "pump-1" and row["backlog"]["backbone"] == 0
        text = await relay_cli(relay, "--fleet")
        assert "e2e" in text and "ok" in text, text
    finally:
        stack.close()
        await stack.stop_daemon()

    async def stale() -> bool:  # no heartbeat for 3 x 0.5 s
        st = await relay.status()
        return st is not None and all(g["stale"] for g in st["fleet"])

    await wait_for(stale, 20, "the stopped gateway called stale", interval=0.2)
    assert "STALE" in await relay_cli(relay, "--fleet")


async def test_a_failing_facts_hook_never_stops_the_heartbeat(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    """The heartbeat is how the fleet sees a box is alive: a bug in the daemon's hook costs the
    figures (said once in the log), not the heartbeat."""
    nc = await nats.connect(fleet.servers[0], allow_reconnect=False)
    try:
        sub = await nc.subscribe("plantbridge.site-a.gateway.*.heartbeat")
        sink = gateway_sink(heartbeat_seconds=0.1)
        calls = {"n": 0}

        def facts() -> dict[str, object]:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise RuntimeError("a bug in the hook")
            return {"open_episodes": 3, "backlog": {"backbone": 0}}

        sink.heartbeat_facts = facts
        docs = [orjson.loads((await sub.next_msg(timeout=10)).data) for _ in range(4)]
        assert "open_episodes" not in docs[0] and docs[0]["gateway_id"] == "site-a"
        assert docs[-1]["open_episodes"] == 3 and docs[-1]["interval_seconds"] == 0.1
    finally:
        await nc.close()
