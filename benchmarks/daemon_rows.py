"""Rows of the whole daemon: RSS at rest, start -> READY, end-to-end latency (the drain's
rows are benchmarks/drain_bench.py).

    .venv/bin/python -m benchmarks --only rss --only ready --only e2e

The daemon runs as `python -m gateway.cli run` in a subprocess, on loopback, next to a real
Mosquitto, the CMMS simulator (in this process) and, for the configured-points rows, the
Modbus plant simulator (its own process). READY is systemd's: the benchmark binds a datagram
socket and hands it to the daemon as NOTIFY_SOCKET, exactly as systemd would, so start -> READY
is measured from the spawn to the datagram, interpreter start-up included. RSS is VmRSS from
/proc/PID/status once the daemon is READY and has idled for a moment.

The daemon runs from compiled bytecode, as an installed gateway does (pip compiles it at
install, and a first run writes it). A checkout run with PYTHONDONTWRITEBYTECODE=1 would
otherwise compile every module of ours at each spawn: about 1 MB more RSS and a slower start,
which no deployed gateway pays. `compile_project()` writes the `__pycache__` files first.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from benchmarks.modbus_bench import RULES as MODBUS_RULES
from benchmarks.modbus_bench import device_map
from benchmarks.rows import Row
from simulators.cmms import CmmsSimulator
from tests.e2e.stack import API_KEY, Stack, vibration_rule
from tests.harness import Mosquitto, free_port, running_mosquitto, wait_for

ROOT = Path(__file__).resolve().parents[1]
POINTS_PER_DEVICE = 1000
PACKAGES = ("gateway", "drivers", "buffer", "rules")  # what the daemon imports of ours


def compile_project() -> None:
    """Bytecode for our packages, as an installed gateway has it (see the module docstring);
    third-party packages and the standard library come compiled with their install."""
    for package in PACKAGES:
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise RuntimeError(f"cannot compile {package}")


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    """Broker, CMMS simulator and a `Stack` to write configs and spawn the daemon with."""
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp)) as broker:
        sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
        await sim.start()
        s = Stack(Path(tmp), broker, sim)
        try:
            yield s
        finally:
            s.close()
            if s.proc is not None and s.proc.poll() is None:
                s.proc.terminate()
                try:
                    s.proc.wait(20)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()
            await sim.stop()


def modbus_source(port: int, points: int) -> str:
    """Sources of 10 devices x 1,000 points each (one connection per source, as one source per
    Modbus gateway), polled every second: `points` configured points in all."""
    regmap = device_map(min(points, POINTS_PER_DEVICE))[0]["points"]
    lines = []
    for p in regmap:
        extra = "".join(f", {k} = {v!r}" if isinstance(v, str) else f", {k} = {v}"
                        for k, v in p.items() if k not in ("signal", "table", "address", "type"))
        lines.append(f'  {{ signal = "{p["signal"]}", table = "{p["table"]}", '
                     f'address = {p["address"]}, type = "{p["type"]}"{extra} }},')
    points_toml = "\n".join(lines).replace("'", '"')
    units = max(1, points // POINTS_PER_DEVICE)
    out = []
    for first in range(0, units, 10):
        devices = "\n".join(
            f'[[sources.devices]]\nunit_id = {10 + i}\nasset = "dev-{i}"\nmap = "load"\n'
            f"poll_interval_ms = 1000\n" for i in range(first, min(units, first + 10)))
        out.append(f'[[sources]]\ntype = "modbus"\nname = "bench-{first}"\nhost = "127.0.0.1"\n'
                   f"port = {port}\nmax_gap_registers = 0\nbatch_queue_size = 4096\n"
                   f"[sources.maps.load]\npoints = [\n{points_toml}\n]\n{devices}")
    return "\n".join(out)


@contextlib.contextmanager
def modbus_plant(points: int) -> Iterator[int]:
    """The Modbus plant simulator with enough load units for `points`; yields its port."""
    port = free_port()
    registers = device_map(min(points, POINTS_PER_DEVICE))[1]
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus_plant", "--port", str(port),
         "--load-units", str(max(1, points // POINTS_PER_DEVICE)),
         "--load-registers", str(registers)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # its first line says it listens
        yield port
    finally:
        sim.terminate()
        sim.wait(10)


def vm_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a live process (VmRSS: now, VmHWM: its peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


async def spawn_ready(s: Stack, settle_seconds: float) -> tuple[float, float, float]:
    """Spawn the daemon on the config `s` wrote; (seconds to READY=1, VmRSS MB after
    `settle_seconds` more, its peak RSS so far)."""
    with tempfile.TemporaryDirectory() as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        path = str(Path(tmp) / "notify")
        notify.bind(path)
        notify.setblocking(False)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        with _notify_env(path):
            proc = s.spawn_daemon()
        try:
            async with asyncio.timeout(60):
                while True:
                    try:
                        got = await asyncio.wait_for(loop.sock_recv(notify, 4096), 0.5)
                    except TimeoutError:
                        if proc.poll() is not None:
                            raise RuntimeError(
                                f"daemon exited:\n{s.daemon_log()[-2000:]}") from None
                        continue
                    if b"READY=1" in got:
                        break
        except TimeoutError:
            raise RuntimeError(f"no READY within 60 s:\n{s.daemon_log()[-2000:]}") from None
        ready = time.perf_counter() - start
    await asyncio.sleep(settle_seconds)
    if proc.poll() is not None:
        raise RuntimeError(f"daemon exited:\n{s.daemon_log()[-2000:]}")
    return ready, vm_mb(proc.pid), vm_mb(proc.pid, "VmHWM")


@contextlib.contextmanager
def _notify_env(path: str) -> Iterator[None]:
    """`Stack.spawn_daemon` passes os.environ on: set NOTIFY_SOCKET for the spawn only."""
    import os

    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = old


async def _stop(s: Stack) -> None:
    if s.proc is not None and s.proc.poll() is None:
        await s.terminate()


async def _demo_like() -> tuple[float, float, float]:
    async with stack() as s:
        s.write_config(vibration_rule(0, 0))
        got = await spawn_ready(s, 2.0)
        await _stop(s)
        return got


async def _with_points(points: int, settle: float) -> tuple[float, float, float]:
    with modbus_plant(points) as port:
        async with stack() as s:
            s.write_config(MODBUS_RULES, source=modbus_source(port, points))
            got = await spawn_ready(s, settle)
            await _stop(s)
            return got


def rss(quick: bool) -> list[Row]:
    compile_project()
    _, idle, idle_peak = asyncio.run(_demo_like())
    points = 2_000 if quick else 100_000
    _, loaded, loaded_peak = asyncio.run(_with_points(points, 1.0 if quick else 5.0))
    return [Row("idle RSS (1 MQTT source, 1 REST upstream)", idle, "MB", "<= 60 MB", idle <= 60,
                None, "VmRSS 2 s after READY; `plantbridge run` subprocess, compiled bytecode",
                idle_peak),
            Row(f"RSS with {points:,} configured points (Modbus, polled)", loaded, "MB",
                "<= 150 MB", loaded <= 150, None, "VmRSS while polling every 1 s", loaded_peak)]


def ready(quick: bool) -> list[Row]:
    compile_project()
    points = 1_000 if quick else 10_000
    took, _, peak = asyncio.run(_with_points(points, 0.0))
    return [Row(f"start -> READY, {points:,} configured points", took, "s", "< 1.0 s",
                took < 1.0, None, "spawn to sd_notify READY=1, interpreter start included",
                peak)]


async def _latencies(trials: int) -> tuple[list[float], float]:
    async with stack() as s:
        http = free_port()
        s.write_config(vibration_rule(0, 0), http_port=http)
        s.spawn_daemon()
        await s.wait_subprocess_up(http)
        out = []
        for k in range(trials):
            before = len(s.sim.requests)
            start = time.perf_counter()
            await asyncio.to_thread(s.publish, f"pump-{k}", "vibration", 9.0)
            await wait_for(lambda: len(s.sim.requests) > before, 30,  # noqa: B023
                           "the CMMS request", interval=0.0005)
            out.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)
        assert s.proc is not None
        peak = vm_mb(s.proc.pid, "VmHWM")
        await _stop(s)
        return out, peak


def end_to_end(quick: bool) -> list[Row]:
    got, peak = asyncio.run(_latencies(5 if quick else 200))
    got.sort()
    p50 = statistics.median(got) * 1000
    p99 = got[min(len(got) - 1, round(0.99 * (len(got) - 1)))] * 1000
    return [Row("end to end sample -> CMMS request, p50", p50, "ms", "(p99 < 50 ms)", None, None,
                f"{len(got)} raises, no debounce, daemon subprocess", peak),
            Row("end to end sample -> CMMS request, p99", p99, "ms", "< 50 ms", p99 < 50, None,
                "publish (QoS 1) to the simulator's receipt of the request", peak)]


__all__ = ["Mosquitto", "end_to_end", "ready", "rss"]
