"""paho's per-message costs we avoid: PUBLISH decoding (`lean_publish`) and a `send` per
PUBACK (`coalesce_pubacks`).

paho 2.2 builds a `Properties` object per MQTT 5 PUBLISH; the lean decoder gives the same
message for the PUBLISHes it takes (QoS 0/1; MQTT 5 with only Subscription Identifiers, or
MQTT 3.1.1) and declines everything else, which paho then decodes itself. Held to paho's own
`decode_publish` on the same bytes, then checked against a real Mosquitto.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.mqtt.client import ReadAheadSocket, coalesce_pubacks, lean_publish
from tests.drivers.mqtt.conftest import running_source, source_config
from tests.harness import Mosquitto, wait_for

V5, V311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311


def props_of(**values: Any) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def packet(topic: bytes, qos: int, mid: int, payload: bytes,
           props: Properties | None = None, raw_props: bytes | None = None) -> bytes:
    """A PUBLISH after its fixed header, as paho holds it in `_in_packet["packet"]`."""
    out = struct.pack("!H", len(topic)) + topic
    if qos:
        out += struct.pack("!H", mid)
    if raw_props is not None:
        out += raw_props
    elif props is not None:
        out += props.pack()  # type: ignore[no-untyped-call]
    return out + payload


def command(qos: int, dup: bool = False, retain: bool = False) -> int:
    return 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)


def assert_same_as_paho(cmd: int, data: bytes, v5: bool) -> None:
    ours = lean_publish(cmd, bytearray(data), v5)
    assert ours is not None
    theirs = paho_packet.decode_publish(cmd, bytearray(data), V5 if v5 else V311)
    assert (ours.dup, ours.qos, ours.retain, ours.topic, ours.mid, ours.payload) == (
        theirs.dup, theirs.qos, theirs.retain, theirs.topic, theirs.mid, theirs.payload)
    assert type(ours.topic) is bytes and type(ours.payload) is bytes
    if theirs.properties is None:
        assert ours.properties is None
        return
    assert isinstance(ours.properties, Properties)
    assert ours.properties.json() == theirs.properties.json()  # type: ignore[no-untyped-call]
    assert str(ours.properties) == str(theirs.properties)
    assert (getattr(ours.properties, "SubscriptionIdentifier", None)
            == getattr(theirs.properties, "SubscriptionIdentifier", None))


topics = st.one_of(st.text(min_size=1, max_size=40).map(str.encode),
                   st.binary(min_size=1, max_size=40))  # invalid UTF-8 included
sub_ids = st.lists(st.integers(1, 268_435_455), max_size=4)


@settings(max_examples=300, deadline=None)
@given(topic=topics, qos=st.integers(0, 1), mid=st.integers(1, 65535),
       dup=st.booleans(), retain=st.booleans(), payload=st.binary(max_size=300), ids=sub_ids,
       v5=st.booleans())
def test_the_same_message_as_paho(topic: bytes, qos: int, mid: int, dup: bool, retain: bool,
                                  payload: bytes, ids: list[int], v5: bool) -> None:
    props = (props_of(SubscriptionIdentifier=ids) if ids else props_of()) if v5 else None
    assert_same_as_paho(command(qos, dup, retain), packet(topic, qos, mid, payload, props), v5)


def test_an_empty_v5_topic_and_the_largest_identifier() -> None:
    assert_same_as_paho(command(1), packet(b"", 1, 7, b"x", props_of()), True)
    big = props_of(SubscriptionIdentifier=[268_435_455, 1, 127, 128])
    assert_same_as_paho(command(0), packet(b"a/b", 0, 0, b"", big), True)


@pytest.mark.parametrize("props", [
    props_of(UserProperty=("k", "v")),
    props_of(ContentType="application/json"),
    props_of(PayloadFormatIndicator=1),
    props_of(MessageExpiryInterval=60),
    props_of(TopicAlias=3),
    props_of(SubscriptionIdentifier=[2], UserProperty=("k", "v")),
])
def test_other_properties_are_left_to_paho(props: Properties) -> None:
    data = packet(b"plant/p1/vibration", 1, 5, b"7.5", props)
    assert lean_publish(command(1), bytearray(data), True) is None
    assert paho_packet.decode_publish(command(1), bytearray(data), V5).payload == b"7.5"


def test_qos_2_and_an_empty_311_topic_are_left_to_paho() -> None:
    assert lean_publish(command(2), bytearray(packet(b"t", 2, 9, b"1", props_of())), True) is None
    assert lean_publish(command(0), bytearray(packet(b"", 0, 0, b"1")), False) is None


@pytest.mark.parametrize("data", [
    b"",  # no topic length
    b"\x00",  # half a topic length
    b"\x00\x05abc",  # a topic longer than the packet
    b"\x00\x01t\x00",  # QoS 1: half a packet id
    b"\x00\x01t\x00\x07",  # QoS 1: no properties length
    b"\x00\x01t\x00\x07\x05\x0b",  # properties longer than the packet
    b"\x00\x01t\x00\x07\x02\x0b\x80",  # an identifier running past its properties
    b"\x00\x01t\x00\x07\x80\x80\x80\x80\x01",  # a five-byte length
])
def test_malformed_packets_are_left_to_paho_which_refuses_them(data: bytes) -> None:
    assert lean_publish(command(1), bytearray(data), True) is None
    with pytest.raises(Exception):  # noqa: B017  # whatever paho raises, as before
        paho_packet.decode_publish(command(1), bytearray(data), V5)


@pytest.fixture
def paho_decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The topics of the PUBLISHes paho's own decoder saw in this process."""
    seen: list[bytes] = []
    original: Callable[..., Any] = paho_packet.decode_publish

    def counting(header: int, data: bytes | bytearray, protocol: Any) -> Any:
        result = original(header, data, protocol)
        seen.append(result.topic)
        return result

    monkeypatch.setattr(paho_packet, "decode_publish", counting)
    yield seen


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_source_reads_through_the_lean_decoder_and_paho_takes_the_rest(
        mosquitto: Mosquitto, paho_decodes: list[bytes], protocol: str) -> None:
    """Plain messages never reach paho's decoder (the lean path is in use); a v5 message with
    a user property does, and both arrive whole."""
    cfg = source_config(mosquitto.port, protocol=protocol,
                        subscriptions=[{"pattern": "plant/+asset/+signal"}])
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        async with running_source(cfg) as (source, got):
            for i in range(20):
                pub.publish(f"plant/p{i}/vibration", str(i), qos=1)
            pub.publish("plant/tagged/current", "42", qos=1,
                        properties=props_of(UserProperty=("line", "4")))
            await wait_for(lambda: len(got.samples) == 21, 10, "21 samples")
            assert sorted(s.value for s in got.samples if s.value is not None) == [
                *map(float, range(20)), 42.0]
            assert source.health().rejected == {}
    finally:
        pub.loop_stop()
        pub.disconnect()
    # v5: only the message with a user property; 3.1.1: the broker drops properties
    assert paho_decodes == ([b"plant/tagged/current"] if protocol == "5" else [])


