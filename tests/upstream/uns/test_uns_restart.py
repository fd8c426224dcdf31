"""A broker restart in the middle of a batch: every event arrives, once per message-id."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest

from gateway.model import OutboxRecord, Outcome, TransitionKind
from tests.harness import Mosquitto, wait_for
from tests.upstream.uns.conftest import SinkFactory, SubscriberFactory, uns_record

EVENTS = 300
BATCH = 100
ASSETS = [f"pump-{i}" for i in range(6)]


async def deliver_all(make_send: SinkFactory, pending: list[OutboxRecord],
                      deadline_seconds: float, ack_timeout: float) -> dict[str, int]:
    """What the forwarder does, minus storage: send batches, keep what is to be retried."""
    sink = make_send(ack_timeout_seconds=ack_timeout)
    outcomes: dict[str, int] = defaultdict(int)
    deadline = time.monotonic() + deadline_seconds
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} records never accepted"
        batch, rest = pending[:BATCH], pending[BATCH:]
        got = await sink.send(batch)
        for d in got:
            outcomes[d.outcome.value] += 1
        assert not any(d.outcome is Outcome.REJECTED for d in got), got
        retry = [r for r, d in zip(batch, got, strict=True) if d.outcome is Outcome.RETRY]
        pending = retry + rest
        if retry:
            await asyncio.sleep(0.2)
    outcomes["connects"] = sink.link.connects
    return outcomes


@pytest.mark.parametrize("down_seconds", [0.0, 1.5], ids=["quick-restart", "outage"])
async def test_broker_restart_mid_batch_loses_no_event_and_repeats_only_by_id(
        broker: Mosquitto, make_sink: SinkFactory, subscribe: SubscriberFactory,
        down_seconds: float) -> None:
    """quick-restart: paho sends the unacknowledged events again on the resumed session.
    outage: longer than the PUBACK timeout, so the outbox retries them too (and paho still
    resends its copies): more repeats, each under its event's message-id."""
    counter = subscribe(["acme/lyon/+/+/+/events/#"], client_id="event-counter",
                        persistent=True)
    records = [uns_record(TransitionKind.RAISED, ASSETS[i % len(ASSETS)], f"ep-{i}")
               for i in range(EVENTS)]
    keys = {r.message.key for r in records}
    assert len(keys) == EVENTS
    killed = False

    def kill_mid_batch(count: int) -> None:  # in the subscriber's thread, as events arrive
        nonlocal killed
        if count >= BATCH + BATCH // 2 and not killed and broker.proc is not None:
            killed = True
            broker.proc.terminate()  # SIGTERM: Mosquitto saves sessions and queues first

    counter.hook = kill_mid_batch
    ack_timeout = 0.5 if down_seconds else 3.0
    sending = asyncio.create_task(deliver_all(make_sink, list(records), 30, ack_timeout))
    await wait_for(lambda: killed, 15, "the broker stopped mid-batch")
    await wait_for(lambda: broker.proc is None or broker.proc.poll() is not None, 10,
                   "the broker exited")
    await asyncio.sleep(down_seconds)
    await asyncio.to_thread(broker.restart)
    outcomes = await sending
    assert outcomes["connects"] >= 2, "the sink never saw the restart"
    if down_seconds:
        assert outcomes["retry"] > 0, "the outage never reached the outbox's retry"

    def ids() -> set[str]:
        return {s.props.get("message-id", "") for s in counter.seen}

    await wait_for(lambda: ids() >= keys, 15, "every event at the persistent subscriber")
    by_id: dict[str, list[bytes]] = defaultdict(list)
    for seen in counter.seen:
        by_id[seen.props["message-id"]].append(seen.payload)
    assert set(by_id) == keys  # none missing, nothing foreign
    for key, copies in by_id.items():  # a repeat is the same message under the same id
        assert len(set(copies)) == 1, f"{key}: different payloads under one message-id"
    assert len(by_id) == EVENTS  # what a consumer that drops repeated ids counts
    repeats = len(counter.seen) - EVENTS
    print(f"uns restart: {EVENTS} events, {repeats} repeated copies, outcomes {dict(outcomes)}")
