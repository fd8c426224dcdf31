"""Technician tools through the real CLI: record live telemetry, replay it, compare rule sets."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from rules.pbrec import read_columns
from rules.recording import load_recording
from tests.gateway.recorder import VIB_RULE, mqtt_config, publishing, start_recorder
from tests.harness import Mosquitto, wait_for_sync

RULE = VIB_RULE


def _recording(path: Path) -> Path:
    """Ten minutes of 1 Hz vibration with one 60 s excursion to 8 mm/s."""
    lines = []
    for t in range(600):
        v = 8.0 if 200 <= t < 260 else 3.0
        lines.append(orjson.dumps({"asset": "pump-1", "signal": "vibration", "value": v,
                                   "quality": "GOOD", "ts": 1_700_000_000 + t}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_replay_prints_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE.format(above=7.1))
    rec = _recording(tmp_path / "rec.jsonl")
    assert main(["replay", "--rules", str(rules), "--input", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "vib-high" in out and "pump-1" in out
    assert out.lower().count("raised") >= 1 and out.lower().count("cleared") >= 1


def test_replay_compare_shows_what_a_change_removes(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.toml"
    new = tmp_path / "new.toml"
    old.write_text(RULE.format(above=7.1))
    new.write_text(RULE.format(above=9.0))  # the excursion no longer raises
    rec = _recording(tmp_path / "rec.jsonl")
    assert main(["replay", "--rules", str(new), "--input", str(rec), "--compare",
                 str(old)]) == 0
    out = capsys.readouterr().out
    assert "vib-high" in out and "removed" in out.lower()


def test_replay_names_a_bad_recording_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE.format(above=7.1))
    rec = tmp_path / "bad.jsonl"
    rec.write_text('{"asset":"a","signal":"s","value":1,"ts":0}\n{oops\n')
    assert main(["replay", "--rules", str(rules), "--input", str(rec)]) == 1
    assert "bad.jsonl:2" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_record_captures_live_mqtt_samples(tmp_path: Path, mosquitto: Mosquitto,
                                           suffix: str) -> None:
    cfg = mqtt_config(tmp_path, mosquitto.port)
    out = tmp_path / f"rec{suffix}"
    proc = start_recorder(cfg, out, 4)
    try:
        wait_for_sync(lambda: out.exists(), 10, "the recorder to start")
        with publishing(mosquitto.port):
            output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    got = list(load_recording(out))  # what replay reads, by the suffix
    assert got, output
    assert {(x.asset, x.signal) for x in got} == {("pump-1", "vibration")}
    first = got[0].value or 0.0
    assert [x.value for x in got] == [first + i for i in range(len(got))]  # none lost
    assert f"recorded {len(got)} samples" in output


def test_record_to_pbrec_keeps_every_sample_through_ctrl_c(tmp_path: Path,
                                                           mosquitto: Mosquitto) -> None:
    cfg = mqtt_config(tmp_path, mosquitto.port)
    out = tmp_path / "rec.pbrec"
    proc = start_recorder(cfg, out, 120)
    try:
        wait_for_sync(lambda: out.exists(), 10, "the recorder to start")
        with publishing(mosquitto.port):
            # the recorder hands a block to the OS every few seconds: a first block is on disk
            wait_for_sync(lambda: len(read_columns(out)) > 0, 20,
                          "a first block in the recording")
            proc.send_signal(signal.SIGINT)  # Ctrl-C ends the recording, and closes it cleanly
            output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    rec = read_columns(out)
    assert rec.warning is None and len(rec) > 0
    assert rec.keys == (("pump-1", "vibration"),)
    values = rec.value.tolist()
    assert values == list(range(int(values[0]), int(values[0]) + len(values)))  # none lost
    assert f"recorded {len(rec)} samples" in output
