"""`plantbridge reconcile` against a running gateway and the CMMS simulator over real sockets.

The test plants each kind of difference upstream (a deleted request, a foreign record with our
reference, a request closed while the condition is open) and expects the report to name each;
`--fix` re-enqueues the missing request and the running gateway delivers it once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from buffer.store import OutboxStore
from gateway import cli
from gateway import config as config_mod
from gateway.messages import dedup_key, messages_for
from gateway.model import Delivery, Outcome
from gateway.reconcile import (
    Difference,
    format_text,
    parse_window,
    reconcile,
    request_rebuilder,
    run_reconcile,
)
from gateway.upstream.rest import RestSinkConfig
from gateway.workflow import follow_ups
from rules import RuleSet
from simulators.cmms import CmmsSimulator
from simulators.sap_pm import SapPmSimulator
from tests.e2e.conftest import stack as stack  # the whole stack: broker, simulator, daemon
from tests.e2e.stack import Stack
from tests.harness import wait_for
from tests.upstream.sap_pm.conftest import EQUIPMENT, record, sink_config
from tests.upstream.sap_pm.conftest import transition as sap_transition
from tests.upstream.sap_pm.test_chain import PARTS as CHAIN_PARTS

RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
"""


def test_window_words() -> None:
    assert parse_window("7d") == 7 * 86400
    assert parse_window("90m") == 5400
    with pytest.raises(ValueError, match="unit s, m, h, d or w"):
        parse_window("7 days")


async def _three_requests(stack: Stack) -> dict[str, str]:
    """pump-1..3 raised and delivered; returns asset -> request id."""
    stack.write_config(RULE)
    await stack.start_daemon()
    for asset in ("pump-1", "pump-2", "pump-3"):
        await stack.play(asset, [3.0, 8.0])
    await wait_for(lambda: all(len(stack.requests_for(a)) == 1
                               for a in ("pump-1", "pump-2", "pump-3")), 20, "3 requests")
    await stack.settled()
    return {a: stack.requests_for(a)[0]["id"] for a in ("pump-1", "pump-2", "pump-3")}


async def test_reconcile_names_each_planted_difference_and_fix_resends_once(
        stack: Stack) -> None:
    ids = await _three_requests(stack)
    loaded = config_mod.load(stack.tmp / "plantbridge.toml")
    clean = await run_reconcile(loaded, 3600, fix=False, now=time.time())
    assert clean.findings == [] and clean.checked == 3, clean

    d = stack.daemon
    assert d is not None and d.pipeline is not None
    episode = {e.asset: e.episode_id for e in d.pipeline.engine.open_episodes()}
    stack.sim.delete_request(ids["pump-1"])
    foreign = stack.sim.add_foreign(dedup_key(episode["pump-2"]), "pump-2")
    stack.sim.set_status(ids["pump-3"], "closed")

    report = await run_reconcile(loaded, 3600, fix=False, now=time.time())
    kinds = {(f.kind, f.asset, f.upstream_id) for f in report.findings}
    assert kinds == {(Difference.MISSING_UPSTREAM, "pump-1", None),
                     (Difference.UNKNOWN_UPSTREAM, "pump-2", foreign),
                     (Difference.CLOSED_UPSTREAM, "pump-3", ids["pump-3"])}, report.findings
    text = format_text(report)
    assert "MISSING UPSTREAM" in text and "NOT KNOWN HERE" in text and "CLOSED UPSTREAM" in text
    assert stack.requests_for("pump-1") == []

    fixed = await run_reconcile(loaded, 3600, fix=True, now=time.time())
    assert [f.fixed for f in fixed.findings if f.kind is Difference.MISSING_UPSTREAM] == [
        "re-enqueued"]
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "pump-1 sent again")
    await stack.settled()
    again = stack.requests_for("pump-1")[0]
    assert again["external_ref"] == dedup_key(episode["pump-1"])
    # Delivered once: the new id is the receipt, and the next reconcile finds nothing missing.
    after = await run_reconcile(loaded, 3600, fix=True, now=time.time())
    assert {f.kind for f in after.findings} == {Difference.UNKNOWN_UPSTREAM,
                                                Difference.CLOSED_UPSTREAM}
    await asyncio.sleep(0.5)  # a second send would have had time to arrive
    assert len(stack.requests_for("pump-1")) == 1


