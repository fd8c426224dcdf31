"""The Maximo sink over TLS: a CA we were told to trust works, an unknown one is RETRY with a
plain reason (a PKI problem of the link, not of the record), verify = false is possible."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.model import Outcome
from simulators.maximo import MaximoSimulator
from tests.harness import self_signed_localhost
from tests.upstream.maximo.conftest import SinkFactory, raise_record


@pytest.fixture
async def tls_maximo(tmp_path: Path) -> AsyncIterator[tuple[MaximoSimulator, Path]]:
    cert, key = self_signed_localhost(tmp_path, "maximo-sim")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    async with MaximoSimulator(ssl_context=ctx) as sim:
        yield sim, cert


async def test_trusted_ca_accepted(tls_maximo: tuple[MaximoSimulator, Path],
                                   make_sink: SinkFactory) -> None:
    sim, cert = tls_maximo
    assert sim.url.startswith("https://")
    [d] = await make_sink(sim.url, tls={"ca_file": str(cert)}).send([raise_record()])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert len(sim.tickets) == 1


async def test_untrusted_certificate_is_retried_with_a_plain_reason(
        tls_maximo: tuple[MaximoSimulator, Path], make_sink: SinkFactory) -> None:
    sim, _ = tls_maximo
    [d] = await make_sink(sim.url).send([raise_record()])
    assert d.outcome is Outcome.RETRY and "certificate verify failed" in d.reason
    assert sim.tickets == []


async def test_verification_can_be_turned_off(tls_maximo: tuple[MaximoSimulator, Path],
                                              make_sink: SinkFactory) -> None:
    sim, _ = tls_maximo
    [d] = await make_sink(sim.url, tls={"verify": False}).send([raise_record()])
    assert d.outcome is Outcome.ACCEPTED, d.reason
