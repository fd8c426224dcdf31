"""Roll-up window logic: one incident per flood, every episode listed exactly once, restart-safe."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.model import (
    MessageKind,
    OutboxMessage,
    RequestDetails,
    RuleState,
    Transition,
    TransitionKind,
)
from gateway.pipeline import Shaped
from gateway.rollup import (
    FLOOD_STATE,
    LINK_STATE,
    AlarmsConfig,
    CriticalPolicy,
    LineConfig,
    RollUp,
)
from gateway.shelve_cli import link_text

SINKS = ["cmms"]


def cfg(**kw: Any) -> AlarmsConfig:
    base: dict[str, Any] = {
        "flood_raises": 3, "flood_window_seconds": 60.0, "incident_update_seconds": 0.0,
        "lines": {"line-3": LineConfig(assets=["pump-*"], incident_asset="L3")}}
    return AlarmsConfig(**(base | kw))


def t(kind: str, asset: str, ts: float, rule: str = "vib", severity: int = 3) -> Transition:
    return Transition(kind=TransitionKind(kind), rule_id=rule, asset=asset, signal="vibration",
                      episode_id=f"{rule}/{asset}/{round(ts * 1000)}", severity=severity,
                      value=8.0, ts=ts, reason="vibration 8 above 7.1",
                      request=RequestDetails(title=f"{rule} on {asset}", priority=severity))


def clear_of(r: Transition, ts: float) -> Transition:
    return Transition(kind=TransitionKind.CLEARED, rule_id=r.rule_id, asset=r.asset,
                      signal=r.signal, episode_id=r.episode_id, severity=r.severity, value=1.0,
                      ts=ts, reason="ok", request=r.request)


def make(c: AlarmsConfig | None = None, individual: frozenset[str] = frozenset()) -> RollUp:
    c = c or cfg()
    return RollUp(c, c.line_of(), lambda rule_id: rule_id in individual, "plant")


def listed(messages: list[OutboxMessage]) -> Counter[str]:
    """How often each episode is named as rolled up across the incident's messages."""
    return Counter(e for m in messages for e in m.body.get("rolled_up", ()))


def test_below_the_limit_nothing_changes() -> None:
    r = make()
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(3)]
    shaped = r.shape(raises, 103.0, SINKS)
    assert list(shaped.transitions) == raises and not shaped.messages
    assert [s.rule_id for s in shaped.states] == [FLOOD_STATE]  # the window is kept


def test_flood_opens_one_incident_and_rolls_up_the_rest() -> None:
    r = make()
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(10)]
    shaped = r.shape(raises, 110.0, SINKS)
    assert list(shaped.transitions) == raises[:3]  # before the limit: their own requests
    requests = [m for m in shaped.messages if m.kind is MessageKind.MAINTENANCE_REQUEST]
    assert len(requests) == 1
    req = requests[0]
    assert req.asset == "L3" and req.episode_id == "incident/line-3/103000"
    assert req.body["title"] == "Plant incident on line-3: 4 conditions in 1 min"
    assert listed(list(shaped.messages)) == Counter(x.episode_id for x in raises[3:])
    links = {s.asset: link_text(s.data) for s in shaped.states if s.rule_id == LINK_STATE}
    assert set(links) == {x.episode_id for x in raises[3:]}  # what `trace` of each shows
    assert all(n is not None and "incident/line-3/103000" in n for n in links.values())
    assert raises[5].episode_id in "".join(str(m.body.get("long_text", m.body.get("note")))
                                           for m in shaped.messages)


def test_always_individual_and_critical_keep_their_request() -> None:
    r = make(individual=frozenset({"fire"}))
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(5)]
    fire = t("raised", "pump-9", 106.0, rule="fire")
    crit = t("raised", "pump-8", 107.0, severity=1)
    shaped = r.shape([*raises, fire, crit], 108.0, SINKS)
    assert fire in shaped.transitions and crit in shaped.transitions
    assert fire.episode_id not in listed(list(shaped.messages))

    rolled = make(cfg(critical=CriticalPolicy.ROLL_UP))
    shaped = rolled.shape([*raises, crit], 108.0, SINKS)
    assert crit not in shaped.transitions
    assert crit.episode_id in listed(list(shaped.messages))


def test_other_lines_and_unknown_assets_are_not_rolled_up() -> None:
    r = make()
    raises = [t("raised", f"fan-{i}", 100.0 + i) for i in range(10)]
    shaped = r.shape(raises, 110.0, SINKS)
    assert list(shaped.transitions) == raises and not shaped.messages


def test_window_slides_raises_spread_out_are_no_flood() -> None:
    r = make()
    for i in range(10):  # one raise every 30 s: never more than 3 within 60 s
        shaped = r.shape([t("raised", f"pump-{i}", 100.0 + 30 * i)], 100.0 + 30 * i, SINKS)
        assert len(shaped.transitions) == 1 and not shaped.messages


