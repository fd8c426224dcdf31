"""OAuth2 client credentials (RFC 6749 §4.4) for an upstream: a cached bearer token.

The token is fetched on first use, kept, and fetched again shortly before it expires (a margin
of `refresh_before_expiry_seconds`, at most half the token's lifetime, so that short-lived
tokens work too). When the upstream answers 401 to a token we still believed in, `refused()`
drops it and fetches a new one once; the caller repeats its request with it. When the token
endpoint itself refuses the client (400 invalid_client / 401), that is a configuration fault,
not an outage: `OAuth2Refused` carries the plain reason for the dead letter.

Client id and secret go in an HTTP Basic header, `grant_type=client_credentials` (and `scope`)
in a form body: what SAP's OAuth services accept (UPSTREAM-WORKFLOW-APIS §4, BTP Neo doc [S];
the AS ABAP token endpoint `/sap/bc/sec/oauth2/token` is [S] for the path, [T] for the grant).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlencode

import aiohttp
import orjson
from pydantic import Field

from gateway.settings import Secret, StrictModel

DEFAULT_LIFETIME_SECONDS = 300.0  # when the endpoint gives no expires_in


class OAuth2ClientCredentials(StrictModel):
    """`auth = { kind = "oauth2", client_id = {...}, client_secret = {...} }`."""

    kind: Literal["oauth2"]
    # None: the SAP AS ABAP endpoint on the upstream's own host, `/sap/bc/sec/oauth2/token`.
    token_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    client_id: Secret
    client_secret: Secret
    scope: str = ""
    refresh_before_expiry_seconds: float = Field(default=60.0, ge=0)


class OAuth2Refused(Exception):
    """The token endpoint refused our client: wrong id or secret, or a client not allowed."""


class OAuth2Unavailable(Exception):
    """The token endpoint could not give a token now (5xx, garbage): retry later."""


class TokenSource:
    """Gives `Authorization: Bearer ...` values for one client; one fetch at a time."""

    def __init__(self, cfg: OAuth2ClientCredentials, token_url: str, *,
                 session: Callable[[], aiohttp.ClientSession],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._url = token_url
        self._session = session  # the upstream's own session: same TLS, timeouts, proxy
        self._clock = clock
        self._lock = asyncio.Lock()
        self._header: str | None = None
        self._refresh_at = 0.0
        self.fetches = 0  # tokens fetched (observability, tests)

    async def header(self) -> str:
        """A live bearer header, fetching one when there is none or it is about to expire."""
        async with self._lock:
            if self._header is None or self._clock() >= self._refresh_at:
                await self._fetch()
            assert self._header is not None
            return self._header

    async def refused(self, sent: str) -> str:
        """The upstream answered 401 to `sent`: a fresh token (once, for all who sent it)."""
        async with self._lock:
            if self._header is None or self._header == sent:
                await self._fetch()
            assert self._header is not None
            return self._header

    async def _fetch(self) -> None:
        self._header = None
        form = {"grant_type": "client_credentials"}
        if self._cfg.scope:
            form["scope"] = self._cfg.scope
        basic = aiohttp.encode_basic_auth(self._cfg.client_id.reveal(),
                                          self._cfg.client_secret.reveal())
        started = self._clock()
        async with self._session().post(
                self._url, data=urlencode(form), allow_redirects=False,
                headers={"Content-Type": "application/x-www-form-urlencoded",
                         "Accept": "application/json", "Authorization": basic}) as resp:
            body = await resp.read()
            status = resp.status
        self.fetches += 1
        said = _oauth_error(body)
        if status in (400, 401, 403):
            raise OAuth2Refused(f"the token endpoint said HTTP {status}{said}")
        if status != 200:
            raise OAuth2Unavailable(f"token endpoint: HTTP {status}{said}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise OAuth2Unavailable("token endpoint answered 200 without an access_token")
        kind = doc.get("token_type", "Bearer") if isinstance(doc, dict) else "Bearer"
        if str(kind).lower() != "bearer":
            raise OAuth2Refused(f"the token endpoint issued a {kind!r} token, not a bearer one")
        lifetime = doc.get("expires_in", DEFAULT_LIFETIME_SECONDS)
        try:
            life = float(lifetime)
        except (TypeError, ValueError):
            life = DEFAULT_LIFETIME_SECONDS
        margin = min(self._cfg.refresh_before_expiry_seconds, life / 2)
        self._refresh_at = started + life - margin  # counted from before the request
        self._header = f"Bearer {token}"


def _oauth_error(body: bytes) -> str:
    """`: invalid_client (Bad client credentials)` from an RFC 6749 §5.2 error body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(doc, dict) or "error" not in doc:
        return ""
    desc = doc.get("error_description")
    return f": {doc['error']}" + (f" ({desc})" if desc else "")
