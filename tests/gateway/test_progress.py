"""Progress: a line with an estimate on a terminal (a real pty), nothing into a pipe."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from gateway.progress import Progress, duration_words
from tests.gateway.recorder import mqtt_config
from tests.harness import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "tests" / "rules" / "cases" / "threshold-above"
REPLAY = [sys.executable, "-m", "gateway.cli", "replay", "--rules", str(CASE / "rules.toml"),
          "--input", str(CASE / "input.jsonl")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_says_share_and_time_left() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("replaying", total=200, unit="samples", stream=out, enabled=True,
                   clock=clock)
    clock.now += 10
    bar.update(50)
    assert out.getvalue() == "\rreplaying: 50/200 samples (25%), about 30 s left"
    clock.now += 0.05
    bar.update(60)  # within the redraw interval: nothing written
    assert out.getvalue().count("\r") == 1
    bar.close("done")
    assert out.getvalue().endswith("\rdone" + " " * (len("replaying: 50/200 samples (25%), "
                                                         "about 30 s left") - 4) + "\n")
    assert duration_words(245) == "4 min 05 s" and duration_words(7800) == "2 h 10 min"


def test_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()  # isatty() is False
    with Progress("x", total=3, stream=out) as bar:
        bar.update(1)
        bar.update(3)
    assert out.getvalue() == ""


def _run_on_pty(argv: list[str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); what the terminal showed."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=secondary,
                                stdin=subprocess.DEVNULL)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        proc.communicate(timeout=60)
    finally:
        os.close(primary)
    return proc.returncode, seen.decode(errors="replace")


def test_replay_shows_progress_on_a_terminal() -> None:
    code, terminal = _run_on_pty(REPLAY)
    assert code == 0
    assert "\rreplay" in terminal and "steps" in terminal, terminal


def test_replay_shows_none_into_a_pipe() -> None:
    done = subprocess.run(REPLAY, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0
    assert done.stderr == b"", done.stderr
    assert b"replayed 19 samples" in done.stdout


def test_record_shows_time_recorded_on_a_terminal_and_nothing_into_a_pipe(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = mqtt_config(tmp_path, mosquitto.port)
    argv = [sys.executable, "-m", "gateway.cli", "record", "--config", str(cfg), "--output",
            str(tmp_path / "r.jsonl"), "--duration", "1.5"]
    code, terminal = _run_on_pty(argv)
    assert code == 0
    assert re.search(r"\rrecording to \S+: \d/1\.5 s \(\d+%\)", terminal), terminal
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0 and b"recording to" not in done.stderr, done.stderr
