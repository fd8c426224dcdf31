"""Reconciliation of an episode linked to someone else's Maximo work order: the receipt
"WO:<wonum>" carries no reference of ours, so reconcile reads it back by its receipt; a WO
closed while the condition is open is CLOSED UPSTREAM. Real outbox, real sockets.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from buffer.store import OutboxStore
from gateway.messages import messages_for
from gateway.reconcile import Difference, reconcile
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, transition


async def test_a_linked_work_order_is_read_back_and_closed_upstream_is_named(
        tmp_path: Path, make_sink: SinkFactory, maximo: MaximoSimulator) -> None:
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="VIB")
    sink = make_sink(maximo.url, existing_work="link")
    store = await OutboxStore.open(tmp_path / "outbox.sqlite")
    try:
        t = replace(transition(episode="vib-high/pump-1/7"), ts=time.time())
        await store.commit([t], messages_for(t, ["maximo"], "site-a"))
        leased = await store.lease("maximo", 10, time.time())
        [d] = await sink.send(leased)
        assert d.receipt == f"WO:{wo['wonum']}"
        await store.settle([d], time.time())
        report = await reconcile(store, {"maximo": sink}, time.time() - 60)
        assert report.findings == [] and report.checked == 1
        maximo.set_wo_status(wo["wonum"], "CLOSE")
        report = await reconcile(store, {"maximo": sink}, time.time() - 60)
        assert [(f.kind, f.upstream_id, f.upstream_status) for f in report.findings] == [
            (Difference.CLOSED_UPSTREAM, f"WO:{wo['wonum']}", "CLOSE")]
    finally:
        await store.close()
