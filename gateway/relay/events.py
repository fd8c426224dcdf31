"""From a JetStream message back to the outbox record the existing sinks know how to send.

The gateway's nats upstream put the canonical body in the payload and the record's identity in
headers (gateway/upstream/nats.py). A message that lacks them is not ours: it is refused with a
plain reason and dead-lettered, never guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.model import MessageClass, MessageKind, OutboxMessage, OutboxRecord
from gateway.upstream.nats import (
    H_ASSET,
    H_CLASS,
    H_CREATED,
    H_DEDUP,
    H_EPISODE,
    H_GATEWAY,
    H_KEY,
    H_KIND,
)

H_REQUEUED = "PB-Requeued"
_KV_BAD = re.compile(r"[^-/_=a-zA-Z0-9]+")


class BadEvent(ValueError):
    """A message on the stream that is not a PlantBridge event (or is damaged)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event from the stream, with what the relay needs to forward and order it."""

    seq: int  # stream sequence: the record id the sinks see
    subject: str
    msg_id: str  # Nats-Msg-Id as the gateway set it: <gateway_id>:<outbox key>
    gateway: str
    message: OutboxMessage  # `sink` is filled per upstream by record_for()
    num_delivered: int
    headers: Mapping[str, str]  # as published: a dead letter keeps them for a requeue
    data: bytes

    @property
    def lane(self) -> str:
        """Order key: one event per gateway and asset in flight inside a relay."""
        return f"{self.gateway}/{self.message.asset}"

    @property
    def requeued(self) -> bool:
        """Sent again from the dead-letter stream by an operator: a refusal is not final."""
        return H_REQUEUED in self.headers

    @property
    def intent(self) -> str:
        return "raise" if self.message.kind is MessageKind.MAINTENANCE_REQUEST else "clear"

    @property
    def forwardable(self) -> bool:
        """Maintenance requests and their clears go to the EAM; telemetry and other status
        traffic on the stream is for dashboards, not for the relay's upstreams."""
        return self.message.message_class is MessageClass.EVENT


def parse_event(subject: str, headers: Mapping[str, str] | None, data: bytes, seq: int,
                num_delivered: int) -> Event:
    """The event in a stream message, or BadEvent saying what is missing or wrong."""
    h = headers or {}
    missing = [n for n in ("Nats-Msg-Id", H_KEY, H_KIND, H_ASSET, H_EPISODE, H_GATEWAY)
               if not h.get(n)]
    if missing:
        raise BadEvent(f"not a PlantBridge event: header(s) {', '.join(missing)} missing")
    try:
        kind = MessageKind(h[H_KIND])
    except ValueError:
        raise BadEvent(f"unknown event kind {h[H_KIND]!r}") from None
    try:
        body: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadEvent("payload is not a JSON object")
    try:
        created_at = float(h.get(H_CREATED) or 0.0)
        msg_class = MessageClass(int(h.get(H_CLASS) or MessageClass.EVENT))
    except ValueError as exc:
        raise BadEvent(f"bad header value: {exc}") from None
    message = OutboxMessage(key=h[H_KEY], sink="", asset=h[H_ASSET], episode_id=h[H_EPISODE],
                            kind=kind, body=body, created_at=created_at,
                            message_class=msg_class)
    if not (h.get(H_DEDUP) or body.get("dedup_key")):
        raise BadEvent("no dedup key in the headers or the body")
    return Event(seq, subject, h["Nats-Msg-Id"], h[H_GATEWAY], message, num_delivered,
                 dict(h), data)


def dedup_of(event: Event) -> str:
    return str(event.message.body.get("dedup_key") or "")


def receipt_key(upstream: str, event: Event, intent: str | None = None) -> str:
    """Key in the shared receipts bucket: per upstream, gateway, intent and episode."""
    parts = (upstream, event.gateway, intent or event.intent, dedup_of(event))
    return ".".join(_KV_BAD.sub("_", p) or "_" for p in parts)


def record_for(event: Event, upstream: str, upstream_ref: str | None) -> OutboxRecord:
    """The record a sink sends. Its key is the gateway's id and outbox key plus the upstream:
    the same on every redelivery, to any relay, and after a requeue from the dead-letter
    stream, so the upstream's idempotency sees one request."""
    msg = event.message
    message = OutboxMessage(key=f"{event.gateway}:{msg.key}>{upstream}", sink=upstream,
                            asset=msg.asset, episode_id=msg.episode_id, kind=msg.kind,
                            body=msg.body, created_at=msg.created_at,
                            message_class=msg.message_class)
    # A redelivery means an earlier send may have reached the upstream: sinks that look their
    # external reference up before creating do so now.
    unsettled = msg.created_at if event.num_delivered > 1 else None
    return OutboxRecord(id=event.seq, message=message, attempts=event.num_delivered - 1,
                        upstream_ref=upstream_ref, unsettled_send_at=unsettled)
