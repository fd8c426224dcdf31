"""A plant-wide incident: hundreds of assets on several lines trip within a minute.

`storm_plan` says which asset sends what and when (deterministic for a seed); `StormPublisher`
plays it to an MQTT broker as the plant would (`plant/<asset>/<signal>`, JSON with value and
time, QoS 1). Used by the storm test and to try roll-up settings without a plant:

    python -m simulators.storm --port 1883 --lines 3 --assets-per-line 100 --spread 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True, slots=True)
class Trip:
    at: float  # seconds after the storm starts
    asset: str
    signal: str
    value: float


def asset_name(line: str, i: int) -> str:
    return f"{line}-a{i:03d}"


def storm_plan(lines: Sequence[str], assets_per_line: int, spread_seconds: float, *,
               signal: str = "vibration", value: float = 9.0, seed: int = 12) -> list[Trip]:
    """Every asset of every line trips once, at a random moment within `spread_seconds`."""
    rng = random.Random(seed)
    trips = [Trip(rng.uniform(0.0, spread_seconds), asset_name(line, i), signal, value)
             for line in lines for i in range(assets_per_line)]
    return sorted(trips, key=lambda t: (t.at, t.asset))


def calm_plan(trips: Sequence[Trip], value: float = 3.0) -> list[Trip]:
    """The same assets and signals back to normal, all at once."""
    return [Trip(0.0, t.asset, t.signal, value) for t in trips]


class StormPublisher:
    """Publishes plans to one broker over one connection (so order per asset is kept)."""

    def __init__(self, host: str, port: int, topic_prefix: str = "plant") -> None:
        self._prefix = topic_prefix
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="storm-plant")
        self._client.connect(host, port)
        self._client.loop_start()

    async def play(self, plan: Sequence[Trip]) -> int:
        """Publish each trip at its time (relative to now); returns how many were sent."""
        start = time.monotonic()
        infos = []
        for trip in plan:
            delay = start + trip.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            payload = json.dumps({"value": trip.value, "ts": time.time()})
            infos.append(self._client.publish(f"{self._prefix}/{trip.asset}/{trip.signal}",
                                              payload, qos=1))
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 10)
        return len(infos)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--lines", type=int, default=3)
    ap.add_argument("--assets-per-line", type=int, default=100)
    ap.add_argument("--spread", type=float, default=60.0, help="seconds")
    ap.add_argument("--calm-after", type=float, default=30.0,
                    help="seconds after the storm until every asset is normal again")
    args = ap.parse_args()
    lines = [f"line-{n + 1}" for n in range(args.lines)]
    plan = storm_plan(lines, args.assets_per_line, args.spread)

    async def run() -> None:
        pub = StormPublisher(args.host, args.port)
        try:
            print(f"storm: {await pub.play(plan)} trips on {len(lines)} lines")
            await asyncio.sleep(args.calm_after)
            print(f"calm: {await pub.play(calm_plan(plan))} assets normal")
        finally:
            pub.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
