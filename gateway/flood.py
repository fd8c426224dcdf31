"""Flood metrics (ISA-18.2): raises per 10 minutes per line, the bad actors of the last 24 h,
and chattering rules, so a technician knows which rule to fix.

A transition listener of the pipeline (committed transitions, shelved ones included: a shelved
nuisance is still a bad actor). Memory is bounded by time buckets, not by the number of raises:
a storm of thousands costs a counter each. Figures start over when the daemon restarts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from buffer.errors import OutboxError
from gateway.model import RuleState, Transition, TransitionKind
from gateway.rollup import FLOOD_STATE, LINK_STATE, AlarmsConfig, LineOf, RollUp
from gateway.shelving import HIDDEN_STATE, Shelving, read_shelves

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from buffer.store import OutboxStore
    from gateway.pipeline import Pipeline
    from rules import RuleEngine, RuleSet
    from rules.episode import RuleInstance

OWN_STATES = frozenset({FLOOD_STATE, HIDDEN_STATE, LINK_STATE})

FLOOD_WINDOW_SECONDS = 600.0  # ISA-18.2: alarms per 10 minutes
BAD_ACTOR_WINDOW_SECONDS = 24 * 3600.0
BUCKET_SECONDS = 600.0  # bad actors are counted in 10-minute buckets
CHATTER_WINDOW_SECONDS = 3600.0
TOP = 10
PRUNE_INTERVAL_SECONDS = 3600.0

log = logging.getLogger("plantbridge.alarms")


class FloodMetrics:
    """Feed it transitions (`observe`); read `snapshot(now)`. `chatter_limit`: K."""

    def __init__(self, line_of: LineOf, chatter_limit: int, flood_limit: int = 10) -> None:
        self._line_of = line_of
        self._chatter_limit = chatter_limit
        self._flood_limit = flood_limit
        self._line_raises: dict[str, deque[float]] = {}
        self._buckets: deque[tuple[float, Counter[str]]] = deque()  # (start, raises by rule)
        self._flips: dict[tuple[str, str], deque[float]] = {}  # (rule, asset) -> times
        self.raises_total = 0

    def observe(self, t: Transition) -> None:
        now = t.ts
        key = (t.rule_id, t.asset)
        flips = self._flips.setdefault(key, deque())
        flips.append(now)
        _prune(flips, now - CHATTER_WINDOW_SECONDS)
        if t.kind is not TransitionKind.RAISED:
            return
        self.raises_total += 1
        line = self._line_of(t.asset) or "-"
        raises = self._line_raises.setdefault(line, deque())
        raises.append(now)
        _prune(raises, now - FLOOD_WINDOW_SECONDS)
        start = now - now % BUCKET_SECONDS
        if not self._buckets or self._buckets[-1][0] < start:
            self._buckets.append((start, Counter()))
        self._buckets[-1][1][t.rule_id] += 1

    def snapshot(self, now: float) -> dict[str, Any]:
        """Per line: raises in the last 10 minutes and whether that is a flood; the top-10
        rules by raises in 24 h; rule/asset pairs that changed more than K times in an hour."""
        while self._buckets and self._buckets[0][0] < now - BAD_ACTOR_WINDOW_SECONDS:
            self._buckets.popleft()
        lines = {}
        for line, raises in list(self._line_raises.items()):
            _prune(raises, now - FLOOD_WINDOW_SECONDS)
            if raises:
                lines[line] = {"raises_10min": len(raises),
                               "flood": len(raises) > self._flood_limit}
            else:
                del self._line_raises[line]
        total: Counter[str] = Counter()
        for _, counts in self._buckets:
            total.update(counts)
        chattering: list[dict[str, Any]] = []
        for (rule_id, asset), flips in list(self._flips.items()):
            _prune(flips, now - CHATTER_WINDOW_SECONDS)
            if not flips:
                del self._flips[(rule_id, asset)]
            elif len(flips) > self._chatter_limit:
                chattering.append({"rule_id": rule_id, "asset": asset,
                                   "transitions_1h": len(flips)})
        chattering.sort(key=lambda c: (-int(c["transitions_1h"]), c["rule_id"], c["asset"]))
        return {
            "lines": lines,
            "bad_actors": [{"rule_id": r, "raises_24h": n}
                           for r, n in sorted(total.items(), key=lambda x: (-x[1], x[0]))[:TOP]],
            "chattering": chattering,
            "chatter_limit_per_hour": self._chatter_limit,
        }


def _prune(times: deque[float], before: float) -> None:
    while times and times[0] < before:
        times.popleft()


def alarm_metric_families(alarms: dict[str, Any]) -> Iterator[Metric]:
    """Prometheus families from `AlarmComponents.snapshot()` (flood, shelving, roll-up)."""
    # imported at the first scrape: a gateway nobody scrapes never loads prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    flood = alarms["flood"]
    rate = GaugeMetricFamily("plantbridge_line_raises_10min",
                             "Raises on a line within the last 10 minutes (ISA-18.2 flood "
                             "rate)", labels=["line"])
    for line, fig in flood["lines"].items():
        rate.add_metric([line], fig["raises_10min"])
    yield rate
    bad = GaugeMetricFamily("plantbridge_rule_raises_24h",
                            "Raises of the 10 most frequent rules in the last 24 h (bad actors)",
                            labels=["rule_id"])
    for row in flood["bad_actors"]:
        bad.add_metric([row["rule_id"]], row["raises_24h"])
    yield bad
    chatter = GaugeMetricFamily("plantbridge_rule_chattering",
                                "Raises and clears within the last hour of a rule on an asset "
                                "that changes more than the chatter limit",
                                labels=["rule_id", "asset"])
    for row in flood["chattering"]:
        chatter.add_metric([row["rule_id"], row["asset"]], row["transitions_1h"])
    yield chatter
    shelving = alarms["shelving"]
    yield GaugeMetricFamily("plantbridge_shelves", "Shelves in force (rules and assets)",
                            value=len(shelving["shelves"]))
    yield GaugeMetricFamily("plantbridge_shelved_episodes",
                            "Open episodes whose request is held back by a shelf",
                            value=len(shelving["hidden_episodes"]))
    for name, doc in (("suppressed", "Raises held back because their rule or asset was shelved"),
                      ("released", "Held-back raises sent when their shelf ended")):
        yield CounterMetricFamily(f"plantbridge_shelving_{name}", doc, value=shelving[name])
    rollup = alarms["rollup"]
    yield GaugeMetricFamily("plantbridge_incidents_open", "Line incidents open (floods)",
                            value=len(rollup["incidents"]))
    yield CounterMetricFamily("plantbridge_incidents_opened",
                              "Line incidents opened since the start",
                              value=rollup["incidents_opened"])
    yield CounterMetricFamily("plantbridge_rolled_up_episodes",
                              "Episodes rolled up into a line incident since the start",
                              value=rollup["rolled_up"])


class AlarmComponents:
    """Shelving, roll-up and flood metrics, built from `[alarms]` and wired into a pipeline.

    `line_of` is where line membership comes from (the asset registry, once it lands); by
    default the `[alarms.lines]` patterns. The daemon: `restore(states)` with every stored rule
    state before the engine sees them (`engine_states` returns the rest), `attach(pipeline)`,
    then `run(outbox)` as a task.
    """

    def __init__(self, cfg: AlarmsConfig, site: str, line_of: LineOf | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.line_of = line_of or cfg.line_of()
        self._clock = clock
        self._engine_of: Callable[[], RuleEngine | None] = lambda: None  # set by `attach`
        self._individual_rules: tuple[RuleSet | None, frozenset[str]] = (None, frozenset())
        self.shelving = Shelving(self._instance)
        self.rollup = RollUp(cfg, self.line_of, self._individual, site)
        self.flood = FloodMetrics(self.line_of, cfg.chatter_transitions_per_hour,
                                  cfg.flood_raises)

    @staticmethod
    def engine_states(states: Iterable[RuleState]) -> list[RuleState]:
        """The stored states that belong to the rule engine (not ours)."""
        return [s for s in states if s.rule_id not in OWN_STATES]

    def restore(self, states: Iterable[RuleState]) -> tuple[int, int]:
        """(hidden episodes, line floods) taken back."""
        states = list(states)
        return self.shelving.restore(states), self.rollup.restore(states)

    def attach(self, pipeline: Pipeline) -> None:
        self._engine_of = lambda: pipeline.engine
        pipeline.message_hooks.extend([self.shelving.shape, self.rollup.shape])
        pipeline.listeners.append(self.flood.observe)

    async def run(self, store: OutboxStore, interval_seconds: float = 1.0) -> None:
        """Until cancelled: read the shelves every `interval_seconds`; once an hour forget
        roll-up links past the outbox retention and shelves expired a day ago."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(read_shelves(store, self.shelving, self._clock, interval_seconds),
                           name="shelves")
            tg.create_task(self._prune(store), name="alarm-pruning")

    async def _prune(self, store: OutboxStore) -> None:
        while True:
            now = self._clock()
            try:
                await store.prune_state_rows(LINK_STATE, now - store.retention_seconds)
                await store.prune_shelves(now - 86400.0)
            except OutboxError as exc:
                log.warning("pruning roll-up links and old shelves failed (next try in an "
                            "hour): %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)

    def snapshot(self) -> dict[str, Any]:
        """What the status page shows under "alarms"; `alarm_metric_families` reads it too."""
        now = self._clock()
        return {"flood": self.flood.snapshot(now), "shelving": self.shelving.snapshot(now),
                "rollup": self.rollup.snapshot()}

    def _instance(self, rule_id: str, asset: str) -> RuleInstance | None:
        engine = self._engine_of()
        return None if engine is None else engine.instance(rule_id, asset)

    def _individual(self, rule_id: str) -> bool:
        engine = self._engine_of()
        if engine is None:
            return False
        rules, ids = self._individual_rules
        if rules is not engine.rules:  # built once per rule set (a reload brings a new one)
            ids = frozenset(r.rule_id for r in engine.rules.rules if r.spec.always_individual)
            self._individual_rules = (engine.rules, ids)
        return rule_id in ids
