"""An MQTT source whose ingest runs in a worker process (`workers = 1` on the source).

Why processes, and why `asyncio` subprocesses of `python -m drivers.mqtt.worker` rather than
`multiprocessing`: at saturation paho's receive path and the decoding are most of a core, and
the GIL keeps threads on one. An asyncio subprocess gives the daemon's event loop the worker's
pipes as ordinary streams (no extra thread, no pickling, no fork of a daemon that holds SQLite
connections and sockets), and its life is tied to the pipe: when the daemon dies, the worker's
stdin ends and it exits, so no orphan keeps a broker session busy.

The worker runs the ordinary `MqttSource` with the source's own client id (so going from 0 to
1 worker keeps the broker session) in a persistent session. It sends column batches; this side
builds the `Sample`s in bulk and hands them on as `SampleBatch`es whose `ack` sends the batch's
token back to the worker after the commit. The worker then sends the PUBACKs. A worker that
exits is restarted with backoff (logged, counted under `counted["worker_restarts"]`); the broker
redelivers its unacknowledged messages to the same client id, and acks still owed to the dead
incarnation are dropped (they would be wrong).

Order: the worker's batches keep the order of its one connection, as in process. One worker,
never more (drivers/mqtt/config.py, `MAX_WORKERS`): two would share the subscription and lose
the order of an asset's messages between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from drivers.mqtt import frames
from drivers.mqtt.acks import once_on_loop
from drivers.mqtt.config import MqttSourceConfig
from gateway import logs
from gateway.backoff import Backoff
from gateway.model import SampleBatch, SourceHealth, SourceState

log = logging.getLogger("drivers.mqtt")
_STOP_SECONDS = 5.0  # a worker told to stop (its stdin closed) gets this long to disconnect
_STABLE_SECONDS = 60.0  # a worker that ran this long restarts without the accumulated backoff


def _worker_env() -> dict[str, str]:
    """The daemon's environment (secrets from env or $CREDENTIALS_DIRECTORY included), with our
    code importable whatever the working directory, and the daemon's log level and format."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{path}" if path else root,
                **logs.child_env())


@dataclass(slots=True)
class _Worker:
    proc: asyncio.subprocess.Process | None = None
    health: SourceHealth | None = None
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)


class MqttWorkerSource:
    """The `Source` of an MQTT broker read by a worker process."""

    def __init__(self, config: MqttSourceConfig) -> None:
        if config.workers != 1:
            raise ValueError("MqttWorkerSource needs workers = 1 (0 is the in-process source)")
        self.name = config.name
        self._cfg = config
        self._worker = _Worker()
        # Bounded by the worker's window: at most `queue_max_messages` messages sent and not
        # acknowledged.
        self._out: asyncio.Queue[SampleBatch] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    @property
    def pids(self) -> list[int]:
        """The running worker's process id, in a list (benchmarks and tests look at it)."""
        proc = self._worker.proc
        return [proc.pid] if proc is not None and proc.returncode is None else []

    @property
    def restarts(self) -> int:
        return self._worker.restarts

    # --- Source protocol --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = False
        self._tasks = [asyncio.create_task(self._supervise(self._worker),
                                           name=f"mqtt-worker:{self.name}")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the worker's stdin (it disconnects, keeping its session, and exits); kill it
        if it has not exited after a few seconds."""
        self._stopping = True
        proc = self._worker.proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_SECONDS):
                    await asyncio.gather(*(asyncio.shield(t) for t in self._tasks),
                                         return_exceptions=True)
        finally:  # cancelled again meanwhile: the supervisors still kill what is left
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    async def batches(self) -> AsyncIterator[SampleBatch]:
        while True:
            yield await self._out.get()

    def health(self) -> SourceHealth:
        """The worker's health, as it last reported it, saying which process reads the broker
        (the status page and `plantbridge status` show it) and how often it was restarted."""
        h = self._worker.health or SourceHealth(SourceState.CONNECTING, "worker starting")
        pids, n = self.pids, self.restarts
        where = f"read by worker process {pids[0]}" if pids else "worker process not running"
        if n:
            where += ", restarted once" if n == 1 else f", restarted {n} times"
        return dataclasses.replace(
            h, detail=f"{h.detail}; {where}" if h.detail else where,
            counted={**h.counted, "worker_restarts": n} if n else h.counted)

    # --- the worker -------------------------------------------------------------------------

    async def _supervise(self, w: _Worker) -> None:
        cfg = self._cfg
        backoff = Backoff(cfg.reconnect_initial_seconds, cfg.reconnect_max_seconds)
        hello = frames.encode({"config": cfg.worker_config().model_dump_json()})
        while True:
            w.started = time.monotonic()
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "drivers.mqtt.worker", stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, limit=2**20, env=_worker_env())
            except OSError as exc:  # out of processes or memory: try again, say so
                w.restarts += 1
                delay = backoff.next_delay()
                log.error("source %s: cannot start its worker: %s; trying again in %.1f s",
                          self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            w.proc = proc
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(hello)
                await self._read(w, proc, proc.stdout)
            except frames.FrameError as exc:
                log.error("source %s: worker (pid %d) broke the pipe protocol (%s); "
                          "restarting it", self.name, proc.pid, exc)
            finally:
                await self._reap(proc)
            w.health = None
            if self._stopping:
                return
            w.restarts += 1
            if time.monotonic() - w.started >= _STABLE_SECONDS:
                backoff.reset()
            delay = backoff.next_delay()
            log.warning("source %s: worker (pid %d) exited with code %s; restarting it in "
                        "%.1f s (restart %d); the broker redelivers what it had not "
                        "acknowledged", self.name, proc.pid, proc.returncode, delay,
                        w.restarts)
            await asyncio.sleep(delay)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Wait for a worker to end; one that does not end by itself is killed."""
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(_STOP_SECONDS):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            proc.kill()
            await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise

    async def _read(self, w: _Worker, proc: asyncio.subprocess.Process,
                    reader: asyncio.StreamReader) -> None:
        while (frame := await frames.read(reader)) is not None:
            if frame[0] == "b":
                _, token, cols = frame
                samples = frames.samples_of(cols)
                await self._out.put(SampleBatch(samples, self._acker(w, proc, token)))
            elif frame[0] == "h":
                w.health = frames.health_from(frame[1:])
            else:
                raise frames.FrameError(f"unknown frame kind {frame[0]!r}")

    def _acker(self, w: _Worker, proc: asyncio.subprocess.Process,
               token: int) -> Callable[[], None]:
        """Sends `token` back to the worker incarnation that sent it (idempotent, any thread).
        An ack owed to a worker that has since died is dropped: the broker redelivers."""
        message = frames.encode(token)

        def ack() -> None:
            stdin = proc.stdin
            if w.proc is proc and proc.returncode is None and stdin is not None \
                    and not stdin.is_closing():
                stdin.write(message)

        return once_on_loop(lambda: self._loop, self._loop_thread, ack)
