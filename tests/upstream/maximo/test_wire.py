"""What a Maximo work log note says: a planner tells a clear, a roll-up update and a "completed
while still active" comment apart by the description alone."""

from __future__ import annotations

from gateway.upstream.maximo_wire import WORKLOG_DESCRIPTION_MAX, worklog_entry


def test_each_kind_of_note_says_what_it_is() -> None:
    base = {"dedup_key": "PBABC", "updated_at": "2026-12-05T03:00:00Z", "reason": "r"}
    comment = worklog_entry(base | {"update": True, "closed_upstream": True, "note": "SR 7 ..."})
    update = worklog_entry(base | {"update": True, "note": "3 more assets"})
    clear = worklog_entry(base | {"rule_id": "vib", "cleared_at": "t", "episode_id": "e"})
    assert comment["description"].startswith("Completed while condition active (PBABC")
    assert "SR 7 ..." in comment["description_longdescription"]
    assert update["description"].startswith("Incident update (PBABC")
    assert clear["description"] == "Condition cleared (PBABC)"
    assert all(len(n["description"]) <= WORKLOG_DESCRIPTION_MAX
               for n in (comment, update, clear))
