"""Replay on recordings: readers, report, comparison of two rule sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.model import Quality, Sample
from rules.replay import (
    RecordingError,
    compare,
    format_comparison,
    format_report,
    load_recording,
    replay,
    write_jsonl,
)
from tests.rules.conftest import RulesFrom, sample

RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset = "p1"
signal = "vibration"
above = LEVEL
clear_below = 6.0
on_delay_seconds = 1
"""


def wave() -> list[Sample]:
    values = [5, 7.5, 8, 8, 5, 5, 7.2, 7.3, 7.4, 5, 5]
    return [sample("p1", "vibration", float(v), 1000.0 + i) for i, v in enumerate(values)]


def test_jsonl_and_csv_give_the_same_samples(tmp_path: Path) -> None:
    samples = [*wave(), Sample("p1", "vibration", None, Quality.BAD, 1011.0)]
    write_jsonl(tmp_path / "r.jsonl", samples)
    rows = ["asset,signal,value,quality,ts"] + [
        f"{s.asset},{s.signal},{'' if s.value is None else s.value},{s.quality.name},"
        f"{s.source_ts}" for s in samples]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    assert list(load_recording(tmp_path / "r.jsonl")) == samples
    assert list(load_recording(tmp_path / "r.csv")) == samples


def test_recording_accepts_iso_times_and_numeric_quality(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"asset":"a","signal":"s","value":1,"quality":2,'
                    '"ts":"2026-11-27T08:00:00Z"}\n\n{"asset":"a","signal":"s","value":2,"ts":5}\n')
    a, b = load_recording(path)
    assert (a.quality, a.source_ts) == (Quality.BAD, 1795766400.0)
    assert (b.quality, b.value) == (Quality.GOOD, 2.0)


def test_bad_recording_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"asset":"a","signal":"s","value":1,"ts":1}\n{"asset":"a","value":1}\n')
    with pytest.raises(RecordingError, match=r"r\.jsonl:2: asset and signal are required"):
        list(load_recording(path))
    path.write_text('{"asset":"a","signal":"s","value":1,"quality":"meh","ts":1}\n')
    with pytest.raises(RecordingError, match=r":1: quality must be GOOD, UNCERTAIN or BAD"):
        list(load_recording(path))


def test_report_lists_timeline_with_durations_and_summary(rules_from: RulesFrom) -> None:
    result = replay(rules_from(RULE.replace("LEVEL", "7.1")), wave())
    assert [(str(t.kind), t.ts) for t in result.transitions] == [
        ("raised", 1002.0), ("cleared", 1004.0), ("raised", 1007.0), ("cleared", 1009.0)]
    assert [e.duration for e in result.episodes] == [2.0, 2.0]
    text = format_report(result)
    assert "replayed 11 samples from 1970-01-01 00:16:40.000 to 1970-01-01 00:16:50.000" in text
    assert "RAISED   vib-high" in text and "vibration 8 above 7.1 for 1 s" in text
    summary = text.splitlines()[-1].split()
    assert summary[:4] == ["vib-high", "2", "0", "1"]


def test_non_finite_good_samples_are_skipped_like_the_pipeline(rules_from: RulesFrom) -> None:
    samples = [sample("p1", "vibration", float("nan"), 1.0), *wave()]
    result = replay(rules_from(RULE.replace("LEVEL", "7.1")), samples)
    assert (result.samples, result.skipped) == (12, 1)
    assert "skipped 1 good-quality samples without a finite value" in format_report(result)


def test_compare_shows_what_a_change_adds_removes_and_moves(rules_from: RulesFrom) -> None:
    old = rules_from(RULE.replace("LEVEL", "7.1"))
    new = rules_from(RULE.replace("LEVEL", "7.25"))
    c = compare(old, new, iter(wave()))
    assert (len(c.added), len(c.removed), len(c.changed), c.unchanged) == (0, 0, 1, 1)
    (before, after), = c.changed
    assert (before.start, after.start) == (1007.0, 1008.0)
    text = format_comparison(c)
    assert "added 0, removed 0, changed 1, unchanged 1" in text
    assert "~ vib-high on p1: raised 1970-01-01 00:16:47.000" in text

    stricter = rules_from(RULE.replace("LEVEL", "7.9"))
    c = compare(old, stricter, wave())
    assert (len(c.added), len(c.removed), len(c.changed)) == (0, 1, 1)
    assert "- vib-high on p1: raised 1970-01-01 00:16:47.000 (7.3)" in format_comparison(c)
    c = compare(stricter, old, wave())
    assert len(c.added) == 1 and format_comparison(c).count("\n+ ") == 1
