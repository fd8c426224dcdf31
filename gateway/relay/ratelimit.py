"""A request rate per upstream shared by every relay of the fleet, kept in a JetStream KV bucket.

The algorithm is GCRA ("virtual scheduling", the cell-rate algorithm of ATM networks), in its
reservation form: the bucket holds, per upstream, one number, the *theoretical arrival time*
(TAT): the earliest wall-clock moment the next request may start. A relay reserves a slot by
compare-and-set on the key's revision:

    slot = max(TAT, now);  TAT' = slot + 1 / rate      (update only if the revision is unchanged)

and then sleeps until `slot`. A lost race re-reads and tries again. So requests from all relays
together start at least 1/rate apart: never more than ⌈rate⌉ in any second, with no burst.

Why this and not a per-second window counter or a token bucket: a window counter lets 2 * rate
through around a window boundary (the end of one second and the start of the next), and needs a
key per second; a token bucket needs two numbers and the same CAS. GCRA is one float per
upstream, one CAS per request when uncontended, and it queues: a relay that finds the next slot
taken reserves the one after it and waits, instead of polling. A relay that dies after its
reservation wastes one slot (the fleet runs a little under the limit, never over).

The clocks are the relays' wall clocks: relays on different hosts need NTP; a skew of s seconds
lets at most s * rate extra requests through.

When the bucket cannot be reached (no NATS, no JetStream leader, a timeout) the relay falls back
to a limit of its own (`fallback_rate_per_second`, the same GCRA in memory), says so once in its
log and on its status page, and tries the bucket again every `retry_shared_seconds` (5). With N
relays in fallback the upstream may see N times the fallback rate: set it to rate / N.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

log = logging.getLogger("plantbridge.relay")

# A lost race is no outage: the loser backs off a random moment (so racing relays fall out of
# step: the one that just won needs one round trip for its next slot, a loser two, so without
# jitter a busy relay could keep winning) and tries again, for up to this long in all.
RACE_BUDGET_SECONDS = 2.0
_KEY_BAD = re.compile(r"[^-_=a-zA-Z0-9]+")
RACE_BACKOFF_MAX_SECONDS = 0.02


class BucketUnavailable(Exception):
    """The shared bucket could not be read or written (the caller falls back)."""


class LocalPacer:
    """The same GCRA in memory: this relay alone, while the shared bucket is out of reach."""

    def __init__(self, rate_per_second: float) -> None:
        self.interval = 1.0 / rate_per_second
        self._tat = 0.0

    def reserve(self, now: float) -> float:
        slot = max(self._tat, now)
        self._tat = slot + self.interval
        return slot


class FleetRateLimit:
    """`await limit.acquire()` before each request to one upstream; shared through the bucket."""

    def __init__(self, kv: Callable[[], KeyValue | None], upstream: str,
                 rate_per_second: float, fallback_rate_per_second: float,
                 retry_shared_seconds: float = 5.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._kv = kv  # the bucket as the relay holds it now (None before it connected)
        self.upstream = upstream
        self.key = "rate." + _KEY_BAD.sub("_", upstream)  # a name is free text; a key is not
        self.interval = 1.0 / rate_per_second
        self.local = LocalPacer(fallback_rate_per_second)
        self.retry_shared_seconds = retry_shared_seconds  # in fallback: when to try the bucket
        self._clock = clock
        self._sleep = sleep
        self._seen: tuple[int, float] | None = None  # last (revision, TAT) read or written
        self._lock = asyncio.Lock()  # one reservation at a time from this relay: no self-races
        self.fallback_since: float | None = None  # wall time the bucket was last given up on
        self.fallback_reason = ""
        self.granted_shared = 0
        self.granted_local = 0
        self.lost_races = 0  # CAS conflicts: another relay took the slot first
        self.waited_seconds = 0.0

    @property
    def shared(self) -> bool:
        """True while the fleet-wide bucket is in use (False: the local fallback)."""
        return self.fallback_since is None

    async def acquire(self) -> float:
        """Wait for this relay's turn; returns the seconds waited."""
        async with self._lock:
            now = self._clock()
            slot = await self._reserve(now)
        wait = max(0.0, slot - self._clock())
        if wait > 0:
            await self._sleep(wait)
        self.waited_seconds += wait
        return wait

    async def _reserve(self, now: float) -> float:
        since = self.fallback_since
        if since is not None and now - since < self.retry_shared_seconds:
            self.granted_local += 1
            return self.local.reserve(now)
        try:
            slot = await self._reserve_shared(now)
        except BucketUnavailable as exc:
            if self.fallback_since is None:
                log.warning("rate limit of %s: shared bucket unavailable (%s); this relay "
                            "falls back to its own limit of %.3g/s", self.upstream, exc,
                            1.0 / self.local.interval)
            self.fallback_since, self.fallback_reason = now, str(exc)
            self.granted_local += 1
            return self.local.reserve(now)
        if self.fallback_since is not None:
            log.info("rate limit of %s: shared bucket works again", self.upstream)
            self.fallback_since, self.fallback_reason = None, ""
        self.granted_shared += 1
        # The local pacer follows along, so a fallback does not start with a burst.
        self.local.reserve(slot)
        return slot

    async def _reserve_shared(self, now: float) -> float:
        kv = self._kv()
        if kv is None:
            raise BucketUnavailable("not connected to the backbone")
        give_up_at = time.monotonic() + RACE_BUDGET_SECONDS
        tries = 0
        while time.monotonic() < give_up_at:
            try:
                if self._seen is None:
                    self._seen = await self._read(kv)
                revision, tat = self._seen
                slot = max(tat, now)
                new_tat = slot + self.interval
                value = repr(new_tat).encode()
                if revision == 0:
                    self._seen = (await kv.create(self.key, value), new_tat)
                else:
                    self._seen = (await kv.update(self.key, value, last=revision), new_tat)
                return slot
            except nats.js.errors.KeyWrongLastSequenceError:
                self.lost_races += 1
                self._seen = None  # another relay took a slot: read its TAT and go after it
                tries += 1
                await self._sleep(random.uniform(0, min(RACE_BACKOFF_MAX_SECONDS,
                                                        0.0005 * 2 ** min(tries, 10))))
                now = self._clock()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._seen = None
                raise BucketUnavailable(str(exc) or type(exc).__name__) from exc
        raise BucketUnavailable(f"{tries} races lost in {RACE_BUDGET_SECONDS:g} s: too busy")

    async def _read(self, kv: KeyValue) -> tuple[int, float]:
        """(revision, TAT) of the key; (0, 0.0) when it does not exist yet."""
        try:
            entry = await kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:  # also a deleted key
            return 0, 0.0
        try:
            tat = float((entry.value or b"0").decode())
        except (UnicodeDecodeError, ValueError):  # not ours, or damaged: overwrite it
            log.warning("rate limit of %s: bucket value %r unreadable, starting afresh",
                        self.upstream, entry.value)
            tat = 0.0
        return int(entry.revision or 0), tat

    def status(self) -> dict[str, object]:
        return {"upstream": self.upstream, "rate_per_second": 1.0 / self.interval,
                "shared": self.shared, "fallback_reason": self.fallback_reason,
                "fallback_rate_per_second": 1.0 / self.local.interval,
                "granted_shared": self.granted_shared, "granted_local": self.granted_local,
                "lost_races": self.lost_races,
                "waited_seconds": round(self.waited_seconds, 3)}
