"""Roll-up: a flood of raises on one line becomes ONE incident request upstream.

ISA-18.2 counts more than 10 alarms per operator in 10 minutes as a flood. When more than
`flood_raises` raises hit one line within `flood_window_seconds`, the raise that crosses the
limit opens an incident for the line: one maintenance request (asset: the line's own asset id)
whose long text names every rolled-up episode. From then on, raises on that line are rolled up:
their own request is not built, they are listed in an incident update instead, and so are their
clears. Raises of rules with `always_individual = true`, and critical (severity 1) raises unless
configured otherwise, keep their own request (and count toward the flood). The raises before the
limit was crossed were already requested on their own: nothing is taken back.

Nothing is lost: every rolled-up episode is listed exactly once in the incident's texts (the
request, or an update when it came later or when one text would be too long), and each of its
clears once too. When fewer than `flood_raises` raises remain in the window and every rolled-up
episode has cleared, the incident gets its clear (a status update) and normal behaviour resumes.

The flood state of a line (window, incident, members, what was reported) is a rule-state row
(`*flood`, line), committed in the same transaction as the transitions that changed it; the
incident id is derived from the line and the time of the raise that opened it, so a restart
mid-flood neither opens a second incident nor lists an episode twice. Pure and clock-injected:
the pipeline calls `shape` under its commit lock (see `gateway.pipeline.MessageHook`).
"""

from __future__ import annotations

import enum
import fnmatch
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from pydantic import Field

from gateway.messages import dedup_key, iso_time
from gateway.model import MessageKind, OutboxMessage, RuleState, Transition, TransitionKind
from gateway.pipeline import Shaped
from gateway.settings import StrictModel

log = logging.getLogger("plantbridge.rollup")

FLOOD_STATE = "*flood"  # rule id of a line's flood state row; rule ids never start with "*"
# Rule id of a link row (asset: the rolled-up episode id; data: [version, incident id, line,
# rolled up at]): what `plantbridge trace EPISODE` shows; pruned with the outbox retention.
LINK_STATE = "*rollup"
LINK_VERSION = 1
STATE_VERSION = 1
ROLLUP_RULE = "*rollup"  # rule_id in the incident's bodies
MAX_LINE_CHARS = 110

LineOf = Callable[[str], "str | None"]  # asset -> line (None: on no line, never rolled up)


# --- config ([alarms] in plantbridge.toml) ------------------------------------------------------


class RollupMode(enum.StrEnum):
    ON = "on"
    OFF = "off"


class CriticalPolicy(enum.StrEnum):
    INDIVIDUAL = "individual"  # a severity-1 raise keeps its own request during a flood
    ROLL_UP = "roll_up"


class LineConfig(StrictModel):
    """`[alarms.lines.line-3]`: the assets of a line (until the asset registry names them)."""

    assets: list[str] = []  # asset ids or patterns such as "pump-*"
    incident_asset: str | None = Field(None, min_length=1)  # default: the line's name
    upstreams: list[str] | None = None  # incident goes to these; default: every upstream


class AlarmsConfig(StrictModel):
    """`[alarms]`: roll-up of floods, chattering limit. Defaults follow ISA-18.2 (a flood is
    more than 10 alarms in 10 minutes)."""

    rollup: RollupMode = RollupMode.ON
    flood_raises: int = Field(10, ge=1)  # N: more than this many raises ...
    flood_window_seconds: float = Field(600.0, gt=0)  # ... within M seconds on one line
    critical: CriticalPolicy = CriticalPolicy.INDIVIDUAL
    incident_update_seconds: float = Field(60.0, ge=0)  # at most one update per interval
    incident_list_max: int = Field(30, ge=1, le=200)  # episodes named in one message's text
    chatter_transitions_per_hour: int = Field(10, ge=1)  # K: raises+clears of one rule/asset
    lines: dict[str, LineConfig] = {}

    @property
    def rollup_enabled(self) -> bool:
        return self.rollup is RollupMode.ON

    def line_of(self) -> LineOf:
        """Line membership from `[alarms.lines]` patterns: the first line that matches."""
        table = [(name, tuple(cfg.assets)) for name, cfg in self.lines.items()]
        cache: dict[str, str | None] = {}

        def line_of(asset: str) -> str | None:
            try:
                return cache[asset]
            except KeyError:
                found = next((name for name, pats in table
                              if any(fnmatch.fnmatchcase(asset, p) for p in pats)), None)
                if len(cache) < 100_000:
                    cache[asset] = found
                return found

        return line_of


