"""MQTT ingest in a worker process (`workers = 1`): the QoS 1 promise across a worker kill -9.

Real Mosquitto, real worker processes. Deliveries are counted as a multiset: a message missing
or evaluated twice must show.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.pool import MqttWorkerSource
from gateway.dedup import SampleGate
from gateway.model import Sample, SampleBatch, SourceState
from simulators.mqtt_plant import MqttPlantPublisher
from tests.drivers.mqtt.conftest import running_source, source_config
from tests.harness import Mosquitto, wait_for

T0 = 1_780_000_000.0


def pool_config(port: int, workers: int, **overrides: object) -> MqttSourceConfig:
    raw = source_config(port, workers=workers, **overrides)
    return raw


class Consumer:
    """Plays the pipeline: records each batch's samples ("commits"), then acks it; while
    `holding`, acks are kept back instead (a commit still running)."""

    def __init__(self, source: MqttWorkerSource) -> None:
        self.source = source
        self.samples: list[Sample] = []
        self.holding = False
        self.held: list[Callable[[], None]] = []
        self.held_samples = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.source.batches():
            self._take(batch)

    def _take(self, batch: SampleBatch) -> None:
        self.samples.extend(batch.samples)
        if batch.ack is None:
            return
        if self.holding:
            self.held.append(batch.ack)
            self.held_samples += len(batch.samples)
        else:
            batch.ack()

    def release(self) -> None:
        self.holding = False
        for ack in self.held:
            ack()  # acks owed to a killed worker are dropped by the source
        self.held = []

    def ids(self) -> list[int]:
        return [int(s.value or 0) for s in self.samples]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def running_pool(cfg: MqttSourceConfig) -> AsyncIterator[tuple[MqttWorkerSource, Consumer]]:
    source = cfg.build()
    assert isinstance(source, MqttWorkerSource)
    async with source:
        consumer = Consumer(source)
        try:
            await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30,
                           "every worker connected")
            yield source, consumer
        finally:
            await consumer.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_a_worker_killed_mid_stream_loses_nothing(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher, protocol: str) -> None:
    n = 1500
    cfg = pool_config(mosquitto.port, 1, protocol=protocol, client_id=f"kill-{protocol}",
                      queue_max_messages=100)
    async with running_pool(cfg) as (source, got):
        first_pids = source.pids
        assert len(first_pids) == 1
        assert f"read by worker process {first_pids[0]}" in source.health().detail
        publish = [publisher.publish_raw(f"plant/pump-{i % 7}/s{i}",
                                         f'{{"value": {i}, "ts": {T0 + i}}}') for i in range(n)]
        for coro in publish[:n // 3]:
            await coro
        await wait_for(lambda: len(got.samples) >= n // 4, 30, "a quarter delivered")
        got.holding = True  # commits of what arrives now are "still running"...
        for coro in publish[n // 3:2 * n // 3]:
            await coro
        # The worker has at most `window` unacknowledged messages (MQTT 5: our Receive
        # Maximum = queue_max_messages; 3.1.1: Mosquitto's max_inflight_messages, 20): that
        # many held means its window is full of messages whose acks it waits for.
        window = 100 if protocol == "5" else 20
        await wait_for(lambda: got.held_samples >= window, 30, "the worker's window held")
        os.kill(first_pids[0], signal.SIGKILL)  # ...when the worker dies
        await wait_for(lambda: source.restarts == 1 and len(source.pids) == 1, 30,
                       "the worker restarted")
        got.release()
        for coro in publish[2 * n // 3:]:
            await coro
        await publisher.flush(30)
        await wait_for(lambda: set(got.ids()) >= set(range(n)), 60, "every message delivered")
        have = Counter(got.ids())
        assert set(have) == set(range(n)), "something arrived that was never published"
        # What the dead worker had not acknowledged came back from the broker:
        assert any(c > 1 for c in have.values()), "no redelivery: the kill tested nothing"
        assert all(c <= 2 for c in have.values()), have.most_common(3)
        # ...and is evaluated once: the pipeline's gate skips a redelivered reading.
        gate = SampleGate()
        admitted = Counter(int(s.value or 0) for s in got.samples if gate.admit("m", s))
        assert admitted == Counter(range(n))
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30,
                       "the new worker connected")
        assert source.health().counted.get("worker_restarts") == 1
        assert _alive(source.pids[0]) and not _alive(first_pids[0])
        assert (f"read by worker process {source.pids[0]}, restarted once"
                in source.health().detail), source.health().detail


async def test_rejections_are_counted_and_acknowledged(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    cfg = pool_config(mosquitto.port, 1, client_id="reject-w")
    async with running_pool(cfg) as (source, got):
        await publisher.publish_raw("plant/pump-1/vibration", b"{not json")
        await publisher.publish_raw("elsewhere/x", b"1")  # maps to nothing
        await publisher.publish_raw("plant/pump-1/vibration", b'{"value": 4.5}')
        await wait_for(lambda: [s.value for s in got.samples] == [4.5], 10, "the good one")
        await wait_for(lambda: source.health().rejected == {"malformed_json": 1}, 10,
                       "the rejection counted in the worker, seen by the daemon")
        assert source.health().samples_total == 1
    # Every message was acknowledged (the bad one at once, the good one after its "commit"):
    # nothing comes back to the same session.
    async with running_pool(cfg) as (source, got):
        await publisher.publish_raw("plant/pump-1/vibration", b'{"value": 5.5}')
        await wait_for(lambda: 5.5 in [s.value for s in got.samples], 10, "the new one")
        assert [s.value for s in got.samples] == [5.5]


async def test_stopping_the_source_ends_its_workers(mosquitto: Mosquitto) -> None:
    cfg = pool_config(mosquitto.port, 1, client_id="stop-w")
    async with running_pool(cfg) as (source, _):
        pids = source.pids
        assert len(pids) == 1 and _alive(pids[0])
    await wait_for(lambda: not _alive(pids[0]), 10, "the worker gone")
    assert source.restarts == 0  # a stop is not a crash


def test_workers_config() -> None:
    one = pool_config(1883, 1, client_id="line-1")
    assert one.worker_config().client_id == "line-1"  # 0 -> 1 worker keeps the session
    assert one.worker_config().workers == 0  # the worker runs the source in process
    # Two workers would share the subscription and lose the order of an asset's messages
    # (tests/e2e/test_worker_order.py): refused, saying why and what to do instead.
    with pytest.raises(ValueError, match=r"workers = 2: at most 1\..*order is lost.*"
                                         r"workers = 1 keeps the order"):
        pool_config(1883, 2)
    with pytest.raises(ValueError, match="share_group"):  # the setting of the shared group
        pool_config(1883, 1, share_group="line-1")


async def test_one_worker_takes_over_the_in_process_session(
        mosquitto: Mosquitto, publisher: MqttPlantPublisher) -> None:
    """workers 0 -> 1 keeps the client id: what the in-process source left unacknowledged
    comes back through the worker."""
    cfg = pool_config(mosquitto.port, 0, client_id="handover")
    async with running_source(cfg, auto_ack=False) as (_, old):
        for i in (1, 2):
            await publisher.publish_raw("plant/pump-1/vibration", f'{{"value": {i}}}')
        await wait_for(lambda: len(old.samples) == 2, 10, "two samples, not acknowledged")
    async with running_pool(cfg.model_copy(update={"workers": 1})) as (_, got):
        await wait_for(lambda: sorted(s.value or 0 for s in got.samples) == [1.0, 2.0], 10,
                       "both redelivered to the worker")
