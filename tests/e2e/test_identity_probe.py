"""The daemon's identity probe end to end: the real daemon as a subprocess, the Maximo and SAP
simulators over real sockets, the asset registry in its own file.

The simulator serves its own seeded site (simulators/maximo/assets.py: PUMP-1, PUMP-2 at
BEDFORD), not this test's registry: pump-2 mapped to P-100 is unknown there. Expected: the
problem on /status (`identity`), /readyz and /metrics within a deadline after start; a fixed
registry and SIGHUP clear it; a start while Maximo is down shows the cached finding and says
the upstream was not checked, without that being a problem of its own. Against the SAP
simulator (OAuth2): an unknown equipment and a priority SAP does not define, both problems.
"""

from __future__ import annotations

import html
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.status_cli import format_text
from simulators.maximo import MaximoSimulator
from simulators.sap_pm import SapPmSimulator
from tests.e2e.stack import Stack
from tests.harness import free_port, wait_for

UNKNOWN = "pump-2: Maximo has no asset P-100 at site BEDFORD"

RULES = "".join(f"""
[[rule]]
id = "vib-{asset}"
kind = "threshold"
asset = "{asset}"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
""" for asset in ("pump-1", "pump-2"))


def registry(pump_2: str) -> str:
    return f"""
[assets.pump-1]
maximo = {{ assetnum = "PUMP-1", siteid = "BEDFORD" }}

[assets.pump-2]
maximo = {{ assetnum = "{pump_2}", siteid = "BEDFORD" }}
"""


def configure(stack: Stack, sim: MaximoSimulator, port: int, pump_2: str) -> None:
    (stack.tmp / "assets.toml").write_text(registry(pump_2))
    upstream = f"""
[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{sim.url}"
auth = {{ kind = "api_key", key = {{ value = "test-key" }} }}
siteid = "BEDFORD"
connect_timeout_seconds = 1
total_timeout_seconds = 3
"""
    path = stack.write_config(RULES, upstream=upstream, http_port=port)
    path.write_text(path.read_text().replace('site = "e2e"',
                                             'site = "e2e"\nassets_file = "assets.toml"', 1))


