"""Interop with an OPC UA stack we did not write: the node-opcua server from npm.

The peer (node_peer/server.js) is installed with `npm install` into a cache folder keyed by
its package.json, then started on a free port. Skipped only where node or npm are absent.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua.client.client import Client

from drivers.opcua import notifications
from drivers.opcua.notifications import Row, data_change_rows, decode_data_changes
from gateway.model import Quality, SourceState
from tests.drivers.opcua.support import plant_config, running
from tests.harness import drain, free_port, wait_for, wait_for_line

PEER_SRC = Path(__file__).parent / "node_peer"

pytestmark = [
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are needed for the node-opcua interop peer (Node.js not installed)"),
    # One xdist worker runs this whole module: the peer (module-scoped) then starts once.
    pytest.mark.xdist_group("node-opcua-peer"),
]


@dataclass
class NodePeer:
    endpoint: str
    namespace_uri: str

    def node(self, signal: str, **extra: Any) -> dict[str, Any]:
        return {"asset": "peer", "signal": signal,
                "node_id": f"nsu={self.namespace_uri};s=peer.{signal}", **extra}


def _installed_peer() -> Path:
    """node_modules for the peer, installed once per package.json version."""
    manifest = (PEER_SRC / "package.json").read_bytes()
    digest = hashlib.sha256(manifest).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plantbridge"
    target = cache / f"node-opcua-peer-{digest}"
    if not (target / "node_modules" / "node-opcua-server").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="node-peer-", dir=cache))
        shutil.copy(PEER_SRC / "package.json", staging)
        done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=staging, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm install of the node-opcua peer failed:\n{done.stderr}"
        if target.exists():  # another run won the race
            shutil.rmtree(staging)
        else:
            staging.rename(target)
    shutil.copy(PEER_SRC / "server.js", target / "server.js")
    return target


@pytest.fixture(scope="module")
def node_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodePeer]:
    home = _installed_peer()
    port = free_port()
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("node-peer-pki"))}
    proc = subprocess.Popen(["node", "server.js", str(port)], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reader = None
    try:
        # node-opcua makes its PKI on its first start: seconds, even on a busy 2-core box
        info = json.loads(wait_for_line(proc, lambda line: line.startswith(b"{"), 90,
                                        "node-opcua peer"))
        reader = drain(proc)  # nobody reads the peer's output from here on
        yield NodePeer(info["endpoint"], info["namespaceUri"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(10)  # the peer is gone, its pipe ended: the fd is closed only after
        if proc.stdout is not None:
            proc.stdout.close()


def _deltas(values: list[float | None]) -> list[float]:
    got = [v for v in values if v is not None]
    return [abs(b - a) for a, b in itertools.pairwise(got)]


async def test_subscribes_to_node_opcua(node_peer: NodePeer) -> None:
    nodes = [node_peer.node(s) for s in ("temperature", "vibration", "ramp", "running")]
    async with running(plant_config(node_peer.endpoint, nodes)) as (source, got):
        await wait_for(lambda: all(len(got.of("peer", s)) >= 3
                                   for s in ("temperature", "vibration", "ramp")),
                       15, "changes from node-opcua")
        await wait_for(lambda: len(got.of("peer", "running")) >= 1, 5, "the boolean")
        assert source.health().state is SourceState.CONNECTED
        assert got.of("peer", "running")[0].value == 1.0
        temps = got.of("peer", "temperature")
        assert all(s.quality is Quality.GOOD and s.value is not None
                   and 43.9 <= s.value <= 46.1 for s in temps)
        assert abs(temps[-1].source_ts - time.time()) < 5


@pytest.mark.parametrize(("deadband", "value", "min_step"),
                         [("absolute", 10.0, 10.0), ("percent", 5.0, 50.0)])
async def test_deadband_is_applied_by_the_server(node_peer: NodePeer, deadband: str,
                                                 value: float, min_step: float) -> None:
    nodes = [node_peer.node("ramp", deadband=deadband, deadband_value=value),
             {**node_peer.node("ramp"), "signal": "ramp-raw"}]
    async with running(plant_config(node_peer.endpoint, nodes)) as (_, got):
        await wait_for(lambda: len(got.of("peer", "ramp")) >= 3, 20, "filtered changes")
        filtered = _deltas([s.value for s in got.of("peer", "ramp")])
        raw = _deltas([s.value for s in got.of("peer", "ramp-raw")])
        assert min(filtered) >= min_step, filtered
        assert min(raw) < min_step  # without the filter, every small step arrives


async def test_polls_node_opcua(node_peer: NodePeer) -> None:
    nodes = [node_peer.node("ramp", mode="poll", poll_interval_ms=100)]
    async with running(plant_config(node_peer.endpoint, nodes)) as (_, got):
        await wait_for(lambda: len(got.of("peer", "ramp")) >= 5, 10, "polled reads")
        assert len({s.value for s in got.of("peer", "ramp")}) >= 3


async def test_values_dropped_in_the_servers_item_queue_are_counted(
        node_peer: NodePeer) -> None:
    # 20 changes per publish into a queue of 2: node-opcua sets the Overflow info bit
    nodes = [node_peer.node("ramp", queue_size=2, sampling_interval_ms=50,
                            publishing_interval_ms=1000)]
    async with running(plant_config(node_peer.endpoint, nodes)) as (source, got):
        await wait_for(lambda: source.health().rejected.get("server_queue_overflow", 0) >= 1,
                       10, "the overflow bit counted")
        assert all(s.quality is Quality.GOOD for s in got.of("peer", "ramp"))


async def test_node_opcua_times_read_in_part_6_order(node_peer: NodePeer) -> None:
    """node-opcua sends source picoseconds; asyncua 2.1 then reads every server time from the
    wrong bytes (1601-01-01). The driver's decoder (drivers/opcua/notifications.py) reads both
    times where Part 6 puts them."""
    client = Client(node_peer.endpoint, timeout=10)
    rows: list[Row] = []

    def keep(raw: bytes) -> list[Row]:
        rows.extend(got := data_change_rows(raw))
        return got

    async with client:
        idx = await client.get_namespace_index(node_peer.namespace_uri)
        sub = await client.create_subscription(100, None, queue_maxsize=0)
        assert decode_data_changes(client, sub)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(notifications, "data_change_rows", keep)
            await sub.subscribe_data_change(client.get_node(f"ns={idx};s=peer.temperature"))
            await wait_for(lambda: len(rows) >= 3, 10, "data changes from node-opcua")
    now = time.time()
    for _, value, status, source, server in rows:
        assert status == 0 and 43.9 <= value <= 46.1
        assert source is not None and server is not None
        assert abs(source - now) < 60 and abs(server - now) < 60, (source, server)
