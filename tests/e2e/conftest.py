from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.cmms import CmmsSimulator
from tests.e2e.stack import API_KEY, Stack
from tests.harness import Mosquitto


@pytest.fixture
async def stack(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Stack]:
    sim = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
    await sim.start()
    s = Stack(tmp_path, mosquitto, sim)
    try:
        yield s
    finally:
        s.close()
        await s.stop_daemon()
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        await sim.stop()
