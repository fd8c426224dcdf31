"""The `uns` upstream: condition events and per-asset state on the plant's MQTT 5 broker.

Each outbox record becomes one non-retained QoS 1 event on `<asset topic>/events/<kind>`
(kind `raised` or `cleared`) carrying the outbox idempotency key as the MQTT 5 user property
`message-id`: a record is ACCEPTED only after the broker's PUBACK, and every resend (paho's
after a reconnect, or the outbox's after a RETRY) carries the same id, so consumers drop repeats.

The sink also keeps each asset's current state (its open conditions and the last values of the
signals its rules reported) and publishes it retained on `<asset topic>/state`, once per asset
per batch, after the events. The rule engine is not visible from here: the state is derived
from the events this sink delivered (a raise opens a condition, a clear closes it), so it shows
what reached the UNS. At start the retained state topics are read back from the broker before
anything is published, so the state survives a gateway restart. A failed state publish sends
the events that changed it back for a retry: the state and its events stay in step.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.model import Delivery, MessageKind, OutboxRecord, Outcome
from gateway.upstream.lanes import send_in_episode_lanes
from gateway.upstream.rest import UpstreamCheckError
from gateway.upstream.uns_link import LinkDown, LinkSettings, MqttLink, PublishFailed

if TYPE_CHECKING:
    from gateway.upstream.uns_config import UnsSinkConfig

log = logging.getLogger("plantbridge.uns")

STATE_SCHEMA = 1
MAX_IN_FLIGHT = 20  # QoS 1 events awaiting their PUBACK at once (paho's own default window)
_EVENT_KINDS = {MessageKind.MAINTENANCE_REQUEST: "raised", MessageKind.STATUS_UPDATE: "cleared"}
_CONDITION_FIELDS = ("rule_id", "signal", "severity", "reason", "value", "title", "priority")


def json_bytes(doc: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys: the same bytes on every resend."""
    return orjson.dumps(dict(doc), option=orjson.OPT_SORT_KEYS)


@dataclass(slots=True)
class AssetState:
    """What the UNS shows for one asset: open conditions by episode and last signal values."""

    asset: str
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated_at: str | None = None

    def apply(self, rec: OutboxRecord) -> None:
        """One delivered event. Idempotent: applying a resent event again changes nothing."""
        msg, body = rec.message, rec.message.body
        at = body.get("raised_at") or body.get("cleared_at")
        at = at if isinstance(at, str) else None
        if msg.kind is MessageKind.MAINTENANCE_REQUEST:
            cond = {k: body.get(k) for k in _CONDITION_FIELDS}
            cond |= {"episode_id": msg.episode_id, "since": at,
                     "external_ref": body.get("dedup_key")}
            if rec.upstream_ref:
                cond["upstream_ref"] = rec.upstream_ref
            self.conditions[msg.episode_id] = cond
        else:
            self.conditions.pop(msg.episode_id, None)
        signal = body.get("signal")
        if isinstance(signal, str) and at is not None:
            seen = self.last_values.get(signal)
            if seen is None or str(seen.get("at") or "") <= at:
                self.last_values[signal] = {"value": body.get("value"), "at": at}
        if at is not None and (self.updated_at is None or at > self.updated_at):
            self.updated_at = at

    def document(self, cfg: UnsSinkConfig) -> dict[str, Any]:
        """The retained state payload (see docs/uns.md)."""
        topics = cfg.topics_for(self.asset)
        opened = sorted(self.conditions.values(),
                        key=lambda c: (str(c.get("since") or ""), str(c.get("episode_id"))))
        severities = [c["severity"] for c in opened if isinstance(c.get("severity"), int)]
        return {
            "schema": STATE_SCHEMA, "asset": self.asset, "enterprise": cfg.enterprise,
            "site": cfg.site, "area": topics.area, "line": topics.line, "cell": topics.cell,
            "open": opened, "open_count": len(opened),
            "worst_severity": min(severities) if severities else None,
            "last_values": self.last_values, "updated_at": self.updated_at,
            "publisher": cfg.effective_client_id,
        }

    @classmethod
    def from_document(cls, doc: Any, client_id: str) -> AssetState | None:
        """A state read back from the broker; None when it is not ours or not readable."""
        if not isinstance(doc, dict) or doc.get("publisher") != client_id:
            return None
        asset, opened, values = doc.get("asset"), doc.get("open"), doc.get("last_values")
        if not isinstance(asset, str) or not isinstance(opened, list):
            return None
        conds = {c["episode_id"]: c for c in opened
                 if isinstance(c, dict) and isinstance(c.get("episode_id"), str)}
        updated = doc.get("updated_at")
        return cls(asset, conds, dict(values) if isinstance(values, dict) else {},
                   updated if isinstance(updated, str) else None)


