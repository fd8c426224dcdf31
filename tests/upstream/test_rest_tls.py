"""RestSink over TLS against the simulator with a throw-away CA (made with `cryptography`).

A certificate the sink does not trust is classified RETRY, not REJECTED: it is a configuration
or PKI problem of the whole link, not of the record, and dead-lettering would lose the request.
The reason says "certificate verify failed" so the operator sees it in the status and the log.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.model import Outcome
from simulators.cmms import CmmsSimulator
from tests.upstream.conftest import SinkFactory, record


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(name: str, ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name | None,
           key: ec.EllipticCurvePrivateKey, *, is_ca: bool, server: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name or subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             ca_key.public_key()), critical=False))
    if is_ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("PlantBridge test CA", ca_key, None, ca_key, is_ca=True, server=False)
    files = Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                d / "client.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, server in ((files.server_cert, files.server_key, True),
                                        (files.client_cert, files.client_key, False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue("127.0.0.1" if server else "plantbridge", ca_key, ca.subject, key,
                      is_ca=False, server=server)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return files


async def _tls_sim(pki: Pki, require_client_cert: bool) -> CmmsSimulator:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)
    sim = CmmsSimulator(ssl_context=ctx)
    await sim.start()
    return sim


@pytest.fixture
async def tls_sim(pki: Pki) -> AsyncIterator[CmmsSimulator]:
    sim = await _tls_sim(pki, require_client_cert=False)
    yield sim
    await sim.stop()


async def test_untrusted_certificate_is_retry_with_plain_reason(
        tls_sim: CmmsSimulator, make_sink: SinkFactory) -> None:
    assert tls_sim.url.startswith("https://")
    [d] = await make_sink(tls_sim.url).send([record()])
    assert d.outcome is Outcome.RETRY
    assert d.reason.startswith("certificate verify failed")
    assert tls_sim.requests == []


async def test_custom_ca_is_trusted(tls_sim: CmmsSimulator, make_sink: SinkFactory,
                                    pki: Pki) -> None:
    sink = make_sink(tls_sim.url, tls={"ca_file": str(pki.ca)})
    [d] = await sink.send([record()])
    assert d.outcome is Outcome.ACCEPTED and d.receipt == "MR-000001"
    await sink.check()


async def test_verify_off_accepts_anything(tls_sim: CmmsSimulator,
                                           make_sink: SinkFactory) -> None:
    [d] = await make_sink(tls_sim.url, tls={"verify": False}).send([record()])
    assert d.outcome is Outcome.ACCEPTED


async def test_client_certificate(pki: Pki, make_sink: SinkFactory) -> None:
    sim = await _tls_sim(pki, require_client_cert=True)
    try:
        without = make_sink(sim.url, tls={"ca_file": str(pki.ca)})
        [d] = await without.send([record()])
        assert d.outcome is Outcome.RETRY and sim.requests == []
        with_cert = make_sink(sim.url, tls={"ca_file": str(pki.ca),
                                            "cert_file": str(pki.client_cert),
                                            "key_file": str(pki.client_key)})
        [d] = await with_cert.send([record()])
        assert d.outcome is Outcome.ACCEPTED
    finally:
        await sim.stop()
