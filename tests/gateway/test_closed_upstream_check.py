"""`check` warns when a rule comments on records closed upstream and SAP PM is in use: SAP makes
a completed notification read-only, so the note would end as a dead letter."""

from __future__ import annotations

from pathlib import Path

from gateway import config as config_mod
from tests.gateway.test_registry import GOOD, rule, write


def test_comment_with_sap_is_warned_about(tmp_path: Path) -> None:
    commenting = rule("a", "pump-1") + 'closed_upstream = "comment"\n'
    path = write(tmp_path, [commenting, rule("b", "line2.fan-1")], GOOD)
    found = config_mod.examine(path)
    assert not found.problems, [str(p) for p in found.problems]
    warned = [str(w) for w in found.warnings if "closed_upstream" in str(w)]
    assert len(warned) == 1, warned
    assert "rule 'a'" in warned[0] and "read-only (system status NOCO)" in warned[0]


def test_other_policies_are_not_warned_about(tmp_path: Path) -> None:
    again = rule("a", "pump-1") + 'closed_upstream = "new_request"\n'
    found = config_mod.examine(write(tmp_path, [again, rule("b", "line2.fan-1")], GOOD))
    assert not [w for w in found.warnings if "closed_upstream" in str(w)]
