"""A kill point for crash trials: park one chosen request of a real HTTP simulator right after it
committed, so that a SIGKILL of the daemon lands exactly there.

`RequestGate(sim)` sits in front of any `simulators.httpsim.HttpSimulator` (the CMMS, SAP PM and
Maximo simulators alike) by wrapping its `_guarded` step for this one instance: the simulator's
own code, faults and data stay as they are, and no simulator module changes. Armed with a step's
matcher and a `Hold`, the first matching request that the simulator answers with a 2xx (it
committed) is:

* `Hold.AFTER`: parked, its answer not sent, until `release()` (the daemon is killed while it
  waits for an answer that never comes);
* `Hold.DROP`: its connection dropped, the answer lost (the daemon hears a reset and may act on
  it before it is killed).

* `Hold.BEFORE`: parked before the simulator handles it, until `release()`: it commits after
  the daemon that sent it was killed (long runs only: `random_plan`); `Hold.LATE` the same,
  released by the trial only once the restarted daemon is up.

A matching request answered with anything else (a CSRF 403, a 404 look-up) passes and the gate
stays armed: the kill point is always a committed step. Every request since the gate was last
armed is logged with its real status (before any drop), so trials can count what committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import web

from simulators.httpsim import Handler, HttpSimulator

PARK_LIMIT_SECONDS = 60.0  # a parked answer gives up on its own (a trial that failed)


class Hold(enum.StrEnum):
    """What happens to the chosen request: its answer once it committed, or (BEFORE) the
    request itself."""

    AFTER = "after"  # parked until release(): the daemon dies waiting for it
    DROP = "drop"  # lost: the connection is dropped, the daemon hears a reset
    BEFORE = "before"  # parked before the simulator sees it: it commits after the kill
    LATE = "late"  # like BEFORE, released only once the restarted daemon is up: it commits
    # while that daemon runs (within its unclear window, the late commit the sinks wait for)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the simulator handled: what it was and the status it really produced."""

    method: str  # as overridden (Maximo's x-method-override: PATCH counts as PATCH)
    path: str  # path and query string, decoded
    body: bytes
    status: int

    @property
    def committed(self) -> bool:
        return 200 <= self.status < 300


# (method, path with query, body) -> whether the request is the step's
Matcher = Callable[[str, str, bytes], bool]


class RequestGate:
    """The hold hook of one simulator instance; see the module docstring."""

    def __init__(self, sim: HttpSimulator) -> None:
        self.seen: list[Seen] = []
        self._sim = sim
        self._inner = sim._guarded
        self._armed: tuple[Matcher, Hold] | None = None
        self._reached = False
        self._release = asyncio.Event()
        sim._guarded = self._guarded  # type: ignore[method-assign]

    def arm(self, match: Matcher, hold: Hold) -> None:
        """The next committed request that `match`es meets `hold` (one shot). Starts a new
        log: `seen` then holds this trial's requests only."""
        self.seen = []
        self._armed = (match, hold)
        self._reached = False
        self._release.clear()

    @property
    def reached(self) -> bool:
        """Whether the armed request committed and is now parked (AFTER) or dropped (DROP)."""
        return self._reached

    def release(self) -> None:
        """Let a parked answer go (to a dead client, after the kill); disarm."""
        self._armed = None
        self._release.set()

    def committed(self, match: Matcher) -> int:
        """How many committed requests `match`."""
        return sum(1 for s in self.seen if s.committed and match(s.method, s.path, s.body))

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()  # aiohttp keeps it: the handler reads it again
        method = request.headers.get("x-method-override", request.method).upper()
        path = unquote_plus(request.path_qs)
        armed = self._armed
        parks_first = armed is not None and armed[1] in (Hold.BEFORE, Hold.LATE)
        if parks_first and armed is not None and armed[0](method, path, body):
            self._armed = None
            self._reached = True
            await self._parked()
            resp = await self._inner(request, handler)  # commits now, its client dead
            self.seen.append(Seen(method, path, body, resp.status))
            return resp
        resp = await self._inner(request, handler)
        armed = self._armed
        self.seen.append(Seen(method, path, body, resp.status))
        if armed is None or not 200 <= resp.status < 300 or not armed[0](method, path, body):
            return resp
        self._armed = None
        self._reached = True
        if armed[1] is Hold.DROP:
            return self._sim.drop(request)
        await self._parked()
        return resp

    async def _parked(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), PARK_LIMIT_SECONDS)
