"""SAP Gateway OData v2 on the wire: CSRF-token session, value formats and error bodies.

`ODataClient` owns one aiohttp session with a cookie jar. Every write carries the CSRF token and
the session cookies it was issued with; a `403` with `x-csrf-token: Required` (token expired,
session lost) refetches the token once and repeats the write. Transport failures are raised as
aiohttp/OS errors for the sink to classify; HTTP answers come back as `Answer`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from gateway.upstream.oauth2 import OAuth2ClientCredentials, TokenSource
from gateway.upstream.rest import USER_AGENT, problem_text

CSRF_HEADER = "X-CSRF-Token"
JSON = "application/json"
MAX_ERROR_TEXT = 300


class CsrfUnavailable(Exception):
    """The service answered the token fetch without a token (a proxy stripping headers?)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, read in full."""

    status: int
    body: bytes
    content_type: str
    retry_after: str | None = None
    location: str = ""
    csrf: str | None = None  # the x-csrf-token response header
    etag: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def csrf_refused(self) -> bool:
        return self.status == 403 and (self.csrf or "").lower() == "required"


def odata_string(value: str) -> str:
    """An OData v2 string literal: quoted, with single quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_date(when: datetime) -> str:
    """Edm.DateTime of the day of `when` (midnight), as SAP sends it: `/Date(ms)/`."""
    day = when.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    epoch = datetime(1970, 1, 1)
    return f"/Date({int((day - epoch).total_seconds()) * 1000})/"


def odata_time(when: datetime) -> str:
    """Edm.Time of `when` as an ISO 8601 duration since midnight: `PT15H51M04S`."""
    return f"PT{when.hour:02d}H{when.minute:02d}M{when.second:02d}S"


def query_string(params: Mapping[str, str]) -> str:
    """`$filter=A eq 'x'&...` percent-encoded (spaces as %20: SAP Gateway reads `+` literally
    in OData system query options)."""
    return "&".join(f"{quote(k, safe='$-')}={quote(v, safe=chr(39) + '(),$-')}"
                    for k, v in params.items())


def error_text(answer: Answer) -> str:
    """The OData error's code and message (`{"error":{"code","message":{"value"}}}`), plus the
    first distinct detail messages; otherwise a snippet of the body."""
    if "json" in answer.content_type:
        try:
            doc = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            doc = None
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict):
            msg = err.get("message")
            text = msg.get("value") if isinstance(msg, dict) else msg
            parts = [str(text)] if text else []
            inner = err.get("innererror")
            details = inner.get("errordetails") if isinstance(inner, dict) else None
            for d in details if isinstance(details, list) else []:
                said = d.get("message") if isinstance(d, dict) else None
                if said and str(said) not in parts:
                    parts.append(str(said))
            code = err.get("code")
            said = "; ".join(parts[:3]) or "no message"
            return (f"{said} [{code}]" if code else said)[:MAX_ERROR_TEXT]
    return problem_text(answer.body, answer.content_type)


def entity_of(body: bytes) -> dict[str, Any] | None:
    """The entity of `{"d": {...}}`, or None when the body is something else."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    d = doc.get("d") if isinstance(doc, dict) else None
    return d if isinstance(d, dict) else None


def results_of(body: bytes) -> list[dict[str, Any]] | None:
    """The entities of `{"d": {"results": [...]}}` (or a bare `{"d": [...]}`), else None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    d = doc.get("d") if isinstance(doc, dict) else None
    items = d.get("results") if isinstance(d, dict) else d
    if not isinstance(items, list):
        return None
    return [i for i in items if isinstance(i, dict)]


