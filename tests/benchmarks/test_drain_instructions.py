"""The drain's instruction counts (benchmarks/drain_instructions.py): the dump is read per
thread, and, where valgrind is installed, a short drain under callgrind gives its figures."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.drain_instructions import report, thread_totals

ROOT = Path(__file__).resolve().parents[2]


def test_the_dump_after_the_drain_is_read_per_thread(tmp_path: Path) -> None:
    # callgrind's files: the run's end (<pid>-NN, not counted) and the dump (<pid>.1-NN)
    (tmp_path / "cg.77-01").write_text("totals: 999999999\n")
    (tmp_path / "cg.77.1-01").write_text("events: Ir\nsummary: 7000000\n")
    (tmp_path / "cg.77.1-02").write_text("events: Ir\nsummary: 9\n")
    (tmp_path / "cg.77.1-03").write_text("events: Ir\nsummary: 2000000\n")
    totals = thread_totals(tmp_path)
    assert totals == {1: 7_000_000, 2: 9, 3: 2_000_000}
    lines = report(totals, 1000, "instant")
    assert any("event loop" in line and line.endswith("7,000") for line in lines)
    assert any("database thread" in line and line.endswith("2,000") for line in lines)
    assert not any("thread 2" in line for line in lines)  # idle during the drain
    assert lines[-1].endswith("9,000")


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
                    reason="valgrind is not installed")
def test_a_short_drain_under_callgrind_gives_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/drain_instructions.py", "--records", "200",
         "--sink", "instant"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    [loop] = [line for line in done.stdout.splitlines() if "event loop" in line]
    assert int(loop.split()[-1].replace(",", "")) > 10_000  # a forwarder round is not free
