"""`plantbridge reconcile` against a running gateway and the CMMS simulator over real sockets.

The test plants each kind of difference upstream (a deleted request, a foreign record with our
reference, a request closed while the condition is open) and expects the report to name each;
`--fix` re-enqueues the missing request and the running gateway delivers it once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from gateway import cli
from gateway import config as config_mod
from gateway.messages import dedup_key
from gateway.reconcile import Difference, format_text, parse_window, run_reconcile
from tests.e2e.conftest import stack as stack  # the whole stack: broker, simulator, daemon
from tests.e2e.stack import Stack
from tests.harness import wait_for

RULE = """
[[rule]]
id = "vib-high"
kind = "threshold"
asset_pattern = "pump-*"
signal = "vibration"
above = 7.1
clear_below = 6.0
severity = 2
title = "High vibration on {asset}"
"""


def test_window_words() -> None:
    assert parse_window("7d") == 7 * 86400
    assert parse_window("90m") == 5400
    with pytest.raises(ValueError, match="unit s, m, h, d or w"):
        parse_window("7 days")


async def _three_requests(stack: Stack) -> dict[str, str]:
    """pump-1..3 raised and delivered; returns asset -> request id."""
    stack.write_config(RULE)
    await stack.start_daemon()
    for asset in ("pump-1", "pump-2", "pump-3"):
        await stack.play(asset, [3.0, 8.0])
    await wait_for(lambda: all(len(stack.requests_for(a)) == 1
                               for a in ("pump-1", "pump-2", "pump-3")), 20, "3 requests")
    await stack.settled()
    return {a: stack.requests_for(a)[0]["id"] for a in ("pump-1", "pump-2", "pump-3")}


async def test_reconcile_names_each_planted_difference_and_fix_resends_once(
        stack: Stack) -> None:
    ids = await _three_requests(stack)
    loaded = config_mod.load(stack.tmp / "plantbridge.toml")
    clean = await run_reconcile(loaded, 3600, fix=False, now=time.time())
    assert clean.findings == [] and clean.checked == 3, clean

    d = stack.daemon
    assert d is not None and d.pipeline is not None
    episode = {e.asset: e.episode_id for e in d.pipeline.engine.open_episodes()}
    stack.sim.delete_request(ids["pump-1"])
    foreign = stack.sim.add_foreign(dedup_key(episode["pump-2"]), "pump-2")
    stack.sim.set_status(ids["pump-3"], "closed")

    report = await run_reconcile(loaded, 3600, fix=False, now=time.time())
    kinds = {(f.kind, f.asset, f.upstream_id) for f in report.findings}
    assert kinds == {(Difference.MISSING_UPSTREAM, "pump-1", None),
                     (Difference.UNKNOWN_UPSTREAM, "pump-2", foreign),
                     (Difference.CLOSED_UPSTREAM, "pump-3", ids["pump-3"])}, report.findings
    text = format_text(report)
    assert "MISSING UPSTREAM" in text and "NOT KNOWN HERE" in text and "CLOSED UPSTREAM" in text
    assert stack.requests_for("pump-1") == []

    fixed = await run_reconcile(loaded, 3600, fix=True, now=time.time())
    assert [f.fixed for f in fixed.findings if f.kind is Difference.MISSING_UPSTREAM] == [
        "re-enqueued"]
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "pump-1 sent again")
    await stack.settled()
    again = stack.requests_for("pump-1")[0]
    assert again["external_ref"] == dedup_key(episode["pump-1"])
    # Delivered once: the new id is the receipt, and the next reconcile finds nothing missing.
    after = await run_reconcile(loaded, 3600, fix=True, now=time.time())
    assert {f.kind for f in after.findings} == {Difference.UNKNOWN_UPSTREAM,
                                                Difference.CLOSED_UPSTREAM}
    await asyncio.sleep(0.5)  # a second send would have had time to arrive
    assert len(stack.requests_for("pump-1")) == 1


async def test_cli_json_and_exit_code(stack: Stack, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    ids = await _three_requests(stack)
    stack.sim.set_status(ids["pump-2"], "resolved")
    config = str(stack.tmp / "plantbridge.toml")
    code = await asyncio.to_thread(cli.main, ["reconcile", "--since", "1h", "--json",
                                              "--config", config])
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert [(f["kind"], f["asset"]) for f in doc["findings"]] == [
        ("closed_upstream", "pump-2")]
    assert doc["checked"] == 3
    code = await asyncio.to_thread(cli.main, ["reconcile", "--since", "a week",
                                              "--config", config])
    assert code == 2 and "--since 'a week'" in capsys.readouterr().err
