from __future__ import annotations

import pytest

from gateway.messages import dedup_key, messages_for
from gateway.model import MessageKind, RequestDetails, Transition, TransitionKind


def _t(kind: TransitionKind, episode: str = "vib/pump-1/1000") -> Transition:
    return Transition(kind, "vib", "pump-1", "vibration", episode, 2, 7.4, 1.0,
                      "vibration 7.4 above 7.1", RequestDetails("High vibration on {asset}",
                                                                priority=2))


def test_dedup_key_is_short_stable_and_distinct() -> None:
    a, b = dedup_key("vib/pump-1/1000"), dedup_key("vib/pump-1/1001")
    assert len(a) == 20 and a.startswith("PB")
    assert a == dedup_key("vib/pump-1/1000")
    assert a != b


def test_raise_and_clear_messages_per_sink() -> None:
    raised = messages_for(_t(TransitionKind.RAISED), ["cmms", "sap"], "site-a")
    cleared = messages_for(_t(TransitionKind.CLEARED), ["cmms", "sap"], "site-a")
    assert [m.sink for m in raised] == ["cmms", "sap"]
    assert {m.kind for m in raised} == {MessageKind.MAINTENANCE_REQUEST}
    assert {m.kind for m in cleared} == {MessageKind.STATUS_UPDATE}
    keys = {m.key for m in raised + cleared}
    assert len(keys) == 4  # one per intent and target
    body = raised[0].body
    assert body["title"] == "High vibration on pump-1"
    assert body["raised_at"] == "1970-01-01T00:00:01.000Z"
    assert cleared[0].body["status"] == "cleared"
    # Re-deriving the same transition gives the same keys and bodies (retries are byte-identical).
    again = messages_for(_t(TransitionKind.RAISED), ["cmms", "sap"], "site-a")
    assert [(m.key, m.body) for m in again] == [(m.key, m.body) for m in raised]


def test_unknown_placeholder_is_left_as_written() -> None:
    t = Transition(TransitionKind.RAISED, "r", "a", "s", "e", 3, None, 0.0, "why",
                   RequestDetails("Check {unknown} on {asset}"))
    assert messages_for(t, ["x"], "s")[0].body["title"] == "Check {unknown} on {asset}"


def test_fast_dedup_key_and_iso_time_match_the_reference_encodings() -> None:
    """The cheap encodings (15 digest bytes in base32, the date part formatted once per second)
    give exactly what the straightforward ones give: keys and bodies already stored, and the
    upstream records made from them, must stay the same across this change."""
    import base64
    import hashlib
    import random
    from datetime import UTC, datetime

    from gateway.messages import iso_time

    def reference_key(episode_id: str) -> str:
        return "PB" + base64.b32encode(hashlib.sha256(episode_id.encode()).digest()).decode()[:18]

    def reference_time(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")

    rng = random.Random(14)
    for i in range(2000):
        episode_id = f"vib-high/pump-{i}/{rng.random()}"
        assert dedup_key(episode_id) == reference_key(episode_id)
    edges = [0.0, 1.9999995, 1.0000005, 1e9 + 0.9995, 1764892800.9999999, -0.5, -1.0000005]
    spread = [rng.uniform(-1e9, 4e9) for _ in range(5000)]
    half_us = [rng.randrange(0, 4 * 10**9) + (rng.randrange(10**6) + 0.5) / 1e6
               for _ in range(5000)]
    for ts in edges + spread + half_us + sorted(spread):  # sorted: the per-second cache
        assert iso_time(ts) == reference_time(ts), ts
    # out of datetime's range (a hand-written shelf expiry): an error, as datetime gives
    for ts in (1e12, -1e12, 253402300800.0):
        with pytest.raises(ValueError):
            reference_time(ts)
        with pytest.raises(ValueError):
            iso_time(ts)
    assert iso_time(253402300799.0) == reference_time(253402300799.0)
