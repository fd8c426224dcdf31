"""Fixtures for the upstream suite: the CMMS simulator, outbox records and sinks that get closed."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from gateway.messages import messages_for
from gateway.model import (
    MessageKind,
    OutboxRecord,
    RequestDetails,
    Transition,
    TransitionKind,
)
from gateway.upstream.rest import RestSink, RestSinkConfig
from simulators.cmms import CmmsSimulator

_ids = itertools.count(1)


def transition(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
               episode: str = "ep-1") -> Transition:
    return Transition(kind=kind, rule_id="vib-high", asset=asset, signal="vibration",
                      episode_id=episode, severity=2, value=7.4, ts=1_790_000_000.0,
                      reason="vibration 7.4 above 7.1 for 5 s",
                      request=RequestDetails(title="{asset}: vibration high", priority=2))


def record(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
           episode: str = "ep-1", upstream_ref: str | None = None, sink: str = "cmms",
           body: dict[str, Any] | None = None, created_at: float | None = None) -> OutboxRecord:
    """An outbox record built the way the pipeline builds them (gateway.messages)."""
    msg = messages_for(transition(kind, asset, episode), [sink], "site-a")[0]
    msg = replace(msg, body=msg.body if body is None else body,
                  created_at=msg.created_at if created_at is None else created_at)
    return OutboxRecord(id=next(_ids), message=msg, attempts=0, upstream_ref=upstream_ref)


def status_record(upstream_ref: str | None, asset: str = "pump-1",
                  episode: str = "ep-1") -> OutboxRecord:
    rec = record(TransitionKind.CLEARED, asset, episode, upstream_ref)
    assert rec.message.kind is MessageKind.STATUS_UPDATE
    return rec


SinkFactory = Callable[..., RestSink]


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    s = CmmsSimulator(api_key="test-key")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    """`make_sink(base_url, **config)`: a RestSink with bearer auth "test-key" by default and
    no lookup before retries (tests of reconciliation turn it on)."""
    made: list[RestSink] = []

    def make(base_url: str, **over: Any) -> RestSink:
        raw: dict[str, Any] = {"type": "rest", "name": "cmms", "base_url": base_url,
                               "auth": {"kind": "bearer", "token": {"value": "test-key"}},
                               "total_timeout_seconds": 5.0, "connect_timeout_seconds": 2.0,
                               "reconcile": "off"}
        sink = RestSinkConfig.model_validate(raw | over).build()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()
