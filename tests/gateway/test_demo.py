"""The README's first command: one request, one clear, and a clean stop on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from tests.harness import wait_for_sync


def test_demo_end_to_end_then_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        wait_for_sync(lambda: any("status update on MR-000001: cleared" in x for x in lines),
                      60, "the clear upstream in the demo output")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)
        stdout.close()
    out = "".join(lines)
    assert out.count("UPSTREAM  maintenance request") == 1, out
    assert "RAISED  pump-vibration-high on pump-1" in out
    assert "summary: 1 maintenance request(s), 1 status update(s) upstream" in out
    assert "Traceback" not in out
