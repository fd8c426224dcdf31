"""The UNS config: the ISA-95 topic layout and the mistakes it refuses, in plain words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway import config as config_mod
from gateway.model import OutboxRecord, TransitionKind
from gateway.upstream.uns import AssetState
from gateway.upstream.uns_config import UnsSinkConfig
from tests.upstream.uns.conftest import uns_record


def cfg(**over: Any) -> UnsSinkConfig:
    raw: dict[str, Any] = {"type": "uns", "name": "uns", "enterprise": "acme", "site": "lyon"}
    return UnsSinkConfig.model_validate(raw | over)


def test_default_layout_places_assets_from_the_table() -> None:
    c = cfg(assets={"press-7": {"area": "stamping", "line": "line-2"}})
    t = c.topics_for("press-7")
    assert t.state == "acme/lyon/stamping/line-2/press-7/state"
    assert t.event("raised") == "acme/lyon/stamping/line-2/press-7/events/raised"
    assert c.topics_for("fan-1").base == "acme/lyon/unassigned/unassigned/fan-1"
    assert c.state_filter == "acme/lyon/+/+/+/state"
    assert c.probe_topic == "acme/lyon/_plantbridge/probe"
    assert c.effective_client_id == "plantbridge-uns-lyon-uns"


def test_a_template_with_cells_and_literals() -> None:
    c = cfg(topic_template="uns/{site}/{area}/{line}/{cell}/{asset}", default_cell="none",
            assets={"press-7": {"area": "stamping", "line": "l2", "cell": "c3"}})
    assert c.topics_for("press-7").base == "uns/lyon/stamping/l2/c3/press-7"
    assert c.topics_for("other").base == "uns/lyon/unassigned/unassigned/none/other"
    assert c.state_filter == "uns/lyon/+/+/+/+/state"
    assert c.sync_topic == "uns/lyon/_plantbridge/plantbridge-uns-lyon-uns/sync"


@pytest.mark.parametrize(("over", "words"), [
    ({"topic_template": "{enterprise}/{site}/{asset}/x"}, "must end with the level {asset}"),
    ({"topic_template": "{enterprise}/{plant}/{asset}"}, "unknown placeholder '{plant}'"),
    ({"topic_template": "{enterprise}/s-{site}/{asset}"}, "a placeholder must be a whole level"),
    ({"topic_template": "{enterprise}//{asset}"}, "is empty"),
    ({"topic_template": "{enterprise}/+/{asset}"}, "'+'"),
    ({"site": "ly/on"}, "site 'ly/on' contains '/'"),
    ({"assets": {"p-1": {"line": "a#b"}}}, "assets.p-1.line 'a#b' contains '#'"),
    ({"password": {"value": "x"}}, "password needs a username"),
    ({"client_id": "has space"}, "client_id 'has space'"),
    ({"retain_events": True}, "Extra inputs are not permitted"),
])
def test_mistakes_are_refused_in_plain_words(over: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("{", r"\{").replace("+", r"\+")):
        cfg(**over)


def test_an_asset_name_that_cannot_be_a_level_is_refused_per_record() -> None:
    with pytest.raises(ValueError, match="asset name 'a\\+b' contains '\\+'"):
        cfg().topics_for("a+b")


def test_registered_as_an_upstream_type(tmp_path: Path) -> None:
    raw = {"gateway": {"state_dir": str(tmp_path)},
           "upstreams": [{"type": "uns", "name": "uns", "enterprise": "e", "site": "s"}]}
    loaded = config_mod.validate(raw, "plantbridge.toml")
    assert isinstance(loaded.upstreams[0], UnsSinkConfig)
    with pytest.raises(config_mod.ConfigError, match=r"upstreams\[0\] 'uns': site: "):
        config_mod.validate({"upstreams": [{"type": "uns", "name": "uns", "enterprise": "e"}]},
                            "plantbridge.toml")


def _state_after(*records: OutboxRecord) -> dict[str, Any]:
    state = AssetState("pump-1")
    for rec in records:
        state.apply(rec)
    return state.document(cfg())


def test_state_follows_events_and_repeats_change_nothing() -> None:
    r1 = uns_record(TransitionKind.RAISED, episode="ep-1", raised_at="2026-01-01T00:00:01.000Z")
    r2 = uns_record(TransitionKind.RAISED, episode="ep-2", severity=1,
                    raised_at="2026-01-01T00:00:02.000Z")
    c1 = uns_record(TransitionKind.CLEARED, episode="ep-1", value=2.5,
                    cleared_at="2026-01-01T00:00:03.000Z")
    once = _state_after(r1, r2, c1)
    assert [c["episode_id"] for c in once["open"]] == ["ep-2"]
    assert once["worst_severity"] == 1 and once["last_values"]["vibration"]["value"] == 2.5
    assert once["updated_at"] == "2026-01-01T00:00:03.000Z"
    assert once["open"][0]["since"] == "2026-01-01T00:00:02.000Z"
    assert _state_after(r1, r1, r2, c1, c1, r2) == once  # resent events are idempotent
    back = AssetState.from_document(once, "plantbridge-uns-lyon-uns")
    assert back is not None and list(back.conditions) == ["ep-2"]
    assert AssetState.from_document(once, "another-gateway") is None