class ODataClient:
    """A CSRF-aware client of one OData v2 service (`service_url`, e.g.
    `https://host/sap/opu/odata/sap/API_MAINTNOTIFICATION`) in one SAP client."""

    def __init__(self, service_url: str, sap_client: str, *, authorization: str | None,
                 ssl_context: ssl.SSLContext | bool, timeout: aiohttp.ClientTimeout,
                 connection_limit: int,
                 oauth2: tuple[OAuth2ClientCredentials, str] | None = None) -> None:
        """`oauth2`: (client credentials, token URL) instead of a fixed `authorization`."""
        self._service = service_url.rstrip("/")
        self._sap_client = sap_client
        self._authorization = authorization  # the Authorization header value, if any
        self._ssl = ssl_context
        self._timeout = timeout
        self._limit = connection_limit
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0  # how often a token was fetched (observability, tests)
        self.bearer = None if oauth2 is None else TokenSource(
            oauth2[0], oauth2[1], session=self._get_session)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._limit)
            # unsafe=True: keep cookies of hosts given by IP address too (the default jar drops
            # them, and SAP hosts are often addressed by IP on a plant network).
            headers = {"User-Agent": USER_AGENT, "Accept": JSON}
            if self._authorization is not None:
                headers["Authorization"] = self._authorization
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=headers,
                cookie_jar=aiohttp.CookieJar(unsafe=True))
            self._token = None  # a new jar has no session: the old token is worthless
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._token = None

    def url(self, resource: str, params: Mapping[str, str] | None = None) -> URL:
        query = {"sap-client": self._sap_client, **(params or {})}
        path = "/" + quote(resource.lstrip("/"), safe="/()'=,$") if resource else ""
        return URL(self._service + path + "?" + query_string(query), encoded=True)

    async def _request(self, method: str, url: URL, headers: Mapping[str, str] | None = None,
                       body: bytes | None = None) -> Answer:
        """One exchange; with OAuth2, a 401 to the token we held gets one fresh token and one
        repeat (raises OAuth2Refused when the token endpoint refuses our client)."""
        if self.bearer is None:
            return await self._exchange(method, url, headers, body)
        sent = await self.bearer.header()
        answer = await self._exchange(method, url, {**(headers or {}), "Authorization": sent},
                                      body)
        if answer.status == 401:
            fresh = await self.bearer.refused(sent)
            answer = await self._exchange(method, url,
                                          {**(headers or {}), "Authorization": fresh}, body)
        return answer

    async def _exchange(self, method: str, url: URL, headers: Mapping[str, str] | None,
                        body: bytes | None) -> Answer:
        async with self._get_session().request(method, url, headers=headers, data=body,
                                               allow_redirects=False) as resp:
            data = await resp.read()
            return Answer(resp.status, data, resp.content_type, resp.headers.get("Retry-After"),
                          resp.headers.get("Location", ""), resp.headers.get(CSRF_HEADER),
                          resp.headers.get("ETag"))

    async def fetch_token(self) -> Answer:
        """GET the service root with `X-CSRF-Token: Fetch`; keeps the token on success."""
        answer = await self._request("GET", self.url(""), {CSRF_HEADER: "Fetch"})
        self.token_fetches += 1
        if answer.ok:
            if not answer.csrf or answer.csrf.lower() in ("fetch", "required"):
                raise CsrfUnavailable("the service answered the CSRF token fetch without a "
                                      "token (is a proxy stripping the x-csrf-token header?)")
            self._token = answer.csrf
        return answer

    async def _token_for_write(self, stale: str | None = None) -> str | Answer:
        """The current token, fetching one (once for all waiters) when there is none or the
        one that was refused (`stale`) is still current. An Answer: the fetch failed."""
        async with self._token_lock:
            if self._token is None or self._token == stale:
                self._token = None
                answer = await self.fetch_token()
                if not answer.ok:
                    return answer
            assert self._token is not None
            return self._token

    async def read(self, resource: str, params: Mapping[str, str] | None = None) -> Answer:
        return await self._request("GET", self.url(resource, params))

    async def write(self, method: str, resource: str, params: Mapping[str, str] | None = None,
                    payload: Mapping[str, Any] | None = None,
                    headers: Mapping[str, str] | None = None) -> Answer:
        """A modifying request with token and cookies; one token refetch on a CSRF refusal."""
        url = self.url(resource, params)
        body = None if payload is None else orjson.dumps(dict(payload))
        stale: str | None = None
        for _ in range(2):
            token = await self._token_for_write(stale)
            if isinstance(token, Answer):
                return token
            sent = {**(headers or {}), CSRF_HEADER: token}
            if body is not None:
                sent["Content-Type"] = JSON
            answer = await self._request(method, url, sent, body)
            if not answer.csrf_refused:
                return answer
            stale = token
        return answer
