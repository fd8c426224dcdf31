"""The alarm-management part of the page: incidents, shelves, bad actors, chattering rules."""

from __future__ import annotations

from typing import Any

from gateway import page_alarms

ALARMS: dict[str, Any] = {
    "rollup": {"incidents": [{"line": "line-3", "incident_id": "inc/line-3/1", "episodes": 37,
                              "open_episodes": 30, "title": "Plant incident on line-3",
                              "started_at": "2026-12-05T00:00:00.000Z", "updates": 2,
                              "raises_in_window": 37}], "incidents_opened": 1, "rolled_up": 37},
    "shelving": {"shelves": [{"kind": "asset", "target": "fan-3", "until": "2026-12-05T04:00Z",
                              "remaining_seconds": 14000, "reason": "bearing being replaced",
                              "shelved_by": "tech"}],
                 "hidden_episodes": [{"episode_id": "e", "rule_id": "r", "asset": "pump-4",
                                      "raised_at": "2026-12-05T00:00Z"}],
                 "suppressed": 1, "released": 0, "hidden_cleared": 0},
    "flood": {"lines": {"line-3": {"raises_10min": 37, "flood": True}},
              "bad_actors": [{"rule_id": "vib-high", "raises_24h": 52}],
              "chattering": [{"rule_id": "temp-hi", "asset": "pump-2", "transitions_1h": 14}],
              "chatter_limit_per_hour": 10},
}


def test_the_cards_learn_what_is_shelved_and_that_a_line_floods() -> None:
    keys = page_alarms.page_keys(ALARMS)
    assert keys["shelved"] == ["fan-3", "pump-4"]
    assert keys["flood"]["active"] is True
    assert "line-3: 37 conditions rolled up into one incident request" in keys["flood"]["message"]
    assert page_alarms.page_keys({}) == {"shelved": [], "flood": None}


def test_the_section_names_what_a_technician_should_look_at() -> None:
    text = page_alarms.section(ALARMS)
    for words in ("Plant incident on line-3: 37 conditions", "asset fan-3",
                  "bearing being replaced", "37 (flood)", "vib-high", "temp-hi on pump-2",
                  "14 raises and clears in an hour"):
        assert words in text, words
    assert page_alarms.section({}) == ""
    assert page_alarms.section({"flood": {"lines": {}, "bad_actors": [], "chattering": []}}) == ""
