"""From a validated rule definition to running instances, one per asset."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rules.episode import RequestTemplate, RuleInstance
from rules.spec import (
    BadQualitySpec,
    CombinationSpec,
    RateSpec,
    RuleSpec,
    StaleSpec,
    ThresholdSpec,
)
from rules.threshold import INF, BandThreshold, CountThreshold, InsideThreshold, RateRule
from rules.watch import BadQualityRule, CombinationRule, StaleRule

# existing_work and closed_upstream are upstream policies (gateway/workflow.py,
# gateway/status_poll.py), not how the rule evaluates: setting them must not discard the
# rule's persisted state as a "changed rule"
_NOT_BEHAVIOUR = {"description", "asset", "assets", "asset_pattern", "overrides",
                  "existing_work", "closed_upstream", "reraise_cooldown_seconds"}


@dataclass(frozen=True, slots=True)
class RuleDef:
    """One `[[rule]]` table: its base spec, where it came from, and the assets it covers."""

    spec: RuleSpec
    file: str
    line: int | None = None
    assets: tuple[str, ...] = ()  # named (or expanded from the pattern against known assets)
    pattern: str | None = None  # expanded lazily, per asset seen, when no asset list is known
    per_asset: Mapping[str, RuleSpec] = field(default_factory=dict)  # with overrides applied

    @property
    def rule_id(self) -> str:
        return self.spec.id

    def matches(self, asset: str) -> bool:
        return asset in self.assets or (self.pattern is not None
                                         and fnmatch.fnmatchcase(asset, self.pattern))

    def build(self, asset: str) -> RuleInstance:
        return build_instance(self.per_asset.get(asset, self.spec), asset)


def fingerprint(spec: RuleSpec, asset: str) -> str:
    """Equal for equal behaviour on this asset; comments and asset lists do not count."""
    body = spec.model_dump(mode="json", exclude=_NOT_BEHAVIOUR)
    text = json.dumps([asset, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _levels(spec: ThresholdSpec | RateSpec) -> tuple[str, float, float, float, float]:
    """(form, lo, hi, clear_lo, clear_hi) for above, below, outside and inside."""
    if spec.above is not None:
        clear = spec.clear_below if spec.clear_below is not None else spec.above
        return "above", -INF, spec.above, -INF, clear
    if spec.below is not None:
        clear = spec.clear_above if spec.clear_above is not None else spec.below
        return "below", spec.below, INF, clear, INF
    assert isinstance(spec, ThresholdSpec)
    if spec.outside is not None:
        lo, hi = spec.outside
        clo, chi = spec.clear_inside or spec.outside
        return "outside", lo, hi, clo, chi
    assert spec.inside is not None
    lo, hi = spec.inside
    clo, chi = spec.clear_outside or spec.inside
    return "inside", lo, hi, clo, chi


def build_instance(spec: RuleSpec, asset: str) -> RuleInstance:
    request = RequestTemplate(spec.title, spec.priority or spec.severity, spec.failure_code,
                              spec.breakdown, spec.long_text)
    common = (spec.id, asset)
    fp = fingerprint(spec, asset)
    mute = tuple((s.signal, s.equals) for s in spec.suppress_while)
    if isinstance(spec, ThresholdSpec):
        form, lo, hi, clo, chi = _levels(spec)
        on, off = spec.on_delay_seconds, spec.off_delay_seconds
        if spec.count is not None and spec.of_last_samples is not None:
            return CountThreshold(*common, spec.signal, spec.severity, request, fp, form=form,
                                  lo=lo, hi=hi, clear_lo=clo, clear_hi=chi, count=spec.count,
                                  of_last=spec.of_last_samples, suppress=mute,
                                  on_delay=on, off_delay=off)
        if form == "inside":
            return InsideThreshold(*common, spec.signal, spec.severity, request, fp, lo=lo,
                                   hi=hi, clear_lo=clo, clear_hi=chi, suppress=mute,
                                  on_delay=on, off_delay=off)
        return BandThreshold(*common, spec.signal, spec.severity, request, fp, form=form, lo=lo,
                             hi=hi, clear_lo=clo, clear_hi=chi, suppress=mute,
                                  on_delay=on, off_delay=off)
    if isinstance(spec, RateSpec):
        _, lo, hi, clo, chi = _levels(spec)
        return RateRule(*common, spec.signal, spec.severity, request, fp,
                        window=spec.window_seconds, lo=lo, hi=hi, clear_lo=clo, clear_hi=chi,
                        suppress=mute, on_delay=spec.on_delay_seconds,
                        off_delay=spec.off_delay_seconds)
    if isinstance(spec, StaleSpec):
        return StaleRule(*common, spec.signal, spec.severity, request, fp,
                         limit=spec.limit_seconds, suppress=mute)
    if isinstance(spec, BadQualitySpec):
        return BadQualityRule(*common, spec.signal, spec.severity, request, fp, mute,
                              on_delay=spec.limit_seconds, off_delay=spec.off_delay_seconds)
    if isinstance(spec, CombinationSpec):
        conditions = tuple(
            (c.signal, op, level)
            for c in spec.conditions
            for op, level in (("above", c.above), ("below", c.below), ("equals", c.equals))
            if level is not None
        )
        return CombinationRule(*common, spec.severity, request, fp, conditions=conditions,
                               need_all=spec.all_of is not None, max_age=spec.max_age_seconds,
                               suppress=mute, on_delay=spec.on_delay_seconds,
                               off_delay=spec.off_delay_seconds)
    raise TypeError(f"no rule kind for {type(spec).__name__}")


class RuleSet:
    """Validated rules from one or more files, ready to build a `RuleEngine`.

    Rules that name their assets are built at once; `asset_pattern` rules loaded without a list
    of known assets are built for each matching asset the first time it sends data.
    """

    __slots__ = ("files", "rules")

    def __init__(self, rules: Iterable[RuleDef], files: Iterable[str] = ()) -> None:
        self.rules = tuple(rules)
        self.files = tuple(files)

    @property
    def instance_count(self) -> int:
        """Instances known now: one per named asset, plus one per not yet expanded pattern."""
        return sum(len(r.assets) + (r.pattern is not None) for r in self.rules)

    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.rules]

    def instances(self) -> list[RuleInstance]:
        """Instances for every named asset."""
        return [r.build(asset) for r in self.rules for asset in r.assets]

    def instances_for(self, asset: str) -> list[RuleInstance]:
        """Instances of pattern rules for an asset not named in them."""
        return [r.build(asset) for r in self.rules
                if r.pattern is not None and asset not in r.assets and r.matches(asset)]

    def has_patterns(self) -> bool:
        return any(r.pattern is not None for r in self.rules)

    def get(self, rule_id: str) -> RuleDef | None:
        return next((r for r in self.rules if r.rule_id == rule_id), None)