@dataclass(slots=True)
class Member:
    """A rolled-up episode. `listed` / `clear_listed`: named in a message already."""

    episode_id: str
    rule_id: str
    asset: str
    raised_at: float
    priority: int
    reason: str
    cleared_at: float | None = None
    listed: bool = False
    clear_listed: bool = False

    def row(self) -> list[Any]:
        return [self.episode_id, self.rule_id, self.asset, self.raised_at, self.priority,
                self.reason, self.cleared_at, self.listed, self.clear_listed]


@dataclass(slots=True)
class Incident:
    incident_id: str
    started_at: float
    title: str
    priority: int
    updates: int = 0  # update messages sent: numbers the next one's key
    last_update_at: float = 0.0
    members: dict[str, Member] = field(default_factory=dict)
    # Derived, not stored: members with something not yet listed, and how many are open. Kept
    # as they change, so a tick costs O(1) per line whatever the size of the incident.
    news: dict[str, Member] = field(default_factory=dict)
    open: int = 0

    def add(self, m: Member) -> None:
        self.members[m.episode_id] = m
        self.open += m.cleared_at is None
        if not m.listed or (m.cleared_at is not None and not m.clear_listed):
            self.news[m.episode_id] = m

    def clear(self, m: Member, ts: float) -> None:
        m.cleared_at = ts
        self.open -= 1
        self.news[m.episode_id] = m

    def take(self, n: int) -> list[Member]:
        """The next `n` members with news, oldest first (the caller lists them)."""
        return [self.news.pop(key) for key in list(islice(self.news, n))]


@dataclass(slots=True)
class LineFlood:
    raises: deque[float] = field(default_factory=deque)  # raise times within the window
    incident: Incident | None = None

    def snapshot(self) -> Any:
        inc = self.incident
        incident = None if inc is None else [
            inc.incident_id, inc.started_at, inc.title, inc.priority, inc.updates,
            inc.last_update_at, [m.row() for m in inc.members.values()]]
        return [STATE_VERSION, list(self.raises), incident]

    @classmethod
    def load(cls, data: Any) -> LineFlood:
        """Raises ValueError (or TypeError) when the data is not a flood state of ours."""
        version, raises, incident = data
        if version != STATE_VERSION:
            raise ValueError(f"flood state version {version!r}")
        flood = cls(deque(float(t) for t in raises))
        if incident is not None:
            iid, started, title, prio, updates, last, rows = incident
            inc = Incident(str(iid), float(started), str(title), int(prio), int(updates),
                           float(last))
            for r in rows:
                m = Member(str(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4]), str(r[5]),
                           None if r[6] is None else float(r[6]), bool(r[7]), bool(r[8]))
                inc.add(m)
            flood.incident = inc
        return flood


def incident_id(line: str, started_at: float) -> str:
    return f"incident/{line}/{round(started_at * 1000)}"


