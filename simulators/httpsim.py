"""What the HTTP API simulators (CMMS, SAP PM, Maximo) share: the run-time fault switch, a
listener that can go down and come back on the same port keeping its data, request counting,
the `/_sim/state` and `/_sim/faults` control routes, and the CLI's run-until-signalled loop.

Each simulator keeps its own API, its own fault modes (a `StrEnum` with `NONE = "none"`) and
decides which requests a fault meets and what the fault answers look like.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import enum
import signal
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_RESPONSE = 0  # status recorded in `received` for dropped (and hung) requests
DROPPED = web.RequestKey("httpsim_dropped", bool)
FAULT_FIELDS = frozenset({"mode", "count", "delay_seconds", "status", "retry_after"})


# --- the fault switch ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault one request meets; a simulator subclasses it to add its own knobs."""

    mode: enum.StrEnum
    delay_seconds: float = 1.0
    status: int = 503
    retry_after: str | None = "1"

    def extra_json(self) -> dict[str, Any]:
        """The subclass's knobs, as `as_json()` shows them."""
        return {}


FaultT = TypeVar("FaultT", bound=Fault)


def retry_after_header(value: float | int | str | None) -> str | None:
    """A Retry-After value as sent: strings (HTTP-dates) as given, numbers as seconds."""
    return None if value is None else value if isinstance(value, str) else f"{value:g}"


class FaultSwitch(abc.ABC, Generic[FaultT]):
    """One fault at a time, armed for the next `count` requests it applies to (None: until
    `clear()`). Subclasses give `set(...)` (building their Fault and calling `_arm`), `take(...)`
    (deciding whether a request is one the fault applies to and calling `_meet`), and name in
    `extra_fields` the `POST /_sim/faults` fields beyond FAULT_FIELDS that `set` accepts."""

    extra_fields: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, idle: FaultT) -> None:
        self._idle = idle
        self._fault = idle
        self._remaining: int | None = None

    def _arm(self, fault: FaultT, count: int | None) -> None:
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if not 100 <= fault.status <= 599:
            raise ValueError(f"status {fault.status} is not an HTTP status")
        if fault.delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        self._fault = fault
        self._remaining = count

    def clear(self) -> None:
        self._fault = self._idle
        self._remaining = None

    @property
    def mode(self) -> enum.StrEnum:
        return self._fault.mode

    @property
    def fault(self) -> FaultT:
        return self._fault

    @property
    def remaining(self) -> int | None:
        return self._remaining

    def _meet(self, applies: Callable[[FaultT], bool]) -> FaultT | None:
        """The armed fault, counted down, if there is one and `applies` to this request."""
        fault = self._fault
        if fault.mode == "none" or not applies(fault):
            return None
        if self._remaining is not None:
            if self._remaining <= 0:
                self.clear()
                return None
            self._remaining -= 1
            if self._remaining == 0:
                self.clear()
        return fault

    @abc.abstractmethod
    def set(self, mode: str, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1) -> None:
        """Arm `mode` for the next `count` requests it applies to (None: until `clear()`)."""

    def set_from_json(self, spec: dict[str, Any]) -> None:
        """The `POST /_sim/faults` body: {"mode": ..., "count": N, "delay_seconds": ...}."""
        unknown = set(spec) - FAULT_FIELDS - self.extra_fields
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "mode" not in spec:
            raise ValueError("mode is required")
        extra = {k: spec[k] for k in self.extra_fields if k in spec}
        self.set(spec["mode"], spec.get("count"),
                 delay_seconds=float(spec.get("delay_seconds", 1.0)),
                 status=int(spec.get("status", 503)), retry_after=spec.get("retry_after", 1),
                 **extra)

    def as_json(self) -> dict[str, Any]:
        f = self._fault
        return {"mode": str(f.mode), "remaining": self._remaining,
                "delay_seconds": f.delay_seconds, "status": f.status,
                "retry_after": f.retry_after, **f.extra_json()}


