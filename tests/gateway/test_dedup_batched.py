"""The gate over a whole batch (`admit_all`) admits, marks and counts as one sample at a time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dedup import SampleGate
from gateway.model import Quality, Sample, SampleMark
from gateway.timebase import DuplicatePolicy

T0 = 1_780_000_000.0

_sample = st.builds(
    lambda asset, signal, device: Sample(asset, signal, 1.0, Quality.GOOD, T0, device),
    st.sampled_from(["pump-1", "pump-2"]), st.sampled_from(["vibration", "current"]),
    st.none() | st.integers(0, 12).map(lambda k: T0 + k))
# a batch is often one signal's readings: runs of the same signal are made likely
_batch = st.lists(_sample, max_size=30) | _sample.flatmap(
    lambda s: st.lists(st.integers(-3, 12), max_size=30).map(
        lambda ks: [s._replace(device_ts=T0 + k) for k in ks]))


def _marks(gate: SampleGate) -> list[SampleMark]:
    return sorted(gate.changed_marks(), key=lambda m: (m.source, m.asset, m.signal))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "coarse"]), _batch), max_size=8),
       st.lists(_sample, max_size=5))
def test_admit_all_is_admit_per_sample(batches: list[tuple[str, list[Sample]]],
                                       restored: list[Sample]) -> None:
    policies = {"coarse": DuplicatePolicy.EVALUATE_ALL}
    one, many = SampleGate(policies), SampleGate(policies)
    loaded = [SampleMark("a", s.asset, s.signal, s.device_ts) for s in restored
              if s.device_ts is not None]
    one.load(loaded)
    many.load(loaded)
    for source, batch in batches:
        want = [s for s in batch if one.admit(source, s)]
        assert many.admit_all(source, batch) == want
        assert many.skipped == one.skipped
        assert len(many) == len(one)
    assert _marks(many) == _marks(one)
    # and both carry on the same after the batches
    probe = Sample("pump-1", "vibration", 2.0, Quality.GOOD, T0, T0 + 6)
    assert many.admit_all("a", [probe]) == ([probe] if one.admit("a", probe) else [])


def test_a_resent_payload_is_skipped_whole_and_counted() -> None:
    gate = SampleGate()
    payload = [Sample("pump-1", "vibration", float(k), Quality.GOOD, T0, T0 + k)
               for k in range(100)]
    assert gate.admit_all("mqtt", payload) == payload
    assert gate.admit_all("mqtt", payload) == []  # a redelivery of the same message
    assert gate.skipped == {"mqtt": 100}
    assert [m.device_ts for m in gate.changed_marks()] == [T0 + 99]
