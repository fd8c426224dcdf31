"""Status both ways through the whole daemon: real Mosquitto, the CMMS simulator over a real
socket, the real outbox.

Northbound: an outage leaves one pending status per asset (the latest), which arrives once;
under a small budget status is shed and every request still arrives. Southbound: a request
the planner moves on shows created -> in progress -> completed, and the asset's `open_work`
signal follows it.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgpack
import pytest

from buffer.budget import row_bytes
from gateway import cli
from gateway.asset_status import status_body, status_message, status_sink_name
from gateway.messages import messages_for
from gateway.model import EpisodeState, RequestDetails, Transition, TransitionKind
from tests.e2e.stack import API_KEY, Stack, assert_exactly_once
from tests.harness import wait_for

INSTANT_RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
"""


def status_upstream(stack: Stack, poll_seconds: float = 0.0) -> str:
    return f"""
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{stack.sim.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
connect_timeout_seconds = 1
total_timeout_seconds = 2
status = true
status_poll_seconds = {poll_seconds}
"""


def status_of(stack: Stack, asset: str) -> list[dict[str, object]]:
    return [s["body"] for s in stack.sim.asset_status if s["body"]["asset"] == asset]


async def test_outage_leaves_one_pending_status_and_the_latest_arrives_once(
        stack: Stack) -> None:
    stack.write_config(INSTANT_RULE, upstream=status_upstream(stack))
    d = await stack.start_daemon()
    assert d.outbox is not None and d.status_both_ways is not None
    publisher = d.status_both_ways.publisher
    assert publisher is not None
    await stack.sim.go_down()
    await stack.play("pump-1", [8.0, 3.0] * 10)  # 20 changes of state
    await wait_for(lambda: publisher.stats.enqueued >= 20, 20, "20 statuses enqueued")
    pending = await d.outbox.records(sink=status_sink_name("cmms"), asset="pump-1")
    assert len(pending) == 1, pending
    assert publisher.stats.replaced >= 19  # each newer one dropped the older pending one

    await stack.sim.come_up()
    await stack.settled(30)
    arrived = status_of(stack, "pump-1")
    assert len(arrived) == 1, arrived
    assert arrived[0]["state"] == "normal" and arrived[0]["conditions"] == []
    assert len(stack.requests_for("pump-1")) == 10
    assert_exactly_once(stack.sim)


def _row_sizes(site: str) -> tuple[int, int]:
    """Tracked bytes of one request row and one status row of these tests."""
    t = Transition(TransitionKind.RAISED, "vib-high", "pump-1", "vibration",
                   "vib-high/pump-1/1764892800000", 2, 8.0, time.time(),
                   "vibration 8 above 7.1", RequestDetails("High vibration on pump-1", 2))
    req = messages_for(t, ["cmms"], site)[0]
    ep = EpisodeState("vib-high", "pump-1", t.episode_id, t.ts, 2)
    st = status_message(status_sink_name("cmms"), status_body("pump-1", site, [ep], t.ts),
                        t.ts)
    return (row_bytes(req, msgpack.packb(dict(req.body))),
            row_bytes(st, msgpack.packb(dict(st.body))))


async def test_small_budget_sheds_status_before_requests(stack: Stack) -> None:
    request_bytes, status_bytes = _row_sizes("e2e")
    assets = [f"pump-{i}" for i in range(1, 7)]
    # Room for every request and about two statuses: the rest of the status must give way.
    budget = len(assets) * (request_bytes + 40) + 2 * status_bytes
    stack.write_config(INSTANT_RULE, upstream=status_upstream(stack),
                       extra=f"[buffer]\nmax_bytes = {budget}\n")
    d = await stack.start_daemon()
    assert d.outbox is not None and d.status_both_ways is not None
    publisher = d.status_both_ways.publisher
    assert publisher is not None
    await stack.sim.go_down()
    for asset in assets:
        await stack.play(asset, [8.0])
    await wait_for(lambda: publisher.stats.enqueued + publisher.stats.refused >= len(assets),
                   20, "a status per asset tried")
    stats = await d.outbox.stats(time.time())
    assert stats.shed.get("status", 0) + publisher.stats.refused > 0, stats
    assert stats.pending.get("cmms", 0) == len(assets)  # no request was shed

    await stack.sim.come_up()
    await stack.settled(30)
    for asset in assets:
        assert len(stack.requests_for(asset)) == 1
    assert len(stack.sim.asset_status) < len(assets)
    assert_exactly_once(stack.sim)


