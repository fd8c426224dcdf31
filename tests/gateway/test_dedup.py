"""Each sample once: resends, redeliveries and out-of-order arrivals are counted and skipped."""

from __future__ import annotations

from pathlib import Path

from gateway.dedup import SampleGate
from gateway.model import Quality, Sample, SampleMark, Transition
from gateway.timebase import DuplicatePolicy
from rules import RuleEngine, load_rule_files

T0 = 1_780_000_000.0
THREE_OF_FIVE = """
[[rule]]
id = "vib-3of5"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 5.0
count = 3
of_last_samples = 5
"""


def vib(value: float, device_ts: float | None, received: float = T0 + 100) -> Sample:
    return Sample("pump-1", "vibration", value, Quality.GOOD, received, device_ts)


def run(engine: RuleEngine, gate: SampleGate | None, samples: list[Sample]) -> list[Transition]:
    out: list[Transition] = []
    for s in samples:
        if gate is None or gate.admit("line3", s):
            out += engine.evaluate(s)
    return out


def test_a_resent_copy_does_not_complete_a_3_of_5_window(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(THREE_OF_FIVE)
    rules = load_rule_files([tmp_path / "r.toml"])
    # 8, 3, 3, 8, 3 is 2 of 5 above 5: nothing to raise. The fourth message arrives twice
    # (a device resend, or a broker redelivery after a reconnect).
    sent = [vib(8, T0 + 1), vib(3, T0 + 2), vib(3, T0 + 3), vib(8, T0 + 4), vib(8, T0 + 4),
            vib(3, T0 + 5)]
    assert run(RuleEngine(rules), None, sent)  # without the gate the copy raises a request
    gate = SampleGate()
    assert run(RuleEngine(rules), gate, sent) == []
    assert gate.skipped == {"line3": 1}


def test_not_newer_is_skipped_per_source_asset_and_signal() -> None:
    gate = SampleGate()
    assert gate.admit("a", vib(1, T0 + 2))
    assert not gate.admit("a", vib(1, T0 + 2))  # identical resend
    assert not gate.admit("a", vib(9, T0 + 1))  # older: out of order
    assert gate.admit("a", vib(2, T0 + 3))
    assert gate.admit("b", vib(2, T0 + 3))  # another source has its own marks
    other = Sample("pump-1", "temperature", 50.0, Quality.GOOD, T0, T0 + 3)
    assert gate.admit("a", other)  # another signal too
    assert gate.skipped == {"a": 2}
    assert len(gate) == 3


def test_samples_without_device_time_are_always_evaluated() -> None:
    gate = SampleGate()
    assert all(gate.admit("modbus", vib(1, None)) for _ in range(3))
    assert gate.skipped == {}
    assert gate.changed_marks() == []


def test_evaluate_all_policy_admits_everything_for_that_source_only() -> None:
    gate = SampleGate({"coarse": DuplicatePolicy.EVALUATE_ALL,
                       "fine": DuplicatePolicy.SKIP_NOT_NEWER})
    assert gate.admit("coarse", vib(1, T0)) and gate.admit("coarse", vib(2, T0))
    assert gate.admit("fine", vib(1, T0)) and not gate.admit("fine", vib(2, T0))
    assert gate.admit("unnamed", vib(1, T0)) and not gate.admit("unnamed", vib(1, T0))
    gate.set_policies({})  # a reload: back to the default (its ungated samples left no mark)
    assert gate.admit("coarse", vib(3, T0)) and not gate.admit("coarse", vib(3, T0))
    assert gate.skipped == {"fine": 1, "unnamed": 1, "coarse": 1}


def test_changed_marks_are_handed_out_once_and_survive_a_restart() -> None:
    gate = SampleGate()
    gate.admit("mqtt", vib(1, T0 + 1))
    gate.admit("mqtt", vib(1, T0 + 2))
    gate.admit("mqtt", Sample("fan-1", "current", 3.0, Quality.GOOD, T0, T0 + 7))
    marks = sorted(gate.changed_marks(), key=lambda m: m.asset)
    assert marks == [SampleMark("mqtt", "fan-1", "current", T0 + 7),
                     SampleMark("mqtt", "pump-1", "vibration", T0 + 2)]
    assert gate.changed_marks() == []  # nothing changed since
    assert not gate.admit("mqtt", vib(1, T0 + 2))
    assert gate.changed_marks() == []  # a skip changes no mark
    # A restart: the marks come back, and the broker's redelivery is skipped.
    restarted = SampleGate()
    restarted.load(marks)
    assert restarted.changed_marks() == []
    assert not restarted.admit("mqtt", vib(1, T0 + 2))
    assert restarted.admit("mqtt", vib(1, T0 + 2.5))
    restarted.load([SampleMark("mqtt", "pump-1", "vibration", T0)])  # an older mark loses
    assert not restarted.admit("mqtt", vib(1, T0 + 2.5))


def test_marks_read_from_the_journal_are_stored_at_the_next_checkpoint() -> None:
    gate = SampleGate()
    gate.load([SampleMark("plc", "pump-1", "vibration", 10.0)])
    gate.load_journaled({("plc", "pump-1", "vibration"): 12.0,
                         ("plc", "pump-1", "current"): 5.0})
    assert not gate.admit("plc", Sample("pump-1", "vibration", 1.0, Quality.GOOD, 0.0, 12.0))
    assert sorted(m.device_ts for m in gate.changed_marks()) == [5.0, 12.0]
