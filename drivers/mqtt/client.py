"""Building, connecting and subscribing a paho client from our config (MQTT 3.1.1 and 5)."""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
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


_SUBSCRIPTION_IDENTIFIER = 11  # MQTT 5 property 0x0B: a Variable Byte Integer, may repeat
# What `lean_properties` copies: the per-instance tables paho's Properties.__init__ builds.
_PUBLISH_PROPERTIES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


def _varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """An MQTT Variable Byte Integer at `pos`: (value, position after it); None when it runs
    past the data or past four bytes (malformed: paho then decodes it, and refuses it)."""
    value, shift = 0, 0
    for i in range(pos, min(pos + 4, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def lean_properties(ids: list[int]) -> Properties:
    """A PUBLISH's Properties holding these Subscription Identifiers, as paho would build it
    (a real `Properties`: str, json and isEmpty work), without running its constructor, which
    builds its name and type tables anew for every message."""
    props: Properties = Properties.__new__(Properties)
    props.__dict__.update(_PUBLISH_PROPERTIES.__dict__)  # the tables, shared (paho only reads them)
    if ids:
        props.__dict__["SubscriptionIdentifier"] = ids
    return props


class LeanPublish(NamedTuple):
    dup: bool
    qos: int
    retain: bool
    topic: bytes
    mid: int
    properties: Properties | None
    payload: bytes


def lean_publish(command: int, packet: bytes | bytearray, v5: bool) -> LeanPublish | None:
    """A PUBLISH of QoS 0 or 1 decoded as paho's `decode_publish` decodes it: MQTT 5 when its
    only properties are Subscription Identifiers (ours: `subscribe` sets one per filter), or
    MQTT 3.1.1 (`properties` None). None for anything else (other properties, QoS 2, an empty
    3.1.1 topic, anything malformed), which paho then decodes itself, with its own checks and
    errors."""
    qos = (command & 0x06) >> 1
    if qos > 1 or len(packet) < 2:
        return None
    end = len(packet)
    pos = 2 + ((packet[0] << 8) | packet[1])
    if pos > end or (pos == 2 and not v5):
        return None
    view = memoryview(packet)
    topic = bytes(view[2:pos])
    mid = 0
    if qos:
        if pos + 2 > end:
            return None
        mid = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
    if not v5:
        return LeanPublish(bool(command & 0x08), qos, bool(command & 0x01), topic, mid, None,
                           bytes(view[pos:]))
    got = _varint(packet, pos)
    if got is None:
        return None
    length, pos = got
    stop = pos + length
    if stop > end:
        return None
    ids: list[int] = []
    while pos < stop:
        if packet[pos] != _SUBSCRIPTION_IDENTIFIER:  # (one byte: identifiers are below 128)
            return None
        got = _varint(packet, pos + 1)
        if got is None or got[1] > stop:
            return None
        ids.append(got[0])
        pos = got[1]
    return LeanPublish(bool(command & 0x08), qos, bool(command & 0x01), topic, mid,
                       lean_properties(ids), bytes(view[stop:]))


# paho internals the lean `_Client._handle_publish` uses; without any of them it stands aside
_PAHO_PARTS = ("_handle_publish", "_handle_on_message", "_send_puback", "_easy_log",
               "_in_packet", "_protocol", "_manual_ack", "_out_packet", "_in_callback_mutex",
               "_userdata", "suppress_exceptions")
_PUBACK = 0x40  # the packet type in the first byte's high nibble


def coalesce_pubacks(out: deque[Any]) -> None:
    """Runs of queued PUBACKs not yet begun, each made one packet: their bytes end to end.

    paho writes every queued packet with a `send` of its own; a commit acknowledges thousands
    of messages at once, and a system call per 4-byte PUBACK was a tenth of a worker's CPU at
    one sample per message. A PUBACK has no bookkeeping once written (only a QoS 0 PUBLISH and
    a DISCONNECT do), so one packet with their bytes is the same to paho and to the broker;
    paho still handles a partial write, a full socket and TLS as for any packet."""
    if len(out) < 2:
        return
    merged: list[Any] = []
    run: list[Any] = []
    for pkt in out:
        if pkt["command"] & 0xF0 == _PUBACK and pkt["pos"] == 0:
            run.append(pkt)
            continue
        _close_run(run, merged)
        merged.append(pkt)
    _close_run(run, merged)
    if len(merged) != len(out):
        out.clear()
        out.extend(merged)


def _close_run(run: list[Any], merged: list[Any]) -> None:
    if len(run) > 1:
        data = b"".join([pkt["packet"] for pkt in run])
        merged.append({**run[-1], "packet": data, "pos": 0, "to_process": len(data)})
    elif run:
        merged.append(run[0])
    run.clear()


class _Client(paho.Client):
    """paho's client on a `ReadAheadSocket` (plain TCP or TLS; paho makes the socket, we wrap it
    before its first read), and PUBLISHes decoded by `lean_publish`.

    paho 2.2 builds a `Properties` object for every MQTT 5 PUBLISH, and its constructor and
    parser were half of a worker's CPU at one sample per message (py-spy): an MQTT 5 source
    read at 0.6x the rate of an MQTT 3.1.1 one. Messages `lean_publish` does not take go
    through paho's own `_handle_publish`, unchanged. `loop_write` sends a burst of PUBACKs
    with one system call (`coalesce_pubacks`).
    """

    _lean = False  # `new_client` sets it when this paho has every part the lean path uses
    _filtered = False  # a per-topic callback was added: paho's own dispatch then

    def _create_socket(self) -> Any:
        return ReadAheadSocket(super()._create_socket())

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    def loop_write(self) -> MQTTErrorCode:
        if self._lean:
            coalesce_pubacks(self._out_packet)
        return super().loop_write()

    def _handle_publish(self) -> MQTTErrorCode:
        if not self._lean:
            return super()._handle_publish()
        msg = lean_publish(self._in_packet["command"], self._in_packet["packet"],
                           self._protocol == paho.MQTTv5)
        if msg is None:
            return super()._handle_publish()
        # from here as paho's own `_handle_publish` for QoS 0 and 1 (paho 2.2)
        message = paho.MQTTMessage(mid=msg.mid, topic=msg.topic)
        message.dup, message.qos, message.retain = msg.dup, msg.qos, msg.retain
        message.properties = msg.properties
        message.payload = msg.payload
        if self._logger is not None or self.on_log is not None:
            try:
                print_topic = msg.topic.decode("utf-8")
            except UnicodeDecodeError:
                print_topic = f"TOPIC WITH INVALID UTF-8: {msg.topic!r}"
            if message.properties is not None:
                self._easy_log(
                    paho.MQTT_LOG_DEBUG,
                    "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s, ...  (%d bytes)",
                    message.dup, message.qos, message.retain, message.mid, print_topic,
                    message.properties, len(message.payload))
            else:
                self._easy_log(
                    paho.MQTT_LOG_DEBUG,
                    "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', ...  (%d bytes)",
                    message.dup, message.qos, message.retain, message.mid, print_topic,
                    len(message.payload))
        message.timestamp = paho.time_func()
        if self._filtered:
            self._handle_on_message(message)
        else:  # paho's dispatch without per-topic callbacks: no topic match (a trie walk)
            self._call_on_message(message)
        if message.qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _call_on_message(self, message: paho.MQTTMessage) -> None:
        """`on_message`, as paho's `_handle_on_message` calls it when no per-topic callback
        matched."""
        on_message = self.on_message
        if on_message:
            with self._in_callback_mutex:
                try:
                    on_message(self, self._userdata, message)
                except Exception as err:
                    self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                    if not self.suppress_exceptions:
                        raise


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
    client._lean = (all(hasattr(client, part) for part in _PAHO_PARTS)
                    and hasattr(paho, "time_func"))  # else: paho's own decoding throughout
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
