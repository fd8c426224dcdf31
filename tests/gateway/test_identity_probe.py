"""The identity probe's own behaviour: the `/status` shape, change logging (once, never per
round), and when it asks (after READY, after a reload only when what it checks changed, again
when poked), against the Maximo simulator over a real socket.

The daemon-level behaviour (the real daemon as a subprocess) is in tests/e2e/test_identity_probe.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway import config as config_mod
from gateway.identity_probe import (
    IdentityProbe,
    Inputs,
    identity_metric_families,
    identity_status,
    log_changes,
    status_lines,
)
from gateway.registry_online import IdentityFinding, IdentityReport, validate_identities
from gateway.upstream.forwarder import ForwardingConfig
from simulators.maximo import MaximoSimulator
from tests.harness import wait_for

GOOD = IdentityFinding("pump-1", "maximo", "PUMP-1@BEDFORD/", None)
BAD = IdentityFinding("pump-2", "maximo", "P-100@BEDFORD/",
                      "Maximo has no asset P-100 at site BEDFORD")


def report(*findings: IdentityFinding, unreachable: dict[str, str] | None = None,
           from_cache: tuple[str, ...] = (),
           domains: dict[str, tuple[str, ...]] | None = None) -> IdentityReport:
    return IdentityReport(1_700_000_000.0, findings, unreachable or {}, from_cache,
                          domains or {})


def test_the_interval_setting_defaults_to_six_hours_and_takes_zero() -> None:
    assert ForwardingConfig().identity_check_interval_seconds == 6 * 3600
    assert ForwardingConfig(identity_check_interval_seconds=0).identity_check_interval_seconds == 0
    with pytest.raises(ValidationError, match="identity_check_interval_seconds"):
        ForwardingConfig(identity_check_interval_seconds=-1)


def test_status_before_the_first_round_lists_nothing() -> None:
    st = identity_status(None)
    assert st == {"checked_at": None, "problems": [], "domain_problems": [], "unreachable": [],
                  "from_cache": [], "problems_by_upstream": {}}
    assert status_lines(st) == ["asset identities: not checked yet"]
    assert status_lines(identity_status(report())) == [
        "asset identities: nothing to look up (no SAP PM or Maximo upstream maps assets)"]


def test_status_shape_names_problems_domains_and_what_was_not_checked() -> None:
    r = report(GOOD, BAD, unreachable={"maximo": "connection refused", "sap": "no answer"},
               from_cache=("maximo",),
               domains={"sap": ("priority 9 is not defined",)})
    st = identity_status(r)
    assert st["checked_at"] == "2023-11-14T22:13:20.000Z"
    assert st["problems"] == ["pump-2: Maximo has no asset P-100 at site BEDFORD"]
    assert st["domain_problems"] == ["upstream 'sap': priority 9 is not defined"]
    assert st["unreachable"] == [
        "upstream maximo: not checked: connection refused (its last known findings are shown)",
        "upstream sap: not checked: no answer"]
    assert st["from_cache"] == ["maximo"]
    assert st["problems_by_upstream"] == {"maximo": 1, "sap": 1}
    lines = status_lines(st)
    assert lines[0].endswith("2 problem(s) (listed above)")
    assert lines[1:] == [f"  {u}" for u in st["unreachable"]]
    metric = next(identity_metric_families({"identity": st}))
    assert {(s.labels["upstream"], s.value) for s in metric.samples} == {("maximo", 1.0),
                                                                         ("sap", 1.0)}


def test_changes_are_logged_once_never_every_round(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "plantbridge.identity")
    bad = report(GOOD, BAD)
    log_changes(None, bad)
    log_changes(bad, bad)  # the same findings again: nothing to say
    said = [r.getMessage() for r in caplog.records]
    assert said == ["identity problem: pump-2: Maximo has no asset P-100 at site BEDFORD "
                    "(requests for it will be refused)"]
    caplog.clear()
    down = report(GOOD, BAD, unreachable={"maximo": "connection refused"}, from_cache=("maximo",))
    log_changes(bad, down)
    log_changes(down, down)
    assert [r.getMessage() for r in caplog.records] == [
        "identity check: upstream maximo not checked: connection refused; its last known "
        "findings are used"]
    assert caplog.records[0].levelno == logging.WARNING
    caplog.clear()
    fixed = report(GOOD, IdentityFinding("pump-2", "maximo", "PUMP-2@BEDFORD/", None))
    log_changes(down, fixed)
    assert sorted(r.getMessage() for r in caplog.records) == [
        "identity check: upstream maximo answers again",
        "identity problem resolved: pump-2: Maximo has no asset P-100 at site BEDFORD"]
    assert all(r.levelno == logging.INFO for r in caplog.records)


@pytest.fixture
async def maximo() -> AsyncIterator[MaximoSimulator]:
    sim = MaximoSimulator()  # its seeded site: PUMP-1 and PUMP-2 at BEDFORD
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def load(tmp: Path, sim: MaximoSimulator, pump_2: str) -> config_mod.LoadedConfig:
    (tmp / "rules.toml").write_text("".join(f"""
