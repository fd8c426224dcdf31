"""The rule engine: routes each sample to the rules that care, ticks the ones that need time.

Routing is one dictionary lookup on (asset, signal) to a tuple of hooks, each called as
`hook.evaluate(sample)`: the cost per sample is O(rules on that signal), and a sample no rule
cares about costs one lookup. A hook is the rule instance itself where the handler is its own
`evaluate` (the usual case), else a `_Call` holding the handler (a mute signal's, the
engine's). Calling a method of the instance, rather than a bound method kept in the tuple,
spares a separate object per handler that each sample must reach in memory: with 10,000
signals most of them are out of the cache, and that was a fifth of `evaluate`'s time
(benchmarks/rules_bench.py).

The first sample of an (asset, signal) misses that lookup once: then the pattern rules
(`asset_pattern`) that evaluate this signal are built for the asset, up to
`max_instances_per_rule` per rule (the rest are refused and counted), and the key is cached. So
a pattern rule has instances only for assets that sent one of its own signals; a mute signal
alone builds nothing.

Durable state: every instance reports itself to the engine's dirty set when it changes
something a restart must keep; `take_dirty` snapshots exactly those (and says which instances a
reload removed), `restore_states` brings them back at start. With a journal
(`journal_samples`, what the daemon runs), `take_dirty` stores the group's inputs instead and
snapshots the changed instances only at a checkpoint (rules/journal.py); `restore_states`
evaluates the journal again. Hot reload keeps the state object of every instance whose
definition did not change.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias

from gateway.model import (
    EpisodeState,
    Quality,
    RequestDetails,
    RuleState,
    Sample,
    Transition,
    TransitionKind,
)
from rules import journal as jn
from rules.build import RuleDef, RuleSet
from rules.build import fingerprint as spec_fingerprint
from rules.episode import NOWHERE, Changed, Handler, RuleInstance
from rules.state import VERSION, StateError, as_float, as_list, as_str
from rules.windowlog import segment_key, split_parts

_NONE: Final[tuple[Transition, ...]] = ()
# The rule id of the engine's own stored state: the mute signals of assets that have no pattern
# instance yet (rule ids start with a letter or digit, so this one is never a rule's).
MUTE_MEMORY = "*mutes"
REMOVED = "rule removed on reload"
GONE = "rule no longer exists (removed while the gateway was stopped)"
Key = tuple[str, str]
# What the daemon does with a rule that raised (a bug): (rule id, the sample, or None at a
# tick, the exception). See `RuleEngine.on_error`.
RuleFailed = Callable[[str, Sample | None, Exception], None]


class RuleEngine:
    """Evaluate samples and ticks against a `RuleSet`; replace it on reload without a gap."""

    __slots__ = ("_built", "_by_id", "_checkpoint_due", "_dirty", "_fingerprint", "_forget",
                 "_handlers", "_hot", "_hot_asset", "_instances", "_journal", "_journal_limit",
                 "_journal_other", "_journal_rows", "_journal_seq", "_journal_source", "_journaled",
                 "_limit", "_loaded", "_mute_dirty", "_mute_rules", "_mute_unsaved", "_mutes",
                 "_orphans", "_patterns", "_previous", "_record", "_refused", "_routes", "_rules",
                 "_ticking", "_unsaved", "checkpointed", "journal_marks", "on_error", "replayed")

    def __init__(self, rules: RuleSet, max_instances_per_rule: int = 1000,
                 journal_samples: int = 0, on_error: RuleFailed | None = None) -> None:
        """`journal_samples` > 0: store inputs between checkpoints, at most this many samples
        (rules/journal.py); 0: snapshot every changed instance at every `take_dirty`.

        `on_error`: a rule that raises on a sample or at a tick (a bug) is reported to it, and
        the other rules go on: they still see the sample and still tick, and what they cause
        is returned. One rule's bug must not cost another rule's raise (its state would hold
        an episode the outbox never got) nor every timer of the plant. None (the replay
        tools): the exception propagates, and the rest of that sample or tick is skipped."""
        if max_instances_per_rule < 1:
            raise ValueError("max_instances_per_rule must be at least 1")
        if journal_samples < 0:
            raise ValueError("journal_samples must be 0 (no journal) or more")
        self._limit = max_instances_per_rule
        self.on_error = on_error
        self._journal_limit = journal_samples
        # Inputs since the last take_dirty. With a journal, `evaluate` appends each sample that
        # some rule sees, before the rules (the replay fails the same way if one fails on it).
        self._journal: list[jn.Input] = []
        self._record = self._journal.append if journal_samples else None
        self._journal_rows: list[int] = []  # stored since the last checkpoint (or at start)
        self._journal_seq = 0  # the next row's number
        self._journal_other = 0  # ticks and source names (not samples) since take_dirty
        self._journal_source: str | None = None  # the source named last in those inputs
        # Whether the last take_dirty stored everything (no journal: always). Until the next
        # checkpoint the journal rows also hold the sample marks (`note_source`).
        self.checkpointed = True
        # The newest device time per (source, asset, signal) among the journaled samples
        # evaluated again at start: marks of committed samples (gateway/dedup.py).
        self.journal_marks: dict[tuple[str, str, str], float] = {}
        self._journaled = 0  # samples in those rows
        self._checkpoint_due = True
        self._unsaved: set[RuleInstance] = set()  # changed since the last checkpoint
        self._mute_unsaved: set[str] = set()
        self.replayed = 0  # journaled samples evaluated again at the last start
        self._dirty = Changed()  # changed since the last take_dirty
        self._forget: dict[Key, RuleState] = {}  # (rule_id, asset) removed: forget its state
        self._loaded: set[Key] = set()  # loaded by restore_states, not yet checked by restore
        self._orphans: list[EpisodeState] = []  # restored episodes of rules that are gone
        self._previous: dict[Key, RuleInstance] = {}  # during a reload: the old instances
        # Per asset, the latest good value of each pattern-rule mute signal, so that a pattern
        # instance built later (after a restart too) starts muted if it should.
        self._mutes: dict[str, dict[str, float]] = {}
        self._mute_dirty: set[str] = set()  # assets whose mute memory changed
        self._load(rules)

    def _load(self, rules: RuleSet) -> None:
        self._rules = rules
        self._by_id: dict[str, RuleDef] = {r.rule_id: r for r in rules.rules}
        self._patterns: dict[str, list[RuleDef]] = {}  # own signal -> pattern rules
        self._mute_rules: dict[str, list[RuleDef]] = {}  # mute signal -> pattern rules
        for rule in rules.rules:
            if rule.pattern is not None:
                probe = rule.build(rule.rule_id)
                for signal in probe.signals():
                    self._patterns.setdefault(signal, []).append(rule)
                for signal, _ in probe.suppress_while():
                    self._mute_rules.setdefault(signal, []).append(rule)
        self._instances: dict[Key, RuleInstance] = {}  # (rule_id, asset)
        self._routes: dict[Key, tuple[Handler, ...]] = {}  # (asset, signal): every handler
        # The keys seen, asset -> signal -> their hooks: the hot path (two lookups of strings
        # whose hashes are cached, no key tuple to build per sample).
        self._handlers: dict[str, dict[str, tuple[Hook, ...]]] = {}
        # The last asset looked up (the very object) and its signals: samples of one asset
        # come together (a device's poll, a message with several signals), and the lookup
        # in a dict of every asset is a cache miss at plant size. An inner dict is never
        # replaced, only this whole map (here), so the pair stays right until then.
        self._hot_asset: str | None = None
        self._hot: dict[str, tuple[Hook, ...]] = {}
        self._ticking: list[RuleInstance] = []
        self._built: dict[str, int] = {}  # rule id -> instances built from its pattern
        self._refused: dict[str, set[str]] = {}  # rule id -> assets refused by the cap
        self._fingerprint = jn.rules_fingerprint(
            [self._limit, *([r.rule_id, spec_fingerprint(r.spec, ""), r.pattern or "",
                             sorted(r.assets),
                             sorted((a, spec_fingerprint(spec, a))
                                    for a, spec in r.per_asset.items())]
                            for r in rules.rules)])
        for inst in rules.instances():
            self._add(inst)

    # --- per sample and per tick ------------------------------------------------------------

    def evaluate(self, sample: Sample) -> Sequence[Transition]:
        """Transitions this sample causes, in rule order (usually none)."""
        asset = sample.asset
        try:
            if asset is self._hot_asset:
                hooks = self._hot[sample.signal]
            else:
                by = self._handlers[asset]
                hooks = by[sample.signal]
                self._hot_asset, self._hot = asset, by
        except KeyError:
            hooks = self._miss(asset, sample.signal)
        if hooks and self._record is not None:  # journaled before a rule can fail on it
            self._record(sample)
        out: list[Transition] | None = None
        for hook in hooks:
            try:
                t = hook.evaluate(sample)
            except Exception as exc:  # a bug in that rule (costs nothing until one raises)
                self._failed(hook.rule_id, sample, exc)
                continue
            if t is not None:
                if out is None:
                    out = []
                if isinstance(t, tuple):  # a delay that ran out before the sample, then it
                    out.extend(t)
                else:
                    out.append(t)
        return _NONE if out is None else out

    def note_source(self, source: str) -> None:
        """The samples evaluated next come from `source` (the pipeline says so per batch). With
        a journal the name goes into it, so the journal also tells which samples each source
        had delivered: their marks (gateway/dedup.py) need no rows of their own until the
        next checkpoint."""
        if self._record is not None and source != self._journal_source:
            self._journal_source = source
            self._record(source)
            self._journal_other += 1

    def tick(self, now: float) -> Sequence[Transition]:
        """Let time pass for rules that need it (debounce expiry, stale data)."""
        out: list[Transition] | None = None
        if self._orphans:
            out = [_orphan_clear(ep, now) for ep in self._orphans]
            self._orphans.clear()
        if self._ticking and self._record is not None:
            self._record(float(now))
            self._journal_other += 1
        for inst in self._ticking:
            try:
                t = inst.tick(now)
            except Exception as exc:
                self._failed(inst.rule_id, None, exc)
                continue
            if t is not None:
                if out is None:
                    out = [t]
                else:
                    out.append(t)
        return _NONE if out is None else out

    def _failed(self, rule_id: str, sample: Sample | None, exc: Exception) -> None:
        """A rule raised: report it and go on with the others, or without `on_error`, raise."""
        if self.on_error is None:
            raise exc
        self.on_error(rule_id, sample, exc)

    # --- durable state ----------------------------------------------------------------------

    def take_dirty(self) -> list[RuleState]:
        """What to store now of the rule state, with the transitions of the group: snapshots
        of the instances whose persistent state changed since the last call, one per
        (rule_id, asset); `data` None for an instance a reload removed (forget it).

        With a journal, one journal row of this group's inputs instead, and the snapshots of
        everything changed since the last checkpoint only when one is due (rules/journal.py).
        Nothing when no state changed. Called once per commit group: its cost is O(changed
        instances) whatever the number of samples in the group.
        """
        inputs = self._journal.copy()  # the journal row's own list
        self._journal.clear()
        self._journal_source = None  # each row names its sources itself
        changed = bool(self._dirty or self._mute_dirty)
        out: list[RuleState]
        if not self._journal_limit:
            out = self._snapshots(self._dirty, self._mute_dirty) if changed else []
            self._dirty.clear()
        else:
            if changed:
                self._unsaved.update(self._dirty)
                self._dirty.clear()
                self._mute_unsaved |= self._mute_dirty
                self._mute_dirty.clear()
            n = len(inputs) - self._journal_other  # samples
            self._journal_other = 0
            self.checkpointed = False
            if self._checkpoint_due or (changed and (not inputs or self._full(n))):
                out = self._checkpoint()
                self.checkpointed = True
            elif changed:
                out = [jn.encode(self._journal_seq, self._fingerprint, inputs)]
                self._journal_rows.append(self._journal_seq)
                self._journal_seq += 1
                self._journaled += n
            else:
                out = []
        if self._forget:  # removed or refused: forget it, unless it is written anew above
            written = {(state.rule_id, state.asset) for state in out}
            out.extend(state for key, state in self._forget.items() if key not in written)
            self._forget = {}
        return out

    def _full(self, adding: int) -> bool:
        """Whether a checkpoint is due (rather than a journal row of `adding` samples)."""
        total = self._journaled + adding
        due = max(jn.FLOOR_SAMPLES, jn.SAMPLES_PER_CHANGED * len(self._unsaved))
        return (total > min(due, self._journal_limit)
                or len(self._journal_rows) >= jn.MAX_ROWS)

    def _checkpoint(self) -> list[RuleState]:
        """Snapshots of everything changed since the last checkpoint, and the journal rows
        deleted: from here on the stored state alone is the state."""
        out = self._snapshots(self._unsaved, self._mute_unsaved)
        self._unsaved.clear()
        out.extend(RuleState(jn.JOURNAL, jn.row_key(k), "", None) for k in self._journal_rows)
        self._journal_rows.clear()
        self._journaled = 0
        self._checkpoint_due = False
        return out

    def _snapshots(self, instances: Iterable[RuleInstance], mutes: set[str]) -> list[RuleState]:
        """The stored form of these instances and these assets' mute memory (`mutes` is
        emptied, the caller empties `instances`): every instance in them is live, `replace`
        drops the others."""
        log: list[RuleState] = []  # rows an instance keeps beside its own (rate windows)
        # `new_state` spelled out: a RuleState without a Python call, thousands per group
        make, cls = tuple.__new__, RuleState
        out: list[RuleState] = [
            make(cls, (inst.rule_id, inst.asset, inst._fingerprint, inst.durable(log)))
            for inst in instances]
        if log:
            out += log
        if mutes:
            for asset in mutes:
                remembered = self._mutes[asset]
                out.append(RuleState(MUTE_MEMORY, asset, "", [
                    VERSION, [[signal, remembered[signal]] for signal in sorted(remembered)]]))
            mutes.clear()
        return out

    def restore_states(self, states: Iterable[RuleState]) -> int:
        """At start, before `restore(episodes)`: bring back stored instance state.

        Each (rule_id, asset) still covered by the rules gets its instance (pattern rules too:
        the asset sent its signal before the restart), loaded when the fingerprint matches; a
        changed rule, or data that does not fit, starts clean. State of rules or assets no
        longer covered is forgotten at the next `take_dirty`. Returns how many instances
        have their state back (loaded, or built or changed by the journal).
        """
        loaded = 0
        states = list(states)
        journal = [s for s in states if s.rule_id == jn.JOURNAL]
        states, parts = split_parts(s for s in states if s.rule_id != jn.JOURNAL)
        for state in states:
            if state.data is None:
                continue
            key = (state.rule_id, state.asset)
            if state.rule_id == MUTE_MEMORY:
                try:
                    self._mutes[state.asset] = _mute_memory(state.data)
                except StateError:
                    self._forget[key] = RuleState(*key, "", None)
                continue
            inst = self._ensure(state.rule_id, state.asset, capped=True)
            if inst is None:
                self._forget[key] = RuleState(state.rule_id, state.asset, state.fingerprint,
                                              None)
                continue
            if state.fingerprint == inst.fingerprint():
                try:
                    inst.load(state.data, parts.get(key, {}).get(state.fingerprint))
                except StateError:
                    pass  # refused: start clean (and overwrite what is stored)
                else:
                    loaded += 1
                    self._loaded.add(key)
                    self._dirty.discard(inst)  # stored as it is now
                    continue
            self._dirty.add(inst)  # clean state replaces the stored one
        self._forget_parts(parts)
        self._replay(journal)
        return len(self._loaded)  # loaded, and built or changed by the journal

    def _replay(self, rows: list[RuleState]) -> None:
        """Evaluate the stored journal again, in order, after its checkpoint was loaded: the
        state of the last commit (rules/journal.py). Its transitions are in the outbox
        already. Rows of another rule set reach only the instances loaded just now (their
        rule is the same; what the others would have done is not what happened); a row that
        cannot be read, or is missing (a salvaged file), ends the replay there. The rows are
        deleted at the next checkpoint."""
        numbered = sorted(((int(r.asset), r) for r in rows if r.asset.isdigit()),
                          key=lambda pair: pair[0])
        self._journal_rows.extend(k for k, _ in numbered)
        for r in rows:  # not ours to read (another writer?): forget it
            if not r.asset.isdigit():
                self._forget[(r.rule_id, r.asset)] = RuleState(r.rule_id, r.asset, "", None)
        if numbered:
            self._journal_seq = max(self._journal_seq, numbered[-1][0] + 1)
        ours: set[RuleInstance] | None = None
        if any(r.fingerprint != self._fingerprint for _, r in numbered):
            ours = {self._instances[key] for key in self._loaded if key in self._instances}
        self._checkpoint_due = True
        if not numbered:
            return
        before = list(self._dirty)  # set aside, to see which instances the journal changes
        self._dirty.clear()
        expected = numbered[0][0]
        for k, row in numbered:
            if k != expected:  # rows are numbered without a gap from a checkpoint on
                break
            expected += 1
            try:
                inputs = jn.decode(row.data)
            except StateError:
                break
            source: str | None = None
            marks = self.journal_marks
            for item in inputs:
                if isinstance(item, str):
                    source = item
                    continue
                try:  # a failing rule fails as it did live: the rest of that input is skipped
                    if isinstance(item, float):
                        self._replay_tick(item, ours)
                    else:
                        self.replayed += 1
                        if source is not None and item.device_ts is not None:
                            key = (source, item.asset, item.signal)
                            if marks.get(key, -math.inf) < item.device_ts:
                                marks[key] = item.device_ts
                        self._replay_sample(item, ours)
                except Exception:  # the engine's own code failed live too (the pipeline
                    pass  # skipped that sample and counted it then)
        self._journal.clear()  # what the replay went through again
        self._journal_other = 0
        self._journal_source = None
        self._loaded.update(inst.key for inst in self._dirty)  # checked by `restore`
        for inst in before:
            self._dirty.add(inst)

    def _replay_tick(self, now: float, ours: set[RuleInstance] | None) -> None:
        for inst in self._ticking:
            if ours is None or inst in ours:
                with contextlib.suppress(Exception):  # it failed live too (reported then)
                    inst.tick(now)

    def _replay_sample(self, sample: Sample, ours: set[RuleInstance] | None) -> None:
        """`evaluate` without its transitions (and without journaling it again)."""
        if sample.signal not in self._handlers.get(sample.asset, ()):
            self._miss(sample.asset, sample.signal)
        for handler in self._routes.get((sample.asset, sample.signal), ()):
            owner = getattr(handler, "__self__", None)
            if ours is None or owner is self or owner in ours:
                with contextlib.suppress(Exception):  # it failed live too (reported then)
                    handler(sample)

    def _forget_parts(self, parts: dict[Key, dict[str, dict[int, bytes]]]) -> None:
        """Stored extra rows (rate window segments) that no loaded instance uses now: forget
        them (left by a removed or changed rule, or a refused state)."""
        for (rule_id, asset), by_fingerprint in parts.items():
            inst = self._instances.get((rule_id, asset))
            for fingerprint, rows in by_fingerprint.items():
                ours = inst is not None and fingerprint == inst.fingerprint()
                used = set(inst.log_keys()) if inst is not None and ours else set()
                for k in rows.keys() - used:
                    self._forget_segment(rule_id, asset, k, fingerprint)

    def _forget_segment(self, rule_id: str, asset: str, k: int, fingerprint: str) -> None:
        """Delete one stored rate-window segment row at the next `take_dirty`."""
        row = segment_key(asset, k)
        self._forget[(rule_id, row)] = RuleState(rule_id, row, fingerprint, None)

    def resume(self, now: float, stale_grace_seconds: float) -> None:
        """After `restore_states` and `restore` at start: timers keep their deadlines (one
        that passed while the gateway was down fires at the next tick), except that a stale
        rule gives its sensor `stale_grace_seconds` (at most its limit) to report again."""
        for inst in self._instances.values():
            inst.resume(now, stale_grace_seconds)

    def refused_instances(self) -> dict[str, int]:
        """Per pattern rule: distinct assets refused because the rule had its cap of
        instances."""
        return {rule_id: len(assets) for rule_id, assets in self._refused.items()}

    # --- restart and reload --------------------------------------------------------------

    def restore(self, episodes: Iterable[EpisodeState]) -> None:
        """After a restart: open episodes make their rules start active (no second raise).

        An episode whose rule no longer exists (or no longer covers its asset) is cleared at
        the next tick. Call after `restore_states`: an instance whose loaded state already
        holds the episode is left as it is; one whose loaded state holds an episode that is not
        among `episodes` forgets it: call it at start with every open episode.
        """
        open_ids = set()
        for ep in episodes:
            open_ids.add(ep.episode_id)
            inst = self._ensure(ep.rule_id, ep.asset, capped=False)
            if inst is None:
                self._orphans.append(ep)
            else:
                inst.restore(ep)
        # The outbox is the authority on open episodes: loaded state that holds one it does not
        # know (state of another time) must not keep the rule raised for good.
        for key in self._loaded:
            inst = self._instances.get(key)
            if inst is not None and inst.active and inst.episode_id not in open_ids:
                inst.drop_episode()
        self._loaded.clear()

    def replace(self, new_rules: RuleSet, now: float) -> list[Transition]:
        """Hot reload. Unchanged instances keep their state object (open episode, timers); a
        changed one starts clean but keeps its open episode, as after a restart; a removed one
        clears its open episode, saying why, and its stored state is forgotten.

        Pattern instances carry over for the assets that had them; refusal counts restart.
        """
        old = self._previous = self._instances
        self._checkpoint_due = True  # the journal so far is of the old rules
        try:
            self._load(new_rules)  # named assets: built, or the old object kept (`_add`)
            out: list[Transition] = []
            for key, before in old.items():
                inst = self._ensure(*key, capped=True)
                if inst is None:
                    if (t := before.close(now, REMOVED)) is not None:
                        out.append(t)
                    self._forget[key] = RuleState(*key, before.fingerprint(), None)
                elif inst is not before:  # changed: clean, but the episode stays open
                    episode = before.episode()
                    if episode is not None:
                        inst.restore(episode)
                    self._dirty.add(inst)
        finally:
            self._previous = {}
            self._drop_dead(old)
        return out

    def _drop_dead(self, old: dict[Key, RuleInstance]) -> None:
        """After a reload: instances no longer in the engine report nowhere, and what they
        reported before is not snapshotted (their state is forgotten or replaced)."""
        live = self._instances
        for key, inst in old.items():
            if live.get(key) is not inst:
                self._dirty.discard(inst)
                inst._dirty = NOWHERE
                self._unsaved.discard(inst)
                for k in inst.log_keys():  # its window segments go with it
                    self._forget_segment(inst.rule_id, inst.asset, k, inst.fingerprint())

    # --- observation ------------------------------------------------------------------------

    def open_episodes(self) -> list[EpisodeState]:
        found = [ep for inst in self._instances.values() if (ep := inst.episode()) is not None]
        return found + list(self._orphans)

    def rule_ids(self) -> list[str]:
        return self._rules.rule_ids()

    def instance(self, rule_id: str, asset: str) -> RuleInstance | None:
        """The live instance of a rule for an asset, if built (shelving re-judges it when a
        shelf ends: whether its condition still holds is the instance's own state)."""
        return self._instances.get((rule_id, asset))

    def instances(self) -> list[RuleInstance]:
        """Every instance, in the order they were built (the order rules see a sample in)."""
        return list(self._instances.values())

    @property
    def rules(self) -> RuleSet:
        return self._rules

    # --- building -----------------------------------------------------------------------------

    def _add(self, inst: RuleInstance) -> RuleInstance:
        """Route to `inst`; on reload, to the old instance instead when its definition is the
        same (it keeps its state). Returns the instance that is in the engine."""
        key = (inst.rule_id, inst.asset)
        before = self._previous.get(key)
        if before is not None and before.fingerprint() == inst.fingerprint():
            inst = before
        inst._dirty = self._dirty
        self._instances[key] = inst
        for route, handler in inst.handlers():
            handlers = self._routes[route] = (*self._routes.get(route, ()), handler)
            seen = self._handlers.get(route[0])
            if seen is not None and route[1] in seen:
                seen[route[1]] = _hooks(handlers)
        if inst.needs_tick():
            self._ticking.append(inst)
        return inst

    def _ensure(self, rule_id: str, asset: str, *, capped: bool) -> RuleInstance | None:
        """The instance of this rule for this asset, built if the rule covers the asset (None
        when it does not, or when `capped` and the rule has its cap of pattern instances)."""
        inst = self._instances.get((rule_id, asset))
        if inst is not None:
            return inst
        rule = self._by_id.get(rule_id)
        if rule is None or not rule.matches(asset):
            return None
        return self._build(rule, asset, capped)

    def _build(self, rule: RuleDef, asset: str, capped: bool) -> RuleInstance | None:
        built = self._built.get(rule.rule_id, 0)
        if capped and built >= self._limit:
            self._refused.setdefault(rule.rule_id, set()).add(asset)
            return None
        self._built[rule.rule_id] = built + 1
        fresh = rule.build(asset)
        inst = self._add(fresh)
        if inst is not fresh:  # kept on reload: its state is stored already
            return inst
        remembered = self._mutes.get(asset)
        if remembered:
            for signal, _ in inst.suppress_while():
                value = remembered.get(signal)
                if value is not None:
                    inst._on_mute_signal(Sample(asset, signal, value, Quality.GOOD, 0.0))
        self._dirty.add(inst)  # that this asset has the rule is itself worth keeping
        return inst

    def discover(self, asset: str, signal: str) -> list[RuleInstance]:
        """The first sample of (asset, signal): build the pattern rules that evaluate this
        signal and cover the asset (within the cap). Returns the instances built."""
        out = []
        for rule in self._patterns.get(signal, ()):
            if (rule.rule_id, asset) not in self._instances and rule.matches(asset):
                inst = self._build(rule, asset, capped=True)
                if inst is not None:
                    out.append(inst)
        return out

    def _remember_mute(self, sample: Sample) -> None:
        """Keep the latest good mute-signal sample for pattern rules not built yet."""
        value = sample.value
        if value is None or sample.quality is Quality.BAD:
            return
        remembered = self._mutes.setdefault(sample.asset, {})
        if remembered.get(sample.signal) != value:
            remembered[sample.signal] = value
            self._mute_dirty.add(sample.asset)

    def _miss(self, asset: str, signal: str) -> tuple[Hook, ...]:
        self.discover(asset, signal)
        if any(r.matches(asset) for r in self._mute_rules.get(signal, ())):
            key = (asset, signal)
            self._routes[key] = (self._remember_mute, *self._routes.get(key, ()))
        hooks = _hooks(self._routes.get((asset, signal), ()))
        self._handlers.setdefault(asset, {})[signal] = hooks
        return hooks


class _Call:
    """A handler that is not a rule's own `evaluate`, called the same way as a rule:
    `hook.evaluate(sample)`; `rule_id` names whose it is when it fails."""

    __slots__ = ("evaluate", "rule_id")

    def __init__(self, handler: Callable[[Sample], Any], rule_id: str) -> None:
        self.evaluate = handler
        self.rule_id = rule_id


# What a route calls per sample: a rule instance (its `evaluate`) or a `_Call`. A union of
# classes rather than a protocol, so that compiled, a rule's `evaluate` is a native call (an
# A/B against the protocol measured no difference: CPython's method vectorcall is cheap too).
Hook: TypeAlias = RuleInstance | _Call


def _hooks(handlers: tuple[Handler, ...]) -> tuple[Hook, ...]:
    """A route's handlers as `evaluate` calls them."""
    return tuple(map(_hook, handlers))


def _hook(handler: Handler) -> Hook:
    """The rule instance when `handler` is its own `evaluate`, else the handler in a `_Call`."""
    owner = getattr(handler, "__self__", None)
    if isinstance(owner, RuleInstance):
        return owner if handler == owner.evaluate else _Call(handler, owner.rule_id)
    return _Call(handler, MUTE_MEMORY)


def _mute_memory(data: Any) -> dict[str, float]:
    """Take back the stored mute memory of one asset: [version, [[signal, value], ...]]."""
    version, pairs = as_list(data, 2, "mute memory")
    if version != VERSION:
        raise StateError(f"mute memory version {version!r}, expected {VERSION}")
    rows = [as_list(p, 2, "mute value") for p in as_list(pairs, None, "mute memory")]
    return {as_str(signal, "mute signal"): as_float(value, "mute value") for signal, value in rows}


def _orphan_clear(ep: EpisodeState, now: float) -> Transition:
    return Transition(kind=TransitionKind.CLEARED, rule_id=ep.rule_id, asset=ep.asset, signal="",
                      episode_id=ep.episode_id, severity=ep.severity, value=None, ts=now,
                      reason=GONE, request=RequestDetails(title=f"{ep.rule_id} on {ep.asset}"))
