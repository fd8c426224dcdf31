"""The `nats` upstream: each outbox record becomes one JetStream publish, deduplicated by id.

`Nats-Msg-Id = <gateway_id>:<outbox key>`: the key is fixed when the record is inserted, so every
retry (after a timeout, a lost PubAck, a restart) carries the same id, and the stream stores it
once within its `duplicate_window`. Any PubAck settles the record, also one that says
`duplicate`. `Nats-Expected-Stream` makes a subject that lands in another stream (or in none)
fail loudly instead of vanishing. Errors are translated here into our three outcomes; no nats
type leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from gateway.model import Delivery, MessageClass, MessageKind, OutboxRecord, Outcome
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.nats_config import NatsSinkConfig, connect_backbone, subject_token
from gateway.upstream.rest import UpstreamCheckError, canonical_json

log = logging.getLogger("plantbridge.upstream.nats")

VERSION = "0.1"
EXPECTED_STREAM_MISMATCH = 10060  # JetStream err_code: "expected stream does not match"
RESOURCE_LIMITS = {10023, 10028, 10047, 10077}  # storage/limits: space may free up, retry
CLUSTERED_DEDUP_VERSION = (2, 11)  # dedup state kept across stream leader changes
SYNC_ALWAYS_VERSION = (2, 10)  # `sync_interval: always`: a PubAck survives a power cut

# Headers beside the canonical body: what a consumer (the relay) needs to rebuild the record.
H_KEY, H_KIND, H_ASSET, H_EPISODE = "PB-Key", "PB-Kind", "PB-Asset", "PB-Episode"
H_GATEWAY, H_CREATED, H_CLASS, H_DEDUP = "PB-Gateway", "PB-Created-At", "PB-Class", "PB-Dedup-Key"


class NatsCheckError(UpstreamCheckError):
    """`check()` found the backbone unreachable, the stream missing, or its config unsafe."""


@dataclass(slots=True)
class NatsReport:
    """What `inspect()` found: server version, the stream's dedup window, and plain warnings."""

    server_version: str
    duplicate_window_seconds: float
    problems: list[str] = field(default_factory=list)  # check() raises on these
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PublishStats:
    published: int = 0
    duplicates: int = 0
    retries: int = 0
    last_publish_at: float | None = None


def event_kind(rec: OutboxRecord) -> str:
    """The subject's kind token: raised, cleared, status or telemetry."""
    msg = rec.message
    if msg.message_class is MessageClass.TELEMETRY:
        return "telemetry"
    if msg.kind is MessageKind.MAINTENANCE_REQUEST:
        return "raised"
    status = msg.body.get("status")
    return subject_token(str(status)) if status else "status"


def subject_for(cfg: NatsSinkConfig, rec: OutboxRecord) -> str:
    site = str(rec.message.body.get("site") or cfg.site or "plant")
    return cfg.subject_template.format(
        prefix=cfg.subject_prefix, site=subject_token(site), area=subject_token(cfg.area),
        asset=subject_token(rec.message.asset), kind=event_kind(rec),
        gateway_id=cfg.effective_gateway_id())


def heartbeat_subject(cfg: NatsSinkConfig) -> str:
    return (f"{cfg.subject_prefix}.{subject_token(cfg.site or 'plant')}.gateway."
            f"{cfg.effective_gateway_id()}.heartbeat")


def version_tuple(text: str) -> tuple[int, int]:
    parts = [int(p) for p in text.split("-")[0].split(".")[:2] if p.isdigit()]
    padded = [*parts, 0, 0]
    return padded[0], padded[1]


# What the gateway adds to each heartbeat about itself (open episodes, outbox backlog): set by
# the daemon after it built the sink (gateway/daemon.py), since a sink knows neither.
HeartbeatFacts = Callable[[], Mapping[str, Any]]


