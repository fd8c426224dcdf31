"""A record completed upstream while its condition is still active, through the whole daemon
(a real subprocess, real Mosquitto, the simulators over real sockets).

`closed_upstream = "comment"`: the note is an outbox record with a key derived from the
episode and the receipt, so a kill -9 right after the poll that saw the completion, and every
later poll, still yields exactly one note (REST), or exactly one attempt that SAP refuses
because a completed notification is read-only (NOCO), kept as a dead letter quoting SAP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from gateway.messages import dedup_key
from gateway.status_poll import reraise_episode_id
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import API_KEY, Stack, assert_exactly_once
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.slow

COMMENT_RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
closed_upstream = "comment"
"""


def rest_upstream(stack: Stack) -> str:
    return f"""
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{stack.sim.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
connect_timeout_seconds = 1
total_timeout_seconds = 2
status_poll_seconds = 0.2
"""


def sap_upstream(sim: SapPmSimulator) -> str:
    return f"""
[[upstreams]]
type = "sap_pm"
name = "sap"
sap_client = "100"
base_url = "{sim.url}"
auth = {{ kind = "basic", user = "PB_COMM", password = {{ value = "secret" }} }}
total_timeout_seconds = 5
status_poll_seconds = 0.2
[upstreams.asset_map.pump-1]
technical_object = "4711"
"""


@pytest.fixture
async def sap() -> AsyncIterator[SapPmSimulator]:
    sim = SapPmSimulator(port=0, equipment=["4711"])
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def _completed_seen(stack: Stack, port: int, receipt: str) -> None:
    async def seen() -> bool:
        st = await stack.subprocess_status(port)
        recs = [] if st is None else st["upstream_status"]["records"]
        return any(r["receipt"] == receipt and r["state"] == "completed" for r in recs)

    await wait_for(seen, 20, f"{receipt} seen completed")


async def _polls_after_restart(stack: Stack, port: int, polls: int) -> dict[str, Any]:
    got: list[dict[str, Any]] = []

    async def polled() -> bool:
        st = await stack.subprocess_status(port)
        if st is not None and st["upstream_status"]["polling"][0]["polls"] >= polls:
            got.append(st)
            return True
        return False

    await wait_for(polled, 20, f"{polls} polls since the restart")
    return got[-1]


async def _kill_right_after_the_poll(stack: Stack, port: int, receipt: str) -> None:
    await _completed_seen(stack, port, receipt)
    stack.power_cut()
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)


async def test_rest_comment_is_one_note_across_a_kill_after_the_poll(stack: Stack) -> None:
    port = free_port()
    stack.write_config(COMMENT_RULE, http_port=port, upstream=rest_upstream(stack))
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play("pump-1", [3.0, 8.0])
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "request created")
    receipt = stack.requests_for("pump-1")[0]["id"]
    stack.sim.set_status(receipt, "resolved")
    await _kill_right_after_the_poll(stack, port, receipt)

    def notes() -> list[dict[str, Any]]:
        return [u for u in stack.sim.status_updates
                if u["request_id"] == receipt and u["body"].get("update")]

    await wait_for(lambda: len(notes()) == 1, 20, "the note arrived")
    await _polls_after_restart(stack, port, 4)  # each saw it completed again
    await stack.wait_drained(port)
    (note,) = notes()
    assert note["body"]["status"] == "resolved"  # a note, not a move of the record
    assert note["body"]["note"].startswith(
        f"{receipt} was completed upstream while vib-high on pump-1 is still active since ")
    assert note["idempotency_key"].startswith("closed-comment:")
    assert stack.sim.requests[0]["status"] == "resolved"
    assert len(stack.requests_for("pump-1")) == 1  # comment: never a new request


