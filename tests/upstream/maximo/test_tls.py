"""The Maximo sink over TLS: a CA we were told to trust works, an unknown one is RETRY with a
plain reason (a PKI problem of the link, not of the record), verify = false is possible."""

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
from simulators.maximo import MaximoSimulator
from tests.upstream.maximo.conftest import SinkFactory, raise_record


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maximo-sim")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "sim.pem", directory / "sim.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def tls_maximo(tmp_path: Path) -> AsyncIterator[tuple[MaximoSimulator, Path]]:
    cert, key = self_signed(tmp_path)
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
