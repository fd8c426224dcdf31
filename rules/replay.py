"""Run rules on recorded data: what would these rules have done, and what would a change do?

Deterministic: ticks fall on a fixed grid of data time (multiples of `tick_seconds`), run before
the first sample that is past them, so the same recording always gives the same transitions and
episode ids, however the input is cut into chunks. Samples the gateway would reject (a good
sample without a finite value) are skipped and counted, as the pipeline does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.model import Quality, Sample, Transition, TransitionKind
from rules.build import RuleSet
from rules.engine import RuleEngine
from rules.recording import RecordingError, load_recording, read_csv, read_jsonl, write_jsonl

__all__ = ["Comparison", "Episode", "RecordingError", "ReplayResult", "Replayer", "RuleSummary",
           "compare", "format_comparison", "format_report", "load_recording", "pair",
           "read_csv", "read_jsonl", "replay", "result_of", "write_jsonl"]


@dataclass(frozen=True, slots=True)
class Episode:
    """One raise and its clear (None when still open at the end of the recording)."""

    rule_id: str
    asset: str
    episode_id: str
    raised: Transition
    cleared: Transition | None

    @property
    def start(self) -> float:
        return self.raised.ts

    @property
    def duration(self) -> float | None:
        return None if self.cleared is None else self.cleared.ts - self.raised.ts


@dataclass(slots=True)
class RuleSummary:
    rule_id: str
    episodes: int = 0
    open_at_end: int = 0
    active_seconds: float = 0.0  # closed episodes only
    longest_seconds: float = 0.0
    assets: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ReplayResult:
    transitions: list[Transition]
    episodes: list[Episode]
    summary: dict[str, RuleSummary]  # every rule of the set, in file order
    samples: int
    skipped: int
    first_ts: float | None
    last_ts: float | None


class Replayer:
    """A replay that can be fed in chunks; `finish()` gives the same result as one call."""

    __slots__ = ("_last", "_rules", "_step", "engine", "first_ts", "next_tick", "samples",
                 "skipped", "transitions")

    def __init__(self, rule_set: RuleSet, tick_seconds: float = 1.0) -> None:
        if not tick_seconds > 0:
            raise ValueError("tick_seconds must be positive")
        self._rules = rule_set
        self._step = tick_seconds
        self.engine = RuleEngine(rule_set)
        self.next_tick: int | None = None  # index k of the next tick at k * tick_seconds
        self.transitions: list[Transition] = []
        self.samples = 0
        self.skipped = 0
        self.first_ts: float | None = None
        self._last: float | None = None

    def feed(self, samples: Iterable[Sample]) -> None:
        engine, out, step = self.engine, self.transitions, self._step
        evaluate, tick = engine.evaluate, engine.tick
        k = self.next_tick
        due = math.inf if k is None else k * step  # time of the next tick
        bad = Quality.BAD
        n = skipped = 0
        last = self._last
        for s in samples:
            n += 1
            ts = s.source_ts
            if s.quality is not bad:
                v = s.value
                if v is None or v - v != 0.0:  # None, NaN or infinite: the pipeline rejects it
                    skipped += 1
                    continue
            if ts > due:
                assert k is not None
                while due < ts:
                    got = tick(due)
                    if got:
                        out.extend(got)
                    k += 1
                    due = k * step
            elif k is None:
                k = math.floor(ts / step) + 1
                due = k * step
                self.first_ts = ts
            got = evaluate(s)
            if got:
                out.extend(got)
            last = ts
        self.next_tick = k
        self._last = last
        self.samples += n
        self.skipped += skipped

    def finish(self) -> ReplayResult:
        return result_of(self._rules, self.transitions, self.samples, self.skipped,
                       self.first_ts, self._last)


def replay(rule_set: RuleSet, samples: Iterable[Sample], tick_seconds: float = 1.0) -> ReplayResult:
    """Run `rule_set` on `samples` (in their order) and tell what happened."""
    r = Replayer(rule_set, tick_seconds)
    r.feed(samples)
    return r.finish()


def result_of(rules: RuleSet, transitions: list[Transition], samples: int, skipped: int,
            first: float | None, last: float | None) -> ReplayResult:
    open_: dict[str, Transition] = {}
    episodes: list[Episode] = []
    for t in transitions:
        if t.kind is TransitionKind.RAISED:
            open_[t.episode_id] = t
        else:
            raised = open_.pop(t.episode_id, None)
            if raised is not None:
                episodes.append(Episode(t.rule_id, t.asset, t.episode_id, raised, t))
    episodes.extend(Episode(t.rule_id, t.asset, t.episode_id, t, None) for t in open_.values())
    episodes.sort(key=lambda e: (e.start, e.rule_id, e.asset))
    summary = {rid: RuleSummary(rid) for rid in rules.rule_ids()}
    for e in episodes:
        s = summary.setdefault(e.rule_id, RuleSummary(e.rule_id))
        s.episodes += 1
        s.assets.add(e.asset)
        if e.duration is None:
            s.open_at_end += 1
        else:
            s.active_seconds += e.duration
            s.longest_seconds = max(s.longest_seconds, e.duration)
    return ReplayResult(transitions, episodes, summary, samples, skipped, first, last)


# --- comparing two rule sets ---------------------------------------------------------------


@dataclass(slots=True)
class Comparison:
    """Episodes only the new rules have (added), only the old ones had (removed), and those both
    have but at different times (changed, as (old, new))."""

    old: ReplayResult
    new: ReplayResult
    added: list[Episode] = field(default_factory=list)
    removed: list[Episode] = field(default_factory=list)
    changed: list[tuple[Episode, Episode]] = field(default_factory=list)
    unchanged: int = 0


def _overlap(a: Episode, b: Episode, end: float) -> bool:
    a_end = a.cleared.ts if a.cleared else end
    b_end = b.cleared.ts if b.cleared else end
    return a.start <= b_end and b.start <= a_end


def compare(old: RuleSet, new: RuleSet, samples: Iterable[Sample],
            tick_seconds: float = 1.0) -> Comparison:
    """Replay both rule sets on the same samples and pair their episodes per rule and asset."""
    data: Sequence[Sample] = samples if isinstance(samples, Sequence) else list(samples)
    return pair(replay(old, data, tick_seconds), replay(new, data, tick_seconds))


def pair(a: ReplayResult, b: ReplayResult) -> Comparison:
    """Compare two replays of the same data: old rules `a`, new rules `b`."""
    end = max(a.last_ts or 0.0, b.last_ts or 0.0)
    out = Comparison(a, b)
    left = list(a.episodes)
    for e in b.episodes:
        match = next((o for o in left if (o.rule_id, o.asset) == (e.rule_id, e.asset)
                      and _overlap(o, e, end)), None)
        if match is None:
            out.added.append(e)
            continue
        left.remove(match)
        same_end = (match.cleared.ts if match.cleared else None) == (
            e.cleared.ts if e.cleared else None)
        if match.start == e.start and same_end:
            out.unchanged += 1
        else:
            out.changed.append((match, e))
    out.removed = left
    return out


# --- plain-text rendering ---------------------------------------------------------------------


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "still open"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _val(v: float | None) -> str:
    return "n/a" if v is None else f"{round(v, 3):g}"


def _timeline(result: ReplayResult) -> list[str]:
    ends = {e.episode_id: e.duration for e in result.episodes}
    lines = [f"{'time (UTC)':23}  {'event':7}  {'rule':32}  {'asset':12}  {'value':>8}  "
             f"{'lasted':>10}  reason"]
    for t in result.transitions:
        lasted = ends.get(t.episode_id)
        lines.append(f"{_time(t.ts):23}  {t.kind.upper():7}  {t.rule_id[:32]:32}  "
                     f"{t.asset[:12]:12}  {_val(t.value):>8}  {_dur(lasted):>10}  {t.reason}")
    return lines


def format_report(result: ReplayResult) -> str:
    """The timeline of raises and clears, then one line per rule."""
    span = (0.0 if result.first_ts is None or result.last_ts is None
            else result.last_ts - result.first_ts)
    head = (f"replayed {result.samples} samples from {_time(result.first_ts)} to "
            f"{_time(result.last_ts)} UTC ({_dur(span)} of data)")
    if result.skipped:
        head += f"; skipped {result.skipped} good-quality samples without a finite value"
    lines = [head, ""]
    if result.transitions:
        lines += _timeline(result)
    else:
        lines.append("no raise and no clear")
    lines += ["", f"{'rule':32}  {'episodes':>8}  {'open at end':>11}  {'assets':>6}  "
                  f"{'active total':>12}  {'longest':>10}"]
    for s in result.summary.values():
        lines.append(f"{s.rule_id[:32]:32}  {s.episodes:>8}  {s.open_at_end:>11}  "
                     f"{len(s.assets):>6}  {_dur(s.active_seconds):>12}  "
                     f"{_dur(s.longest_seconds):>10}")
    return "\n".join(lines)


def _ep(e: Episode) -> str:
    end = _time(e.cleared.ts) if e.cleared else "still open"
    return (f"{e.rule_id} on {e.asset}: raised {_time(e.start)} ({_val(e.raised.value)}), "
            f"cleared {end} [{_dur(e.duration)}]")


def format_comparison(c: Comparison) -> str:
    """What the new rules add, remove and change compared with the old ones."""
    lines = [f"old rules: {len(c.old.episodes)} episode(s); new rules: {len(c.new.episodes)} "
             f"episode(s) on the same {c.new.samples} samples",
             f"added {len(c.added)}, removed {len(c.removed)}, changed {len(c.changed)}, "
             f"unchanged {c.unchanged}"]
    for e in c.added:
        lines.append(f"+ {_ep(e)}")
    for e in c.removed:
        lines.append(f"- {_ep(e)}")
    for o, n in c.changed:
        lines.append(f"~ {_ep(o)}")
        lines.append(f"  now {_ep(n)}")
    return "\n".join(lines)
