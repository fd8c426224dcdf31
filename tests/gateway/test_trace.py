"""`plantbridge trace ID`: one event's life from the outbox, beside a running daemon.

The CLI runs as a real process against the outbox of a real in-process daemon; the retention
of the attempt history is checked on the store itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from buffer.attempts import Attempt, MessageFacts, worth_keeping
from buffer.store import OutboxStore
from gateway.logs import record_fields
from gateway.messages import dedup_key, messages_for
from gateway.model import Delivery, Outcome, RequestDetails, Transition, TransitionKind
from gateway.story import message_facts
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for


async def _trace(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "trace", *args, "--config",
        str(stack.tmp / "plantbridge.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_trace_tells_a_retried_request_and_its_clear(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    stack.sim.faults.set("error_5xx", count=2, status=503)
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.updates_for("pump-1")) == 1, 30, "raise and clear upstream")
    await stack.settled()
    receipt = stack.requests_for("pump-1")[0]["id"]

    code, text = await _trace(stack, receipt)
    assert code == 0, text
    assert "rule vib-high on asset pump-1, severity 2" in text
    assert "title: High vibration on pump-1" in text
    assert "vibration = 8:" in text and "cleared 20" in text, text
    # both injected failures, with their status (a probe, if any, may have met one instead)
    assert 1 <= len(re.findall(r"  retry +HTTP 503 ", text)) <= 2, text
    assert "maintenance_request record 1 request:" in text and f"upstream id {receipt}" in text
    assert "status_update record 2 cleared:" in text
    assert len(re.findall(r"#\d+ +\S+ +accepted ", text)) == 2, text  # two attempts accepted
    # then the workflow as a planner reads it, one line per step
    flow = text[text.index("workflow at cmms:"):].splitlines()[1:]
    assert [line.split()[:2] for line in flow] == [
        ["request", "accepted"], ["parts", "not"], ["upstream", "waiting"], ["clear", "accepted"]]
    assert f"upstream id {receipt}" in flow[0] and "no spare parts listed" in flow[1]

    code, raw = await _trace(stack, receipt, "--json")
    assert code == 0, raw
    doc: dict[str, Any] = orjson.loads(raw)
    ep = doc["episode"]
    assert ep["rule_id"] == "vib-high" and ep["asset"] == "pump-1" and ep["value"] == 8.0
    assert ep["raised_at"] and ep["cleared_at"] and "above" in ep["reason"]
    request, clear = doc["messages"]
    *failed, last = request["attempts"]
    assert failed and [(a["outcome"], a["http_status"]) for a in failed] == [("retry", 503)] * len(
        failed)
    assert (last["outcome"], last["http_status"]) == ("accepted", None)
    assert [a["number"] for a in request["attempts"]] == list(range(1, len(failed) + 2))
    assert all(a["latency_ms"] >= 0 and a["finished_at"] for a in request["attempts"])
    assert request["attempts"][-1]["receipt"] == receipt and request["state"] == "delivered"
    assert clear["receipt"] == receipt and clear["kind"] == "status_update"
    assert clear["facts"]["status"] == "cleared"
    (flow_doc,) = doc["workflow"]
    assert flow_doc["sink"] == "cmms"
    assert [(st["name"], st["state"], st["receipt"]) for st in flow_doc["steps"]] == [
        ("request", "accepted", receipt), ("parts", "not needed", None),
        ("upstream", "waiting", None), ("clear", "accepted", receipt)]
    assert flow_doc["steps"][0]["attempts"] == len(failed) + 1

    # every name of the episode finds the same story, while the daemon keeps running
    episode_id = ep["episode_id"]
    for ident in (episode_id, request["key"], dedup_key(episode_id)):
        code, other = await _trace(stack, ident, "--json")
        assert code == 0 and orjson.loads(other) == doc, ident
    code, said = await _trace(stack, "WR-404")
    assert code == 1 and "WR-404: no episode" in said
    assert stack.task is not None and not stack.task.done()
    assert d.forwarders[0].stats.accepted == 2


async def test_trace_of_a_dead_letter_shows_why(stack: Stack,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="plantbridge")
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox
    stack.sim.faults.set("error_5xx", count=1, status=400)
    await stack.play("pump-2", [3.0] + [8.0] * 10)

    async def dead() -> bool:
        return (await outbox.stats(time.time())).dead.get("cmms", 0) == 1

    await wait_for(dead, 20, "the request dead-lettered")
    episode = (await outbox.open_episodes())[0].episode_id
    code, text = await _trace(stack, episode)
    assert code == 0, text
    assert ": dead" in text and "dead letter: HTTP 400" in text, text
    assert "still open (not cleared)" in text
    # the log said it once, as an error, with the fields that find it again
    [said] = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert said.levelno == logging.ERROR and "HTTP 400" in said.getMessage()
    fields = dict(record_fields(said))
    assert fields["episode_id"] == episode and fields["rule_id"] == "vib-high"
    assert fields["key"].startswith("request:PB") and fields["sink"] == "cmms"


def test_a_long_retry_run_keeps_its_start_every_tenth_and_its_end() -> None:
    kept = [n for n in range(1, 101) if worth_keeping(n, final=False)]
    assert kept == [*range(1, 21), 30, 40, 50, 60, 70, 80, 90, 100]
    assert worth_keeping(57, final=True)


def _transition(kind: TransitionKind, ts: float) -> Transition:
    return Transition(kind, "r1", "pump-9", "vibration", "r1/pump-9/1", 2, 8.0, ts,
                      "vibration 8 above 7", RequestDetails("High vibration"))


async def test_attempt_history_is_pruned_with_its_delivered_record(tmp_path: Path) -> None:
    t0 = 1_000_000.0
    async with await OutboxStore.open(tmp_path / "o.db", retention_seconds=100) as store:
        t = _transition(TransitionKind.RAISED, t0)
        [msg] = messages_for(t, ["cmms"], "site")
        await store.settle([], t0)  # the first prune runs now; the next is due 300 s later
        await store.commit([t], [msg])
        [rec] = await store.lease("cmms", 10, t0)
        await store.settle([Delivery(rec.id, Outcome.ACCEPTED, receipt="WR-1")], t0 + 1)
        await store.record_attempts(
            [Attempt(rec.id, msg.key, "cmms", t.episode_id, t0, t0 + 1, "accepted",
                     latency_ms=3.0, receipt="WR-1")],
            [MessageFacts(rec.id, t.episode_id, t0 + 1, message_facts(msg.body))])
        found = await store.trace("WR-1")
        assert found is not None and len(found.attempts) == 1
        assert found.facts[rec.id]["reason"] == "vibration 8 above 7"
        await store.settle([], t0 + 50)  # within the retention and the prune interval
        assert (await store.trace("WR-1")) is not None
        await store.settle([], t0 + 400)  # past both: record, receipt and history go together
        assert await store.trace(msg.key) is None
        assert await store.trace(t.episode_id) is not None  # the open episode stays
        left = await store.trace(t.episode_id)
        assert left is not None and left.attempts == [] and left.facts == {}
