"""Instructions per drained record, by thread, under callgrind: an A/B figure for the drain
that does not move with the host's speed.

    .venv/bin/python benchmarks/drain_instructions.py [--records 2000] [--sink http|instant]

Needs valgrind (Debian: `apt install valgrind`). On a shared 2-core box the drain's wall-clock
figures (benchmarks/drain_bench.py) swing by a quarter from one run to the next; instruction
counts repeat within about 1 %, so a change of a few percent shows. Compare two commits by
running this in a checkout of each.

The script runs itself again under `valgrind --tool=callgrind --separate-threads=yes`. That
child commits a backlog to a fresh outbox, zeroes the counters (`callgrind_control -z`), drains
the backlog through the real Forwarder, and dumps the counters (`callgrind_control -d`), so the
fill and the start-up are not counted. `--sink http` drains with the real REST sink into the
CMMS simulator (a process of its own, not under valgrind); `--sink instant` into a sink that
answers at once, which leaves the forwarder and the outbox alone. Logging is the daemon's (INFO,
text) into a file. Prints instructions per record for each thread that ran during the drain:
the event loop (the main thread) and the outbox's database thread. Prints figures; asserts
nothing. Instructions are not time: a cache miss or a system call costs far more than its count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import drain_bench
from buffer.store import OutboxStore
from gateway.collector import tune_gc
from gateway.model import Delivery, OutboxRecord, Outcome, Sink
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from gateway.upstream.limits import UpstreamLimits
from gateway.upstream.rest import RestSinkConfig

IN_FLIGHT = 64


class InstantSink:
    """Accepts every record at once (one loop turn): what is left is the forwarder's work."""

    name = "cmms"
    limits = UpstreamLimits(max_requests_per_second=None, burst=1, max_in_flight=IN_FLIGHT)
    first_byte_timeout_seconds = 30.0

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        await asyncio.sleep(0)
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=f"WR-{rec.id}")

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        return [await self.send_one(r) for r in batch]

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _callgrind(flag: str) -> None:
    subprocess.run(["callgrind_control", flag, str(os.getpid())], check=True,
                   capture_output=True)


async def _drain(records: int, sink_kind: str) -> None:
    """The child's work: fill, zero the counters, drain, dump them."""
    proc, url = await drain_bench.start_simulator()
    try:
        with tempfile.TemporaryDirectory() as d, \
                drain_bench.daemon_logging(Path(d) / "daemon.log"):
            async with await OutboxStore.open(Path(d) / "drain.sqlite") as outbox:
                await drain_bench.fill(outbox, records)
                sink: Sink = InstantSink() if sink_kind == "instant" else \
                    RestSinkConfig.model_validate({
                        "type": "rest", "name": "cmms", "base_url": url,
                        "auth": {"kind": "bearer", "token": {"value": drain_bench.API_KEY}},
                        "limits": {"max_in_flight": IN_FLIGHT,
                                   "max_requests_per_second": None}}).build()
                gc.collect()
                gc.freeze()  # as the daemon does once started
                fwd = Forwarder(sink, outbox, ForwardingConfig(
                    batch_size=4 * IN_FLIGHT, idle_poll_seconds=0.05), asyncio.Event())
                _callgrind("-z")
                task = asyncio.create_task(fwd.run())
                deadline = time.monotonic() + 1800  # valgrind runs Python some 30x slower
                while fwd.stats.accepted < records and not task.done():
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.01)
                _callgrind("-d")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await sink.aclose()
                if fwd.stats.accepted < records:
                    raise SystemExit(f"the drain stopped at {fwd.stats.accepted} records")
    finally:
        proc.terminate()
        await proc.wait()


def thread_totals(out_dir: Path) -> dict[int, int]:
    """Thread number (1 = the main thread) -> instructions, from the dump taken after the
    drain (callgrind names it <file>.<pid>.1-<thread>)."""
    totals: dict[int, int] = {}
    for path in out_dir.glob("cg.*.1-*"):
        thread = int(path.name.rsplit("-", 1)[1])
        found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"),
                          re.MULTILINE)
        if found:
            totals[thread] = int(found.group(1))
    return totals


def report(totals: dict[int, int], records: int, sink_kind: str) -> list[str]:
    lines = [f"drain of {records:,} records, {sink_kind} sink, {IN_FLIGHT} in flight: "
             "instructions per record, by thread (callgrind)"]
    everything = sum(totals.values())
    for thread, count in sorted(totals.items()):
        if count < everything / 1000:  # a thread that did nothing to speak of in the drain
            continue
        name = "event loop (main thread)" if thread == 1 else f"thread {thread}"
        if thread != 1 and count == max(v for t, v in totals.items() if t != 1):
            name += ", the outbox's database thread"
        lines.append(f"  {name:<45} {count / records:>12,.0f}")
    lines.append(f"  {'all threads':<45} {everything / records:>12,.0f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--sink", choices=["http", "instant"], default="http")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        tune_gc()
        drain_bench.LOOP = "uvloop"
        drain_bench.run_on_loop(_drain(args.records, args.sink))
        return
    missing = [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"needs {' and '.join(missing)} (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory() as d:
        started = time.monotonic()
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={d}/cg.%p", sys.executable, __file__, "--child",
             "--records", str(args.records), "--sink", args.sink],
            capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the drain under callgrind failed:\n{done.stderr[-2000:]}")
        totals = thread_totals(Path(d))
    if not totals:
        raise SystemExit("callgrind wrote no dump after the drain")
    print("\n".join(report(totals, args.records, args.sink)))
    print(f"({time.monotonic() - started:.0f} s under valgrind)")


if __name__ == "__main__":
    main()
