"""Prometheus metrics, read from the live components at scrape time (nothing on the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.flood import alarm_metric_families
from gateway.identity_probe import identity_metric_families

Snapshot = Callable[[], dict[str, Any]]


class GatewayCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        p = s["pipeline"]
        for name, doc in (("samples", "Samples received from all sources"),
                          ("rejected_invalid", "Samples with non-finite values refused"),
                          ("raised", "Condition episodes raised"),
                          ("cleared", "Condition episodes cleared"),
                          ("messages", "Upstream messages committed to the outbox"),
                          ("commit_failures", "Outbox commits that failed and were retried"),
                          ("evaluation_errors",
                           "Rule evaluations, ticks and sample listeners that raised (a bug; "
                           "see the log)")):
            yield CounterMetricFamily(f"plantbridge_{name}", doc, value=p[name])

        src_state = GaugeMetricFamily("plantbridge_source_up", "1 when the source is connected",
                                      labels=["source", "state"])
        src_samples = CounterMetricFamily("plantbridge_source_samples",
                                          "Samples delivered by a source", labels=["source"])
        src_rej = CounterMetricFamily("plantbridge_source_rejected",
                                      "Input rejected by a source, by reason",
                                      labels=["source", "reason"])
        for src in s["sources"]:
            src_state.add_metric([src["name"], src["state"]],
                                 1.0 if src["state"] == "connected" else 0.0)
            src_samples.add_metric([src["name"]], src["samples"])
            for reason, n in src["rejected"].items():
                src_rej.add_metric([src["name"], reason], n)
        yield src_state
        yield src_samples
        yield src_rej

        o = s["outbox"]
        pending = GaugeMetricFamily("plantbridge_outbox_pending", "Records waiting for delivery",
                                    labels=["sink"])
        dead = GaugeMetricFamily("plantbridge_outbox_dead", "Dead-lettered records",
                                 labels=["sink"])
        # Every configured sink gets a figure, 0 when it has nothing waiting: an absent series
        # cannot be told from a scrape that failed, and alerts on `> 0` need the 0 to compare.
        configured = [str(u["name"]) for u in s["upstreams"]]
        for counts, family in ((o.get("pending") or {}, pending), (o.get("dead") or {}, dead)):
            # ...and a sink removed by a reload still shows what it left behind.
            for sink in configured + [k for k in counts if k not in configured]:
                family.add_metric([str(sink)], counts.get(sink, 0))
        yield pending
        yield dead
        yield GaugeMetricFamily("plantbridge_outbox_oldest_pending_age_seconds",
                                "Age of the oldest undelivered record",
                                value=o.get("oldest_pending_age_seconds") or 0.0)
        yield GaugeMetricFamily("plantbridge_outbox_bytes", "Outbox database size",
                                value=o.get("bytes", 0))
        yield GaugeMetricFamily("plantbridge_outbox_budget_bytes", "Outbox size budget",
                                value=o.get("budget_bytes") or 0)
        yield GaugeMetricFamily("plantbridge_outbox_full", "1 when the buffer budget is reached",
                                value=1.0 if o.get("full") else 0.0)
        yield GaugeMetricFamily("plantbridge_storage_error",
                                "1 while commits fail (disk full, I/O error)",
                                value=1.0 if p["storage_problem"] else 0.0)

        fwd_n = CounterMetricFamily("plantbridge_upstream_deliveries",
                                    "Delivery outcomes per sink", labels=["sink", "outcome"])
        breaker = GaugeMetricFamily("plantbridge_upstream_breaker_open",
                                    "1 while the sink's circuit breaker is open", labels=["sink"])
        probe_ok = GaugeMetricFamily("plantbridge_upstream_probe_ok",
                                     "1 when the last probe reached the upstream and it let us "
                                     "in, 0 when it failed (absent until the first probe)",
                                     labels=["sink"])
        for f in s["upstreams"]:
            for outcome in ("accepted", "rejected", "retried"):
                fwd_n.add_metric([f["name"], outcome], f[outcome])
            breaker.add_metric([f["name"]], 0.0 if f["breaker"] == "closed" else 1.0)
            if f.get("probe"):
                probe_ok.add_metric([f["name"]], 1.0 if f["probe"]["ok"] else 0.0)
        yield fwd_n
        yield breaker
        yield probe_ok
        yield GaugeMetricFamily("plantbridge_open_episodes", "Condition episodes now open",
                                value=len(s["open_episodes"]))
        yield GaugeMetricFamily("plantbridge_last_reload_ok",
                                "1 when the last config reload succeeded",
                                value=0.0 if s["reload"]["error"] else 1.0)
        yield from _integrity(s)
        if "alarms" in s:
            yield from alarm_metric_families(s["alarms"])
        yield from identity_metric_families(s)  # plantbridge_identity_problems{upstream}


def _integrity(s: dict[str, Any]) -> Iterator[Metric]:
    """Never zero, never two: clocks, resends, durable rule state, refused and stuck work."""
    skew = GaugeMetricFamily("plantbridge_source_clock_skew_seconds",
                             "Device clock minus gateway clock (negative: behind)",
                             labels=["source"])
    counted = CounterMetricFamily("plantbridge_source_timestamps",
                                  "Device readings whose time was not trusted, by why",
                                  labels=["source", "why"])
    skipped = CounterMetricFamily("plantbridge_samples_skipped",
                                  "Samples not evaluated because they were not newer than the "
                                  "last evaluated one (resends, redeliveries)",
                                  labels=["source", "reason"])
    restarts = CounterMetricFamily("plantbridge_source_worker_restarts",
                                   "Ingest worker processes restarted after they died "
                                   "(MQTT `workers`; the broker redelivers what they held)",
                                   labels=["source"])
    for src in s["sources"]:
        if src.get("clock_skew_seconds") is not None:
            skew.add_metric([src["name"]], src["clock_skew_seconds"])
        for why, n in (src.get("counted") or {}).items():
            if why == "worker_restarts":  # a health count of its own, not a timestamp verdict
                restarts.add_metric([src["name"]], n)
            else:
                counted.add_metric([src["name"], why], n)
        skipped.add_metric([src["name"], "duplicate"], src.get("duplicates_skipped", 0))
    yield skew
    yield counted
    yield skipped
    yield restarts
    yield CounterMetricFamily("plantbridge_rule_state_writes",
                              "Rule state rows committed with the transitions (journal rows, "
                              "checkpoint snapshots and deletions: rules/journal.py)",
                              value=s["pipeline"].get("states_written", 0))
    refused = GaugeMetricFamily("plantbridge_rule_instances_refused",
                                "Assets a pattern rule refused at its instance cap",
                                labels=["rule"])
    for rule_id, n in (s.get("refused_instances") or {}).items():
        refused.add_metric([rule_id], n)
    yield refused
    stuck = GaugeMetricFamily("plantbridge_outbox_stuck",
                              "Records failing past forwarding.stuck_after_seconds",
                              labels=["sink"])
    for sink, n in (s["outbox"].get("stuck") or {}).items():
        stuck.add_metric([sink], n)
    yield stuck
    yield GaugeMetricFamily("plantbridge_outbox_notices",
                            "Unacknowledged notices (a salvaged or damaged outbox)",
                            value=len(s.get("outbox_notices") or []))


def render(snapshot: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(snapshot))
    return generate_latest(registry)
