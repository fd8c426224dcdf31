"""The MQTT source: paho-mqtt driven by the asyncio loop; QoS 1 acknowledged after commit.

Every paho call runs on the event loop thread (socket readiness via add_reader/add_writer, a
one-second housekeeping tick for keepalive); only the blocking TCP/TLS connect runs in a worker
thread, on a client that nothing else touches meanwhile. Each connection attempt gets a fresh
paho client, so an ack for a message of a lost connection can never acknowledge a different
message of the next one: it is dropped, and the broker redelivers (persistent session).

Backpressure: decoded messages wait in a bounded intake. When it is full the driver stops
reading the socket; unacknowledged QoS 1 messages then fill the broker's in-flight window (MQTT 5:
our Receive Maximum) and the broker holds the rest. Nothing is dropped, nothing acknowledged early.
A consumer stalled for longer than about twice `keepalive_seconds` loses the connection (the
ping answer is never read); the session keeps the messages and the driver reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from drivers.mqtt import client as mqtt_client
from drivers.mqtt.acks import LoopAck
from drivers.mqtt.codec import Reason
from drivers.mqtt.config import MqttSourceConfig, RetainedPolicy
from drivers.mqtt.rejections import RejectionLog
from drivers.mqtt.routes import Router
from gateway.backoff import Backoff
from gateway.model import SampleBatch, SourceHealth, SourceState
from gateway.timebase import gateway_now

log = logging.getLogger("drivers.mqtt")
_READ_BURST = 64  # packets read per readiness event at most
# On stop, an UNSUBSCRIBE of a filter we never hold is a round trip the broker answers only after
# it has processed every PUBACK we sent before it (packets of one connection are handled in
# order). Without it, a broker that sees our next CONNECT (a restart, a reload) before it read the
# old socket's tail drops the last acknowledgements and redelivers messages we already committed.
_ACK_BARRIER_FILTER = "$plantbridge/ack-barrier"
_ACK_BARRIER_SECONDS = 2.0


class LinkError(Exception):
    """A connection attempt failed or the connection was lost (expected; retried)."""


class BrokerRefused(LinkError):
    """The broker refused us (credentials, client id): retried, but reported as FAILED."""


class SetupFailed(LinkError):
    """We cannot even try (secret missing, TLS files unreadable): retried, reported as FAILED."""


class MqttSource:
    """Streams `SampleBatch`es from one broker: `async with src: async for b in src.batches()`."""

    def __init__(self, config: MqttSourceConfig) -> None:
        self.name = config.name
        self._cfg = config
        self._clock = config.clock(config.name)
        self._router = Router(config.subscriptions, config.topics, self._clock)
        self._rejections = RejectionLog(config.name, config.rejection_quiet_seconds)
        self._client: paho.Client | None = None
        self._connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._fd: int | None = None
        self._writing = False
        self._paused = False
        self._intake: deque[SampleBatch] = deque()
        self._nonempty = asyncio.Event()
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._suback: asyncio.Future[list[ReasonCode]] | None = None
        self._suback_wanted: list[int] = []
        self._suback_codes: dict[int, list[ReasonCode]] = {}
        self._lost: asyncio.Future[str] | None = None
        self._barrier: tuple[int, asyncio.Future[None]] | None = None
        self._state = SourceState.CONNECTING
        self._detail = f"connecting to {config.host}:{config.port}"
        self._since = time.time()
        self._samples_total = 0
        self._received = 0  # messages read from the broker, good or bad
        self.pauses = 0  # times the intake filled up and reading stopped
        self.intake_peak = 0
        self.overlap_copies = 0  # MQTT 5 duplicates from overlapping filters, dropped

    # --- Source protocol --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tasks = [asyncio.create_task(self._link(), name=f"mqtt-link:{self.name}"),
                       asyncio.create_task(self._housekeeping(), name=f"mqtt-tick:{self.name}")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        client = self._client
        if client is not None and self._connected:
            await self._ack_barrier(client)
        if client is not None and client is self._client and self._connected:
            client.disconnect()  # keeps a persistent session; unacked messages stay with it
            client.loop_write()
        self._drop_client()
        self._set_state(SourceState.STOPPED, "stopped")

    async def _ack_barrier(self, client: paho.Client) -> None:
        """Wait (bounded) until the broker has processed every acknowledgement sent so far."""
        assert self._loop is not None
        await asyncio.sleep(0)  # acks handed over from other threads run first
        done = self._loop.create_future()
        rc, mid = client.unsubscribe(_ACK_BARRIER_FILTER)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            return
        self._barrier = (mid, done)
        if self._paused:
            self._resume_reading()  # the answer queues behind messages we must read past
        try:
            async with asyncio.timeout(_ACK_BARRIER_SECONDS):
                await done
        except TimeoutError:
            log.warning("source %s: the broker did not confirm our last acknowledgements "
                        "within %.0f s; it may redeliver them (they are dropped as duplicates)",
                        self.name, _ACK_BARRIER_SECONDS)
        finally:
            self._barrier = None

    async def batches(self) -> AsyncIterator[SampleBatch]:
        while True:
            while not self._intake:
                self._nonempty.clear()
                await self._nonempty.wait()
            batch = self._intake.popleft()
            if self._paused and len(self._intake) <= self._cfg.queue_max_messages // 2:
                self._resume_reading()
            yield batch

    def health(self) -> SourceHealth:
        return self._clock.annotate(SourceHealth(self._state, self._detail, self._since,
                                                 self._samples_total,
                                                 dict(self._rejections.counts)))

    # --- connection supervision -------------------------------------------------------------

    async def _link(self) -> None:
        cfg = self._cfg
        backoff = Backoff(cfg.reconnect_initial_seconds, cfg.reconnect_max_seconds)
        down_since: float | None = None
        ever_connected = False
        while True:
            refused = False
            try:
                await self._connect_once()
            except (BrokerRefused, SetupFailed) as exc:
                problem, refused = str(exc), True
            except (LinkError, OSError, ssl.SSLError, ValueError) as exc:
                problem = str(exc) or type(exc).__name__
            else:
                if down_since is not None:
                    log.info("source %s: connected again to %s:%d after %.1f s", self.name,
                             cfg.host, cfg.port, time.time() - down_since)
                else:
                    log.info("source %s: connected to %s:%d", self.name, cfg.host, cfg.port)
                down_since, ever_connected = None, True
                backoff.reset()
                assert self._lost is not None
                problem = await self._lost
            self._drop_client()
            if down_since is None:
                down_since = time.time()
                log.warning("source %s: broker %s:%d unreachable: %s; retrying with backoff "
                            "(logged again when it recovers)", self.name, cfg.host, cfg.port,
                            problem)
            delay = backoff.next_delay()
            state = (SourceState.FAILED if refused else SourceState.RECONNECTING if ever_connected
                     else SourceState.CONNECTING)
            self._set_state(state, f"{problem}; attempt {backoff.attempt}, next in {delay:.1f} s")
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        cfg = self._cfg
        loop = asyncio.get_running_loop()
        try:
            client = mqtt_client.new_client(cfg)
        except (ValueError, OSError) as exc:
            raise SetupFailed(f"cannot set up the connection: {exc}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_socket_register_write = self._on_socket_change
        client.on_socket_unregister_write = self._on_socket_change
        client.on_socket_close = self._on_socket_close
        self._client = client
        self._connack, self._suback, self._lost = (loop.create_future(), loop.create_future(),
                                                   loop.create_future())
        connecting = loop.run_in_executor(None, mqtt_client.connect_blocking, client, cfg)
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await connecting  # bounded by connect_timeout; then close what it opened
            raise
        self._attach(client)
        try:
            async with asyncio.timeout(cfg.connect_timeout_seconds):
                code = await self._connack
        except TimeoutError:
            raise LinkError("no CONNACK from the broker in time") from None
        if code.is_failure:
            raise BrokerRefused(f"broker refused the connection: {code}")
        self._suback_codes = {}
        self._suback_wanted = mqtt_client.subscribe(client, cfg.protocol, self._router.filters)
        try:
            async with asyncio.timeout(cfg.connect_timeout_seconds):
                granted = await self._suback
        except TimeoutError:
            raise LinkError("no SUBACK from the broker in time") from None
        refused = [f for (f, _), rc in zip(self._router.filters, granted, strict=False)
                   if rc.is_failure]
        where = f"{cfg.host}:{cfg.port} (MQTT {cfg.protocol.value})"
        if refused:
            self._set_state(SourceState.DEGRADED, f"connected to {where}; broker refused "
                            f"subscriptions: {', '.join(refused)}")
        else:
            self._set_state(SourceState.CONNECTED, f"connected to {where}")

    def _drop_client(self) -> None:
        """Forget the current client: stop watching its socket and close it."""
        client, self._client, self._connected = self._client, None, False
        self._detach()
        if client is not None:
            sock = client.socket()
            if sock is not None:
                sock.close()

    # --- socket plumbing (event loop thread only) -------------------------------------------

    def _attach(self, client: paho.Client) -> None:
        sock = client.socket()
        if sock is None or client is not self._client:
            raise LinkError("connection closed while connecting")
        assert self._loop is not None
        self._fd = sock.fileno()
        if not self._paused:
            self._loop.add_reader(self._fd, self._on_readable)
        self._on_socket_change(client, None, sock)

    def _detach(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd, self._writing = None, False

    def _on_socket_change(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        """paho wants (or no longer wants) to write: mirror that on the event loop."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._loop_thread:
            loop.call_soon_threadsafe(self._on_socket_change, client, userdata, sock)
            return
        if client is not self._client or self._fd is None:
            return
        want = client.want_write()
        if want and not self._writing:
            loop.add_writer(self._fd, self._on_writable)
        elif not want and self._writing:
            loop.remove_writer(self._fd)
        self._writing = want

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread and client is self._client:
            self._detach()

    def _on_readable(self) -> None:
        client = self._client
        if client is None:
            return
        # paho reads one packet per call: read on while messages keep coming (a bounded burst,
        # then the selector again) instead of one packet per event loop turn.
        for _ in range(_READ_BURST):
            if client is not self._client or self._fd is None or self._paused:
                return
            before = self._received
            client.loop_read()
            if self._received == before:
                break
        sock = client.socket()
        # Bytes already read (the read-ahead buffer, TLS's decrypted ones) that the selector
        # cannot see: read on at the next loop turn without waiting for the socket.
        if (client is self._client and self._fd is not None and not self._paused
                and isinstance(sock, mqtt_client.ReadAheadSocket) and sock.pending()
                and self._loop is not None):
            self._loop.call_soon(self._on_readable)

    def _on_writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    def _resume_reading(self) -> None:
        self._paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._on_readable)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._client is not None and self._fd is not None:
                self._client.loop_misc()  # keepalive pings; notices a dead broker
            self._rejections.expire(gateway_now())

    # --- paho callbacks (event loop thread) -------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    code: ReasonCode, props: Properties | None) -> None:
        if client is not self._client:
            return
        # Set here, not after the await: acks for messages that came with the CONNACK count.
        self._connected = not code.is_failure
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       code: ReasonCode, props: Properties | None) -> None:
        if client is not self._client:
            return
        self._connected = False
        reason = f"connection lost ({code})"
        if self._barrier is not None and not self._barrier[1].done():
            self._barrier[1].set_result(None)  # nothing more can be confirmed
        for fut in (self._connack, self._suback):
            if fut is not None and not fut.done():
                fut.set_exception(LinkError(reason))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      codes: list[ReasonCode], props: Properties | None) -> None:
        if client is not self._client or self._suback is None or self._suback.done():
            return
        self._suback_codes[mid] = codes
        if self._suback_codes.keys() >= set(self._suback_wanted):
            self._suback.set_result([c for m in self._suback_wanted
                                     for c in self._suback_codes[m]])

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int,
                        codes: list[ReasonCode], props: Properties | None) -> None:
        barrier = self._barrier
        if (client is self._client and barrier is not None and barrier[0] == mid
                and not barrier[1].done()):
            barrier[1].set_result(None)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._barrier is not None:
            return  # stopping: neither taken nor acknowledged, so the broker redelivers it
        self._received += 1
        ack = self._acker(client, msg.mid) if msg.qos >= 1 else None
        try:
            self._take(msg, ack)
        except Exception:  # a decoding bug must not stop the source or the broker's window
            log.exception("source %s: internal error decoding a message", self.name)
            self._rejections.add(Reason.INTERNAL_ERROR, "?", "", gateway_now())
            if ack is not None:
                ack()

    def _take(self, msg: paho.MQTTMessage, ack: Callable[[], None] | None) -> None:
        now = gateway_now()  # the receive time of every sample of this message
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            return self._reject(Reason.BAD_TOPIC, "?", "", now, ack)
        if msg.retain and self._cfg.retained is RetainedPolicy.IGNORE:
            return self._reject(Reason.RETAINED, topic, "", now, ack)
        payload = msg.payload
        if len(payload) > self._cfg.max_payload_bytes:
            return self._reject(Reason.TOO_LARGE, topic, f"{len(payload)} bytes", now, ack)
        route = self._router.route(topic)
        if route is None:
            return self._reject(Reason.NO_MAPPING, topic, "", now, ack)
        ids = mqtt_client.subscription_ids(msg)
        if ids and route.filter_id not in ids:
            self.overlap_copies += 1  # MQTT 5 copy for another, overlapping subscription
            if ack is not None:
                ack()
            return None
        decoded = route.decoder.decode(payload, route.asset, route.signal, now)
        for rejected in decoded.rejections:
            self._rejections.add(rejected.reason, topic, rejected.detail, now)
        if not decoded.samples:
            if ack is not None:
                ack()  # it can never succeed: acknowledge, it is counted
            return None
        self._samples_total += len(decoded.samples)
        self._intake.append(SampleBatch(decoded.samples, ack))
        self._nonempty.set()
        self.intake_peak = max(self.intake_peak, len(self._intake))
        if len(self._intake) >= self._cfg.queue_max_messages and not self._paused:
            self._paused = True
            self.pauses += 1
            if self._fd is not None and self._loop is not None:
                self._loop.remove_reader(self._fd)
        return None

    def _reject(self, reason: Reason, topic: str, detail: str, now: float,
                ack: Callable[[], None] | None) -> None:
        self._rejections.add(reason, topic, detail, now)
        if ack is not None:
            ack()

    def _acker(self, client: paho.Client, mid: int) -> Callable[[], None]:
        """An idempotent, thread-safe ack for one QoS 1 message of one connection."""
        return _MessageAck(self, client, mid)

    def _set_state(self, state: SourceState, detail: str) -> None:
        if state is not self._state:
            self._since = time.time()
        self._state, self._detail = state, detail


class _MessageAck(LoopAck):
    """The ack of one QoS 1 message of one connection, dropped when the connection is gone
    (the broker redelivers). Built for every message: as a closure over `once_on_loop` (three
    function objects) it cost a worker 10 % of its CPU at saturation (py-spy, MQTT 5, one
    sample per message)."""

    __slots__ = ("client", "mid", "source")

    def __init__(self, source: MqttSource, client: paho.Client, mid: int) -> None:
        super().__init__(source._loop_thread)  # the loop thread of this connection
        self.source = source
        self.client = client
        self.mid = mid

    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.source._loop

    def act(self) -> None:
        if self.client is self.source._client and self.source._connected:
            self.client.ack(self.mid, 1)
