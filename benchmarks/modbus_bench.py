"""Modbus source throughput: points decoded and evaluated (rule engine) per second at 1 s and
100 ms polls, 10k and 100k points, against the plant simulator running in its own process (so
its CPU is not ours).

Each case runs in a fresh subprocess so its peak RSS is its own. Reported per case: requests
per cycle (the coalesced plan), cycles done vs due and skipped, points/s delivered as Samples,
driver CPU (% of one core) and peak RSS, simulator CPU. A decode-only figure (no sockets) gives
the driver's own ceiling. Ours and the bare client run on the daemon's event loop and collector
(gateway/cli_base.py `run_async`: uvloop, `tune_gc`); `--loop asyncio` runs both on plain
asyncio at Python's collector thresholds instead.

    .venv/bin/python benchmarks/modbus_bench.py                 # all four cases, ~40 s
    .venv/bin/python benchmarks/modbus_bench.py --seconds 10 --points 100000 --interval-ms 100
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drivers.modbus.config import ModbusSourceConfig  # noqa: E402
from drivers.modbus.driver import ModbusSource, _compile  # noqa: E402
from gateway.cli_base import run_async  # noqa: E402
from rules import RuleEngine, load_rule_files  # noqa: E402

T = TypeVar("T")
POINTS_PER_DEVICE = 1000
# Every sample goes through the rule engine, as in the daemon: a debounced threshold on one
# point per device, the other points are lookups that find no rule.
RULES = """
[[rule]]
id = "p1-high"
kind = "threshold"
asset_pattern = "*"
signal = "p1"
above = 60000
clear_below = 50000
on_delay_seconds = 2
"""
# 4 points in 6 registers: float32 ABCD, uint16, int32 CDAB, int16 scaled.
PATTERN: list[tuple[str, int, dict[str, Any]]] = [
    ("float32", 2, {}), ("uint16", 1, {}), ("int32", 2, {"word_order": "little"}),
    ("int16", 1, {"scale": 0.1})]


def device_map(points: int) -> tuple[dict[str, Any], int]:
    out, address = [], 0
    for i in range(points):
        dtype, width, extra = PATTERN[i % len(PATTERN)]
        out.append({"signal": f"p{i}", "table": "holding", "address": address, "type": dtype,
                    **extra})
        address += width
    return {"points": out}, address


def configs(port: int, total_points: int, interval_ms: int,
            devices_per_connection: int = 10) -> tuple[list[ModbusSourceConfig], int]:
    """Sources of `devices_per_connection` devices each (one connection per source, as one
    source per Modbus gateway), `POINTS_PER_DEVICE` points per device."""
    units = max(1, total_points // POINTS_PER_DEVICE)
    regmap, registers = device_map(min(total_points, POINTS_PER_DEVICE))
    out = []
    for first in range(0, units, devices_per_connection):
        out.append(ModbusSourceConfig.model_validate({
            "name": f"bench-{first}", "host": "127.0.0.1", "port": port, "max_gap_registers": 0,
            "batch_queue_size": 4096, "maps": {"load": regmap},
            "devices": [{"unit_id": 10 + i, "asset": f"dev-{i}", "map": "load",
                         "poll_interval_ms": interval_ms, "timeout_seconds": 2.0}
                        for i in range(first, min(units, first + devices_per_connection))]}))
    return out, registers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(total_points: int, interval_ms: int, seconds: float,
             ceiling: bool = True, loop: str = "daemon") -> dict[str, Any]:
    """Our source (+ the rule engine) against the simulator, then, with `ceiling`, the bare
    pymodbus client doing the same reads against the same simulator process. `loop`: "daemon"
    (uvloop and the daemon's collector thresholds, as `plantbridge run`) or "asyncio"."""
    run: Callable[[Coroutine[Any, Any, T]], T] = run_async if loop == "daemon" else asyncio.run
    port = free_port()
    cfgs, registers = configs(port, total_points, interval_ms)
    units = sum(len(c.devices) for c in cfgs)
    sim = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus_plant", "--port", str(port),
         "--load-units", str(units), "--load-registers", str(registers)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "modbus plant ... on host:port": it listens
        # The ceiling first: it also warms the simulator up, which otherwise answers slowly
        # for its first seconds and made our cycles late (and the comparison unfair).
        bare = run(measure_bare(cfgs, seconds)) if ceiling else {}
        result = run(measure(cfgs, sim.pid, seconds))
        result.update({f"bare_{k}": v for k, v in bare.items()})
    finally:
        sim.terminate()
        sim.wait(5)
    return {"points": total_points, "interval_ms": interval_ms, "devices": units,
            "connections": len(cfgs), **result,
            "target_points_per_s": round(total_points * 1000 / interval_ms),
            "device_polls_due": round(units * seconds * 1000 / interval_ms)}


async def measure(cfgs: list[ModbusSourceConfig], sim_pid: int,
                  seconds: float) -> dict[str, Any]:
    samples = 0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.toml").write_text(RULES)
        engine = RuleEngine(load_rule_files([Path(tmp) / "bench.toml"]))
    evaluate = engine.evaluate

    async def consume(source: ModbusSource) -> None:
        nonlocal samples
        async for batch in source.batches():
            for sample in batch.samples:
                evaluate(sample)
            samples += len(batch.samples)

    sources = [ModbusSource(c) for c in cfgs]
    async with contextlib.AsyncExitStack() as stack:
        for source in sources:
            await stack.enter_async_context(source)
        tasks = [asyncio.create_task(consume(s)) for s in sources]
        await asyncio.sleep(min(2.0, seconds / 3))  # warm-up: connect, first cycles
        s0, cpu0, sim0 = samples, time.process_time(), proc_cpu_seconds(sim_pid)
        polls0 = sum(st.polls for s in sources for st in s.device_stats().values())
        skipped0 = sum(st.skipped_cycles for s in sources for st in s.device_stats().values())
        r0 = sum(s.requests for s in sources)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        got = samples - s0
        cpu = time.process_time() - cpu0
        sim_cpu = proc_cpu_seconds(sim_pid) - sim0
        stats = [st for s in sources for st in s.device_stats().values()]
        polls = sum(st.polls for st in stats) - polls0
        requests = sum(s.requests for s in sources) - r0
        rejected: collections.Counter[str] = collections.Counter()
        for s in sources:
            rejected.update(s.health().rejected)
        for task in tasks:
            task.cancel()
    per_cycle = sum(sum(s.requests_per_cycle().values()) for s in sources)
    return {"requests_per_cycle": per_cycle, "points_per_s": round(got / elapsed),
            "device_polls_done": polls,
            "skipped_cycles": sum(st.skipped_cycles for st in stats) - skipped0,  # in the window
            "requests_per_s": round(requests / elapsed),
            "driver_cpu_pct": round(100 * cpu / elapsed, 1),
            # per point: comparable across runs even when a loaded box skipped cycles
            "driver_cpu_us_per_point": round(1e6 * cpu / max(got, 1), 2),
            "sim_cpu_pct": round(100 * sim_cpu / elapsed, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rejected": dict(rejected)}


async def measure_bare(cfgs: list[ModbusSourceConfig], seconds: float) -> dict[str, Any]:
    """The ceiling: bare pymodbus, the same connections and the same planned reads (one after
    the other per connection, as our link does), on the same absolute 1 s grid, registers
    received and dropped: no decoding, no samples, no rules."""
    from pymodbus.client import AsyncModbusTcpClient

    from drivers.modbus.link import quiet_pymodbus
    from drivers.modbus.planner import plan_source

    quiet_pymodbus()
    reads = polls = late = 0

    async def connection(cfg: ModbusSourceConfig) -> None:
        nonlocal reads, polls, late
        assert cfg.host is not None
        client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=5, retries=0,
                                      reconnect_delay=0)
        plans = plan_source(cfg)
        work = [(d.unit_id, [(r.start, r.count) for r in plans[d.unit_id]])
                for d in cfg.devices]
        interval = cfg.devices[0].poll_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        try:
            await client.connect()
            deadline = loop.time()
            while True:
                for unit, blocks in work:
                    for start, count in blocks:
                        rr = await client.read_holding_registers(start, count=count,
                                                                 device_id=unit)
                        if rr.isError() or len(rr.registers) < count:
                            raise RuntimeError(f"bare read failed: {rr}")
                        reads += 1
                    polls += 1
                deadline += interval
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late += 1
        finally:
            client.close()

    tasks = [asyncio.create_task(connection(c)) for c in cfgs]
    try:
        await asyncio.sleep(min(2.0, seconds / 3))
        r0, p0, late0, cpu0, t0 = reads, polls, late, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        done, got, lag = polls - p0, reads - r0, late - late0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:  # a failed read is a broken benchmark, not a figure
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError("bare client failed") from task.exception()
    points = got * sum(len(c.points_of(d)) for c in cfgs for d in c.devices) / max(
        1, sum(len(p) for c in cfgs for p in plan_source(c).values()))
    return {"cpu_pct": round(100 * cpu / elapsed, 1), "requests_per_s": round(got / elapsed),
            "cpu_us_per_point": round(1e6 * cpu / max(points, 1), 2),
            "device_polls_done": done, "late_cycles": lag}


def decode_only(total_points: int, rounds: int = 5) -> dict[str, Any]:
    """Registers to Samples with no I/O: the driver's own ceiling on one core."""
    cfgs, registers = configs(1, total_points, 1000)
    cfg = cfgs[0]
    dev = cfg.devices[0]
    from drivers.modbus.planner import plan_source

    compiled = _compile(cfg, plan_source(cfg))[dev.unit_id]
    blocks = [[(a * 7) & 0xFFFF for a in range(c.read.count)] for c in compiled]
    units = sum(len(c.devices) for c in cfgs)
    t0 = time.process_time()
    n = 0
    for _ in range(rounds):
        for _unit in range(units):
            for comp, regs in zip(compiled, blocks, strict=True):
                n += len(comp.samples(regs, 0.0)[0])
    cpu = time.process_time() - t0
    return {"decode_only_points": n, "points_per_cpu_second": round(n / cpu),
            "registers": registers}


def rows(quick: bool) -> list[Any]:
    """The suite's row (`python -m benchmarks --only modbus`): 100,000 points at a 1 s poll
    (1,000 with `quick`): every cycle on time, and the driver's share of one core."""
    from benchmarks.rows import Row

    points, seconds = (1_000, 2.0) if quick else (100_000, 10.0)
    r = run_case(points, 1000, seconds)
    on_time = r["skipped_cycles"] == 0 and r["device_polls_done"] >= 0.95 * r["device_polls_due"]
    return [Row(f"Modbus, {points:,} points at 1 s", r["driver_cpu_pct"], "% of a core",
                "every cycle on time, < 30 %", on_time and r["driver_cpu_pct"] < 30,
                r["bare_cpu_pct"],
                f"{r['points_per_s']:,} points/s; polls {r['device_polls_done']}/"
                f"{r['device_polls_due']}, skipped {r['skipped_cycles']}; ceiling = bare "
                f"pymodbus, same {r['requests_per_cycle']} reads/cycle "
                f"({r['bare_requests_per_s']:,} requests/s, polls "
                f"{r['bare_device_polls_done']}, late cycles {r['bare_late_cycles']}); ratio = "
                f"our CPU / bare CPU; CPU per point {r['driver_cpu_us_per_point']} us, bare "
                f"{r['bare_cpu_us_per_point']} us", r["peak_rss_mb"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int)
    p.add_argument("--interval-ms", type=int)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--loop", choices=["daemon", "asyncio"], default="daemon")
    args = p.parse_args()
    if args.points and args.interval_ms:
        print(json.dumps(run_case(args.points, args.interval_ms, args.seconds,
                                  loop=args.loop)))
        return
    print(json.dumps(decode_only(100_000)), flush=True)
    for points in (10_000, 100_000):
        for interval in (1000, 100):
            cmd = [sys.executable, __file__, "--points", str(points), "--interval-ms",
                   str(interval), "--seconds", str(args.seconds), "--loop", args.loop]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
