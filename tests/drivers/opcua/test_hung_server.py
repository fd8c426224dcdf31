"""A hung server (SIGSTOP: socket open, nothing answers) is detected within the keep-alive."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gateway.model import SourceState
from tests.drivers.opcua.support import plant_config, running
from tests.harness import free_port, wait_for, wait_for_line


@pytest.fixture
def sim_process() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "simulators.opcua_plant", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_for_line(proc, lambda line: b"serving" in line, 20, "simulator process")
        yield proc, f"opc.tcp://127.0.0.1:{port}/plantbridge/"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_hung_server_is_detected_and_recovered(
        sim_process: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, endpoint = sim_process
    cfg = plant_config(endpoint, keepalive_interval_seconds=0.5, request_timeout_seconds=1.0)
    async with running(cfg) as (source, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 2, 10, "data")
        proc.send_signal(signal.SIGSTOP)
        hung_at = time.monotonic()
        await wait_for(lambda: source.health().state is SourceState.RECONNECTING, 5,
                       "loss of a hung server detected")
        detected = time.monotonic() - hung_at
        # probe every 0.5 s, each with a 0.5 s timeout: about 1 s, 2 s with scheduling slack
        assert detected < 2.0, detected
        proc.send_signal(signal.SIGCONT)
        resumed, before = time.monotonic(), len(got.samples)
        await wait_for(lambda: source.health().state is SourceState.CONNECTED
                       and len(got.samples) > before + 12, 15, "data after the server resumes")
        print(f"\nhung server: detected in {detected:.2f} s, data back "
              f"{time.monotonic() - resumed:.2f} s after it resumed")
