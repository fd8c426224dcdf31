"""Log lines that tell an event's story: raised, accepted upstream (as WR-1), cleared.

One INFO line per raise, clear and accepted delivery; one line when a record starts failing
and one when it is finally delivered or dead-lettered (never one per retry); one line when a
link starts failing or stops answering and one when it recovers. While the whole link fails,
records that start failing are at DEBUG, but for the first, as the example: the link's line
tells the story. Every line about an event
carries the same correlation fields (`CORRELATION`) through `extra={"pb": ...}`, which
gateway/logs.py renders as JSON keys or a ` key=value` tail.

The daemon appends `log_transition` to `pipeline.listeners`; each Forwarder owns a
`DeliveryStory` for its sink.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.logs import FIELDS_ATTR, burst
from gateway.messages import dedup_key
from gateway.model import Delivery, MessageClass, OutboxRecord, Outcome, Transition

CORRELATION = ("episode_id", "key", "receipt", "rule_id", "asset", "sink")
_MAX_TRACKED = 10_000  # failing records remembered for their end line; beyond: no end line

story_log = logging.getLogger("plantbridge.story")
delivery_log = logging.getLogger("plantbridge.forwarder")


def extra(**fields: Any) -> dict[str, Any]:
    """`extra=` for a logging call: the correlation fields in their stable order, then others."""
    ordered = {}
    for key in CORRELATION:  # plain loops: this runs for every accepted request of a drain
        value = fields.get(key)
        if value is not None:
            ordered[key] = value
    for key, value in fields.items():
        if value is not None and key not in ordered:
            ordered[key] = value
    return {FIELDS_ATTR: ordered}


def transition_fields(t: Transition) -> dict[str, Any]:
    """Correlation fields of a transition; `key` is the episode's external ref (PB...), the part
    every sink's idempotency key shares."""
    return extra(episode_id=t.episode_id, key=dedup_key(t.episode_id), rule_id=t.rule_id,
                 asset=t.asset)


def log_transition(t: Transition) -> None:
    """A pipeline transition listener: one INFO line per raise and per clear."""
    value = "" if t.value is None else f" (value {t.value:g})"
    story_log.info("%s %s on %s: %s%s", t.kind.value, t.rule_id, t.asset, t.reason, value,
                   extra=transition_fields(t))


def record_fields(rec: OutboxRecord, receipt: str | None = None, **more: Any) -> dict[str, Any]:
    """Correlation fields of an outbox record; rule_id comes from the canonical body."""
    msg = rec.message
    rule_id = msg.body.get("rule_id")
    return extra(episode_id=msg.episode_id, key=msg.key, receipt=receipt or rec.upstream_ref,
                 rule_id=rule_id if isinstance(rule_id, str) else None, asset=msg.asset,
                 sink=msg.sink, **more)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


