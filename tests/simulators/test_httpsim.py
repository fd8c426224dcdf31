"""The shared HTTP simulator parts, on a tiny simulator of their own over a real socket."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from simulators import httpsim
from simulators.httpsim import NO_RESPONSE, Handler, HttpSimulator
from tests.harness import free_port, port_open, wait_for


class Mode(enum.StrEnum):
    NONE = "none"
    HOLD = "hold"  # never answer until the simulator goes down
    DROP = "drop"  # POSTs only: store, then drop the connection
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ToyFault(httpsim.Fault):
    tag: str = ""

    def extra_json(self) -> dict[str, Any]:
        return {"tag": self.tag}


class ToyFaults(httpsim.FaultSwitch[ToyFault]):
    extra_fields = frozenset({"tag"})

    def __init__(self) -> None:
        super().__init__(ToyFault(Mode.NONE))

    def set(self, mode: str, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            tag: str = "") -> None:
        self._arm(ToyFault(Mode(mode), delay_seconds, status,
                           httpsim.retry_after_header(retry_after), tag), count)

    def take(self, method: str) -> ToyFault | None:
        return self._meet(lambda f: f.mode is not Mode.DROP or method == "POST")


class ToySimulator(HttpSimulator):
    """GET/POST /things; /private is served but not counted."""

    def __init__(self, port: int = 0) -> None:
        super().__init__("127.0.0.1", port, None)
        self.faults: ToyFaults = ToyFaults()
        self.things: list[str] = []

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/things", self._list)
        app.router.add_post("/things", self._add)
        app.router.add_get("/private", self._list)

    def _counter_key(self, request: web.Request) -> tuple[str, str] | None:
        return None if request.path == "/private" else (request.method, request.path)

    def state(self) -> dict[str, Any]:
        return {"things": self.things, "counters": self.counters("path")}

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self.faults.take(request.method)
        if fault is not None and fault.mode is Mode.HOLD:
            await self.until_going_down()
            return self.drop(request)
        if fault is not None and fault.mode is Mode.ERROR:
            return web.Response(status=fault.status)
        resp = await handler(request)
        if fault is not None and fault.mode is Mode.DROP:
            return self.drop(request)
        return resp

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return httpsim.json_response(self.things)

    async def _add(self, request: web.Request) -> web.StreamResponse:
        self.things.append(await request.text())
        return web.Response(status=201)


@pytest.fixture
async def toy() -> AsyncIterator[ToySimulator]:
    async with ToySimulator() as sim:
        yield sim


# --- the fault switch ---------------------------------------------------------------------


def test_a_fault_counts_down_only_the_requests_it_applies_to() -> None:
    faults = ToyFaults()
    assert faults.take("GET") is None and faults.mode == "none"
    faults.set("drop", count=2)
    assert faults.take("GET") is None and faults.remaining == 2  # GETs do not count
    assert faults.take("POST") is not None and faults.remaining == 1
    assert faults.take("POST") is not None
    assert faults.mode == "none" and faults.remaining is None
    assert faults.take("POST") is None


def test_count_none_lasts_until_cleared_and_count_zero_never_fires() -> None:
    faults = ToyFaults()
    faults.set("error")
    assert all(faults.take("GET") is not None for _ in range(5))
    faults.clear()
    assert faults.take("GET") is None
    faults.set("error", count=0)
    assert faults.take("GET") is None and faults.mode == "none"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"count": -1}, "count"), ({"status": 99}, "status"), ({"status": 600}, "status"),
    ({"delay_seconds": -0.1}, "delay_seconds")])
def test_bad_settings_are_refused_and_leave_the_switch_alone(kwargs: dict[str, Any],
                                                             message: str) -> None:
    faults = ToyFaults()
    faults.set("error", count=3)
    with pytest.raises(ValueError, match=message):
        faults.set("hold", **kwargs)
    assert faults.mode == "error" and faults.remaining == 3
    with pytest.raises(ValueError):
        faults.set("bogus")


@pytest.mark.parametrize(("given", "sent"), [
    (17, "17"), (1.5, "1.5"), (0, "0"), ("Wed, 21 Oct 2015 07:28:00 GMT",
                                         "Wed, 21 Oct 2015 07:28:00 GMT"), (None, None)])
def test_retry_after_is_sent_as_seconds_or_as_given(given: float | str | None,
                                                    sent: str | None) -> None:
    faults = ToyFaults()
    faults.set("error", retry_after=given)
    assert faults.fault.retry_after == sent == faults.as_json()["retry_after"]


def test_json_spec_round_trip_with_the_subclass_fields() -> None:
    faults = ToyFaults()
    faults.set_from_json({"mode": "error", "count": 2, "status": 502, "retry_after": 3,
                          "delay_seconds": 0.5, "tag": "x"})
    assert faults.as_json() == {"mode": "error", "remaining": 2, "delay_seconds": 0.5,
                                "status": 502, "retry_after": "3", "tag": "x"}
    with pytest.raises(ValueError, match="unknown fault fields: \\['colour'\\]"):
        faults.set_from_json({"mode": "error", "colour": "red"})
    with pytest.raises(ValueError, match="mode is required"):
        faults.set_from_json({"count": 1})
    assert faults.as_json()["tag"] == "x"  # the refused specs changed nothing


# --- the listener -------------------------------------------------------------------------


async def test_go_down_refuses_connections_and_come_up_keeps_port_and_data(
        toy: ToySimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(toy.url + "/things", data="a") as resp:
        assert resp.status == 201
    port = toy.port
    assert toy.url == f"http://127.0.0.1:{port}" and toy.listening
    await toy.go_down()
    assert not toy.listening and not port_open(port)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(toy.url + "/things"):
            pass
    await toy.go_down()  # twice is fine
    await toy.come_up()
    await toy.come_up()  # and so is coming up twice
    assert toy.port == port
    async with http.get(toy.url + "/things") as resp:
        assert await resp.json() == ["a"]
    assert toy.count("POST", "/things", 201) == 1 and toy.count("GET", "/things") == 1


async def test_a_fixed_port_is_used() -> None:
    port = free_port()
    async with ToySimulator(port) as sim:
        assert sim.port == port and port_open(port)
    assert not port_open(port)


async def test_a_dropped_request_is_done_but_counted_without_an_answer(
        toy: ToySimulator, http: aiohttp.ClientSession) -> None:
    toy.faults.set("drop", count=1)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.post(toy.url + "/things", data="b"):
            pass
    assert toy.things == ["b"]
    assert toy.received == {("POST", "/things", NO_RESPONSE): 1}


async def test_a_held_request_is_active_until_going_down_releases_it(
        toy: ToySimulator, http: aiohttp.ClientSession) -> None:
    toy.faults.set("hold", count=1)
    held = asyncio.create_task(http.get(toy.url + "/things"))
    await wait_for(lambda: toy.active_requests == 1, 5, "the held request")
    assert toy.received == {}  # counted only when it ends
    await toy.go_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await held
    assert toy.active_requests == 0
    assert toy.received == {("GET", "/things", NO_RESPONSE): 1}
    await toy.come_up()
    async with http.get(toy.url + "/things") as resp:  # a new listener holds nothing
        assert resp.status == 200


async def test_router_errors_are_counted_and_uncounted_routes_are_not(
        toy: ToySimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(toy.url + "/nowhere") as resp:
        assert resp.status == 404
    async with http.get(toy.url + "/private") as resp:
        assert resp.status == 200
    async with http.get(toy.url + "/_sim/state") as resp:
        assert resp.status == 200
    assert toy.received == {("GET", "/nowhere", 404): 1}


async def test_control_routes(toy: ToySimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(toy.url + "/_sim/faults",
                         json={"mode": "error", "count": 1, "status": 502}) as resp:
        assert resp.status == 200 and (await resp.json())["remaining"] == 1
    async with http.get(toy.url + "/_sim/faults") as resp:
        assert (await resp.json())["mode"] == "error"
    async with http.get(toy.url + "/things") as resp:
        assert resp.status == 502
    for bad in (b'{"mode": "bogus"}', b'{"mode": "error", "delay": 1}', b"[1]", b"{"):
        async with http.post(toy.url + "/_sim/faults", data=bad) as resp:
            assert resp.status == 400 and "error" in await resp.json()
    async with http.get(toy.url + "/_sim/state") as resp:
        state = await resp.json()
    assert state == {"things": [], "counters": [
        {"method": "GET", "path": "/things", "status": 502, "count": 1}]}
    assert toy.faults.mode == "none"


def test_the_cli_parser_has_host_and_port() -> None:
    p = httpsim.argument_parser("python -m toy", "a toy")
    p.add_argument("--colour", default="red")
    args = p.parse_args(["--port", "8080"])
    assert (args.host, args.port, args.colour) == ("127.0.0.1", 8080, "red")
