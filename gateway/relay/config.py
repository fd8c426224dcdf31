"""The relay's own config file (`relay.toml`): strict, with units in the names.

The `[[upstreams]]` are the gateway's own upstream models (rest, sap_pm, maximo), so a relay
builds exactly the sinks a gateway would, with their exactly-once look-ups.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from gateway.config import ConfigError, Problem, UpstreamConfig, _plain, _strip_tags, _where
from gateway.settings import StrictModel
from gateway.tomllines import TomlLines
from gateway.upstream.nats_config import NatsConnection


class RelaySettings(StrictModel):
    name: str = "relay"  # this process, in logs and the NATS connection name
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class ConsumerSettings(StrictModel):
    """The one durable pull consumer that every relay of the fleet shares."""

    stream: str = Field(default="PLANTBRIDGE", min_length=1)
    durable: str = Field(default="plantbridge-relay", pattern=r"^[A-Za-z0-9_-]+$")
    filter_subject: str = "plantbridge.>"
    # Fleet-wide cap on events handed out and not yet acknowledged, over all relays: what a
    # plant-wide incident across 100 gateways can put in flight against the EAM at once.
    max_ack_pending: int = Field(default=64, ge=1)
    ack_wait_seconds: float = Field(default=60.0, gt=0)
    # Deliveries of one event before it goes to the dead-letter stream. Counted by the relay,
    # not the server (the consumer itself redelivers for ever), so an event is never left
    # stranded unacknowledged when a relay dies on its last delivery.
    max_deliver: int = Field(default=1000, ge=1)
    fetch_batch: int = Field(default=32, ge=1, le=1024)
    in_flight: int = Field(default=32, ge=1)  # events this relay works on at once
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    dead_letter_stream: str = Field(default="PLANTBRIDGE_DLQ", min_length=1)
    dead_letter_prefix: str = "plantbridge-dlq"
    receipts_bucket: str = Field(default="plantbridge_receipts", pattern=r"^[A-Za-z0-9_-]+$")
    # Fleet-wide request rates (gateway/relay/ratelimit.py): one key per upstream in this bucket
    limits_bucket: str = Field(default="plantbridge_limits", pattern=r"^[A-Za-z0-9_-]+$")
    # Replicas of the relay tier's own storage (dead letters, receipts) when created: 3 on a
    # JetStream cluster, so losing one server loses neither.
    replicas: int = Field(default=1, ge=1, le=5)
    # How long a receipt is kept: longer than any event can wait in the hub stream.
    receipts_ttl_seconds: float = Field(default=30 * 86400.0, gt=0)
    heartbeat_subject: str = "plantbridge.*.gateway.*.heartbeat"
    # What the relays did with each event, for `plantbridge relay --trace` (relay/trace.py)
    trace: bool = True
    trace_stream: str = Field(default="PLANTBRIDGE_TRACE", min_length=1)
    trace_prefix: str = "plantbridge-trace"
    trace_max_age_seconds: float = Field(default=7 * 86400.0, gt=0)
    # and at most this much (oldest steps go first): ~200 bytes a step, ~6 steps an event
    trace_max_bytes: int = Field(default=1 << 30, ge=1 << 20)


class FleetRate(StrictModel):
    """`[rate_limits.<upstream>]`: requests per second to one upstream from all relays together.

    Lives in the relay's config, not in `[[upstreams]]`, because the upstream models are the
    gateway's own (where a limit is one box's); here it is the whole fleet's."""

    rate_per_second: float = Field(gt=0, le=10_000)
    # This relay's own limit while the shared bucket is unreachable; unset: rate_per_second
    # (right for one relay; with N relays set rate / N, or the EAM may see N times the rate).
    fallback_rate_per_second: float | None = Field(default=None, gt=0, le=10_000)

    @property
    def fallback(self) -> float:
        return self.fallback_rate_per_second or self.rate_per_second


class RelayHttp(StrictModel):
    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: int = Field(default=8390, ge=0, le=65535)


class RelayConfig(StrictModel):
    relay: RelaySettings = RelaySettings()
    nats: NatsConnection = NatsConnection()
    consumer: ConsumerSettings = ConsumerSettings()
    http: RelayHttp = RelayHttp()
    upstreams: list[UpstreamConfig] = Field(min_length=1)
    rate_limits: dict[str, FleetRate] = {}

    @model_validator(mode="after")
    def _no_backbone_loop(self) -> RelayConfig:
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        if any(u.type == "nats" for u in self.upstreams):
            raise ValueError("a relay forwards to rest, sap_pm or maximo, not back to nats")
        unknown = sorted(set(self.rate_limits) - set(names))
        if unknown:
            raise ValueError(f"rate_limits for {', '.join(unknown)}: no upstream of that name "
                             f"(upstreams: {', '.join(names)})")
        return self


def load_relay_config(path: Path) -> RelayConfig:
    """The validated relay config, or ConfigError with one Problem per mistake."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "", "file not found")]) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem(str(path), "", "", f"cannot read the file: {exc}")]) from None
    try:
        return RelayConfig.model_validate(raw)
    except ValidationError as exc:  # in the same words and with lines, as `check` says it
        lines = TomlLines(text)
        problems = []
        for err in exc.errors():
            loc = _strip_tags(tuple(err["loc"]))
            where, fld = _where(raw, loc)
            problems.append(Problem(str(path), where, fld, _plain(dict(err), fld),
                                    lines.line(loc)))
        raise ConfigError(problems) from None
