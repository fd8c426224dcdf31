"""Upstream probes: is each upstream reachable, and does it let us in? Asked before an alarm does.

A wrong `base_url` or a revoked token would otherwise stay invisible until the first real
maintenance request fails. `Probes` calls every running sink's `check()` at start, every
`forwarding.probe_interval_seconds`, and whenever poked (after a reload). The result per sink
feeds `/readyz` (a failed probe is a problem), the page, `/status` and the metric
`plantbridge_upstream_probe_ok{sink}`. `plantbridge check --online` runs the same probe once
(`probe_configured`) on sinks built from the config file.

Failures are logged when they start and when they recover, never on every probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.messages import iso_time
from gateway.model import Sink
from gateway.upstream.forwarder import http_status

log = logging.getLogger("plantbridge.probes")

# A probe that takes longer than this counts as failed: an upstream that hangs on a health
# check would hang on a maintenance request too.
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe of one sink. `reason` is empty when it passed."""

    sink: str
    ok: bool
    reason: str
    at: float

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "reason": self.reason, "at": iso_time(self.at)}

    def problem(self) -> str | None:
        """The line for the problem list, or None when the probe passed."""
        return None if self.ok else f"upstream {self.sink}: probe failed: {self.reason}"


def plain_reason(sink: str, error: BaseException) -> str:
    """A sink's check failure in an admin's words; 401/403 named as refused credentials."""
    said = str(error) or type(error).__name__
    prefix = f"{sink}: "
    said = said.removeprefix(prefix)  # sinks name themselves; the problem line does that
    status = http_status(said)
    if status in (401, 403):
        detail = said.split(f"HTTP {status}", 1)[1].strip(" :-")
        more = f": {detail}" if detail else ""
        return (f"credentials refused (HTTP {status}){more}; check the token or key "
                "in this upstream's auth")
    if status == 404:
        return f"{said} (is base_url right? the probe asks the upstream's health check)"
    return said


async def probe(sink: Sink, timeout_seconds: float = PROBE_TIMEOUT_SECONDS,
                clock: Callable[[], float] = time.time) -> ProbeResult:
    """Run one sink's `check()`; never raises for an upstream fault (only for cancellation)."""
    try:
        await asyncio.wait_for(sink.check(), timeout_seconds)
    except TimeoutError:
        return ProbeResult(sink.name, False, f"no answer within {timeout_seconds:.0f} s "
                           "(the upstream accepts connections but does not respond)", clock())
    except Exception as exc:  # any check failure is the upstream's, never ours to crash on
        return ProbeResult(sink.name, False, plain_reason(sink.name, exc), clock())
    return ProbeResult(sink.name, True, "", clock())


class Probes:
    """Probes the running sinks now and then; holds the latest result of each.

    `sinks` is read at every round, so sinks started or stopped by a reload are followed
    without telling this object; the results of a removed sink are forgotten.
    """

    def __init__(self, sinks: Callable[[], Sequence[Sink]], interval_seconds: float,
                 timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> None:
        self._sinks = sinks
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._poke = asyncio.Event()
        self.results: dict[str, ProbeResult] = {}
        self.rounds = 0  # completed rounds: lets a test (or a reload) wait for a fresh one

    def poke(self) -> None:
        """Probe again now (after a reload: a fixed token or URL shows at once)."""
        self._poke.set()

    async def run(self) -> None:
        """Probe at once, then every interval or when poked, until cancelled."""
        while True:
            self._poke.clear()
            await self.probe_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self._interval)

    async def probe_all(self) -> dict[str, ProbeResult]:
        sinks = list(self._sinks())
        found = await asyncio.gather(*(probe(s, self._timeout) for s in sinks))
        fresh = {r.sink: r for r in found}
        for name, result in fresh.items():
            self._log_change(self.results.get(name), result)
        self.results = fresh
        self.rounds += 1
        return fresh

    def problems(self) -> list[str]:
        return [p for r in self.results.values() if (p := r.problem()) is not None]

    @staticmethod
    def _log_change(before: ProbeResult | None, now: ProbeResult) -> None:
        if not now.ok and (before is None or before.ok or before.reason != now.reason):
            log.warning("upstream %s: probe failed: %s", now.sink, now.reason)
        elif now.ok and before is not None and not before.ok:
            log.info("upstream %s: probe ok again (was: %s)", now.sink, before.reason)
        elif now.ok and before is None:
            log.info("upstream %s: probe ok (reachable, credentials accepted)", now.sink)


async def probe_configured(builders: Sequence[Callable[[], Sink]],
                           timeout_seconds: float = PROBE_TIMEOUT_SECONDS) -> list[ProbeResult]:
    """`check --online`: build each sink from its config, probe it once, close it."""
    sinks = [build() for build in builders]
    try:
        return list(await asyncio.gather(*(probe(s, timeout_seconds) for s in sinks)))
    finally:
        for sink in sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()
