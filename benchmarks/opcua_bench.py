"""OPC UA throughput: notifications/s reaching a consumer through OpcUaSource vs a bare client.

    .venv/bin/python benchmarks/opcua_bench.py [--items 1000 10000] [--seconds 10] [--uvloop]

For each item count, the plant simulator runs in its own process with that many load
variables rewritten as fast as it can. Each measurement runs in a fresh child process (so
peak RSS is its own): `driver` counts samples from `OpcUaSource.batches()` after rule
evaluation (a threshold rule engine, as in the daemon); `raw` counts notifications from an
asyncua iterator-mode subscription with nothing else on top. The ratio is our overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncua import ua  # noqa: E402
from asyncua.client.client import Client  # noqa: E402
from asyncua.ua.attribute_ids import AttributeIds  # noqa: E402

from drivers.opcua.config import OpcUaSourceConfig  # noqa: E402
from rules import RuleEngine, load_rule_files  # noqa: E402

NS = "urn:plantbridge:sim"
PUBLISH_MS = 100.0
# Every driver sample goes through the rule engine, as in the daemon: a threshold on one signal
# per asset (load values only grow, so it raises once), the others are lookups finding no rule.
RULES = """
[[rule]]
id = "s0-high"
kind = "threshold"
asset_pattern = "*"
signal = "s0"
above = 1e12
clear_below = 1e11
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _measure(count: Any, ready: Any, seconds: float) -> dict[str, float]:
    """Wait until every item reported once, then count for `seconds`."""
    start = time.monotonic()
    while not ready():
        if time.monotonic() - start > 120:
            raise SystemExit("items did not all report within 120 s")
        await asyncio.sleep(0.1)
    warm = time.monotonic() - start
    c0, t0, cpu0 = count(), time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    n, dt, cpu = count() - c0, time.monotonic() - t0, time.process_time() - cpu0
    return {"rate": n / dt, "per_cpu_second": n / cpu if cpu else 0.0,
            "cpu_share": cpu / dt, "warmup_seconds": warm}


async def run_driver(endpoint: str, items: int, seconds: float) -> dict[str, float]:
    cfg = OpcUaSourceConfig.model_validate({
        "name": "bench", "endpoint": endpoint,
        "groups": {"default": {"publishing_interval_ms": PUBLISH_MS, "sampling_interval_ms": 0,
                               "queue_size": 1}},
        "nodes": [{"asset": f"a{i // 100}", "signal": f"s{i % 100}",
                   "node_id": f"nsu={NS};s=load.{i}"} for i in range(items)],
        "max_monitored_items_per_call": 1000, "keepalive_interval_seconds": 5.0,
        "request_timeout_seconds": 30.0,
    })
    seen: set[tuple[str, str]] = set()
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench.toml").write_text(RULES)
        evaluate = RuleEngine(load_rule_files([Path(tmp) / "bench.toml"])).evaluate

    async def consume() -> None:
        nonlocal total
        async for batch in source.batches():
            for sample in batch.samples:
                evaluate(sample)
            total += len(batch.samples)
            if len(seen) < items:
                seen.update((s.asset, s.signal) for s in batch.samples)

    async with cfg.build() as source:
        task = asyncio.create_task(consume())
        result = await _measure(lambda: total, lambda: len(seen) >= items, seconds)
        task.cancel()
        result["overflow"] = source.health().rejected.get("overflow", 0)
    return result


async def run_raw(endpoint: str, items: int, seconds: float) -> dict[str, float]:
    client = Client(endpoint, timeout=30)
    async with client:
        idx = await client.get_namespace_index(NS)
        sub = await client.create_subscription(PUBLISH_MS, None, queue_maxsize=0)
        for start in range(0, items, 1000):
            reqs = []
            for i in range(start, min(items, start + 1000)):
                params = ua.MonitoringParameters()
                params.ClientHandle = i + 1
                params.SamplingInterval = 0
                params.QueueSize = 1
                req = ua.MonitoredItemCreateRequest()
                req.ItemToMonitor = ua.ReadValueId(
                    NodeId=ua.NodeId(ua.String(f"load.{i}"), ua.Int16(idx)),
                    AttributeId=AttributeIds.Value)
                req.MonitoringMode = ua.MonitoringMode.Reporting
                req.RequestedParameters = params
                reqs.append(req)
            await sub.create_monitored_items(reqs)
        seen: set[int] = set()
        total = 0

        async def consume() -> None:
            nonlocal total
            async for ev in sub:
                total += 1
                if len(seen) < items:
                    seen.add(ev.data.monitored_item.ClientHandle)  # type: ignore[union-attr]

        task = asyncio.create_task(consume())
        result = await _measure(lambda: total, lambda: len(seen) >= items, seconds)
        task.cancel()
        await sub.delete()
    return result


