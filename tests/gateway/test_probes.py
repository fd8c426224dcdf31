"""Upstream probes against the real CMMS simulator: a wrong port or token shows before an alarm.

Each case goes through the real paths: the daemon's `/readyz` over a socket, the metric, and
`plantbridge check --online` as a real subprocess.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from gateway.probes import Probes, plain_reason, probe
from gateway.upstream.rest import RestSinkConfig, UpstreamCheckError
from simulators.cmms import CmmsSimulator
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import API_KEY, Stack, vibration_rule
from tests.harness import free_port, wait_for


def _upstream(url: str, token: str = API_KEY, token_file: Path | None = None) -> str:
    secret = f'{{ file = "{token_file}" }}' if token_file else f'{{ value = "{token}" }}'
    return f"""
[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{url}"
auth = {{ kind = "bearer", token = {secret} }}
connect_timeout_seconds = 1
total_timeout_seconds = 2
"""


async def _check_online(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "check", "--online", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, await r.text()


async def _probed(stack: Stack) -> None:
    d = stack.daemon
    await wait_for(lambda: d is not None and d.probes is not None and d.probes.rounds > 0,
                   15, "the first probe round")


async def test_a_closed_port_is_a_problem_on_readyz_and_fails_check_online(
        stack: Stack) -> None:
    port = free_port()  # nothing listens there
    config = stack.write_config(vibration_rule(),
                                upstream=_upstream(f"http://127.0.0.1:{port}"))
    d = await stack.start_daemon()
    await _probed(stack)
    assert d.http_port is not None
    status, body = await _get(d.http_port, "/readyz")
    assert status == 503
    assert f"upstream cmms: probe failed: connection refused by 127.0.0.1:{port}" in body
    _, metrics = await _get(d.http_port, "/metrics")
    assert 'plantbridge_upstream_probe_ok{sink="cmms"} 0.0' in metrics

    code, out = await _check_online(config)
    assert code == 1, out
    assert f"upstream cmms: probe failed: connection refused by 127.0.0.1:{port}" in out


async def test_a_wrong_token_is_named_as_refused_credentials(stack: Stack) -> None:
    config = stack.write_config(vibration_rule(),
                                upstream=_upstream(stack.sim.url, token="not-the-key"))
    d = await stack.start_daemon()
    await _probed(stack)
    assert d.http_port is not None
    status, body = await _get(d.http_port, "/readyz")
    assert status == 503
    assert "upstream cmms: probe failed: credentials refused (HTTP 401)" in body
    code, out = await _check_online(config)
    assert code == 1, out
    assert "credentials refused (HTTP 401)" in out


async def test_a_good_upstream_probes_ok(stack: Stack) -> None:
    config = stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    await _probed(stack)
    assert d.http_port is not None
    status, body = await _get(d.http_port, "/readyz")
    assert status == 200, body
    _, metrics = await _get(d.http_port, "/metrics")
    assert 'plantbridge_upstream_probe_ok{sink="cmms"} 1.0' in metrics
    code, out = await _check_online(config)
    assert code == 0, out
    assert "online: upstream cmms: ok" in out


async def test_a_reload_probes_again_with_the_fixed_token(
        stack: Stack, tmp_path: Path) -> None:
    token_file = tmp_path / "cmms-token"
    token_file.write_text("revoked\n")
    stack.write_config(vibration_rule(), upstream=_upstream(stack.sim.url, token_file=token_file),
                       forwarding="probe_interval_seconds = 3600")
    d = await stack.start_daemon()
    await _probed(stack)
    assert d.probes is not None
    assert "credentials refused (HTTP 401)" in " ".join(d.problems())
    before = d.probes.rounds
    token_file.write_text(API_KEY + "\n")
    assert await d.reload()
    probes = d.probes
    await wait_for(lambda: probes.rounds > before and not probes.problems(), 15,
                   "a fresh probe after the reload, passing")
    assert not any("probe failed" in p for p in d.problems())


async def test_a_probe_that_hangs_fails_in_time() -> None:
    """An upstream that accepts the connection and never answers fails the probe, in time."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = RestSinkConfig.model_validate({
        "type": "rest", "name": "cmms", "base_url": f"http://127.0.0.1:{port}",
        "total_timeout_seconds": 60}).build()
    try:
        result = await probe(sink, timeout_seconds=0.5)
    finally:
        await sink.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert not result.ok
    assert "no answer within" in result.reason


def test_plain_reason_names_refused_credentials() -> None:
    assert plain_reason("cmms", UpstreamCheckError("cmms: HTTP 403 Forbidden - no")).startswith(
        "credentials refused (HTTP 403): Forbidden - no")
    assert plain_reason("cmms", UpstreamCheckError("cmms: HTTP 500 boom")) == "HTTP 500 boom"


async def test_a_removed_sink_is_forgotten() -> None:
    sim = CmmsSimulator(api_key=API_KEY)
    await sim.start()
    sinks = [RestSinkConfig.model_validate({"type": "rest", "name": n, "base_url": sim.url})
             .build() for n in ("a", "b")]
    current = list(sinks)
    probes = Probes(lambda: current, 3600)
    try:
        await probes.probe_all()
        assert set(probes.results) == {"a", "b"}
        current.pop()
        await probes.probe_all()
        assert set(probes.results) == {"a"}
    finally:
        for s in sinks:
            await s.aclose()
        await sim.stop()


def test_online_and_rules_only_do_not_mix(tmp_path: Path) -> None:
    from gateway.cli import main

    assert main(["check", "--online", "--rules-only", "--config", str(tmp_path / "x")]) == 2