async def test_sap_comment_is_tried_once_and_sap_refusal_is_kept(
        stack: Stack, sap: SapPmSimulator) -> None:
    port = free_port()
    stack.write_config(COMMENT_RULE, http_port=port, upstream=sap_upstream(sap))
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play("pump-1", [3.0, 8.0])
    await wait_for(lambda: len(sap.notifications) == 1, 20, "notification created")
    number = sap.notifications[0]["MaintenanceNotification"]
    sap.move(number, "completed")
    await _kill_right_after_the_poll(stack, port, number)

    def patches() -> int:
        return sum(n for (method, _, _), n in sap.received.items() if method == "PATCH")

    async def dead_letters() -> list[dict[str, Any]]:
        st = await stack.subprocess_status(port)
        return [] if st is None else [d for d in st["dead_letters"] if d["sink"] == "sap"]

    async def settled() -> bool:
        return bool(await dead_letters())

    await wait_for(settled, 20, "the note tried and settled")
    tried = patches()
    # Once, or twice when the kill hit between SAP's answer and the settle (at least once to
    # the sink); either way one record, and no later poll tries it again.
    assert tried in (1, 2), sap.received
    await _polls_after_restart(stack, port, 4)
    assert patches() == tried, sap.received
    dead = await dead_letters()
    assert len(dead) == 1 and dead[0]["kind"] == "status_update", dead
    assert "closed-upstream note on notification" in dead[0]["reason"]
    assert "completed" in dead[0]["reason"]  # SAP's own words: changes are not possible
    assert sap.notifications[0]["NotifProcessingPhase"] == "4"  # never reopened
    assert len(sap.notifications) == 1


REQUEST_AGAIN_RULE = COMMENT_RULE.replace('closed_upstream = "comment"', """\
closed_upstream = "new_request"
reraise_cooldown_seconds = 0.5""")


def _trace(stack: Stack, ident: str) -> dict[str, Any]:
    """`plantbridge trace IDENT --json`, run beside the daemon (its own process)."""
    proc = stack.spawn_cli(["trace", ident, "--json", "--config",
                            str(stack.tmp / "plantbridge.toml")], "trace.log")
    assert proc.wait(30) == 0, stack.tmp.joinpath("trace.log").read_text()
    text = stack.tmp.joinpath("trace.log").read_text()
    stack.tmp.joinpath("trace.log").unlink()
    return dict(orjson.loads(text))


async def test_request_raised_again_gets_the_clear_and_the_completed_one_none(
        stack: Stack) -> None:
    port = free_port()
    stack.write_config(REQUEST_AGAIN_RULE, http_port=port, upstream=rest_upstream(stack))
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await stack.play("pump-1", [3.0, 8.0])
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "request created")
    first = stack.requests_for("pump-1")[0]
    stack.sim.set_status(first["id"], "resolved")
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 2, 20, "requested again")
    second = stack.requests_for("pump-1")[1]
    parent = first["body"]["episode_id"]
    child = reraise_episode_id(parent)
    assert second["body"]["episode_id"] == child
    assert second["external_ref"] == dedup_key(child)
    assert second["body"]["reason"].startswith(f"{first['id']} was completed upstream")
    # The re-raise is an episode of its own: its record is followed like any other ...
    await _completed_seen_as(stack, port, second["id"], "created")
    # ... and survives a power cut (its row, and the knowledge of its parent).
    stack.power_cut()
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await _polls_after_restart(stack, port, 2)

    await stack.play("pump-1", [3.0])  # the condition clears
    await wait_for(lambda: len(stack.updates_for("pump-1")) >= 1, 20, "a clear arrived")
    await stack.wait_drained(port)
    await _polls_after_restart(stack, port, 6)
    clears = [(u["request_id"], u["body"]["status"]) for u in stack.updates_for("pump-1")]
    assert clears == [(second["id"], "cleared")]  # none to the record the planner completed
    assert stack.sim.requests[0]["status"] == "resolved"
    assert len(stack.requests_for("pump-1")) == 2  # one re-raise, across the restart too
    assert_exactly_once(stack.sim)
    # `trace` tells the re-raise's story: raised, cleared, its record created upstream.
    doc = _trace(stack, child)
    assert doc["episode"]["episode_id"] == child and doc["episode"]["cleared_at"]
    assert sorted(m["kind"] for m in doc["messages"]) == ["maintenance_request",
                                                          "status_update"]
    assert [r["state"] for r in doc["upstream_status"]][:1] == ["created"]
    parent_doc = _trace(stack, parent)
    assert parent_doc["episode"]["cleared_at"]
    assert [m["kind"] for m in parent_doc["messages"]] == ["maintenance_request"]


async def _completed_seen_as(stack: Stack, port: int, receipt: str, state: str) -> None:
    async def seen() -> bool:
        st = await stack.subprocess_status(port)
        recs = [] if st is None else st["upstream_status"]["records"]
        return any(r["receipt"] == receipt and r["state"] == state for r in recs)

    await wait_for(seen, 20, f"{receipt} seen {state}")