async def test_cli_json_and_exit_code(stack: Stack, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    ids = await _three_requests(stack)
    stack.sim.set_status(ids["pump-2"], "resolved")
    config = str(stack.tmp / "plantbridge.toml")
    code = await asyncio.to_thread(cli.main, ["reconcile", "--since", "1h", "--json",
                                              "--config", config])
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert [(f["kind"], f["asset"]) for f in doc["findings"]] == [
        ("closed_upstream", "pump-2")]
    assert doc["checked"] == 3
    code = await asyncio.to_thread(cli.main, ["reconcile", "--since", "a week",
                                              "--config", config])
    assert code == 2 and "--since 'a week'" in capsys.readouterr().err


async def test_sap_notification_deleted_upstream_is_created_again_once(tmp_path: Path) -> None:
    """SAP has no idempotency: --fix relies on the adapter's look-up before creating."""
    sim = SapPmSimulator(equipment=EQUIPMENT)
    await sim.start()
    sink = sink_config(sim.url).build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    try:
        t = sap_transition(episode="vib-high/pump-1/1", ts=time.time())
        await store.commit([t], messages_for(t, ["sap"], "site-a"))

        async def deliver() -> None:
            leased = await store.lease("sap", 10, time.time())
            await store.settle(await sink.send(leased), time.time())

        await deliver()
        (number,) = [n["MaintenanceNotification"] for n in sim.notifications]
        sim.delete(number)
        rebuild = request_rebuilder(RuleSet([]), "site-a")
        report = await reconcile(store, {"sap": sink}, time.time() - 3600, fix=True,
                                 rebuild=rebuild)
        assert [(f.kind, f.local_receipt, f.fixed) for f in report.findings] == [
            (Difference.MISSING_UPSTREAM, number, "re-enqueued")]
        await deliver()
        await deliver()  # nothing left: a second delivery round sends nothing
        refs = [n["MaintNotifExtReferenceNumber"] for n in sim.notifications]
        assert refs == [dedup_key("vib-high/pump-1/1")]
        again = await reconcile(store, {"sap": sink}, time.time() - 3600)
        assert again.findings == [] and again.checked == 1
    finally:
        await sink.aclose()
        await store.close()
        await sim.stop()


async def test_parts_not_reserved_are_named(tmp_path: Path) -> None:
    """The spare-parts chain (gateway/workflow.py) through the SAP simulator: a reserved
    episode passes; one whose chain never started, and one whose stock step was
    dead-lettered, are PARTS MISSING."""
    sim = SapPmSimulator(equipment=EQUIPMENT)
    await sim.start()
    sim.materials.set_stock("BRG-6205", "1010", "0001", 10)
    sink = sink_config(sim.url, spare_parts=CHAIN_PARTS,
                       parts={"cost_center": "CC-1"}).build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    now = time.time()

    async def drain(*, chain: bool, dead_kind: str = "") -> None:
        while leased := await store.lease("sap", 10, time.time()):
            got = list(await sink.send(leased))
            got = [Delivery(d.record_id, Outcome.REJECTED, reason="refused in the test")
                   if r.message.kind == dead_kind else d for r, d in zip(leased, got, strict=True)]
            follow = follow_ups(sink, leased, got) if chain else []
            await store.settle_with_follow_ups(got, time.time(), follow)

    try:
        episodes = []
        for n, (chain, dead) in enumerate([(True, ""), (False, ""), (True, "parts_stock")]):
            t = sap_transition(episode=f"vib-high/pump-1/{n}", ts=now + n)
            t = replace(t, request=replace(t.request, failure_code="BEARING"))
            await store.commit([t], messages_for(t, ["sap"], "site-a"))
            await drain(chain=chain, dead_kind=dead)
            episodes.append(t.episode_id)
        report = await reconcile(store, {"sap": sink}, now - 60,
                                 failure_code_of=lambda rule, asset: "BEARING")
        missing = {f.episode_id: f.explanation for f in report.findings
                   if f.kind is Difference.PARTS_MISSING}
        assert set(missing) == set(episodes[1:]), report.findings
        assert "no parts step was started" in missing[episodes[1]]
        assert "stock step was dead-lettered" in missing[episodes[2]]
        assert "PARTS MISSING" in format_text(report)
    finally:
        await sink.aclose()
        await store.close()
        await sim.stop()


async def test_a_linked_record_is_not_missing(tmp_path: Path) -> None:
    """Under `existing_work = "link"` the receipt is someone else's notification, which
    carries no reference of ours: reconcile reads the receipt itself."""
    sim = SapPmSimulator(equipment=EQUIPMENT)
    await sim.start()
    someone = sink_config(sim.url).build()
    ours = sink_config(sim.url, existing_work_rules={"vib-high": "link"}).build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    try:
        (theirs,) = await someone.send([record(episode="entered-in-sap")])
        t = sap_transition(episode="vib-high/pump-1/2", ts=time.time())
        await store.commit([t], messages_for(t, ["sap"], "site-a"))
        leased = await store.lease("sap", 10, time.time())
        await store.settle(await ours.send(leased), time.time())
        report = await reconcile(store, {"sap": ours}, time.time() - 60)
        assert report.findings == [] and report.checked == 1
        assert theirs.receipt is not None
        sim.move(theirs.receipt, "completed")
        report = await reconcile(store, {"sap": ours}, time.time() - 60)
        assert [(f.kind, f.upstream_id) for f in report.findings] == [
            (Difference.CLOSED_UPSTREAM, theirs.receipt)]
    finally:
        for sink in (someone, ours):
            await sink.aclose()
        await store.close()
        await sim.stop()


async def test_fix_requeues_a_dead_letter_and_leaves_a_pending_request(tmp_path: Path) -> None:
    sim = CmmsSimulator(api_key="k")
    await sim.start()
    sink = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": sim.url,
        "auth": {"kind": "bearer", "token": {"value": "k"}}}).build()
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    try:
        dead, waiting = (sap_transition(episode=f"vib-high/pump-1/{n}", ts=time.time() + n)
                         for n in (1, 2))
        await store.commit([dead], messages_for(dead, ["cmms"], "s"))
        (rec,) = await store.lease("cmms", 10, time.time())
        await store.settle([Delivery(rec.id, Outcome.REJECTED, reason="422 in the test")],
                           time.time())
        await store.commit([waiting], messages_for(waiting, ["cmms"], "s"))
        report = await reconcile(store, {"cmms": sink}, time.time() - 60, fix=True,
                                 rebuild=request_rebuilder(RuleSet([]), "s"))
        assert [(f.kind, f.episode_id, f.fixed) for f in report.findings] == [
            (Difference.MISSING_UPSTREAM, dead.episode_id, "requeued")]
        assert report.in_flight == 1
        leased = await store.lease("cmms", 10, time.time())
        assert {r.message.episode_id for r in leased} == {dead.episode_id, waiting.episode_id}
        await store.settle(await sink.send(leased), time.time())
        assert sorted(r["external_ref"] for r in sim.requests) == sorted(
            dedup_key(t.episode_id) for t in (dead, waiting))
    finally:
        await sink.aclose()
        await store.close()
        await sim.stop()
