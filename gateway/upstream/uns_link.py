"""One MQTT 5 publishing connection, adapted from paho's callbacks into asyncio at this edge.

paho runs its own network thread (`loop_start`): it connects, reconnects with backoff and, on a
persistent session (clean start false), sends the QoS 1 messages still awaiting their PUBACK
again after a reconnect. Everything it reports crosses into the event loop through
`call_soon_threadsafe`; a publish registers its future on the loop thread right after
`client.publish` returns, so a PUBACK (delivered later through the loop) always finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from drivers.mqtt.client import tls_context
from gateway.settings import TlsSettings

log = logging.getLogger("plantbridge.uns")

# PUBACK reasons that a resend of the same bytes can never turn into a success.
_PERMANENT = {"Packet too large", "Payload format invalid", "Topic Name invalid"}

MessageHandler = Callable[[str, bytes], None]


class LinkDown(Exception):
    """Not connected to the broker (the message says why, in plain words)."""


class PublishFailed(Exception):
    """No PUBACK in time, or a PUBACK with a failure reason code."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    persistent: bool  # clean start false and a session expiry: in-flight QoS 1 survives
    session_expiry_seconds: int
    keepalive_seconds: int
    connect_timeout_seconds: float
    reconnect_initial_seconds: float
    reconnect_max_seconds: float
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None


