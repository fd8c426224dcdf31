"""`plantbridge replay` reads every recording format the same way, and says when one is cut."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.model import Quality, Sample
from rules.pbrec import RecordingWriter
from rules.recording import write_jsonl
from tests.gateway.recorder import VIB_RULE

RULE = VIB_RULE.format(above=7.1)


def samples() -> list[Sample]:
    """Ten minutes of 1 Hz vibration with two excursions to 8 mm/s."""
    return [Sample("pump-1", "vibration", 8.0 if 200 <= t < 260 or 450 <= t < 560 else 3.0,
                   Quality.GOOD, 1_700_000_000.0 + t) for t in range(600)]


def replay_out(rules: Path, rec: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["replay", "--rules", str(rules), "--input", str(rec)]) == 0
    got = capsys.readouterr()
    return got.out, got.err


def test_pbrec_and_jsonl_give_the_same_report(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE)
    write_jsonl(tmp_path / "rec.jsonl", samples())
    with RecordingWriter(tmp_path / "rec.pbrec", block_samples=100) as w:
        for s in samples():
            w.write(s)
    from_jsonl, _ = replay_out(rules, tmp_path / "rec.jsonl", capsys)
    from_pbrec, err = replay_out(rules, tmp_path / "rec.pbrec", capsys)
    assert from_pbrec == from_jsonl
    assert from_pbrec.count("RAISED") == 2 and from_pbrec.count("CLEARED") == 2
    assert err == ""


def test_a_cut_recording_is_replayed_up_to_the_cut_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE)
    rec = tmp_path / "rec.pbrec"
    with RecordingWriter(rec, block_samples=100) as w:
        for s in samples():
            w.write(s)
    data = rec.read_bytes()
    rec.write_bytes(data[: len(data) - 500])  # a power cut in the middle of the last block
    out, err = replay_out(rules, rec, capsys)
    assert "warning:" in err and "500 samples" in err
    assert "replayed 500 samples" in out
    assert out.count("RAISED") == 2 and out.count("CLEARED") == 1  # the second is still open


def test_from_and_to_replay_a_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the second excursion (t = 450 s on) lies in the window; times are UTC."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE)
    write_jsonl(tmp_path / "rec.jsonl", samples())
    start = datetime.fromtimestamp(1_700_000_000 + 400, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert main(["replay", "--rules", str(rules), "--input", str(tmp_path / "rec.jsonl"),
                 "--from", start, "--to", str(1_700_000_000 + 599)]) == 0
    out = capsys.readouterr().out
    assert "replayed 200 samples" in out
    assert out.count("RAISED") == 1 and out.count("CLEARED") == 1
    assert "2023-11-14 22:20:52" in out  # raised at t = 452 s: 450 + the 2 s on-delay


def test_a_time_that_is_not_one_is_named(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULE)
    write_jsonl(tmp_path / "rec.jsonl", samples())
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--rules", str(rules), "--input", str(tmp_path / "rec.jsonl"),
              "--from", "yesterday"])
    assert exit_.value.code == 2
    assert "'yesterday' is not a time" in capsys.readouterr().err
