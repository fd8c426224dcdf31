"""An OPC UA server playing the shared plant scenarios (asyncua), for tests, demo and benchmarks.

Variables live in namespace `urn:plantbridge:sim` with string NodeIds `<asset>.<signal>`
(`pump-1.vibration`), under Objects/Plant/<asset>. Optional: N fast-changing load variables
(`load.<i>`), security with a generated self-signed certificate, a published
MaxMonitoredItemsPerCall. `stop()` then `start()` restarts on the same port and the scenario
clock keeps running, like a PLC that reboots mid-episode.

    python -m simulators.opcua_plant --port 4840 --scenario bearing-failure
    python -m simulators.opcua_plant --scenario steady --restart-every-seconds 20  # restarts
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self, cast

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua.certs import generate_certificate
from simulators import scenario as plant

__all__ = ["NAMESPACE_URI", "OpcUaPlantSimulator", "generate_certificate", "node_id_text"]

NAMESPACE_URI = "urn:plantbridge:sim"
APPLICATION_URI = "urn:plantbridge:sim:server"
SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
]
_BAD_SENSOR = ua.StatusCode(ua.UInt32(StatusCodes.BadSensorFailure))
log = logging.getLogger(__name__)


def _nid(ident: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(ident), ua.Int16(ns))


def _now() -> ua.DateTime:
    return cast(ua.DateTime, dt.datetime.now(dt.UTC))


def node_id_text(asset: str, signal: str) -> str:
    """The NodeId string a config uses for one plant variable."""
    return f"nsu={NAMESPACE_URI};s={asset}.{signal}"


class PasswordUsers(UserManager):
    """Only these users, by password; no anonymous access."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: InternalServer, username: str | None = None,
                 password: str | None = None, certificate: Any = None) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaPlantSimulator:
    """The plant on a real OPC UA endpoint. Use `async with` or `start()`/`stop()`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4840, scenario: str = "steady",
                 speed: float = 1.0, extra_variables: int = 0, extra_interval_ms: float = 100.0,
                 security: bool = False, cert_dir: Path | None = None,
                 trusted_client_certs_dir: Path | None = None,
                 max_monitored_items_per_call: int = 0, tick_ms: float = 100.0,
                 extra_namespaces: int = 0, users: Mapping[str, str] | None = None) -> None:
        self.host, self.port = host, port
        self.scenario = plant.get(scenario)
        self.speed = speed
        self.extra_variables = extra_variables
        self.extra_interval_ms = extra_interval_ms  # 0: as fast as the server can
        self.security = security
        self.trusted_client_certs_dir = trusted_client_certs_dir
        self.max_monitored_items_per_call = max_monitored_items_per_call
        self.tick_ms = tick_ms
        # Namespaces registered before ours: change it between restarts to move our index.
        self.extra_namespaces = extra_namespaces
        self.users = users  # username -> password; None: anonymous access
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if security and cert_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="opcua-sim-")
            cert_dir = Path(self._tmp.name)
        self.cert_dir = cert_dir
        self.certificate_file: Path | None = None
        self.private_key_file: Path | None = None
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._t0: float | None = None
        self.namespace_index = 0
        self.load_rounds = 0  # completed writes of every load variable

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/plantbridge/"

    def elapsed(self) -> float:
        """Scenario time in seconds (speed applied); keeps running across restarts."""
        return 0.0 if self._t0 is None else (time.monotonic() - self._t0) * self.speed

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def start(self) -> None:
        if self._server is not None:
            return
        server = Server(user_manager=PasswordUsers(self.users) if self.users else None)
        await server.init()
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        server.set_endpoint(self.endpoint)
        server.set_server_name("PlantBridge plant simulator")
        await server.set_application_uri(APPLICATION_URI)
        if self.security:
            await self._secure(server)
        for i in range(self.extra_namespaces):
            await server.register_namespace(f"urn:plantbridge:padding:{i}")
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        if self.max_monitored_items_per_call:
            limit = server.get_node(ua.NodeId(ua.Int32(
                ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall)))
            await limit.write_value(ua.Variant(self.max_monitored_items_per_call,
                                               ua.VariantType.UInt32))
        await self._build(server)
        await server.start()
        self._server = server
        if self._t0 is None:
            self._t0 = time.monotonic()
        await self._write_plant(server)
        self._tasks = [asyncio.create_task(self._play(server), name="opcua-sim-play")]
        if self.extra_variables:
            self._tasks.append(asyncio.create_task(self._load(server), name="opcua-sim-load"))

    async def stop(self) -> None:
        server, self._server = self._server, None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if server is not None:
            await server.stop()

    async def freeze_subscriptions(self) -> None:
        """Fault injection: subscriptions stop publishing (not even keep-alives), while the
        session and reads keep working, as seen on servers with a stuck publish engine."""
        if self._server is not None:
            for sub in list(self._server.iserver.subscription_service.subscriptions.values()):
                await sub.stop()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def _secure(self, server: Server) -> None:
        assert self.cert_dir is not None
        if self.certificate_file is None:
            self.certificate_file, self.private_key_file = generate_certificate(
                self.cert_dir, "plant-sim", APPLICATION_URI, ExtendedKeyUsageOID.SERVER_AUTH)
        assert self.private_key_file is not None
        await server.load_certificate(str(self.certificate_file))
        await server.load_private_key(str(self.private_key_file))
        server.set_security_policy(SECURE_POLICIES)
        if self.trusted_client_certs_dir is not None:
            store = TrustStore([self.trusted_client_certs_dir], [])
            await store.load()
            server.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT, store))

    async def _build(self, server: Server) -> None:
        ns = self.namespace_index
        root = await server.nodes.objects.add_folder(_nid("Plant", ns), ua.QualifiedName(
            "Plant", ns))
        for asset in plant.ASSETS:
            obj = await root.add_object(_nid(asset, ns), ua.QualifiedName(asset, ns))
            for signal in plant.SIGNALS:
                initial = ua.Variant(False) if signal == "running" else ua.Variant(0.0)
                await obj.add_variable(_nid(f"{asset}.{signal}", ns),
                                       ua.QualifiedName(signal, ns), initial)
        if self.extra_variables:
            # 100 variables per folder: asyncua's add-node cost grows with a parent's children.
            load = await root.add_folder(_nid("load", ns), ua.QualifiedName("load", ns))
            folder = load
            for i in range(self.extra_variables):
                if i % 100 == 0:
                    name = f"load.{i // 100}xx"
                    folder = await load.add_folder(_nid(name, ns), ua.QualifiedName(name, ns))
                await folder.add_variable(_nid(f"load.{i}", ns), ua.QualifiedName(f"{i}", ns),
                                          ua.Variant(0.0))

    async def _write_plant(self, server: Server) -> None:
        now = _now()
        ns = self.namespace_index
        for (asset, signal), value in self.scenario.values(self.elapsed()).items():
            node = _nid(f"{asset}.{signal}", ns)
            if value is None:
                dv = ua.DataValue(ua.Variant(), StatusCode=_BAD_SENSOR, SourceTimestamp=now,
                                  ServerTimestamp=now)
            else:
                variant = (ua.Variant(value >= 0.5) if signal == "running"
                           else ua.Variant(float(value)))
                dv = ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
            await server.write_attribute_value(node, dv)

    async def _play(self, server: Server) -> None:
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            await self._write_plant(server)

    async def _load(self, server: Server) -> None:
        """Write every load variable, round after round; 0 ms interval means flat out."""
        ns = self.namespace_index
        ids = [_nid(f"load.{i}", ns) for i in range(self.extra_variables)]
        n = 0
        while True:
            n += 1
            now = _now()
            for i, node in enumerate(ids):
                await server.write_attribute_value(node, ua.DataValue(
                    ua.Variant(float(n)), SourceTimestamp=now, ServerTimestamp=now))
                if i % 1000 == 999:
                    await asyncio.sleep(0)
            self.load_rounds = n
            await asyncio.sleep(self.extra_interval_ms / 1000)


async def _main(args: argparse.Namespace) -> None:
    sim = OpcUaPlantSimulator(args.host, args.port, args.scenario, args.speed,
                              args.extra_variables, args.extra_interval_ms,
                              security=args.security,
                              cert_dir=Path(args.cert_dir) if args.cert_dir else None,
                              max_monitored_items_per_call=args.max_monitored_items_per_call)
    async with sim:
        print(f"serving {sim.scenario.name!r} on {sim.endpoint} (namespace {NAMESPACE_URI})",
              flush=True)
        if sim.certificate_file is not None:
            print(f"server certificate: {sim.certificate_file}", flush=True)
        if not args.restart_every_seconds:
            await asyncio.Event().wait()
        while True:  # the "server restart" fault: down for a while, scenario clock runs on
            await asyncio.sleep(args.restart_every_seconds)
            await sim.stop()
            print(f"restart: down for {args.restart_down_seconds} s", flush=True)
            await asyncio.sleep(args.restart_down_seconds)
            await sim.start()
            print("restart: serving again", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m simulators.opcua_plant", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--scenario", default="steady", choices=sorted(plant.SCENARIOS))
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--extra-variables", type=int, default=0)
    p.add_argument("--extra-interval-ms", type=float, default=100.0)
    p.add_argument("--security", action="store_true")
    p.add_argument("--cert-dir", default=None)
    p.add_argument("--max-monitored-items-per-call", type=int, default=0)
    p.add_argument("--restart-every-seconds", type=float, default=0.0,
                   help="restart the server periodically (0: never)")
    p.add_argument("--restart-down-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
