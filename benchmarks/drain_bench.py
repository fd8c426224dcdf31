"""Backlog drain to the CMMS simulator, and what a fresh critical raise waits meanwhile.

    .venv/bin/python benchmarks/drain_bench.py [--records 100000] [--raises 50]
        [--in-flight 64] [--synchronous full|normal] [--loop uvloop|asyncio]
    .venv/bin/python -m benchmarks --only drain       # the same, as rows of the suite

A backlog of `--records` maintenance requests (one episode each) is committed to a fresh outbox;
the real forwarder and REST sink drain it to the CMMS simulator running in a process of its own.
During the drain `--raises` critical raises (severity 1) are committed one at a time, evenly
spread, each followed by the wake a commit gives the forwarder; the latency of each is from its
commit returning to the simulator's 201 reaching the sink. Prints figures; asserts nothing.
The gateway logs as the daemon does (gateway/logs.py, INFO, text) to a file, so the one line
per accepted request is paid for here too; the bench counts those lines.
The drain is bounded by `--deadline` seconds: a drain that does not finish in time still
gives its figures (over what was delivered) and says so.
Everything (gateway, bare client, simulator) runs on `--loop`: uvloop by default, as the
daemon does (gateway/cli.py), and with the daemon's collector thresholds
(gateway/collector.py).
Target (issue 14): >= 5,000 requests/s, critical raise p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson

from benchmarks.rows import Row, peak_rss_mb
from buffer.store import OutboxStore, Synchronous
from gateway.collector import tune_gc
from gateway.logs import setup as setup_logging
from gateway.messages import messages_for
from gateway.model import Delivery, OutboxRecord, RequestDetails, Transition, TransitionKind
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from gateway.upstream.rest import RestSink, RestSinkConfig

T = TypeVar("T")
API_KEY = "bench-key"
ROOT = Path(__file__).resolve().parents[1]


def raise_of(asset: str, ts: float, severity: int) -> Transition:
    return Transition(TransitionKind.RAISED, "vibration-high", asset, "vibration",
                      f"vibration-high/{asset}/{ts}", severity, 7.41, ts,
                      "vibration 7.4 above 7.1", RequestDetails("Vibration above limit"))


class TimedSink:
    """The real REST sink, noting when a watched asset's record is sent and answered."""

    def __init__(self, sink: RestSink) -> None:
        self.inner = sink
        self.name = sink.name
        self.limits = sink.limits
        self.first_byte_timeout_seconds = sink.first_byte_timeout_seconds
        self.answered: dict[str, float] = {}  # asset -> monotonic time of the answer
        self.started: dict[str, float] = {}  # asset -> monotonic time its send began
        self.watch: set[str] = set()

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        if rec.message.asset in self.watch:
            self.started[rec.message.asset] = time.monotonic()
        d = await self.inner.send_one(rec)
        if rec.message.asset in self.watch:
            self.answered[rec.message.asset] = time.monotonic()
        return d

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        return [await self.send_one(r) for r in batch]

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()


LOOP = "uvloop"  # set from --loop: the simulator process runs on the same loop as we do
# the simulator's own CLI, on uvloop (the simulator itself is loop-agnostic)
ON_UVLOOP = ("import sys, uvloop; from simulators.cmms.__main__ import _args, serve; "
             "uvloop.run(serve(_args(sys.argv[1:])))")


def run_on_loop(main: Coroutine[Any, Any, T]) -> T:
    if LOOP == "uvloop":
        import uvloop
        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)


