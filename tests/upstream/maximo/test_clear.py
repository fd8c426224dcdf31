"""Clears: the SR the raise created is resolved (or noted), once, whatever is retried."""

from __future__ import annotations

from dataclasses import replace

import aiohttp

from gateway.model import Outcome
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, clear_record, raise_record

MEMBER = "/os/mxapisr/{id}"


async def raised(maximo: MaximoSimulator, make_sink: SinkFactory, **cfg: object) -> str:
    [d] = await make_sink(maximo.url, **cfg).send([raise_record()])
    assert d.outcome is Outcome.ACCEPTED and d.receipt is not None, d.reason
    return d.receipt


async def test_a_clear_resolves_the_sr_the_raise_created(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    [d] = await make_sink(maximo.url).send([clear_record(ref)])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == ref, d.reason
    assert maximo.tickets[0]["status"] == "RESOLVED"
    assert maximo.count("PATCH", MEMBER, 204) == 1


async def test_a_repeated_clear_changes_nothing_and_is_accepted(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    """A clear whose answer was lost: the retry sees RESOLVED and does not PATCH again (a
    RESOLVED -> RESOLVED change is no business of ours, and CLOSED could not go back)."""
    ref = await raised(maximo, make_sink)
    sink = make_sink(maximo.url)
    maximo.faults.set("drop_after_commit", count=1)
    [d] = await sink.send([clear_record(ref)])
    assert d.outcome is Outcome.RETRY
    assert maximo.tickets[0]["status"] == "RESOLVED"
    maximo.tickets[0]["status"] = "CLOSED"  # a planner closed it meanwhile
    [d] = await sink.send([clear_record(ref)])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == ref
    assert maximo.count("PATCH", MEMBER) == 1 and maximo.tickets[0]["status"] == "CLOSED"


async def test_a_clear_without_the_raise_receipt_is_rejected(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    [d] = await make_sink(maximo.url).send([clear_record(None)])
    assert d.outcome is Outcome.REJECTED
    assert "no upstream reference" in d.reason and "ep-1" in d.reason
    assert sum(maximo.received.values()) == 0


async def test_a_clear_of_an_sr_that_is_gone_is_rejected(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    await raised(maximo, make_sink)
    [d] = await make_sink(maximo.url).send([clear_record("9999")])
    assert d.outcome is Outcome.REJECTED and "SR 9999" in d.reason and "not found" in d.reason


async def test_a_stale_rowstamp_is_read_again_and_retried_once(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    maximo.faults.set("conflict_412", count=1)
    [d] = await make_sink(maximo.url).send([clear_record(ref)])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert maximo.count("PATCH", MEMBER, 412) == 1 and maximo.count("PATCH", MEMBER, 204) == 1
    assert maximo.tickets[0]["status"] == "RESOLVED"


async def test_still_stale_after_the_second_read_is_retried_later(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    maximo.faults.set("conflict_412", count=2)
    [d] = await make_sink(maximo.url).send([clear_record(ref)])
    assert d.outcome is Outcome.RETRY
    assert "BMXAA8229W" in d.reason and "HTTP 412" in d.reason
    assert maximo.count("PATCH", MEMBER, 412) == 2 and maximo.tickets[0]["status"] == "NEW"


async def test_rowstamp_in_the_body_also_detects_the_conflict(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    maximo.faults.set("conflict_412", count=1)
    [d] = await make_sink(maximo.url, optimistic_lock="rowstamp_in_body").send(
        [clear_record(ref)])
    assert d.outcome is Outcome.ACCEPTED
    assert maximo.count("PATCH", MEMBER, 412) == 1


async def test_worklog_only_adds_one_note_and_leaves_the_status(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    sink = make_sink(maximo.url, on_clear="worklog_only")
    rec = clear_record(ref)
    maximo.faults.set("drop_after_commit", count=1)
    [d] = await sink.send([rec])
    assert d.outcome is Outcome.RETRY  # the note was committed, the answer lost
    [d] = await sink.send([replace(rec, attempts=1)])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == ref, d.reason
    [sr] = maximo.tickets
    assert sr["status"] == "NEW"
    [note] = sr["worklog"]  # the retry saw it and added no second one
    assert note["description"].startswith("Condition cleared (" + rec.message.body["dedup_key"])
    assert "vibration 7.4" in note["description_longdescription"]


async def test_a_refused_status_change_is_rejected_with_maximos_words(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    ref = await raised(maximo, make_sink)
    [d] = await make_sink(maximo.url, resolved_status="NEW", settled_statuses=["CLOSED"]).send(
        [clear_record(ref)])
    assert d.outcome is Outcome.ACCEPTED  # already NEW: nothing to change
    maximo.tickets[0]["status"] = "CLOSED"
    [d] = await make_sink(maximo.url, settled_statuses=["CANCELLED"]).send([clear_record(ref)])
    assert d.outcome is Outcome.REJECTED
    assert "HTTP 400" in d.reason and "cannot be changed from CLOSED to RESOLVED" in d.reason


async def test_the_clear_uses_our_base_url_not_the_host_in_maximos_href(
        make_sink: SinkFactory) -> None:
    """Behind a proxy Maximo writes hrefs with its internal address; we keep only the path."""
    async with MaximoSimulator(href_base="http://maximo-internal.invalid:9080") as sim:
        sink = make_sink(sim.url, asset_map={"pump-1": {"assetnum": "PUMP-1"}})
        [d] = await sink.send([raise_record()])
        assert d.receipt is not None
        async with aiohttp.ClientSession() as http, http.get(
                f"{sim.url}/maximo/api/os/mxapisr", headers={"apikey": "test-key"},
                params={"oslc.select": "ticketid"}) as resp:
            [member] = (await resp.json())["member"]
        assert member["href"].startswith("http://maximo-internal.invalid:9080/maximo/api/os/")
        [d] = await sink.send([clear_record(d.receipt)])
        assert d.outcome is Outcome.ACCEPTED, d.reason
        assert sim.tickets[0]["status"] == "RESOLVED"


async def test_an_incident_update_is_a_work_log_note_and_never_resolves(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    """Roll-up (gateway/rollup.py) sends incident updates as status updates: notes only."""
    ref = await raised(maximo, make_sink)
    sink = make_sink(maximo.url)
    for at in ("2026-12-05T00:00:00Z", "2026-12-05T00:01:00Z", "2026-12-05T00:01:00Z"):
        rec = clear_record(ref)
        rec = replace(rec, message=replace(rec.message, body={
            **rec.message.body, "status": "in_progress", "update": True, "updated_at": at,
            "reason": "incident update: 2 more", "note": "pump-7: vibration 9"}))
        [d] = await sink.send([rec])
        assert d.outcome is Outcome.ACCEPTED, d.reason
    ticket = maximo.tickets[0]
    assert ticket["status"] != "RESOLVED"
    notes = [w["description"] for w in ticket["worklog"]]
    assert len(notes) == 2 and all(n.startswith("Incident update") for n in notes), notes
