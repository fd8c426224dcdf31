"""A fleet on loopback for the relay tests: nats-server(s), the CMMS simulator, relay processes.

Relays run as real subprocesses (`python -m gateway.cli relay`) so they can be killed with
SIGKILL; events go in through the real nats upstream sink.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js.api import StreamConfig

from gateway.messages import messages_for
from gateway.model import OutboxRecord, RequestDetails, Transition, TransitionKind
from simulators.cmms import CmmsSimulator
from tests.harness import free_port, wait_for

API_KEY = "fleet-key"
STREAM = "PLANTBRIDGE"


def transition(kind: TransitionKind, asset: str, episode: str, ts: float) -> Transition:
    return Transition(kind=kind, rule_id="vib-high", asset=asset, signal="vibration",
                      episode_id=episode, severity=2, value=7.4, ts=ts,
                      reason="vibration 7.4 above 7.1",
                      request=RequestDetails(title="{asset}: vibration high", priority=2))


def episode_records(n: int, sink: str = "backbone", site: str = "site-a",
                    ts: float = 1_790_000_000.0, prefix: str = "ep") -> list[OutboxRecord]:
    """n episodes on n assets: a raise and its clear each, in the order a gateway sends them."""
    out: list[OutboxRecord] = []
    for i in range(n):
        for kind in (TransitionKind.RAISED, TransitionKind.CLEARED):
            t = transition(kind, f"pump-{i}", f"{prefix}-{i}", ts + i)
            msg = messages_for(t, [sink], site)[0]
            out.append(OutboxRecord(id=len(out) + 1, message=msg, attempts=0))
    return out


async def add_hub_stream(url: str, replicas: int = 1) -> None:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        await nc.jetstream(timeout=10).add_stream(StreamConfig(
            name=STREAM, subjects=["plantbridge.>"], duplicate_window=7 * 86400.0,
            num_replicas=replicas))
    finally:
        await nc.close()


@dataclass
class RelayProc:
    tmp: Path
    name: str
    config: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.tmp / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "relay", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        p = self.tmp / f"{self.name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    async def status(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{self.port}/status",
                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                return dict(await r.json())
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"relay {self.name} exited:\n{self.log()[-3000:]}")
            st = await self.status()
            return st is not None and bool(st["ready"])

        await wait_for(ready, 30, f"relay {self.name} ready", interval=0.1)


@dataclass
class Fleet:
    tmp: Path
    servers: list[str]
    sim: CmmsSimulator
    relays: list[RelayProc] = field(default_factory=list)

    def relay(self, name: str, extra: str = "", **consumer: Any) -> RelayProc:
        """A relay's config (its `[consumer]` from the keywords, `extra` TOML appended) and
        its process, not started yet."""
        port = free_port()
        opts = {"stream": STREAM, "ack_wait_seconds": 5, "retry_initial_seconds": 0.2,
                "retry_max_seconds": 1} | consumer
        lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in opts.items())
        path = self.tmp / f"{name}.toml"
        servers = ", ".join(f'"{s}"' for s in self.servers)
        path.write_text(f"""
[relay]
name = "{name}"

[nats]
servers = [{servers}]
reconnect_wait_seconds = 0.2

[consumer]
{lines}

[http]
port = {port}

[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{self.sim.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
connect_timeout_seconds = 1
total_timeout_seconds = 2
{extra}
""")
        r = RelayProc(self.tmp, name, path, port)
        self.relays.append(r)
        return r

    def stop_all(self) -> None:
        for r in self.relays:
            r.kill()

    async def wait_delivered(self, episodes: int, timeout: float = 60) -> None:
        """Until every episode has its request and its clear at the simulator."""
        def done() -> bool:
            return len(self.sim.requests) >= episodes and len(
                self.sim.status_updates) >= episodes

        await wait_for(done, timeout, f"{episodes} requests and clears at the CMMS",
                       interval=0.1)


def assert_once_each(sim: CmmsSimulator, episodes: int) -> None:
    """One request per episode and one clear per request: nothing lost, nothing doubled."""
    refs = sorted(r["external_ref"] for r in sim.requests)
    assert len(refs) == len(set(refs)) == episodes, f"requests upstream: {refs}"
    per_request: dict[str, int] = {}
    for u in sim.status_updates:
        per_request[u["request_id"]] = per_request.get(u["request_id"], 0) + 1
    assert sorted(per_request) == sorted(r["id"] for r in sim.requests), per_request
    assert all(n == 1 for n in per_request.values()), f"duplicate clears: {per_request}"