# --- the listener ------------------------------------------------------------------------


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


class HttpSimulator(abc.ABC):
    """An aiohttp API that listens on `url`; `go_down()` stops listening (connections are
    refused) and `come_up()` listens again on the same port, keeping the data on the object.

    A subclass sets `self.faults` to its FaultSwitch. Every request outside `/_sim/` for which
    `_counter_key` gives a key is counted in `received[(method, route, status)]`, and in
    `active_requests` while it is being handled."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self.faults: FaultSwitch[Any]
        self.received: Counter[tuple[str, str, int]] = Counter()
        self.active_requests = 0  # being handled now (slow and hung ones included)
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()  # set when going down: requests held open give up

    @abc.abstractmethod
    def _add_routes(self, app: web.Application) -> None:
        """The API's own routes."""

    @abc.abstractmethod
    def _counter_key(self, request: web.Request) -> tuple[str, str] | None:
        """(method, route) a request is counted under; None: not counted."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """The `GET /_sim/state` document."""

    def _bad_fault(self, message: str) -> web.Response:
        """The 400 answer to a `POST /_sim/faults` that cannot be armed."""
        return json_response({"error": message}, 400)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """What sits in front of the API's handlers (faults, authentication)."""
        return await handler(request)

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self._port}"

    @property
    def listening(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        await self.come_up()

    async def come_up(self) -> None:
        if self._runner is not None:
            return
        self._release = asyncio.Event()
        app = web.Application(middlewares=[self._count])
        self._add_routes(app)
        app.router.add_get("/_sim/state", self._sim_state)
        app.router.add_get("/_sim/faults", self._sim_get_faults)
        app.router.add_post("/_sim/faults", self._sim_set_faults)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self._ssl)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def go_down(self) -> None:
        """Stop listening (connections are refused); data and port are kept for `come_up()`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._release.set()
            await runner.cleanup()

    async def stop(self) -> None:
        await self.go_down()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def until_going_down(self) -> None:
        """Wait until the simulator stops listening (a hung request's way out)."""
        await self._release.wait()

    # --- counting and dropping -------------------------------------------------------------

    def count(self, method: str, route: str, status: int | None = None) -> int:
        """Requests seen for `method` on `route` (with `status`, if given)."""
        return sum(n for (m, r, s), n in self.received.items()
                   if m == method and r == route and (status is None or s == status))

    def counters(self, route_label: str) -> list[dict[str, Any]]:
        """`received` as JSON rows, the route under `route_label`."""
        return [{"method": m, route_label: r, "status": s, "count": n}
                for (m, r, s), n in sorted(self.received.items())]

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = None if request.path.startswith("/_sim/") else self._counter_key(request)
        if key is None:
            return await handler(request)
        status = NO_RESPONSE
        self.active_requests += 1
        try:
            resp = await self._guarded(request, handler)
            status = NO_RESPONSE if request.get(DROPPED) else resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.active_requests -= 1
            self.received[(*key, status)] += 1

    @staticmethod
    def drop(request: web.Request) -> web.Response:
        """Close the connection without an answer (what is done stays done)."""
        request[DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # never reaches the client

    # --- control (no auth, no faults) ------------------------------------------------------

    async def _sim_state(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.state())

    async def _sim_get_faults(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.faults.as_json())

    async def _sim_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            spec = orjson.loads(await request.read())
            if not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            self.faults.set_from_json(spec)
        except (ValueError, TypeError) as exc:
            return self._bad_fault(str(exc))
        return json_response(self.faults.as_json())


# --- the command line --------------------------------------------------------------------


def argument_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A simulator CLI's parser with the options every simulator has (--host, --port)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return p


async def serve_until_signalled(sim: HttpSimulator, banner: Callable[[], str]) -> None:
    """Start `sim`, print `banner()` (once the port is known), serve until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        print(banner(), flush=True)
        await stop.wait()
    finally:
        await sim.stop()
