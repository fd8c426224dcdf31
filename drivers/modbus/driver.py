"""The Modbus source: one connection, one poll task per device, samples out as batches.

    async with ModbusSourceConfig(...).build() as source:
        async for batch in source.batches():
            ...

Each device runs on its own absolute deadlines (`loop.time()`), so timing never drifts; a cycle
that could not start on time is skipped and counted, not queued. Requests share the line one
at a time (a serial line allows no more), and a device that keeps failing is polled with
backoff so that its timeouts cost the others as little line time as possible. Failures turn
into BAD samples for the points concerned, counted by reason; the first failure and the
recovery of a device are logged once each.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

from drivers.modbus.codec import BlockDecoder, Field, decode_bits
from drivers.modbus.config import Device, ModbusSourceConfig, Point
from drivers.modbus.link import Link, LinkDown, NoResponse, ReadError, quiet_pymodbus
from drivers.modbus.planner import Read, plan_source
from gateway.backoff import Backoff
from gateway.model import Quality, Sample, SampleBatch, SourceHealth, SourceState
from gateway.timebase import gateway_now

log = logging.getLogger(__name__)


class DeviceState(enum.StrEnum):
    OK = "ok"
    FAILING = "failing"  # failed its last poll(s), still polled on schedule
    DEGRADED = "degraded"  # kept failing: polled with backoff until it answers


@dataclass(slots=True)
class DeviceStats:
    polls: int = 0
    failed_polls: int = 0
    skipped_cycles: int = 0
    samples: int = 0
    state: DeviceState = DeviceState.OK
    last_error: str = ""


class _Block:
    """How one read's answer turns into values: built once per plan, shared by every device
    that polls the same map (100 devices of one 1,000-point map keep one decoder, not 100)."""

    __slots__ = ("assets", "decode", "read", "signals")

    def __init__(self, read: Read, points: Sequence[Point]) -> None:
        self.read = read
        self.decode: Callable[[Any], list[float | None]]
        members = [points[i] for i in read.points]
        self.signals = tuple(p.signal for p in members)
        self.assets = tuple(p.asset for p in members)  # a point's own asset, or None
        if read.table.is_bits:
            offsets = read.offsets
            scales = [(p.scale, p.offset) for p in members]
            self.decode = partial(decode_bits, offsets=offsets,
                                  scales=None if all(s == (1.0, 0.0) for s in scales) else scales)
        else:
            decoder = BlockDecoder([Field(o, p.type, p.byte_order, p.word_order, p.bit, p.scale,
                                          p.offset) for o, p in zip(read.offsets, members,
                                                                     strict=True)])
            self.decode = decoder.decode


class _Compiled:
    """One read of one device, ready to turn an answer into samples: the shared `_Block` and
    the device's asset (one string, or one per point where points name their own)."""

    __slots__ = ("asset", "assets", "decode", "read", "signals")

    def __init__(self, block: _Block, asset: str | None) -> None:
        self.read = block.read
        self.decode = block.decode
        self.signals = block.signals
        self.asset = asset or ""
        self.assets: tuple[str, ...] | None = None  # only when some point has its own asset
        if any(a is not None for a in block.assets):
            self.assets = tuple(a or self.asset for a in block.assets)

    def samples(self, raw: Sequence[int] | Sequence[bool], ts: float) -> tuple[list[Sample], int]:
        """One sample per point, and how many of them are NaN readings (BAD, no value)."""
        good, bad, make, cls = Quality.GOOD, Quality.BAD, _make_tuple, Sample
        values = self.decode(raw)
        if self.assets is None:
            a = self.asset
            return ([make(cls, (a, s, v, good if v is not None else bad, ts, None))
                     for s, v in zip(self.signals, values, strict=True)], values.count(None))
        return ([make(cls, (a, s, v, good if v is not None else bad, ts, None))
                 for a, s, v in zip(self.assets, self.signals, values, strict=True)],
                values.count(None))

    def bad(self, ts: float) -> list[Sample]:
        assets = self.assets or (self.asset,) * len(self.signals)
        return [new_sample(a, s, None, Quality.BAD, ts)
                for a, s in zip(assets, self.signals, strict=True)]


def _compile(config: ModbusSourceConfig, plans: dict[int, list[Read]]
             ) -> dict[int, list[_Compiled]]:
    """unit id -> its compiled reads. Devices whose plan is the same list (`plan_source` shares
    one per map) share its `_Block`s: decoders are per map, not per device."""
    blocks: dict[int, list[_Block]] = {}  # id(plan) -> its blocks; the plans outlive this
    out: dict[int, list[_Compiled]] = {}
    for dev in config.devices:
        plan = plans[dev.unit_id]
        if id(plan) not in blocks:
            points = config.points_of(dev)
            blocks[id(plan)] = [_Block(r, points) for r in plan]
        out[dev.unit_id] = [_Compiled(b, dev.asset) for b in blocks[id(plan)]]
    return out


