"""Southbound status: what the upstream says of the records we created there.

Every `status_poll_seconds` (per upstream; 0: off) the poller asks the upstream about each
record it holds a receipt for (open episodes, and closed ones of the last day) and stores each
state the first time it is seen (created -> in progress -> completed, with times) in the
outbox's `upstream_status` table, for the page, `/status` and `trace`. A record completed
upstream while its condition is still active is handled once per rule (`ClosedPolicy`): left
alone, commented on (a note on the record, through the outbox: `comment_message`), or answered
by a new request after a cooldown, under a new episode id derived from the old one. Both derive
their keys from the episode, so a restart, or the next poll, enqueues the same record again,
which the outbox ignores: exactly once in effect.
After each poll the asset's `open_work` signal (1 while a record is open upstream, else 0) is
fed into the pipeline, so `suppress_while = { signal = "open_work", equals = 1 }` mutes a rule
through the existing machinery.

An adapter takes part by having `read_record(upstream_ref)` and
`records_by_reference(external_ref)` (`StatusReader`); this module imports no adapter.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.messages import dedup_key, iso_time
from gateway.model import MessageKind, OutboxMessage, Quality, Sample, SampleBatch

if TYPE_CHECKING:
    from buffer.operator import EpisodeRequest, TrackedRecord, UpstreamStatusRow
    from buffer.store import OutboxStore

log = logging.getLogger("plantbridge.status_poll")

OPEN_WORK_SIGNAL = "open_work"
RECENT_SECONDS = 24 * 3600.0
DEFAULT_COOLDOWN_SECONDS = 3600.0  # closed episodes are still followed this long after their raise


class WorkState(enum.StrEnum):
    CREATED = "created"  # there, not yet worked on
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # done, closed, cancelled: nobody works on it any more
    MISSING = "missing"  # the upstream no longer has it


class UpstreamReadError(Exception):
    """A read-back failed (unreachable, refused, unreadable answer); says why in plain words."""


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    """One record as the upstream shows it: its id, our state, its own status word."""

    id: str
    state: WorkState
    raw: str
    external_ref: str | None = None


def work_state(raw: str, in_progress: Iterable[str], completed: Iterable[str]) -> WorkState:
    """Map an upstream status word onto our states (case-insensitive); unknown: created."""
    word = raw.strip().lower()
    if word in {w.lower() for w in completed}:
        return WorkState.COMPLETED
    if word in {w.lower() for w in in_progress}:
        return WorkState.IN_PROGRESS
    return WorkState.CREATED


@runtime_checkable
class StatusReader(Protocol):
    name: str

    async def read_record(self, upstream_ref: str) -> UpstreamRecord | None: ...
    async def records_by_reference(self, external_ref: str) -> list[UpstreamRecord]: ...


class ClosedPolicy(enum.StrEnum):
    """What a record completed upstream while its condition is still active means."""

    LEAVE = "leave"  # someone decided; the gateway says nothing more
    COMMENT = "comment"  # note on the record that the condition persists
    NEW_REQUEST = "new_request"  # after the cooldown, a new request (a new episode id)


@dataclass(frozen=True, slots=True)
class RulePolicy:
    closed_upstream: ClosedPolicy = ClosedPolicy.LEAVE
    reraise_cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS


def policy_of(spec: object) -> RulePolicy:
    """The policy a rule spec carries (`closed_upstream`, `reraise_cooldown_seconds`), default
    leave: read by name, so a rule model without the two fields means leave."""
    closed = getattr(spec, "closed_upstream", ClosedPolicy.LEAVE)
    cooldown = getattr(spec, "reraise_cooldown_seconds", DEFAULT_COOLDOWN_SECONDS)
    return RulePolicy(ClosedPolicy(closed), float(cooldown))


RERAISE_ID = re.compile(r"~re[0-9a-f]{8}$")  # the end of a re-raise's episode id


def reraise_episode_id(episode_id: str) -> str:
    """The episode of the request raised again for `episode_id`: deterministic (a restart
    derives the same, so the key dedups it), and again for a re-raise of a re-raise."""
    digest = hashlib.sha256(episode_id.encode()).hexdigest()[:8]
    return f"{episode_id}~re{digest}"


CLOSED_COMMENT = "closed-comment"


def comment_message(rec: TrackedRecord, raw: str, seen_at: float, site: str) -> OutboxMessage:
    """The note that `rec` was completed upstream while its condition is still active: a
    STATUS_UPDATE on the episode's own lane (so it goes to the record the episode's receipt
    names, after the raise) whose body is an update (`"update": true`: SAP writes it as a long
    text note, Maximo as a worklog, REST POSTs it to the status path), never a clear. Its key
    is the episode's reference, the receipt and "closed-comment": enqueued again after a
    restart or at the next poll, it is ignored."""
    ref = dedup_key(rec.episode_id)
    note = (f"{rec.receipt} was completed upstream while {rec.rule_id} on {rec.asset} is still "
            f"active since {iso_time(rec.raised_at)}")
    # REST: the status word the record has now, so that the note does not move the record on.
    word = raw.split()[0] if raw.strip() else "completed"
    body = {"site": site, "dedup_key": ref, "episode_id": rec.episode_id, "asset": rec.asset,
            "rule_id": rec.rule_id, "status": word, "update": True, "closed_upstream": True,
            "updated_at": iso_time(seen_at), "reason": "condition still active", "note": note}
    return OutboxMessage(key=f"{CLOSED_COMMENT}:{ref}:{rec.receipt}:{rec.sink}", sink=rec.sink,
                         asset=rec.asset, episode_id=rec.episode_id,
                         kind=MessageKind.STATUS_UPDATE, body=body, created_at=seen_at)


async def enqueue_comment(outbox: OutboxStore, rec: TrackedRecord, raw: str, seen_at: float,
                          site: str) -> bool:
    """Enqueue `comment_message`; returns whether it was new (False: already there)."""
    new = await outbox.commit([], [comment_message(rec, raw, seen_at, site)]) > 0
    if new:
        log.warning("%s %s was completed upstream while %s on %s is still active: a note "
                    "goes to it", rec.sink, rec.receipt, rec.rule_id, rec.asset)
    return new


async def enqueue_reraise(outbox: OutboxStore, rebuild: Callable[[EpisodeRequest], OutboxMessage],
                          rec: TrackedRecord, severity: int, now: float) -> bool:
    """Enqueue the new request for a record completed upstream while its condition is still
    active: episode `reraise_episode_id(...)`, so its key (and external reference) is the same
    however often this runs. Then its episode row (gateway/reraise.py closes it, with its
    clear, when the parent closes): a kill between the two leaves the request, and the next
    poll, which sees the old record completed again, adds the row. Returns whether it was new.
    """
    from buffer.operator import EpisodeRequest

    row = EpisodeRequest(reraise_episode_id(rec.episode_id), rec.rule_id, rec.asset, now,
                         severity, None, rec.sink, 0, "", "", None)
    message = rebuild(row)
    reason = (f"{rec.receipt} was completed upstream while {rec.rule_id} on {rec.asset} is "
              f"still active since {iso_time(rec.raised_at)}: requested again")
    message = replace(message, body={**message.body, "reason": reason})
    new = await outbox.commit([], [message]) > 0
    await outbox.open_reraise_episode(row.episode_id, rec.rule_id, rec.asset, now, severity)
    if new:
        log.warning("%s %s was completed upstream while %s on %s is still active: new "
                    "request under episode %s", rec.sink, rec.receipt, rec.rule_id, rec.asset,
                    row.episode_id)
    return new


class StatusPoller:
    """Polls one upstream for the records we created there; see the module docstring."""

    def __init__(self, reader: StatusReader, outbox: OutboxStore, interval_seconds: float, *,
                 policy_for: Callable[[str], RulePolicy],
                 reraise: Callable[[TrackedRecord, float], object],
                 comment: Callable[[TrackedRecord, str, float], object] | None = None,
                 submit: Callable[[SampleBatch, str], object] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.outbox = outbox
        self.interval_seconds = interval_seconds
        self._policy_for = policy_for
        self._reraise = reraise
        self._comment = comment  # None: the comment is only said in the log
        self._submit = submit
        self._clock = clock
        self._open_work: dict[str, float] = {}  # asset -> last value fed to the pipeline
        # episode -> (record, its upstream status word, when seen completed)
        self._completed: dict[str, tuple[TrackedRecord, str, float]] = {}
        self._handled: set[str] = set()  # episodes whose policy ran (once per process)
        self.last_error = ""
        self.polls = 0
        self.wake = asyncio.Event()

    async def poll_once(self) -> list[UpstreamStatusRow]:
        """One round; returns the states seen (stored only the first time each is seen)."""
        from buffer.operator import UpstreamStatusRow  # buffer is wired in here, not above

        now = self._clock()
        tracked = await self.outbox.tracked_records(self.reader.name, now - RECENT_SECONDS)
        seen: list[UpstreamStatusRow] = []
        open_by_asset: dict[str, bool] = {}
        error = ""
        for rec in tracked:
            try:
                got = await self.reader.read_record(rec.receipt)
            except UpstreamReadError as exc:
                error = str(exc)
                break
            state = WorkState.MISSING if got is None else got.state
            raw = "" if got is None else got.raw
            seen.append(UpstreamStatusRow(self.reader.name, rec.episode_id, rec.receipt,
                                          str(state), raw, now))
            is_open = state in (WorkState.CREATED, WorkState.IN_PROGRESS)
            open_by_asset[rec.asset] = open_by_asset.get(rec.asset, False) or is_open
            if (state is WorkState.COMPLETED and rec.cleared_at is None
                    and rec.episode_id not in self._handled):
                self._completed.setdefault(rec.episode_id, (rec, raw, now))
        self._note_error(error)
        new = await self.outbox.record_upstream_status(seen) if seen else 0
        self.polls += 1
        if not error:
            await self._feed_open_work(open_by_asset)
        await self._apply_policies(now)
        if new:
            log.info("%s: %d record state(s) changed upstream", self.reader.name, new)
        return seen

    def _note_error(self, error: str) -> None:
        if error and not self.last_error:
            log.warning("status poll of %s failing: %s", self.reader.name, error)
        elif not error and self.last_error:
            log.info("status poll of %s answers again", self.reader.name)
        self.last_error = error

    async def _feed_open_work(self, open_by_asset: dict[str, bool]) -> None:
        """The `open_work` signal of each asset we follow, fed when it changes."""
        if self._submit is None:
            return
        now = self._clock()
        samples = []
        for asset in set(open_by_asset) | set(self._open_work):
            value = 1.0 if open_by_asset.get(asset) else 0.0
            if self._open_work.get(asset) != value:
                self._open_work[asset] = value
                samples.append(Sample(asset, OPEN_WORK_SIGNAL, value, Quality.GOOD, now))
        if samples:
            result = self._submit(SampleBatch(samples), "status-poll")
            if asyncio.iscoroutine(result):
                await result

    async def _apply_policies(self, now: float) -> None:
        """Records completed upstream while the condition is active, per their rule, once."""
        for episode_id, (rec, raw, seen_at) in list(self._completed.items()):
            policy = self._policy_for(rec.rule_id)
            if policy.closed_upstream is ClosedPolicy.COMMENT:
                if self._comment is None:
                    log.warning("%s %s was completed upstream while %s on %s is still active",
                                self.reader.name, rec.receipt, rec.rule_id, rec.asset)
                elif asyncio.iscoroutine(result := self._comment(rec, raw, seen_at)):
                    await result
            elif policy.closed_upstream is ClosedPolicy.NEW_REQUEST:
                if now - seen_at < policy.reraise_cooldown_seconds:
                    continue  # not yet: asked again at the next poll
                result = self._reraise(rec, now)
                if asyncio.iscoroutine(result):
                    await result
            del self._completed[episode_id]
            self._handled.add(episode_id)

    def snapshot(self) -> dict[str, object]:
        return {"sink": self.reader.name, "interval_seconds": self.interval_seconds,
                "polls": self.polls, "last_error": self.last_error,
                "open_work": {a: int(v) for a, v in sorted(self._open_work.items())}}


def history_rows(rows: Sequence[UpstreamStatusRow]) -> list[dict[str, object]]:
    """Status history grouped per (sink, episode), for the page and `/status`."""
    from gateway.messages import iso_time

    out: dict[tuple[str, str], dict[str, object]] = {}
    for r in rows:
        item = out.setdefault((r.sink, r.episode_id), {
            "sink": r.sink, "episode_id": r.episode_id, "receipt": r.receipt, "history": []})
        history = item["history"]
        assert isinstance(history, list)
        history.append({"state": r.state, "raw": r.raw, "at": iso_time(r.seen_at)})
        item["state"] = r.state
    return list(out.values())