async def start_simulator() -> tuple[asyncio.subprocess.Process, str]:
    how = ["-c", ON_UVLOOP] if LOOP == "uvloop" else ["-m", "simulators.cmms"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *how, "--port", "0", "--api-key", API_KEY,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    found = re.search(r"https?://\S+", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, found.group(0)


async def fill(outbox: OutboxStore, n: int) -> None:
    ts = time.time()
    for start in range(0, n, 2000):
        t = [raise_of(f"line-4/pump-{i:06d}", ts + i * 1e-6, 3)
             for i in range(start, min(n, start + 2000))]
        await outbox.commit(t, [m for tr in t for m in messages_for(tr, ["cmms"], "plant-7")])


async def raises(outbox: OutboxStore, sink: TimedSink, wake: asyncio.Event, count: int,
                 every: float, committed: dict[str, float]) -> None:
    for i in range(count):
        await asyncio.sleep(every)
        asset = f"press-{i:03d}"
        t = raise_of(asset, time.time(), 1)
        sink.watch.add(asset)
        await outbox.commit([t], messages_for(t, ["cmms"], "plant-7"))
        committed[asset] = time.monotonic()
        wake.set()


async def ceiling(requests: int, in_flight: int) -> tuple[float, float, float]:
    """The same POSTs from a bare aiohttp client (no outbox, no gateway logic) to a fresh
    simulator process: what this box allows in this run. Returns requests/s and the client's
    and the simulator's CPU microseconds per request."""
    proc, url = await start_simulator()
    target = url + "/api/v1/maintenance-requests"
    t = raise_of("line-4/pump-000000", time.time(), 3)
    [msg] = messages_for(t, ["cmms"], "plant-7")
    base = dict(msg.body)
    todo = iter(range(requests))
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=in_flight),
                headers={"Authorization": f"Bearer {API_KEY}"}) as session:
            async def worker() -> None:
                for i in todo:
                    body = orjson.dumps(base | {"dedup_key": f"PB{i:018d}"},
                                        option=orjson.OPT_SORT_KEYS)
                    async with session.post(target, data=body, headers={
                            "Idempotency-Key": f'"k{i}"',
                            "Content-Type": "application/json"}) as resp:
                        await resp.read()
            start, cpu0, sim0 = time.perf_counter(), time.process_time(), process_cpu(proc.pid)
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return (requests / (time.perf_counter() - start),
                    (time.process_time() - cpu0) / requests * 1e6,
                    (process_cpu(proc.pid) - sim0) / requests * 1e6)
    finally:
        proc.terminate()
        await proc.wait()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of another process so far (Linux /proc; 0 elsewhere)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process (the main thread's id is the pid)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return {}
    return {int(t.name): _stat_cpu(t / "stat") for t in tasks.iterdir()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def daemon_logging(path: Path) -> Iterator[None]:
    """Log as `plantbridge run` does (INFO, text format) into `path`, restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with path.open("w") as out:
        setup_logging("info", "text", stream=out)
        try:
            yield
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = await start_simulator()
    try:
        with tempfile.TemporaryDirectory() as d, daemon_logging(Path(d) / "daemon.log"):
            async with await OutboxStore.open(Path(d) / "bench.sqlite",
                                              synchronous=Synchronous(args.synchronous)) as ob:
                t0 = time.perf_counter()
                await fill(ob, args.records)
                filled = time.perf_counter() - t0
                lease_ms = []
                for _ in range(20):  # the head of a full backlog, as the forwarder asks
                    t1 = time.perf_counter()
                    await ob.lease("cmms", args.in_flight, time.time())
                    lease_ms.append((time.perf_counter() - t1) * 1000)
                sink = TimedSink(RestSinkConfig.model_validate({
                    "type": "rest", "name": "cmms", "base_url": url,
                    "auth": {"kind": "bearer", "token": {"value": API_KEY}},
                    "limits": {"max_in_flight": args.in_flight,
                               "max_requests_per_second": None}}).build())
                # as the daemon does once started (gateway/daemon.py): what start-up built is
                # out of the cyclic collector's reach, so a full collection mid-drain walks only
                # what the drain itself keeps (without it: pauses of 40-80 ms on a busy box)
                gc.collect()
                gc.freeze()
                wake = asyncio.Event()
                cfg = ForwardingConfig(batch_size=4 * args.in_flight, idle_poll_seconds=0.05)
                fwd = Forwarder(sink, ob, cfg, wake)
                committed: dict[str, float] = {}
                total = args.records + args.raises
                start = time.perf_counter()
                task = asyncio.create_task(fwd.run())
                # spread the raises over the drain as if it ran at 10,000/s, first one early, so
                # each lands while the backlog drains (spread over a 5,000/s drain, the last
                # raise came so late that it capped the measured rate at ~5,000/s)
                every = max(0.01, args.records / 10_000 / (args.raises + 1))
                raiser = asyncio.create_task(raises(ob, sink, wake, args.raises, every,
                                                    committed))
                threads0, sim0 = thread_cpu(), process_cpu(proc.pid)
                in_flight: list[int] = []
                deadline = start + args.deadline
                drained: tuple[float, int, dict[int, float], float] | None = None
                while (fwd.stats.accepted < total and not task.done()
                       and time.perf_counter() < deadline):
                    await asyncio.sleep(0.02)
                    if drained is None:
                        in_flight.append(fwd.stats.in_flight)
                        if fwd.stats.accepted >= args.records:  # the backlog's worth is out
                            drained = (time.perf_counter() - start, fwd.stats.accepted,
                                       thread_cpu(), process_cpu(proc.pid))
                # the rate and the CPU are the drain's; a late raise's wait is not counted
                elapsed, delivered, threads1, sim1 = drained or (
                    time.perf_counter() - start, fwd.stats.accepted, thread_cpu(),
                    process_cpu(proc.pid))
                raiser.cancel()
                task.cancel()
                for t in (raiser, task):
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
                await sink.aclose()
            logged = _accept_lines(Path(d) / "daemon.log")
    finally:
        proc.terminate()
        await proc.wait()
    lat = [(sink.answered[a] - committed[a]) * 1000 for a in committed if a in sink.answered]
    # where a raise's time went: waiting to be leased and sent, then the request itself
    to_send = [(sink.started[a] - committed[a]) * 1000 for a in committed if a in sink.answered]
    main = os.getpid()
    loop_cpu = threads1.get(main, 0.0) - threads0.get(main, 0.0)
    other_cpu = sum(threads1.values()) - sum(threads0.values()) - loop_cpu
    return {"lease_ms": statistics.median(lease_ms), "cpu_s": loop_cpu + other_cpu,
            "loop_cpu_s": loop_cpu, "thread_cpu_s": other_cpu, "sim_cpu_s": sim1 - sim0,
            "mean_in_flight": statistics.fmean(in_flight) if in_flight else 0,
            "records": args.records, "delivered": delivered, "logged": logged,
            "finished": fwd.stats.accepted >= total, "fill_s": filled, "drain_s": elapsed,
            "requests_per_s": delivered / elapsed, "raises": len(lat),
            "p50_ms": statistics.median(lat) if lat else float("nan"),
            "p99_ms": pct(lat, 99) if lat else float("nan"),
            "max_ms": max(lat) if lat else float("nan"),
            "to_send_p50_ms": statistics.median(to_send) if to_send else float("nan"),
            "to_send_max_ms": max(to_send) if to_send else float("nan")}


def _accept_lines(log: Path) -> int:
    """How many 'accepted' lines the forwarder logged (one per delivered event is promised)."""
    with log.open("rb") as f:
        return sum(1 for line in f if b" accepted" in line and b"plantbridge.forwarder" in line)


Ceiling = tuple[float, float, float]  # requests/s, client and simulator CPU us per request


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], Ceiling]:
    """The drain, then the bare clients' ceilings (same concurrency, fresh simulator each)."""
    global LOOP
    LOOP = args.loop
    # the collector as the daemon runs it (gateway/cli_base.py run_async): at Python's
    # default it cost the drain 5-15 % of its loop CPU
    tune_gc()
    r = run_on_loop(run(args))
    n = min(args.records, 40_000)
    bare = run_on_loop(ceiling(n, args.in_flight))
    return r, bare


def report(args: argparse.Namespace, r: dict[str, Any], bare: Ceiling) -> list[str]:
    bare_rate, bare_cpu_us, bare_sim_us = bare
    n = max(r["delivered"], 1)
    cpu_us, sim_us = r["cpu_s"] / n * 1e6, r["sim_cpu_s"] / n * 1e6
    unfinished = "" if r["finished"] else (
        f"   NOT FINISHED: {r['delivered']:,} delivered within --deadline {args.deadline:.0f} s")
    return [
        f"backlog of {r['records']:,} committed in {r['fill_s']:.1f} s; a lease of "
        f"{args.in_flight} from it takes {r['lease_ms']:.1f} ms (median of 20)",
        f"drain: {r['requests_per_s']:,.0f} requests/s ({r['drain_s']:.1f} s, "
        f"{args.in_flight} in flight, synchronous={args.synchronous}, {LOOP})"
        f"   target >= 5,000{unfinished}",
        f"gateway process CPU during the drain: {r['cpu_s']:.1f} s of {r['drain_s']:.1f} s; "
        f"mean requests in flight {r['mean_in_flight']:.0f}; {cpu_us:.0f} us CPU per request "
        f"(event loop {r['loop_cpu_s'] / n * 1e6:.0f}, database and other threads "
        f"{r['thread_cpu_s'] / n * 1e6:.0f})",
        f"log lines 'accepted' (INFO, text, to a file): {r['logged']:,} for {r['delivered']:,} "
        "delivered",
        f"ceiling, bare aiohttp client -> simulator, same run: {bare_rate:,.0f} requests/s; "
        f"ratio {r['requests_per_s'] / bare_rate:.2f}; bare client {bare_cpu_us:.0f} us CPU per "
        f"request (CPU ratio {bare_cpu_us / cpu_us:.2f}: the figure a busy box changes least)",
        f"simulator CPU per request: {sim_us:.0f} us during the drain, {bare_sim_us:.0f} us "
        f"under the bare client (one process: at these figures it tops out near "
        f"{1e6 / max(sim_us, 1):,.0f} requests/s on a free core)",
        f"fresh critical raise, commit -> 201: p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms over {r['raises']} raises"
        "   target p99 < 100 ms",
        f"  of which commit -> send: p50 {r['to_send_p50_ms']:.1f} ms, max "
        f"{r['to_send_max_ms']:.1f} ms (the rest is the request, behind the window in flight)",
        f"peak RSS of the gateway process (with the bench): {peak_rss_mb():.0f} MB",
    ]


def rows(quick: bool) -> list[Row]:
    """The suite's rows (benchmarks/__main__.py): the drain and the critical raise during it."""
    args = parser().parse_args(["--records", "2000", "--raises", "5", "--deadline", "30"]
                               if quick else [])
    r, bare = measure(args)
    for line in report(args, r, bare):
        print(line, file=sys.stderr)
    n = max(r["delivered"], 1)
    cpu_us, sim_us = r["cpu_s"] / n * 1e6, r["sim_cpu_s"] / n * 1e6
    done = "" if r["finished"] else f"NOT FINISHED in {args.deadline:.0f} s; "
    rate = r["requests_per_s"]
    return [
        Row(f"backlog drain, {r['records']:,} records -> CMMS", rate, "requests/s",
            ">= 5,000/s", rate >= 5_000 and r["finished"], bare[0],
            f"{done}gateway {cpu_us:.0f} us CPU/request (bare aiohttp client {bare[1]:.0f}), "
            f"simulator {sim_us:.0f} us/request; "
            f"{args.in_flight} in flight; ceiling: bare aiohttp client, same simulator"),
        Row("fresh critical raise during the drain, p50", r["p50_ms"], "ms", "(p99 < 100 ms)",
            None, None, f"commit -> 201, {r['raises']} raises spread over the drain"),
        Row("fresh critical raise during the drain, p99", r["p99_ms"], "ms", "< 100 ms",
            r["p99_ms"] < 100 and r["raises"] > 0, None,
            f"max {r['max_ms']:.1f} ms; one request window of {args.in_flight} ahead at most"),
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--raises", type=int, default=50)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--synchronous", choices=[s.value for s in Synchronous], default="full")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--deadline", type=float, default=90.0,
                   help="seconds the drain may take before it is cut short and reported")
    return p


def main() -> None:
    args = parser().parse_args()
    load = os.getloadavg()
    r, bare = measure(args)
    print(f"load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print("\n".join(report(args, r, bare)))


if __name__ == "__main__":
    main()