def connect_problem(exc: BaseException, where: str) -> str:
    """Plain words for a failed TCP/TLS connect."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message} (check tls.ca_file and host)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error with {where}: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (is the broker running on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker host of {where}: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out connecting to {where}"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class MqttLink:
    """`await link.start()`, then `publish`/`subscribe` while `connected`; `await aclose()`."""

    def __init__(self, settings: LinkSettings, on_message: MessageHandler | None = None) -> None:
        self.settings = settings
        self.where = f"{settings.host}:{settings.port}"
        self._on_message = on_message
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._up = asyncio.Event()
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self.problem = f"not connected yet to {self.where}"
        self.connects = 0  # successful CONNACKs, for tests and the log

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def start(self) -> None:
        """Start the network thread once; it connects and reconnects by itself."""
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            client = self._new_client()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.problem = f"cannot set up the connection to {self.where}: {exc}"
            raise self._down() from None
        self._client = client
        client.loop_start()

    def _new_client(self) -> paho.Client:
        """A paho client with our session, credentials, TLS and callbacks; no I/O yet."""
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             protocol=paho.MQTTv5)
        client.connect_timeout = s.connect_timeout_seconds
        # paho takes whole seconds in its annotation, but computes with floats.
        client.reconnect_delay_set(s.reconnect_initial_seconds,  # type: ignore[arg-type]
                                   s.reconnect_max_seconds)  # type: ignore[arg-type]
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            client.tls_set_context(tls_context(s.tls))
            client.tls_insecure_set(not s.tls.verify)
        client.on_connect = self._cb_connect
        client.on_connect_fail = self._cb_connect_fail
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_subscribe = self._cb_subscribe
        client.on_unsubscribe = self._cb_subscribe
        client.on_message = self._cb_message
        client.on_socket_open = _no_delay
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_seconds if s.persistent else 0
        client.connect_async(s.host, s.port, s.keepalive_seconds,
                             clean_start=not s.persistent, properties=props)
        return client

    async def wait_connected(self, timeout: float) -> None:
        """Return once connected; LinkDown with the last problem after `timeout` seconds."""
        if self.connected:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            raise self._down() from None

    async def publish(self, topic: str, payload: bytes, *, retain: bool, timeout: float,
                      user_properties: Sequence[tuple[str, str]] = (),
                      content_type: str | None = None) -> int:
        """Publish at QoS 1 and wait for the broker's PUBACK; returns the packet id (mid)."""
        client = self._client
        if client is None or not self.connected:
            raise self._down()
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if content_type is not None:
            props.ContentType = content_type
            props.PayloadFormatIndicator = 1  # UTF-8 text
        if user_properties:
            props.UserProperty = list(user_properties)
        info = client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise PublishFailed(f"publish refused by the client: {paho.error_string(info.rc)}")
        fut = self._future(self._acks, info.mid)
        try:
            async with asyncio.timeout(timeout):
                code = await fut
        except TimeoutError:
            # paho keeps the message and sends it again after a reconnect; the outbox retries
            # it too. Either copy carries the same message-id for consumers to drop repeats.
            raise PublishFailed(f"no PUBACK from {self.where} within {timeout:g} s "
                                f"({'connected' if self.connected else self.problem})") from None
        finally:
            self._acks.pop(info.mid, None)
        if code.is_failure:
            raise PublishFailed(f"broker refused the message: {code}",
                                permanent=str(code) in _PERMANENT)
        return info.mid

    async def subscribe(self, filters: Sequence[str], timeout: float) -> None:
        """Subscribe (QoS 1 each) and wait for the SUBACK; raises LinkDown on any failure."""
        client = self._client
        if client is None or not self.connected:
            raise self._down()
        _, mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        await self._wait_suback(mid, timeout, "SUBACK")

    async def unsubscribe(self, filters: Sequence[str], timeout: float) -> None:
        client = self._client
        if client is None or not self.connected:
            raise self._down()
        _, mid = client.unsubscribe(list(filters))
        await self._wait_suback(mid, timeout, "UNSUBACK")

    async def _wait_suback(self, mid: int | None, timeout: float, what: str) -> None:
        if mid is None:
            raise self._down()
        fut = self._future(self._subacks, mid)
        try:
            async with asyncio.timeout(timeout):
                codes = await fut
        except TimeoutError:
            raise LinkDown(f"no {what} from {self.where} within {timeout:g} s") from None
        finally:
            self._subacks.pop(mid, None)
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            raise LinkDown(f"{what} refused: {', '.join(failed)}")

    async def aclose(self) -> None:
        """Disconnect (the broker keeps a persistent session) and stop the network thread."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.disconnect()
        # loop_stop joins paho's thread: at most one connect attempt (connect_timeout) long.
        await asyncio.to_thread(client.loop_stop)
        self._up.clear()
        pending: list[asyncio.Future[Any]] = [*self._acks.values(), *self._subacks.values()]
        for fut in pending:
            if not fut.done():
                fut.cancel()

    def _down(self) -> LinkDown:
        return LinkDown(self.problem or f"not connected to {self.where}")

    # --- paho's thread -> the event loop ----------------------------------------------------

    def _future(self, table: dict[int, Any], mid: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        table[mid] = fut
        return fut

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(fn, *args)

    def _cb_connect(self, _c: paho.Client, _u: Any, flags: paho.ConnectFlags,
                    code: ReasonCode, _p: Properties | None) -> None:
        if code.is_failure:
            self.problem = f"broker {self.where} refused the connection: {code}"
            return
        self.problem = ""
        self._post(self._set_up, True, flags.session_present)

    def _cb_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        # paho calls this inside its `except OSError:` block: the exception is the cause.
        exc = sys.exc_info()[1]
        self.problem = (connect_problem(exc, self.where) if exc is not None
                        else f"cannot connect to {self.where}")

    def _cb_disconnect(self, _c: paho.Client, _u: Any, _f: paho.DisconnectFlags,
                       code: ReasonCode, _p: Properties | None) -> None:
        if not self.problem.startswith("broker"):  # keep "refused: <reason>" as the cause
            self.problem = f"connection to {self.where} lost: {code}"
        self._post(self._set_up, False, False)

    def _set_up(self, up: bool, session_present: bool) -> None:
        if up:
            self.connects += 1  # counted on the loop thread, together with `connected`
            self._up.set()
            log.info("uns: connected to %s as %s (session present: %s)", self.where,
                     self.settings.client_id, session_present)
        else:
            self._up.clear()

    def _cb_publish(self, _c: paho.Client, _u: Any, mid: int, code: ReasonCode,
                    _p: Properties) -> None:
        self._post(_resolve, self._acks, mid, code)

    def _cb_subscribe(self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode],
                      _p: Properties | None) -> None:
        self._post(_resolve, self._subacks, mid, codes)

    def _cb_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            self._post(self._on_message, msg.topic, bytes(msg.payload))


def _no_delay(_c: paho.Client, _u: Any, sock: Any) -> None:
    """Our small PUBLISH packets go out at once instead of waiting for Nagle's algorithm. The
    broker's side matters more (Mosquitto: `set_tcp_nodelay true`, see docs/uns.md)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _resolve(table: dict[int, asyncio.Future[Any]], mid: int, value: Any) -> None:
    fut = table.get(mid)
    if fut is not None and not fut.done():
        fut.set_result(value)
