"""What one upstream allows us: a request rate, a cap on requests in flight, and HTTP timeouts.

Shared by every sink's config (`[upstreams.limits]`) and enforced once, by the forwarder, so a
retry, a probe and a fresh record all draw from the same bucket and the same in-flight cap.

Defaults per upstream kind (guesses, labelled as such: no vendor publishes one number):
- SAP PM (OData on the SAP Gateway): 10 requests/s, burst 10, 4 in flight. Each create holds an
  ABAP dialog work process on an on-premise system, which the plant's own users share; S/4HANA
  Cloud is said to throttle at about 100 requests/s per endpoint (third-party summary, not SAP
  documentation), so 10 stays well clear of it.
- Maximo (OSLC REST): 5 requests/s, burst 5, 4 in flight. A service-request create runs the
  integration framework and business rules (hundreds of ms each); a gateway must not take a
  noticeable share of the server's threads. A guess; IBM documents no per-client limit.
- Generic REST: 50 requests/s, burst 50, 16 in flight: SaaS CMMS APIs commonly allow tens of
  requests per second per key (a guess).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType

import aiohttp
from pydantic import Field

from gateway.settings import StrictModel

DEFAULT_FIRST_BYTE_TIMEOUT_SECONDS = 10.0


class UpstreamLimits(StrictModel):
    """`[upstreams.limits]`: how hard we may push one upstream."""

    # token bucket: refill rate and capacity; None: no rate limit (only max_in_flight)
    max_requests_per_second: float | None = Field(default=50.0, gt=0)
    burst: int = Field(default=50, ge=1)
    max_in_flight: int = Field(default=16, ge=1, le=256)
    # halve the in-flight cap on 429, 503 or a timeout, grow it by one per window of successes
    # back up to max_in_flight (starts at max_in_flight)
    adaptive: bool = False


REST_LIMITS = UpstreamLimits()
SAP_PM_LIMITS = UpstreamLimits(max_requests_per_second=10.0, burst=10, max_in_flight=4)
MAXIMO_LIMITS = UpstreamLimits(max_requests_per_second=5.0, burst=5, max_in_flight=4)
# a sink that declares no limits (a message backbone, say): no rate, a modest in-flight cap
UNDECLARED_LIMITS = UpstreamLimits(max_requests_per_second=None, burst=1, max_in_flight=16)


def client_timeout(connect_seconds: float, first_byte_seconds: float,
                   total_seconds: float) -> aiohttp.ClientTimeout:
    """aiohttp timeouts of one request: connect, first byte (`sock_read`: no byte for that long
    means a hung upstream), total. A first-byte timeout above the total is capped by it."""
    return aiohttp.ClientTimeout(total=total_seconds, sock_connect=connect_seconds,
                                 sock_read=min(first_byte_seconds, total_seconds))


class Deadlines:
    """A time limit for each of many concurrent tasks, all of the same length, on one timer.

    A task runs a step inside `limit()`; one past `seconds` is cancelled, and the `with` turns
    that cancel into a TimeoutError, told apart from other cancels (a stop) with
    `Task.uncancel`, as `asyncio.timeout` does. Every limit has the same length, so they fall
    due in the order they started: the timer sits on the oldest and fires about once per
    `seconds` while steps come and go. A timer (or an `asyncio.timeout`) per step cost a
    twentieth of the loop at thousands of sends a second. `seconds` None: no limit."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._due: dict[_Limit, float] = {}  # in the order they started: oldest first
        self._timer: asyncio.TimerHandle | None = None

    def limit(self) -> _Limit:
        """A `with` block around one step: TimeoutError when it runs past `seconds`."""
        return _Limit(self)

    def _start(self, limit: _Limit) -> None:
        if self.seconds is None or self.seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        due = self._due[limit] = loop.time() + self.seconds
        if self._timer is None:
            self._timer = loop.call_at(due, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._due:
            limit, due = next(iter(self._due.items()))
            if due > now:
                self._timer = asyncio.get_running_loop().call_at(due, self._expire)
                return
            del self._due[limit]
            limit.expire()


class TotalTimeouts(Deadlines):
    """The total timeout of the requests of one HTTP client on `Deadlines`, in place of the
    timer aiohttp arms per request for `ClientTimeout.total` (about 5 % of a bare client's
    instructions per request). Requests inside `limit()` are sent with `timeout`: the same
    timeouts, without the total."""

    def __init__(self, timeout: aiohttp.ClientTimeout) -> None:
        super().__init__(timeout.total)
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout.connect, sock_read=timeout.sock_read,
            sock_connect=timeout.sock_connect, ceil_threshold=timeout.ceil_threshold)


class _Limit:
    """One step under `Deadlines`."""

    __slots__ = ("_cancelling", "_expired", "_owner", "_task")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self._expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.limit() outside a task")
        self._task, self._cancelling = task, task.cancelling()
        self._owner._start(self)

    def expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._owner._due.pop(self, None)
        if (self._expired and self._task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError):
            raise TimeoutError(f"past its time limit ({self._owner.seconds:g} s)") from exc


class TokenBucket:
    """Requests per second with a burst, plus a pause for a server's Retry-After.

    Synchronous and clock-injected; the forwarder is its only taker, so there are no waiters to
    order: it asks how many may go now (`available`), takes them, and sleeps `wait()` otherwise.
    """

    def __init__(self, rate_per_second: float | None, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        if now <= self._at:  # during a pause: refill starts when it ends
            return
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def available(self) -> int:
        """How many requests may start now (0 while paused)."""
        now = self._clock()
        if now < self._paused_until:
            return 0
        if self._rate is None:
            return 1 << 30
        self._refill(now)
        return int(self._tokens)

    def take(self, n: int = 1) -> None:
        """Spend `n` tokens (callers take at most what `available` said)."""
        if self._rate is not None:
            self._refill(self._clock())
            self._tokens -= n

    def wait(self) -> float:
        """Seconds until at least one request may start."""
        now = self._clock()
        paused = max(0.0, self._paused_until - now)
        if self._rate is None:
            return paused
        self._refill(now)
        short = max(0.0, 1.0 - self._tokens) / self._rate
        return max(paused, short)

    def pause(self, seconds: float) -> None:
        """The upstream said Retry-After: nothing starts for `seconds` (the longest pause wins),
        and the bucket starts empty after it, so the first request after a 429 goes alone."""
        now = self._clock()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        self._tokens = min(self._tokens, 1.0)
        self._at = max(self._at, self._paused_until)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())


class InFlightCap:
    """The number of requests allowed in flight: fixed, or adaptive (additive increase,
    multiplicative decrease, as TCP does), never above `maximum` nor below one.

    Growth is one per window of successes (as many as the cap allows at once), not one per
    success: at hundreds of answers per second a per-success step would undo a halving
    within milliseconds, before the upstream had any relief.
    """

    def __init__(self, maximum: int, adaptive: bool) -> None:
        self.maximum = maximum
        self.adaptive = adaptive
        self.current = maximum
        self._successes = 0

    def succeeded(self) -> None:
        if not self.adaptive or self.current >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.current:
            self.current += 1
            self._successes = 0

    def overloaded(self) -> None:
        """429, 503 or a timeout: the upstream is struggling, send less at once."""
        if self.adaptive:
            self.current = max(1, self.current // 2)
            self._successes = 0