def test_clears_fold_into_updates_and_the_flood_ends_with_one_clear() -> None:
    r = make()
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(6)]
    first = r.shape(raises, 106.0, SINKS)
    rolled = raises[3:]
    # A clear of an individual episode goes on as usual; a rolled-up one is folded in.
    shaped = r.shape([clear_of(raises[0], 120.0), clear_of(rolled[0], 120.0)], 120.0, SINKS)
    assert [x.episode_id for x in shaped.transitions] == [raises[0].episode_id]
    assert [m.body["rolled_up_cleared"] for m in shaped.messages] == [[rolled[0].episode_id]]
    assert shaped.messages[0].body["status"] == "in_progress"
    # Window still full of raises: no end yet even when all members cleared.
    shaped = r.shape([clear_of(x, 121.0) for x in rolled[1:]], 121.0, SINKS)
    assert not any(m.body.get("status") == "cleared" for m in shaped.messages)
    # Time passes: fewer than N in the window, all members cleared -> the incident clears.
    shaped = r.shape([], 200.0, SINKS)
    assert [m.key.split(":")[0] for m in shaped.messages] == ["cleared"]
    assert shaped.states[0].data is None  # line idle: state row deleted
    # Normal behaviour resumes.
    nxt = t("raised", "pump-1", 300.0)
    assert list(r.shape([nxt], 300.0, SINKS).transitions) == [nxt]
    keys = [m.key for m in first.messages]
    assert len(keys) == len(set(keys))


def test_long_lists_are_split_over_updates_each_episode_once() -> None:
    r = make(cfg(incident_list_max=5))
    raises = [t("raised", f"pump-{i}", 100.0 + i / 10) for i in range(40)]
    shaped = r.shape(raises, 105.0, SINKS)
    counts = listed(list(shaped.messages))
    assert counts == Counter(x.episode_id for x in raises[3:])
    assert all(len(m.body["rolled_up"]) <= 5 for m in shaped.messages)
    assert len({m.key for m in shaped.messages}) == len(shaped.messages)


def test_updates_wait_for_their_interval_nothing_is_lost() -> None:
    r = make(cfg(incident_update_seconds=30.0))
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(5)]
    r.shape(raises, 105.0, SINKS)
    late = t("raised", "pump-7", 110.0)
    assert not r.shape([late], 110.0, SINKS).messages  # within the interval: held
    later = r.shape([], 140.0, SINKS)
    assert listed(list(later.messages)) == Counter([late.episode_id])


def apply_states(stored: dict[tuple[str, str], RuleState], shaped: Shaped) -> None:
    for s in shaped.states:
        if s.data is None:
            stored.pop((s.rule_id, s.asset), None)
        else:
            stored[(s.rule_id, s.asset)] = s


def test_restart_mid_flood_keeps_the_incident_and_lists_nothing_twice() -> None:
    stored: dict[tuple[str, str], RuleState] = {}
    r = make()
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(6)]
    first = r.shape(raises, 106.0, SINKS)
    apply_states(stored, first)
    again = make()
    assert again.restore(stored.values()) == 1
    more = [t("raised", f"pump-{i}", 110.0 + i) for i in range(6, 9)]
    shaped = again.shape(more, 112.0, SINKS)
    assert not [m for m in shaped.messages if m.kind is MessageKind.MAINTENANCE_REQUEST]
    assert {m.episode_id for m in shaped.messages} == {"incident/line-3/103000"}
    assert listed([*first.messages, *shaped.messages]) == Counter(
        x.episode_id for x in [*raises[3:], *more])
    keys = [m.key for m in [*first.messages, *shaped.messages]]
    assert len(keys) == len(set(keys))


def test_bad_stored_state_starts_the_line_clean() -> None:
    r = make()
    assert r.restore([RuleState(FLOOD_STATE, "line-3", "", ["junk"])]) == 0
    assert r.shape([t("raised", "pump-1", 1.0)], 1.0, SINKS).transitions


def test_rollup_off_passes_everything() -> None:
    r = make(cfg(rollup="off"))
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(10)]
    assert list(r.shape(raises, 110.0, SINKS).transitions) == raises


def test_config_is_strict_and_lines_match_patterns() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        AlarmsConfig(flood_raises=0)
    with pytest.raises(ValidationError):
        AlarmsConfig.model_validate({"lines": {"l1": {"asset": ["x"]}}})  # typo: assets
    c = AlarmsConfig.model_validate({"lines": {"l1": {"assets": ["pump-*", "fan-3"]},
                                               "l2": {"assets": ["fan-*"]}}})
    line_of = c.line_of()
    assert [line_of(a) for a in ("pump-9", "fan-3", "fan-4", "mixer")] == ["l1", "l1", "l2",
                                                                             None]


def test_incident_goes_to_the_lines_upstreams_or_everywhere_never_nowhere() -> None:
    lines = {"line-3": LineConfig(assets=["pump-*"], upstreams=["sap"])}
    raises = [t("raised", f"pump-{i}", 100.0 + i) for i in range(5)]
    shaped = make(cfg(lines=lines)).shape(raises, 105.0, ["cmms", "sap"])
    assert {m.sink for m in shaped.messages} == {"sap"}
    lines = {"line-3": LineConfig(assets=["pump-*"], upstreams=["typo"])}
    shaped = make(cfg(lines=lines)).shape(raises, 105.0, ["cmms", "sap"])
    assert {m.sink for m in shaped.messages} == {"cmms", "sap"}
