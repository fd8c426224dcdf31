"""Dead letters of the relay: publishing one, listing the dead-letter stream, and requeue.

A requeue publishes the original event again to the hub stream with a new `Nats-Msg-Id`
(the old one is still in the dedup window) and a `PB-Requeued` header, then deletes it from the
dead-letter stream. The upstream key is derived from the gateway's own outbox key, not the
message id, so the upstream's idempotency still sees the same request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from gateway.relay.config import ConsumerSettings, RelayConfig
from gateway.relay.events import H_REQUEUED
from gateway.upstream.nats_config import connect_backbone

log = logging.getLogger("plantbridge.relay")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    subject: str  # where it came from in the hub stream
    upstream: str  # "" when no upstream was tried (not a PlantBridge event, gave up)
    reason: str
    gateway: str
    asset: str
    episode: str


async def publish_dead_letter(js: JetStreamContext, c: ConsumerSettings, subject: str,
                              original: Mapping[str, str], data: bytes, upstream: str,
                              reason: str) -> bool:
    """Into the dead-letter stream with the original headers (a requeue needs them) and why;
    False when that stream did not store it (the caller naks, and tries again later)."""
    msg_id = original.get("Nats-Msg-Id", "?")
    log.warning("dead letter %s for %s: %s", msg_id, upstream or "all upstreams", reason)
    headers = {k: v for k, v in original.items()
               if k not in ("Nats-Expected-Stream", H_REQUEUED)}
    headers |= {"Nats-Msg-Id": f"dead:{msg_id}>{upstream}", "PB-Dead-Reason": reason[:400],
                "PB-Dead-Upstream": upstream, "PB-Original-Subject": subject}
    try:
        await js.publish(f"{c.dead_letter_prefix}.{subject}", data, headers=headers)
    except (nats.errors.Error, OSError) as exc:
        log.error("dead-letter stream refused %s: %s", msg_id, exc)
        return False
    return True


async def _connect(cfg: RelayConfig) -> NatsClient:
    return await connect_backbone(cfg.nats.connect_options(f"plantbridge-{cfg.relay.name}-dlq"),
                                  log)


async def list_dead(cfg: RelayConfig) -> list[DeadLetter]:
    nc = await _connect(cfg)
    try:
        js = nc.jetstream(timeout=cfg.nats.request_timeout_seconds)
        stream = cfg.consumer.dead_letter_stream
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        out = []
        first, last = int(info.state.first_seq or 0), int(info.state.last_seq or 0)
        for seq in range(max(first, 1), last + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue  # requeued or dropped
            h = msg.headers or {}
            out.append(DeadLetter(seq, h.get("PB-Original-Subject", msg.subject or ""),
                                  h.get("PB-Dead-Upstream", ""), h.get("PB-Dead-Reason", ""),
                                  h.get("PB-Gateway", ""), h.get("PB-Asset", ""),
                                  h.get("PB-Episode", "")))
        return out
    finally:
        await nc.close()


async def requeue(cfg: RelayConfig, seqs: list[int]) -> list[str]:
    """Send these dead letters to the hub stream again; one line per sequence, saying what
    happened. Each is deleted from the dead-letter stream only once the hub stream stored it."""
    nc = await _connect(cfg)
    said = []
    try:
        js = nc.jetstream(timeout=cfg.nats.request_timeout_seconds)
        stream = cfg.consumer.dead_letter_stream
        for seq in seqs:
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                said.append(f"{seq}: not in {stream}")
                continue
            h = dict(msg.headers or {})
            subject = h.pop("PB-Original-Subject", "")
            if not subject or "PB-Key" not in h:
                said.append(f"{seq}: not a PlantBridge event, cannot requeue (drop it with the "
                            "nats CLI once read)")
                continue
            for name in ("PB-Dead-Reason", "PB-Dead-Upstream"):
                h.pop(name, None)
            original_id = h.get("Nats-Msg-Id", "").removeprefix("dead:").split(">")[0]
            h["Nats-Msg-Id"] = f"{original_id}#requeue-{seq}"
            h[H_REQUEUED] = str(seq)
            try:
                ack = await js.publish(subject, msg.data or b"", stream=cfg.consumer.stream,
                                       headers=h)
                await js.delete_msg(stream, seq)
            except (nats.errors.Error, OSError) as exc:
                said.append(f"{seq}: not requeued: {exc}")
                continue
            said.append(f"{seq}: requeued to {subject} ({ack.stream}:{ack.seq})")
        return said
    finally:
        await nc.close()


def dead_text(rows: list[DeadLetter]) -> str:
    if not rows:
        return "no dead letters"
    return "\n".join(f"{d.seq:>6}  {d.subject}  {d.upstream or '-'}  {d.reason}" for d in rows)
