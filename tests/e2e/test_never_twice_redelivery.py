"""Issue 10, "never zero, never two": a broker redelivery after a reconnect is evaluated once.

Black box: the daemon as a subprocess reaches a real Mosquitto through a small TCP relay. The
relay holds back what the daemon sends (its PUBACK for a message it has already evaluated and
committed) and then cuts the connection: the broker never saw that message acknowledged, so it
sends it again, flagged DUP, when the daemon's persistent session reconnects. That is the
redelivery every plant sees after a network blip, made deterministic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from tests.e2e.never_twice import FENCE_RULE, expect_exactly, threshold_rule
from tests.e2e.stack import Stack
from tests.harness import free_port, wait_for


@dataclass(eq=False)
class _Link:
    daemon: asyncio.StreamWriter
    broker: asyncio.StreamWriter
    holding: bool = False  # drop what the daemon sends (its PUBACKs never reach the broker)
    from_broker: bytes = b""
    to_broker: bytes = b""  # what was passed on from the daemon
    held: bytes = b""  # what the daemon sent while holding: dropped

    def acks(self) -> int:
        """PUBACKs the daemon sent through this link (fixed header 0x40, remaining length 2)."""
        return self.to_broker.count(b"\x40\x02")

    def held_acks(self) -> int:
        return self.held.count(b"\x40\x02")


class AckCutter:
    """A TCP relay between the daemon and Mosquitto: `hold_acks()`, then `cut()`."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        link = _Link(writer, b_writer)
        self.links.append(link)
        await asyncio.gather(self._pump(reader, b_writer, link, to_broker=True),
                             self._pump(b_reader, writer, link, to_broker=False))

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link,
                    *, to_broker: bool) -> None:
        try:
            while data := await src.read(65536):
                if to_broker and link.holding:
                    link.held += data
                    continue
                if to_broker:
                    link.to_broker += data
                else:
                    link.from_broker += data
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()  # one side gone: the whole link goes, as with a real cut

    def hold_acks(self) -> None:
        for link in self.links:
            link.holding = True

    def cut(self) -> list[_Link]:
        """Abort every open link (the daemon reconnects through a new one)."""
        cut = list(self.links)
        for link in cut:
            link.daemon.transport.abort()
            link.broker.transport.abort()
        return cut

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def cutter(stack: Stack) -> AsyncIterator[AckCutter]:
    relay = AckCutter(stack.broker.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


RULES = (threshold_rule("vib-3-of-5", "vibration", extra="count = 3\nof_last_samples = 5")
         + threshold_rule("temp-high", "temperature", above=80, clear_below=70) + FENCE_RULE)


async def test_a_broker_redelivery_after_a_reconnect_is_evaluated_once(
        stack: Stack, cutter: AckCutter) -> None:
    port = free_port()
    source = stack.mqtt_source().replace(f"port = {stack.broker.port}", f"port = {cutter.port}")
    stack.write_config(RULES, http_port=port, source=source)
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    t = time.time()
    for i, v in enumerate([8.0, 3.0, 3.0]):
        stack.publish("pump-1", "vibration", v, ts=t + i * 0.1)
    await stack.wait_evaluated(port, 3)
    await wait_for(lambda: sum(link.acks() for link in cutter.links) >= 3, 10,
                   "the daemon to acknowledge the first three messages")
    cutter.hold_acks()
    fourth = orjson.dumps({"value": 8.0, "ts": t + 0.3})
    stack.publish("pump-1", "vibration", 8.0, raw=fourth)
    stack.publish("pump-1", "temperature", 90.0, ts=t + 0.3)  # a plain threshold, also resent
    await stack.wait_evaluated(port, 5)  # evaluated and committed; the acks are held back
    await wait_for(lambda: sum(link.held_acks() for link in cutter.links) >= 2, 10,
                   "the daemon's acknowledgements of both to be dropped by the relay")
    old = cutter.cut()

    def redelivered() -> bool:
        return any(fourth in link.from_broker for link in cutter.links if link not in old)

    await wait_for(redelivered, 20, "the broker to redeliver the fourth message after the "
                   "daemon reconnected")
    stack.publish("pump-1", "vibration", 3.0, ts=t + 0.4)
    await stack.fence(port)
    rules = [r["body"]["rule_id"] for r in stack.requests_for("pump-1")]
    assert rules.count("vib-3-of-5") == 0, (
        f"expected 0 requests from the 3-of-5 rule for 8, 3, 3, 8 (redelivered), 3, got "
        f"{rules.count('vib-3-of-5')}: the broker's redelivery was evaluated again")
    await expect_exactly(1, lambda: [r for r in stack.requests_for("pump-1")
                                     if r["body"]["rule_id"] == "temp-high"],
                         "request from the plain threshold (its sample redelivered)", 0,
                         lambda: stack.wait_drained(port))
