"""The Maximo sink's HTTP transport: one aiohttp session (made inside the running loop), TLS,
timeouts, and exchanges that return a transport failure instead of raising it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.settings import TlsSettings
from gateway.upstream.limits import client_timeout


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever its status."""

    status: int
    body: bytes
    content_type: str
    retry_after: str | None


class MaximoHttp:
    """Exchanges with one Maximo; `request()` never raises for transport trouble."""

    def __init__(self, *, base_url: str, headers: dict[str, str], tls: TlsSettings,
                 connect_timeout_seconds: float, first_byte_timeout_seconds: float,
                 total_timeout_seconds: float, concurrent_requests: int) -> None:
        self._base = base_url
        self._headers = headers
        self._tls = tls
        self._timeout = client_timeout(connect_timeout_seconds, first_byte_timeout_seconds,
                                       total_timeout_seconds)
        self._limit = concurrent_requests
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._tls.for_url(self._base), limit=self._limit)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, url: str, *, params: dict[str, str],
                      json: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> Answer | BaseException:
        """One HTTP exchange; a transport failure (refused, reset, timeout, TLS) is returned."""
        data = None if json is None else orjson.dumps(json)
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._get_session().request(method, url, params=params, data=data,
                                                   headers=hdrs, allow_redirects=False) as resp:
                return Answer(resp.status, await resp.read(), resp.content_type,
                              resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return exc
