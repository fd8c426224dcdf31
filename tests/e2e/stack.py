"""A whole PlantBridge on loopback: real Mosquitto, the CMMS simulator, the real daemon.

The daemon runs in-process (`start_daemon`) or as a real subprocess (`spawn_daemon`) for
SIGKILL trials. Telemetry is published with paho like a plant would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway import config as config_mod
from gateway.daemon import Daemon
from simulators.cmms import CmmsSimulator
from tests.harness import Mosquitto, free_port, wait_for, wait_for_sync

API_KEY = "e2e-key"

VIBRATION_RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = {on_delay}
off_delay_seconds = {off_delay}
severity = 2
title = "High vibration on {{asset}}"
"""


# A source's valid range for vibration (gateway/valid_range.py): append to `mqtt_source()`.
VIBRATION_RANGE = """
[[sources.valid_ranges]]
signal = "vibration"
asset_pattern = "pump-*"
min = 0.0
max = 50.0
"""


def vibration_rule(on_delay: float = 0.3, off_delay: float = 0.3) -> str:
    return VIBRATION_RULE.format(on_delay=on_delay, off_delay=off_delay)


@dataclass
class Stack:
    tmp: Path
    broker: Mosquitto
    sim: CmmsSimulator
    daemon: Daemon | None = None
    task: asyncio.Task[None] | None = None
    proc: subprocess.Popen[bytes] | None = None
    _pub: mqtt.Client | None = field(default=None, repr=False)
    _fences: int = field(default=0, repr=False)
    # Put first on the spawned daemon's PYTHONPATH: a `sitecustomize.py` there runs in the
    # child before the daemon (fault injection into the real process: tests/e2e/test_rule_bug.py).
    child_path: Path | None = None

    # --- config -----------------------------------------------------------------------------

    def mqtt_source(self) -> str:
        return f"""
[[sources]]
type = "mqtt"
name = "plant"
host = "127.0.0.1"
port = {self.broker.port}
client_id = "plantbridge-e2e"
reconnect_initial_seconds = 0.1
reconnect_max_seconds = 0.5

[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
qos = 1
format = "json"
value_path = "value"
timestamp_path = "ts"
"""

    def rest_upstream(self) -> str:
        return f"""
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{self.sim.url}"
auth = {{ kind = "bearer", token = {{ value = "{API_KEY}" }} }}
connect_timeout_seconds = 1
total_timeout_seconds = 2
"""

    def write_config(self, rules: str, *, extra: str = "", forwarding: str = "",
                     http_port: int = 0, source: str | None = None,
                     upstream: str | None = None) -> Path:
        (self.tmp / "rules.d").mkdir(exist_ok=True)
        (self.tmp / "rules.d" / "rules.toml").write_text(rules)
        path = self.tmp / "plantbridge.toml"
        path.write_text(f"""
[gateway]
site = "e2e"
state_dir = "{self.tmp / 'state'}"

[http]
port = {http_port}

[rules]
files = ["rules.d/*.toml"]
tick_seconds = 0.1

[forwarding]
retry_initial_seconds = 0.1
retry_max_seconds = 0.5
breaker_failures = 1000
idle_poll_seconds = 0.1
{forwarding}
{self.mqtt_source() if source is None else source}
{self.rest_upstream() if upstream is None else upstream}
{extra}
""")
        return path

    # --- daemon -----------------------------------------------------------------------------

    async def start_daemon(self) -> Daemon:
        loaded = config_mod.load(self.tmp / "plantbridge.toml")
        self.daemon = Daemon(loaded)
        self.task = asyncio.create_task(self.daemon.run(), name="daemon-under-test")
        await wait_for(lambda: self.daemon is not None and (self.daemon.ready.is_set()
                                                            or self.task.done()),  # type: ignore[union-attr]
                       15, "daemon ready")
        if self.task.done():
            self.task.result()
        await self.wait_subscribed()
        return self.daemon

    async def wait_subscribed(self) -> None:
        d = self.daemon
        assert d is not None
        await wait_for(lambda: all(s.health().state == "connected"
                                   for _, s in d.sources.values()), 15, "sources connected")

    async def stop_daemon(self) -> None:
        if self.daemon is not None and self.task is not None:
            self.daemon.request_stop()
            await asyncio.wait_for(self.task, 30)
        self.daemon = None
        self.task = None

    def spawn_daemon(self) -> subprocess.Popen[bytes]:
        log = open(self.tmp / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.child_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.child_path), str(Path(__file__).resolve().parents[2]),
                 *filter(None, [os.environ.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config",
             str(self.tmp / "plantbridge.toml")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        return self.proc

    async def subprocess_status(self, port: int) -> dict[str, Any] | None:
        """The spawned daemon's /status, or None while it does not answer. An answer that is
        not a daemon's status is None too: another test's server may hold the port (a free
        port is only free until someone binds it), and the daemon then fails to start."""
        try:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{port}/status",
                    timeout=aiohttp.ClientTimeout(total=2)) as r:
                body = await r.json(content_type=None) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return dict(body) if isinstance(body, dict) and "sources" in body else None

    async def wait_subprocess_up(self, port: int) -> None:
        """Until the spawned daemon answers and every source is connected; fails if it died."""
        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited:\n{self.daemon_log()[-3000:]}")
            st = await self.subprocess_status(port)
            return st is not None and all(s["state"] == "connected" for s in st["sources"])

        await wait_for(up, 30, "daemon subprocess up and subscribed")

    def power_cut(self) -> None:
        """SIGKILL the daemon's whole process group: nothing gets to finish or flush."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    async def status_now(self, port: int) -> dict[str, Any]:
        """The spawned daemon's /status, waiting (bounded) until it answers."""
        got: list[dict[str, Any]] = []

        async def answers() -> bool:
            st = await self.subprocess_status(port)
            if st is not None:
                got.append(st)
            return st is not None

        await wait_for(answers, 15, "the daemon's /status to answer")
        return got[-1]

    async def wait_evaluated(self, port: int, samples: int) -> dict[str, Any]:
        """Until the spawned daemon has taken `samples` samples since it started. The pipeline
        counts a sample as it evaluates it, a moment before its group commits."""
        got: list[dict[str, Any]] = []

        async def counted() -> bool:
            st = await self.subprocess_status(port)
            if st is not None and st["pipeline"].get("samples", 0) >= samples:
                got.append(st)
                return True
            return False

        await wait_for(counted, 20, f"the daemon to take {samples} sample(s)")
        return got[-1]

    async def wait_drained(self, port: int, timeout: float = 20) -> None:
        """Until the spawned daemon's outbox holds nothing undelivered."""
        async def quiet() -> bool:
            st = await self.subprocess_status(port)
            return st is not None and not any(st["outbox"]["pending"].values())

        await wait_for(quiet, timeout, "the outbox drained")

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM the spawned daemon and wait for it: the clean stop of `systemctl stop`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, timeout)
        return self.proc.returncode

    async def restart_subprocess(self, port: int, how: str) -> float:
        """Stop the spawned daemon — "kill" (SIGKILL of its group) or "term" (SIGTERM, which must
        exit 0) — start it again and wait until it is up. Returns the wall time it was up."""
        if how == "kill":
            self.power_cut()
        elif how == "term":
            code = await self.terminate()
            assert code == 0, f"SIGTERM exit code {code}:\n{self.daemon_log()[-2000:]}"
        else:
            raise ValueError(f"restart how={how!r}: 'kill' or 'term'")
        self.spawn_daemon()
        await self.wait_subprocess_up(port)
        return time.time()

    async def fence(self, port: int) -> None:
        """Publish a fence sample (a rule must raise for it: tests.e2e.never_twice.FENCE_RULE)
        and wait until its request
        arrived and the outbox drained. One MQTT connection keeps order, so every sample
        published before it was evaluated, committed and delivered: "nothing happened" can then
        be checked without counting samples (a skipped resend may not count as one)."""
        self._fences += 1
        asset = f"fence-{self._fences}"
        self.publish(asset, "fence", 1.0)
        await wait_for(lambda: bool(self.requests_for(asset)), 20, f"the request of {asset}")
        await self.wait_drained(port)

    async def spawn_up(self, rules: str, source: str | None = None) -> int:
        """Write a config with `rules` (and `source` instead of the MQTT one) and a free status
        port, spawn the daemon, wait until it is subscribed. Returns the status port."""
        for attempt in range(3):
            port = free_port()
            self.write_config(rules, http_port=port, source=source)
            seen = len(self.daemon_log())
            self.spawn_daemon()
            try:
                await self.wait_subprocess_up(port)
                return port
            except AssertionError:
                # Seen in CI: another test bound the port between free_port() and the daemon's
                # bind (its server answered /status). Only that is retried, with a new port.
                if attempt == 2 or "address already in use" not in self.daemon_log()[seen:]:
                    raise
        raise AssertionError("unreachable")

    def spawn_cli(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Another `python -m gateway.cli ...` process (not `self.proc`), output to `log_name`."""
        log = open(self.tmp / log_name, "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        return proc

    def daemon_log(self) -> str:
        p = self.tmp / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # --- the plant ------------------------------------------------------------------------

    def publisher(self) -> mqtt.Client:
        if self._pub is None:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="e2e-plant")
            c.connect("127.0.0.1", self.broker.port)
            c.loop_start()
            wait_for_sync(c.is_connected, 10, "publisher connected")
            self._pub = c
        return self._pub

    def publish(self, asset: str, signal: str, value: Any, ts: float | None = None,
                raw: bytes | None = None) -> None:
        payload = raw if raw is not None else orjson.dumps(
            {"value": value, "ts": time.time() if ts is None else ts})
        info = self.publisher().publish(f"plant/{asset}/{signal}", payload, qos=1)
        info.wait_for_publish(10)

    async def play(self, asset: str, values: list[float], step_seconds: float = 0.05,
                   signal: str = "vibration") -> None:
        """Publish a sequence in real time (rules debounce on sample time)."""
        for v in values:
            self.publish(asset, signal, v)
            await asyncio.sleep(step_seconds)

    async def play_many(self, assets: list[str], values: list[float],
                        step_seconds: float = 0.05) -> None:
        for v in values:
            for asset in assets:
                self.publish(asset, "vibration", v)
            await asyncio.sleep(step_seconds)

    async def episode(self, asset: str, hold_seconds: float = 0.6) -> None:
        """Normal, above the alarm long enough to raise, then normal long enough to clear."""
        n = max(2, int(hold_seconds / 0.05) + 4)
        await self.play(asset, [3.0] * 2 + [8.0] * n + [3.0] * n)

    def close(self) -> None:
        if self._pub is not None:
            self._pub.loop_stop()
            self._pub.disconnect()
            self._pub = None

    # --- what arrived upstream ------------------------------------------------------------

    def requests_for(self, asset: str) -> list[dict[str, Any]]:
        return [r for r in self.sim.requests if r["body"]["asset"] == asset]

    def updates_for(self, asset: str) -> list[dict[str, Any]]:
        ids = {r["id"] for r in self.requests_for(asset)}
        return [u for u in self.sim.status_updates if u["request_id"] in ids]

    async def settled(self, timeout: float = 20) -> None:
        """Wait until the outbox holds nothing undelivered: nothing more can arrive upstream."""
        d = self.daemon
        assert d is not None and d.outbox is not None
        outbox = d.outbox

        async def empty() -> bool:
            st = await outbox.stats(time.time())
            return not any(st.pending.values()) and d.pipeline is not None \
                and d.pipeline.backlog == 0

        await wait_for(empty, timeout, "outbox drained")


def assert_exactly_once(sim: CmmsSimulator) -> None:
    """Every episode (dedup key) has one request and at most one clear, keys never repeat."""
    refs = [r["external_ref"] for r in sim.requests]
    assert len(refs) == len(set(refs)), f"duplicate requests upstream: {refs}"
    per_request: dict[str, int] = {}
    for u in sim.status_updates:
        per_request[u["request_id"]] = per_request.get(u["request_id"], 0) + 1
    assert all(n == 1 for n in per_request.values()), f"duplicate clears: {per_request}"
