"""What a technician writes in a rule file: one strict pydantic model per rule kind.

Pydantic checks types and unknown keys; `problems()` on each model checks what only the
combination of fields can tell (a clear level on the wrong side of the alarm level), in plain
words, naming the field. Nothing here runs per sample.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from gateway.settings import StrictModel

Seconds = Annotated[float, Field(ge=0.0, le=30 * 86400.0)]
Band = Annotated[list[float], Field(min_length=2, max_length=2)]
RuleId = Annotated[str, Field(min_length=1, max_length=80,
                              pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]

PLACEHOLDERS = ("asset", "signal", "value", "rule_id")
FieldProblem = tuple[str, str]  # (field, plain message)


class SpecModel(StrictModel):
    model_config = ConfigDict(strict=True)


class SuppressSpec(SpecModel):
    """Mute the rule while `signal` of the same asset equals `equals` (e.g. maintenance_mode 1)."""

    signal: str = Field(min_length=1)
    equals: float


class ConditionSpec(SpecModel):
    """One condition of a combination rule: exactly one of above, below or equals."""

    signal: str = Field(min_length=1)
    above: float | None = None
    below: float | None = None
    equals: float | None = None


class RuleSpec(SpecModel):
    """Fields every rule kind has."""

    id: RuleId
    kind: str
    description: str = ""
    asset: str | None = None
    assets: list[str] | None = None
    asset_pattern: str | None = None
    overrides: dict[str, dict[str, Any]] = {}
    severity: int = Field(3, ge=1, le=4)
    title: str = "{rule_id} on {asset}"
    priority: int | None = Field(None, ge=1, le=4)  # default: the severity
    failure_code: str = ""
    breakdown: bool = False
    long_text: str = ""
    # open work on the asset that someone else created: create ours anyway (None: the
    # upstream's default, "create"), link to it, or skip (gateway/workflow.py)
    existing_work: Literal["create", "link", "skip"] | None = None
    # the request was completed upstream while the condition is still active here: leave it,
    # say so (comment), or raise a new request after the cooldown (gateway/status_poll.py)
    closed_upstream: Literal["leave", "comment", "new_request"] = "leave"
    reraise_cooldown_seconds: float = Field(3600.0, ge=0)
    suppress_while: list[SuppressSpec] = []
    # During a flood on its line, this rule's raises keep their own request instead of being
    # rolled up into the line's incident. Routing, not behaviour: left out of the fingerprint
    # (exclude), so turning it on keeps the rule's state across a restart.
    always_individual: bool = Field(False, exclude=True)

    @field_validator("suppress_while", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    # Keys a per-asset override may change: levels, timings, severity.
    OVERRIDABLE: ClassVar[tuple[str, ...]] = ("severity", "priority", "on_delay_seconds",
                                    "off_delay_seconds")

    def signals(self) -> list[str]:
        raise NotImplementedError

    def matches_asset(self, asset: str) -> bool:
        if self.asset_pattern is not None:
            return fnmatch.fnmatchcase(asset, self.asset_pattern)
        return asset == self.asset or asset in (self.assets or ())

    def problems(self) -> list[FieldProblem]:
        out: list[FieldProblem] = []
        chosen = [k for k in ("asset", "assets", "asset_pattern") if getattr(self, k) is not None]
        if len(chosen) != 1:
            out.append(("asset", "give exactly one of asset, assets or asset_pattern"
                         + (f" (found {', '.join(chosen)})" if chosen else "")))
        if self.assets is not None and not self.assets:
            out.append(("assets", "the list of assets is empty"))
        if self.assets is not None and len(set(self.assets)) != len(self.assets):
            out.append(("assets", "an asset is listed twice"))
        for name in ("title", "long_text"):
            bad = _bad_placeholder(getattr(self, name))
            if bad:
                out.append((name, bad))
        return out


class _Debounced(RuleSpec):
    on_delay_seconds: Seconds = 0.0
    off_delay_seconds: Seconds = 0.0


class _Levels(_Debounced):
    """Alarm levels with optional hysteresis, shared by threshold and rate rules."""

    above: float | None = None
    below: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None

    OVERRIDABLE = (*RuleSpec.OVERRIDABLE, "above", "below", "clear_below", "clear_above")

    def _level_problems(self, words: str, bands: bool) -> list[FieldProblem]:
        given = [k for k in ("above", "below", "outside", "inside")
                 if getattr(self, k, None) is not None]
        allowed = "above, below, outside or inside" if bands else "above or below"
        if len(given) != 1:
            return [("above", f"give exactly one of {allowed}"
                     + (f" (found {', '.join(given)})" if given else ""))]
        form = given[0]
        out: list[FieldProblem] = []
        wrong_clear = {"above": ("clear_above", "clear_inside", "clear_outside"),
                       "below": ("clear_below", "clear_inside", "clear_outside"),
                       "outside": ("clear_below", "clear_above", "clear_outside"),
                       "inside": ("clear_below", "clear_above", "clear_inside")}[form]
        right = {"above": "clear_below", "below": "clear_above", "outside": "clear_inside",
                 "inside": "clear_outside"}[form]
        for name in wrong_clear:
            if getattr(self, name, None) is not None:
                article = "a" if form == "below" else "an"
                out.append((name, f"{name} does not go with {form}; {article} {form}-{words} "
                                  f"rule clears with {right}"))
        if form == "above" and self.clear_below is not None and self.above is not None \
                and self.clear_below > self.above:
            out.append(("clear_below", f"clear level {self.clear_below:g} is above the alarm "
                                       f"level {self.above:g} for an above-{words} rule"))
        if form == "below" and self.clear_above is not None and self.below is not None \
                and self.clear_above < self.below:
            out.append(("clear_above", f"clear level {self.clear_above:g} is below the alarm "
                                       f"level {self.below:g} for a below-{words} rule"))
        return out


class ThresholdSpec(_Levels):
    """A value beyond a level (or a band) for long enough; optionally N of the last M samples."""

    kind: Literal["threshold"]
    signal: str = Field(min_length=1)
    outside: Band | None = None
    inside: Band | None = None
    clear_inside: Band | None = None
    clear_outside: Band | None = None
    count: int | None = Field(None, ge=1, le=1000)
    of_last_samples: int | None = Field(None, ge=1, le=1000)

    OVERRIDABLE = (*_Levels.OVERRIDABLE, "outside", "inside", "clear_inside", "clear_outside",
                   "count", "of_last_samples")

    def signals(self) -> list[str]:
        return [self.signal, *(s.signal for s in self.suppress_while)]

    def problems(self) -> list[FieldProblem]:
        out = super().problems() + self._level_problems("threshold", bands=True)
        for name in ("outside", "inside", "clear_inside", "clear_outside"):
            band = getattr(self, name)
            if band is not None and not band[0] < band[1]:
                out.append((name, f"the band [{band[0]:g}, {band[1]:g}] must go from low to "
                                  "high"))
        if self.outside and self.clear_inside and not (
                self.outside[0] <= self.clear_inside[0] < self.clear_inside[1] <= self.outside[1]):
            out.append(("clear_inside", "the clear band must lie inside the alarm band "
                                        f"[{self.outside[0]:g}, {self.outside[1]:g}]"))
        if self.inside and self.clear_outside and not (
                self.clear_outside[0] <= self.inside[0] < self.inside[1] <= self.clear_outside[1]):
            out.append(("clear_outside", "the clear band must enclose the alarm band "
                                         f"[{self.inside[0]:g}, {self.inside[1]:g}]"))
        if (self.count is None) != (self.of_last_samples is None):
            out.append(("count", "count and of_last_samples go together "
                                 "(e.g. count = 3, of_last_samples = 5)"))
        elif self.count is not None and self.of_last_samples is not None \
                and self.count > self.of_last_samples:
            out.append(("count", f"count {self.count} is more than of_last_samples "
                                 f"{self.of_last_samples}"))
        return out


class RateSpec(_Levels):
    """The change of a signal within a sliding window, e.g. temperature up 5 °C in 10 minutes.

    `above` is a rise (units per window), `below` a fall (a negative number).
    """

    kind: Literal["rate"]
    signal: str = Field(min_length=1)
    window_seconds: float = Field(gt=0.0, le=7 * 86400.0)

    OVERRIDABLE = (*_Levels.OVERRIDABLE, "window_seconds")

    def signals(self) -> list[str]:
        return [self.signal, *(s.signal for s in self.suppress_while)]

    def problems(self) -> list[FieldProblem]:
        return super().problems() + self._level_problems("rate", bands=False)


class StaleSpec(RuleSpec):
    """No sample at all (of any quality) for longer than `limit_seconds`."""

    kind: Literal["stale"]
    signal: str = Field(min_length=1)
    limit_seconds: float = Field(gt=0.0, le=30 * 86400.0)

    OVERRIDABLE = (*RuleSpec.OVERRIDABLE, "limit_seconds")

    def signals(self) -> list[str]:
        return [self.signal, *(s.signal for s in self.suppress_while)]


class BadQualitySpec(RuleSpec):
    """Bad quality without a break for longer than `limit_seconds`: a failed sensor."""

    kind: Literal["bad_quality"]
    signal: str = Field(min_length=1)
    limit_seconds: Seconds
    off_delay_seconds: Seconds = 0.0

    OVERRIDABLE = (*RuleSpec.OVERRIDABLE, "limit_seconds")

    def signals(self) -> list[str]:
        return [self.signal, *(s.signal for s in self.suppress_while)]


class CombinationSpec(_Debounced):
    """All (or any) of several conditions on one asset, on the latest value of each signal."""

    kind: Literal["combination"]
    all_of: list[ConditionSpec] | None = None
    any_of: list[ConditionSpec] | None = None
    max_age_seconds: float = Field(60.0, gt=0.0, le=86400.0)

    OVERRIDABLE = (*_Debounced.OVERRIDABLE, "max_age_seconds")

    @property
    def conditions(self) -> list[ConditionSpec]:
        return self.all_of if self.all_of is not None else (self.any_of or [])

    def signals(self) -> list[str]:
        return [*(c.signal for c in self.conditions), *(s.signal for s in self.suppress_while)]

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if (self.all_of is None) == (self.any_of is None):
            out.append(("all_of", "give exactly one of all_of or any_of"))
            return out
        field = "all_of" if self.all_of is not None else "any_of"
        if not self.conditions:
            out.append((field, "needs at least one condition"))
        for i, c in enumerate(self.conditions):
            n = sum(x is not None for x in (c.above, c.below, c.equals))
            if n != 1:
                out.append((f"{field}[{i}]", f"condition on {c.signal} needs exactly one of "
                                             "above, below or equals"))
        return out


KINDS: dict[str, type[RuleSpec]] = {
    "threshold": ThresholdSpec,
    "rate": RateSpec,
    "stale": StaleSpec,
    "bad_quality": BadQualitySpec,
    "combination": CombinationSpec,
}


def _bad_placeholder(text: str) -> str:
    try:
        text.format(**{name: "" for name in PLACEHOLDERS})
    except KeyError as exc:
        return (f"unknown placeholder {{{exc.args[0]}}}; use "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
    except (IndexError, ValueError):
        return "braces must hold a placeholder such as {asset}; write {{ or }} for a brace"
    return ""
