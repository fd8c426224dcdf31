"""The SAP PM sink over TLS: an untrusted certificate is retried with a plain reason (a link
problem, not the record's), and a configured CA is trusted."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.model import Outcome
from simulators.sap_pm import SapPmSimulator
from tests.upstream.sap_pm.conftest import EQUIPMENT, SinkFactory, record


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA), and its key."""
    d = tmp_path_factory.mktemp("sap-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s4hana.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = d / "server.pem", d / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


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
