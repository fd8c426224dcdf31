"""Fixtures for the nats upstream: a real nats-server with JetStream and a stream to fill."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from tests.upstream.nats.natsserver import NatsServer, require_nats_server

STREAM = "EVENTS"
DAY = 86400.0


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    require_nats_server()
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    """A plain client of the test's own (to create streams and read what arrived)."""
    client = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        yield client
    finally:
        await client.close()


async def add_stream(nc: NatsClient, name: str = STREAM, subjects: list[str] | None = None,
                     duplicate_window: float = 7 * DAY) -> None:
    await nc.jetstream().add_stream(StreamConfig(
        name=name, subjects=subjects or ["plantbridge.>"], duplicate_window=duplicate_window))
