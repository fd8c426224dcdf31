"""The rule engine: routes each sample to the rules that care, ticks the ones that need time.

Routing is one dictionary lookup on (asset, signal) to a tuple of bound methods: the cost per
sample is O(rules on that signal), and a sample no rule cares about costs one lookup. Pattern
rules (`asset_pattern`) are built for an asset the first time it is seen. Hot reload keeps the
state object of every instance whose definition did not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.model import EpisodeState, RequestDetails, Sample, Transition, TransitionKind
from rules.build import RuleSet
from rules.episode import Handler, RuleInstance

_NONE: tuple[Transition, ...] = ()
REMOVED = "rule removed on reload"
GONE = "rule no longer exists (removed while the gateway was stopped)"


class RuleEngine:
    """Evaluate samples and ticks against a `RuleSet`; replace it on reload without a gap."""

    __slots__ = ("_handlers", "_instances", "_orphans", "_rules", "_seen", "_ticking")

    def __init__(self, rules: RuleSet) -> None:
        self._rules = rules
        self._instances: dict[tuple[str, str], RuleInstance] = {}  # (rule_id, asset)
        self._handlers: dict[tuple[str, str], tuple[Handler, ...]] = {}  # (asset, signal)
        self._ticking: list[RuleInstance] = []
        self._seen: set[str] = set()  # assets whose pattern rules are built
        self._orphans: list[EpisodeState] = []  # restored episodes of rules that are gone
        for inst in rules.instances():
            self._add(inst)
        for asset in sorted({a for r in rules.rules for a in r.assets}):
            self.discover(asset)

    # --- per sample and per tick ------------------------------------------------------------

    def evaluate(self, sample: Sample) -> Sequence[Transition]:
        """Transitions this sample causes, in rule order (usually none)."""
        handlers = self._handlers.get((sample.asset, sample.signal))
        if handlers is None:
            handlers = self._miss(sample.asset, sample.signal)
        out: list[Transition] | None = None
        for handler in handlers:
            t = handler(sample)
            if t is not None:
                if out is None:
                    out = [t]
                else:
                    out.append(t)
        return _NONE if out is None else out

    def tick(self, now: float) -> Sequence[Transition]:
        """Let time pass for rules that need it (debounce expiry, stale data)."""
        out: list[Transition] | None = None
        if self._orphans:
            out = [_orphan_clear(ep, now) for ep in self._orphans]
            self._orphans.clear()
        for inst in self._ticking:
            t = inst.tick(now)
            if t is not None:
                if out is None:
                    out = [t]
                else:
                    out.append(t)
        return _NONE if out is None else out

    # --- restart and reload --------------------------------------------------------------

    def restore(self, episodes: Iterable[EpisodeState]) -> None:
        """After a restart: open episodes make their rules start active (no second raise).

        An episode whose rule no longer exists is cleared at the next tick.
        """
        for ep in episodes:
            self.discover(ep.asset)
            inst = self._instances.get((ep.rule_id, ep.asset))
            if inst is None:
                self._orphans.append(ep)
            else:
                inst.restore(ep)

    def replace(self, new_rules: RuleSet, now: float) -> list[Transition]:
        """Hot reload. Unchanged instances keep their state object (open episode, timers); a
        changed one starts clean but keeps its open episode, as after a restart; a removed one
        clears its open episode, saying why.
        """
        old = self._instances
        fresh = RuleEngine(new_rules)
        for asset in sorted(self._seen):
            fresh.discover(asset)
        for key, inst in list(fresh._instances.items()):
            before = old.get(key)
            if before is None:
                continue
            if before.fingerprint() == inst.fingerprint():
                fresh._instances[key] = before
            else:
                episode = before.episode()
                if episode is not None:
                    inst.restore(episode)
        out = [t for key, inst in old.items() if key not in fresh._instances
               if (t := inst.close(now, REMOVED)) is not None]
        fresh._orphans = self._orphans
        self._rules = new_rules
        self._instances = {}
        self._handlers = {}
        self._ticking = []
        self._seen = fresh._seen
        self._orphans = fresh._orphans
        for inst in fresh._instances.values():
            self._add(inst)
        return out

    # --- observation ------------------------------------------------------------------------

    def open_episodes(self) -> list[EpisodeState]:
        found = [ep for inst in self._instances.values() if (ep := inst.episode()) is not None]
        return found + list(self._orphans)

    def rule_ids(self) -> list[str]:
        return self._rules.rule_ids()

    def instances(self) -> list[RuleInstance]:
        return list(self._instances.values())

    @property
    def rules(self) -> RuleSet:
        return self._rules

    # --- building -----------------------------------------------------------------------------

    def _add(self, inst: RuleInstance) -> None:
        self._instances[(inst.rule_id, inst.asset)] = inst
        for key, handler in inst.handlers():
            self._handlers[key] = (*self._handlers.get(key, ()), handler)
        if inst.needs_tick():
            self._ticking.append(inst)

    def discover(self, asset: str) -> None:
        """Build the pattern rules that cover this asset, once (its first sample does this)."""
        if asset in self._seen:
            return
        self._seen.add(asset)
        for inst in self._rules.instances_for(asset):
            if (inst.rule_id, asset) not in self._instances:
                self._add(inst)

    def _miss(self, asset: str, signal: str) -> tuple[Handler, ...]:
        self.discover(asset)
        handlers = self._handlers.get((asset, signal))
        if handlers is None:
            handlers = self._handlers[(asset, signal)] = ()
        return handlers


def _orphan_clear(ep: EpisodeState, now: float) -> Transition:
    return Transition(kind=TransitionKind.CLEARED, rule_id=ep.rule_id, asset=ep.asset, signal="",
                      episode_id=ep.episode_id, severity=ep.severity, value=None, ts=now,
                      reason=GONE, request=RequestDetails(title=f"{ep.rule_id} on {ep.asset}"))
