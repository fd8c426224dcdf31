"""Building, connecting and subscribing a paho client from our config (MQTT 3.1.1 and 5)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from drivers.mqtt.config import MqttSourceConfig, Protocol, SessionMode
from gateway.settings import TlsSettings


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho leaves the socket open when the TLS handshake fails: close it ourselves."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


READ_AHEAD_BYTES = 64 * 1024  # one recv() from the kernel serves this much of paho's reading


class ReadAheadSocket:
    """paho's socket, read in large chunks: paho asks for one byte (packet type), one byte at a
    time (remaining length), then the rest, so a small message cost 3-4 `recv` system calls.
    Here one `recv` of up to `READ_AHEAD_BYTES` serves many messages, and paho's small reads
    are slices of it. Implements paho's `SocketLike` (recv, send, close, fileno, setblocking)
    plus `pending()`: bytes already read that the selector cannot see, so whoever drives paho
    must read on while it is not zero (TLS included: the SSL layer's own buffer counts too).
    """

    __slots__ = ("_data", "_pos", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        data, pos = self._data, self._pos
        if pos >= len(data):
            data = bytes(self.sock.recv(READ_AHEAD_BYTES))  # or BlockingIOError, SSLWantRead
            if not data:
                return data  # end of stream: paho sees the connection lost
            self._data, pos = data, 0
        chunk = data[pos:pos + size]  # the whole chunk itself when paho takes it all
        self._pos = pos + len(chunk)
        return chunk

    def pending(self) -> int:
        ssl_pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return len(self._data) - self._pos + ssl_pending

    def send(self, buffer: bytes | bytearray) -> int:
        sent: int = self.sock.send(buffer)
        return sent

    def close(self) -> None:
        self._data, self._pos = b"", 0
        self.sock.close()

    def fileno(self) -> int:
        fd: int = self.sock.fileno()
        return fd

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)


class _Client(paho.Client):
    """paho's client on a `ReadAheadSocket` (plain TCP or TLS; paho makes the socket, we wrap it
    before its first read)."""

    def _create_socket(self) -> Any:
        return ReadAheadSocket(super()._create_socket())


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    ctx = tls.client_context()
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


def new_client(cfg: MqttSourceConfig) -> paho.Client:
    """A client with manual acks, our session choice, credentials and TLS (no callbacks yet).

    Reveals the password now, so a rotated secret file is read on every connection attempt;
    raises ValueError when it is missing.
    """
    v5 = cfg.protocol is Protocol.V5
    client = _Client(
        CallbackAPIVersion.VERSION2, client_id=cfg.effective_client_id,
        clean_session=None if v5 else cfg.session is SessionMode.CLEAN,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311, manual_ack=True)
    client.connect_timeout = cfg.connect_timeout_seconds
    if cfg.username is not None:
        password = cfg.password.reveal() if cfg.password is not None else None
        client.username_pw_set(cfg.username, password)
    if cfg.tls is not None:
        client.tls_set_context(tls_context(cfg.tls))
        client.tls_insecure_set(not cfg.tls.verify)
    return client


def connect_blocking(client: paho.Client, cfg: MqttSourceConfig) -> None:
    """For a worker thread: TCP connect and TLS handshake, CONNECT queued (the loop writes it).

    MQTT 5 announces our session expiry and, as Receive Maximum, the intake size.
    """
    if cfg.protocol is Protocol.V5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        persistent = cfg.session is SessionMode.PERSISTENT
        props.SessionExpiryInterval = cfg.session_expiry_seconds if persistent else 0
        props.ReceiveMaximum = cfg.queue_max_messages
        client.connect(cfg.host, cfg.port, cfg.keepalive_seconds, clean_start=not persistent,
                       properties=props)
    else:
        client.connect(cfg.host, cfg.port, cfg.keepalive_seconds)


def subscribe(client: paho.Client, protocol: Protocol,
              filters: Sequence[tuple[str, int]]) -> list[int]:
    """Subscribe; return the packet ids of the SUBSCRIBEs sent, in the order of `filters`.

    MQTT 5: one SUBSCRIBE per filter, with Subscription Identifier = position + 1, because a
    v5 broker sends one copy of a message per matching subscription; the identifier tells
    which copy belongs to the route that wins (see `Route.filter_id`).
    """
    mids: list[int] = []
    if protocol is Protocol.V5:
        for i, (topic, qos) in enumerate(filters, start=1):
            props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
            props.SubscriptionIdentifier = i
            _, mid = client.subscribe(topic, options=SubscribeOptions(qos=qos), properties=props)
            if mid is not None:
                mids.append(mid)
    else:
        _, mid = client.subscribe(list(filters))
        if mid is not None:
            mids.append(mid)
    return mids


def subscription_ids(msg: paho.MQTTMessage) -> list[int]:
    """The MQTT 5 Subscription Identifiers a message came with (empty for 3.1.1)."""
    ids = getattr(msg.properties, "SubscriptionIdentifier", None) if msg.properties else None
    if ids is None:
        return []
    return list(ids) if isinstance(ids, list) else [int(ids)]
