"""The SAP PM sink over TLS: an untrusted certificate is retried with a plain reason (a link
problem, not the record's), and a configured CA is trusted."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.model import Outcome
from simulators.sap_pm import SapPmSimulator
from tests.harness import self_signed_localhost
from tests.upstream.sap_pm.conftest import EQUIPMENT, SinkFactory, record


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), and its key."""
    return self_signed_localhost(tmp_path_factory.mktemp("sap-tls"), "s4hana.test")


@pytest.fixture
async def tls_sim(server_cert: tuple[Path, Path]) -> AsyncIterator[SapPmSimulator]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*server_cert)
    sim = SapPmSimulator(equipment=EQUIPMENT, ssl_context=ctx)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_untrusted_certificate_is_retry_with_plain_reason(
        tls_sim: SapPmSimulator, make_sink: SinkFactory) -> None:
    assert tls_sim.url.startswith("https://")
    (d,) = await make_sink(tls_sim.url).send([record()])
    assert d.outcome is Outcome.RETRY
    assert d.reason.startswith("certificate verify failed")
    assert tls_sim.notifications == []


async def test_configured_ca_is_trusted(tls_sim: SapPmSimulator, make_sink: SinkFactory,
                                        server_cert: tuple[Path, Path]) -> None:
    sink = make_sink(tls_sim.url, tls={"ca_file": str(server_cert[0])})
    await sink.check()
    (d,) = await sink.send([record()])
    assert (d.outcome, d.receipt) == (Outcome.ACCEPTED, "10000020")
