"""Throughput of the MQTT source: a flood of messages through a real Mosquitto into batches().

    .venv/bin/python -m benchmarks.mqtt_bench --messages 20000 --qos 1 --queue 1000

A paho publisher in another process floods the broker; the consumer acks every batch as soon
as it has it (the cost of the pipeline is not included). Prints messages/s and whether every
message arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.driver import MqttSource
from gateway.model import SourceState
from tests.harness import running_mosquitto, wait_for


def _flood(port: int, count: int, qos: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(f"plant/pump-{i % 10}/vibration", f'{{"value": {i}}}', qos)
             for i in range(count)]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


async def bench(messages: int, qos: int, queue: int, protocol: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        cfg = MqttSourceConfig.model_validate({
            "name": "bench", "port": broker.port, "protocol": protocol,
            "queue_max_messages": queue,
            "subscriptions": [{"pattern": "plant/+asset/+signal", "qos": qos}]})
        source = MqttSource(cfg)
        seen: set[float] = set()
        async with source:
            await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10)
            pub = multiprocessing.get_context("spawn").Process(
                target=_flood, args=(broker.port, messages, qos))
            start = time.perf_counter()
            pub.start()
            count = 0
            async for batch in source.batches():
                if count == 0:
                    first = time.perf_counter()
                for s in batch.samples:
                    seen.add(s.value or 0.0)
                count += 1
                if batch.ack is not None:
                    batch.ack()
                if count >= messages:
                    break
            end = time.perf_counter()
            elapsed, flowing = end - start, end - first
            await asyncio.to_thread(pub.join, 60)
        print(f"MQTT {protocol} QoS {qos}, queue {queue}: {messages} messages in {elapsed:.2f} s "
              f"from publisher start, {flowing:.2f} s from the first message = "
              f"{messages / flowing:,.0f} msg/s; distinct values {len(seen)}; "
              f"intake peak {source.intake_peak}, read pauses {source.pauses}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1))
    parser.add_argument("--queue", type=int, default=1000)
    parser.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    args = parser.parse_args()
    asyncio.run(bench(args.messages, args.qos, args.queue, args.protocol))


if __name__ == "__main__":
    main()
