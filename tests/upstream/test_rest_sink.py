"""RestSink against the real CMMS simulator over loopback sockets."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import pytest

from gateway.model import Outcome, TransitionKind
from gateway.upstream.rest import UpstreamCheckError, canonical_json
from simulators.cmms import CmmsSimulator
from tests.harness import wait_for
from tests.upstream.conftest import SinkFactory, record, status_record

REQUESTS = "/api/v1/maintenance-requests"


async def test_request_is_accepted_with_receipt(sim: CmmsSimulator,
                                                make_sink: SinkFactory) -> None:
    rec = record()
    [d] = await make_sink(sim.url).send([rec])
    assert (d.record_id, d.outcome, d.receipt) == (rec.id, Outcome.ACCEPTED, "MR-000001")
    stored = sim.requests[0]
    assert stored["idempotency_key"] == rec.message.key
    assert stored["body"] == dict(rec.message.body)
    assert stored["external_ref"] == rec.message.body["dedup_key"]


async def test_retries_send_byte_identical_bodies(sim: CmmsSimulator,
                                                  make_sink: SinkFactory) -> None:
    rec = record()
    shuffled = dict(reversed(list(rec.message.body.items())))
    assert canonical_json(shuffled) == canonical_json(rec.message.body)
    sink = make_sink(sim.url)
    first = await sink.send([rec])
    again = await sink.send([rec])  # e.g. after a crash before the outbox settled
    assert first[0].receipt == again[0].receipt == "MR-000001"
    assert len(sim.requests) == 1


async def test_lost_answer_then_retry_creates_exactly_one(sim: CmmsSimulator,
                                                          make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    sim.faults.set("drop_after_commit", count=1)
    rec = record()
    [d] = await sink.send([rec])
    assert d.outcome is Outcome.RETRY and "dropped" in d.reason
    assert len(sim.requests) == 1  # it was committed all the same
    [d] = await sink.send([rec])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == sim.requests[0]["id"]
    assert len(sim.requests) == 1


async def test_hang_times_out_as_retry(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, total_timeout_seconds=0.3, connect_timeout_seconds=0.3)
    sim.faults.set("hang", count=1)
    t0 = time.monotonic()
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.RETRY and "timed out" in d.reason
    assert time.monotonic() - t0 < 2
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retry_with_problem_in_reason(sim: CmmsSimulator, make_sink: SinkFactory,
                                                   status: int) -> None:
    sim.faults.set("error_5xx", count=1, status=status)
    [d] = await make_sink(sim.url).send([record()])
    assert d.outcome is Outcome.RETRY
    assert d.reason.startswith(f"HTTP {status}: Injected failure")
    assert d.retry_after_seconds is None


async def test_429_retry_after_seconds(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    sim.faults.set("rate_429", count=1, retry_after=17)
    [d] = await make_sink(sim.url).send([record()])
    assert d.outcome is Outcome.RETRY and d.retry_after_seconds == 17.0
    assert d.reason.startswith("HTTP 429")


async def test_429_retry_after_http_date(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    sim.faults.set("rate_429", count=1, retry_after=formatdate(time.time() + 60, usegmt=True))
    [d] = await make_sink(sim.url).send([record()])
    assert d.outcome is Outcome.RETRY
    assert d.retry_after_seconds is not None and 55 <= d.retry_after_seconds <= 60


async def test_409_in_flight_is_retry(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    # Two gateways' worth of the same message at once: the second meets the first in flight.
    sim.faults.set("slow", count=1, delay_seconds=0.5)
    rec = record()
    sink = make_sink(sim.url)
    other = make_sink(sim.url)
    first = asyncio.create_task(sink.send([rec]))
    await wait_for(lambda: len(sim.idempotency) == 1, 5, "first send in flight")
    [d] = await other.send([rec])
    assert d.outcome is Outcome.RETRY and d.reason.startswith("HTTP 409")
    assert d.retry_after_seconds == 1.0
    assert (await first)[0].outcome is Outcome.ACCEPTED


@pytest.mark.parametrize("auth", [
    {"kind": "bearer", "token": {"value": "wrong"}},
    {"kind": "api_key", "key": {"value": "wrong"}},
    {"kind": "none"},
])
async def test_401_is_rejected_with_reason(sim: CmmsSimulator, make_sink: SinkFactory,
                                           auth: dict[str, object]) -> None:
    [d] = await make_sink(sim.url, auth=auth).send([record()])
    assert d.outcome is Outcome.REJECTED
    assert d.reason.startswith("HTTP 401: Unauthorized")
    assert sim.requests == []


async def test_api_key_auth(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, auth={"kind": "api_key", "header": "X-API-Key",
                                    "key": {"value": "test-key"}})
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED


async def test_invalid_body_is_rejected_with_detail(sim: CmmsSimulator,
                                                    make_sink: SinkFactory) -> None:
    rec = record(body={"asset": "pump-1", "dedup_key": "PBX"})
    [d] = await make_sink(sim.url).send([rec])
    assert d.outcome is Outcome.REJECTED
    assert d.reason == "HTTP 422: Validation failed - title: required"


async def test_status_update_goes_to_the_raised_request(sim: CmmsSimulator,
                                                        make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    [raised] = await sink.send([record()])
    clear = status_record(raised.receipt)
    [d] = await sink.send([clear])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == raised.receipt
    [upd] = sim.status_updates
    assert upd["request_id"] == raised.receipt and upd["body"]["status"] == "cleared"
    assert upd["idempotency_key"] == clear.message.key
    assert sim.requests[0]["status"] == "cleared"


async def test_status_update_without_ref_is_rejected_unsent(sim: CmmsSimulator,
                                                            make_sink: SinkFactory) -> None:
    [d] = await make_sink(sim.url).send([status_record(None)])
    assert d.outcome is Outcome.REJECTED and "no upstream reference" in d.reason
    assert sum(sim.received.values()) == 0


async def test_status_update_for_unknown_request_is_rejected(sim: CmmsSimulator,
                                                             make_sink: SinkFactory) -> None:
    [d] = await make_sink(sim.url).send([status_record("MR-424242")])
    assert d.outcome is Outcome.REJECTED and d.reason.startswith("HTTP 404")


async def test_down_is_retry_and_check_raises(sim: CmmsSimulator,
                                              make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    await sink.check()
    await sim.go_down()
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.RETRY and d.reason
    with pytest.raises(UpstreamCheckError, match="cmms"):
        await sink.check()
    await sim.come_up()
    await sink.check()
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED


async def test_check_reports_refusal(sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, auth={"kind": "bearer", "token": {"value": "wrong"}})
    with pytest.raises(UpstreamCheckError, match="HTTP 401"):
        await sink.check()


async def test_batch_gets_one_delivery_per_record_in_order(sim: CmmsSimulator,
                                                           make_sink: SinkFactory) -> None:
    recs = [record(asset=f"pump-{i}", episode=f"ep-{i}") for i in range(12)]
    out = await make_sink(sim.url, concurrent_requests=4).send(recs)
    assert [d.record_id for d in out] == [r.id for r in recs]
    assert all(d.outcome is Outcome.ACCEPTED for d in out)
    assert sorted(d.receipt or "" for d in out) == sorted(r["id"] for r in sim.requests)
    assert len(sim.requests) == 12


async def test_raise_and_clear_in_one_batch_keep_order(sim: CmmsSimulator,
                                                       make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url)
    [raised] = await sink.send([record()])
    # A later episode's raise queued behind a clear of the first one, same asset.
    batch = [status_record(raised.receipt),
             record(TransitionKind.RAISED, episode="ep-2")]
    out = await sink.send(batch)
    assert [d.outcome for d in out] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert sim.requests[0]["status"] == "cleared" and len(sim.requests) == 2
    assert sim.requests[1]["body"]["episode_id"] == "ep-2"


@pytest.mark.parametrize(("reconcile", "created"), [("off", 2), ("lookup", 1)])
async def test_reconcile_finds_a_request_the_server_forgot_the_key_of(
        make_sink: SinkFactory, reconcile: str, created: int) -> None:
    """The answer was lost, then the outage outlived the server's key retention: a blind retry
    creates a second request (lookup off); the lookup by external reference finds the
    first one instead."""
    now = [0.0]
    async with CmmsSimulator(key_ttl_seconds=60, clock=lambda: now[0]) as sim:
        rec = record()
        sink = make_sink(sim.url, reconcile=reconcile, reconcile_after_seconds=0.0)
        sim.faults.set("drop_after_commit", count=1)
        assert (await sink.send([rec]))[0].outcome is Outcome.RETRY
        now[0] += 61  # the simulator forgets the key
        [d] = await sink.send([rec])
        assert d.outcome is Outcome.ACCEPTED
        assert len(sim.requests) == created
        assert d.receipt == sim.requests[-1]["id"]


async def test_reconcile_creates_when_nothing_is_found(sim: CmmsSimulator,
                                                       make_sink: SinkFactory) -> None:
    [d] = await make_sink(sim.url, reconcile="lookup", reconcile_after_seconds=0.0).send([record()])
    assert d.outcome is Outcome.ACCEPTED and len(sim.requests) == 1
    assert sim.received[("GET", REQUESTS, 200)] == 1
    assert sim.received[("POST", REQUESTS, 201)] == 1


async def test_reconcile_failure_is_retry_and_creates_nothing(sim: CmmsSimulator,
                                                              make_sink: SinkFactory) -> None:
    sim.faults.set("error_5xx", count=1, status=503)
    rec = record()
    [d] = await make_sink(sim.url, reconcile="lookup", reconcile_after_seconds=0.0).send([rec])
    assert d.outcome is Outcome.RETRY
    assert d.reason.startswith(f"lookup by {rec.message.body['dedup_key']}: HTTP 503")
    assert sim.requests == []


async def test_young_messages_are_not_looked_up(sim: CmmsSimulator,
                                                make_sink: SinkFactory) -> None:
    sink = make_sink(sim.url, reconcile="lookup", reconcile_after_seconds=3600.0)
    [d] = await sink.send([record(created_at=time.time() - 60)])
    assert d.outcome is Outcome.ACCEPTED
    assert sim.received[("GET", REQUESTS, 200)] == 0
    [d] = await sink.send([record(episode="ep-old", created_at=time.time() - 7200)])
    assert sim.received[("GET", REQUESTS, 200)] == 1


@pytest.mark.parametrize(("mode", "status"), [("ietf", 422), ("stripe", 400)])
async def test_key_reused_with_another_body_is_rejected(make_sink: SinkFactory, mode: str,
                                                        status: int) -> None:
    """A key reused across intents is a bug on our side: dead-letter it, loudly."""
    async with CmmsSimulator(idempotency_mode=mode) as sim:  # type: ignore[arg-type]
        sink = make_sink(sim.url)
        rec = record()
        assert (await sink.send([rec]))[0].outcome is Outcome.ACCEPTED
        changed = record(body=dict(rec.message.body) | {"title": "re-rendered"})
        assert changed.message.key == rec.message.key
        [d] = await sink.send([changed])
        assert d.outcome is Outcome.REJECTED
        assert d.reason.startswith(f"HTTP {status}: Idempotency")
        assert len(sim.requests) == 1
