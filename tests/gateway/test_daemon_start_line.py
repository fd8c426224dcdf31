"""The start-up line `running: N sources, M upstreams, <rules>` says what is running.

A pattern rule (`asset_pattern`) builds an instance per asset as the asset reports; after a
restart the instances whose state was restored are built already. The line used to count only
the instances the rule files name, so it said "0 rule instances" right after "restored ... the
state of 1 rule instances". Black box first (the daemon as a subprocess, real Mosquitto, the
CMMS simulator), then the wording on a real engine.
"""

from __future__ import annotations

import re
from pathlib import Path

from gateway.daemon_status import describe_running_rules
from gateway.model import Quality, Sample
from rules import RuleEngine, load_rule_files
from rules import native as rules_native
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for

NAMED_RULE = """
[[rule]]
id = "temp-high"
kind = "threshold"
assets = ["pump-1", "pump-2"]
signal = "temperature"
above = 80
"""


def _running_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "running: " in line]


async def test_after_a_restart_the_running_line_counts_the_restored_pattern_instance(
        stack: Stack) -> None:
    port = await stack.spawn_up(vibration_rule())  # one rule, asset_pattern = "pump-*"
    await stack.play("pump-1", [3.0] + [8.0] * 12)  # raises: the instance has state to keep
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 30, "the raise upstream")
    await stack.wait_drained(port)
    await stack.restart_subprocess(port, "term")
    await wait_for(lambda: len(_running_lines(stack.daemon_log())) == 2, 30,
                   "the second start's running line")
    log = stack.daemon_log()
    restored = re.findall(r"restored (\d+) open episodes and the state of (\d+) rule instances",
                          log)
    assert restored == [("1", "1")], f"expected one restore line for pump-1:\n{log[-3000:]}"
    first, second = _running_lines(log)
    assert "0 rule instance" not in second, second
    assert "1 rule (1 pattern rule builds instances as assets report: 1 built so far)" \
        in second, second
    # Which engine runs: the compiled one wherever this tree has a build of its source.
    assert second.endswith(f"; rule engine {rules_native.describe()}"), second
    # Before any data the pattern rule has built nothing, and the line says just that.
    assert "1 rule (1 pattern rule builds instances as assets report: 0 built so far)" in first
    await stack.terminate()


def test_the_wording_says_named_instances_and_pattern_instances_apart(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(vibration_rule() + NAMED_RULE)
    engine = RuleEngine(load_rule_files([path]))
    assert describe_running_rules(engine) == (
        "2 rules (2 rule instances for named assets; 1 pattern rule builds instances as "
        "assets report: 0 built so far)")
    for asset in ("pump-7", "pump-8"):  # each builds its vib-high instance on first report
        engine.evaluate(Sample(asset, "vibration", 1.0, Quality.GOOD, 1.0))
    assert describe_running_rules(engine).endswith("report: 2 built so far)")


def test_without_pattern_rules_the_wording_is_that_of_check(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(NAMED_RULE)
    engine = RuleEngine(load_rule_files([path]))
    assert describe_running_rules(engine) == "1 rule (2 rule instances: one per rule and asset)"
