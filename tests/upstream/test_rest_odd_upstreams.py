"""RestSink against a scripted aiohttp server: answers the simulator never gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.model import Outcome, TransitionKind
from gateway.upstream.rest import problem_text
from tests.upstream.conftest import SinkFactory, record, status_record

Script = Callable[[web.Request, dict[str, object]], web.StreamResponse]


@dataclass
class Scripted:
    """A loopback server whose POST answer is chosen per request body by `script`."""

    script: Script
    seen: list[dict[str, object]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    url: str = ""


Start = Callable[[Script], Awaitable[Scripted]]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> Scripted:
        state = Scripted(script)

        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            doc: dict[str, Any] = orjson.loads(raw) if raw else {"query": dict(request.query)}
            state.seen.append(doc)
            state.headers.append(dict(request.headers))
            state.active += 1
            state.max_active = max(state.max_active, state.active)
            try:
                await asyncio.sleep(float(doc.get("delay", 0)))
                return state.script(request, doc)
            finally:
                state.active -= 1

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return state

    yield start
    for r in runners:
        await r.cleanup()


def created(doc: dict[str, object]) -> web.Response:
    return web.json_response({"id": f"WR-{doc['episode_id']}"}, status=201)


async def test_redirect_is_rejected_not_followed(scripted: Start,
                                                 make_sink: SinkFactory) -> None:
    srv = await scripted(lambda req, doc: web.Response(
        status=307, headers={"Location": "https://elsewhere.invalid/api"}))
    [d] = await make_sink(srv.url).send([record()])
    assert d.outcome is Outcome.REJECTED
    assert "HTTP 307" in d.reason and "elsewhere.invalid" in d.reason
    assert len(srv.seen) == 1


@pytest.mark.parametrize("answer", [b"", b"<html>ok</html>", b'{"ok": true}', b'{"id": ""}',
                                    b"[1, 2]"])
async def test_2xx_without_id_is_retry(scripted: Start,
                                       make_sink: SinkFactory, answer: bytes) -> None:
    srv = await scripted(lambda req, doc: web.Response(status=201, body=answer,
                                                       content_type="application/json"))
    [d] = await make_sink(srv.url).send([record()])
    assert d.outcome is Outcome.RETRY and "without a usable 'id'" in d.reason


async def test_numeric_id_becomes_a_string_receipt(
        scripted: Start, make_sink: SinkFactory) -> None:
    srv = await scripted(lambda req, doc: web.json_response({"id": 4711}, status=201))
    [d] = await make_sink(srv.url).send([record()])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == "4711"


async def test_wire_format(scripted: Start,
                           make_sink: SinkFactory) -> None:
    srv = await scripted(lambda req, doc: created(doc))
    rec = record()
    await make_sink(srv.url + "/base/", request_path="/wr").send([rec])
    h = srv.headers[0]
    assert h["Idempotency-Key"] == f'"{rec.message.key}"'
    assert h["Content-Type"] == "application/json"
    assert h["Authorization"] == "Bearer test-key"
    assert srv.seen[0] == dict(rec.message.body)


async def test_status_path_quotes_the_reference(
        scripted: Start, make_sink: SinkFactory) -> None:
    paths: list[str] = []

    def answer(req: web.Request, doc: dict[str, object]) -> web.Response:
        paths.append(req.raw_path)
        return web.json_response({"id": "SU-1"}, status=201)

    srv = await scripted(answer)
    [d] = await make_sink(srv.url).send([status_record("MR 1/2")])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == "MR 1/2"
    assert paths == ["/api/v1/maintenance-requests/MR%201%2F2/status-updates"]


async def test_a_retry_holds_later_records_of_the_same_episode_only(
        scripted: Start, make_sink: SinkFactory) -> None:
    """A clear waits for its raise; another episode of the same asset does not wait."""
    def answer(req: web.Request, doc: dict[str, object]) -> web.Response:
        if doc.get("episode_id") == "a-1":
            return web.json_response({"title": "busy"}, status=503,
                                     headers={"Retry-After": "4"})
        return created(doc)

    srv = await scripted(answer)
    batch = [record(asset="a", episode="a-1"),
             record(TransitionKind.CLEARED, asset="a", episode="a-1", upstream_ref="WR-x"),
             record(asset="a", episode="a-2"), record(asset="b", episode="b-1")]
    out = await make_sink(srv.url).send(batch)
    assert [d.outcome for d in out] == [Outcome.RETRY, Outcome.RETRY, Outcome.ACCEPTED,
                                        Outcome.ACCEPTED]
    assert out[1].reason.startswith("held: earlier record") and out[1].retry_after_seconds == 4
    assert sorted(str(d["episode_id"]) for d in srv.seen if "episode_id" in d) == [
        "a-1", "a-2", "b-1"]  # the clear of a-1 never sent


async def test_assets_go_concurrently_up_to_the_limit(
        scripted: Start, make_sink: SinkFactory) -> None:
    srv = await scripted(lambda req, doc: created(doc))
    batch = [record(asset=f"m-{i}", episode=f"e-{i}", body={
        "title": "t", "asset": f"m-{i}", "episode_id": f"e-{i}", "delay": 0.1})
        for i in range(9)]
    out = await make_sink(srv.url, concurrent_requests=3).send(batch)
    assert all(d.outcome is Outcome.ACCEPTED for d in out)
    assert srv.max_active == 3


async def test_records_of_one_episode_go_one_at_a_time_in_order(
        scripted: Start, make_sink: SinkFactory) -> None:
    seen: list[str] = []

    def answer(req: web.Request, doc: dict[str, object]) -> web.Response:
        seen.append(req.path)
        return created(doc)

    srv = await scripted(answer)
    batch = [record(asset="m", episode="e-1"),
             record(TransitionKind.CLEARED, asset="m", episode="e-1", upstream_ref="WR-e-1")]
    out = await make_sink(srv.url, concurrent_requests=4).send(batch)
    assert [d.outcome for d in out] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert seen[0].endswith("/maintenance-requests") and "status-updates" in seen[-1]
    assert srv.max_active == 1


@pytest.mark.parametrize(("lookup", "outcome", "receipt"), [
    (b'{"member": [{"id": 9}]}', Outcome.ACCEPTED, "9"),
    (b'{"items": [{"id": "WR-7"}, {"id": "WR-8"}]}', Outcome.ACCEPTED, "WR-7"),
    (b'[{"id": "WR-7"}]', Outcome.ACCEPTED, "WR-7"),
    (b"[]", Outcome.ACCEPTED, "WR-ep-1"),  # nothing found: created
    (b'{"count": 0}', Outcome.RETRY, None),  # unreadable: look again later, create nothing
])
async def test_lookup_answer_shapes(scripted: Start, make_sink: SinkFactory, lookup: bytes,
                                    outcome: Outcome, receipt: str | None) -> None:
    rec = record()

    def answer(req: web.Request, doc: dict[str, object]) -> web.Response:
        if req.method == "GET":
            assert req.query == {"ref": rec.message.body["dedup_key"]}
            return web.Response(body=lookup, content_type="application/json")
        return created(doc)

    srv = await scripted(answer)
    sink = make_sink(srv.url, reconcile="lookup", reconcile_after_seconds=0.0,
                     lookup_query_param="ref")
    [d] = await sink.send([rec])
    assert (d.outcome, d.receipt) == (outcome, receipt)
    assert len(srv.seen) == (2 if lookup == b"[]" else 1)


def test_problem_text_variants() -> None:
    pj = "application/problem+json"
    assert problem_text(b'{"title": "Bad", "detail": "x"}', pj) == "Bad - x"
    assert problem_text(b'{"error": {"type": "idempotency_error", "message": "m"}}',
                        "application/json") == "m"
    assert problem_text(b'{"title": "T", "detail": "m", "error": {"message": "m"}}', pj) == "T - m"
    assert problem_text(b"  plain\n text  ", "text/plain") == "plain text"
    assert problem_text(b"{broken", pj) == "{broken"
