"""MQTT rows: saturated intake through `MqttSource` and the rule engine vs a bare paho subscriber.

    .venv/bin/python -m benchmarks --only mqtt5

Saturated means the broker already holds every message when the consumer connects: a persistent
session subscribes, disconnects, a publisher fills the session's queue, and the consumer comes
back. So the publisher never competes for the CPU while we measure, and both consumers (ours and
the bare paho client, one after the other on the same broker) see exactly the same backlog.
Timing runs from the first message received to the last. 100 assets x 5 signals, QoS 1. The
consumer runs on uvloop, as the daemon does (`gateway.cli_base.run_async`).
Each row is measured in process and with ingest in a worker process (`workers = 1`: not more,
drivers/mqtt/config.py says why); the note gives the CPU-microseconds per sample of all our
processes (the daemon's and the worker's), which a busy shared box changes far less than the
wall rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.rows import Row, peak_rss_mb, rules_from_text
from benchmarks.rules_bench import RULES
from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.pool import MqttWorkerSource
from gateway.cli_base import run_async
from gateway.model import SampleBatch, SourceState
from rules import RuleEngine
from tests.harness import Mosquitto, running_mosquitto, wait_for, wait_for_sync

if TYPE_CHECKING:
    from drivers.mqtt.driver import MqttSource

SIGNALS = ("vibration", "temperature", "current", "running", "pressure")
ASSETS = 100
RECEIVE_MAXIMUM = int(MqttSourceConfig.model_fields["queue_max_messages"].default)


def payload(i: int, per_message: int, t0: float) -> bytes:
    """Message `i`: one `{"value", "ts"}` object, or an array of `per_message` of them, stamped
    from `t0` on (now: a device clock in step, as in a plant)."""
    items = [{"value": 2.5 + (i * per_message + k) % 7 * 0.1,
              "ts": t0 + (i * per_message + k) / 1e5} for k in range(per_message)]
    return orjson.dumps(items[0] if per_message == 1 else items)


LINES = 2  # the assets are on two lines: a plant split between sources by line keeps order


def topic(i: int) -> str:
    a = i % ASSETS
    return f"plant/line-{a % LINES}/pump-{a}/{SIGNALS[i // ASSETS % len(SIGNALS)]}"


def preload(port: int, messages: int, per_message: int) -> None:
    """Publish the backlog at QoS 1 from a child process (its memory and CPU are not the
    consumer's) and wait until the broker has taken every message."""
    child = multiprocessing.get_context("spawn").Process(
        target=_publish, args=(port, messages, per_message), name="bench-preload")
    child.start()
    child.join(300)
    if child.exitcode != 0:
        raise RuntimeError(f"the preloading publisher failed (exit {child.exitcode})")


def _publish(port: int, messages: int, per_message: int) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-preload")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.time()
    try:
        infos = [pub.publish(topic(i), payload(i, per_message, t0), 1) for i in range(messages)]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        pub.disconnect()
        pub.loop_stop()


def _bare_client(protocol: str, port: int) -> paho.Client:
    v5 = protocol == "5"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{protocol}",
                         protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                         clean_session=None if v5 else False)
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        # the same flow-control window as our source announces (its intake size)
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", port)
    return client


def bare(broker: Mosquitto, protocol: str, messages: int, per_message: int,
         decode: bool) -> float:
    """Samples/s of a bare paho subscriber draining the same backlog (`decode`: orjson too)."""
    client = _bare_client(protocol, broker.port)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.subscribe("plant/+/+/+", qos=1)
    deadline = time.monotonic() + 30
    while not subscribed.is_set() and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    preload(broker.port, messages, per_message)
    got = 0
    first = last = 0.0

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        nonlocal got, first, last
        if got == 0:
            first = time.perf_counter()
        if decode:
            orjson.loads(msg.payload)
        got += 1
        last = time.perf_counter()

    client.on_message = on_message
    client.reconnect()
    deadline = time.monotonic() + 300
    while got < messages and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    if got < messages:
        raise RuntimeError(f"bare paho got {got} of {messages} messages")
    return messages * per_message / (last - first)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc; Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """CPU seconds of this process and of the source's worker processes, from a start on."""

    def __init__(self, sources: list[object]) -> None:
        self._sources = sources
        self._start = self._now()

    def _now(self) -> dict[int, float]:
        pids = [os.getpid(), *(pid for s in self._sources if isinstance(s, MqttWorkerSource)
                               for pid in s.pids)]
        return {pid: _cpu_seconds(pid) for pid in pids}

    def used(self) -> tuple[float, float]:
        """(this process, the workers) CPU seconds since the start."""
        spent = {pid: cpu - self._start.get(pid, 0.0) for pid, cpu in self._now().items()}
        here = spent.pop(os.getpid())
        return here, sum(spent.values())


@dataclass(frozen=True, slots=True)
class Measured:
    samples_per_second: float
    cpu_main_seconds: float  # this process (the daemon's part), first message to last
    cpu_workers_seconds: float  # the worker processes, the same span
    samples: int

    def cpu_note(self) -> str:
        """CPU-microseconds per sample: all our processes, and the split when there are
        workers (the daemon's part bounds the rate on one core, the workers' share the rest)."""
        main, workers = (x / self.samples * 1e6 for x in (self.cpu_main_seconds,
                                                             self.cpu_workers_seconds))
        split = f" = daemon {main:.1f} + workers {workers:.1f}" if workers else ""
        return f"{main + workers:.1f} CPU-us/sample{split}"