def out(command: int, data: bytes, pos: int = 0) -> dict[str, Any]:
    return {"command": command, "mid": data[-1], "qos": 1, "pos": pos,
            "to_process": len(data) - pos, "packet": data, "info": None}


def test_runs_of_pubacks_become_one_packet_in_order() -> None:
    acks = [out(0x40, bytes([0x40, 2, 0, i])) for i in range(1, 6)]
    ping = out(0xC0, b"\xc0\x00")
    started = out(0x40, b"\x40\x02\x00\x09", pos=2)  # half written: left as it is
    queue = deque([started, acks[0], acks[1], ping, acks[2], acks[3], acks[4]])
    coalesce_pubacks(queue)
    assert [p["packet"] for p in queue] == [
        started["packet"], acks[0]["packet"] + acks[1]["packet"], ping["packet"],
        acks[2]["packet"] + acks[3]["packet"] + acks[4]["packet"]]
    assert [(p["pos"], p["to_process"]) for p in queue] == [(2, 2), (0, 8), (0, 2), (0, 12)]
    single = deque([acks[0], ping])
    coalesce_pubacks(single)
    assert list(single) == [acks[0], ping]  # nothing to join: the same packets


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_burst_of_acks_goes_out_in_few_sends_and_every_one_counts(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    """20 messages acknowledged at once (as a commit does; 20: Mosquitto's in-flight limit for
    a 3.1.1 client): a few sends, not 20, and after a restart of the persistent session the
    broker redelivers none of them."""
    sends: list[int] = []
    plain_send = ReadAheadSocket.send

    def counting(self: ReadAheadSocket, buffer: bytes | bytearray) -> int:
        sends.append(len(buffer))
        return plain_send(self, buffer)

    monkeypatch.setattr(ReadAheadSocket, "send", counting)
    cfg = source_config(mosquitto.port, protocol=protocol, client_id=f"burst-{protocol}",
                        subscriptions=[{"pattern": "plant/+asset/+signal"}])
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        async with running_source(cfg, auto_ack=False) as (_, got):
            for i in range(20):
                pub.publish(f"plant/p{i}/vibration", str(i), qos=1)
            await wait_for(lambda: len(got.samples) == 20, 10, "20 samples")
            before = len(sends)
            for batch in got.batches:  # all on the loop thread, one after another
                assert batch.ack is not None
                batch.ack()
            await wait_for(lambda: sum(sends[before:]) >= 20 * 4, 10, "20 PUBACKs sent")
            assert len(sends) - before <= 3  # one send per PUBACK would be 20
        async with running_source(cfg) as (_, again):
            pub.publish("plant/marker/vibration", "-1", qos=1)
            await wait_for(lambda: any(s.value == -1.0 for s in again.samples), 10, "marker")
            assert [s.value for s in again.samples] == [-1.0]  # nothing redelivered
    finally:
        pub.loop_stop()
        pub.disconnect()


def test_callbacks_are_called_as_paho_calls_them() -> None:
    """on_message for every message; a per-topic callback (which our sources never add) turns
    paho's own dispatch back on; an exception in the callback propagates as in paho."""
    from drivers.mqtt.client import new_client

    client = new_client(source_config(1883))
    assert client._lean  # type: ignore[attr-defined]
    seen: list[tuple[str, str]] = []
    client.on_message = lambda _c, _u, m: seen.append(("any", m.topic))

    def deliver(topic: bytes) -> None:
        client._in_packet["command"] = command(0)
        client._in_packet["packet"] = bytearray(packet(topic, 0, 0, b"1", props_of()))
        client._handle_publish()

    deliver(b"plant/p1/vibration")
    client.message_callback_add("plant/special/#",
                                lambda _c, _u, m: seen.append(("special", m.topic)))
    deliver(b"plant/special/x")
    deliver(b"plant/p2/vibration")
    assert seen == [("any", "plant/p1/vibration"), ("special", "plant/special/x"),
                    ("any", "plant/p2/vibration")]

    def fails(*_: object) -> None:
        raise RuntimeError("a bug in on_message")

    client.on_message = fails
    with pytest.raises(RuntimeError, match="a bug in on_message"):
        deliver(b"plant/p3/vibration")
