"""UNS suite fixtures: the harness Mosquitto with persistence, a recording MQTT 5 subscriber and
a sink factory whose sinks get closed."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.model import OutboxRecord, TransitionKind
from gateway.upstream.uns import UnsSink
from gateway.upstream.uns_config import UnsSinkConfig
from tests.harness import Mosquitto, free_port, wait_for_sync
from tests.upstream.conftest import record


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The harness broker with persistence: retained messages and persistent sessions survive
    `restart()`."""
    b = Mosquitto(free_port(), tmp_path, persistence=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@dataclass(frozen=True, slots=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    dup: bool
    props: dict[str, str]  # user properties
    content_type: str | None

    @property
    def doc(self) -> Any:
        return orjson.loads(self.payload)


class Subscriber:
    """An MQTT 5 consumer in paho's thread that records everything it receives. `persistent`:
    clean start false with a session expiry, so the broker queues for it while it is away."""

    def __init__(self, port: int, topics: list[str], client_id: str = "uns-test-sub",
                 persistent: bool = False) -> None:
        self.seen: list[Seen] = []
        self.hook: Callable[[int], None] | None = None  # called in paho's thread with the count
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topics = topics
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect_async("127.0.0.1", port, 30, clean_start=not persistent,
                                  properties=props)
        self.client.loop_start()
        wait_for_sync(self._subscribed.is_set, 10, "subscriber subscribed")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, code: ReasonCode,
                    _p: Any) -> None:
        if not code.is_failure:
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        props = msg.properties
        user = dict(getattr(props, "UserProperty", []) or [])
        seen = Seen(msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup), user,
                    getattr(props, "ContentType", None))
        with self._lock:
            self.seen.append(seen)
            count = len(self.seen)
        if self.hook is not None:
            self.hook(count)

    def on(self, suffix: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


SubscriberFactory = Callable[..., Subscriber]


@pytest.fixture
def subscribe(broker: Mosquitto) -> Iterator[SubscriberFactory]:
    made: list[Subscriber] = []

    def make(topics: list[str], **kw: Any) -> Subscriber:
        sub = Subscriber(broker.port, topics, **kw)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def uns_config(port: int, **over: Any) -> UnsSinkConfig:
    raw: dict[str, Any] = {
        "type": "uns", "name": "uns", "port": port, "enterprise": "acme", "site": "lyon",
        "connect_timeout_seconds": 3, "ack_timeout_seconds": 3,
        "reconnect_initial_seconds": 0.1, "reconnect_max_seconds": 0.5,
        "state_sync_timeout_seconds": 3,
        "assets": {"pump-1": {"area": "utilities", "line": "water"}},
    }
    return UnsSinkConfig.model_validate(raw | over)


SinkFactory = Callable[..., UnsSink]


@pytest.fixture
async def make_sink(broker: Mosquitto) -> AsyncIterator[SinkFactory]:
    """`make_sink(**config)`: a UnsSink on the test broker (closed after the test)."""
    made: list[UnsSink] = []

    def make(**over: Any) -> UnsSink:
        sink = uns_config(over.pop("port", broker.port), **over).build()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()


def uns_record(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
               episode: str = "ep-1", **body: Any) -> OutboxRecord:
    """A record as the pipeline builds it for a sink named "uns" (body fields overridable)."""
    rec = record(kind, asset, episode, sink="uns")
    if body:
        rec = replace(rec, message=replace(rec.message, body=dict(rec.message.body) | body))
    return rec