[[rule]]
id = "vib-{a}"
kind = "threshold"
asset = "{a}"
signal = "vibration"
above = 7.1
severity = 2
""" for a in ("pump-1", "pump-2")))
    path = tmp / "plantbridge.toml"
    path.write_text(f"""
[gateway]
state_dir = "{tmp / 'state'}"
[rules]
files = ["rules.toml"]
[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{sim.url}"
siteid = "BEDFORD"
auth = {{ kind = "api_key", key = {{ value = "test-key" }} }}
asset_map = {{ pump-1 = {{ assetnum = "PUMP-1" }}, pump-2 = {{ assetnum = "{pump_2}" }} }}
""")
    return config_mod.load(path)


async def test_asks_after_ready_then_again_only_when_a_reload_changed_something(
        tmp_path: Path, maximo: MaximoSimulator) -> None:
    current = load(tmp_path, maximo, "P-100")
    calls: list[float] = []

    async def counted(*args: Any, **kwargs: Any) -> IdentityReport:
        calls.append(kwargs["timeout_seconds"])
        return await validate_identities(*args, **kwargs)

    ready = asyncio.Event()
    probe = IdentityProbe(lambda: Inputs(current.config, current.registry, current.rules),
                          ready, interval_seconds=0, cache_path=tmp_path / "cache.json",
                          timeout_seconds=10, validate=counted)
    task = asyncio.create_task(probe.run())
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert calls == [] and maximo.count("GET", "/os/mxapiasset") == 0  # not before READY
        ready.set()
        await wait_for(lambda: probe.rounds == 1, 15, "the first round")
        assert probe.problems() == ["pump-2: Maximo has no asset P-100 at site BEDFORD"]
        assert (tmp_path / "cache.json").exists()

        current = load(tmp_path, maximo, "P-100")  # reloaded, nothing that it checks changed
        probe.reloaded()
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(calls) == 1

        current = load(tmp_path, maximo, "PUMP-2")  # the asset map fixed
        probe.reloaded()
        await wait_for(lambda: probe.rounds == 2, 15, "the round after the reload")
        assert probe.problems() == [] and len(calls) == 2
        assert probe.status()["problems_by_upstream"] == {"maximo": 0}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_nothing_to_ask_is_not_reported_as_every_asset_known(
        caplog: pytest.LogCaptureFixture) -> None:
    """A REST-only gateway has no asset register upstream: the log says so rather than
    vouching for identities nobody looked up."""
    with caplog.at_level(logging.INFO, logger="plantbridge.identity"):
        log_changes(None, IdentityReport(checked_at=1.0, findings=()))
    assert [r.getMessage() for r in caplog.records] == [
        "identity check: no SAP PM or Maximo upstream to look assets up in"]
