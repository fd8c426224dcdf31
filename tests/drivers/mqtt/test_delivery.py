"""QoS 1 delivery promises: ack after processing, redelivery, reconnect, backpressure.

Deliveries are counted, not compared as sets: a message delivered twice must show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterable

import pytest

from drivers.mqtt.driver import MqttSource
from gateway.dedup import SampleGate
from gateway.model import Sample, SourceState
from simulators.mqtt_plant import MqttPlantPublisher
from simulators.scenario import SCENARIOS
from tests.drivers.mqtt.conftest import running_source, source_config
from tests.harness import Mosquitto, wait_for

PROTOCOLS = ["3.1.1", "5"]
T0 = 1_780_000_000.0


def assert_each_once(got: Iterable[float | None], expected: Iterable[float]) -> None:
    """Every expected value exactly once (a multiset comparison), naming what is off."""
    have, want = Counter(got), Counter[float | None](expected)
    twice = {v: n for v, n in have.items() if n > 1}
    missing, extra = want - have, have - want
    assert not (twice or missing or extra), (
        f"delivered more than once: {twice}; missing: {sorted(missing, key=str)}; "
        f"unexpected: {sorted(extra, key=str)}")


def test_the_count_sees_a_duplicate() -> None:
    assert_each_once([2.0, 1.0], [1.0, 2.0])
    with pytest.raises(AssertionError, match=r"more than once: \{2.0: 2\}"):
        assert_each_once([1.0, 2.0, 2.0], [1.0, 2.0])  # a set comparison would pass this
    with pytest.raises(AssertionError, match=r"missing: \[2.0\]"):
        assert_each_once([1.0], [1.0, 2.0])


async def test_a_real_duplicate_delivery_fails_the_count(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    async with running_source(source_config(mosquitto.port)) as (_, got):
        for payload in (b"1", b"2", b"2"):  # the device sent its second reading twice
            await publisher.publish_raw("plant/pump-1/vibration", payload)
        await wait_for(lambda: len(got.samples) == 3, 10, "three deliveries")
        with pytest.raises(AssertionError, match="more than once"):
            assert_each_once([s.value for s in got.samples], [1.0, 2.0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unacked_messages_are_redelivered_after_restart(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher, protocol: str) -> None:
    cfg = source_config(mosquitto.port, protocol=protocol, client_id=f"redeliver-{protocol}")
    async with running_source(cfg, auto_ack=False) as (_, got):
        for i in range(1, 7):
            await publisher.publish_raw("plant/pump-1/vibration", f'{{"value": {i}}}')
        await publisher.publish_raw("plant/pump-1/vibration", b"garbage")  # acked at once
        await wait_for(lambda: len(got.samples) == 6, 10, "six samples")
        acks = {s.value: b.ack for b in got.batches for s in b.samples}
        assert all(a is not None for a in acks.values())
        acks[1.0]()  # type: ignore[misc]  # on the loop thread, as the pipeline does
        await asyncio.to_thread(acks[2.0])  # type: ignore[arg-type]  # or from any thread
        await asyncio.to_thread(acks[3.0])  # type: ignore[arg-type]
        acks[3.0]()  # type: ignore[misc]  # a second ack is a no-op
    # Stopped with 4, 5 and 6 processed but never acknowledged: the session keeps them.
    async with running_source(cfg) as (source, got):
        await publisher.publish_raw("plant/pump-1/vibration", b'{"value": 99}')
        await wait_for(lambda: 99.0 in [s.value for s in got.samples], 10, "the new message")
        assert_each_once([s.value for s in got.samples], [4.0, 5.0, 6.0, 99.0])
        assert source.health().rejected == {}  # the garbage was acknowledged, not redelivered


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_ack_given_just_before_a_stop_is_not_redelivered(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher, protocol: str) -> None:
    """A restart right after the last acks. Nagle holds the last PUBACK while the one before is
    in flight; without waiting for the broker to confirm, it saw our next CONNECT first, closed
    the old connection unread and redelivered the acknowledged message."""
    cfg = source_config(mosquitto.port, protocol=protocol, client_id=f"quick-{protocol}")
    redelivered: list[float | None] = []
    # Without the wait: about one restart in 150 showed it on a quiet box, far more under load.
    for i in range(20):
        sent = [10.0 * i + k for k in range(6)]
        async with running_source(cfg, auto_ack=False) as (_, got):
            for value in sent:
                await publisher.publish_raw("plant/pump-1/vibration", f'{{"value": {value}}}')
            await wait_for(lambda: set(sent) <= {s.value for s in got.samples}, 10,  # noqa: B023
                           f"round {i}")
            # A redelivery comes before the new messages: the broker resends at reconnect.
            redelivered += [s.value for s in got.samples if s.value not in sent]
            for batch in got.batches:
                assert batch.ack is not None
                await asyncio.to_thread(batch.ack)  # from another thread, as the daemon's commit
    assert redelivered == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_clean_session_forgets_unacked(mosquitto: Mosquitto,
                                             publisher: MqttPlantPublisher,
                                             protocol: str) -> None:
    cfg = source_config(mosquitto.port, protocol=protocol, session="clean")
    async with running_source(cfg, auto_ack=False) as (_, got):
        await publisher.publish_raw("plant/pump-1/vibration", b"1")
        await wait_for(lambda: len(got.samples) == 1, 10, "one sample")
    async with running_source(cfg) as (_, got):
        await publisher.publish_raw("plant/pump-1/vibration", b"2")
        await wait_for(lambda: len(got.samples) >= 1, 10, "the new sample")
        assert [s.value for s in got.samples] == [2.0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_broker_restart_reconnects_and_resubscribes(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    caplog.set_level(logging.INFO, logger="drivers.mqtt")
    cfg = source_config(mosquitto.port, protocol=protocol)
    async with running_source(cfg) as (source, got):
        async with MqttPlantPublisher("127.0.0.1", mosquitto.port, SCENARIOS["steady"]) as pub:
            await pub.publish_raw("plant/pump-1/vibration", b"1")
            await wait_for(lambda: len(got.samples) == 1, 10, "sample before the outage")
        mosquitto.stop()
        await wait_for(lambda: source.health().state is SourceState.RECONNECTING, 10,
                       "RECONNECTING")
        await wait_for(lambda: "attempt 3" in source.health().detail, 10, "three retries")
        mosquitto.start()  # same port, no persistence: the subscriptions must be made again
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10,
                       "CONNECTED again")
        async with MqttPlantPublisher("127.0.0.1", mosquitto.port, SCENARIOS["steady"]) as pub:
            await pub.publish_raw("plant/pump-1/vibration", b"2")
            await wait_for(lambda: len(got.samples) == 2, 10, "sample after the outage")
    down = [r for r in caplog.records if "unreachable" in r.getMessage()]
    up = [r for r in caplog.records if "connected again" in r.getMessage()]
    assert (len(down), len(up)) == (1, 1), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_slow_consumer_with_tiny_queue_loses_nothing(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher, protocol: str) -> None:
    n = 300
    cfg = source_config(mosquitto.port, protocol=protocol, queue_max_messages=2)
    async with running_source(cfg, delay_seconds=0.002) as (source, got):
        for i in range(n):
            await publisher.publish_raw("plant/pump-1/vibration", str(i))
        await publisher.flush()
        await wait_for(lambda: len(got.samples) >= n, 30, f"{n} samples")
        assert_each_once([s.value for s in got.samples], [float(i) for i in range(n)])
        assert source.intake_peak <= 2
        if protocol == "3.1.1":  # broker window (20) > our queue: reading had to stop
            assert source.pauses > 0
        assert source.health().state is SourceState.CONNECTED


async def test_source_starts_before_broker_and_reports_connecting(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    mosquitto.stop()
    cfg = source_config(port)
    async with running_source(cfg, wait_connected=False) as (source, got):
        await wait_for(lambda: "attempt 2" in source.health().detail, 10, "retries")
        assert source.health().state is SourceState.CONNECTING
        mosquitto.start()
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10, "CONNECTED")
        async with MqttPlantPublisher("127.0.0.1", port, SCENARIOS["steady"]) as pub:
            await pub.publish_raw("plant/pump-1/vibration", b"5")
            await wait_for(lambda: len(got.samples) == 1, 10, "sample")
    assert source.health().state is SourceState.STOPPED



@pytest.mark.slow
async def test_stalled_consumer_costs_a_reconnect_but_no_message(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    n = 30
    cfg = source_config(mosquitto.port, protocol="3.1.1", queue_max_messages=2,
                        keepalive_seconds=5)
    source = MqttSource(cfg)
    got: list[Sample] = []
    release = asyncio.Event()

    async def consume() -> None:
        async for batch in source.batches():
            await release.wait()  # stalled until the driver gives the link up
            got.extend(batch.samples)
            if batch.ack is not None:
                batch.ack()

    async with source:
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10, "connected")
        task = asyncio.create_task(consume())
        for i in range(n):
            await publisher.publish_raw("plant/pump-1/vibration",
                                        json.dumps({"value": i, "ts": T0 + i}))
        await publisher.flush()
        await wait_for(lambda: source.health().state is SourceState.RECONNECTING, 20,
                       "the stalled link given up (about 2 x keepalive)")
        release.set()
        want = Counter[float | None](float(i) for i in range(n))
        await wait_for(lambda: not want - Counter(s.value for s in got), 20, "every message")
        assert source.health().state is SourceState.CONNECTED
        assert source.intake_peak <= 2
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # At least once from the broker: what the stalled consumer held when the link dropped was
    # never acknowledged and came again. The gate in front of the rules lets each through once.
    gate = SampleGate()
    admitted = [s.value for s in got if gate.admit(source.name, s)]
    assert_each_once(admitted, [float(i) for i in range(n)])
    assert gate.skipped.get(source.name, 0) == len(got) - n
