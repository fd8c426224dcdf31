"""Local decisions: pure, synchronous, clock-injected rules.

`load_rule_files` turns technician-edited TOML files into a `RuleSet` (or a `RuleFileError`
listing every problem in plain words); `RuleEngine` evaluates samples and ticks against it and
swaps it on reload; `rules.replay` runs rules on recordings. `rules.native` (first: it
decides where the hot modules load from) tells whether the mypyc-compiled engine runs.
"""

from rules import native  # noqa: F401  (first: before any module it may compile)
from rules.build import RuleDef, RuleSet
from rules.engine import RuleEngine
from rules.episode import RuleInstance
from rules.loader import RuleFileError, RuleProblem, load_rule_files

__all__ = [
    "RuleDef",
    "RuleEngine",
    "RuleFileError",
    "RuleInstance",
    "RuleProblem",
    "RuleSet",
    "load_rule_files",
]
