"""Load rule files: TOML `[[rule]]` tables in, a `RuleSet` or a list of plain-word problems out.

Every problem names the file, the line where we can tell, the rule id and the field, e.g.
`rules.d/10-vib.toml:12: rule 'pump-vibration-high': clear_below: clear level 7.5 is above the
alarm level 7.1 for an above-threshold rule`. Nothing is half-loaded: any problem in any file
fails the whole load, so a bad file never replaces a good rule set.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rules.build import RuleDef, RuleSet
from rules.spec import KINDS, RuleSpec


@dataclass(frozen=True, slots=True)
class RuleProblem:
    file: str
    line: int | None
    rule_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.rule_id:
            parts.append(f"rule '{self.rule_id}'")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class RuleFileError(Exception):
    """One or more rule files are invalid; `problems` says where and why, one line each."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


_TOML_LINE = re.compile(r"line (\d+)")
_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")


class _Lines:
    """Where each `[[rule]]` table and its fields sit in the text (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.starts = [i for i, line in enumerate(self.lines) if _HEADER.match(line)]

    def rule(self, index: int) -> int | None:
        return self.starts[index] + 1 if index < len(self.starts) else None

    def field(self, index: int, path: str | None) -> int | None:
        """The line of a field, walking the path: `overrides.pump-2.above` finds the `above`
        on (or after) the line of `"pump-2" =` in the `[rule.overrides]` table."""
        start = self.rule(index)
        if start is None or not path:
            return start
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines)
        pos, found = start - 1, start
        for name in re.split(r"[.\[\]]+", path):
            if not name or name.isdigit():
                continue
            pat = re.compile(rf"""(^|[{{,\s.\[])["']?{re.escape(name)}["']?\s*(=|\])""")
            for i in range(pos, end):
                if pat.search(self.lines[i].split("#", 1)[0]):
                    pos, found = i, i + 1
                    break
        return found


def plain_words(err: Any, fields: Collection[str]) -> tuple[str, str]:
    """A pydantic error as (field path, plain words); `config.py` words its own errors so too."""
    loc = [str(x) for x in err["loc"]]
    path = ".".join(loc).replace(".[", "[")
    path = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path)
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    shown = repr(got) if isinstance(got, str) else got
    words = {
        "missing": "is required",
        "float_type": f"must be a number, not {shown}",
        "float_parsing": f"must be a number, not {shown}",
        "int_type": f"must be a whole number, not {shown}",
        "int_parsing": f"must be a whole number, not {shown}",
        "int_from_float": f"must be a whole number, not {shown}",
        "bool_parsing": f"must be true or false, not {shown}",
        "literal_error": f"must be one of {ctx.get('expected')}, not {shown}",
        "enum": f"must be one of {ctx.get('expected')}, not {shown}",
        "string_type": f"must be text in quotes, not {shown}",
        "bool_type": f"must be true or false, not {shown}",
        "list_type": f"must be a list in brackets, e.g. [1.0, 2.0], not {shown}",
        "dict_type": "must be a table, e.g. { signal = \"maintenance_mode\", equals = 1 }",
        "model_type": "must be a table, e.g. { signal = \"running\", equals = 1 }",
        "greater_than": f"must be more than {ctx.get('gt')}, not {shown}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}, not {shown}",
        "less_than": f"must be less than {ctx.get('lt')}, not {shown}",
        "less_than_equal": f"must be at most {ctx.get('le')}, not {shown}",
        "too_short": "needs two numbers, low and high, e.g. [2.0, 8.0]",
        "too_long": "needs two numbers, low and high, e.g. [2.0, 8.0]",
        "string_too_short": "must not be empty",
        "string_pattern_mismatch": "may use only letters, digits and . _ : - (no spaces)",
        "string_too_long": "is too long",
    }.get(kind)
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(loc[-1], fields, n=1)
        words = "unknown key" + (f"; did you mean '{near[0]}'?" if near else "")
    return path, words or str(err["msg"]).removeprefix("Value error, ")


def _validate(cls: type[RuleSpec], raw: dict[str, Any]) -> tuple[RuleSpec | None,
                                                                 list[tuple[str, str]]]:
    try:
        spec = cls.model_validate(raw)
    except ValidationError as exc:
        fields = list(cls.model_fields)
        return None, [plain_words(e, fields) for e in exc.errors()]
    return spec, spec.problems()


class _FileLoader:
    def __init__(self, path: Path, known: Collection[str] | None) -> None:
        self.file = str(path)
        self.known = known
        self.problems: list[RuleProblem] = []
        self.rules: list[RuleDef] = []
        # Every id written, valid rule or not, with its line: a duplicate is reported in the
        # same pass as the copies' other mistakes, not only once they are otherwise valid.
        self.ids: list[tuple[str, int | None]] = []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._say(None, None, None, f"cannot read the file: {exc}")
            return
        self.where = _Lines(text)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_LINE.search(str(exc))
            line = int(m.group(1)) if m else None
            if line is None and "end of document" in str(exc):
                line = max(1, len(self.where.lines))
            msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
            self._say(line, None, None, f"not valid TOML: {msg.lower()}")
            return
        for key in doc:
            if key != "rule":
                self._say(None, None, key, "unknown top-level key; a rule file holds "
                                           "[[rule]] tables")
        tables = doc.get("rule", [])
        if not isinstance(tables, list):
            self._say(None, None, "rule", "write each rule as a [[rule]] table")
            return
        for i, raw in enumerate(tables):
            self._one(i, raw)

    def _say(self, line: int | None, rule_id: str | None, field: str | None,
             message: str) -> None:
        self.problems.append(RuleProblem(self.file, line, rule_id, field, message))

    def _at(self, index: int, rule_id: str | None, found: list[tuple[str, str]],
            prefix: str = "") -> None:
        for field, message in found:
            path = prefix + field
            self._say(self.where.field(index, path), rule_id, path, message)

    def _one(self, index: int, raw: Any) -> None:
        if not isinstance(raw, dict):
            self._say(self.where.rule(index), None, None, "write each rule as a [[rule]] table")
            return
        rule_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        label = rule_id or f"#{index + 1}"
        if rule_id:
            self.ids.append((rule_id, self.where.rule(index)))
        kind = raw.get("kind")
        cls = KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            near = difflib.get_close_matches(str(kind), KINDS, n=1) if kind else []
            msg = ("is required" if kind is None else f"unknown rule kind {kind!r}"
                   + (f"; did you mean '{near[0]}'?" if near else ""))
            self._at(index, label, [("kind", f"{msg}; use one of {', '.join(KINDS)}")])
            return
        spec, found = _validate(cls, raw)
        self._at(index, label, found)
        if spec is None or found:
            return
        per_asset: dict[str, RuleSpec] = {}
        for asset, changes in spec.overrides.items():
            per_asset[asset] = self._override(index, label, spec, raw, asset, changes)
        self._select(index, label, spec, per_asset)

    def _override(self, index: int, label: str, spec: RuleSpec, raw: dict[str, Any],
                  asset: str, changes: dict[str, Any]) -> RuleSpec:
        prefix = f"overrides.{asset}."
        bad = [k for k in changes if k not in spec.OVERRIDABLE]
        self._at(index, label, [(k, "cannot be changed per asset; overrides may change "
                                    + ", ".join(spec.OVERRIDABLE)) for k in bad], prefix)
        if not spec.matches_asset(asset):
            self._at(index, label, [("", "this rule does not cover that asset")],
                     prefix.rstrip("."))
        merged = {**raw, **{k: v for k, v in changes.items() if k not in bad}, "overrides": {}}
        got, found = _validate(type(spec), merged)
        self._at(index, label, found, prefix)
        return got or spec

    def _select(self, index: int, label: str, spec: RuleSpec,
                per_asset: dict[str, RuleSpec]) -> None:
        assets = tuple(spec.assets or ([spec.asset] if spec.asset else []))
        pattern = spec.asset_pattern
        if self.known is not None:
            unknown = [a for a in assets if a not in self.known]
            if unknown:
                self._at(index, label, [("assets" if spec.assets else "asset",
                                         f"unknown asset {', '.join(map(repr, unknown))}")])
            if pattern is not None:
                assets = tuple(a for a in sorted(self.known) if fnmatch.fnmatchcase(a, pattern))
                if not assets:
                    self._at(index, label, [("asset_pattern", f"{pattern!r} matches none of "
                                                              "the known assets")])
                pattern = None
        self.rules.append(RuleDef(spec, self.file, self.where.rule(index), assets, pattern,
                                  per_asset))


def load_rule_files(paths: Sequence[Path],
                    known_assets: Collection[str] | None = None) -> RuleSet:
    """Validate every file; return the rules, or raise `RuleFileError` listing every problem.

    With `known_assets`, asset names are checked and patterns expanded now; without, pattern
    rules are built for each matching asset when it first sends data.
    """
    problems: list[RuleProblem] = []
    rules: list[RuleDef] = []
    seen: dict[str, str] = {}  # rule id -> where it is first written
    for path in paths:
        loaded = _FileLoader(Path(path), known_assets)
        problems.extend(loaded.problems)
        for rule_id, line in loaded.ids:
            first = seen.get(rule_id)
            if first is not None:
                problems.append(RuleProblem(loaded.file, line, rule_id, "id",
                                            f"duplicate rule id; first defined at {first}"))
            else:
                seen[rule_id] = loaded.file if line is None else f"{loaded.file}:{line}"
        rules.extend(loaded.rules)
    if problems:
        raise RuleFileError(problems)
    return RuleSet(rules, [str(p) for p in paths])


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe_rules(rules: RuleSet | int, instances: int | None = None,
                   pattern_rules: int | None = None) -> str:
    """The one wording of rule counts, for `check`, the log and the status page.

    A rule instance is one rule applied to one asset. A pattern rule (`asset_pattern`) gets
    an instance per matching asset when that asset first reports, so before data arrives it
    counts none: "7 rules (9 rule instances: one per rule and asset; 2 pattern rules add one
    per matching asset that reports)". Give a `RuleSet`, or the counts of a running engine.
    """
    if isinstance(rules, RuleSet):
        instances = sum(len(r.assets) for r in rules.rules)
        pattern_rules = sum(r.pattern is not None for r in rules.rules)
        rules = len(rules.rules)
    text = f"{_count(rules, 'rule')} ({_count(instances or 0, 'rule instance')}: one per rule " \
           "and asset"
    if pattern_rules:
        text += (f"; {_count(pattern_rules, 'pattern rule')} add"
                 f"{'s' if pattern_rules == 1 else ''} one per matching asset that reports")
    return text + ")"


def describe_running(rules: int, instances: int, pattern_rules: int,
                     pattern_instances: int) -> str:
    """The rule counts of a running engine (the log's start-up line, the status page).

    `instances` is every instance built, `pattern_instances` those of them a pattern rule built
    for an asset that reported (restored after a restart too). Said apart: "7 rules (3 rule
    instances for named assets; 2 pattern rules build instances as assets report: 1 built so
    far)". A named count that is 0 only because every rule is a pattern rule is left out rather
    than said as "0 rule instances". Without pattern rules: `describe_rules`, as in `check`.
    """
    if not pattern_rules:
        return describe_rules(rules, instances, 0)
    named = instances - pattern_instances
    parts = [] if not named else [_count(named, "rule instance") + " for named assets"]
    parts.append(f"{_count(pattern_rules, 'pattern rule')} "
                 f"{'builds' if pattern_rules == 1 else 'build'} instances as assets report: "
                 f"{pattern_instances} built so far")
    return f"{_count(rules, 'rule')} ({'; '.join(parts)})"
