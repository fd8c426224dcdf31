"""What the relay tier keeps on the backbone itself: the dead-letter stream, the trace stream,
the receipts bucket and the rate-limit bucket. The hub stream is the platform's and must exist
already; these belong to the relays and are created when missing (`replicas` on a cluster)."""

from __future__ import annotations

import logging

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StreamConfig
from nats.js.kv import KeyValue

from gateway.relay.config import ConsumerSettings
from gateway.relay.trace import ensure_trace_stream

log = logging.getLogger("plantbridge.relay")


async def _bucket(js: JetStreamContext, cfg: KeyValueConfig) -> KeyValue:
    try:
        return await js.key_value(cfg.bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(cfg)


class RelayStore:
    def __init__(self, c: ConsumerSettings) -> None:
        self._c = c
        self.receipts: KeyValue | None = None
        self.limits: KeyValue | None = None  # only when some upstream has a fleet rate

    async def ensure(self, js: JetStreamContext, with_limits: bool) -> None:
        c = self._c
        if c.trace:
            await ensure_trace_stream(js, c)
        try:
            await js.stream_info(c.dead_letter_stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=c.dead_letter_stream,
                                             subjects=[f"{c.dead_letter_prefix}.>"],
                                             num_replicas=c.replicas))
        self.receipts = await _bucket(js, KeyValueConfig(
            bucket=c.receipts_bucket, history=1, replicas=c.replicas,
            ttl=c.receipts_ttl_seconds))
        if with_limits:
            self.limits = await _bucket(js, KeyValueConfig(bucket=c.limits_bucket, history=1,
                                                           replicas=c.replicas))

    async def receipt(self, key: str) -> str | None:
        """An upstream's id for a key, "" when it answered none; None when there is none yet
        (raises nats errors when the bucket cannot be read: the caller retries later)."""
        assert self.receipts is not None
        try:
            entry = await self.receipts.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return (entry.value or b"").decode()

    async def put_receipt(self, key: str, value: str) -> None:
        """Best effort: a lost receipt only costs an idempotent resend on a redelivery."""
        assert self.receipts is not None
        try:
            await self.receipts.put(key, value.encode())
        except (nats.errors.Error, OSError) as exc:
            log.warning("receipt %s not stored: %s", key, exc)
