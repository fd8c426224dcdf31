"""The SAP simulator's OAuth2 token endpoint (`/sap/bc/sec/oauth2/token`, client credentials).

Strict about what the shared doc gives as documented (UPSTREAM-WORKFLOW-APIS §4): the client
authenticates with an HTTP Basic header (BTP Neo doc [S]: "only" there), the grant is
`client_credentials` in a form body. What is assumed ([T]): the AS ABAP path and its
`sap-client` query parameter, and the RFC 6749 §5 answers (`access_token`, `token_type`,
`expires_in`; errors `invalid_client` with 401, `unsupported_grant_type` with 400).
Tokens live `token_lifetime_seconds` (a few seconds in tests) and can be revoked at will.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from aiohttp import web

TOKEN_PATH = "/sap/bc/sec/oauth2/token"


@dataclass
class _Token:
    client_id: str
    expires_at: float


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="oauth2"'} if status == 401 else None
    return web.Response(status=status, content_type="application/json", headers=headers,
                        body=orjson.dumps({"error": error, "error_description": description}))


class TokenIssuer:
    """Issues and checks bearer tokens for the registered clients (client id -> secret)."""

    def __init__(self, clients: Mapping[str, str], lifetime_seconds: int, sap_client: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = dict(clients)
        self.lifetime_seconds = lifetime_seconds
        self.sap_client = sap_client
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self.issued_at: list[float] = []  # when each token was handed out (tests)
        self.refused = 0  # requests that came with a dead or unknown bearer token

    @property
    def issued(self) -> int:
        return len(self.issued_at)

    def revoke_all(self) -> None:
        """Every token dies now, before its time (an admin revoked them, the server restarted)."""
        self._tokens.clear()

    def client_of(self, token: str) -> str | None:
        """The client a live token was issued to; None (and counted) for a dead one."""
        found = self._tokens.get(token)
        if found is None or found.expires_at <= self._clock():
            self._tokens.pop(token, None)
            self.refused += 1
            return None
        return found.client_id

    async def handle(self, request: web.Request) -> web.Response:
        client = request.query.get("sap-client", self.sap_client)
        if client != self.sap_client:
            return _oauth_error(401, "invalid_client", f"client {client} is not available")
        scheme, _, cred = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return _oauth_error(401, "invalid_client",
                                "client authentication goes in an HTTP Basic header")
        try:
            client_id, _, secret = base64.b64decode(cred, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return _oauth_error(401, "invalid_client", "malformed Basic credentials")
        if self.clients.get(client_id) != secret:
            return _oauth_error(401, "invalid_client", "Bad client credentials")
        if request.content_type != "application/x-www-form-urlencoded":
            return _oauth_error(400, "invalid_request",
                                "the token request is a form (x-www-form-urlencoded)")
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type",
                                f"grant_type {form.get('grant_type')!r} is not supported")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = _Token(client_id, self._clock() + self.lifetime_seconds)
        self.issued_at.append(self._clock())
        doc = {"access_token": token, "token_type": "Bearer",
               "expires_in": int(self.lifetime_seconds), "scope": str(form.get("scope", ""))}
        return web.Response(content_type="application/json", body=orjson.dumps(doc),
                            headers={"Cache-Control": "no-store"})
