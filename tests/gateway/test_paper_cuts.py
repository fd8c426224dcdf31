"""Paper cuts of issue 11: each behaviour a new user tripped over, tested through the real CLI
or the real component."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.cli import main
from gateway.http import render_page
from gateway.upstream.rest import RestSinkConfig, UpstreamCheckError
from rules.loader import describe_running
from tests.gateway.recorder import VIB_RULE
from tests.harness import free_port


def _replay_files(tmp: Path) -> tuple[Path, Path]:
    rules = tmp / "rules.toml"
    rules.write_text(VIB_RULE.format(above=7.1))
    rec = tmp / "rec.jsonl"
    rec.write_bytes(b"".join(
        orjson.dumps({"asset": "pump-1", "signal": "vibration", "value": 8.0 if t % 7 < 4
                      else 3.0, "quality": "GOOD", "ts": 1_700_000_000 + t}) + b"\n"
        for t in range(200)))
    return rules, rec


def test_replay_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    rules, rec = _replay_files(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "replay", "--rules",
                             str(rules), "--input", str(rec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that has read enough: closed before the report is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_replay_from_later_than_to_is_refused_in_plain_words(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, rec = _replay_files(tmp_path)
    code = main(["replay", "--rules", str(rules), "--input", str(rec),
                 "--from", "2026-11-27T09:00", "--to", "2026-11-27T08:00"])
    got = capsys.readouterr()
    assert code == 2 and got.out == ""
    assert "--from (2026-11-27T09:00:00Z) is later than --to (2026-11-27T08:00:00Z)" in got.err


def test_demo_with_an_unknown_scenario_names_the_valid_ones(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "bearing"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("unknown scenario 'bearing'; did you mean 'bearing-failure'? "
                           "Known scenarios: steady, bearing-failure, sensor-failure")


async def test_a_refused_plain_http_connection_is_described_plainly() -> None:
    port = free_port()  # nothing listens there
    cfg = RestSinkConfig.model_validate({"type": "rest", "name": "cmms",
                                         "base_url": f"http://127.0.0.1:{port}/"})
    sink = cfg.build()
    try:
        with pytest.raises(UpstreamCheckError) as caught:
            await sink.check()
    finally:
        await sink.aclose()
    text = str(caught.value)
    assert f"connection refused by 127.0.0.1:{port}" in text
    assert "ssl:" not in text


def test_the_page_counts_running_rules_in_the_words_of_the_log() -> None:
    """The page and the log's start-up line count the running engine, in the same words
    (`describe_running`); without pattern rules those are the words `check` uses."""
    reload = {"at": "2026-12-01T00:00:00Z", "error": "", "rules": 7, "instances": 9,
              "pattern_rules": 2, "pattern_instances": 3}
    snapshot = {"site": "s", "uptime_seconds": 1.0, "problems": [], "sources": [],
                "upstreams": [], "outbox": {}, "open_episodes": [], "recent_transitions": [],
                "reload": reload}
    page = render_page(snapshot)
    said = describe_running(7, 9, 2, 3)
    assert said == ("7 rules (6 rule instances for named assets; 2 pattern rules build "
                    "instances as assets report: 3 built so far)")
    assert said in page
    assert "asset instances" not in page
    plain = render_page(snapshot | {"reload": reload | {"pattern_rules": 0,
                                                        "pattern_instances": 0}})
    assert "7 rules (9 rule instances: one per rule and asset)" in plain
