"""Existing work first, in Maximo: an open SR on the same asset that someone else made is
linked (a work log note with our evidence) or skipped to, per rule, instead of a new SR; the
clear then goes to it, as a note, never resolving it. Real sockets, the Maximo simulator.

Assumed: the open statuses NEW, QUEUED, INPROG, PENDING (IBM's SR app [S*]; synonyms vary).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.model import Outcome
from gateway.workflow import ExistingWork
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, clear_record, raise_record


def planners_sr(maximo: MaximoSimulator, status: str = "NEW", asset: str = "PUMP-1"
                ) -> dict[str, Any]:
    sr = maximo.store.create({"description": "Pump 1 noisy", "assetnum": asset,
                              "siteid": "BEDFORD", "reportedpriority": 3})
    sr["status"] = status
    return sr


@pytest.mark.parametrize("policy", [ExistingWork.LINK, ExistingWork.SKIP])
async def test_open_sr_is_used_and_the_clear_goes_there(
        make_sink: SinkFactory, maximo: MaximoSimulator, policy: ExistingWork) -> None:
    theirs = planners_sr(maximo, "INPROG")
    sink = make_sink(maximo.url, existing_work_rules={"vib-high": policy})
    rec = raise_record()
    [d] = await sink.send([rec])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, theirs["ticketid"])
    assert len(maximo.tickets) == 1
    [again] = await sink.send([replace(rec, attempts=1)])  # a repeat adds no second note
    assert again.receipt == theirs["ticketid"]
    [cleared] = await sink.send([clear_record(d.receipt)])
    assert cleared.outcome is Outcome.ACCEPTED
    notes = [w["description"] for w in theirs["worklog"]]
    if policy is ExistingWork.LINK:
        assert len([n for n in notes if n.startswith("PlantBridge evidence")]) == 1
        assert any(n.startswith("Condition cleared") for n in notes)
    else:
        assert notes == []
    assert theirs["status"] == "INPROG"  # someone else's: never resolved by us


async def test_closed_or_other_assets_srs_do_not_count(make_sink: SinkFactory,
                                                       maximo: MaximoSimulator) -> None:
    planners_sr(maximo, "CLOSED")
    planners_sr(maximo, "NEW", asset="FAN-1")
    sink = make_sink(maximo.url, existing_work="link")
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.ACCEPTED
    assert len(maximo.tickets) == 3  # ours was created


async def test_create_policy_and_own_earlier_sr(make_sink: SinkFactory,
                                                maximo: MaximoSimulator) -> None:
    planners_sr(maximo, "NEW")
    sink = make_sink(maximo.url)  # default: create
    [first] = await sink.send([raise_record(episode="ep-a")])
    assert len(maximo.tickets) == 2
    # our own SR of this episode is found by its externalrecid first, not linked as "theirs"
    linking = make_sink(maximo.url, existing_work="link")
    [again] = await linking.send([raise_record(episode="ep-a")])
    assert again.receipt == first.receipt and "linked" not in again.reason
