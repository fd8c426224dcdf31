"""MQTT rows: saturated intake through `MqttSource` and the rule engine vs a bare paho subscriber.

    .venv/bin/python -m benchmarks --only mqtt5

Saturated means the broker already holds every message when the consumer connects: a persistent
session subscribes, disconnects, a publisher fills the session's queue, and the consumer comes
back. So the publisher never competes for the CPU while we measure, and both consumers (ours and
the bare paho client, one after the other on the same broker) see exactly the same backlog.
Timing runs from the first message received to the last. 100 assets x 5 signals, QoS 1.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from benchmarks.rows import Row, peak_rss_mb, rules_from_text
from benchmarks.rules_bench import RULES
from drivers.mqtt.config import MqttSourceConfig
from gateway.model import SourceState
from rules import RuleEngine
from tests.harness import Mosquitto, running_mosquitto, wait_for, wait_for_sync

SIGNALS = ("vibration", "temperature", "current", "running", "pressure")
ASSETS = 100
RECEIVE_MAXIMUM = int(MqttSourceConfig.model_fields["queue_max_messages"].default)


def payload(i: int, per_message: int, t0: float) -> bytes:
    """Message `i`: one `{"value", "ts"}` object, or an array of `per_message` of them, stamped
    from `t0` on (now: a device clock in step, as in a plant)."""
    items = [{"value": 2.5 + (i * per_message + k) % 7 * 0.1,
              "ts": t0 + (i * per_message + k) / 1e5} for k in range(per_message)]
    return orjson.dumps(items[0] if per_message == 1 else items)


def topic(i: int) -> str:
    return f"plant/pump-{i % ASSETS}/{SIGNALS[i // ASSETS % len(SIGNALS)]}"


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
    client.subscribe("plant/+/+", qos=1)
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


async def ours(broker: Mosquitto, protocol: str, messages: int, per_message: int) -> float:
    """Samples/s through `MqttSource.batches()` and `RuleEngine.evaluate`, acked per batch."""
    cfg = MqttSourceConfig.model_validate({
        "name": f"bench-{protocol}", "port": broker.port, "protocol": protocol,
        "subscriptions": [{"pattern": "plant/+asset/+signal", "qos": 1, "format": "json",
                           "value_path": "value", "timestamp_path": "ts"}]})
    source = cfg.build()
    async with source:  # the persistent session subscribes: the broker keeps what follows
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30)
    await asyncio.to_thread(preload, broker.port, messages, per_message)
    evaluate = RuleEngine(rules_from_text(RULES)).evaluate
    want = messages * per_message
    got = 0
    source = cfg.build()
    async with source:
        async with asyncio.timeout(300):
            async for batch in source.batches():
                if got == 0:
                    first = time.perf_counter()
                for sample in batch.samples:
                    evaluate(sample)
                got += len(batch.samples)
                if batch.ack is not None:
                    batch.ack()
                if got >= want:
                    break
        end = time.perf_counter()
    return want / (end - first)


def measure(name: str, protocol: str, per_message: int, messages: int, target: str,
            floor: float, min_ratio: float = 0.0) -> Row:
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        wait_for_sync(lambda: broker.proc is not None, 5)
        ceiling = bare(broker, protocol, messages, per_message, decode=per_message > 1)
        value = asyncio.run(ours(broker, protocol, messages, per_message))
    met = value >= floor and value >= min_ratio * ceiling
    what = "with orjson decode" if per_message > 1 else "no work"
    return Row(name, value, "samples/s", target, met, ceiling,
               f"{messages:,} msgs x {per_message}; ceiling: bare paho {protocol}, {what}",
               peak_rss_mb())


def mqtt5(quick: bool) -> list[Row]:
    return [measure("MQTT 5, 1 sample/msg -> rules", "5", 1, 1000 if quick else 60_000,
                    ">= 35,000/s and >= 1.0x bare", 35_000, 1.0)]


def mqtt311(quick: bool) -> list[Row]:
    return [measure("MQTT 3.1.1, 1 sample/msg -> rules", "3.1.1", 1,
                    1000 if quick else 60_000, ">= 55,000/s", 55_000)]


def mqtt_batch(quick: bool) -> list[Row]:
    return [measure("MQTT 5, 100 samples/msg -> rules", "5", 100, 20 if quick else 4000,
                    ">= 600,000/s", 600_000)]
