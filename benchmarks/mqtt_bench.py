"""Throughput of the MQTT source: a flood of messages through a real Mosquitto into batches().

    .venv/bin/python -m benchmarks.mqtt_bench --messages 20000 --qos 1 --queue 1000
    .venv/bin/python -m benchmarks.mqtt_bench --workers 0 1 --protocol 3.1.1
    .venv/bin/python -m benchmarks.mqtt_bench --pipe   # only the worker -> daemon frames
    .venv/bin/python -m benchmarks.mqtt_bench --rate 5000 10000 --workers 0 1   # offered load

A paho publisher in another process floods the broker; the consumer acks every batch as soon
as it has it (the cost of the pipeline is not included). Prints messages/s, CPU-microseconds per
message of all our processes (the consumer and its MQTT worker process, `--workers`), and
whether every message arrived exactly once.

`--rate R...`: a publisher offers R messages/s (one `{"value", "ts"}` reading each, stamped at
publish) for `--seconds`; prints the rate delivered, the CPU of all our processes in % of one
core, the latency from publish to the consumer (p50, p99: the gateway would evaluate and commit
then) and the resident memory of all our processes. This is what a plant usually does: well
below saturation, where the question is what ingest costs, not how fast it can go.

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
from gateway.cli_base import run_async
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
            cpu = Cpu([source])
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


def _paced(port: int, rate: int, seconds: float, qos: int, index: int = 0) -> None:
    """Publish `rate` messages/s for `seconds`, in 10 ms ticks, each stamped when published."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paced-{index}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        for i in range(sent, due):
            client.publish(f"plant/pump-{(i + index) % 100}/vibration",
                           b'{"value": %.1f, "ts": %r}' % (i % 97 * 0.1, time.time()), qos)
        sent = max(sent, due)
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total / 1024


async def bench_rate(rate: int, seconds: float, workers: int, protocol: str) -> None:
    """Offered load: CPU, latency and memory of ingest at `rate` messages/s."""
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        cfg = MqttSourceConfig.model_validate({
            "name": "bench", "port": broker.port, "protocol": protocol, "workers": workers,
            "subscriptions": [{"pattern": "plant/+asset/+signal", "qos": 1,
                               "timestamp_path": "ts"}]})
        source = cfg.build()
        latencies: list[float] = []
        async with source:
            await wait_for(lambda: source.health().state is SourceState.CONNECTED, 30)
            # one paho publisher manages only ~5-8k QoS 1 msg/s here: one per 3,000/s
            n_pubs = max(1, -(-rate // 3000))
            pubs = [multiprocessing.get_context("spawn").Process(
                target=_paced, args=(broker.port, rate // n_pubs, seconds + 1.0, 1, i))
                for i in range(n_pubs)]
            for pub in pubs:
                pub.start()
            count = total = 0
            cpu: Cpu | None = None
            began = last = 0.0
            batches = aiter(source.batches())
            while cpu is None or last - began < seconds:
                try:  # a publisher that could not keep the pace ends early: so do we
                    batch = await asyncio.wait_for(anext(batches), 5.0)
                except TimeoutError:
                    break
                now, last = time.time(), time.perf_counter()
                if cpu is None and total >= rate // 2:  # half a second of warm-up
                    cpu, began, count = Cpu([source]), last, 0
                    latencies.clear()
                for s in batch.samples:
                    latencies.append(now - (s.device_ts or now))
                count += len(batch.samples)
                total += len(batch.samples)
                if batch.ack is not None:
                    batch.ack()
            if cpu is None:
                raise RuntimeError(f"only {total} messages arrived")
            spent = last - began
            main, workers_cpu = cpu.used()
            pids = [os.getpid(), *(source.pids if isinstance(source, MqttWorkerSource) else [])]
            rss = _rss_mb(pids)
            for pub in pubs:
                await asyncio.to_thread(pub.join, 60)
        latencies.sort()
        p50, p99 = (latencies[int(len(latencies) * q)] * 1e3 for q in (0.5, 0.99))
        print(f"MQTT {protocol}, {rate:,}/s offered, workers {workers}: {count / spent:,.0f} "
              f"msg/s delivered; CPU {(main + workers_cpu) / spent * 100:.0f} % of a core "
              f"(daemon {main / spent * 100:.0f} %, workers {workers_cpu / spent * 100:.0f} %); "
              f"latency p50 {p50:.1f} ms, p99 {p99:.1f} ms; RSS {rss:.0f} MB ({len(pids)} "
              f"processes); load {os.getloadavg()[0]:.1f}")


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
                        help="0: the in-process source; 1: ingest in a worker process")
    parser.add_argument("--pipe", action="store_true",
                        help="time only the worker -> daemon frames (no broker)")
    parser.add_argument("--rate", type=int, nargs="+", default=[],
                        help="offered messages/s (a paced publisher) instead of a flood")
    parser.add_argument("--seconds", type=float, default=10.0, help="--rate: how long")
    args = parser.parse_args()
    if args.pipe:
        bench_pipe()
        return
    for rate in args.rate:
        for workers in args.workers:
            run_async(bench_rate(rate, args.seconds, workers, args.protocol))
    if args.rate:
        return
    for workers in args.workers:
        run_async(bench(args.messages, args.qos, args.queue, args.protocol, workers))


if __name__ == "__main__":
    main()
