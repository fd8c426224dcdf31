"""The Maximo sink against the Maximo simulator over real sockets."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.model import Outcome
from gateway.upstream.rest import UpstreamCheckError
from simulators.maximo import MaximoSimulator
from tests.harness import free_port, wait_for
from tests.upstream.maximo.conftest import SinkFactory, clear_record, raise_record

COLL = "/os/mxapisr"
MEMBER = "/os/mxapisr/{id}"


async def test_a_raise_creates_one_sr_with_the_right_fields(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    rec = raise_record(priority=2)
    [d] = await make_sink(maximo.url).send([rec])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert d.receipt == "1001" and d.record_id == rec.id
    [sr] = maximo.tickets
    body = rec.message.body
    assert sr["externalrecid"] == body["dedup_key"] and len(sr["externalrecid"]) <= 20
    assert sr["description"] == "pump-1: vibration high"
    assert (sr["assetnum"], sr["siteid"], sr["location"]) == ("PUMP-1", "BEDFORD", "LINE1")
    assert sr["reportedpriority"] == 2 and sr["reportedby"] == "PLANTBRIDGE"
    assert sr["externalsystem"] == "PLANTBRIDGE"
    long = sr["description_longdescription"]
    for part in ("vibration 7.4 above 7.1 for 5 s", "Rule: vib-high", "vibration = 7.4",
                 "Check the bearings of pump-1.", "Failure code: VIB", body["episode_id"]):
        assert part in long
    assert maximo.count("GET", COLL, 200) == 1  # the lookup came first
    assert maximo.count("POST", COLL, 201) == 1


async def test_the_same_raise_again_finds_the_sr_instead_of_a_second(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    rec = raise_record()
    sink = make_sink(maximo.url)
    first = await sink.send([rec])
    again = await make_sink(maximo.url).send([replace(rec, attempts=1)])  # e.g. after a restart
    assert first[0].receipt == again[0].receipt == "1001"
    assert again[0].outcome is Outcome.ACCEPTED
    assert len(maximo.tickets) == 1 and maximo.count("POST", COLL) == 1


async def test_drop_after_commit_then_retry_still_exactly_one_sr(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(maximo.url)
    rec = raise_record()
    maximo.faults.set("drop_after_commit", count=1)
    [d] = await sink.send([rec])
    assert d.outcome is Outcome.RETRY
    assert "may have been committed" in d.reason or "dropped" in d.reason, d.reason
    assert len(maximo.tickets) == 1  # Maximo committed it; we did not hear
    [d] = await sink.send([replace(rec, attempts=1)])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == "1001"
    assert len(maximo.tickets) == 1 and maximo.count("POST", COLL) == 1


async def test_a_create_that_times_out_and_commits_later_gives_one_sr(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(maximo.url, total_timeout_seconds=0.5, connect_timeout_seconds=0.5)
    rec = raise_record()
    maximo.faults.set("slow", count=1, delay_seconds=1.0, writes_only=True)
    [d] = await sink.send([rec])  # the lookup is quick, the create commits after 1 s
    assert d.outcome is Outcome.RETRY and "timed out" in d.reason, d.reason
    assert d.retry_after_seconds == 10.0  # unclear: give Maximo time to finish the commit
    await wait_for(lambda: len(maximo.tickets) == 1, 5, "the late commit")
    [d] = await sink.send([replace(rec, attempts=1)])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == "1001"
    assert len(maximo.tickets) == 1


@pytest.mark.parametrize("mode,status,hint", [("error_5xx", 503, 2.0), ("error_5xx", 500, None),
                                              ("rate_429", 429, 7.0)])
async def test_5xx_and_429_are_retried_with_retry_after(
        maximo: MaximoSimulator, make_sink: SinkFactory, mode: str, status: int,
        hint: float | None) -> None:
    maximo.faults.set(mode, count=1, status=status, retry_after=hint)
    [d] = await make_sink(maximo.url).send([raise_record()])
    assert d.outcome is Outcome.RETRY
    assert f"HTTP {status}" in d.reason and d.retry_after_seconds == hint
    assert maximo.tickets == []


async def test_an_unknown_asset_is_rejected_without_a_request(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    [d] = await make_sink(maximo.url).send([raise_record(asset="press-3")])
    assert d.outcome is Outcome.REJECTED
    assert "'press-3' has no entry in asset_map" in d.reason
    assert sum(maximo.received.values()) == 0


async def test_pass_through_sends_the_canonical_id_as_assetnum(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(maximo.url, unknown_asset="pass_through", asset_map={})
    [d] = await sink.send([raise_record(asset="FAN-1")])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert maximo.tickets[0]["assetnum"] == "FAN-1"


async def test_an_asset_at_another_site_is_looked_up_and_created_there(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    [d] = await make_sink(maximo.url).send([raise_record(asset="mix-9")])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert maximo.tickets[0]["siteid"] == "NASHUA"


async def test_a_domain_error_is_rejected_quoting_the_reason_code(
        make_sink: SinkFactory) -> None:
    async with MaximoSimulator(priority_domain=(1, 3, 5)) as sim:
        [d] = await make_sink(sim.url, asset_map={"pump-1": {"assetnum": "PUMP-1"}}).send(
            [raise_record(priority=2)])
        assert d.outcome is Outcome.REJECTED
        assert "HTTP 400" in d.reason and "BMXAA4021E" in d.reason
        assert "REPORTEDPRIORITY" in d.reason
        assert sim.tickets == []
        # every attribute error in one dead letter (batcherror: 1), not only the first
        sink = make_sink(sim.url, asset_map={"pump-1": {"assetnum": "NOPE"}})
        [d] = await sink.send([raise_record(priority=2)])
        assert d.outcome is Outcome.REJECTED
        assert "BMXAA4021E" in d.reason and "(also: BMXAA2661E - Asset NOPE" in d.reason
        # the site's domain is 1, 3, 5: map to it and it goes through
        sink = make_sink(sim.url, priority_map={1: 1, 2: 1, 3: 3, 4: 5},
                         asset_map={"pump-1": {"assetnum": "PUMP-1"}})
        [d] = await sink.send([raise_record(priority=2)])
        assert d.outcome is Outcome.ACCEPTED and sim.tickets[0]["reportedpriority"] == 1


async def test_a_bad_key_is_rejected(maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(maximo.url, auth={"kind": "api_key", "key": {"value": "wrong"}})
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.REJECTED
    assert "HTTP 401" in d.reason and "BMXAA7901E" in d.reason
    with pytest.raises(UpstreamCheckError, match="BMXAA7901E"):
        await sink.check()


async def test_a_down_upstream_is_retried_and_fails_the_check(make_sink: SinkFactory) -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}")
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.RETRY and "looking up externalrecid" in d.reason
    with pytest.raises(UpstreamCheckError):
        await sink.check()


async def test_check_passes_against_a_healthy_upstream(maximo: MaximoSimulator,
                                                       make_sink: SinkFactory) -> None:
    await make_sink(maximo.url).check()
    with pytest.raises(UpstreamCheckError, match="404"):
        await make_sink(maximo.url, object_structure="mxapinope").check()


async def test_maxauth_against_a_7_6_style_api_root(make_sink: SinkFactory) -> None:
    async with MaximoSimulator(api_root="/maximo/oslc", api_key="unused",
                               maxauth_users={"PLANTBRIDGE": "p:w"}) as sim:
        sink = make_sink(sim.url, api_root="/maximo/oslc", auth={
            "kind": "maxauth", "user": "PLANTBRIDGE", "password": {"value": "p:w"}})
        [d] = await sink.send([raise_record()])
        assert d.outcome is Outcome.ACCEPTED, d.reason
        [d] = await sink.send([clear_record(d.receipt)])
        assert d.outcome is Outcome.ACCEPTED, d.reason
        assert sim.tickets[0]["status"] == "RESOLVED"


async def test_concurrent_sends_of_one_raise_create_one_sr(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    """Single flight per dedup key: both see the first one's SR instead of racing."""
    sink = make_sink(maximo.url)
    rec = raise_record()
    results = await asyncio.gather(*(sink.send([replace(rec, id=rec.id + i)])
                                     for i in range(4)))
    assert {r[0].receipt for r in results} == {"1001"}
    assert len(maximo.tickets) == 1