def child(mode: str, endpoint: str, items: int, seconds: float, use_uvloop: bool) -> None:
    runner = run_driver if mode == "driver" else run_raw
    # Both with the collector as the daemon sets it (gateway/cli_base.py): asyncua's decoding
    # allocates so much that the default thresholds alone move the ratio by a quarter, and the
    # ratio is to show our work beside the library's, not a setting only one side has.
    from gateway.cli_base import tune_gc

    tune_gc()
    if use_uvloop:
        import uvloop

        result = uvloop.run(runner(endpoint, items, seconds))
    else:
        result = asyncio.run(runner(endpoint, items, seconds))
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)


def _start_simulator(port: int, items: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.opcua_plant", "--port", str(port),
         "--extra-variables", str(items), "--extra-interval-ms", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc


def measure(items: int, seconds: float, use_uvloop: bool = False) -> dict[str, dict[str, Any]]:
    """{"raw": ..., "driver": ...}: each mode in its own child against one simulator."""
    port = _free_port()
    sim = _start_simulator(port, items)
    endpoint = f"opc.tcp://127.0.0.1:{port}/plantbridge/"
    out: dict[str, dict[str, Any]] = {}
    try:
        for mode in ("raw", "driver"):
            cmd = [sys.executable, __file__, "--seconds", str(seconds),
                   "--child", mode, endpoint, str(items)]
            if use_uvloop:
                cmd.append("--uvloop")
            got = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 cwd=ROOT).stdout.strip().splitlines()[-1]
            out[mode] = json.loads(got)
    finally:
        sim.terminate()
        sim.wait(10)
    return out


def rows(quick: bool) -> list[Any]:
    """The suite's row (`python -m benchmarks --only opcua`): notifications per client
    CPU-second, ours vs the bare asyncua client, 10,000 items (100 with `quick`)."""
    from benchmarks.rows import Row

    items, seconds = (100, 2.0) if quick else (10_000, 10.0)
    got = measure(items, seconds)
    ours, raw = got["driver"], got["raw"]
    value, ceiling = ours["per_cpu_second"], raw["per_cpu_second"]
    return [Row(f"OPC UA, {items:,} items", value, "notif/CPU-s", ">= 0.8x bare asyncua",
                bool(ceiling) and value >= 0.8 * ceiling, ceiling,
                f"rate {ours['rate']:,.0f}/s vs bare {raw['rate']:,.0f}/s; "
                f"dropped {int(ours.get('overflow', 0))}; both with the daemon's collector "
                "thresholds", ours["peak_rss_mb"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[1000, 10_000])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--child", nargs=3, metavar=("MODE", "ENDPOINT", "ITEMS"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, endpoint, items = args.child
        child(mode, endpoint, int(items), args.seconds, args.uvloop)
        return
    print(f"OPC UA notifications/s reaching a consumer ({args.seconds:.0f} s per run, "
          f"publishing {PUBLISH_MS:.0f} ms, loop {'uvloop' if args.uvloop else 'asyncio'}, "
          f"{os.cpu_count()} CPUs, simulator in its own process)")
    print(f"{'items':>7} {'path':>7} {'notif/s':>10} {'per CPU-s':>10} {'CPU':>5} "
          f"{'peak RSS MB':>12} {'warm-up s':>10} {'dropped':>8}")
    for items in args.items:
        got = measure(items, args.seconds, args.uvloop)
        for mode, r in got.items():
            print(f"{items:>7} {mode:>7} {r['rate']:>10,.0f} {r['per_cpu_second']:>10,.0f} "
                  f"{r['cpu_share']:>5.0%} {r['peak_rss_mb']:>12.1f} "
                  f"{r['warmup_seconds']:>10.1f} {int(r.get('overflow', 0)):>8}", flush=True)
        rate = got["driver"]["rate"] / got["raw"]["rate"]
        per_cpu = got["driver"]["per_cpu_second"] / got["raw"]["per_cpu_second"]
        print(f"{items:>7} driver/raw: rate {rate:.2f}, per CPU-second {per_cpu:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
