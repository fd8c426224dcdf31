"""Samples in, committed transitions and messages out: the one place rules meet the outbox.

One committer task evaluates rules in arrival order and writes what they caused in grouped
transactions: the transitions, their messages, and the state of every rule instance the group
changed (pending delays, mutes, windows, last-seen times), so a restart right after the
acknowledgement loses and doubles nothing. A source's batch is acknowledged (MQTT QoS 1) only
after that commit. When the commit fails (full disk), the same transitions and states are
retried until they land: backpressure reaches the sources through the bounded intake queue, and
nothing accepted is lost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from buffer.errors import StorageError
from gateway.backoff import Backoff
from gateway.dedup import SampleGate
from gateway.messages import messages_for
from gateway.model import (
    OutboxMessage,
    Quality,
    RuleState,
    Sample,
    SampleBatch,
    SampleMark,
    Source,
    Transition,
)

if TYPE_CHECKING:
    from buffer.store import OutboxStore
    from rules import RuleEngine

log = logging.getLogger("plantbridge.pipeline")
_BAD = Quality.BAD
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)


@dataclass(slots=True)
class PipelineStats:
    samples: int = 0
    batches: int = 0
    rejected_invalid: int = 0
    transitions: int = 0
    raised: int = 0
    cleared: int = 0
    messages: int = 0
    commits: int = 0
    states_written: int = 0
    commit_failures: int = 0
    evaluation_errors: int = 0
    last_evaluation_error: str = ""
    storage_problem: str = ""
    last_sample_at: float | None = None
    samples_by_source: dict[str, int] = field(default_factory=dict)


TransitionListener = Callable[[Transition], None]


@dataclass(frozen=True, slots=True)
class Shaped:
    """What a message hook makes of a group's transitions: the transitions whose own messages
    are built (a hook may hold some back, or add a re-raise), messages it built itself (an
    incident), and rule-state rows of its own, committed in the same transaction."""

    transitions: Sequence[Transition]
    messages: Sequence[OutboxMessage] = ()
    states: Sequence[RuleState] = ()


# (transitions of the group, now, sinks) -> Shaped. Runs under the commit lock, once per
# commit and once per tick (also with no transitions: time alone can end a flood or a shelf).
MessageHook = Callable[[Sequence[Transition], float, Sequence[str]], Shaped]


class Pipeline:
    def __init__(self, engine: RuleEngine, outbox: OutboxStore, sinks: Sequence[str], site: str,
                 wake_forwarders: Callable[[], None], *, queue_size: int = 256,
                 max_group: int = 2000, tick_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time, gate: SampleGate | None = None) -> None:
        self.engine = engine
        self._outbox = outbox
        self._sinks = list(sinks)
        self._site = site
        self._wake = wake_forwarders
        # (source name, batch): the gate judges resends per source, in evaluation order
        self._queue: asyncio.Queue[tuple[str, SampleBatch]] = asyncio.Queue(queue_size)
        # Each sample once: a sample not newer (device time) than the last one evaluated for
        # its (source, asset, signal) is a resend or redelivery. Judged here, in the committer,
        # so a mark is only ever committed for a sample that was evaluated and committed.
        self.gate = gate if gate is not None else SampleGate()
        self._max_group = max_group
        self._tick_seconds = tick_seconds
        self._clock = clock
        self.stats = PipelineStats()
        self.listeners: list[TransitionListener] = []
        self.message_hooks: list[MessageHook] = []  # shelving, roll-up: see `Shaped`
        # Called once per admitted sample, before the rules see it (the page's trend ring,
        # gateway/trends.py). Keep them cheap: they run on the hot path.
        self.sample_listeners: list[Callable[[Sample], None]] = []
        self._lock = asyncio.Lock()  # commit + engine replacement never interleave

    # --- intake -------------------------------------------------------------------------

    async def feed(self, source: Source) -> None:
        """Pump one source into the intake queue until cancelled."""
        counts = self.stats.samples_by_source
        async with source:
            async for batch in source.batches():
                counts[source.name] = counts.get(source.name, 0) + len(batch.samples)
                await self._queue.put((source.name, batch))

    def set_sinks(self, sinks: Sequence[str]) -> None:
        """Messages of transitions committed from now on go to these sinks."""
        self._sinks = list(sinks)

    async def submit(self, batch: SampleBatch, source: str = "") -> None:
        await self._queue.put((source, batch))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # --- evaluation and commit ------------------------------------------------------------

    async def run(self) -> None:
        """Evaluate and commit until cancelled."""
        while True:
            first = await self._queue.get()
            group = [first]
            n = len(first[1].samples)
            while n < self._max_group and not self._queue.empty():
                nxt = self._queue.get_nowait()
                group.append(nxt)
                n += len(nxt[1].samples)
            transitions: list[Transition] = []
            self.stats.last_sample_at = self._clock()  # once per group, not per sample
            async with self._lock:
                evaluate = self.engine.evaluate
                admit_all = self.gate.admit_all
                hooks = self.sample_listeners
                for source, batch in group:
                    # a batch at a time (a payload of readings): checked, then gated
                    for sample in admit_all(source, self._valid(batch.samples)):
                        try:  # a failing listener is skipped like a failing rule
                            for hook in hooks:
                                hook(sample)
                            caused = evaluate(sample)
                            if caused:
                                transitions.extend(caused)
                        except Exception as exc:
                            self._evaluation_failed(sample, exc)
                states = self.engine.take_dirty()
                # Marks are written with any commit (cheap, and enough: a sample whose mark
                # is not yet stored changed no rule state, so evaluating a resend of it
                # against the stored state changes nothing either).
                marks = self.gate.changed_marks() if transitions or states else ()
                await self._commit(transitions, states, marks)
            self.stats.batches += len(group)
            for _, batch in group:
                if batch.ack is not None:
                    batch.ack()
                self._queue.task_done()

    async def drain(self, timeout_seconds: float) -> None:
        """Wait until everything already received was evaluated and committed."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._queue.join()
        except TimeoutError:
            log.warning("stopping with %d batches not yet evaluated (the broker redelivers "
                        "unacknowledged QoS 1 messages)", self._queue.qsize())

    async def ticker(self) -> None:
        """Time-based rules (debounce expiry, stale data) see the clock once a tick."""
        while True:
            await asyncio.sleep(self._tick_seconds)
            async with self._lock:
                transitions = self.engine.tick(self._clock())
                states = self.engine.take_dirty()
                marks = self.gate.changed_marks() if transitions or states else ()
                await self._commit(transitions, states, marks)

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Commit transitions made outside sample flow (rules closed by a reload)."""
        async with self._lock:
            await self._commit(transitions, self.engine.take_dirty())

    @property
    def lock(self) -> asyncio.Lock:
        return self._lock

    def _evaluation_failed(self, sample: Sample, exc: Exception) -> None:
        """A bug in a rule, hit by one sample. Crashing would not help: the broker redelivers
        the unacknowledged message after every restart, and monitoring would stop for all.
        Skip the sample, count it, log the first of each kind with its traceback."""
        self.stats.evaluation_errors += 1
        what = f"{type(exc).__name__}: {exc}"
        if what != self.stats.last_evaluation_error:
            log.exception("rule evaluation failed on %s/%s = %r; sample skipped",
                          sample.asset, sample.signal, sample.value)
        self.stats.last_evaluation_error = what

    def _valid(self, samples: Sequence[Sample]) -> Sequence[Sample]:
        """The samples rules may see: a finite value, or bad quality. Drivers should never
        hand over anything else; it is counted rather than fed to rules."""
        self.stats.samples += len(samples)
        valid = [s for s in samples
                 if s.quality is _BAD or ((v := s.value) is not None and _LOW < v < _HIGH)]
        if len(valid) == len(samples):
            return samples
        self.stats.rejected_invalid += len(samples) - len(valid)
        return valid

    async def _commit(self, transitions: Sequence[Transition], states: Sequence[RuleState] = (),
                      marks: Sequence[SampleMark] = ()) -> None:
        outgoing: Sequence[Transition] = transitions
        messages: list[OutboxMessage] = []
        if self.message_hooks:
            now, own_states = self._clock(), list(states)
            for hook in self.message_hooks:
                shaped = hook(outgoing, now, self._sinks)
                outgoing = shaped.transitions
                messages.extend(shaped.messages)
                own_states.extend(shaped.states)
            states = own_states
        if not transitions and not states and not marks and not messages:
            return  # the usual group: nothing a restart would need changed
        for t in outgoing:
            messages.extend(messages_for(t, self._sinks, self._site))
        backoff = Backoff(0.2, 10.0)
        while True:
            try:
                await self._outbox.commit(transitions, messages, states, marks)
                break
            except StorageError as exc:  # full disk, I/O error: keep them, retry, say so loudly
                self.stats.commit_failures += 1
                if not self.stats.storage_problem:
                    log.error("cannot commit %d transitions, holding them and retrying: %s",
                              len(transitions), exc)
                self.stats.storage_problem = str(exc)
                await asyncio.sleep(backoff.next_delay())
        if self.stats.storage_problem:
            log.warning("storage writable again; commits resumed")
            self.stats.storage_problem = ""
        self.stats.commits += 1
        self.stats.states_written += len(states)
        self.stats.messages += len(messages)
        for t in transitions:
            self.stats.transitions += 1
            if t.kind == "raised":
                self.stats.raised += 1
            else:
                self.stats.cleared += 1
            for listener in self.listeners:
                listener(t)
        self._wake()
