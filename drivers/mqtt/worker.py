"""One MQTT ingest worker process: `python -m drivers.mqtt.worker`, started by `pool.py`.

It runs the ordinary in-process `MqttSource` (its own connection and client id, persistent
session, routes, codec, rejections, backpressure) and forwards what it yields to the daemon as
compact column batches over stdout (see `frames.py`). Nothing is acknowledged to the broker until
the daemon sends the batch's token back, which it does after the commit: then the worker calls
the batch's paho manual acks, in order. A worker killed at any moment loses nothing: the broker
redelivers the unacknowledged messages to the same client id when the daemon restarts it.

Its life is its stdin: when the pipe ends (the daemon stopped or died: no orphans) it exits.
SIGINT and SIGTERM are ignored, so a Ctrl-C or a service stop sent to the whole process group
lets the daemon drain and acknowledge first; the daemon then closes the pipe. A changed parent
(re-parented to init) is checked too, once a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from drivers.mqtt import frames
from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.driver import MqttSource
from gateway import logs
from gateway.collector import GC_YOUNG_OBJECTS as _GC_YOUNG_OBJECTS  # noqa: F401  # tests read it
from gateway.collector import tune_gc
from gateway.model import Sample, SampleBatch

log = logging.getLogger("drivers.mqtt.worker")
_HEALTH_SECONDS = 0.5  # how often a changed health is reported
# Samples per frame at most (the pipeline's commit group is 2,000 samples): a backlog of big
# messages goes as a stream of moderate frames, not one that doubles the daemon's memory.
FRAME_ROWS = 2000


class WorkerLink:
    """Forwards one source's batches to the daemon and applies the daemon's acks.

    At most `window` messages are sent and not yet acknowledged; past that the worker stops
    taking batches, the source's intake fills and it stops reading the socket, so the broker
    holds the rest. Nothing is dropped or acknowledged early.
    """

    def __init__(self, source: MqttSource, out: asyncio.StreamWriter, window: int) -> None:
        self._source = source
        self._out = out
        self._window = window
        self._samples: list[Sample] = []
        self._acks: list[Callable[[], None]] = []
        self._messages = 0  # messages in `_samples`
        self._pending: dict[int, tuple[list[Callable[[], None]], int]] = {}
        self._outstanding = 0  # messages sent (or about to be) and not acknowledged
        self._token = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._shipped = asyncio.Event()

    async def pump(self) -> None:
        """Batches -> one list of samples. Runs through every batch the source has ready in
        one loop turn, so `send` (woken by the event) ships them together in one frame."""
        window = self._window
        async for batch in self._source.batches():
            self._samples.extend(batch.samples)
            self._take(batch)
            if len(self._samples) >= FRAME_ROWS:
                self._shipped.clear()
                await self._shipped.wait()
            if self._outstanding >= window:
                self._room.clear()
                await self._room.wait()

    def _take(self, batch: SampleBatch) -> None:
        if batch.ack is not None:
            self._acks.append(batch.ack)
        self._messages += 1
        self._outstanding += 1
        self._ready.set()

    async def send(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not self._messages:
                continue
            samples, acks, count = self._samples, self._acks, self._messages
            self._samples, self._acks, self._messages = [], [], 0
            self._shipped.set()
            self._token += 1
            self._pending[self._token] = (acks, count)
            self._out.write(frames.encode(("b", self._token, frames.columns(samples))))
            await self._out.drain()

    def acknowledge(self, token: int) -> None:
        """The daemon committed batch `token`: PUBACK its messages, in their order."""
        acks, count = self._pending.pop(token, ((), 0))
        for ack in acks:
            ack()
        self._outstanding -= count
        if self._outstanding < self._window:
            self._room.set()

    async def report(self) -> None:
        """Health to the daemon when it changes; exit if the daemon is gone."""
        parent = os.getppid()
        last: tuple[object, ...] = ()
        ticks = 0
        while True:
            fields = frames.health_fields(self._source.health())
            if fields != last:
                self._out.write(frames.encode(("h", *fields)))
                await self._out.drain()
                last = fields
            ticks += 1
            if ticks % 2 == 0 and os.getppid() != parent:
                raise SystemExit("the daemon is gone")
            await asyncio.sleep(_HEALTH_SECONDS)


async def serve(reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
    """Read the config frame, run the source, apply acks until the pipe ends."""
    first = await frames.read(reader)
    if first is None:
        return
    cfg = MqttSourceConfig.model_validate_json(first["config"])
    source = MqttSource(cfg)
    link = WorkerLink(source, out, cfg.queue_max_messages)
    async with source:
        tasks = [asyncio.create_task(coro, name=f"mqtt-worker-{name}")
                 for name, coro in (("acks", _acks(reader, link)), ("pump", link.pump()),
                                    ("send", link.send()), ("report", link.report()))]
        try:
            # Only the acks task ends by itself (the pipe ended); any other ending is a bug
            # or the daemon gone, and result() raises it.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _acks(reader: asyncio.StreamReader, link: WorkerLink) -> None:
    while (token := await frames.read(reader)) is not None:
        link.acknowledge(int(token))


async def _main(out_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0))
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    try:
        await serve(reader, out)
    except (BrokenPipeError, ConnectionResetError, frames.FrameError):
        pass  # the daemon is gone or broke the protocol: nothing to tell it
    finally:
        transport.close()


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logs.setup_child(sys.stderr)  # the daemon's level and format (stderr: see below)
    # The frame stream gets a private copy of stdout; fd 1 then points at stderr, so a stray
    # print() (ours or a library's) cannot corrupt it.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    tune_gc()  # the daemon's collector thresholds: decoding allocates at a high rate
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_main(out_fd))
    else:
        uvloop.run(_main(out_fd))


if __name__ == "__main__":
    main()
