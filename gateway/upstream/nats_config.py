"""Config of a NATS connection and of the `nats` upstream (JetStream, direct mode).

The connection model is shared by the gateway's `nats` upstream and by `plantbridge relay`, so
both speak to the backbone with the same credentials and TLS rules. Option names carry units.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import nats
from nats.aio.client import Client as NatsClient
from pydantic import Field, model_validator

from gateway.settings import Secret, StrictModel, TlsSettings

if TYPE_CHECKING:
    from gateway.upstream.nats import NatsSink

# Retry-through outage the stream's duplicate window must cover by default: the outbox keeps an
# undelivered record this long (buffer.store.DEFAULT_RETENTION_SECONDS), and each retry carries
# the same Nats-Msg-Id, so the window must be at least as long to drop a late duplicate.
DEFAULT_OUTAGE_TOLERANCE_SECONDS = 7 * 24 * 3600.0

_TOKEN_BAD = re.compile(r"[\s.*>]+")


class NoNatsAuth(StrictModel):
    kind: Literal["none"] = "none"


class UserPasswordAuth(StrictModel):
    kind: Literal["user_password"]
    user: str = Field(min_length=1)
    password: Secret


class TokenAuth(StrictModel):
    kind: Literal["token"]
    token: Secret


class NkeyAuth(StrictModel):
    """An NKey seed (SU...) alone: the server knows the user by its public key."""

    kind: Literal["nkey"]
    seed: Secret


class CredsFileAuth(StrictModel):
    """A decentralised-auth `.creds` file: the user JWT and its NKey seed, as `nsc` writes it."""

    kind: Literal["creds"]
    file: Path

    @model_validator(mode="after")
    def _exists(self) -> CredsFileAuth:
        if not self.file.is_file():
            raise ValueError(f"creds file {self.file} does not exist")
        return self


NatsAuth = Annotated[NoNatsAuth | UserPasswordAuth | TokenAuth | NkeyAuth | CredsFileAuth,
                     Field(discriminator="kind")]


class NatsConnection(StrictModel):
    """Where the backbone is and how we log in. `tls://` servers (or a `tls.ca_file`) turn TLS
    on, and certificates are verified unless `tls.verify = false` says otherwise."""

    servers: list[str] = Field(default=["nats://127.0.0.1:4222"], min_length=1)
    auth: NatsAuth = NoNatsAuth()
    tls: TlsSettings = TlsSettings()
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    request_timeout_seconds: float = Field(default=5.0, gt=0)  # one publish / API call
    reconnect_wait_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _urls(self) -> NatsConnection:
        for url in self.servers:
            if not re.match(r"^(nats|tls)://[^/\s]+$", url):
                raise ValueError(f"server {url!r} must look like nats://host:4222 or "
                                 "tls://host:4222")
        return self

    def uses_tls(self) -> bool:
        return any(u.startswith("tls://") for u in self.servers) or self.tls.ca_file is not None

    def connect_options(self, name: str) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`; secrets are read now (a missing one raises
        ValueError with a plain message, before any connection is tried)."""
        opts: dict[str, Any] = {
            "servers": list(self.servers), "name": name,
            "connect_timeout": self.connect_timeout_seconds,
            "reconnect_time_wait": self.reconnect_wait_seconds,
            # Two tries per server at connect, so a send fails fast when the backbone is down;
            # connect_backbone() then lets an established link reconnect for ever.
            "max_reconnect_attempts": 1, "allow_reconnect": True,
        }
        auth = self.auth
        if isinstance(auth, UserPasswordAuth):
            opts["user"], opts["password"] = auth.user, auth.password.reveal()
        elif isinstance(auth, TokenAuth):
            opts["token"] = auth.token.reveal()
        elif isinstance(auth, NkeyAuth):
            opts["nkeys_seed_str"] = auth.seed.reveal()
        elif isinstance(auth, CredsFileAuth):
            opts["user_credentials"] = str(auth.file)
        if self.uses_tls():
            ctx: ssl.SSLContext = self.tls.client_context()
            opts["tls"] = ctx
        return opts


