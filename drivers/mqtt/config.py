"""Config of one MQTT source (one broker): connection, session, topic routes, payload decoding."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from gateway.produces import Produced, Produces
from gateway.settings import Secret, StrictModel, TlsSettings
from gateway.timebase import ZonedTimeSettings
from gateway.valid_range import ValidRangeSettings

if TYPE_CHECKING:
    from drivers.mqtt.driver import MqttSource
    from drivers.mqtt.pool import MqttWorkerSource

_CAPTURES = {"asset", "signal"}
# One worker at most. With two, a shared subscription splits the messages between them and
# their order is lost: after a restart each worker's backlog comes back in its own time, so a
# reading can be evaluated after a newer one of its signal (skipped as older: an excursion
# never raises) or a mute after the readings it should have muted (a muted asset raises).
# Found by the crash trials (`--profile delays --workers 2`: 2 requests too many in 60
# kills); tests/e2e/test_worker_order.py loses excursions that way with two workers.
MAX_WORKERS = 1
TOO_MANY_WORKERS = (
    "workers = {workers}: at most 1. Two or more worker processes share the subscription, and "
    "the broker hands an asset's messages to either of them: their order is lost, and with it "
    "the promise (a late reading is skipped as older, so an excursion raises nothing; a late "
    "mute lets a muted asset raise a request). workers = 1 keeps the order and takes the "
    "MQTT work off the daemon's core; more throughput: protocol = \"3.1.1\", or split the "
    "plant between sources by asset (each with its own worker), never an asset's signals "
    "between two")


class Protocol(enum.StrEnum):
    V311 = "3.1.1"
    V5 = "5"


class SessionMode(enum.StrEnum):
    """`persistent`: the broker keeps our subscriptions and unacknowledged QoS 1 messages while
    we are away (a crash or restart loses nothing). `clean`: every connection starts afresh."""

    PERSISTENT = "persistent"
    CLEAN = "clean"


class RetainedPolicy(enum.StrEnum):
    """Retained messages are the broker's stored last value, resent on every (re)subscribe.
    `accept` them (right when payloads carry their timestamp) or `ignore` them (counted under
    `retained`): without a timestamp a stale value would look fresh."""

    ACCEPT = "accept"
    IGNORE = "ignore"


class PayloadFormat(enum.StrEnum):
    """How a payload becomes samples.

    - `value`: the payload is one number as text (`7.3`, `-1e3`, `true`); topic gives asset+signal.
    - `json`: a JSON number, an object (value at `value_path`, optional `timestamp_path`,
      `quality_path`, `asset_path`, `signal_path`), or an array of such numbers/objects.
    - `json_fields`: a JSON object whose keys are signal names (`{"vibration": 7.1, "ts": ...}`);
      the topic (or `asset_path`) gives the asset. `fields_path` points at a nested object.
    """

    VALUE = "value"
    JSON = "json"
    JSON_FIELDS = "json_fields"


class TimestampUnit(enum.StrEnum):
    """Unit of numeric timestamps. `auto` tells seconds, ms, us and ns apart by magnitude."""

    AUTO = "auto"
    SECONDS = "s"
    MILLISECONDS = "ms"
    MICROSECONDS = "us"
    NANOSECONDS = "ns"


class PayloadOptions(StrictModel):
    """Decoding options shared by pattern subscriptions and explicit topics."""

    format: PayloadFormat = PayloadFormat.JSON
    value_path: str = "value"  # dotted path into a JSON object ("data.value")
    # The device's time: epoch s/ms/us/ns, or ISO 8601 (without a zone or offset it is read in
    # the source's `timezone`, and not trusted when none is set). Unset: no device time.
    timestamp_path: str | None = None
    timestamp_unit: TimestampUnit = TimestampUnit.AUTO
    quality_path: str | None = None  # "good" | "uncertain" | "bad" (or true/false)
    asset_path: str | None = None  # json/json_fields: the asset named inside the payload
    signal_path: str | None = None  # json: the signal named inside the payload (arrays)
    fields_path: str | None = None  # json_fields: dotted path to the object of signals
    fields: list[str] | None = None  # json_fields: only these keys; unset: every other key
    qos: Literal[0, 1] = 1  # QoS 2 adds nothing here: a QoS 1 duplicate is harmless to rules

    def _routes(self, asset: str | None, signal: str | None, via: str) -> list[Produced]:
        """What this route delivers; None where the topic or the payload names it at run time
        (a named wildcard, `asset_path`, `signal_path`, or every key of a json_fields object)."""
        asset = None if self.asset_path is not None else asset
        if self.signal_path is not None:
            signal = None
        if self.format is PayloadFormat.JSON_FIELDS and signal is None and self.fields:
            return [Produced(asset, name, via) for name in self.fields]
        return [Produced(asset, signal, via)]

    def _check_sources(self, label: str, asset: str | None, signal: str | None,
                       captured: set[str]) -> None:
        has_asset = asset is not None or "asset" in captured or self.asset_path is not None
        has_signal = (signal is not None or "signal" in captured or self.signal_path is not None
                      or self.format is PayloadFormat.JSON_FIELDS)
        if not has_asset:
            raise ValueError(f"{label}: no asset: give asset, a +asset wildcard or asset_path")
        if not has_signal:
            raise ValueError(f"{label}: no signal: give signal, a +signal wildcard, "
                             "signal_path or format = \"json_fields\"")
        if self.format is not PayloadFormat.JSON and self.signal_path is not None:
            raise ValueError(f"{label}: signal_path only applies to format = \"json\"")
        if self.format is not PayloadFormat.JSON_FIELDS and (
                self.fields is not None or self.fields_path is not None):
            raise ValueError(f"{label}: fields and fields_path only apply to "
                             "format = \"json_fields\"")
        if self.format is PayloadFormat.VALUE and any(
                p is not None for p in (self.timestamp_path, self.quality_path, self.asset_path)):
            raise ValueError(f"{label}: format = \"value\" payloads carry no paths")


def pattern_captures(pattern: str) -> set[str]:
    """Validate an MQTT filter with named wildcards (`+asset`, `#rest`); return capture names."""
    if not pattern or len(pattern.encode()) > 65535:
        raise ValueError("pattern must be 1..65535 bytes")
    levels = pattern.split("/")
    names: set[str] = set()
    for i, level in enumerate(levels):
        if level.startswith("#"):
            if i != len(levels) - 1:
                raise ValueError(f"{pattern!r}: '#' must be the last level")
            continue
        if level.startswith("+"):
            name = level[1:]
            if name:
                if name not in _CAPTURES:
                    raise ValueError(f"{pattern!r}: wildcard name {name!r} is not asset or signal")
                if name in names:
                    raise ValueError(f"{pattern!r}: +{name} appears twice")
                names.add(name)
            continue
        if "+" in level or "#" in level:
            raise ValueError(f"{pattern!r}: wildcards must fill a whole level")
    return names


class Subscription(PayloadOptions):
    """A topic filter with named wildcards: `plant/+asset/vibration/+signal`, `plant/+asset/#`.

    `asset`/`signal` fix what the topic does not carry (a fixed value wins over a wildcard).
    """

    pattern: str
    asset: str | None = None
    signal: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Subscription:
        self._check_sources(f"subscription {self.pattern!r}", self.asset, self.signal,
                            pattern_captures(self.pattern))
        return self


class TopicEntry(PayloadOptions):
    """One exact topic (no wildcards) mapped to an asset and signal: the explicit table."""

    topic: str
    asset: str = Field(min_length=1)
    signal: str | None = None  # may be omitted only with format = "json_fields"

    @model_validator(mode="after")
    def _check(self) -> TopicEntry:
        if not self.topic or "+" in self.topic or "#" in self.topic:
            raise ValueError(f"topic {self.topic!r} must be an exact topic (no wildcards)")
        self._check_sources(f"topic {self.topic!r}", self.asset, self.signal, set())
        return self


class MqttSourceConfig(ZonedTimeSettings, ValidRangeSettings):
    """One MQTT broker. QoS 1 messages are acknowledged only after what they caused is committed.

    Time settings (`timestamps`, `timezone`, `max_clock_skew_seconds`, `duplicates`) come from
    `ZonedTimeSettings` and apply to the times payloads carry at `timestamp_path`.
    """

    type: Literal["mqtt"] = "mqtt"
    name: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)  # 8883 is the usual TLS port
    protocol: Protocol = Protocol.V5
    client_id: str | None = None  # unset: "plantbridge-<name>" (stable: sessions need it)
    username: str | None = None
    password: Secret | None = None
    tls: TlsSettings | None = None
    session: SessionMode = SessionMode.PERSISTENT
    session_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=0, le=0xFFFFFFFF)  # MQTT 5
    keepalive_seconds: int = Field(default=30, ge=5, le=65535)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    # Bounded intake: past this many undelivered messages we stop reading the socket, so the
    # broker holds the rest (its in-flight window fills; nothing is dropped or acknowledged).
    # MQTT 5 also announces it as Receive Maximum.
    queue_max_messages: int = Field(default=1000, ge=1, le=65535)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1)
    rejection_quiet_seconds: float = Field(default=60.0, gt=0)  # ends a logged trouble episode
    retained: RetainedPolicy = RetainedPolicy.ACCEPT
    # Ingest in a worker process (drivers/mqtt/pool.py): 0 = the client runs in the daemon's
    # process; 1 = one process (`python -m drivers.mqtt.worker`) owns the connection, decodes
    # and routes, and hands compact batches to the daemon, which acks through it after the
    # commit. Not more: two workers share the subscription, the broker hands an asset's
    # messages to either, and their order is lost (`MAX_WORKERS`). Measured figures and why
    # the default is 0: config/examples/source-mqtt.toml.
    workers: int = Field(default=0, ge=0)
    subscriptions: list[Subscription] = []
    topics: list[TopicEntry] = []

    @model_validator(mode="after")
    def _check(self) -> MqttSourceConfig:
        if not self.subscriptions and not self.topics:
            raise ValueError("give at least one [[sources.subscriptions]] or [[sources.topics]]")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        if self.reconnect_max_seconds < self.reconnect_initial_seconds:
            raise ValueError("reconnect_max_seconds is below reconnect_initial_seconds")
        if self.client_id is not None and not self.client_id:
            raise ValueError("client_id must not be empty (persistent sessions need one)")
        if self.workers > MAX_WORKERS:
            raise ValueError(TOO_MANY_WORKERS.format(workers=self.workers))
        seen: set[str] = set()
        for entry in self.topics:
            if entry.topic in seen:
                raise ValueError(f"topic {entry.topic!r} is listed twice")
            seen.add(entry.topic)
        return self

    def produces(self) -> Produces:
        """The routes' pairs: known where a route fixes asset and signal, open where a named
        wildcard or a payload path decides them (see `Produced`)."""
        routes = [r for sub in self.subscriptions
                  for r in sub._routes(sub.asset, sub.signal, f"topic {sub.pattern}")]
        routes += [r for t in self.topics for r in t._routes(t.asset, t.signal, f"topic {t.topic}")]
        return Produces.of(self.name, routes)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"plantbridge-{self.name}"

    def worker_config(self) -> MqttSourceConfig:
        """The config the worker runs: in process (workers = 0), with the source's client id,
        so going from 0 to 1 worker and back keeps the broker session."""
        return self.model_copy(update={"client_id": self.effective_client_id, "workers": 0})

    def build(self) -> MqttSource | MqttWorkerSource:
        if self.workers >= 1:
            from drivers.mqtt.pool import MqttWorkerSource

            return MqttWorkerSource(self)
        from drivers.mqtt.driver import MqttSource

        return MqttSource(self)