class RollUp:
    """The roll-up message hook. `individual(rule_id)`: the rule says always_individual."""

    def __init__(self, cfg: AlarmsConfig, line_of: LineOf, individual: Callable[[str], bool],
                 site: str) -> None:
        self._cfg = cfg
        self._line_of = line_of
        self._individual = individual
        self._site = site
        self._lines: dict[str, LineFlood] = {}
        self.incidents_opened = 0
        self.rolled_up = 0

    # --- restart ---------------------------------------------------------------------------

    def restore(self, states: Iterable[RuleState]) -> int:
        """Take back the `*flood` rows; a row that does not fit is logged and dropped."""
        n = 0
        for s in states:
            if s.rule_id != FLOOD_STATE or s.data is None:
                continue
            try:
                self._lines[s.asset] = LineFlood.load(s.data)
                n += 1
            except (ValueError, TypeError, IndexError) as exc:
                log.error("flood state of line %s does not fit, starting it clean: %s",
                          s.asset, exc)
        return n

    # --- the hook ----------------------------------------------------------------------------

    def shape(self, transitions: Sequence[Transition], now: float,
              sinks: Sequence[str]) -> Shaped:
        if not self._cfg.rollup_enabled:
            return Shaped(transitions)
        out: list[Transition] = []
        changed: set[str] = set()
        opened: set[str] = set()
        links: list[RuleState] = []
        for t in transitions:
            line = self._line_of(t.asset)
            if line is None:
                out.append(t)
                continue
            flood = self._lines.setdefault(line, LineFlood())
            if t.kind is TransitionKind.RAISED:
                if self._raise(line, flood, t, opened):
                    changed.add(line)
                    assert flood.incident is not None
                    links.append(RuleState(LINK_STATE, t.episode_id, "", [
                        LINK_VERSION, flood.incident.incident_id, line, now]))
                    continue  # rolled up: listed in the incident instead
                changed.add(line)
            else:
                member = None if flood.incident is None else flood.incident.members.get(
                    t.episode_id)
                if member is not None and member.cleared_at is None:
                    assert flood.incident is not None
                    flood.incident.clear(member, t.ts)
                    changed.add(line)
                    continue
            out.append(t)
        messages: list[OutboxMessage] = []
        for line, flood in self._lines.items():
            if self._report(line, flood, now, sinks, line in opened, messages):
                changed.add(line)
        states = [self._state(line) for line in sorted(changed)] + links
        for line in [ln for ln in changed if self._idle(ln)]:
            del self._lines[line]
        return Shaped(out, messages, states)

    def _raise(self, line: str, flood: LineFlood, t: Transition, opened: set[str]) -> bool:
        """Count the raise; True when it is rolled up into the line's incident."""
        window = self._cfg.flood_window_seconds
        flood.raises.append(t.ts)
        while flood.raises and flood.raises[0] < t.ts - window:
            flood.raises.popleft()
        inc = flood.incident
        if inc is None:
            if len(flood.raises) <= self._cfg.flood_raises:
                return False
            span = max(1, round((t.ts - flood.raises[0]) / 60.0 + 0.499))
            inc = flood.incident = Incident(
                incident_id(line, t.ts), t.ts,
                f"Plant incident on {line}: {len(flood.raises)} conditions in {span} min",
                t.request.priority)
            opened.add(line)
            self.incidents_opened += 1
            log.warning("flood on line %s: %d raises within %g s; rolling up into incident %s",
                        line, len(flood.raises), window, inc.incident_id)
        if self._keeps_own_request(t):
            return False
        inc.add(Member(t.episode_id, t.rule_id, t.asset, t.ts, t.request.priority, t.reason))
        inc.priority = min(inc.priority, t.request.priority)
        self.rolled_up += 1
        return True

    def _keeps_own_request(self, t: Transition) -> bool:
        if self._individual(t.rule_id):
            return True
        return t.severity == 1 and self._cfg.critical is CriticalPolicy.INDIVIDUAL

    def _idle(self, line: str) -> bool:
        flood = self._lines[line]
        return flood.incident is None and not flood.raises

    def _state(self, line: str) -> RuleState:
        flood = self._lines[line]
        idle = flood.incident is None and not flood.raises
        return RuleState(FLOOD_STATE, line, "", None if idle else flood.snapshot())

    # --- messages ----------------------------------------------------------------------------

    def _report(self, line: str, flood: LineFlood, now: float, sinks: Sequence[str],
                opened: bool, out: list[OutboxMessage]) -> bool:
        """Build the messages the line's incident needs now; True when its state changed."""
        inc = flood.incident
        if inc is None:
            return False
        window = self._cfg.flood_window_seconds
        while flood.raises and flood.raises[0] < now - window:
            flood.raises.popleft()
        ended = len(flood.raises) < self._cfg.flood_raises and inc.open == 0
        changed = False
        if opened:
            out.extend(self._messages(line, inc, MessageKind.MAINTENANCE_REQUEST, "request",
                                      inc.take(self._cfg.incident_list_max), sinks, now))
            inc.last_update_at = now
            changed = True
        # What did not fit the request goes at once; later news at most once an interval.
        due = opened or now - inc.last_update_at >= self._cfg.incident_update_seconds
        while inc.news and (ended or due):
            out.extend(self._messages(line, inc, MessageKind.STATUS_UPDATE,
                                      f"update-{inc.updates + 1}",
                                      inc.take(self._cfg.incident_list_max), sinks, now))
            inc.updates += 1
            inc.last_update_at = now
            changed = True
        if ended:
            out.extend(self._messages(line, inc, MessageKind.STATUS_UPDATE, "cleared", [],
                                      sinks, now))
            log.warning("flood on line %s is over: incident %s cleared (%d episodes rolled "
                        "up)", line, inc.incident_id, len(inc.members))
            flood.incident = None
            changed = True
        return changed

    def _messages(self, line: str, inc: Incident, kind: MessageKind, intent: str,
                  members: list[Member], sinks: Sequence[str], now: float) -> list[OutboxMessage]:
        lines_cfg = self._cfg.lines.get(line)
        asset = (lines_cfg.incident_asset if lines_cfg and lines_cfg.incident_asset else line)
        targets = [s for s in sinks if lines_cfg is None or lines_cfg.upstreams is None
                   or s in lines_cfg.upstreams]
        if not targets:  # a line naming no running upstream: send everywhere, never nowhere
            log.error("[alarms.lines.%s] upstreams %s names no configured upstream; the "
                      "incident goes to all (%s)", line, lines_cfg and lines_cfg.upstreams,
                      ", ".join(sinks))
            targets = list(sinks)
        raised, cleared, text = [], [], []
        for m in members:
            if not m.listed:
                m.listed = True
                raised.append(m.episode_id)
                text.append(_cut(f"+ {m.asset} {m.rule_id} raised {iso_time(m.raised_at)} "
                                 f"[{m.episode_id}]: {m.reason}"))
            if m.cleared_at is not None and not m.clear_listed:
                m.clear_listed = True
                cleared.append(m.episode_id)
                text.append(_cut(f"- {m.asset} {m.rule_id} cleared {iso_time(m.cleared_at)} "
                                 f"[{m.episode_id}]"))
        key = dedup_key(inc.incident_id)
        body: dict[str, Any] = {
            "site": self._site, "dedup_key": key, "episode_id": inc.incident_id, "asset": asset,
            "signal": "", "rule_id": ROLLUP_RULE, "severity": inc.priority, "value": None,
            "line": line, "incident": True, "rolled_up": raised, "rolled_up_cleared": cleared,
        }
        if kind is MessageKind.MAINTENANCE_REQUEST:
            body |= {"kind": "request", "title": inc.title[:200], "priority": inc.priority,
                     "failure_code": "", "breakdown": False, "raised_at": iso_time(inc.started_at),
                     "reason": f"flood: more than {self._cfg.flood_raises} raises on {line} "
                               f"within {self._cfg.flood_window_seconds:g} s",
                     "long_text": "\n".join([f"Conditions rolled up into this incident "
                                             f"({len(raised)} listed here, later ones in "
                                             "updates):", *text])}
        elif intent == "cleared":
            body |= {"status": "cleared", "cleared_at": iso_time(now),
                     "reason": f"flood on {line} over; {len(inc.members)} episodes rolled up"}
        else:
            body |= {"status": "in_progress", "update": True, "updated_at": iso_time(now),
                     "reason": f"incident update {intent}: {len(raised)} more, {len(cleared)} "
                               "cleared", "note": "\n".join(text)}
        return [OutboxMessage(key=f"{intent}:{key}:{sink}", sink=sink, asset=asset,
                              episode_id=inc.incident_id, kind=kind, body=body, created_at=now)
                for sink in targets]

    # --- observation -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """For the status page: open incidents per line and what they hold."""
        incidents = []
        for line, flood in sorted(self._lines.items()):
            inc = flood.incident
            if inc is not None:
                incidents.append({
                    "line": line, "incident_id": inc.incident_id, "title": inc.title,
                    "started_at": iso_time(inc.started_at), "episodes": len(inc.members),
                    "open_episodes": inc.open,
                    "raises_in_window": len(flood.raises), "updates": inc.updates})
        return {"incidents": incidents, "incidents_opened": self.incidents_opened,
                "rolled_up": self.rolled_up}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS - 1] + "…"
