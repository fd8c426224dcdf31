"""Every rule kind through the same checks: the `Rule` protocol as the engine relies on it."""

from __future__ import annotations

import pytest

from gateway.model import EpisodeState, TransitionKind
from rules.build import build_instance
from rules.spec import KINDS, RuleSpec

BASE = {"id": "r", "asset": "a1", "severity": 2, "title": "{rule_id} on {asset}: {value}"}
KIND_FIELDS: dict[str, dict[str, object]] = {
    "threshold": {"signal": "s", "above": 5.0, "clear_below": 4.0, "on_delay_seconds": 1.0},
    "threshold-count": {"kind": "threshold", "signal": "s", "above": 5.0, "count": 2,
                        "of_last_samples": 3},
    "threshold-inside": {"kind": "threshold", "signal": "s", "inside": [1.0, 2.0]},
    "rate": {"signal": "s", "above": 5.0, "window_seconds": 10.0},
    "stale": {"signal": "s", "limit_seconds": 5.0},
    "bad_quality": {"signal": "s", "limit_seconds": 1.0},
    "combination": {"all_of": [{"signal": "s", "above": 1.0}, {"signal": "t", "equals": 1.0}]},
}


def spec_for(name: str, **changes: object) -> RuleSpec:
    fields = {**BASE, "kind": name, **KIND_FIELDS[name], **changes}
    return KINDS[str(fields["kind"])].model_validate(fields)


@pytest.fixture(params=sorted(KIND_FIELDS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_kind_is_covered() -> None:
    assert {str(KIND_FIELDS[n].get("kind", n)) for n in KIND_FIELDS} == set(KINDS)


def test_spec_is_valid(name: str) -> None:
    assert spec_for(name).problems() == []


def test_identity_and_keys(name: str) -> None:
    rule = build_instance(spec_for(name, suppress_while={"signal": "mm", "equals": 1}), "a1")
    assert (rule.rule_id, rule.asset) == ("r", "a1")
    keys = list(rule.keys())
    assert ("a1", "s") in keys and ("a1", "mm") in keys
    assert all(asset == "a1" for asset, _ in keys)
    assert {k for k, _ in rule.handlers()} == set(keys)


def test_fingerprint_is_stable_and_tracks_behaviour(name: str) -> None:
    a, b = build_instance(spec_for(name), "a1"), build_instance(spec_for(name), "a1")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != build_instance(spec_for(name), "a2").fingerprint()
    assert a.fingerprint() != build_instance(spec_for(name, severity=1), "a1").fingerprint()
    described = build_instance(spec_for(name, description="words only"), "a1")
    assert a.fingerprint() == described.fingerprint()


def test_close_without_an_episode_says_nothing(name: str) -> None:
    rule = build_instance(spec_for(name), "a1")
    assert rule.episode() is None
    assert rule.close(10.0, "rule removed on reload") is None


def test_restore_then_close_clears_that_episode(name: str) -> None:
    rule = build_instance(spec_for(name), "a1")
    episode = EpisodeState("r", "a1", "r/a1/5000", 5.0, 2)
    rule.restore(episode)
    assert rule.episode() == episode
    assert rule.tick(6.0) is None  # restored active: time alone raises nothing new
    t = rule.close(9.0, "rule removed on reload")
    assert t is not None
    assert (t.kind, t.episode_id, t.ts, t.reason, t.rule_id, t.asset, t.severity) == (
        TransitionKind.CLEARED, "r/a1/5000", 9.0, "rule removed on reload", "r", "a1", 2)
    assert rule.episode() is None and rule.close(10.0, "again") is None
