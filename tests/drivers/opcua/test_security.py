"""Secure channels against the simulator: working policies, untrusted certificates either way."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua import certs
from gateway.model import SourceState
from simulators.opcua_plant import generate_certificate
from tests.drivers.opcua.support import SimFactory, plant_config, running
from tests.harness import wait_for

GATEWAY_URI = "urn:plantbridge:gateway"


def client_cert(directory: Path) -> tuple[Path, Path]:
    """Made the way a technician would: `python -m drivers.opcua.certs`."""
    certs.main(["--uri", GATEWAY_URI, "--out", str(directory)])
    key = directory / "gateway.pem"
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"
    return directory / "gateway.der", key


def security(cert: Path, key: Path, policy: str = "Basic256Sha256",
             mode: str = "SignAndEncrypt", trusted: Path | None = None) -> dict[str, Any]:
    sec: dict[str, Any] = {"policy": policy, "mode": mode, "certificate_file": str(cert),
                           "private_key_file": str(key)}
    if trusted is not None:
        sec["trusted_server_certs_dir"] = str(trusted)
    return sec


@pytest.mark.parametrize(("policy", "mode"), [
    ("Basic256Sha256", "SignAndEncrypt"),
    ("Aes128_Sha256_RsaOaep", "Sign"),
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
])
async def test_secure_channel_with_trusted_server(make_sim: SimFactory, tmp_path: Path,
                                                  policy: str, mode: str) -> None:
    cert, key = client_cert(tmp_path / "own")
    trusted_clients = tmp_path / "server-trusts"
    trusted_clients.mkdir()
    shutil.copy(cert, trusted_clients)
    sim = await make_sim(security=True, cert_dir=tmp_path / "sim",
                         trusted_client_certs_dir=trusted_clients)
    assert sim.certificate_file is not None
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(sim.certificate_file, trusted)
    cfg = plant_config(sim.endpoint, security=security(cert, key, policy, mode, trusted))
    async with running(cfg) as (source, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 2, 15, "data over "
                       f"{policy}/{mode}")
        assert source.health().state is SourceState.CONNECTED


async def test_untrusted_server_certificate_fails_clearly(
        make_sim: SimFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="drivers.opcua")
    cert, key = client_cert(tmp_path / "own")
    sim = await make_sim(security=True, cert_dir=tmp_path / "sim")
    trusted = tmp_path / "trusted"  # trusts some other server only
    generate_certificate(trusted, "other-server", "urn:other", ExtendedKeyUsageOID.SERVER_AUTH)
    (trusted / "other-server.pem").unlink()
    cfg = plant_config(sim.endpoint, security=security(cert, key, trusted=trusted))
    async with running(cfg) as (source, got):
        await wait_for(lambda: source.failures >= 2, 15, "repeated refused attempts")
        health = source.health()
        assert health.state is SourceState.FAILED
        assert "BadCertificateUntrusted" in health.detail
        assert got.samples == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR
              and r.name.startswith("drivers.opcua")]
    assert len(errors) == 1 and "BadCertificateUntrusted" in errors[0].getMessage()


async def test_server_refusing_our_certificate_fails_clearly(make_sim: SimFactory,
                                                             tmp_path: Path) -> None:
    cert, key = client_cert(tmp_path / "own")
    strangers = tmp_path / "server-trusts"  # the server trusts another client only
    generate_certificate(strangers, "stranger", "urn:stranger", ExtendedKeyUsageOID.CLIENT_AUTH)
    (strangers / "stranger.pem").unlink()
    sim = await make_sim(security=True, cert_dir=tmp_path / "sim",
                         trusted_client_certs_dir=strangers)
    cfg = plant_config(sim.endpoint, security=security(cert, key))
    async with running(cfg) as (source, got):
        await wait_for(lambda: source.failures >= 2, 15, "repeated refused attempts")
        health = source.health()
        print(f"\nserver refusing our certificate: {health.state} {health.detail}")
        assert health.state is SourceState.FAILED
        assert "Bad" in health.detail
        assert got.samples == []


async def test_username_and_password(make_sim: SimFactory, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sim = await make_sim(users={"gateway": "s3cret"})
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret\n")
    good = {"kind": "username", "username": "gateway", "password": {"file": str(secret_file)}}
    async with running(plant_config(sim.endpoint, auth=good)) as (source, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 2, 10, "data as gateway")
        assert source.health().state is SourceState.CONNECTED

    monkeypatch.setenv("OPCUA_TEST_PW", "wrong")
    bad = {"kind": "username", "username": "gateway", "password": {"env": "OPCUA_TEST_PW"}}
    async with running(plant_config(sim.endpoint, auth=bad)) as (source, got):
        await wait_for(lambda: source.failures >= 2, 10, "refused logins")
        health = source.health()
        print(f"\nwrong password: {health.state} {health.detail}")
        assert health.state is SourceState.FAILED
        assert got.samples == []

    monkeypatch.delenv("OPCUA_TEST_PW")
    async with running(plant_config(sim.endpoint, auth=bad)) as (source, _):
        await wait_for(lambda: source.failures >= 1, 10, "missing secret reported")
        assert source.health().state is SourceState.FAILED
        assert "OPCUA_TEST_PW is not set" in source.health().detail

    anonymous = plant_config(sim.endpoint)
    async with running(anonymous) as (source, _):
        await wait_for(lambda: source.failures >= 1, 10, "anonymous refused")
        assert source.health().state is SourceState.FAILED
