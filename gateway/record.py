"""`plantbridge record`: capture live samples from the configured sources to a recording.

An output named `*.pbrec` gets the compact columnar format (rules.pbrec.RecordingWriter,
21 bytes a sample), `*.csv` CSV, and any other name JSON lines, one {asset, signal, value,
quality, ts, device_ts} per line: `ts` is the time rules saw (gateway time base), `device_ts` the
device's own time as it said it (null or empty when it gave none; `.pbrec` keeps only `ts`).
Either way what was received is handed to the operating system every few seconds, so a power
loss costs little, and the recording is closed cleanly when the duration ends or on Ctrl-C
(SIGINT) or SIGTERM, which end the recording early instead of aborting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import time
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from drivers.modbus.config import ModbusSourceConfig, Transport
from drivers.mqtt.config import MqttSourceConfig, SessionMode
from gateway.config import PlantBridgeConfig, SourceConfig
from gateway.model import Sample, Source
from gateway.valid_range import build_source
from rules.pbrec import RecordingWriter

FLUSH_SECONDS = 5.0


class _Output(Protocol):
    def write(self, sample: Sample) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _JsonLines:
    def __init__(self, path: Path) -> None:
        self._file: IO[bytes] = path.open("wb")

    def write(self, s: Sample) -> None:
        self._file.write(orjson.dumps({"asset": s.asset, "signal": s.signal, "value": s.value,
                                       "quality": s.quality.name, "ts": s.source_ts,
                                       "device_ts": s.device_ts}) + b"\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _Csv:
    """asset,signal,value,quality,ts,device_ts; empty value or device_ts when there is none
    (what read_csv reads)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._out = csv.writer(self._file)
        self._out.writerow(("asset", "signal", "value", "quality", "ts", "device_ts"))

    def write(self, s: Sample) -> None:
        self._out.writerow((s.asset, s.signal, "" if s.value is None else repr(s.value),
                            s.quality.name, repr(s.source_ts),
                            "" if s.device_ts is None else repr(s.device_ts)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def open_output(path: Path) -> _Output:
    """A `.pbrec` writer or CSV for those suffixes, JSON lines otherwise."""
    suffix = path.suffix.lower()
    if suffix == ".pbrec":
        return RecordingWriter(path)
    if suffix == ".csv":
        return _Csv(path)
    return _JsonLines(path)


class NothingToRecord(ValueError):
    """The chosen sources do not exist or cannot be recorded beside the gateway."""


def choose(cfg: PlantBridgeConfig, names: list[str] | None) -> tuple[list[SourceConfig],
                                                                     list[str]]:
    """The sources to record, and a note per source left out.

    A serial Modbus line takes one master: a second process on it garbles the gateway's frames
    (bad-quality samples, maybe false maintenance requests). It is recorded only when named,
    which a technician does with the gateway stopped.
    """
    known = {s.name for s in cfg.sources}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise NothingToRecord(f"no source named {', '.join(unknown)}; the config has "
                              f"{', '.join(sorted(known)) or 'none'}")
    chosen: list[SourceConfig] = []
    notes: list[str] = []
    for s in cfg.sources:
        if names is not None:
            if s.name in names:
                chosen.append(s)
        elif isinstance(s, ModbusSourceConfig) and s.transport is Transport.RTU:
            port = s.serial.port if s.serial is not None else "?"
            notes.append(f"left out source {s.name!r} (Modbus RTU on {port}): a serial line "
                         f"takes one master, the gateway; stop the gateway and name it with "
                         f"--source {s.name} to record it")
        else:
            chosen.append(s)
    if not chosen:
        raise NothingToRecord("; ".join(["nothing to record", *notes]))
    return chosen, notes


def listener(source: SourceConfig) -> SourceConfig:
    """The source as a bystander of the running gateway. An MQTT source gets its own client id
    and a clean session: with the gateway's id the broker would disconnect the gateway, and a
    persistent session would take over (and acknowledge) messages queued for it."""
    if isinstance(source, MqttSourceConfig):
        own = f"{source.effective_client_id}-record-{os.getpid()}"
        return source.model_copy(update={"client_id": own, "session": SessionMode.CLEAN})
    return source


async def record(chosen: list[SourceConfig], output: Path, duration_seconds: float) -> int:
    """Record every sample of the chosen sources until the duration ends, beside a running
    gateway (see `choose`)."""
    # as the gateway builds them: a reading outside its valid range is recorded as bad data,
    # so a replay of the recording agrees with what the rules saw live
    sources = [build_source(listener(s)) for s in chosen]
    out = open_output(output)
    count = 0
    flushed = time.monotonic()

    async def pump(src: Source) -> None:
        nonlocal count, flushed
        async with src:
            async for batch in src.batches():
                for s in batch.samples:
                    out.write(s)
                count += len(batch.samples)
                if batch.ack is not None:
                    batch.ack()
                if time.monotonic() - flushed >= FLUSH_SECONDS:
                    out.flush()
                    flushed = time.monotonic()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)  # only on the main thread, not on Windows
            handled.append(sig)
    try:
        pumps = asyncio.gather(*(pump(s) for s in sources))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            either: set[asyncio.Future[Any]] = {pumps, stopped}
            await asyncio.wait(either, timeout=duration_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            pumps.cancel()
            stopped.cancel()
            outcome = (await asyncio.gather(pumps, stopped, return_exceptions=True))[0]
        if isinstance(outcome, Exception):
            raise outcome
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        out.close()
    return count