async def test_polling_shows_created_in_progress_completed(
        stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.write_config(INSTANT_RULE, upstream=status_upstream(stack, poll_seconds=0.2))
    d = await stack.start_daemon()
    assert d.status_both_ways is not None
    (poller,) = d.status_both_ways.pollers
    await stack.play("pump-1", [3.0, 8.0])
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "request created")
    request_id = stack.requests_for("pump-1")[0]["id"]

    def states() -> list[str]:
        recs = d.snapshot()["upstream_status"]["records"]
        return [h["state"] for r in recs if r["receipt"] == request_id for h in r["history"]]

    await wait_for(lambda: states() == ["created"], 20, "created seen")
    assert poller.snapshot()["open_work"] == {"pump-1": 1}
    stack.sim.set_status(request_id, "in_progress")
    await wait_for(lambda: states() == ["created", "in_progress"], 20, "in progress seen")
    stack.sim.set_status(request_id, "resolved")
    await wait_for(lambda: states() == ["created", "in_progress", "completed"], 20,
                   "completed seen")
    await wait_for(lambda: poller.snapshot()["open_work"] == {"pump-1": 0}, 20,
                   "open work gone")
    # The same on /status, with times, for the page.
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{d.http_port}/status") as resp:
        doc = await resp.json()
    (rec,) = [r for r in doc["upstream_status"]["records"] if r["receipt"] == request_id]
    assert [h["raw"] for h in rec["history"]] == ["open", "in_progress", "resolved"]
    assert all(h["at"].endswith("Z") for h in rec["history"])
    # ... and in `plantbridge trace`, beside the running daemon.
    code = await asyncio.to_thread(cli.main, ["trace", request_id, "--config",
                                              str(stack.tmp / "plantbridge.toml")])
    out = capsys.readouterr().out
    assert code == 0
    assert [line.split()[2] for line in out.splitlines() if line.startswith(
        f"cmms: {request_id} ")] == ["created", "in_progress", "completed"]


TEMPERATURE_MUTED_WHILE_OPEN_WORK = INSTANT_RULE + """
[[rule]]
id = "temp-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "temperature"
above = 80.0
clear_below = 70.0
severity = 3
title = "Hot bearing on {asset}"
suppress_while = { signal = "open_work", equals = 1 }
"""


async def test_open_work_mutes_a_rule_until_the_planner_completes_it(stack: Stack) -> None:
    stack.write_config(TEMPERATURE_MUTED_WHILE_OPEN_WORK,
                       upstream=status_upstream(stack, poll_seconds=0.2))
    d = await stack.start_daemon()
    assert d.status_both_ways is not None and d.pipeline is not None
    (poller,) = d.status_both_ways.pollers
    await stack.play("pump-1", [3.0, 8.0])
    await wait_for(lambda: poller.snapshot()["open_work"] == {"pump-1": 1}, 20,
                   "open work seen")
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.samples >= 3, 20,
                   "open_work sample evaluated")
    await stack.play("pump-1", [60.0, 90.0, 91.0], signal="temperature")
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.samples >= 6, 20,
                   "temperature evaluated")
    await stack.settled()
    assert [r["body"]["rule_id"] for r in stack.requests_for("pump-1")] == ["vib-high"]

    stack.sim.set_status(stack.requests_for("pump-1")[0]["id"], "resolved")
    await wait_for(lambda: poller.snapshot()["open_work"] == {"pump-1": 0}, 20,
                   "open work gone")
    await stack.play("pump-1", [92.0], signal="temperature")
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 2, 20, "temperature request")
    assert stack.requests_for("pump-1")[1]["body"]["rule_id"] == "temp-high"
