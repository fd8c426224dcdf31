"""Throughput of the MQTT source: a flood of messages through a real Mosquitto into batches().

    .venv/bin/python -m benchmarks.mqtt_bench --messages 20000 --qos 1 --queue 1000
    .venv/bin/python -m benchmarks.mqtt_bench --workers 0 1 2 --protocol 3.1.1
    .venv/bin/python -m benchmarks.mqtt_bench --pipe   # only the worker -> daemon frames

A paho publisher in another process floods the broker; the consumer acks every batch as soon
as it has it (the cost of the pipeline is not included). Prints messages/s, CPU-microseconds per
message of all our processes (the consumer and its MQTT worker processes, `--workers`), and
whether every message arrived exactly once.

`--pipe` times only what the worker pipe costs per sample, no broker: the worker's side
(a batch to columns, msgpack-encoded) and the daemon's (decoded, `Sample`s rebuilt), in
CPU-nanoseconds per sample on frames of `FRAME_ROWS` samples.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.mqtt_rows import Cpu
from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.driver import MqttSource
from drivers.mqtt.pool import MqttWorkerSource
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


async def bench(messages: int, qos: int, queue: int, protocol: str, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        cfg = MqttSourceConfig.model_validate({
            "name": "bench", "port": broker.port, "protocol": protocol,
            "queue_max_messages": queue, "workers": workers,
            "subscriptions": [{"pattern": "plant/+asset/+signal", "qos": qos}]})
        source = MqttSource(cfg) if workers == 0 else MqttWorkerSource(cfg)
        seen: set[float] = set()
        async with source:
            await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30)
            pub = multiprocessing.get_context("spawn").Process(
                target=_flood, args=(broker.port, messages, qos))
            cpu = Cpu(source)
            start = time.perf_counter()
            pub.start()
            count = 0
            async for batch in source.batches():
                if count == 0:
                    first = time.perf_counter()
                for s in batch.samples:
                    seen.add(s.value or 0.0)
                count += len(batch.samples)
                if batch.ack is not None:
                    batch.ack()
                if count >= messages:
                    break
            end = time.perf_counter()
            main, workers_cpu = cpu.used()
            elapsed, flowing = end - start, end - first
            await asyncio.to_thread(pub.join, 60)
        intake = (f"intake peak {source.intake_peak}, read pauses {source.pauses}"
                  if isinstance(source, MqttSource) else f"{workers} worker process(es)")
        print(f"MQTT {protocol} QoS {qos}, queue {queue}, workers {workers}: {messages} messages "
              f"in {elapsed:.2f} s from publisher start, {flowing:.2f} s from the first message "
              f"= {messages / flowing:,.0f} msg/s; "
              f"{(main + workers_cpu) / messages * 1e6:.1f} CPU-us/msg (ours; "
              f"workers {workers_cpu / messages * 1e6:.1f}); "
              f"distinct values {len(seen)}; {intake}; load {os.getloadavg()[0]:.1f}")


def bench_pipe(rounds: int = 300) -> None:
    from drivers.mqtt import frames
    from drivers.mqtt.worker import FRAME_ROWS
    from gateway.model import Quality, Sample

    signals = ("vibration", "temperature", "current", "running", "pressure")
    batch = [Sample(f"pump-{i % 100}", signals[i // 100 % 5], 2.5 + i % 7 * 0.1,
                    Quality.GOOD if i % 50 else Quality.BAD, 1.8e9 + i / 1e5, 1.8e9 + i / 1e5)
             for i in range(FRAME_ROWS)]
    body = frames.encode(("b", 1, frames.columns(batch)))[4:]
    assert frames.samples_of(msgpack.unpackb(body, use_list=False)[2]) == batch

    def worker() -> None:
        frames.encode(("b", 1, frames.columns(batch)))

    def daemon() -> None:
        frames.samples_of(msgpack.unpackb(body, use_list=False, raw=False)[2])

    for name, step in (("worker: columns + encode", worker), ("daemon: decode + Samples", daemon)):
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(rounds):
                step()
            best = min(best, time.process_time() - start)
        print(f"{name}: {best / rounds / len(batch) * 1e9:.0f} CPU-ns/sample "
              f"({len(batch)} samples a frame, {len(body):,} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1))
    parser.add_argument("--queue", type=int, default=1000)
    parser.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="0: the in-process source; N: ingest in N worker processes")
    parser.add_argument("--pipe", action="store_true",
                        help="time only the worker -> daemon frames (no broker)")
    args = parser.parse_args()
    if args.pipe:
        bench_pipe()
        return
    for workers in args.workers:
        asyncio.run(bench(args.messages, args.qos, args.queue, args.protocol, workers))


if __name__ == "__main__":
    main()
