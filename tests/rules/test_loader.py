"""Rule files: what a technician gets told when a file is wrong, and that good files load."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules import RuleFileError, RuleProblem, load_rule_files

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config" / "rules.d").glob("*.toml"))

GOOD = """
[[rule]]
id = "pump-vibration-high"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
clear_below = 6.0
"""


def problems(tmp_path: Path, *texts: str, known: list[str] | None = None) -> list[str]:
    paths = []
    for i, text in enumerate(texts):
        p = tmp_path / f"{i}0-rules.toml"
        p.write_text(text)
        paths.append(p)
    with pytest.raises(RuleFileError) as err:
        load_rule_files(paths, known_assets=known)
    assert str(err.value) == "\n".join(str(p) for p in err.value.problems)
    return [str(p) for p in err.value.problems]


def test_problem_renders_as_one_line() -> None:
    p = RuleProblem("r.toml", 12, "x", "clear_below", "too high")
    assert str(p) == "r.toml:12: rule 'x': clear_below: too high"
    assert str(RuleProblem("r.toml", None, None, None, "cannot read")) == "r.toml: cannot read"


def test_clear_level_on_the_wrong_side(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD.replace("clear_below = 6.0", "clear_below = 7.5"))
    assert got == [f"{tmp_path}/00-rules.toml:8: rule 'pump-vibration-high': clear_below: "
                   "clear level 7.5 is above the alarm level 7.1 for an above-threshold rule"]


def test_below_rule_clear_level_and_wrong_clear_field(tmp_path: Path) -> None:
    text = GOOD.replace("above = 7.1\nclear_below = 6.0", "below = 2.0\nclear_above = 1.5")
    assert problems(tmp_path, text)[0].endswith(
        "clear_above: clear level 1.5 is below the alarm level 2 for a below-threshold rule")
    text = GOOD.replace("above = 7.1", "below = 2.0")
    assert problems(tmp_path, text)[0].endswith(
        "clear_below: clear_below does not go with below; a below-threshold rule clears with "
        "clear_above")


def test_unknown_key_names_its_line_and_a_near_miss(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD.replace("clear_below", "clear_bellow"))
    assert got == [f"{tmp_path}/00-rules.toml:8: rule 'pump-vibration-high': clear_bellow: "
                   "unknown key; did you mean 'clear_below'?"]


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD, GOOD)
    assert got == [f"{tmp_path}/10-rules.toml:2: rule 'pump-vibration-high': id: duplicate "
                   f"rule id; first defined at {tmp_path}/00-rules.toml:2"]


def test_toml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD + "severity = = 2\n")
    assert len(got) == 1
    assert got[0].startswith(f"{tmp_path}/00-rules.toml:9: not valid TOML: ")


def test_unknown_kind(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD.replace('"threshold"', '"treshold"'))
    assert got == [f"{tmp_path}/00-rules.toml:4: rule 'pump-vibration-high': kind: unknown "
                   "rule kind 'treshold'; did you mean 'threshold'?; use one of threshold, "
                   "rate, stale, bad_quality, combination"]


def test_types_and_missing_fields_in_plain_words(tmp_path: Path) -> None:
    text = GOOD.replace('signal = "vibration"\n', "").replace("above = 7.1", 'above = "7.1"')
    got = problems(tmp_path, text)
    assert any(g.endswith("rule 'pump-vibration-high': signal: is required") for g in got)
    assert any(g.endswith("above: must be a number, not '7.1'") for g in got)
    got = problems(tmp_path, GOOD + "severity = 7\n")
    assert got[0].endswith("severity: must be at most 4, not 7")


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    bad_a = GOOD.replace("clear_below = 6.0", "clear_below = 9")
    bad_b = GOOD.replace("pump-vibration-high", "other").replace("asset =", "assets =")
    got = problems(tmp_path, bad_a, bad_b)
    assert len(got) == 2
    assert "assets: must be a list in brackets" in got[1]


def test_asset_selection_and_overrides(tmp_path: Path) -> None:
    both = GOOD.replace('asset = "pump-1"', 'asset = "pump-1"\nasset_pattern = "pump-*"')
    assert problems(tmp_path, both)[0].endswith(
        "asset: give exactly one of asset, assets or asset_pattern (found asset, asset_pattern)")
    over = GOOD.replace('asset = "pump-1"', 'assets = ["pump-1", "pump-2"]') + (
        '[rule.overrides]\n"pump-2" = { above = 9.0, clear_below = 9.5, signal = "x" }\n'
        '"pump-3" = { above = 8.0 }\n')
    got = problems(tmp_path, over)
    assert any("overrides.pump-2.signal: cannot be changed per asset" in g for g in got)
    assert any("overrides.pump-2.clear_below: clear level 9.5 is above the alarm level 9" in g
               for g in got)
    assert any("overrides.pump-3: this rule does not cover that asset" in g for g in got)


def test_known_assets_check_names_and_expand_patterns(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD.replace("pump-1", "pump-9"), known=["pump-1", "fan-1"])
    assert got[0].endswith("asset: unknown asset 'pump-9'")
    pattern = GOOD.replace('asset = "pump-1"', 'asset_pattern = "pmp-*"')
    assert problems(tmp_path, pattern, known=["pump-1"])[0].endswith(
        "asset_pattern: 'pmp-*' matches none of the known assets")
    path = tmp_path / "ok.toml"
    path.write_text(GOOD.replace('asset = "pump-1"', 'asset_pattern = "pump-*"'))
    rules = load_rule_files([path], known_assets=["pump-1", "pump-2", "fan-1"])
    assert sorted(i.asset for i in rules.instances()) == ["pump-1", "pump-2"]


def test_title_placeholders_are_checked(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD + 'title = "High vibration on {assett}"\n')
    assert got[0].endswith("title: unknown placeholder {assett}; use {asset}, {signal}, "
                           "{value}, {rule_id}")


def test_kind_specific_checks(tmp_path: Path) -> None:
    base = '[[rule]]\nid = "r"\nasset = "a"\n'
    cases = {
        'kind = "threshold"\nsignal = "s"\n': "above: give exactly one of above, below, "
                                              "outside or inside",
        'kind = "threshold"\nsignal = "s"\noutside = [5.0, 2.0]\n': "outside: the band [5, 2] "
                                                                     "must go from low to high",
        'kind = "threshold"\nsignal = "s"\noutside = [2.0, 8.0]\nclear_inside = [1.0, 7.0]\n':
            "clear_inside: the clear band must lie inside the alarm band [2, 8]",
        'kind = "threshold"\nsignal = "s"\nabove = 1\ncount = 4\nof_last_samples = 3\n':
            "count: count 4 is more than of_last_samples 3",
        'kind = "rate"\nsignal = "s"\nabove = 5\nwindow_seconds = 0\n':
            "window_seconds: must be more than 0.0, not 0",
        'kind = "combination"\nall_of = [{ signal = "s", above = 1, below = 2 }]\n':
            "all_of[0]: condition on s needs exactly one of above, below or equals",
        'kind = "stale"\nsignal = "s"\n': "limit_seconds: is required",
    }
    for body, message in cases.items():
        got = problems(tmp_path, base + body)
        assert any(g.endswith(message) for g in got), (body, got)


def test_examples_load_together_for_the_demo_plant() -> None:
    assert len(EXAMPLES) >= 6
    rules = load_rule_files(EXAMPLES)
    assert "pump-vibration-high" in rules.rule_ids()
    kinds = {r.spec.kind for r in rules.rules}
    assert kinds == {"threshold", "rate", "stale", "bad_quality", "combination"}
    known = load_rule_files(EXAMPLES, known_assets=["pump-1", "pump-2", "fan-1"])
    assert {i.asset for i in known.instances()} == {"pump-1", "pump-2", "fan-1"}


def test_toml_error_at_end_of_document_points_at_the_last_line(tmp_path: Path) -> None:
    got = problems(tmp_path, GOOD + "outside = [1.0, 2.0\n")
    assert got == [f"{tmp_path}/00-rules.toml:9: not valid TOML: unclosed array"]
    got = problems(tmp_path, GOOD + "severity = = 2\n")
    assert got == [f"{tmp_path}/00-rules.toml:9: not valid TOML: invalid value"]


def test_override_problem_points_at_the_override_line(tmp_path: Path) -> None:
    text = GOOD.replace('asset = "pump-1"', 'assets = ["pump-1", "pump-2"]') + (
        '\n[rule.overrides]\n"pump-1" = { above = 8.0 }\n"pump-2" = { above = 9.0, '
        'clear_below = 9.5 }\n')
    got = problems(tmp_path, text)
    assert got == [f"{tmp_path}/00-rules.toml:12: rule 'pump-vibration-high': "
                   "overrides.pump-2.clear_below: clear level 9.5 is above the alarm level 9 "
                   "for an above-threshold rule"]
