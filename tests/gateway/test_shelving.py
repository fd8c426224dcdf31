"""Shelving: raises held back while shelved, clears of older episodes still go, expiry re-judges
the rule's own state (report by exception: no new sample needed), and the outbox table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buffer.shelves import Shelf
from buffer.store import OutboxStore
from gateway.cli import main
from gateway.model import Quality, RuleState, Sample, Transition, TransitionKind
from gateway.shelve_cli import duration_seconds
from gateway.shelving import HIDDEN_STATE, Shelving
from rules import RuleEngine, load_rule_files

RULES = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
"""
SINKS = ["cmms"]


def engine(tmp_path: Path) -> RuleEngine:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return RuleEngine(load_rule_files([path]))


def sample(asset: str, value: float, ts: float) -> Sample:
    return Sample(asset, "vibration", value, Quality.GOOD, ts)


def shelf(target: str, until: float, kind: str = "rule") -> Shelf:
    return Shelf(kind, target, until, "nuisance while the bearing is on order", "tech", 0.0)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.engine = engine(tmp_path)
        self.shelving = Shelving(self.engine.instance)
        self.stored: dict[str, RuleState] = {}

    def feed(self, asset: str, value: float, ts: float) -> list[Transition]:
        return self.step(list(self.engine.evaluate(sample(asset, value, ts))), ts)

    def step(self, transitions: list[Transition], now: float) -> list[Transition]:
        shaped = self.shelving.shape(transitions, now, SINKS)
        for s in shaped.states:
            assert s.rule_id == HIDDEN_STATE
            if s.data is None:
                self.stored.pop(s.asset, None)
            else:
                self.stored[s.asset] = s
        return list(shaped.transitions)


def test_shelved_raise_is_held_and_its_clear_too(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("vib-high", 1000.0)])
    assert rig.feed("pump-1", 9.0, 10.0) == []
    assert len(rig.stored) == 1  # the hidden episode survives a restart
    assert rig.feed("pump-1", 1.0, 20.0) == []
    assert rig.stored == {}
    assert rig.shelving.suppressed == 1 and rig.shelving.hidden_cleared == 1
    assert rig.step([], 2000.0) == []  # nothing to release: it cleared while shelved


def test_expiry_raises_a_condition_that_still_holds_without_a_new_sample(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("vib-high", 100.0)])
    assert rig.feed("pump-1", 9.0, 10.0) == []
    assert rig.step([], 99.0) == []  # still shelved
    released = rig.step([], 100.5)  # the next tick after expiry: no sample since t=10
    assert [(t.kind, t.asset, t.episode_id, t.ts) for t in released] == [
        (TransitionKind.RAISED, "pump-1", "vib-high/pump-1/10000", 100.5)]
    assert "held while shelved" in released[0].reason
    assert rig.stored == {}
    assert rig.step([], 101.0) == []  # once
    # The clear of the released episode goes as usual.
    assert [t.kind for t in rig.feed("pump-1", 1.0, 120.0)] == [TransitionKind.CLEARED]


def test_an_episode_open_before_the_shelf_keeps_its_clear(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert [t.kind for t in rig.feed("pump-1", 9.0, 10.0)] == [TransitionKind.RAISED]
    rig.shelving.set_shelves([shelf("vib-high", 1000.0)])
    assert [t.kind for t in rig.feed("pump-1", 1.0, 20.0)] == [TransitionKind.CLEARED]


def test_asset_shelf_mutes_only_that_asset_and_unshelve_releases(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("pump-1", 1000.0, kind="asset")])
    assert rig.feed("pump-1", 9.0, 10.0) == []
    assert [t.asset for t in rig.feed("pump-2", 9.0, 11.0)] == ["pump-2"]
    rig.shelving.set_shelves([])  # `plantbridge unshelve pump-1`
    assert [t.asset for t in rig.step([], 12.0)] == ["pump-1"]


