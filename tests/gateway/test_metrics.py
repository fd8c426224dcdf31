"""`/metrics` figures that must exist even when they are zero."""

from __future__ import annotations

from typing import Any

from gateway.metrics import render


def _snapshot(outbox: dict[str, Any], sinks: list[str]) -> dict[str, Any]:
    stats = {"samples": 0, "rejected_invalid": 0, "raised": 0, "cleared": 0, "messages": 0,
             "commit_failures": 0, "evaluation_errors": 0, "storage_problem": ""}
    return {"pipeline": stats, "sources": [], "outbox": outbox, "open_episodes": [],
            "reload": {"error": ""},
            "upstreams": [{"name": n, "breaker": "closed", "accepted": 0, "rejected": 0,
                           "retried": 0} for n in sinks]}


def test_empty_outbox_reports_zero_for_every_configured_sink() -> None:
    text = render(lambda: _snapshot({"pending": {}, "dead": {}}, ["cmms", "sap"])).decode()
    for metric in ("plantbridge_outbox_pending", "plantbridge_outbox_dead"):
        for sink in ("cmms", "sap"):
            assert f'{metric}{{sink="{sink}"}} 0.0' in text, text


def test_a_sink_removed_by_reload_still_shows_what_it_left() -> None:
    text = render(lambda: _snapshot({"pending": {"old": 3}, "dead": {}}, ["cmms"])).decode()
    assert 'plantbridge_outbox_pending{sink="old"} 3.0' in text
    assert 'plantbridge_outbox_pending{sink="cmms"} 0.0' in text
    assert 'plantbridge_outbox_dead{sink="old"}' not in text
