"""Rules against sources: does any configured source deliver what a rule watches?

A rule whose asset or signal no source can produce never fires, and nobody notices until the
failure it was written for goes unreported. Where every source names its pairs (Modbus maps,
OPC UA node lists, MQTT routes with fixed asset and signal), that is an error; where a source
takes names from the data (a named wildcard such as `plant/+asset/+signal`), it is a warning
that says which route leaves it open.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.produces import Produced, Produces, coverage
from rules import RuleProblem, RuleSet
from rules.build import RuleDef
from rules.spec import CombinationSpec

_SHOWN = 6  # pairs listed in an error, enough to spot a typo without flooding the screen


def _fields(rule: RuleDef) -> list[tuple[str, str]]:
    """(field, signal) for every signal a rule reads, the field as a technician finds it."""
    spec = rule.spec
    muted = [("suppress_while", s.signal) for s in spec.suppress_while]
    if isinstance(spec, CombinationSpec):
        field = "all_of" if spec.all_of is not None else "any_of"
        return [(field, c.signal) for c in spec.conditions] + muted
    return [("signal", s) for s in spec.signals()[:len(spec.signals()) - len(muted)]] + muted


def _known(sources: Sequence[Produces]) -> str:
    pairs = sorted({f"{r.asset}/{r.signal}" for p in sources for r in p.routes if r.exact})
    more = f" and {len(pairs) - _SHOWN} more" if len(pairs) > _SHOWN else ""
    return ", ".join(pairs[:_SHOWN]) + more if pairs else "no fixed pairs"


Unsure = dict[tuple[str, Produced], list[str]]  # (source, open route) -> rule ids it may feed


def rule_coverage(rules: RuleSet, sources: Sequence[Produces]
                  ) -> tuple[list[RuleProblem], Unsure]:
    """One error per asset and signal that nothing can produce; and, per source route that
    names assets or signals from the data, the rules that only it might feed (one warning
    per route reads better than one per rule: with `plant/+asset/+signal` it is every rule)."""
    errors: list[RuleProblem] = []
    unsure: Unsure = {}
    for rule in rules.rules:
        targets = [*rule.assets, *([rule.pattern] if rule.pattern is not None else [])]
        for target in targets:
            what = f"assets matching {target!r}" if target == rule.pattern else repr(target)
            for field, signal in _fields(rule):
                got = coverage(sources, target, signal)
                if got.found:
                    continue
                if got.unsure:
                    fed = unsure.setdefault(got.unsure[0], [])
                    if rule.rule_id not in fed:
                        fed.append(rule.rule_id)
                    continue
                errors.append(RuleProblem(
                    rule.file, rule.line, rule.rule_id, field,
                    f"no configured source produces {signal!r} for {what}; the sources "
                    f"produce {_known(sources)}"))
    return errors, unsure


def unsure_words(route: Produced, rule_ids: Sequence[str]) -> str:
    """The warning for one open route, in plain words."""
    named = ("asset and signal names" if route.asset is None and route.signal is None else
             "asset names" if route.asset is None else "signal names")
    shown = ", ".join(rule_ids[:_SHOWN]) + (f" and {len(rule_ids) - _SHOWN} more"
                                             if len(rule_ids) > _SHOWN else "")
    return (f"{route.via} takes {named} from the data, so whether it feeds these rules shows "
            f"only when data arrives: {shown}")


def range_coverage(pattern: str, signal: str, produced: Produces) -> str | None:
    """The problem with a source's valid range for `signal` on assets matching `pattern` when
    the source itself can never deliver that signal: the range checks nothing (a typo such as
    "vibraton" leaves the sensor it was written for unguarded). None when it can, or when a
    route names signals from the data (it may deliver anything)."""
    got = coverage([produced], pattern, signal)
    if got.found or got.unsure:
        return None
    return (f"this source produces no {signal!r} for assets matching {pattern!r}, so this "
            f"range checks nothing; it produces {_known([produced])}")