@pytest.fixture
async def maximo() -> AsyncIterator[MaximoSimulator]:
    sim = MaximoSimulator()  # the seeded demo site
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def get(port: int, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
        return await (r.json() if path in ("/status", "/readyz") else r.text())


async def identity_round(stack: Stack, port: int,
                         done: Any = lambda i: i["checked_at"] is not None) -> dict[str, Any]:
    """The /status once the identity key satisfies `done` (bounded wait)."""
    seen: list[dict[str, Any]] = []

    async def ok() -> bool:
        st = await stack.subprocess_status(port)
        if st is not None and done(st["identity"]):
            seen.append(st)
        return bool(seen)

    await wait_for(ok, 30, "the identity probe's findings on /status")
    return seen[-1]


async def test_unknown_asset_is_a_problem_until_the_registry_is_fixed_and_reloaded(
        stack: Stack, maximo: MaximoSimulator) -> None:
    port = free_port()
    configure(stack, maximo, port, pump_2="P-100")
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    st = await identity_round(stack, port)
    ident = st["identity"]
    assert ident["problems"] == [UNKNOWN]
    assert ident["unreachable"] == [] and ident["from_cache"] == []
    assert ident["problems_by_upstream"] == {"maximo": 1}
    assert UNKNOWN in st["problems"]
    ready = await get(port, "/readyz")
    assert ready["ready"] is False and UNKNOWN in ready["problems"]
    assert 'plantbridge_identity_problems{upstream="maximo"} 1.0' in await get(port, "/metrics")
    # Maximo was really asked about both assets, through its asset object structure.
    assert maximo.count("GET", "/os/mxapiasset") >= 2
    assert (stack.tmp / "state" / "identity-cache.json").exists()

    (stack.tmp / "assets.toml").write_text(registry("PUMP-2"))
    assert stack.proc is not None
    stack.proc.send_signal(signal.SIGHUP)
    st = await identity_round(stack, port, lambda i: not i["problems"])
    assert st["identity"]["problems_by_upstream"] == {"maximo": 0}
    assert UNKNOWN not in st["problems"]
    ready = await get(port, "/readyz")
    assert UNKNOWN not in ready["problems"]
    assert 'plantbridge_identity_problems{upstream="maximo"} 0.0' in await get(port, "/metrics")
    log = stack.daemon_log()
    assert log.count(f"identity problem: {UNKNOWN}") == 1, log[-3000:]
    assert f"identity problem resolved: {UNKNOWN}" in log
    assert await stack.terminate() == 0


async def test_a_start_with_the_upstream_down_uses_the_cached_findings(
        stack: Stack, maximo: MaximoSimulator) -> None:
    port = free_port()
    configure(stack, maximo, port, pump_2="P-100")
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)
    await identity_round(stack, port, lambda i: i["problems"] == [UNKNOWN])
    assert await stack.terminate() == 0

    await maximo.go_down()  # connections to its address are refused now
    stack.spawn_daemon()
    await stack.wait_subprocess_up(port)  # monitoring runs: the sources connected regardless
    st = await identity_round(stack, port, lambda i: bool(i["unreachable"]))
    ident = st["identity"]
    assert ident["from_cache"] == ["maximo"]
    assert ident["problems"] == [UNKNOWN]  # the last known finding stands
    [line] = ident["unreachable"]
    assert line.startswith("upstream maximo: not checked: ") and "last known" in line, line
    assert UNKNOWN in st["problems"]
    assert not any("not checked" in p for p in st["problems"])  # unreachable is no problem
    # `plantbridge status` and the page say the same, in the same words
    text = format_text(st)
    assert f"  ! {UNKNOWN}" in text and f"  {line}" in text, text
    page = await get(port, "/")
    assert html.escape(line) in page and "asset identities: checked at" in page
    assert await stack.terminate() == 0


async def test_sap_unknown_equipment_and_undefined_priority_are_problems(stack: Stack) -> None:
    """The SAP side, OAuth2 included: an equipment SAP does not have and a rule priority its
    priority type does not define, each a problem on /status, /readyz and /metrics."""
    sap = SapPmSimulator(oauth_clients={"PB_CLIENT": "s3cret"}, priorities=("1", "2", "3"))
    await sap.start()
    try:
        port = free_port()
        (stack.tmp / "assets.toml").write_text("""
[assets.pump-1]
sap = { equipment = "000000000210100094", planning_plant = "1010" }

[assets.pump-2]
sap = { equipment = "999999" }
""")
        upstream = f"""
[[upstreams]]
type = "sap_pm"
name = "sap"
base_url = "{sap.url}"
sap_client = "100"
connect_timeout_seconds = 1
total_timeout_seconds = 3
[upstreams.auth]
kind = "oauth2"
client_id = {{ value = "PB_CLIENT" }}
client_secret = {{ value = "s3cret" }}
"""
        rules = RULES.replace('asset = "pump-1"', 'asset = "pump-1"\npriority = 4')
        path = stack.write_config(rules, upstream=upstream, http_port=port)
        path.write_text(path.read_text().replace('site = "e2e"',
                                                 'site = "e2e"\nassets_file = "assets.toml"', 1))
        stack.spawn_daemon()
        await stack.wait_subprocess_up(port)
        st = await identity_round(stack, port)
        ident = st["identity"]
        assert ident["problems"] == ["pump-2: SAP has no equipment 999999"], ident
        [domain] = ident["domain_problems"]
        assert domain.startswith("upstream 'sap': priority 4"), domain
        assert ident["problems_by_upstream"] == {"sap": 2}
        ready = await get(port, "/readyz")
        assert ready["ready"] is False
        assert {"pump-2: SAP has no equipment 999999", domain} <= set(ready["problems"])
        assert 'plantbridge_identity_problems{upstream="sap"} 2.0' in await get(port, "/metrics")
        assert await stack.terminate() == 0
    finally:
        await sap.stop()
