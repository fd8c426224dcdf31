"""Delivery in a plant-wide incident, at the real CMMS simulator: a critical raise overtakes a
backlog of 2,000 records, and a forwarder killed with SIGKILL mid-drain resends nothing it had
already settled (each record is settled when it is done, not per batch)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.model import RequestDetails, Transition, TransitionKind
from gateway.upstream.forwarder import Forwarder, ForwardingConfig
from gateway.upstream.rest import RestSinkConfig
from simulators.cmms import CmmsSimulator
from tests.harness import wait_for

CFG = ForwardingConfig(retry_initial_seconds=0.1, idle_poll_seconds=0.05)
IN_FLIGHT = 4
ROOT = Path(__file__).resolve().parents[2]


def raise_of(asset: str, ts: float, severity: int) -> Transition:
    return Transition(TransitionKind.RAISED, "vib", asset, "vibration", f"vib/{asset}/{ts}",
                      severity, 8.0, ts, "vibration 8 above 7.1", RequestDetails("High vibration"))


async def commit_backlog(outbox: OutboxStore, n: int) -> None:
    ts = time.time()
    for start in range(0, n, 500):
        t = [raise_of(f"pump-{i}", ts + i * 1e-3, 3) for i in range(start, min(n, start + 500))]
        await outbox.commit(t, [m for tr in t for m in messages_for(tr, ["cmms"], "s")])


def sink_config(url: str) -> RestSinkConfig:
    return RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": url,
        "auth": {"kind": "bearer", "token": {"value": "k"}},
        "limits": {"max_in_flight": IN_FLIGHT, "max_requests_per_second": None}})


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    s = CmmsSimulator(host="127.0.0.1", port=0, api_key="k")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_a_critical_raise_overtakes_a_backlog_of_2000(tmp_path: Path,
                                                            sim: CmmsSimulator) -> None:
    async with await OutboxStore.open(tmp_path / "o.sqlite") as outbox:
        await commit_backlog(outbox, 2000)
        sim.faults.set("slow", delay_seconds=0.005)  # an upstream that takes its time
        wake = asyncio.Event()
        sink = sink_config(sim.url).build()
        fwd = Forwarder(sink, outbox, CFG, wake)
        task = asyncio.create_task(fwd.run())
        try:
            await wait_for(lambda: len(sim.requests) >= 100, 30, "the drain under way")
            crit = raise_of("press-1", time.time(), 1)
            before = len(sim.requests)
            t0 = time.monotonic()
            await outbox.commit([crit], messages_for(crit, ["cmms"], "s"))
            wake.set()  # what the daemon does after every commit

            def position() -> int | None:
                return next((i for i, r in enumerate(sim.requests)
                             if r["body"]["asset"] == "press-1"), None)
            await wait_for(lambda: position() is not None, 30, "the critical raise")
            took = time.monotonic() - t0
            pos = position()
            assert pos is not None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sink.aclose()
    # it waited for the requests in flight and those started while it was being leased
    # (a few round trips on a busy box), not for the 1,900 queued before it
    assert pos - before <= 10 * IN_FLIGHT, (pos, before)
    assert pos < 1000
    print(f"critical raise delivered {took * 1000:.0f} ms after its commit, "
          f"{pos - before} requests after it")


# --- kill -9 mid-drain ----------------------------------------------------------------------

CHILD = """
import asyncio, sys
from pathlib import Path
from tests.e2e.test_storm_delivery import run_child
asyncio.run(run_child(Path(sys.argv[1]), sys.argv[2]))
"""


async def run_child(path: Path, url: str) -> None:
    """The forwarder alone in a process of its own, delivering until killed."""
    async with await OutboxStore.open(path) as outbox:
        sink = sink_config(url).build()
        await Forwarder(sink, outbox, CFG, asyncio.Event()).run()


async def test_kill_9_mid_drain_resends_nothing_already_settled(tmp_path: Path,
                                                                sim: CmmsSimulator) -> None:
    path = tmp_path / "o.sqlite"
    total, kills = 200, 4
    async with await OutboxStore.open(path) as outbox:
        await commit_backlog(outbox, total)
    sim.faults.set("slow", delay_seconds=0.03)  # POSTs commit, then answer 30 ms later
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path), sim.url, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def kill_after(more: int, what: str) -> None:
        child = await spawn()
        goal = len(sim.requests) + more
        try:
            await wait_for(lambda: len(sim.requests) >= goal or child.returncode is not None,
                           60, what)
            assert child.returncode is None, await child.stderr.read()  # type: ignore[union-attr]
        finally:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
            await child.wait()

    for k in range(kills):
        await kill_after(25, f"drain under way before kill {k + 1}")
    child = await spawn()
    try:
        await wait_for(lambda: len(sim.requests) == total, 60, "the rest after the kills")
        await asyncio.sleep(0.2)  # a late duplicate would show now
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    refs = [r["external_ref"] for r in sim.requests]
    assert len(refs) == len(set(refs)) == total  # created once each
    # Only what was in flight at a kill (at most IN_FLIGHT, plus what finished in the last few
    # ms and awaited its settle) is sent again; a batch of 50 settled at once would replay
    # about half a batch per kill.
    assert sim.replays <= kills * 2 * IN_FLIGHT, sim.replays
    print(f"{sim.replays} replays over {kills} kills")
