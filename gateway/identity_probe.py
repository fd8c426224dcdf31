"""The daemon's identity probe: `check --online`'s identity and domain check, in the background.

Once shortly after the daemon is READY (never before, and never in the way of sources or
forwarding: it is a task of its own), again after a successful reload when what it checks
changed (the upstreams, with the registry merged into their `asset_map`, or the priorities and
failure codes the rules use), and every `forwarding.identity_check_interval_seconds` (0: only
at start and after a reload). Each round is `registry_online.validate_identities` with the
daemon's current config, registry and rules and the cache `check --online` uses
(`identity-cache.json` beside the outbox), so a start without network shows the last findings.

An asset an upstream does not know as configured, or a priority or failure code it does not
define, is a problem (requests for that asset would be refused): it goes to the problem list,
so the page, `/readyz` and `systemctl status` show it, in the same words as `check --online`.
An upstream that cannot be asked now is not a problem: it is listed as "not checked: <reason>",
and its cached findings (if any) stand in. Changes are logged once (a new problem, a resolved
one, an upstream that cannot be asked, then can again), never on every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.identity_report import ASKED_TYPES, IdentityReport, rule_domains
from gateway.messages import iso_time

if TYPE_CHECKING:  # the upstream clients load with the probe, not with the page or `status`
    from prometheus_client.core import Metric

    from gateway.config import PlantBridgeConfig
    from gateway.registry import Registry
    from rules import RuleSet

log = logging.getLogger("plantbridge.identity")

# Per upstream, all its look-ups together: an EAM that takes longer is "not checked" this round.
IDENTITY_TIMEOUT_SECONDS = 30.0

Validate = Callable[..., Awaitable["IdentityReport"]]


@dataclass(frozen=True, slots=True)
class Inputs:
    """What a round checks with: the daemon's config, registry and rules of the moment."""

    config: PlantBridgeConfig
    registry: Registry
    rules: RuleSet

    def key(self) -> tuple[object, ...]:
        """Equal when a new round would ask the same questions (registry identities are
        merged into the upstreams' asset_map at load, so the upstreams carry them)."""
        priorities, codes = rule_domains(self.rules)
        return (tuple(self.config.upstreams), frozenset(priorities), frozenset(codes))


def not_checked(report: IdentityReport) -> list[str]:
    """One line per upstream that could not be asked, saying whether cached findings stand in."""
    return [f"upstream {name}: not checked: {why}"
            + (" (its last known findings are shown)" if name in report.from_cache else "")
            for name, why in sorted(report.unreachable.items())]


def problems_by_upstream(report: IdentityReport) -> dict[str, int]:
    """Problems per upstream whose findings are known (asked now, or cached); 0 included."""
    out: dict[str, int] = {}
    for f in report.findings:
        out[f.upstream] = out.get(f.upstream, 0) + (f.problem is not None)
    for name, said in report.domains.items():
        out[name] = out.get(name, 0) + len(said)
    return dict(sorted(out.items()))


def identity_status(report: IdentityReport | None) -> dict[str, Any]:
    """The `/status` key `identity`. Before the first round: checked_at None, nothing listed."""
    if report is None:
        return {"checked_at": None, "problems": [], "domain_problems": [], "unreachable": [],
                "from_cache": [], "problems_by_upstream": {}}
    return {"checked_at": iso_time(report.checked_at), "problems": report.problems,
            "domain_problems": report.domain_problems, "unreachable": not_checked(report),
            "from_cache": sorted(report.from_cache),
            "problems_by_upstream": problems_by_upstream(report)}


def log_changes(before: IdentityReport | None, now: IdentityReport) -> None:
    """Log what changed since the previous round, once: new and resolved problems, upstreams
    that cannot be asked (or whose reason changed) and those that can be asked again."""
    old = set() if before is None else set(before.problems + before.domain_problems)
    new = now.problems + now.domain_problems
    for line in new:
        if line not in old:
            log.warning("identity problem: %s (requests for it will be refused)", line)
    for line in sorted(old - set(new)):
        log.info("identity problem resolved: %s", line)
    was = {} if before is None else dict(before.unreachable)
    for name, why in sorted(now.unreachable.items()):
        if was.get(name) != why:
            cached = "; its last known findings are used" if name in now.from_cache else ""
            log.warning("identity check: upstream %s not checked: %s%s", name, why, cached)
    for name in sorted(set(was) - set(now.unreachable)):
        log.info("identity check: upstream %s answers again", name)
    if before is None and not new and not now.unreachable:
        if now.findings or now.domains:
            log.info("identity check: every mapped asset is known upstream as configured")
        else:  # REST or NATS only: nothing that keeps an asset register to ask
            log.info("identity check: no SAP PM or Maximo upstream to look assets up in")


