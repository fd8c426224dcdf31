"""`plantbridge relay --trace <episode or key>`: what the relays did with one event.

Relays keep no local state, and an event may pass through several of them (a relay dies, the
server hands the event to another). So each relay appends what it does to a JetStream stream
of its own (`trace_stream`, subjects `<trace_prefix>.<gateway>.<episode>.<outbox key>`), with a
plain core-NATS publish: no round trip per step, and a step lost while the link is down costs
only a line of the story, never an event. The stream keeps `trace_max_age_seconds` (7 days)
and at most `trace_max_bytes` (1 GiB), oldest steps first.

Steps: `received` (hub sequence, subject, delivery number), `skipped` (the receipts bucket says
this upstream has it already), `waiting` (a clear whose raise has no receipt yet), `attempt`
(per upstream: accepted with its receipt, retry or rejected, with the reason), then `acked`,
`nak` (with the delay) or `dead` (dead-lettered, with why), or `ignored` (not for the EAM).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from gateway.relay.config import ConsumerSettings, RelayConfig
from gateway.upstream.nats import H_EPISODE, H_GATEWAY, H_KEY
from gateway.upstream.nats_config import connect_backbone, subject_token

log = logging.getLogger("plantbridge.relay")


def trace_subject(c: ConsumerSettings, headers: Mapping[str, str]) -> str:
    """Where one event's steps go: per gateway, episode and outbox key (each one token)."""
    return ".".join([c.trace_prefix, *(subject_token(headers.get(h) or "_")
                                       for h in (H_GATEWAY, H_EPISODE, H_KEY))])


async def ensure_trace_stream(js: JetStreamContext, c: ConsumerSettings) -> None:
    """The trace stream belongs to the relay tier: created when missing."""
    try:
        await js.stream_info(c.trace_stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(StreamConfig(name=c.trace_stream, subjects=[f"{c.trace_prefix}.>"],
                                         max_age=c.trace_max_age_seconds,
                                         max_bytes=c.trace_max_bytes,
                                         num_replicas=c.replicas))


class TraceLog:
    """The writing side, one per relay: `step(headers, "attempt", upstream=..., ...)`."""

    def __init__(self, c: ConsumerSettings, relay: str) -> None:
        self._c = c
        self._relay = relay
        self.nc: NatsClient | None = None  # set once connected
        self.lost = 0  # steps that could not be handed to the connection

    async def step(self, headers: Mapping[str, str], step: str, **fields: Any) -> None:
        if not self._c.trace or self.nc is None:
            return
        doc = {"at": time.time(), "relay": self._relay, "step": step,
               "msg_id": headers.get("Nats-Msg-Id", "")} | fields
        try:
            await self.nc.publish(trace_subject(self._c, headers), orjson.dumps(doc))
        except (nats.errors.Error, OSError):
            self.lost += 1


async def read_trace(cfg: RelayConfig, ident: str) -> list[dict[str, Any]]:
    """Every step recorded for an episode id, or else for an outbox key (or Nats-Msg-Id), in
    the order the stream stored them."""
    c = cfg.consumer
    nc = await connect_backbone(cfg.nats.connect_options(f"plantbridge-{cfg.relay.name}-trace"),
                                log)
    try:
        js = nc.jetstream(timeout=cfg.nats.request_timeout_seconds)
        filters = [f"{c.trace_prefix}.*.{subject_token(ident)}.*",
                   f"{c.trace_prefix}.*.*.{subject_token(ident)}"]
        if ":" in ident:  # a Nats-Msg-Id: <gateway_id>:<outbox key>
            filters.append(f"{c.trace_prefix}.*.*.{subject_token(ident.split(':', 1)[1])}")
        for filt in filters:
            rows = await _read(js, c.trace_stream, filt)
            if rows:
                return rows
        return []
    finally:
        await nc.close()


async def _read(js: JetStreamContext, stream: str, subject: str) -> list[dict[str, Any]]:
    try:
        sub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30.0))
    except nats.js.errors.NotFoundError:
        return []  # no trace stream yet: no relay has run with tracing
    rows: list[dict[str, Any]] = []
    try:
        left = int((await sub.consumer_info()).num_pending or 0)
        while left > 0:
            msgs = await sub.fetch(min(left, 256), timeout=5.0)
            left -= len(msgs)
            for m in msgs:
                with contextlib.suppress(orjson.JSONDecodeError):
                    doc = orjson.loads(m.data)
                    if isinstance(doc, dict):
                        doc["trace_subject"] = m.subject
                        rows.append(doc)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return rows


async def print_trace(cfg: RelayConfig, ident: str, as_json: bool = False) -> int:
    """`plantbridge relay --trace ID`: the steps, or why they cannot be read; the exit code."""
    try:
        rows = await read_trace(cfg, ident)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        print(f"cannot read the trace stream {cfg.consumer.trace_stream!r} at "
              f"{', '.join(cfg.nats.servers)}: {str(exc) or type(exc).__name__}")
        return 1
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() if as_json
          else trace_text(ident, rows))
    return 0 if rows else 3


def _when(at: object) -> str:
    if not isinstance(at, int | float):
        return "?"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def trace_text(ident: str, rows: list[dict[str, Any]]) -> str:
    """The steps as lines a person reads, oldest first."""
    if not rows:
        return (f"nothing traced for {ident!r}: give an episode id or an outbox key (the "
                "gateway's `plantbridge trace` shows both); traces are kept "
                "trace_max_age_seconds")
    relays = sorted({str(r.get("relay", "?")) for r in rows})
    out = [f"{ident}: {len(rows)} step(s) by relay(s) {', '.join(relays)}"]
    for r in rows:
        what = {
            "received": lambda r: f"seq {r.get('seq')} {r.get('subject')} "
                                  f"(delivery {r.get('delivery')})",
            "attempt": lambda r: f"{r.get('upstream')}: {r.get('outcome')}"
                                 + (f" {r['receipt']}" if r.get("receipt") else "")
                                 + (f" ({r['reason']})" if r.get("reason") else ""),
            "skipped": lambda r: f"{r.get('upstream')}: has it already ({r.get('receipt')})",
            "waiting": lambda r: f"{r.get('upstream')}: {r.get('reason')}",
            "nak": lambda r: f"retry in {r.get('delay_seconds', 0):.3g} s: {r.get('reason')}",
            "dead": lambda r: f"dead-lettered: {r.get('reason')}",
        }.get(str(r.get("step")), lambda r: str(r.get("reason") or ""))(r)
        out.append(f"  {_when(r.get('at'))}  {r.get('relay', '?'):<10} "
                   f"{r.get('step', '?'):<9} {what}".rstrip())
    return "\n".join(out)
