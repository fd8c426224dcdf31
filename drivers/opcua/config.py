"""Config of one OPC UA source (one server endpoint): security, auth, nodes, subscription tuning."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from gateway.produces import Produced, Produces
from gateway.settings import Secret, StrictModel
from gateway.timebase import TimeSettings
from gateway.valid_range import ValidRangeSettings

if TYPE_CHECKING:
    from drivers.opcua.driver import OpcUaSource

_NSU = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<id>[isgb]=.+)$")
_NS0 = re.compile(r"^(ns=0;)?[isgb]=.+$")


class SecurityPolicy(enum.StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(enum.StrEnum):
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class Security(StrictModel):
    """Secure channel settings. Any policy but None needs our certificate and private key."""

    policy: SecurityPolicy = SecurityPolicy.NONE
    mode: SecurityMode = SecurityMode.SIGN_AND_ENCRYPT
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    private_key_password: Secret | None = None
    # Server certificates we trust (DER or PEM). Unset: trust the certificate the endpoint shows.
    trusted_server_certs_dir: Path | None = None

    @model_validator(mode="after")
    def _files_for_policy(self) -> Security:
        if self.policy is SecurityPolicy.NONE:
            return self
        for label, path in (("certificate_file", self.certificate_file),
                            ("private_key_file", self.private_key_file)):
            if path is None:
                raise ValueError(f"security.{label} is required with policy {self.policy.value}")
            if not path.is_file():
                raise ValueError(f"security.{label} {path} does not exist")
        if self.trusted_server_certs_dir is not None and not self.trusted_server_certs_dir.is_dir():
            raise ValueError(f"security.trusted_server_certs_dir {self.trusted_server_certs_dir}"
                             " is not a folder")
        return self


class AnonymousAuth(StrictModel):
    kind: Literal["anonymous"] = "anonymous"


class UsernameAuth(StrictModel):
    kind: Literal["username"] = "username"
    username: str = Field(min_length=1)
    password: Secret


class DeadbandType(enum.StrEnum):
    NONE = "none"
    ABSOLUTE = "absolute"
    PERCENT = "percent"


class Trigger(enum.StrEnum):
    STATUS = "status"
    STATUS_VALUE = "status_value"
    STATUS_VALUE_TIMESTAMP = "status_value_timestamp"


class ReadMode(enum.StrEnum):
    SUBSCRIBE = "subscribe"
    POLL = "poll"


class Sampling(StrictModel):
    """How a node is watched. A group sets defaults; a node may override any of them."""

    mode: ReadMode = ReadMode.SUBSCRIBE
    sampling_interval_ms: float = Field(default=250.0, ge=0)
    publishing_interval_ms: float = Field(default=500.0, gt=0)
    queue_size: int = Field(default=10, ge=1)
    discard_oldest: bool = True
    deadband: DeadbandType = DeadbandType.NONE
    deadband_value: float = Field(default=0.0, ge=0)
    trigger: Trigger = Trigger.STATUS_VALUE
    poll_interval_ms: float = Field(default=1000.0, gt=0)

    @model_validator(mode="after")
    def _deadband_value(self) -> Sampling:
        if self.deadband is DeadbandType.PERCENT and self.deadband_value > 100:
            raise ValueError("deadband_value is a percentage of the EU range: 0..100")
        return self


class SamplingOverride(StrictModel):
    """Per-node overrides of the group's sampling; unset fields come from the group."""

    mode: ReadMode | None = None
    sampling_interval_ms: float | None = Field(default=None, ge=0)
    publishing_interval_ms: float | None = Field(default=None, gt=0)
    queue_size: int | None = Field(default=None, ge=1)
    discard_oldest: bool | None = None
    deadband: DeadbandType | None = None
    deadband_value: float | None = Field(default=None, ge=0)
    trigger: Trigger | None = None
    poll_interval_ms: float | None = Field(default=None, gt=0)