async def test_after_a_retry_later_records_of_the_episode_wait(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    maximo.faults.set("error_5xx", count=1)
    first, its_clear = raise_record(episode="ep-a"), clear_record("1001", episode="ep-a")
    ds = await make_sink(maximo.url).send([first, its_clear])
    assert [d.record_id for d in ds] == [first.id, its_clear.id]
    assert ds[0].outcome is Outcome.RETRY
    assert ds[1].outcome is Outcome.RETRY and ds[1].reason.startswith("held:")
    assert maximo.tickets == []


async def test_a_message_without_a_usable_dedup_key_is_rejected(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    rec = raise_record()
    long_key = replace(rec, message=replace(rec.message, body=dict(rec.message.body) | {
        "dedup_key": "X" * 21}))
    quoted = replace(rec, id=rec.id + 1000, message=replace(
        rec.message, body=dict(rec.message.body) | {"dedup_key": 'A"B'}))
    ds = await make_sink(maximo.url).send([long_key, quoted])
    assert [d.outcome for d in ds] == [Outcome.REJECTED, Outcome.REJECTED]
    assert "longer than 20" in ds[0].reason and "oslc.where" in ds[1].reason
    assert sum(maximo.received.values()) == 0


async def test_a_5xx_on_the_create_is_retried_and_creates_nothing(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    maximo.faults.set("error_5xx", count=1, status=502, writes_only=True, retry_after=2)
    sink = make_sink(maximo.url, unclear_retry_after_seconds=5)
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.RETRY and d.reason.startswith("create: HTTP 502")
    assert d.retry_after_seconds == 5.0  # a 5xx may have committed: the longer wait wins
    assert maximo.tickets == [] and maximo.count("GET", COLL, 200) == 1
    maximo.faults.set("rate_429", count=1, writes_only=True, retry_after=2)
    [d] = await sink.send([raise_record()])
    assert d.outcome is Outcome.RETRY and d.retry_after_seconds == 2.0  # refused, not unclear