class DeliveryStory:
    """What one sink's forwarder says about its records and its link, each thing once."""

    def __init__(self, sink: str) -> None:
        self._sink = sink
        self._failing_since: dict[int, float] = {}  # record id -> first failed attempt
        self.link_failing_since: float | None = None
        self.hung_since: float | None = None

    def settled(self, pairs: Sequence[tuple[OutboxRecord, Delivery]], latency_s: float,
                now: float) -> None:
        """Log what a settled round means: accepts, burst starts and ends, dead letters, and
        the link going down (every record to retry) or coming back (anything answered)."""
        answered = any(d.outcome is not Outcome.RETRY for _, d in pairs)
        # While the whole upstream fails, its own line says so (below): one record's line as
        # the example, the others at DEBUG. A backlog meeting an outage was one WARNING per
        # record, thousands of lines burying the one that mattered. A record that fails while
        # others get through is its own trouble, and each such record gets its line.
        example_due = not answered and self.link_failing_since is None
        with burst():  # a round's lines, one flush
            for rec, d in pairs:
                if d.outcome is Outcome.RETRY:
                    logged = self._retry(rec, d, now, loud=answered or example_due)
                    example_due = example_due and not logged
                else:
                    self._settled(rec, d, latency_s, now)
        retry = [d for _, d in pairs if d.outcome is Outcome.RETRY]
        if answered and self.link_failing_since is not None:
            delivery_log.info("%s: upstream recovered after %s, delivering again", self._sink,
                              _seconds(now - self.link_failing_since), extra=extra(sink=self._sink))
            self.link_failing_since = None
        elif not answered and retry and self.link_failing_since is None:
            self.link_failing_since = now
            delivery_log.warning("%s: upstream failing: %s", self._sink, retry[0].reason,
                                 extra=extra(sink=self._sink))

    def _retry(self, rec: OutboxRecord, d: Delivery, now: float, loud: bool) -> bool:
        """The line of a record's first failure (WARNING for an event when `loud`, else
        DEBUG); False when it had failed before and says nothing now."""
        if rec.id in self._failing_since:
            return False
        if len(self._failing_since) < _MAX_TRACKED:
            self._failing_since[rec.id] = now
        log = delivery_log.warning if loud and _is_event(rec) else delivery_log.debug
        log("%s: record %d (%s) failing, will retry: %s", self._sink, rec.id, rec.message.key,
            d.reason, extra=record_fields(rec))
        return True

    def _settled(self, rec: OutboxRecord, d: Delivery, latency_s: float, now: float) -> None:
        first_failure = self._failing_since.pop(rec.id, None) if self._failing_since else None
        if d.outcome is Outcome.ACCEPTED and not delivery_log.isEnabledFor(
                logging.INFO if _is_event(rec) else logging.DEBUG):
            return  # a drain settles thousands a second: build no line nobody will see
        attempts = rec.attempts + 1
        burst = ("" if first_failure is None and attempts == 1 else
                 f" after {attempts} attempts" + (
                     "" if first_failure is None else f" in {_seconds(now - first_failure)}"))
        if d.outcome is Outcome.REJECTED:
            delivery_log.error("%s: record %d (%s) dead-lettered%s: %s", self._sink, rec.id,
                               rec.message.key, burst, d.reason,
                               extra=record_fields(rec, d.receipt))
            return
        ms = round(latency_s * 1000, 1)
        said = f" delivered{burst}:" if burst else ""
        receipt = f" as {d.receipt}" if d.receipt else ""
        # the one line per accepted request, thousands a second in a drain: made as logging
        # makes it, less the caller lookup (a walk up the stack; no format of ours shows it)
        level = logging.INFO if _is_event(rec) else logging.DEBUG
        delivery_log.handle(delivery_log.makeRecord(
            delivery_log.name, level, __file__, 0,
            "%s: record %d (%s)%s accepted%s in %.0f ms",
            (self._sink, rec.id, rec.message.key, said, receipt, ms), None,
            extra=record_fields(rec, d.receipt, latency_ms=ms)))

    def hung(self, in_flight: int, waited_s: float, now: float) -> None:
        """A send has had no answer for `waited_s`: say so once until the upstream answers."""
        if self.hung_since is None:
            self.hung_since = now - waited_s
            delivery_log.warning("%s: upstream not answering for %s (%d requests in flight)",
                                 self._sink, _seconds(waited_s), in_flight,
                                 extra=extra(sink=self._sink))

    def answering(self, now: float) -> None:
        """The upstream answered within the hung limit again."""
        if self.hung_since is not None:
            delivery_log.info("%s: upstream answering again after %s without an answer",
                              self._sink, _seconds(now - self.hung_since),
                              extra=extra(sink=self._sink))
            self.hung_since = None


def _is_event(rec: OutboxRecord) -> bool:
    """Maintenance requests and clears get INFO lines; telemetry stays at DEBUG."""
    return rec.message.message_class is MessageClass.EVENT


def message_facts(body: Mapping[str, Any]) -> dict[str, Any]:
    """What `trace` shows of a message once its body is gone: the canonical body's small,
    human-facing fields (see gateway/messages.py canonical_body)."""
    keep = ("kind", "rule_id", "signal", "severity", "value", "reason", "title", "priority",
            "raised_at", "cleared_at", "status", "dedup_key",
            "step", "request_ref", "reservation")  # the parts steps (gateway/workflow.py)
    return {k: body[k] for k in keep if k in body}
