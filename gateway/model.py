"""The data types that cross package boundaries.

Everyone may import this module; it imports nothing of ours. Types on the per-sample path are
immutable and cheap to build: frozen, slotted dataclasses; `Sample`, made once per reading, a
named tuple; the types made once per transition or outbox record, `hot_record`s (frozen to the
type checker, without the frozen `__init__`'s cost at run time). Pydantic is for config only:
it is too slow per sample.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    # The checker sees the declaration as written: frozen, so no code of ours assigns a field.
    from dataclasses import dataclass as hot_record
else:
    def hot_record(*, frozen: bool, slots: bool) -> Callable[[type], type]:
        """A frozen dataclass to the type checker, a plain slotted one at run time.

        For the types made once per transition or outbox record (`Transition`,
        `RequestDetails`, `OutboxMessage`, `OutboxRecord`, `Delivery`): a frozen dataclass's
        `__init__` pays an `object.__setattr__` per field, ~970 ns for ten fields against
        ~170 ns (timeit, CPython 3.11), and a burst of transitions makes three of them per
        transition (benchmarks/pipeline_bench.py: 18 % of the loop's time). Equality and
        hashing stay those of a frozen dataclass; mypy strict refuses any assignment to a
        field, which is what keeps them immutable.
        """
        return dataclass(slots=slots, unsafe_hash=frozen)


class Quality(enum.IntEnum):
    """OPC UA style quality, reduced to the three classes rules care about."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Sample(NamedTuple):
    """One reading of one signal of one asset. `value` is None when quality is BAD.

    Two times, never mixed: `source_ts` is the time rules see, on the gateway's time base (the
    gateway's receive time, or the device's time when its source is configured to trust it and
    its clock is within the skew limit). `device_ts` is the device's own timestamp as it said it,
    kept as evidence and to order samples of one signal; None when the device gave none.

    Immutable like the other data types, but a named tuple rather than a frozen dataclass: it is
    the one type made once per reading (hundreds of thousands a second from batched MQTT
    payloads), and a frozen dataclass pays an `object.__setattr__` per field: building one cost
    about four times a tuple's (timeit, CPython 3.11), reading a field costs the same. Attribute
    names and meaning are unchanged. Being a tuple, a Sample also compares equal to a plain
    tuple of the same fields; nothing relies on that. Decoders that build many at once use
    `Sample._make(fields)`, or map `tuple.__new__` over rows (the same, without a Python call).
    """

    asset: str
    signal: str
    value: float | None
    quality: Quality
    source_ts: float  # seconds since the epoch, on the gateway's time base (see above)
    device_ts: float | None = None  # the device's own timestamp, seconds since the epoch


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Samples that arrived together. `ack` is called once what they caused is committed."""

    samples: Sequence[Sample]
    ack: Callable[[], None] | None = None


class SourceState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DEGRADED = "degraded"  # connected, but some devices or items fail
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SourceHealth:
    state: SourceState
    detail: str = ""
    since: float = 0.0
    samples_total: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    # The device clock against ours (gateway.timebase.SourceClock): median device-minus-gateway
    # seconds of recent samples (None: no device time seen), and a note in words, empty while
    # all is well ("clock is 5 h 0 min behind ...", "timestamps carry no time zone ...").
    clock_skew_seconds: float | None = None
    clock_note: str = ""
    # Device readings that were evaluated but noted, by reason (the fields of one json_fields
    # object are one reading): `clock_skew` (device time beyond the skew limit: evaluated on
    # receive time), `timestamp_without_zone` (zone-less device time and no timezone set).
    # Unlike `rejected`, nothing here was dropped.
    counted: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """A streaming driver: `async with source: async for batch in source.batches(): ...`.

    It owns its connection and reconnects inside itself with jittered backoff; expected faults
    never escape `batches()`.
    """

    name: str

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def batches(self) -> AsyncIterator[SampleBatch]: ...
    def health(self) -> SourceHealth: ...


# --- rules -------------------------------------------------------------------------------


class TransitionKind(enum.StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


@hot_record(frozen=True, slots=True)
class RequestDetails:
    """What the maintenance request says, taken from the rule file."""

    title: str
    priority: int = 3  # 1 critical .. 4 low
    failure_code: str = ""
    breakdown: bool = False
    long_text: str = ""


@hot_record(frozen=True, slots=True)
class Transition:
    """A condition episode was raised or cleared by a rule for one asset."""

    kind: TransitionKind
    rule_id: str
    asset: str
    signal: str
    episode_id: str  # stable: derived from rule, asset and the raising sample's time
    severity: int  # 1 critical .. 4 low
    value: float | None
    ts: float  # time of the sample (or tick) that caused it
    reason: str  # plain words: "vibration 7.4 above 7.1 for 5 s"
    request: RequestDetails


@dataclass(frozen=True, slots=True)
class EpisodeState:
    """An open episode as persisted in the outbox: restored into rules after a restart."""

    rule_id: str
    asset: str
    episode_id: str
    raised_at: float
    severity: int


class RuleState(NamedTuple):
    """What one rule instance must remember across a restart (pending timers, mutes, windows,
    last values, last-seen times), as plain msgpack-able data. `data` None: forget the instance.

    `fingerprint` is the rule definition the state belongs to: state of a changed rule is not
    loaded into the new definition.

    A named tuple like `Sample`, for the same reason: the engine makes one for every rule
    instance that changed, thousands per commit group (`rules.state.new_state`).
    """

    rule_id: str
    asset: str
    fingerprint: str
    data: Any


@dataclass(frozen=True, slots=True)
class SampleMark:
    """The newest device time evaluated for one (source, asset, signal): a sample that is not
    newer is a resend or a redelivery, and is skipped. Persisted with the rule state."""

    source: str
    asset: str
    signal: str
    device_ts: float


class Rule(Protocol):
    """One rule bound to one asset. Pure, synchronous; time only from its arguments."""

    @property
    def rule_id(self) -> str: ...
    @property
    def asset(self) -> str: ...
    def keys(self) -> Iterable[tuple[str, str]]: ...  # (asset, signal) it evaluates
    # Usually None or one transition; two or more when a delay ran out before this sample and
    # the sample itself then changes the episode again (a tuple, in order).
    def evaluate(self, sample: Sample) -> Transition | tuple[Transition, ...] | None: ...
    def tick(self, now: float) -> Transition | None: ...
    def restore(self, episode: EpisodeState) -> None: ...
    def close(self, now: float, reason: str) -> Transition | None: ...  # removed on reload
    def fingerprint(self) -> str: ...  # equal fingerprints: same definition, state carries over
    # Durable state: everything a restart must keep, as msgpack-able data (first item: a
    # format version). `load` takes it back, lists for tuples; it raises ValueError and changes
    # nothing when the data does not fit (the instance then starts clean).
    def snapshot(self) -> Any: ...
    def load(self, data: Any) -> None: ...


# --- outbox and delivery -------------------------------------------------------------------


class MessageKind(enum.StrEnum):
    MAINTENANCE_REQUEST = "maintenance_request"
    STATUS_UPDATE = "status_update"
    # the spare-parts chain after an accepted request (gateway/workflow.py), one step each
    PARTS_STOCK = "parts_stock"
    PARTS_RESERVATION = "parts_reservation"
    PARTS_REQUISITION = "parts_requisition"


class MessageClass(enum.IntEnum):
    """Shedding order when the buffer budget is reached: lowest value goes first."""

    TELEMETRY = 0
    STATUS = 1
    EVENT = 2  # maintenance requests and clears: never shed


class Priority(enum.IntEnum):
    """Delivery order between episodes (lowest first); order within an episode is by age."""

    CRITICAL_RAISE = 0  # a raise of severity 1
    RAISE = 1
    CLEAR = 2  # status update of an episode
    STATUS = 3
    TELEMETRY = 4


@hot_record(frozen=True, slots=True)
class OutboxMessage:
    """A message to one sink. `key` is the idempotency key, stable across retries and restarts."""

    key: str
    sink: str
    asset: str
    episode_id: str
    kind: MessageKind
    body: Mapping[str, Any]  # canonical payload; stored as msgpack, rendered by the sink
    created_at: float
    message_class: MessageClass = MessageClass.EVENT
    priority: Priority | None = None  # None: from kind and class (buffer/statements.py)


@hot_record(frozen=True, slots=True)
class OutboxRecord:
    """A leased message. `upstream_ref` is the receipt the raise of the same episode got.

    `unsettled_send_at` is set when an earlier send started at that time and never settled
    (the process died mid-send): whether the upstream acted on it is unknown.
    """

    id: int
    message: OutboxMessage
    attempts: int
    upstream_ref: str | None = None
    unsettled_send_at: float | None = None


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # permanent: dead letter, with the reason
    RETRY = "retry"


@hot_record(frozen=True, slots=True)
class Delivery:
    record_id: int
    outcome: Outcome
    receipt: str | None = None  # upstream id: service request number, notification number
    reason: str = ""
    retry_after_seconds: float | None = None


if TYPE_CHECKING:
    def _hot_records_are_frozen_to_the_checker(t: Transition, m: OutboxMessage) -> None:
        """Never runs. mypy strict fails on an unused `type: ignore`: were these assignments
        no longer errors to it (a `hot_record` not seen as frozen), the check would fail."""
        t.reason = ""  # type: ignore[misc]
        m.key = ""  # type: ignore[misc]


class Sink(Protocol):
    """An upstream adapter. Never touches SQLite; classifies every record it was given."""

    name: str

    async def send(self, batch: Sequence[OutboxRecord]) -> Sequence[Delivery]: ...
    async def check(self) -> None: ...  # raises when the upstream is unreachable or refuses us
    async def aclose(self) -> None: ...