def test_hidden_episodes_survive_a_restart_and_release_on_time(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("vib-high", 100.0)])
    rig.feed("pump-1", 9.0, 10.0)
    # Restart: the engine restores the open episode from the outbox, shelving its hidden row.
    after = Rig(tmp_path)
    assert after.shelving.restore(rig.stored.values()) == 1
    after.engine.restore([ep for ep in rig.engine.open_episodes()])
    after.shelving.set_shelves([shelf("vib-high", 100.0)])
    assert after.step([], 50.0) == []
    assert [t.episode_id for t in after.step([], 100.0)] == ["vib-high/pump-1/10000"]


async def test_shelves_table_beside_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    async with await OutboxStore.open(path) as daemon_side, \
            await OutboxStore.open(path) as cli_side:
        await cli_side.shelve(shelf("vib-high", 500.0))
        await cli_side.shelve(Shelf("asset", "pump-9", 200.0, "bearing on order", "", 1.0))
        found = await daemon_side.shelves(now=100.0)
        assert [(s.kind, s.target) for s in found] == [("asset", "pump-9"), ("rule", "vib-high")]
        assert [s.target for s in await daemon_side.shelves(now=300.0)] == ["vib-high"]
        await cli_side.shelve(shelf("vib-high", 900.0))  # again: replaces the expiry
        assert [s.until for s in await daemon_side.shelves(now=600.0)] == [900.0]
        assert await cli_side.unshelve("vib-high") == 1
        assert await cli_side.unshelve("vib-high") == 0
        assert await daemon_side.shelves(now=100.0) == [
            Shelf("asset", "pump-9", 200.0, "bearing on order", "", 1.0)]
        assert await daemon_side.prune_shelves(before=300.0) == 1


def test_cli_shelve_unshelve_shelved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rules.toml").write_text(RULES)
    config = tmp_path / "plantbridge.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
                      '[rules]\nfiles = ["rules.toml"]\n')
    (tmp_path / "state").mkdir()
    c = ["--config", str(config)]
    assert main(["shelve", "vib-high", "--for", "4h", "--reason", "bearing on order", *c]) == 0
    assert "shelved rule vib-high until" in capsys.readouterr().out
    assert main(["shelve", "pump-3", "--for", "1h30m", "--reason", "sensor loose", *c]) == 0
    assert "taken as an asset" in capsys.readouterr().out
    assert main(["shelved", "--json", *c]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r["target"], r["reason"]) for r in rows] == [
        ("asset", "pump-3", "sensor loose"), ("rule", "vib-high", "bearing on order")]
    assert main(["unshelve", "pump-3", *c]) == 0
    assert main(["unshelve", "pump-3", *c]) == 1
    assert main(["shelve", "vib-high", "--for", "4 weeks", "--reason", "x", *c]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert main(["shelve", "vib-high", "--for", "31d", "--reason", "x", *c]) == 2
    assert main(["shelve", "vib-high", "--for", "1h", "--reason", "  ", *c]) == 2


def test_duration_words() -> None:
    assert duration_seconds("4h") == 4 * 3600
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("45s") == 45
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("4")
    with pytest.raises(ValueError, match="more than zero"):
        duration_seconds("0m")


def test_nothing_is_released_before_the_shelves_were_read(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("vib-high", 100.0)])
    rig.feed("pump-1", 9.0, 10.0)
    after = Rig(tmp_path)  # a restart: hidden rows restored, the table not read yet
    after.shelving.restore(rig.stored.values())
    after.engine.restore(rig.engine.open_episodes())
    assert after.step([], 50.0) == []
    after.shelving.set_shelves([shelf("vib-high", 100.0)])
    assert after.step([], 60.0) == []


def test_a_hand_written_far_expiry_does_not_break_the_reader(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.shelving.set_shelves([shelf("vib-high", 1e12)])  # year 33658: logged, not a crash
    assert rig.feed("pump-1", 9.0, 10.0) == []
    assert "seconds since 1970" in rig.shelving.snapshot(0.0)["shelves"][0]["until"]