class UnsSink:
    """Implements `gateway.model.Sink` for an MQTT 5 unified namespace."""

    def __init__(self, cfg: UnsSinkConfig, password: str | None) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._password = password
        self._link = MqttLink(self._settings(cfg.effective_client_id, persistent=True),
                              self._on_message)
        self.states: dict[str, AssetState] = {}
        self._synced = False
        self._sync_lock = asyncio.Lock()
        self._sync_nonce: bytes | None = None
        self._sync_seen: dict[str, bytes] | None = None
        self._sync_done = asyncio.Event()

    def _settings(self, client_id: str, *, persistent: bool) -> LinkSettings:
        c = self._cfg
        return LinkSettings(c.host, c.port, client_id, persistent, c.session_expiry_seconds,
                            c.keepalive_seconds, c.connect_timeout_seconds,
                            c.reconnect_initial_seconds, c.reconnect_max_seconds,
                            c.username, self._password, c.tls)

    @property
    def link(self) -> MqttLink:
        return self._link

    async def aclose(self) -> None:
        await self._link.aclose()

    async def check(self) -> None:
        """Connect on a separate clean session (a running daemon's session is never taken
        over), publish a retained probe under `<root>/_plantbridge/probe` and clear it."""
        link = MqttLink(self._settings(self._cfg.effective_client_id + "-check",
                                       persistent=False))
        timeout = self._cfg.ack_timeout_seconds
        try:
            await link.start()
            await link.wait_connected(self._cfg.connect_timeout_seconds)
            probe = json_bytes({"probe": "plantbridge", "client_id": link.settings.client_id})
            await link.publish(self._cfg.probe_topic, probe, retain=True, timeout=timeout)
            await link.publish(self._cfg.probe_topic, b"", retain=True, timeout=timeout)
        except (LinkDown, PublishFailed) as exc:
            raise UpstreamCheckError(f"{self.name}: {exc}") from exc
        finally:
            await link.aclose()

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]:
        """Events first (per episode in order), then each touched asset's state once."""
        try:
            await self._ready()
        except (LinkDown, PublishFailed) as exc:
            return [Delivery(r.id, Outcome.RETRY, reason=str(exc)) for r in batch]
        out = list(await send_in_episode_lanes(batch, self._send_event, MAX_IN_FLIGHT))
        touched: dict[str, list[int]] = {}
        for i, (rec, d) in enumerate(zip(batch, out, strict=True)):
            if d.outcome is Outcome.ACCEPTED:
                asset = rec.message.asset
                self.states.setdefault(asset, AssetState(asset)).apply(rec)
                touched.setdefault(asset, []).append(i)
        assets = list(touched)
        results = await asyncio.gather(*(self._publish_state(a) for a in assets),
                                       return_exceptions=True)
        for asset, got in zip(assets, results, strict=True):
            if isinstance(got, LinkDown | PublishFailed):
                for i in touched[asset]:
                    out[i] = Delivery(batch[i].id, Outcome.RETRY, reason=(
                        f"event published, but not the state of {asset}: {got}"))
            elif isinstance(got, BaseException):
                raise got
        return out

    async def _send_event(self, rec: OutboxRecord) -> Delivery:
        msg = rec.message
        kind = _EVENT_KINDS.get(msg.kind)
        if kind is None:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"unsupported kind {msg.kind}")
        try:
            topic = self._cfg.topics_for(msg.asset).event(kind)
            payload = json_bytes(dict(msg.body) | {"event": kind, "message_id": msg.key})
        except (ValueError, TypeError, orjson.JSONEncodeError) as exc:
            return Delivery(rec.id, Outcome.REJECTED, reason=f"cannot publish this record: {exc}")
        try:
            mid = await self._link.publish(
                topic, payload, retain=False, timeout=self._cfg.ack_timeout_seconds,
                user_properties=[("message-id", msg.key), ("episode-id", msg.episode_id)],
                content_type="application/json")
        except LinkDown as exc:
            return Delivery(rec.id, Outcome.RETRY, reason=str(exc))
        except PublishFailed as exc:
            return Delivery(rec.id, Outcome.REJECTED if exc.permanent else Outcome.RETRY,
                            reason=str(exc))
        return Delivery(rec.id, Outcome.ACCEPTED, receipt=f"mqtt:{mid}")

    async def _publish_state(self, asset: str) -> None:
        state = self.states[asset]
        await self._link.publish(self._cfg.topics_for(asset).state,
                                 json_bytes(state.document(self._cfg)), retain=True,
                                 timeout=self._cfg.ack_timeout_seconds,
                                 content_type="application/json")

    # --- start: connect, then read the retained state back ---------------------------------

    async def _ready(self) -> None:
        """Connected and synced, or LinkDown. Waits for a connection only until the first one
        succeeded; afterwards a lost connection fails a send at once (the outbox retries)."""
        await self._link.start()
        first = self._link.connects == 0
        await self._link.wait_connected(self._cfg.connect_timeout_seconds if first else 0.0)
        if not self._synced:
            async with self._sync_lock:
                if not self._synced:
                    await self._sync_state()
                    self._synced = True

    async def _sync_state(self) -> None:
        """Read every retained state topic of ours. The end of the retained burst is marked by
        our own message on a sync topic subscribed in the same SUBSCRIBE: the broker sends a
        subscription's retained messages before anything published after the SUBACK."""
        cfg = self._cfg
        filters = [cfg.state_filter, cfg.sync_topic]
        self._sync_seen, self._sync_nonce = {}, os.urandom(8).hex().encode()
        self._sync_done.clear()
        try:
            await self._link.subscribe(filters, cfg.state_sync_timeout_seconds)
            await self._link.publish(cfg.sync_topic, self._sync_nonce, retain=False,
                                     timeout=cfg.state_sync_timeout_seconds)
            try:
                async with asyncio.timeout(cfg.state_sync_timeout_seconds):
                    await self._sync_done.wait()
            except TimeoutError:
                raise LinkDown("state read-back: the broker did not return our sync marker "
                               f"within {cfg.state_sync_timeout_seconds:g} s") from None
            await self._link.unsubscribe(filters, cfg.state_sync_timeout_seconds)
            seen = self._sync_seen
        finally:
            self._sync_seen, self._sync_nonce = None, None
        self._adopt(seen)

    def _adopt(self, seen: dict[str, bytes]) -> None:
        unreadable = 0
        for topic, payload in seen.items():
            try:
                state = AssetState.from_document(orjson.loads(payload),
                                                 self._cfg.effective_client_id)
            except orjson.JSONDecodeError:
                state = None
            if state is None:
                unreadable += 1
                log.debug("uns %s: retained %s is not a state of ours; ignored", self.name, topic)
                continue
            self.states.setdefault(state.asset, state)
        log.info("uns %s: read back %d asset states (%d other retained messages ignored)",
                 self.name, len(self.states), unreadable)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._sync_seen is None:
            return  # not syncing: a late copy of a state subscription; nothing to do
        if topic == self._cfg.sync_topic:
            if payload == self._sync_nonce:
                self._sync_done.set()
            return
        if payload:
            self._sync_seen[topic] = payload
