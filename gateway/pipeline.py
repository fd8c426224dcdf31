"""Samples in, committed transitions and messages out: the one place rules meet the outbox.

Rules are evaluated in arrival order, a group of batches at a time, and what a group caused is
written in one transaction: the transitions, their messages, and the state of every rule
instance the group changed (pending delays, mutes, windows, last-seen times), so a restart
right after the acknowledgement loses and doubles nothing. A source's batch is acknowledged
(MQTT QoS 1) only after that commit.

Evaluation and commit overlap: while group N is written on the database thread, group N+1 is
evaluated on the loop (`commit_depth` groups evaluated and not yet committed, 2 by default).
Groups are committed one at a time in evaluation order by one committer task, and everything
that follows a commit (stats, listeners, acknowledgements) follows in that order too, so a clear
is never committed before its raise and acknowledgements keep the order of the batches. When a
commit fails (full disk), the same group is retried until it lands, and the groups behind it
wait: backpressure reaches the sources through the bounded intake queue, nothing accepted is
lost and nothing after it is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import deque
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
    from buffer.records import PreparedCommit
    from buffer.store import OutboxStore
    from rules import RuleEngine

log = logging.getLogger("plantbridge.pipeline")
_BAD = Quality.BAD
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)
YIELD_EVERY_SAMPLES = 500  # evaluation gives the loop a turn after about this many samples
# The database thread takes the GIL back after every SQLite step; while the loop evaluates the
# next group, each take-back waits the switch interval (5 ms by default). Measured with
# benchmarks/pipeline_bench.py at load ~1.5, same CPU per transition: 5 ms ~37,000
# transitions/s, 1 ms ~45,000, 0.2 ms ~52,000. Only a waiting thread makes the holder switch.
GIL_SWITCH_SECONDS = 0.0002
# Samples a group takes off the intake queue at most (only what is queued: a quiet plant commits
# each batch alone). A burst of transitions writes its rows all over the outbox's key and
# episode indexes, and each commit writes every page it touched: bigger groups touch each page
# once for more rows. Measured (benchmarks/pipeline_bench.py, 1,000 assets flipping, quiet
# box): 4,000 -> 47-49k transitions/s, 8,000 -> 51-56k, 16,000 -> 50-52k (the evaluation of
# one group then waits longer for the commit before it). A group is evaluated in slices of
# YIELD_EVERY_SAMPLES, so the loop stays responsive either way.
MAX_GROUP_SAMPLES = 8000
# A kind of rule failure is logged with its traceback at most once an hour, and at most this
# many kinds are remembered (past that, new kinds are only counted, the last one shown on the
# status page): a rule that fails at every tick or sample must not fill the log.
_ERRORS_LOGGED = 100
_ERROR_LOG_SECONDS = 3600.0


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
    last_evaluation_error_at: float | None = None  # the pipeline's clock
    storage_problem: str = ""
    # message hooks switched off after they raised (`Pipeline._hook_failed`): what the status
    # page says about each, until the daemon restarts
    hooks_off: list[str] = field(default_factory=list)
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


@dataclass(slots=True)
class _Group:
    """What one evaluation (a group of batches, a tick, an `apply`) hands to the committer."""

    transitions: Sequence[Transition]
    prepared: PreparedCommit | None  # None: nothing a restart would need changed
    states: int  # rule-state rows in it, for the stats
    messages: int = 0  # messages it enqueues (keys stored before included), for the stats
    batches: Sequence[SampleBatch] = ()  # acknowledged once it is committed
    landed: asyncio.Future[None] | None = None  # done when committed and acknowledged
    waited: bool = False  # a caller awaits `landed` (tick, apply): hand it a failure


class Pipeline:
    def __init__(self, engine: RuleEngine, outbox: OutboxStore, sinks: Sequence[str], site: str,
                 wake_forwarders: Callable[[], None], *, queue_size: int = 256,
                 max_group: int = MAX_GROUP_SAMPLES, tick_seconds: float = 1.0,
                 clock: Callable[[], float] = time.time, gate: SampleGate | None = None,
                 commit_depth: int = 2,
                 gil_switch_seconds: float | None = GIL_SWITCH_SECONDS) -> None:
        if commit_depth < 1:
            raise ValueError("commit_depth must be at least 1")
        self._gil_switch = gil_switch_seconds  # None: leave the interpreter's setting alone
        self.engine = engine
        engine.on_error = self._rule_failed  # one rule's bug: the others go on
        self._outbox = outbox
        self._sinks = list(sinks)
        self._site = site
        self._wake = wake_forwarders
        # (source name, batch): the gate judges resends per source, in evaluation order
        self._queue: asyncio.Queue[tuple[str, SampleBatch]] = asyncio.Queue(queue_size)
        # Each sample once: a sample not newer (device time) than the last one evaluated for
        # its (source, asset, signal) is a resend or redelivery. Judged here, in evaluation
        # order, so a mark is only ever committed for a sample that was evaluated and committed.
        self.gate = gate if gate is not None else SampleGate()
        self._max_group = max_group
        self._tick_seconds = tick_seconds
        self._clock = clock
        self.stats = PipelineStats()
        self.listeners: list[TransitionListener] = []
        self.message_hooks: list[MessageHook] = []  # shelving, roll-up: see `Shaped`
        self._hooks_off: set[MessageHook] = set()  # raised once: skipped (`_hook_failed`)
        # Called once per admitted sample, before the rules see it (the page's trend ring,
        # gateway/trends.py). Keep them cheap: they run on the hot path.
        self.sample_listeners: list[Callable[[Sample], None]] = []
        # Evaluation, tick and engine replacement never interleave; groups enter the commit
        # queue under it, so they are committed in the order they were evaluated.
        self._lock = asyncio.Lock()
        self._depth = commit_depth  # groups evaluated and not yet committed (1: no overlap)
        self._commits: asyncio.Queue[_Group] = asyncio.Queue()  # bounded by _depth in run()
        self._committing = False  # run()'s committer is up: ticks and applies go through it
        self._landing = False  # the committer is writing a group now
        self._errors_logged: dict[tuple[str, bool, str], float] = {}  # see `_count_error`

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
        """Evaluate and commit until cancelled (a bug in either stops both). While it runs,
        the interpreter's GIL switch interval is at most `gil_switch_seconds` (process-wide:
        the pipeline is the daemon's hot path; restored when it ends)."""
        previous = sys.getswitchinterval()
        if self._gil_switch is not None:
            sys.setswitchinterval(min(previous, self._gil_switch))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._committer(), name="pipeline-commit")
                await self._evaluator()
        except BaseExceptionGroup as group:  # the committer's failure, as itself
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            sys.setswitchinterval(previous)

    async def _evaluator(self) -> None:
        """Take groups of batches off the intake queue, evaluate them and queue their commit;
        wait while `commit_depth` groups are not yet committed."""
        in_flight: deque[asyncio.Future[None]] = deque()
        loop = asyncio.get_running_loop()
        while True:
            while in_flight and in_flight[0].done():
                in_flight.popleft()
            while len(in_flight) >= self._depth:
                await in_flight.popleft()
            first = await self._queue.get()
            group = [first]
            n = len(first[1].samples)
            while n < self._max_group and not self._queue.empty():
                nxt = self._queue.get_nowait()
                group.append(nxt)
                n += len(nxt[1].samples)
            self.stats.last_sample_at = self._clock()  # once per group, not per sample
            async with self._lock:
                transitions: list[Transition] = []
                since_yield = 0
                for one in group:
                    if since_yield >= YIELD_EVERY_SAMPLES:
                        # a big group is evaluated in slices: the loop (forwarders, sources,
                        # health) runs between them; nothing else evaluates, we hold the lock
                        await asyncio.sleep(0)
                        since_yield = 0
                    transitions.extend(self._evaluate(one))
                    since_yield += len(one[1].samples)
                states = self.engine.take_dirty()
                job = self._shape(transitions, states, self._marks(transitions, states))
                job.batches = [batch for _, batch in group]
                job.landed = loop.create_future()
                in_flight.append(job.landed)
                self._commits.put_nowait(job)

    def _evaluate(self, item: tuple[str, SampleBatch]) -> list[Transition]:
        """One batch (a payload of readings): checked, gated, then each sample evaluated."""
        transitions: list[Transition] = []
        evaluate = self.engine.evaluate
        hooks = self.sample_listeners
        source, batch = item
        self.engine.note_source(source)
        for sample in self.gate.admit_all(source, self._valid(batch.samples)):
            try:  # the page's trends: a bug there must not cost the rules this sample
                for hook in hooks:
                    hook(sample)
            except Exception as exc:
                self._listener_failed(sample, exc)
            try:
                caused = evaluate(sample)
                if caused:
                    transitions.extend(caused)
            except Exception as exc:
                self._evaluation_failed(sample, exc)
        return transitions

    async def _committer(self) -> None:
        """Commit queued groups one at a time, in order; then acknowledge what each held."""
        self._committing = True
        current: _Group | None = None
        try:
            while True:
                current = await self._commits.get()
                self._landing = True
                await self._land(current)
                self._landing = False
                current = None
        except BaseException as exc:
            if current is not None and current.landed is not None and not current.landed.done():
                if current.waited and not isinstance(exc, asyncio.CancelledError):
                    current.landed.set_exception(exc)
                else:
                    current.landed.cancel()
            raise
        finally:
            self._committing = False
            # Never committed: not acknowledged either (the broker redelivers them).
            while not self._commits.empty():
                left = self._commits.get_nowait().landed
                if left is not None:
                    left.cancel()

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
                landed = await self._enqueue(self._shape(transitions, states,
                                                         self._marks(transitions, states)))
            await landed

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Commit transitions made outside sample flow (rules closed by a reload); returns
        once they are committed."""
        async with self._lock:
            states = self.engine.take_dirty()
            landed = await self._enqueue(self._shape(transitions, states,
                                                     self._marks(transitions, states)))
        await landed

    def _marks(self, transitions: Sequence[Transition], states: Sequence[RuleState]
               ) -> Sequence[SampleMark]:
        """The sample marks to commit with a group. Written with a commit of state (cheap, and
        enough: a sample whose mark is not yet stored changed no rule state, so evaluating a
        resend of it against the stored state changes nothing either). With the rule engine's
        journal, only at its checkpoints: until then the journal rows name each sample's source
        (`RuleEngine.note_source`), and the marks are read back from them at start."""
        if not (transitions or states) or not self.engine.checkpointed:
            return ()
        return self.gate.changed_marks()

    def uncommitted(self) -> int:
        """Groups evaluated and queued whose commit has not landed yet: what they caused (a
        rule that raised or cleared) is in the engine, not yet in the outbox."""
        return self._commits.qsize() + self._landing

    @property
    def lock(self) -> asyncio.Lock:
        return self._lock

    def _evaluation_failed(self, sample: Sample, exc: BaseException) -> None:
        """A bug in the engine's own code (not in a rule), hit by one sample. Crashing would
        not help: the broker redelivers the unacknowledged message after every restart, and
        monitoring would stop for all. Skip the sample, count it, log it with its traceback."""
        self._count_error(("", False), f"evaluation of {sample.asset}/{sample.signal}", exc,
                          "evaluation failed on %s/%s = %r; sample skipped",
                          sample.asset, sample.signal, sample.value)

    def _listener_failed(self, sample: Sample, exc: Exception) -> None:
        """A sample listener raised (a bug): the listeners after it miss this sample, the
        rules do not."""
        self._count_error(("", False), "a sample listener", exc, "a sample listener failed on "
                          "%s/%s = %r; the rules saw the sample",
                          sample.asset, sample.signal, sample.value)

    def _hook_failed(self, hook: MessageHook, exc: Exception) -> None:
        """A message hook raised (a bug in shelving, the roll-up, ...). Crashing would not
        help: the unacknowledged samples come back after a restart and hit the same bug, and
        nothing would be sent meanwhile. So the hook is off until the daemon restarts: this
        group and every later one go on without it (what it had changed of its own state
        before raising is never acted on, and its state rows of this group are not written),
        so a raise it would have held back or rolled up is sent as it is: too many requests
        rather than none."""
        self._hooks_off.add(hook)
        name = getattr(hook, "__qualname__", repr(hook))
        what = f"{type(exc).__name__}: {exc}"
        self.stats.hooks_off.append(f"{name} ({what})")
        self._count_error(("", False), f"message hook {name}", exc,
                          "message hook %s failed (a bug); it is off until the daemon restarts, "
                          "and transitions go out without it", name)

    def _rule_failed(self, rule_id: str, sample: Sample | None, exc: Exception) -> None:
        """A bug in one rule (`RuleEngine.on_error`): the engine went on with the others, so
        their raises and clears stand and every other timer still runs. Count it and log the
        first of each kind (per rule, sample or tick) with its traceback."""
        from rules.engine import MUTE_MEMORY

        who = "the mute-signal memory" if rule_id == MUTE_MEMORY else f"rule {rule_id}"
        if sample is None:
            self._count_error((rule_id, True), f"{who} at a tick", exc,
                              "%s failed at a tick; the other rules ticked", who)
        else:
            self._count_error((rule_id, False), f"{who} on {sample.asset}/{sample.signal}", exc,
                              "%s failed on %s/%s = %r; the other rules saw the sample",
                              who, sample.asset, sample.signal, sample.value)

    def _count_error(self, where: tuple[str, bool], said: str, exc: BaseException,
                     message: str, *args: object) -> None:
        """Count a failure and show it (`said`: what failed, for the status page); log it with
        its traceback unless this kind of failure (`where`: the rule id, or "" outside the
        rules, and whether at a tick; the error) was logged within the hour."""
        self.stats.evaluation_errors += 1
        what = f"{type(exc).__name__}: {exc}"
        self.stats.last_evaluation_error = f"{said}: {what}"
        self.stats.last_evaluation_error_at = self._clock()
        kind, now, logged = (*where, what), time.monotonic(), self._errors_logged
        last = logged.get(kind)
        if last is None and len(logged) >= _ERRORS_LOGGED:
            return
        if last is None or now - last >= _ERROR_LOG_SECONDS:
            logged[kind] = now
            log.error(message, *args, exc_info=exc)

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

    def _shape(self, transitions: Sequence[Transition], states: Sequence[RuleState],
               marks: Sequence[SampleMark]) -> _Group:
        """A group's messages (through the message hooks) and its commit, encoded now: what
        the committer writes later cannot change with what is evaluated meanwhile."""
        outgoing: Sequence[Transition] = transitions
        messages: list[OutboxMessage] = []
        if self.message_hooks:
            now, own_states = self._clock(), list(states)
            for hook in self.message_hooks:
                if hook in self._hooks_off:
                    continue
                try:
                    shaped = hook(outgoing, now, self._sinks)
                except Exception as exc:
                    self._hook_failed(hook, exc)
                    continue
                outgoing = shaped.transitions
                messages.extend(shaped.messages)
                own_states.extend(shaped.states)
            states = own_states
        if not transitions and not states and not marks and not messages:
            return _Group(transitions, None, 0)  # the usual group: nothing a restart needs
        sinks, site = self._sinks, self._site
        for t in outgoing:
            messages.extend(messages_for(t, sinks, site))
        return _Group(transitions, self._outbox.prepare(transitions, messages, states, marks),
                      len(states), len(messages))

    async def _enqueue(self, group: _Group) -> asyncio.Future[None]:
        """Behind the groups already queued (under the lock); a future done once committed.
        Without a running committer (before `run`, e.g. at start), commit here and now."""
        landed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if group.prepared is None and not group.transitions:
            landed.set_result(None)  # nothing to write or tell
        elif self._committing:
            group.landed, group.waited = landed, True
            self._commits.put_nowait(group)
        else:
            await self._land(group)
            landed.set_result(None)
        return landed

    async def _land(self, group: _Group) -> None:
        """Commit one group (retrying until it lands), then tell everyone: stats, listeners,
        forwarders, and the sources whose batches it held."""
        prepared, transitions = group.prepared, group.transitions
        if prepared is not None:
            backoff = Backoff(0.2, 10.0)
            while True:
                try:
                    await self._outbox.commit_prepared(prepared)
                    break
                except StorageError as exc:  # full disk, I/O error: keep it, retry, say so
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
            self.stats.states_written += group.states
            self.stats.messages += group.messages
            for t in transitions:
                self.stats.transitions += 1
                if t.kind == "raised":
                    self.stats.raised += 1
                else:
                    self.stats.cleared += 1
                for listener in self.listeners:
                    listener(t)
            self._wake()
        if group.batches:
            self.stats.batches += len(group.batches)
            for batch in group.batches:
                if batch.ack is not None:
                    batch.ack()
                self._queue.task_done()
        if group.landed is not None and not group.landed.done():
            group.landed.set_result(None)