def configs(port: int, protocol: str, workers: int, sources: int) -> list[MqttSourceConfig]:
    """One source for the whole plant, or (`sources` = LINES) one per line: a plant split by
    asset, the way config/examples/source-mqtt.toml says to use more cores."""
    lines = ["+"] if sources == 1 else [f"line-{k}" for k in range(sources)]
    return [MqttSourceConfig.model_validate({
        "name": f"bench-{protocol}-w{workers}-{k}", "port": port, "protocol": protocol,
        "workers": workers,
        "subscriptions": [{"pattern": f"plant/{line}/+asset/+signal", "qos": 1,
                           "format": "json", "value_path": "value", "timestamp_path": "ts"}]})
        for k, line in enumerate(lines)]


async def ours(broker: Mosquitto, protocol: str, messages: int, per_message: int,
               workers: int = 0, sources: int = 1) -> Measured:
    """Samples/s through the sources' `batches()` and `RuleEngine.evaluate`, acked per batch;
    `workers` 1: ingest in a worker process per source (drivers/mqtt/pool.py); `sources` > 1:
    the plant split between that many sources by line, their batches evaluated as they come."""
    cfgs = configs(broker.port, protocol, workers, sources)
    for cfg in cfgs:  # the persistent sessions subscribe: the broker keeps what follows
        async with cfg.build() as source:
            await _connected(source)
    await asyncio.to_thread(preload, broker.port, messages, per_message)
    evaluate = RuleEngine(rules_from_text(RULES)).evaluate
    want = messages * per_message
    got = 0
    running = [cfg.build() for cfg in cfgs]
    async with contextlib.AsyncExitStack() as stack:
        for source in running:
            await stack.enter_async_context(source)
        async with asyncio.timeout(300):
            async for batch in _merged(running):
                if got == 0:
                    first = time.perf_counter()
                    cpu = Cpu(list(running))  # workers are up: the first batch came from one
                for sample in batch.samples:
                    evaluate(sample)
                got += len(batch.samples)
                if batch.ack is not None:
                    batch.ack()
                if got >= want:
                    break
        end = time.perf_counter()
        main, workers_cpu = cpu.used()
    return Measured(want / (end - first), main, workers_cpu, want)


async def _connected(source: MqttSource | MqttWorkerSource) -> None:
    await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30)


async def _merged(sources: list[MqttSource | MqttWorkerSource]) -> AsyncIterator[SampleBatch]:
    """The sources' batches as they come (one source: its own iterator, nothing between)."""
    if len(sources) == 1:
        async for batch in sources[0].batches():
            yield batch
        return
    queue: asyncio.Queue[SampleBatch] = asyncio.Queue()

    async def pump(source: MqttSource | MqttWorkerSource) -> None:
        async for batch in source.batches():
            queue.put_nowait(batch)

    pumps = [asyncio.create_task(pump(s)) for s in sources]
    try:
        while True:
            yield await queue.get()
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


# (workers per source, sources): in process; one worker; the plant split by line between two
# sources, a worker each (both cores, each asset's order kept: its messages take one connection)
SETUPS = ((0, 1), (1, 1), (1, LINES))


def measure(name: str, protocol: str, per_message: int, messages: int, target: str,
            floor: float, min_ratio: float = 0.0,
            setups: tuple[tuple[int, int], ...] = SETUPS) -> list[Row]:
    """One row per setup, each on a fresh broker (no session of an earlier run left to queue
    for), all against the same bare paho ceiling."""
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        wait_for_sync(lambda: broker.proc is not None, 5)
        ceiling = bare(broker, protocol, messages, per_message, decode=per_message > 1)
    load = os.getloadavg()[0]
    rows = []
    for n, sources in setups:
        with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
            got = run_async(ours(broker, protocol, messages, per_message, n, sources))  # uvloop
        met = got.samples_per_second >= floor and got.samples_per_second >= min_ratio * ceiling
        what = "with orjson decode" if per_message > 1 else "no work"
        label = (name if n == 0 else f"{name}, 1 worker" if sources == 1
                 else f"{name}, {sources} sources by line, a worker each")
        rows.append(Row(label, got.samples_per_second, "samples/s", target, met, ceiling,
                        f"{messages:,} msgs x {per_message}; {got.cpu_note()} "
                        f"(all our processes); load {load:.1f} on {os.cpu_count()} "
                        f"cores; ceiling: bare paho {protocol}, {what}", peak_rss_mb()))
    return rows


def mqtt5(quick: bool) -> list[Row]:
    return measure("MQTT 5, 1 sample/msg -> rules", "5", 1, 1000 if quick else 60_000,
                   ">= 35,000/s and >= 1.0x bare", 35_000, 1.0)


def mqtt311(quick: bool) -> list[Row]:
    return measure("MQTT 3.1.1, 1 sample/msg -> rules", "3.1.1", 1,
                   1000 if quick else 60_000, ">= 55,000/s", 55_000)


def mqtt_batch(quick: bool) -> list[Row]:
    return measure("MQTT 5, 100 samples/msg -> rules", "5", 100, 20 if quick else 4000,
                   ">= 600,000/s", 600_000)
