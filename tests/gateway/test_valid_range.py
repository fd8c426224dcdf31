"""Valid ranges (gateway/valid_range.py): what is outside becomes bad data, counted and logged
once; mistakes in `[[sources.valid_ranges]]` are named by `plantbridge check`. The daemon end
to end is tests/e2e/test_valid_range.py."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

import pytest

from gateway.cli import main
from gateway.model import Quality, Sample, SampleBatch, SourceHealth, SourceState
from gateway.valid_range import OUT_OF_RANGE, RangeCheck, RangedSource, ValidRange
from tests.gateway.test_config import BASE, RULE, _check, _write

GOOD = Quality.GOOD


def s(asset: str, signal: str, value: float | None, quality: Quality = GOOD) -> Sample:
    return Sample(asset, signal, value, quality, 1.8e9)


def check(*ranges: dict[str, object]) -> RangeCheck:
    return RangeCheck("plant", [ValidRange.model_validate(r) for r in ranges])


def test_in_range_readings_pass_as_the_same_batch() -> None:
    rc = check({"signal": "vibration", "min": 0.0, "max": 50.0})
    batch = [s("p1", "vibration", 0.0), s("p1", "vibration", 50.0), s("p1", "current", 1e6)]
    assert rc.apply(batch) is batch  # bounds are inclusive; other signals are not checked
    assert rc.out_of_range == 0


def test_readings_outside_become_bad_data_and_nothing_else_changes() -> None:
    rc = check({"signal": "vibration", "min": 0.0, "max": 50.0})
    batch = [s("p1", "vibration", 3.0), s("p1", "vibration", 6553.5),
             s("p1", "vibration", -9999.0), s("p1", "vibration", None, Quality.BAD)]
    out = rc.apply(batch)
    assert out[0] is batch[0] and out[3] is batch[3]
    assert [(x.value, x.quality) for x in out[1:3]] == [(None, Quality.BAD)] * 2
    assert [(x.asset, x.signal, x.source_ts, x.device_ts) for x in out] == \
        [(x.asset, x.signal, x.source_ts, x.device_ts) for x in batch]
    assert rc.out_of_range == 2


def test_one_sided_ranges_and_the_first_matching_entry_applies() -> None:
    rc = check({"signal": "temperature", "asset_pattern": "oven-*", "max": 900.0},
               {"signal": "temperature", "min": -40.0, "max": 150.0})
    out = rc.apply([s("oven-1", "temperature", 850.0), s("pump-1", "temperature", 850.0),
                    s("oven-1", "temperature", -1e300)])
    assert [x.value for x in out] == [850.0, None, -1e300]  # the oven's range has no min
    assert rc.out_of_range == 1


def test_logged_once_per_signal_until_it_reads_in_range_again(
        caplog: pytest.LogCaptureFixture) -> None:
    rc = check({"signal": "vibration", "min": 0.0, "max": 50.0})
    with caplog.at_level(logging.INFO, logger="gateway.valid_range"):
        for v in (6553.5, 6553.5, 1e300, 3.0, 3.0, -1.0):
            rc.apply([s("p1", "vibration", v), s("p2", "vibration", 1.0)])
    words = [r.getMessage() for r in caplog.records]
    outside = [w for w in words if "outside its valid range 0..50" in w]
    assert len(outside) == 2, words  # 6553.5 once, then -1.0 after it was back in range
    assert "p1 vibration = 6553.5" in outside[0] and "source plant" in outside[0]
    assert sum("vibration reads in range again (" in w for w in words) == 1
    assert rc.out_of_range == 4
    assert rc.outside_now() == "out of valid range: p1 vibration -1.0 (valid 0..50)"
    for asset in ("p3", "p4", "p5", "p6"):
        rc.apply([s(asset, "vibration", 51.0)])
    assert rc.outside_now().endswith("p4 vibration 51.0 (valid 0..50) and 2 more")


class _Inner:
    """A source with two batches, each acknowledged by the pipeline later."""

    name = "plant"

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def batches(self) -> AsyncIterator[SampleBatch]:
        try:
            yield SampleBatch([s("p1", "vibration", 1.0)], lambda: self.acked.append(1))
            yield SampleBatch([s("p1", "vibration", 99.0)], lambda: self.acked.append(2))
        finally:
            self.closed = True

    def health(self) -> SourceHealth:
        return SourceHealth(SourceState.CONNECTED, rejected={"nan": 2})


async def test_the_wrapped_source_keeps_acks_and_adds_its_count_to_health() -> None:
    inner = _Inner()
    src = RangedSource(inner, check({"signal": "vibration", "max": 50.0}))
    got = []
    async with src:
        async for batch in src.batches():
            got.append(batch)
    assert got[0].samples[0].value == 1.0 and got[1].samples[0].value is None
    for batch in got:
        assert batch.ack is not None
        batch.ack()
    assert inner.acked == [1, 2] and inner.closed
    assert src.health().rejected == {"nan": 2, OUT_OF_RANGE: 1}
    assert src.health().detail == "out of valid range: p1 vibration 99.0 (valid at most 50)"
    assert src.name == "plant"


@pytest.mark.parametrize(("entry", "expected"), [
    ('signal = "vibration"', "give min, max or both"),
    ('signal = "vibration"\nmin = 5.0\nmax = 5.0', "min 5 must be below max 5"),
    ('signal = "vibration"\nmax = inf', "max must be a finite number"),
    ('signal = "vibration"\nmax = nan', "max must be a finite number"),
    ('signal = "vibration"\nmax = 50.0\nmaximum = 3', "maximum: unknown key"),
    ('min = 0.0', "signal"),
])
def test_config_mistakes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   entry: str, expected: str) -> None:
    text = BASE.format(state=tmp_path, port=1883).replace(
        '[[upstreams]]', f"[[sources.valid_ranges]]\n{entry}\n\n[[upstreams]]")
    path = _write(tmp_path, text, {"a.toml": RULE.format(id="vib", clear=6.0)})
    code, _, err = _check(path, capsys)
    assert code == 1, err
    assert "sources[0] 'plant'" in err and "valid_ranges" in err, err
    assert expected in err, err


def test_a_valid_range_passes_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE.format(state=tmp_path, port=1883).replace(
        '[[upstreams]]', '[[sources.valid_ranges]]\nsignal = "vibration"\nmin = 0\nmax = 50\n\n'
                         '[[upstreams]]')
    path = _write(tmp_path, text, {"a.toml": RULE.format(id="vib", clear=6.0)})
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr().err
    assert math.isinf(ValidRange(signal="x", max=1.0).limits()[0])

