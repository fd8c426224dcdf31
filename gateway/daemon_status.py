"""What the running daemon says about itself: the problem list, `/status`, the heartbeat.

`DaemonStatus` is a view over a `Daemon`: it owns no state and does no I/O. It reads the
running components (sources, forwarders, probes, the rule engine) and the outbox figures that
`Daemon.refresh` keeps, and puts them in the words an operator reads on the page, in
`systemctl status` and in the log. Kept apart from gateway/daemon.py, which builds, supervises
and stops the components: this side only observes them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gateway import page_alarms
from gateway.http import age_words
from gateway.identity_probe import identity_status
from gateway.messages import iso_time
from gateway.timebase import gateway_now
from rules import RuleEngine
from rules import native as rules_native
from rules.loader import describe_running

if TYPE_CHECKING:
    from gateway.daemon import Daemon


# A rule evaluation error is a problem (page, /readyz, STATUS=) for this long after the last
# one: a bug hit once last week is not wrong now, and only a restart would have cleared it.
# The count stays in /status and `plantbridge_evaluation_errors_total`, the traceback in the log.
EVALUATION_ERROR_SECONDS = 3600.0


class DaemonStatus:
    """The daemon's observation side; `Daemon.problems()`, `delays()` and `snapshot()` call it."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    def one_line(self) -> str:
        """For systemd's STATUS= (what `systemctl status` shows): ok, or the first problem."""
        probs = self.problems()
        return "ok" if not probs else f"{len(probs)} problem(s): {probs[0]}"

    def problems(self) -> list[str]:
        """The one list of what is wrong, in plain words (the page, `/readyz`, STATUS=)."""
        d = self._d
        out = list(d.notices)
        out.extend(self._integrity_problems())
        for kind, src in d.sources.values():
            h = src.health()
            if h.state not in ("connected",):
                out.append(f"source {src.name} ({kind}) is {h.state}: {h.detail}")
        if d.probes is not None:
            out += d.probes.problems()
        if d.identity is not None:  # requests for these assets would be refused
            out += d.identity.problems()
        o = d.outbox_stats
        rows = d.status_rows
        now = gateway_now()
        for f in d.forwarders:
            waiting = (o.get("pending") or {}).get(f.sink.name, 0)
            if f.stats.hung:
                out.append(f"upstream {f.sink.name} is not answering (connection open, no "
                           f"response); {waiting} waiting")
        out += self.delays()
        for u in rows.urgent if rows else []:
            how = "dead-lettered" if u.state == "dead" else "still not delivered"
            why = f": {u.last_error}" if u.last_error else ""
            out.append(f"critical request (severity {u.severity}) for {u.asset} to upstream "
                       f"{u.sink} {how} after {age_words(now - u.created_at)}{why}")
        for sink, n in (o.get("dead") or {}).items():
            if n:
                last = [x for x in d.dead_list if x.sink == sink][-1:]
                why = f"; latest ({last[0].asset}): {last[0].reason}" if last else ""
                out.append(f"upstream {sink} has {n} dead-lettered record(s){why} (fix the "
                           "cause, then: plantbridge dead-letters --requeue all)")
        if o.get("full"):
            out.append("outbox budget reached: telemetry-derived records are being shed")
        st = d.pipeline.stats if d.pipeline is not None else None
        if (st is not None and st.last_evaluation_error_at is not None
                and now - st.last_evaluation_error_at < EVALUATION_ERROR_SECONDS):
            out.append(f"{st.evaluation_errors} rule evaluation error(s) (a bug; see the log, "
                       f"which says what was skipped), the last "
                       f"{age_words(now - st.last_evaluation_error_at)} ago: "
                       f"{st.last_evaluation_error}")
        for off in st.hooks_off if st is not None else ():
            out.append(f"message hook {off} is off after a bug (see the log): transitions go "
                       "out without it, so shelves and roll-ups may not hold raises back, "
                       "until the daemon restarts")
        if d.pipeline is not None and d.pipeline.stats.storage_problem:
            out.append(f"cannot write the outbox: {d.pipeline.stats.storage_problem}")
        if d.reload_state["error"]:
            out.append("last reload failed (still running the previous config)")
        if d.reload_state.get("restart_needed"):
            out.append("restart needed for changes to ["
                       + "], [".join(d.reload_state["restart_needed"]) + "]")
        return out

    def _integrity_problems(self) -> list[str]:
        """What threatens 'never zero, never two': a damaged outbox (until acknowledged), a
        record that keeps failing, pattern rules refusing assets, clocks beyond their limit."""
        d = self._d
        out = [f"{n} (acknowledge with: plantbridge outbox acknowledge)"
               for n in d.outbox_notices]
        out += self._stuck(requests=True)
        for kind, src in d.sources.values():
            note = src.health().clock_note
            if note:
                out.append(f"source {src.name} ({kind}): {note}")
        if d.pipeline is not None:
            for rule_id, n in sorted(d.pipeline.engine.refused_instances().items()):
                out.append(f"rule {rule_id} refused {n} asset(s): it has its "
                           f"[rules] max_instances_per_rule of "
                           f"{d.cfg.rules.max_instances_per_rule}")
        return out

    def _stuck(self, *, requests: bool) -> list[str]:
        """Records failing past `forwarding.stuck_after_seconds`: a maintenance request that
        cannot get through is a problem; a late status update only a delay."""
        d, out = self._d, []
        for sink, by_class in (d.outbox_stats.get("stuck_by_class") or {}).items():
            rec = by_class.get("request" if requests else "other")
            if rec is None:
                continue
            n, what = rec["count"], "request(s)" if requests else "record(s)"
            out.append(f"upstream {sink}: {n} {what} failing for over "
                       f"{d.cfg.forwarding.stuck_after_seconds:.0f} s, oldest {rec['id']} "
                       f"({rec['asset']}, {rec['attempts']} attempts, "
                       f"{rec['age_seconds']:.0f} s): {rec['last_error']}")
        return out

    def delays(self) -> list[str]:
        """Upstreams that fail to deliver. Shown with the problems, but on their own they leave
        /readyz green: a late low-priority update pages nobody. A critical request late past
        `http.critical_pending_seconds` is a problem of its own (`status_rows.urgent`)."""
        d = self._d
        o, out = d.outbox_stats, self._stuck(requests=False)
        for f in d.forwarders:
            waiting = (o.get("pending") or {}).get(f.sink.name, 0)
            if not f.stats.hung and f.stats.failing and waiting:
                age = (o.get("oldest_pending_age_by_sink") or {}).get(f.sink.name, 0.0)
                out.append(f"upstream {f.sink.name} is not delivering ({waiting} waiting, "
                           f"oldest {age_words(age)}): {f.stats.last_error}")
        return out

    def heartbeat_facts(self, max_listed: int = 20) -> dict[str, Any]:
        """For the backbone heartbeat: open episodes (count, and the first few) and the
        outbox backlog per upstream, from the figures `refresh` keeps (no query here)."""
        d = self._d
        p, o = d.pipeline, d.outbox_stats
        open_eps = [] if p is None else p.engine.open_episodes()
        return {"open_episodes": len(open_eps),
                "open": [{"episode_id": e.episode_id, "asset": e.asset, "rule_id": e.rule_id,
                          "severity": e.severity, "raised_at": e.raised_at}
                         for e in open_eps[:max_listed]],
                # every upstream, 0 included: "nothing waiting" is an answer too
                "backlog": {f.sink.name: (o.get("pending") or {}).get(f.sink.name, 0)
                            for f in d.forwarders},
                "dead": dict(o.get("dead") or {}),
                "oldest_pending_age_seconds": o.get("oldest_pending_age_seconds")}

    def snapshot(self) -> dict[str, Any]:
        """`/status`: what the page, `plantbridge status` and the metrics read."""
        d = self._d
        p = d.pipeline
        o, rows = d.outbox_stats, d.status_rows
        sources = []
        for kind, src in d.sources.values():
            h = src.health()
            sources.append({"name": src.name, "type": kind, "state": str(h.state),
                            "detail": h.detail, "samples": h.samples_total,
                            "rejected": dict(h.rejected),
                            "clock_skew_seconds": h.clock_skew_seconds,
                            "clock_note": h.clock_note, "counted": dict(h.counted),
                            "duplicates_skipped": 0 if p is None else
                            p.gate.skipped.get(src.name, 0)})
        probed = d.probes.results if d.probes is not None else {}
        # A last error is shown while it is current: once the upstream answers again, it goes.
        upstreams = [{"name": f.sink.name,
                      "breaker": "hung" if f.stats.hung else str(f.stats.breaker),
                      "failing": f.stats.failing, "hung": f.stats.hung,
                      "accepted": f.stats.accepted, "rejected": f.stats.rejected,
                      "retried": f.stats.retried,
                      "last_error": f.stats.last_error if f.stats.failing or f.stats.hung
                      else "",
                      "probe": probed[f.sink.name].as_dict() if f.sink.name in probed else None,
                      "pending": (o.get("pending") or {}).get(f.sink.name, 0),
                      "dead": (o.get("dead") or {}).get(f.sink.name, 0),
                      "oldest_pending_age_seconds":
                          (o.get("oldest_pending_age_by_sink") or {}).get(f.sink.name)}
                     for f in d.forwarders]
        raised = {x["episode_id"]: x for x in d.recent if x["kind"] == "raised"}
        episodes = []
        alarms = d.alarms.snapshot()
        held = {h["episode_id"] for h in alarms["shelving"].get("hidden_episodes", [])}
        for e in [] if p is None else p.engine.open_episodes():
            said: dict[str, Any] = dict(rows.facts.get(e.episode_id, {})) if rows else {}
            said |= raised.get(e.episode_id, {})
            episodes.append({
                "rule_id": e.rule_id, "asset": e.asset, "episode_id": e.episode_id,
                "severity": e.severity, "raised_at": iso_time(e.raised_at),
                "value": said.get("value"), "reason": said.get("reason", ""),
                "receipts": {sink: r for (sink, ep), r in (rows.receipts if rows else {}).items()
                             if ep == e.episode_id},
                # the request of each sink that has no receipt yet: pending | dead
                "undelivered": {sink: st for (sink, ep), st in
                                (rows.undelivered if rows else {}).items()
                                if ep == e.episode_id},
                # raised while shelved: no request is sent until the shelf ends
                "held_back": "shelved" if e.episode_id in held else None})
        dead = [{"id": x.id, "sink": x.sink, "asset": x.asset, "kind": str(x.kind),
                 "reason": x.reason, "failed_at": iso_time(x.failed_at),
                 "attempts": x.attempts} for x in d.dead_list]
        snap = {
            "site": d.cfg.gateway.site,
            "uptime_seconds": time.time() - d.started_at,
            "rule_engine": rules_native.describe(),  # compiled, or pure Python and why
            "problems": self.problems(),
            "delays": self.delays(),  # among the problems; alone they leave /readyz green
            "sources": sources,
            "upstreams": upstreams,
            "outbox": d.outbox_stats,
            "pipeline": asdict(p.stats) | {"uncommitted": p.uncommitted()} if p else {},
            "open_episodes": episodes,
            "dead_letters": dead,
            "recent_transitions": list(d.recent),
            "reload": d.reload_state | ({} if p is None else rule_counts(p.engine)),
            "refused_instances": {} if p is None else p.engine.refused_instances(),
            "outbox_notices": list(d.outbox_notices),
            "alarms": alarms,
            "upstream_status": {} if d.status_both_ways is None
            else d.status_both_ways.snapshot(),  # gateway/asset_status.py
            "identity": identity_status(None if d.identity is None  # identity_probe.py
                                        else d.identity.report),
        }
        snap |= page_alarms.page_keys(alarms)  # shelved assets, flood banner
        # --- the asset page (gateway/page_feed.py): cards built from the above ---
        return snap if d.page_feed is None else snap | d.page_feed.snapshot_keys(snap)


def rule_counts(engine: RuleEngine) -> dict[str, int]:
    """Rules as written, and instances built so far (pattern rules build per asset on data):
    what `describe_running` words, in the log and on the status page."""
    patterned = {r.rule_id for r in engine.rules.rules if r.pattern is not None}
    instances = engine.instances()
    return {"rules": len(engine.rule_ids()), "instances": len(instances),
            "pattern_rules": len(patterned),
            "pattern_instances": sum(inst.rule_id in patterned for inst in instances)}


def describe_running_rules(engine: RuleEngine) -> str:
    """The rule counts of a running engine, for the start-up line of the log."""
    return describe_running(**rule_counts(engine))
