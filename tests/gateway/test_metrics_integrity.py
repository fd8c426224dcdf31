"""The integrity families of /metrics: each health count lands in the family that names it."""

from __future__ import annotations

from typing import Any

from gateway.metrics import _integrity


def _families(snapshot: dict[str, Any]) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {m.name: [(s.labels, s.value) for s in m.samples] for m in _integrity(snapshot)}


def test_worker_restarts_are_their_own_family_not_a_timestamp_verdict() -> None:
    snap = {"sources": [{"name": "plant-mqtt", "clock_skew_seconds": None,
                         "counted": {"worker_restarts": 3, "zoneless": 7},
                         "duplicates_skipped": 2}],
            "pipeline": {}, "outbox": {}}
    got = _families(snap)
    assert got["plantbridge_source_worker_restarts"] == [({"source": "plant-mqtt"}, 3)]
    assert got["plantbridge_source_timestamps"] == [
        ({"source": "plant-mqtt", "why": "zoneless"}, 7)]
    assert got["plantbridge_samples_skipped"] == [
        ({"source": "plant-mqtt", "reason": "duplicate"}, 2)]
