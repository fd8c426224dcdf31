"""A recording replays to what the live gateway did, transition for transition.

The technician's promise ("see what a rule would have done") holds only if a replay of what
`plantbridge record` captured gives the transitions the running daemon gave for the same
traffic, episode ids included. Both see one time base: the device's time while its clock is
in step (recordings carry it as `ts`, and the device's own stamp as `device_ts`). A device that
resends a reading must not make the two disagree either: the daemon skips the resend, and the
recording (which keeps every message, as evidence) is replayed with the same rule.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from gateway.model import TransitionKind
from rules import load_rule_files
from rules.fastreplay import replay_columns
from rules.pbrec import load_columns
from tests.e2e.stack import VIBRATION_RANGE, Stack
from tests.harness import wait_for

RULES = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"

[[rule]]
id = "temp-3-of-5"
kind = "threshold"
asset = "pump-1"
signal = "temperature"
above = 80
clear_below = 70
count = 3
of_last_samples = 5
severity = 3
title = "Hot bearing on {asset}"
"""


async def test_a_recording_replays_to_the_transitions_the_daemon_made(stack: Stack) -> None:
    # with a valid range: the recorder must hold the sentinel below as the daemon's rules saw it
    # (bad data), or its replay raises and clears where the daemon did nothing
    cfg = stack.write_config(RULES, source=stack.mqtt_source() + VIBRATION_RANGE)
    await stack.start_daemon()
    out = stack.tmp / "rec.jsonl"
    recorder = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "gateway.cli", "record", "--config", str(cfg), "--output",
         str(out), "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def recording() -> bool:  # the recorder is subscribed once a warm-up sample is in
            stack.publish("warmup", "x", 0)
            return out.exists() and out.stat().st_size > 0

        await wait_for(recording, 30, "the recorder to record")
        t0 = time.time() - 5.0  # device times a few seconds old: late, clock in step
        vib = [3, 6553.5, 3, 8, 8, 3, 9, 2]  # 6553.5: a dead I/O card's full scale
        temp = [75, 85, 60, 85, 85, 85, 50, 40, 40, 40, 40]
        for i, v in enumerate(vib):
            stack.publish("pump-1", "vibration", v, ts=t0 + i * 0.2)
        for i, v in enumerate(temp):
            stack.publish("pump-1", "temperature", v, ts=t0 + i * 0.2)
            if i == 4:  # the device resends one reading: evaluated once by the daemon
                stack.publish("pump-1", "temperature", v, ts=t0 + i * 0.2)
        stack.publish("pump-2", "vibration", 9, ts=t0 + 3.0)

        def live() -> list[tuple[str, str]]:
            assert stack.daemon is not None
            return [(t["kind"], t["episode_id"]) for t in stack.daemon.recent]

        await wait_for(lambda: len(live()) == 7, 20, "the daemon's seven transitions")
    finally:
        recorder.terminate()
        output, _ = await asyncio.to_thread(recorder.communicate, None, 30)
    assert recorder.returncode == 0, output

    cols = load_columns(out)
    replayed = replay_columns(load_rule_files([stack.tmp / "rules.d" / "rules.toml"]), cols)
    # The recording keeps the resend as evidence; the replay skips it, as the daemon did.
    pumps = [i for i, k in enumerate(cols.keys) if k[0].startswith("pump-")]
    assert sum(int((cols.key == i).sum()) for i in pumps) == 20, output
    got = [(str(t.kind), t.episode_id) for t in replayed.transitions]
    assert sorted(got) == sorted(live()), (got, live())
    assert {k for k, _ in got} == {str(TransitionKind.RAISED), str(TransitionKind.CLEARED)}
