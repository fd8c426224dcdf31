"""Golden cases: `cases/NAME/{rules.toml,input.jsonl,expected.jsonl}`, one per rule behaviour.

Each case is replayed with a 1 s tick and must give exactly the expected transitions, field by
field, including the episode ids and the reason texts. After a deliberate change of behaviour,
`PB_REGEN_GOLDEN=1 pytest tests/rules/test_golden.py` rewrites the expected files: review the
diff before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.model import Transition
from rules import load_rule_files
from rules.replay import load_recording, replay

CASES = Path(__file__).parent / "cases"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "rules.toml").is_file())


def as_row(t: Transition) -> dict[str, Any]:
    return {"kind": str(t.kind), "rule_id": t.rule_id, "asset": t.asset, "signal": t.signal,
            "episode_id": t.episode_id, "severity": t.severity, "value": t.value, "ts": t.ts,
            "reason": t.reason, "title": t.request.title}


def test_every_kind_has_a_case() -> None:
    kinds = set()
    for name in NAMES:
        rules = load_rule_files([CASES / name / "rules.toml"])
        kinds |= {r.spec.kind for r in rules.rules}
    assert kinds == {"threshold", "rate", "stale", "bad_quality", "combination"}


@pytest.mark.parametrize("name", NAMES)
def test_golden_case(name: str) -> None:
    case = CASES / name
    rules = load_rule_files([case / "rules.toml"])
    got = [as_row(t) for t in replay(rules, load_recording(case / "input.jsonl")).transitions]
    expected_file = case / "expected.jsonl"
    if os.environ.get("PB_REGEN_GOLDEN"):
        expected_file.write_text("".join(json.dumps(r) + "\n" for r in got))
    expected = [json.loads(line) for line in expected_file.read_text().splitlines() if line]
    assert got == expected
