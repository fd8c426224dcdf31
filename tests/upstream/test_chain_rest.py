"""The generic REST upstream's workflow: existing work by a configurable GET, and the parts
chain as configurable calls (stock GET, reservation and requisition POSTs with Idempotency-Key).

The counterpart is a small CMMS written here over real sockets (aiohttp): it honours
Idempotency-Key on POSTs, as the REST sink's contract requires, and nothing else of ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import web

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.rest import RestSink, RestSinkConfig
from gateway.workflow import follow_ups
from tests.upstream.conftest import record

PARTS = {"pump-1": {"VIB": [{"material": "BRG-6205", "quantity": 2, "unit": "EA",
                             "plant": "1010", "storage_location": "0001",
                             "reorder_level": 4}]}}


class Cmms:
    """Requests, open work, stock and parts documents; POSTs de-duplicated by Idempotency-Key."""

    def __init__(self) -> None:
        self.stock = {"BRG-6205": 1.0}
        self.open_work: list[dict[str, Any]] = []
        self.posts: dict[str, list[dict[str, Any]]] = {}
        self._seen: dict[str, bytes] = {}
        self.url = ""

    async def _post(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        if key in self._seen:
            return web.Response(status=201, body=self._seen[key], content_type="application/json")
        kind = request.match_info["kind"]
        made = self.posts.setdefault(kind, [])
        made.append(orjson.loads(await request.read()))
        body = orjson.dumps({"id": f"{kind}-{len(made)}"})
        self._seen[key] = body
        return web.Response(status=201, body=body, content_type="application/json")

    async def _stock(self, request: web.Request) -> web.Response:
        return web.json_response({"available": self.stock[request.query["material"]]})

    async def _open(self, request: web.Request) -> web.Response:
        assert request.query["status"] == "open"
        return web.json_response([w for w in self.open_work
                                  if w["asset"] == request.query["asset"]])

    async def _status(self, request: web.Request) -> web.Response:
        self.posts.setdefault("status", []).append(
            {"id": request.match_info["id"], **orjson.loads(await request.read())})
        return web.json_response({"id": "SU-1"}, status=201)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/maintenance-requests/{id}/status-updates", self._status)
        app.router.add_post("/api/{kind}", self._post)
        app.router.add_get("/api/stock", self._stock)
        app.router.add_get("/api/open-work", self._open)
        return app


@pytest.fixture
async def cmms() -> AsyncIterator[Cmms]:
    c = Cmms()
    runner = web.AppRunner(c.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    c.url = f"http://127.0.0.1:{port}"
    try:
        yield c
    finally:
        await runner.cleanup()


@pytest.fixture
async def sink(cmms: Cmms) -> AsyncIterator[RestSink]:
    s = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": cmms.url, "request_path": "/api/requests",
        "reconcile": "off",
        "spare_parts": PARTS, "existing_work_rules": {"vib-high": "link"},
        "workflow": {"existing_work_path": "/api/open-work", "stock_path": "/api/stock",
                     "reservation_path": "/api/reservations",
                     "requisition_path": "/api/requisitions"}}).build()
    try:
        yield s
    finally:
        await s.aclose()


def vib_raise() -> OutboxRecord:
    rec = record()
    return replace(rec, message=replace(rec.message, body=dict(rec.message.body)
                                        | {"failure_code": "VIB"}))


async def test_rest_chain_reserves_and_orders_once(sink: RestSink, cmms: Cmms) -> None:
    queue, done, rid = [vib_raise()], [], 500
    while queue:
        rec = queue.pop(0)
        [d] = await sink.send([rec])
        [twice] = await sink.send([rec])  # a repeat is the API's replay: the same id
        assert twice.receipt == d.receipt, (d, twice)
        assert d.outcome is Outcome.ACCEPTED, d
        done.append((rec.message.kind, d))
        for _, msg in follow_ups(sink, [rec], [d]):
            rid += 1
            queue.append(OutboxRecord(id=rid, message=msg, attempts=0))
    assert [k for k, _ in done] == [MessageKind.MAINTENANCE_REQUEST, MessageKind.PARTS_STOCK,
                                    MessageKind.PARTS_RESERVATION, MessageKind.PARTS_REQUISITION]
    assert all(d.outcome is Outcome.ACCEPTED for _, d in done)
    [resv] = cmms.posts["reservations"]
    assert resv["request_ref"] == "requests-1" and resv["parts"][0]["material"] == "BRG-6205"
    [pr] = cmms.posts["requisitions"]
    assert pr["order"][0]["order_quantity"] == 5.0 and pr["reservation"] == "reservations-1"


async def test_rest_open_work_is_linked_not_duplicated(sink: RestSink, cmms: Cmms) -> None:
    cmms.open_work = [{"id": "WO-7", "asset": "pump-1"}, {"id": "WO-8", "asset": "fan-1"}]
    [d] = await sink.send([vib_raise()])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, "WO-7")
    assert "requests" not in cmms.posts
    [note] = cmms.posts["status"]
    assert note["id"] == "WO-7" and note["status"] == "linked"


async def test_rest_without_workflow_paths_has_no_chain(cmms: Cmms) -> None:
    plain = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": cmms.url, "request_path": "/api/requests",
        "reconcile": "off",
        "spare_parts": PARTS}).build()
    try:
        rec = vib_raise()
        [d] = await plain.send([rec])
        assert d.outcome is Outcome.ACCEPTED
        assert follow_ups(plain, [rec], [Delivery(rec.id, Outcome.ACCEPTED, "x")]) == []
    finally:
        await plain.aclose()