class NodeConfig(SamplingOverride):
    """One variable mapped to (asset, signal), addressed by NodeId with namespace URI or path."""

    asset: str = Field(min_length=1)
    signal: str = Field(min_length=1)
    group: str = "default"
    node_id: str | None = None
    # Browse path from `browse_from` (default: the Objects folder); each element is a browse
    # name, `nsu=<namespace uri>;<name>` outside namespace 0.
    browse_path: list[str] | None = None
    browse_from: str = "i=85"

    @model_validator(mode="after")
    def _address(self) -> NodeConfig:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError(f"node {self.asset}/{self.signal}: give exactly one of "
                             "node_id or browse_path")
        if self.node_id is not None:
            check_node_id(self.node_id)
        if self.browse_path is not None and not self.browse_path:
            raise ValueError(f"node {self.asset}/{self.signal}: browse_path is empty")
        check_node_id(self.browse_from)
        return self

    def sampling(self, group: Sampling) -> Sampling:
        """The effective sampling: the group's, overridden by what this node sets."""
        own = {k: v for k, v in self.model_dump(include=set(Sampling.model_fields)).items()
               if v is not None}
        return group.model_copy(update=own)


def check_node_id(text: str) -> None:
    """Namespace by URI (`nsu=...;s=...`); bare indexes only for namespace 0 (they move)."""
    if _NSU.match(text) or _NS0.match(text):
        return
    raise ValueError(f"node id {text!r}: use the namespace URI form 'nsu=<uri>;s=<id>' "
                     "(a namespace index other than 0 may change when the server restarts)")


def split_node_id(text: str) -> tuple[str | None, str]:
    """`nsu=urn:x;s=a` -> ("urn:x", "s=a"); namespace 0 forms -> (None, "i=85")."""
    m = _NSU.match(text)
    if m:
        return m.group("uri"), m.group("id")
    return None, text.removeprefix("ns=0;")


class OpcUaSourceConfig(TimeSettings, ValidRangeSettings):
    """One OPC UA server endpoint and the variables to read from it.

    Time settings (`timestamps`, `max_clock_skew_seconds`, `duplicates`) come from
    `TimeSettings`: the device time is a value's SourceTimestamp (UTC by spec), else its
    ServerTimestamp.
    """

    type: Literal["opcua"] = "opcua"
    name: str = Field(min_length=1)
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: Security = Security()
    auth: AnonymousAuth | UsernameAuth = Field(default=AnonymousAuth(), discriminator="kind")
    application_uri: str = "urn:plantbridge:gateway"
    groups: dict[str, Sampling] = Field(default_factory=lambda: {"default": Sampling()})
    nodes: list[NodeConfig] = Field(min_length=1)
    # Batch size for CreateMonitoredItems: the server's MaxMonitoredItemsPerCall wins when it
    # publishes a smaller one; this is used as is when it publishes none.
    max_monitored_items_per_call: int = Field(default=1000, ge=1)
    max_nodes_per_read: int = Field(default=1000, ge=1)
    request_timeout_seconds: float = Field(default=4.0, gt=0)
    # How often the session is probed (a read of the server state): bounds loss detection.
    keepalive_interval_seconds: float = Field(default=1.0, gt=0)
    session_timeout_seconds: float = Field(default=60.0, gt=0)
    subscription_keepalive_count: int = Field(default=10, ge=1)
    # Resubscribe when a subscription (not even a keep-alive) is silent this long. Unset:
    # 1.5 x its publishing interval x keep-alive count, at least 2 s.
    subscription_watchdog_seconds: float | None = Field(default=None, gt=0)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    # Notifications between the OPC UA client and our converter, which drains it without
    # blocking: it fills only if the event loop starves (asyncua then warns per drop).
    notification_queue_size: int = Field(default=100_000, ge=100)
    batch_max_samples: int = Field(default=5000, ge=1)
    # Batches waiting for the consumer. When full, the oldest batch is dropped (rules want
    # the newest readings), counted in health.rejected["overflow"] and logged once.
    batch_queue_size: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSourceConfig:
        seen: set[tuple[str, str]] = set()
        for node in self.nodes:
            if node.group not in self.groups:
                raise ValueError(f"node {node.asset}/{node.signal}: unknown group {node.group!r}"
                                 f"; known: {', '.join(self.groups)}")
            key = (node.asset, node.signal)
            if key in seen:
                raise ValueError(f"node {node.asset}/{node.signal} is mapped twice")
            seen.add(key)
        if self.reconnect_max_seconds < self.reconnect_initial_seconds:
            raise ValueError("reconnect_max_seconds must be >= reconnect_initial_seconds")
        return self

    def produces(self) -> Produces:
        """Every (asset, signal) of the node list: an OPC UA source knows all it delivers."""
        return Produces.of(self.name, (Produced(n.asset, n.signal, f"node {n.asset}/{n.signal}")
                                       for n in self.nodes))

    def build(self) -> OpcUaSource:
        from drivers.opcua.driver import OpcUaSource

        return OpcUaSource(self)
