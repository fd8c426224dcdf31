"""An MQTT plant: publishes a scenario's signals to a real broker, like a plant's edge devices.

Topics are `<prefix>/<asset>/<signal>` with `{"value": v, "ts": epoch}` (`payload_format="json"`),
a bare number (`"value"`), or one `<prefix>/<asset>` object of all its signals (`"json_fields"`).
A failed sensor publishes `{"value": null, "quality": "bad"}` (nothing in `"value"` format).
`speed` runs scenario time N times faster than the wall clock (timestamps follow scenario time).

    python -m simulators.mqtt_plant --port 1883 --scenario bearing-failure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
import uuid
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from simulators import scenario as scenarios
from simulators.scenario import Scenario

PayloadStyle = Literal["json", "value", "json_fields"]


GARBAGE = (b'{"value": 7.', b"NaN", b'{"value": "abc"}', b"", b'{"value": "inf"}')


class MqttPlantPublisher:
    """Publishes `scenario` every `interval_seconds`; `garbage_every=N` adds one bad payload
    (cycling through `GARBAGE`) every N rounds on the first signal's topic (fault injection)."""

    def __init__(self, host: str, port: int, scenario: Scenario, topic_prefix: str = "plant",
                 interval_seconds: float = 0.5, qos: int = 1,
                 payload_format: PayloadStyle = "json", speed: float = 1.0,
                 client_id: str | None = None, username: str | None = None,
                 password: str | None = None, garbage_every: int = 0) -> None:
        if interval_seconds <= 0 or speed <= 0:
            raise ValueError("interval_seconds and speed must be positive")
        self.host, self.port = host, port
        self.scenario = scenario
        self.topic_prefix = topic_prefix.rstrip("/")
        self.interval_seconds = interval_seconds
        self.qos = qos
        self.payload_format = payload_format
        self.speed = speed
        self.client_id = client_id or f"plant-sim-{uuid.uuid4().hex[:8]}"
        self.username, self.password = username, password
        self.garbage_every = garbage_every
        self.garbage_sent = 0
        self.published = 0  # messages handed to the broker connection
        self._client: paho.Client | None = None
        self._pending: list[paho.MQTTMessageInfo] = []

    def messages(self, t: float, epoch: float) -> list[tuple[str, bytes]]:
        """What the plant publishes at scenario time `t` (pure: used by tests as the oracle)."""
        values = self.scenario.values(t)
        out: list[tuple[str, bytes]] = []
        if self.payload_format == "json_fields":
            by_asset: dict[str, dict[str, float | None]] = {}
            for (asset, signal), v in values.items():
                by_asset.setdefault(asset, {})[signal] = v
            for asset, signals in by_asset.items():
                body: dict[str, object] = {**signals, "ts": epoch}
                out.append((f"{self.topic_prefix}/{asset}", json.dumps(body).encode()))
            return out
        for (asset, signal), v in values.items():
            topic = f"{self.topic_prefix}/{asset}/{signal}"
            if self.payload_format == "value":
                if v is not None:
                    out.append((topic, repr(float(v)).encode()))
            elif v is None:
                out.append((topic, b'{"value": null, "quality": "bad", "ts": %r}' % epoch))
            else:
                out.append((topic, json.dumps({"value": v, "ts": epoch}).encode()))
        return out

    async def __aenter__(self) -> MqttPlantPublisher:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5)
        client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]  # floats work
        client.max_queued_messages_set(0)  # while the broker is away, keep everything
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        await asyncio.to_thread(client.connect, self.host, self.port, 30)
        client.loop_start()  # paho's own thread; publish() is thread-safe
        self._client = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await self.flush()
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    async def publish_raw(self, topic: str, payload: bytes | str, qos: int | None = None,
                          retain: bool = False) -> None:
        """Fault injection: publish any payload (garbage, NaN, huge) on any topic."""
        if self._client is None:
            raise RuntimeError("use `async with publisher:` first")
        info = self._client.publish(topic, payload, self.qos if qos is None else qos, retain)
        self._pending.append(info)
        self.published += 1

    async def flush(self, timeout_seconds: float = 10.0) -> None:
        """Wait until every QoS 1 message so far is acknowledged by the broker."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            self._pending = [i for i in self._pending if not i.is_published()]
            if not self._pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._pending)} messages not acknowledged by the broker")
            await asyncio.sleep(0.01)

    async def run(self, duration_seconds: float | None = None) -> None:
        """Publish every `interval_seconds` (wall) until `duration_seconds` of scenario time."""
        async with self:
            start_wall = time.time()
            start = time.monotonic()
            tick = 0
            while True:
                t = tick * self.interval_seconds * self.speed
                if duration_seconds is not None and t > duration_seconds:
                    break
                msgs = self.messages(t, start_wall + t)
                for topic, payload in msgs:
                    await self.publish_raw(topic, payload)
                if self.garbage_every and msgs and tick % self.garbage_every == 0:
                    await self.publish_raw(msgs[0][0], GARBAGE[self.garbage_sent % len(GARBAGE)])
                    self.garbage_sent += 1
                self._pending = [i for i in self._pending if not i.is_published()]
                tick += 1
                delay = start + tick * self.interval_seconds - time.monotonic()
                await asyncio.sleep(max(0.0, delay))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.mqtt_plant", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--scenario", default="bearing-failure",
                        choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--prefix", default="plant")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--format", default="json", choices=("json", "value", "json_fields"))
    parser.add_argument("--speed", type=float, default=1.0, help="scenario time factor")
    parser.add_argument("--garbage-every", type=int, default=0,
                        help="fault injection: one bad payload every N rounds (0: none)")
    parser.add_argument("--duration", type=float, default=None,
                        help="scenario seconds (default: the scenario's length; 0: forever)")
    args = parser.parse_args(argv)
    scenario = scenarios.get(args.scenario)
    duration = scenario.duration_seconds if args.duration is None else args.duration
    publisher = MqttPlantPublisher(args.host, args.port, scenario, args.prefix, args.interval,
                                   args.qos, args.format, args.speed,
                                   garbage_every=args.garbage_every)
    print(f"publishing {scenario.name} to {args.host}:{args.port} under {args.prefix}/ "
          f"({scenario.description})", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(publisher.run(None if duration == 0 or math.isinf(duration) else duration))
    print(f"published {publisher.published} messages ({publisher.garbage_sent} bad on purpose)",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
