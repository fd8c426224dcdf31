"""The status page in a real browser (Debian's chromium, headless), during a bad day.

Scenario: one source down, an open condition already in the CMMS (with its upstream id), a
dead letter the CMMS refused, and a backlog while the CMMS is down. The test reads the DOM the
browser built and keeps a screenshot in tests/artifacts/ for a person to look at: the problem
list at the top must name the down source, the dead letter with its reason, and the backlog;
the open condition must show its upstream id.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.daemon import Daemon
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import free_port, wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,900")


def chromium() -> str:
    """Debian's chromium, installed now when missing and we may (root, or sudo); else skip."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0:
        sudo: list[str] = []
    elif shutil.which("sudo"):
        sudo = ["sudo", "-n"]
    else:
        pytest.skip("chromium is not installed and this user may not install it (not root, no "
                    "sudo): run scripts/setup as root, or apt-get install chromium")
    import subprocess

    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
        done = subprocess.run([*sudo, *cmd], env=env, capture_output=True, timeout=900,
                              check=False)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)}): "
                        f"{done.stderr.decode(errors='replace')[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium, but no chromium command is on PATH")
    return found


async def browse(binary: str, url: str, profile: Path, *extra: str) -> str:
    """Run headless chromium on `url`; its stdout. Async: the daemon under test keeps
    answering in this same event loop while the browser loads the page."""
    proc = await asyncio.create_subprocess_exec(
        binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"chromium did not finish loading {url} within 60 s") from None
    assert proc.returncode == 0, f"chromium exited {proc.returncode}"
    return out.decode(errors="replace")


def _text(dom: str) -> str:
    """The visible words of the DOM, whitespace folded (good enough for our plain page)."""
    no_style = re.sub(r"<style.*?</style>", " ", dom, flags=re.S)
    words = re.sub(r"<[^>]+>", " ", no_style)
    return " ".join(words.replace("&amp;", "&").replace("&middot;", "·").split())


async def _start_with_a_source_down(stack: Stack) -> Daemon:
    """Stack.start_daemon, except that it waits for the good source only."""
    d = Daemon(config_mod.load(stack.tmp / "plantbridge.toml"))
    stack.daemon, stack.task = d, asyncio.create_task(d.run(), name="daemon-under-test")
    task = stack.task
    await wait_for(lambda: d.ready.is_set() or task.done(), 15, "daemon ready")
    if task.done():
        task.result()
    await wait_for(lambda: d.sources["plant"][1].health().state == "connected", 15,
                   "the good source connected")
    return d


async def test_a_person_sees_what_is_wrong_at_a_glance(stack: Stack,
                                                      tmp_path: Path) -> None:
    binary = chromium()
    port, dead_port = free_port(), free_port()
    down_source = (stack.mqtt_source().replace('name = "plant"', 'name = "line-2"')
                   .replace(f"port = {stack.broker.port}", f"port = {dead_port}")
                   .replace("plantbridge-e2e", "plantbridge-line-2"))
    stack.write_config(vibration_rule(), http_port=port,
                       source=stack.mqtt_source() + down_source)
    d = await _start_with_a_source_down(stack)

    # An open condition, in the CMMS: its upstream id goes on the page.
    await stack.play("pump-1", [3.0] + [8.0] * 10)
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "pump-1's request delivered")
    receipt = stack.sim.requests[0]["id"]
    # A request the CMMS refuses for good: a dead letter with the CMMS's reason.
    stack.sim.faults.set("error_5xx", count=1, status=400)
    await stack.play("pump-2", [3.0] + [8.0] * 10)
    await wait_for(lambda: any((d.outbox_stats.get("dead") or {}).values()), 15, "a dead letter")
    # A backlog: the CMMS goes down, a third pump raises.
    await stack.sim.go_down()
    await stack.play("pump-3", [3.0] + [8.0] * 10)
    await wait_for(lambda: d.forwarders[0].stats.failing and bool(d.delays()), 15,
                   "a backlog behind a failing upstream")

    profile = tmp_path / "chromium-profile"
    url = f"http://127.0.0.1:{port}/"
    dom = await browse(binary, url, profile, "--dump-dom")
    text = _text(dom)
    problems = text.split("problem(s)", 1)[1].split("Open episodes", 1)[0]
    assert "source line-2 (mqtt) is" in problems, problems
    assert "upstream cmms has 1 dead-lettered record(s); latest (pump-2): HTTP 400" in problems
    assert "upstream cmms is not delivering (1 waiting" in problems
    # The problem list comes before everything else a person reads.
    assert text.index("problem(s)") < text.index("Open episodes") < text.index("Sources")
    opened = text.split("Open episodes", 1)[1].split("Dead letters", 1)[0]
    assert f"cmms: {receipt}" in opened and "pump-1" in opened
    assert "pump-2 vib-high" in opened and "cmms: REFUSED (see dead letters)" in opened
    assert "pump-3" in opened and "cmms: waiting to be delivered" in opened

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    await browse(binary, url, profile, f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