async def connect_backbone(options: dict[str, Any], log: logging.Logger) -> NatsClient:
    """Connect (raises nats errors / OSError when no server answers), then keep reconnecting
    for ever once up. Link trouble is logged once when it starts and once when it ends."""

    async def on_error(exc: Exception) -> None:
        log.debug("nats: %s", exc)

    async def on_down() -> None:
        log.warning("NATS link lost; reconnecting (publishes wait and retry under their ids)")

    async def on_up() -> None:
        log.info("NATS link back")

    nc = await nats.connect(**options, error_cb=on_error, disconnected_cb=on_down,
                            reconnected_cb=on_up)
    nc.options["max_reconnect_attempts"] = -1
    return nc


def subject_token(text: str) -> str:
    """One subject token: no dots, spaces or wildcards (they would split or widen a subject)."""
    cleaned = _TOKEN_BAD.sub("_", text.strip())
    return cleaned or "_"


class NatsSinkConfig(NatsConnection):
    """`[[upstreams]] type = "nats"`: events to a JetStream stream, deduplicated by Msg-Id."""

    type: Literal["nats"]
    name: str = Field(min_length=1)
    stream: str = Field(min_length=1, pattern=r"^[^\s.*>]+$")
    subject_prefix: str = "plantbridge"
    # Tokens: {prefix} {site} {area} {asset} {kind} {gateway_id}; each one is sanitised.
    subject_template: str = "{prefix}.{site}.{area}.{asset}.{kind}"
    area: str = "main"  # the line or plant area this gateway serves
    site: str = ""  # empty: the [gateway] site (filled in when the config is loaded)
    gateway_id: str = ""  # empty: the site; must be unique in the fleet
    concurrent_publishes: int = Field(default=64, ge=1, le=1024)
    heartbeat_seconds: float = Field(default=30.0, ge=0)  # 0: no heartbeat
    # The longest outage this gateway retries through: a record waits in the outbox as long as
    # the outbox retains it ([buffer] retention_seconds, 7 days by default). The stream's
    # duplicate_window must be at least this long, or a retry after it could be stored twice.
    outage_tolerance_seconds: float = Field(default=DEFAULT_OUTAGE_TOLERANCE_SECONDS, gt=0)

    @model_validator(mode="after")
    def _template(self) -> NatsSinkConfig:
        try:
            probe = self.subject_template.format(prefix="p", site="s", area="a", asset="x",
                                                 kind="k", gateway_id="g")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"subject_template {self.subject_template!r}: {exc}; known "
                             "tokens: {prefix} {site} {area} {asset} {kind} {gateway_id}") from None
        if any(not t or _TOKEN_BAD.search(t) for t in probe.split(".")):
            raise ValueError(f"subject_template {self.subject_template!r} must be dot-separated "
                             "tokens without spaces or wildcards")
        return self

    def effective_gateway_id(self) -> str:
        return subject_token(self.gateway_id or self.site or "plant")

    def build(self) -> NatsSink:
        """Resolves secrets now: a missing token stops the start, not the first delivery."""
        from gateway.upstream.nats import NatsSink

        return NatsSink(self, self.connect_options(f"plantbridge-{self.effective_gateway_id()}"))


def inherit_site(raw: Any) -> Any:
    """Before validation of the root config: a `nats` upstream without its own `site` takes the
    `[gateway] site`, so heartbeats and subjects name the site from the first second."""
    if not isinstance(raw, dict) or not isinstance(raw.get("upstreams"), list):
        return raw
    gateway = raw.get("gateway")
    site = gateway.get("site") if isinstance(gateway, dict) else None
    site = site if isinstance(site, str) and site else "plant"
    ups = [dict(u, site=site) if isinstance(u, dict) and u.get("type") == "nats"
           and not u.get("site") else u for u in raw["upstreams"]]
    return dict(raw, upstreams=ups)
