"""`plantbridge run` with MQTT ingest in a worker process: a rule raises, one request reaches
the CMMS simulator; kill -9 of the daemon takes its worker with it (no orphan)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.cmms import CmmsSimulator
from tests.e2e.stack import API_KEY, Stack, assert_exactly_once, vibration_rule
from tests.harness import Mosquitto, free_port, wait_for


@pytest.fixture
async def stack(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Stack]:
    sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
    await sim.start()
    s = Stack(tmp_path, mosquitto, sim)
    try:
        yield s
    finally:
        s.close()
        if s.proc is not None and s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait()
        await sim.stop()


def workers_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` and that run the MQTT worker module."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z" and b"drivers.mqtt.worker" in cmdline:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def source_with_workers(stack: Stack, workers: int) -> str:
    return stack.mqtt_source().replace('client_id = "plantbridge-e2e"',
                                       f'client_id = "plantbridge-e2e"\nworkers = {workers}')


@pytest.mark.slow
async def test_daemon_with_a_worker_raises_once_and_leaves_no_orphan(stack: Stack) -> None:
    port = free_port()
    stack.write_config(vibration_rule(), http_port=port, source=source_with_workers(stack, 1))
    proc = stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    pids = workers_of(proc.pid)
    assert len(pids) == 1, f"expected one MQTT worker, found {pids}"
    # The worker logs as the daemon does (its timestamps, journald priorities, JSON if set).
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO +drivers\.mqtt: source plant: "
                     r"connected", stack.daemon_log(), re.M), stack.daemon_log()[-2000:]

    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "the request")
    await stack.wait_drained(port)
    await wait_for(lambda: len(stack.updates_for("pump-1")) == 1, 20, "the clear")
    assert len(stack.requests_for("pump-1")) == 1
    assert_exactly_once(stack.sim)
    status = await stack.status_now(port)
    (plant,) = status["sources"]
    assert plant["state"] == "connected" and plant["samples"] >= 10

    os.kill(proc.pid, signal.SIGKILL)  # the daemon alone, not its process group
    proc.wait(10)
    await wait_for(lambda: not any(alive(p) for p in pids), 15, "the worker exits with it")

    # Started again on the same sessions: nothing redelivered raises twice; a SIGTERM stops
    # the daemon cleanly, its worker included.
    proc = stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    pids = workers_of(proc.pid)
    assert len(pids) == 1
    await stack.episode("pump-2")
    await wait_for(lambda: len(stack.updates_for("pump-2")) == 1, 20, "pump-2 raised, cleared")
    assert [len(stack.requests_for(a)) for a in ("pump-1", "pump-2")] == [1, 1]
    assert await stack.terminate() == 0, stack.daemon_log()[-2000:]
    await wait_for(lambda: not any(alive(p) for p in pids), 15, "the worker stops with it")