new_sample = Sample  # a NamedTuple (gateway/model.py)
# `Sample(...)` without the named tuple's Python-level `__new__`, for the blocks of a poll
# (every field given, device time None): 142 against 246 ns a sample (timeit, 1,000-point
# blocks), about 1 % of a core at 100,000 points a second. The same object in every way.
_make_tuple = tuple.__new__


class ModbusSource:
    """A streaming `Source` over one Modbus connection. Expected faults never escape."""

    def __init__(self, config: ModbusSourceConfig) -> None:
        self.name = config.name
        self._cfg = config
        self._plans = plan_source(config)
        self._compiled = _compile(config, self._plans)
        self._links: list[Link] = []
        self._link_of: dict[int, Link] = {}  # unit id -> its connection
        self._out: asyncio.Queue[SampleBatch | None] = asyncio.Queue(config.batch_queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = {d.unit_id: DeviceStats() for d in config.devices}
        self._rejected: collections.Counter[str] = collections.Counter()
        self._samples_total = 0
        self._state, self._detail, self._since = SourceState.STOPPED, "", time.time()
        self._stopping = False
        self._crash: BaseException | None = None

    # --- Source protocol ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        quiet_pymodbus()
        self._stopping, self._crash = False, None
        n_links = self._cfg.connections
        self._links = [Link(self._cfg, self._cfg.devices[i::n_links]) for i in range(n_links)]
        self._link_of = {d.unit_id: self._links[i % n_links]
                         for i, d in enumerate(self._cfg.devices)}
        self._set_state(SourceState.CONNECTING, self._where())
        n = len(self._cfg.devices)
        spread = min(1.0, min(d.poll_interval_ms for d in self._cfg.devices) / 1000.0)
        for i, dev in enumerate(self._cfg.devices):
            # Spread first polls (over at most a second) so devices do not start in a pile.
            stagger = i * spread / n
            task = asyncio.create_task(self._poll_device(dev, stagger),
                                       name=f"modbus:{self.name}:{dev.unit_id}")
            task.add_done_callback(self._poll_task_done)
            self._tasks.append(task)
        return self

    def _poll_task_done(self, task: asyncio.Task[None]) -> None:
        """A poll task only ends on stop; if one dies of a bug, say so and end `batches()`."""
        if task.cancelled() or task.exception() is None or self._crash is not None:
            return
        self._crash = task.exception()
        log.error("modbus %s: %s died", self.name, task.get_name(), exc_info=self._crash)
        self._set_state(SourceState.FAILED, f"{task.get_name()} died: {self._crash!r}")
        if self._out.full():
            self._out.get_nowait()
        self._out.put_nowait(None)

    async def __aexit__(self, *exc: object) -> None:
        # Cancel until done: on Python 3.11 pymodbus's `wait_for` can swallow a cancellation
        # that lands as the answer arrives, and the poll loop would carry on.
        self._stopping = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.5)
        self._tasks.clear()
        for link in self._links:
            link.close()
        self._links, self._link_of = [], {}
        self._set_state(SourceState.STOPPED, "")
        if self._out.full():
            self._out.get_nowait()
        self._out.put_nowait(None)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        while True:
            batch = await self._out.get()
            if batch is None:
                if self._crash is not None:
                    raise RuntimeError(f"modbus source {self.name} failed") from self._crash
                return
            yield batch

    def health(self) -> SourceHealth:
        return SourceHealth(self._state, self._detail, self._since, self._samples_total,
                            dict(self._rejected))

    # --- observable facts for tests, status pages, benchmarks ----------------------------

    def device_stats(self) -> dict[int, DeviceStats]:
        """A snapshot per unit id."""
        return {unit: dataclasses.replace(s) for unit, s in self._stats.items()}

    @property
    def requests(self) -> int:
        """Requests sent since start (all devices)."""
        return sum(link.requests for link in self._links)

    @property
    def connects(self) -> int:
        """Successful connects since start (all connections)."""
        return sum(link.connects for link in self._links)

    def requests_per_cycle(self) -> dict[int, int]:
        return {unit: len(reads) for unit, reads in self._plans.items()}

    # --- polling -------------------------------------------------------------------------

    async def _poll_device(self, dev: Device, stagger: float) -> None:
        loop = asyncio.get_running_loop()
        interval = dev.poll_interval_ms / 1000.0
        stats = self._stats[dev.unit_id]
        backoff = Backoff(interval, max(dev.backoff_max_seconds, interval))
        failures = 0
        down_since = 0.0
        deadline = loop.time() + stagger
        while not self._stopping:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            samples, error, link_down = await self._poll_once(dev)
            stats.polls += 1
            stats.samples += len(samples)
            self._samples_total += len(samples)
            if samples:
                await self._out.put(SampleBatch(samples))
            if error is None:
                if failures:
                    log.info("modbus %s unit %d (%s) answers again after %d failed polls"
                             " (%.1f s)", self.name, dev.unit_id, dev.asset or "-", failures,
                             time.monotonic() - down_since)
                    failures = 0
                    backoff.reset()
                    deadline = loop.time()  # back on a fresh grid at once
                if stats.state is not DeviceState.OK:
                    stats.state, stats.last_error = DeviceState.OK, ""
                    self._refresh_state()
            elif link_down:
                # Not the device's fault: the link logs and backs off its reconnects, and the
                # device stays on its grid so it answers as soon as the link is back.
                stats.failed_polls += 1
                stats.state, stats.last_error = DeviceState.FAILING, error
            else:
                stats.failed_polls += 1
                stats.last_error = error
                failures += 1
                if failures == 1:
                    down_since = time.monotonic()
                    log.warning("modbus %s unit %d (%s) failed: %s; its points are BAD until"
                                " it answers", self.name, dev.unit_id, dev.asset or "-", error)
                if failures >= dev.failures_before_backoff:
                    stats.state = DeviceState.DEGRADED
                    deadline = loop.time() + backoff.next_delay()
                    self._refresh_state()
                    continue
                stats.state = DeviceState.FAILING
                self._refresh_state()
            deadline += interval
            late = loop.time() - deadline
            if late >= 0:
                missed = int(late // interval) + 1
                stats.skipped_cycles += missed
                deadline += missed * interval

    async def _poll_once(self, dev: Device) -> tuple[list[Sample], str | None, bool]:
        """All reads of one device: its samples, the error when nothing answered, and whether
        that was because the link is down."""
        link = self._link_of[dev.unit_id]
        samples: list[Sample] = []
        answered = False
        error: str | None = None
        giving_up = link_down = False
        for comp in self._compiled[dev.unit_id]:
            r = comp.read
            if giving_up:  # the device (or link) is silent: spare the line this cycle
                samples += comp.bad(gateway_now())
                continue
            for attempt in range(dev.retries + 1):
                try:
                    raw = await link.read(dev.unit_id, r.table, r.start, r.count,
                                          dev.timeout_seconds)
                except ReadError as exc:
                    error = str(exc)
                    if isinstance(exc, LinkDown) or attempt == dev.retries:
                        self._rejected[exc.reason] += 1
                        samples += comp.bad(gateway_now())
                        giving_up = isinstance(exc, (LinkDown, NoResponse))
                        if isinstance(exc, LinkDown):
                            link_down = True
                            self._refresh_state()
                        break
                    continue
                answered = True
                got, nan = comp.samples(raw, gateway_now())
                samples += got
                if nan:
                    self._rejected["nan"] += nan
                break
        if answered and self._state in (SourceState.CONNECTING, SourceState.RECONNECTING):
            self._refresh_state()
        if answered:
            return samples, None, False
        return samples, error or "no answer", link_down

    # --- health --------------------------------------------------------------------------

    def _where(self) -> str:
        cfg = self._cfg
        if cfg.serial is not None and cfg.host is None:
            return f"{cfg.transport} {cfg.serial.port}"
        return f"{cfg.transport} {cfg.host}:{cfg.port}"

    def _refresh_state(self) -> None:
        if not self._links:
            return
        down = [link for link in self._links if not link.connected]
        if len(down) == len(self._links):
            state = (SourceState.RECONNECTING if any(k.ever_connected for k in down)
                     else SourceState.CONNECTING)
            self._set_state(state, f"{self._where()}: {down[0].last_error or 'not connected'}")
            return
        failing = [f"connection {self._links.index(k) + 1} of {len(self._links)}: "
                   f"{k.last_error or 'not connected'}" for k in down]
        failing += [f"unit {u}: {s.state} ({s.last_error})" for u, s in self._stats.items()
                    if s.state is not DeviceState.OK]
        if failing:
            self._set_state(SourceState.DEGRADED, "; ".join(failing))
        else:
            self._set_state(SourceState.CONNECTED, self._where())

    def _set_state(self, state: SourceState, detail: str) -> None:
        if self._state is SourceState.FAILED and state is not SourceState.STOPPED:
            return  # a poll task died: stay FAILED until stopped
        if state is not self._state:
            self._since = time.time()
        self._state, self._detail = state, detail
