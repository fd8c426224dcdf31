"""Status that matches reality: upstream ids, severity classes, recovered errors, `status` CLI.

The whole stack runs (Mosquitto, the CMMS simulator, the daemon in-process); `plantbridge
status` runs as a real subprocess against the daemon's HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import free_port, wait_for

CRITICAL_RULE = """
[[rule]]
id = "temp-critical"
kind = "threshold"
asset_pattern = "pump-*"
signal = "temperature"
above = 90.0
clear_below = 80.0
on_delay_seconds = 0.2
severity = 1
title = "Overheating {asset}"
"""


async def _status_cli(config: Path, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "status", "--config", str(config), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _get(port: int, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r:
        body = await r.read()
        return r.status, (orjson.loads(body) if r.content_type == "application/json"
                          else body.decode())


async def test_status_tells_ids_delays_and_critical_requests(stack: Stack) -> None:
    port = free_port()
    path = stack.write_config(vibration_rule().replace("severity = 2", "severity = 4")
                              + CRITICAL_RULE, http_port=port,
                              forwarding="probe_interval_seconds = 3600")
    path.write_text(path.read_text().replace("[http]\n", "[http]\ncritical_pending_seconds = 1\n"))
    d = await stack.start_daemon()

    # An open condition, delivered: its upstream id, value and reason are on /status.
    await stack.play("pump-1", [3.0] + [8.0] * 10)
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "the request delivered")
    receipt = stack.sim.requests[0]["id"]

    async def has_receipt() -> bool:
        _, s = await _get(port, "/status")
        eps = {e["asset"]: e for e in s["open_episodes"]}
        return bool(eps.get("pump-1", {}).get("receipts", {}).get("cmms") == receipt)

    await wait_for(has_receipt, 15, "the upstream id on /status")
    _, s = await _get(port, "/status")
    ep = s["open_episodes"][0]
    assert ep["value"] == 8.0 and "vibration" in ep["reason"] and ep["severity"] == 4
    code, out = await _status_cli(path)
    assert code == 0, out
    assert f"upstream id: cmms: {receipt}" in out and "all good" in out

    # A low-priority request delayed past the critical time: shown, /readyz stays green.
    await stack.sim.go_down()
    await stack.play("pump-2", [3.0] + [8.0] * 10)

    async def delayed() -> bool:
        _, s = await _get(port, "/status")
        up = s["upstreams"][0]
        return bool(s["delays"]) and (up["oldest_pending_age_seconds"] or 0) > 1.5

    await wait_for(delayed, 20, "a low-priority request delayed past 1 s")
    status, ready = await _get(port, "/readyz")
    assert status == 200, ready
    assert ready["delays"][0].startswith("upstream cmms is not delivering (1 waiting")
    code, out = await _status_cli(path)
    assert code == 1 and "~ upstream cmms is not delivering" in out, out

    # A critical request delayed past the critical time: /readyz turns red, saying why.
    await stack.play("pump-3", [20.0] + [95.0] * 10, signal="temperature")

    async def red() -> bool:
        status, _ = await _get(port, "/readyz")
        return status == 503

    await wait_for(red, 20, "/readyz red for the critical request")
    _, ready = await _get(port, "/readyz")
    assert any(p.startswith("critical request (severity 1) for pump-3 to upstream cmms still "
                            "not delivered after") for p in ready["problems"]), ready
    _, page = await _get(port, "/")
    assert "connection refused" in page  # the current error is on the page

    # Recovered: the critical problem and the upstream's last error go away.
    await stack.sim.come_up()
    await wait_for(lambda: len(stack.sim.requests) == 3, 20, "the backlog delivered")

    async def green() -> bool:
        status, _ = await _get(port, "/readyz")
        return status == 200

    await wait_for(green, 20, "/readyz green again")
    _, s = await _get(port, "/status")
    assert s["upstreams"][0]["last_error"] == ""
    _, page = await _get(port, "/")
    assert "connection refused" not in page
    code, out = await _status_cli(path, "--json")
    assert code == 0, out
    assert orjson.loads(out)["problems"] == []
    assert d.http_port == port


async def test_status_says_plainly_when_the_gateway_is_not_running(stack: Stack) -> None:
    port = free_port()
    path = stack.write_config(vibration_rule(), http_port=port)
    code, out = await _status_cli(path)
    assert code == 3, out
    assert f"the gateway is not running: nothing answers on http://127.0.0.1:{port}/status" in out
    assert "Traceback" not in out


async def test_status_needs_a_fixed_port(stack: Stack) -> None:
    path = stack.write_config(vibration_rule(), http_port=0)
    code, out = await _status_cli(path)
    assert code == 1 and "port = 0" in out, out


def test_status_asks_a_wildcard_listener_on_loopback() -> None:
    from gateway.config import PlantBridgeConfig, is_loopback
    from gateway.status_cli import status_url

    def url(host: str) -> str:
        token = {} if is_loopback(host) else {"token": {"value": "t"}}
        return status_url(PlantBridgeConfig.model_validate(
            {"http": {"listen_host": host, "port": 8380, **token}}))

    assert url("0.0.0.0") == "http://127.0.0.1:8380/status"
    assert url("::") == "http://[::1]:8380/status"
    assert url("10.0.0.5") == "http://10.0.0.5:8380/status"
    assert [is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost",
                                     "0.0.0.0", "::", "gw.plant.local")] == [
        True, True, True, True, False, False, False]