class NatsSink:
    """Implements `gateway.model.Sink`. One NATS connection, opened inside the running loop."""

    def __init__(self, cfg: NatsSinkConfig, connect_options: dict[str, Any]) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._opts = connect_options
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._inspected = False
        self.stats = PublishStats()
        self.heartbeat_facts: HeartbeatFacts | None = None
        self._facts_failed = False
        self._heartbeat: asyncio.Task[None] | None = None
        if cfg.heartbeat_seconds > 0:
            with contextlib.suppress(RuntimeError):  # built outside a loop: no heartbeat task
                self._heartbeat = asyncio.get_running_loop().create_task(
                    self._beat(), name=f"heartbeat:{cfg.name}")

    async def _connection(self) -> tuple[NatsClient, JetStreamContext]:
        """The open connection, connecting first when there is none (raises nats errors)."""
        async with self._lock:
            if self._nc is None or self._nc.is_closed or self._js is None:
                nc = await connect_backbone(self._opts, log)
                self._nc, self._js = nc, nc.jetstream(
                    timeout=self._cfg.request_timeout_seconds)
            first = not self._inspected
            self._inspected = True
        if first:  # say once per process what is unsafe about the stream
            with contextlib.suppress(NatsCheckError):
                report = await self.inspect()
                for text in report.problems + report.warnings:
                    log.warning("%s: %s", self.name, text)
        return self._nc, self._js

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # closing a broken link: nothing to save
                await self._nc.close()
        self._nc = self._js = None

    async def inspect(self) -> NatsReport:
        """Connect, look the stream up, and judge its dedup window and the server version."""
        try:
            nc, js = await self._connection_for_check()
            info = await js.stream_info(self._cfg.stream)
        except nats.js.errors.NotFoundError:
            raise NatsCheckError(f"{self.name}: stream {self._cfg.stream!r} does not exist on "
                                 "the server (create it, or fix `stream`)") from None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise NatsCheckError(f"{self.name}: {_plain(exc)}") from exc
        v = nc.connected_server_version
        version = f"{v.major}.{v.minor}.{v.patch}"
        window = float(info.config.duplicate_window or 0.0)
        report = NatsReport(version, window)
        tolerance = self._cfg.outage_tolerance_seconds
        if window < tolerance:
            report.problems.append(
                f"stream {self._cfg.stream!r} keeps message ids for {_span(window)} "
                f"(duplicate_window), shorter than outage_tolerance_seconds = {_span(tolerance)}: "
                "an event retried after an outage longer than the window can be stored twice. "
                f"Raise the stream's duplicate_window to at least {int(tolerance)} s, or lower "
                "outage_tolerance_seconds together with [buffer] retention_seconds")
        if version_tuple(version) < SYNC_ALWAYS_VERSION:
            report.warnings.append(
                f"nats-server {version}: below 2.10 there is no `sync_interval: always`, so a "
                "single server can lose PubAck'ed events in a power cut; production needs 2.11+")
        if version_tuple(version) < CLUSTERED_DEDUP_VERSION:
            report.warnings.append(
                f"nats-server {version}: before 2.11 a clustered stream can forget recent "
                "message ids when its leader changes (a retry may then be stored twice; the "
                "relay's upstream look-ups still keep the EAM free of duplicates); production "
                "needs 2.11+")
        return report

    async def _connection_for_check(self) -> tuple[NatsClient, JetStreamContext]:
        self._inspected = True  # inspect() itself must not recurse through _connection()
        return await self._connection()

    async def check(self) -> None:
        """Raises NatsCheckError when the backbone is unreachable, the stream is missing, or its
        duplicate window is shorter than the outage we retry through; logs the warnings."""
        report = await self.inspect()
        for text in report.warnings:
            log.warning("%s: %s", self.name, text)
        if report.problems:
            raise NatsCheckError(f"{self.name}: " + "; ".join(report.problems))

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """One publish per record; per episode in order (a clear never overtakes its raise)."""
        return await send_in_episode_lanes(batch, self.send_one, self._cfg.concurrent_publishes)

    async def send_one(self, rec: OutboxRecord) -> Delivery:
        msg = rec.message
        gid = self._cfg.effective_gateway_id()
        subject = subject_for(self._cfg, rec)
        try:
            payload = canonical_json(msg.body)
        except (TypeError, ValueError) as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"cannot encode the message: {exc}")
        headers = {"Nats-Msg-Id": f"{gid}:{msg.key}", H_KEY: msg.key, H_KIND: str(msg.kind),
                   H_ASSET: msg.asset, H_EPISODE: msg.episode_id, H_GATEWAY: gid,
                   H_CREATED: repr(msg.created_at), H_CLASS: str(int(msg.message_class)),
                   H_DEDUP: str(msg.body.get("dedup_key", ""))}
        try:
            _, js = await self._connection()
            ack = await js.publish(subject, payload, stream=self._cfg.stream, headers=headers)
        except nats.js.errors.NoStreamResponseError:
            return await self._no_responders(rec.id, subject)
        except nats.js.errors.APIError as exc:
            return self._api_error(rec.id, subject, exc)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self.stats.retries += 1
            return Delivery(rec.id, Outcome.RETRY, reason=_plain(exc))
        self.stats.published += 1
        self.stats.duplicates += int(bool(ack.duplicate))
        self.stats.last_publish_at = time.time()
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=f"{ack.stream}:{ack.seq}")

    def _api_error(self, record_id: int, subject: str, exc: nats.js.errors.APIError) -> Delivery:
        desc = exc.description or "no description"
        if exc.err_code == EXPECTED_STREAM_MISMATCH:
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"subject {subject} is stored by another stream than {self._cfg.stream!r} "
                f"(JetStream: {desc}); fix `stream` or `subject_template`"))
        if (exc.code or 0) >= 500 or exc.err_code in RESOURCE_LIMITS:
            self.stats.retries += 1
            return Delivery(record_id, Outcome.RETRY, reason=f"JetStream {exc.code}: {desc}")
        return Delivery(record_id, Outcome.REJECTED,
                        reason=f"JetStream refused {subject}: {exc.code} {desc}")

    async def _no_responders(self, record_id: int, subject: str) -> Delivery:
        """Nobody answered the publish: either no stream captures the subject (a config fault,
        for good) or the stream is there but has no leader right now (retry)."""
        self.stats.retries += 1
        try:
            _, js = await self._connection()
            owner = await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"no stream captures subject {subject} (expected stream {self._cfg.stream!r}): "
                "fix the stream's subjects or `subject_template`"))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            return Delivery(record_id, Outcome.RETRY,
                            reason=f"no responders for {subject}, and {_plain(exc)}")
        if owner != self._cfg.stream:
            return Delivery(record_id, Outcome.REJECTED, reason=(
                f"subject {subject} belongs to stream {owner!r}, not {self._cfg.stream!r}"))
        return Delivery(record_id, Outcome.RETRY, reason=(
            f"stream {owner!r} did not answer (no leader right now?); retrying under the same id"))

    async def _beat(self) -> None:
        """Every heartbeat_seconds: who we are and what we last did, on core NATS (no store)."""
        subject = heartbeat_subject(self._cfg)
        while True:
            doc = {"gateway_id": self._cfg.effective_gateway_id(), "site": self._cfg.site,
                   "area": self._cfg.area, "version": VERSION, "time": time.time(),
                   "interval_seconds": self._cfg.heartbeat_seconds,
                   "last_publish_at": self.stats.last_publish_at,
                   "published": self.stats.published, "duplicates": self.stats.duplicates,
                   "retries": self.stats.retries} | self._facts()
            try:
                nc, _ = await self._connection()
                await nc.publish(subject, orjson.dumps(doc))
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.debug("%s: heartbeat not sent: %s", self.name, _plain(exc))
            await asyncio.sleep(self._cfg.heartbeat_seconds)


    def _facts(self) -> dict[str, Any]:
        """The gateway's own figures for the heartbeat; none (said once) if they fail: the
        heartbeat itself must keep coming, it is how the fleet sees this box is alive."""
        if self.heartbeat_facts is None:
            return {}
        try:
            return dict(self.heartbeat_facts())
        except Exception:  # a bug in the hook must not silence the heartbeat
            if not self._facts_failed:
                log.exception("%s: heartbeat facts failed; heartbeats go on without them",
                              self.name)
            self._facts_failed = True
            return {}


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def _plain(exc: BaseException) -> str:
    """A nats or socket failure in plain words (always retried under the same id)."""
    if isinstance(exc, nats.errors.NoServersError | ConnectionRefusedError):
        return "cannot connect to any NATS server (is nats-server running on that port?)"
    if isinstance(exc, TimeoutError):  # nats.errors.TimeoutError is one too
        return "timed out waiting for a PubAck (the event may be stored; retrying the same id)"
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.StaleConnectionError):
        return "the NATS connection dropped (retrying under the same id)"
    if isinstance(exc, nats.errors.AuthorizationError):
        return f"NATS refused our credentials: {exc}"
    said = str(exc)
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__