class IdentityProbe:
    """Runs the identity check now and then; holds the latest report.

    `inputs` is read at every round, so a reload is followed without telling this object
    more than `reloaded()`. `validate` is `validate_identities` unless given (a test may
    count calls)."""

    def __init__(self, inputs: Callable[[], Inputs], ready: asyncio.Event, *,
                 interval_seconds: float, cache_path: Path,
                 timeout_seconds: float = IDENTITY_TIMEOUT_SECONDS,
                 validate: Validate | None = None) -> None:
        self._inputs = inputs
        self._ready = ready
        self._interval = interval_seconds
        self._cache_path = cache_path
        self._timeout = timeout_seconds
        self._validate = validate  # None: registry_online's, loaded when there is an EAM to ask
        self._poke = asyncio.Event()
        self._checked_key: tuple[object, ...] | None = None
        self.report: IdentityReport | None = None
        self.rounds = 0  # completed rounds: lets a test wait for a fresh one

    def reloaded(self) -> None:
        """After a successful reload: check again if what is checked changed."""
        if self._checked_key is None or self._inputs().key() != self._checked_key:
            self._poke.set()

    async def run(self) -> None:
        """Wait for READY, check, then every interval (0: never) or when poked, until
        cancelled."""
        await self._ready.wait()
        while True:
            self._poke.clear()
            try:
                await self.check()
            except Exception:  # a bug here must not stop monitoring: say it, keep the last
                log.exception("identity check failed (a bug); its last findings stay shown")
            wait = self._poke.wait()
            if self._interval > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait, self._interval)
            else:
                await wait

    async def check(self) -> IdentityReport:
        """One round; its faults are the upstreams' (reported as not checked), never ours."""
        inputs = self._inputs()
        key = inputs.key()
        if self._validate is None and not any(
                getattr(u, "type", None) in ASKED_TYPES for u in inputs.config.upstreams):
            report = IdentityReport(time.time(), ())  # nothing to ask: nothing to load
        else:
            validate = self._validate or _registry_online_validate()
            report = await validate(inputs.config, inputs.registry, timeout_seconds=self._timeout,
                                    cache_path=self._cache_path, rules=inputs.rules)
        log_changes(self.report, report)
        self.report, self._checked_key = report, key
        self.rounds += 1
        return report

    def problems(self) -> list[str]:
        """For the daemon's problem list: what would make requests be refused."""
        r = self.report
        return [] if r is None else r.problems + r.domain_problems

    def status(self) -> dict[str, Any]:
        return identity_status(self.report)


def _registry_online_validate() -> Validate:
    """The real look-up; importing it loads the SAP PM and Maximo clients."""
    from gateway.registry_online import validate_identities

    return validate_identities


def status_lines(identity: Mapping[str, Any] | None) -> list[str]:
    """`plantbridge status` and the page: when the identities were checked, and what was not."""
    if not identity:
        return []
    if identity.get("checked_at") is None:
        return ["asset identities: not checked yet"]
    n = len(identity.get("problems") or []) + len(identity.get("domain_problems") or [])
    if not n and not identity.get("problems_by_upstream") and not identity.get("unreachable"):
        return ["asset identities: nothing to look up (no SAP PM or Maximo upstream maps assets)"]
    head = (f"asset identities: checked at {identity['checked_at']}, "
            + (f"{n} problem(s) (listed above)" if n else "all known upstream as configured"))
    return [head] + [f"  {line}" for line in identity.get("unreachable") or []]


def identity_metric_families(s: Mapping[str, Any]) -> Iterator[Metric]:
    """`plantbridge_identity_problems{upstream}` from the snapshot's `identity` key."""
    from prometheus_client.core import GaugeMetricFamily  # at the first scrape (metrics.py)

    family = GaugeMetricFamily("plantbridge_identity_problems",
                               "Mapped assets an upstream does not know as configured, plus "
                               "rule priorities and failure codes it does not define (asked now "
                               "or, while it cannot be asked, the last known findings)",
                               labels=["upstream"])
    for name, n in ((s.get("identity") or {}).get("problems_by_upstream") or {}).items():
        family.add_metric([str(name)], float(n))
    yield family
