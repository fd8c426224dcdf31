"""`python -m simulators.cmms` as a subprocess: startup line, SIGTERM, a state file."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from tests.harness import free_port
from tests.simulators.cmms.conftest import REQUESTS, body, post

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def simulator_process(port: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.cmms", "--port", str(port), "--api-key", "cli-key",
         *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server listens (or the process dies)
        assert line.strip() == f"listening on http://127.0.0.1:{port}", (line, proc.poll())
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


async def test_cli_serves_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    port = free_port()
    with simulator_process(port) as proc:
        url = f"http://127.0.0.1:{port}"
        status, _, doc = await post(http, url + REQUESTS, body(),
                                    headers={"Authorization": "Bearer cli-key"})
        assert status == 201 and doc["id"] == "MR-000001"
        async with http.get(url + "/_sim/state") as resp:
            assert len((await resp.json())["requests"]) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


async def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await _restart_with_state(tmp_path, http)


async def _restart_with_state(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    state = tmp_path / "cmms-state.json"
    port = free_port()
    auth = {"Authorization": "Bearer cli-key"}
    url = f"http://127.0.0.1:{port}"
    with simulator_process(port, "--state-file", str(state)) as proc:
        first = await post(http, url + REQUESTS, body(), headers=auth)
        proc.send_signal(signal.SIGKILL)  # no goodbye: the file must already hold the commit
        proc.wait(10)
    with simulator_process(port, "--state-file", str(state)):
        status, headers, doc = await post(http, url + REQUESTS, body(), headers=auth)
        assert status == 201 and headers["Idempotent-Replayed"] == "true"
        assert doc == first[2]
        assert (await post(http, url + REQUESTS, body(), key="k-2", headers=auth))[2]["id"] \
            == "MR-000002"
