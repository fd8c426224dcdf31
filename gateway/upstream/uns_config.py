"""Config of the `uns` upstream (MQTT 5 unified namespace) and its ISA-95 topic layout.

The layout is a template of topic levels, each either a literal or exactly one placeholder:
`{enterprise}` and `{site}` come from this config, `{area}`, `{line}` and `{cell}` from the
asset's row in `[upstreams.assets.<asset>]` (or the defaults), and the last level must be
`{asset}`. Under it the sink writes `.../<asset>/state` (retained) and
`.../<asset>/events/<kind>`. A level never holds `/`, `+` or `#`, so the state topics of all
assets are matched by one filter (the per-asset levels replaced by `+`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from gateway.settings import Secret, StrictModel, TlsSettings

if TYPE_CHECKING:
    from gateway.upstream.uns import UnsSink

FIXED_LEVELS = ("enterprise", "site")
ASSET_LEVELS = ("area", "line", "cell", "asset")
_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def level_problem(value: str) -> str | None:
    """Why `value` cannot be one topic level, or None when it can."""
    if not value:
        return "is empty"
    bad = sorted({c for c in value if c in "/+#\0"})
    if bad:
        return f"contains {' '.join(repr(c) for c in bad)} (not allowed in one topic level)"
    return None


def _level(value: str, label: str) -> str:
    problem = level_problem(value)
    if problem:
        raise ValueError(f"{label} {value!r} {problem}")
    return value


class AssetPlace(StrictModel):
    """Where one asset sits in the plant: `[upstreams.assets.press-7] area = ..., line = ...`."""

    area: str | None = None
    line: str | None = None
    cell: str | None = None


@dataclass(frozen=True, slots=True)
class AssetTopics:
    """The topics of one asset."""

    base: str  # .../<asset>
    area: str
    line: str
    cell: str

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    def event(self, kind: str) -> str:
        return f"{self.base}/events/{kind}"


class UnsSinkConfig(StrictModel):
    """`[[upstreams]] type = "uns"`: events and per-asset state on the plant's MQTT 5 broker."""

    type: Literal["uns"]
    name: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)  # 8883 is the usual TLS port
    client_id: str | None = None  # unset: "plantbridge-uns-<site>-<name>" (stable: a session)
    username: str | None = None
    password: Secret | None = None
    tls: TlsSettings | None = None
    # The broker keeps our session this long while we are away (MQTT 5 Session Expiry).
    session_expiry_seconds: int = Field(default=24 * 3600, ge=0, le=0xFFFFFFFF)
    keepalive_seconds: int = Field(default=30, ge=5, le=65535)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # A QoS 1 publish without PUBACK after this long is retried by the outbox (same message-id).
    # Keep it below forwarding.send_timeout_seconds.
    ack_timeout_seconds: float = Field(default=10.0, gt=0)
    reconnect_initial_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_seconds: float = Field(default=30.0, gt=0)
    # At start the retained state topics are read back; nothing is published before that.
    state_sync_timeout_seconds: float = Field(default=10.0, gt=0)
    enterprise: str
    site: str
    topic_template: str = "{enterprise}/{site}/{area}/{line}/{asset}"
    default_area: str = "unassigned"
    default_line: str = "unassigned"
    default_cell: str = "unassigned"
    assets: dict[str, AssetPlace] = {}

    @model_validator(mode="after")
    def _check(self) -> UnsSinkConfig:
        for label in ("enterprise", "site", "default_area", "default_line", "default_cell"):
            _level(getattr(self, label), label)
        for asset, place in self.assets.items():
            _level(asset, "asset")
            for label in ("area", "line", "cell"):
                value = getattr(place, label)
                if value is not None:
                    _level(value, f"assets.{asset}.{label}")
        self.template_levels()  # raises on a bad template
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        if self.reconnect_max_seconds < self.reconnect_initial_seconds:
            raise ValueError("reconnect_max_seconds is below reconnect_initial_seconds")
        if self.client_id is not None and not _CLIENT_ID.match(self.client_id):
            raise ValueError(f"client_id {self.client_id!r}: use 1 to 128 of A-Z a-z 0-9 . _ -")
        return self

    def template_levels(self) -> list[str]:
        """The template split into levels; raises ValueError naming what is wrong."""
        levels = self.topic_template.split("/")
        known = FIXED_LEVELS + ASSET_LEVELS
        for level in levels:
            m = _PLACEHOLDER.match(level)
            if m is None and ("{" in level or "}" in level):
                raise ValueError(f"topic_template level {level!r}: a placeholder must be a "
                                 f"whole level, one of {', '.join('{' + k + '}' for k in known)}")
            if m is not None and m.group(1) not in known:
                raise ValueError(f"topic_template: unknown placeholder {level!r}; known: "
                                 f"{', '.join('{' + k + '}' for k in known)}")
            if m is None:
                _level(level, "topic_template level")
        if levels[-1] != "{asset}":
            raise ValueError("topic_template must end with the level {asset}")
        if levels.count("{asset}") != 1 or levels[0].startswith("$"):
            raise ValueError("topic_template: {asset} once, and no leading '$' (broker topics)")
        return levels

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"plantbridge-uns-{self.site}-{self.name}"

    def topics_for(self, asset: str) -> AssetTopics:
        """The asset's topics; raises ValueError when the asset name cannot be a topic level."""
        problem = level_problem(asset)
        if problem:
            raise ValueError(f"asset name {asset!r} {problem}: it cannot be a UNS topic level")
        place = self.assets.get(asset, AssetPlace())
        values = {"enterprise": self.enterprise, "site": self.site, "asset": asset,
                  "area": place.area or self.default_area,
                  "line": place.line or self.default_line,
                  "cell": place.cell or self.default_cell}
        base = "/".join(_fill(level, values) for level in self.template_levels())
        return AssetTopics(base, values["area"], values["line"], values["cell"])

    @property
    def state_filter(self) -> str:
        """One subscription that matches the state topic of every asset."""
        wild = {k: "+" for k in ASSET_LEVELS} | {"enterprise": self.enterprise, "site": self.site}
        return "/".join(_fill(level, wild) for level in self.template_levels()) + "/state"

    @property
    def root(self) -> str:
        """The levels before the first per-asset one: where our own service topics live."""
        fixed = {"enterprise": self.enterprise, "site": self.site}
        out = []
        for level in self.template_levels():
            m = _PLACEHOLDER.match(level)
            if m is not None and m.group(1) in ASSET_LEVELS:
                break
            out.append(_fill(level, fixed))
        return "/".join(out)

    @property
    def probe_topic(self) -> str:
        return "/".join(x for x in (self.root, "_plantbridge", "probe") if x)

    @property
    def sync_topic(self) -> str:
        """Our marker topic for the state read-back (see UnsSink)."""
        return "/".join(x for x in (self.root, "_plantbridge", self.effective_client_id, "sync")
                        if x)

    def build(self) -> UnsSink:
        """Resolves the password now: a missing secret stops the start, not the first send."""
        from gateway.upstream.uns import UnsSink

        password = self.password.reveal() if self.password is not None else None
        return UnsSink(self, password)


def _fill(level: str, values: dict[str, str]) -> str:
    m = _PLACEHOLDER.match(level)
    return values[m.group(1)] if m is not None else level
