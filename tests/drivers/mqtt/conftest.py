"""MQTT suite fixtures: a raw publisher, a batch collector and a source factory."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.driver import MqttSource
from gateway.model import Sample, SampleBatch, SourceState
from simulators.mqtt_plant import MqttPlantPublisher
from simulators.scenario import SCENARIOS
from tests.harness import Mosquitto, free_port, mosquitto_binary, port_open, wait_for, wait_for_sync


def source_config(port: int, **overrides: Any) -> MqttSourceConfig:
    raw: dict[str, Any] = {
        "name": "test-mqtt", "port": port, "reconnect_initial_seconds": 0.1,
        "reconnect_max_seconds": 0.5, "connect_timeout_seconds": 3,
        "subscriptions": [{"pattern": "plant/+asset/+signal", "timestamp_path": "ts",
                           "quality_path": "quality"}],
    }
    raw.update(overrides)
    return MqttSourceConfig.model_validate(raw)


@dataclass
class Collector:
    """Consumes `batches()` in a task; acks each batch (after `delay`) unless `auto_ack` is off."""

    source: MqttSource
    auto_ack: bool = True
    delay_seconds: float = 0.0
    batches: list[SampleBatch] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for batch in self.source.batches():
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)  # a slow consumer, on purpose
            self.batches.append(batch)
            if self.auto_ack and batch.ack is not None:
                batch.ack()

    def start(self) -> Collector:
        self.task = asyncio.create_task(self._consume())
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    @property
    def samples(self) -> list[Sample]:
        return [s for b in self.batches for s in b.samples]


@contextlib.asynccontextmanager
async def running_source(
        cfg: MqttSourceConfig, *, auto_ack: bool = True, delay_seconds: float = 0.0,
        wait_connected: bool = True) -> AsyncIterator[tuple[MqttSource, Collector]]:
    source = MqttSource(cfg)  # in process, whatever `workers` says: tests look inside it
    async with source:
        collector = Collector(source, auto_ack, delay_seconds).start()
        try:
            if wait_connected:
                await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10,
                               "source connected")
            yield source, collector
        finally:
            await collector.stop()


@pytest.fixture
async def publisher(mosquitto: Mosquitto) -> AsyncIterator[MqttPlantPublisher]:
    async with MqttPlantPublisher("127.0.0.1", mosquitto.port, SCENARIOS["steady"]) as pub:
        yield pub


@dataclass
class SecureBroker:
    """A Mosquitto that requires a username and password (no anonymous access)."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, username: str, password: str) -> None:
        pwfile = self.workdir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), username, password],
                       check=True, capture_output=True)
        pwfile.chmod(0o600)
        conf = self.workdir / "secure.conf"
        # `user root`: as root, Mosquitto would drop to its own user, which cannot read the
        # password file in pytest's private tmp dir (ignored when not run as root).
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
                        f"password_file {pwfile}\npersistence false\nuser root\n")
        with open(self.workdir / "secure.log", "ab") as out:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for_sync(lambda: port_open(self.port), 10, "secure mosquitto")
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    broker = SecureBroker(free_port(), tmp_path)
    broker.start("gateway", "s3cret-pw")
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class TlsBroker:
    """A Mosquitto with a plain listener (publishers) and a TLS listener (the source)."""

    port: int
    tls_port: int
    ca_file: Path


def _make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
        "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    _make_certs(tmp_path)
    broker = TlsBroker(free_port(), free_port(), tmp_path / "ca.pem")
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"per_listener_settings false\nallow_anonymous true\npersistence false\nuser root\n"
        f"listener {broker.port} 127.0.0.1\n"
        f"listener {broker.tls_port} 127.0.0.1\ncafile {tmp_path / 'ca.pem'}\n"
        f"certfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n")
    with open(tmp_path / "tls.log", "ab") as out:
        proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_sync(lambda: port_open(broker.port) and port_open(broker.tls_port), 10,
                      "TLS mosquitto")
        yield broker
    finally:
        proc.terminate()
        proc.wait(5)
