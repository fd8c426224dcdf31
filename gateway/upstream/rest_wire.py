"""The wire side shared by the HTTP sinks (rest, sap_pm, maximo, nats, uns): the check error,
Idempotency-Key and canonical JSON encoding, plain-words failure reasons, and reading the id
out of a created request's answer."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import orjson

from gateway.model import Delivery
from gateway.upstream.retry_policy import Verdict

USER_AGENT = "plantbridge/0.1"
MAX_REASON = 400


class UpstreamCheckError(Exception):
    """`check()` found the upstream unreachable, or it refused us."""


def sf_string(value: str) -> str:
    """RFC 8941 sf-string: printable ASCII in quotes, with \\ and \" escaped."""
    if not (value.isascii() and value.isprintable()):  # i.e. every char in 0x20..0x7E
        raise ValueError("idempotency key has characters an sf-string cannot carry")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canonical_json(body: Any) -> bytes:
    """Byte-identical on every retry: sorted keys, no whitespace."""
    return orjson.dumps(dict(body), option=orjson.OPT_SORT_KEYS)


def problem_text(body: bytes, content_type: str) -> str:
    """Title and detail of an RFC 7807 problem (or a similar JSON error), else a text snippet."""
    if "json" in content_type:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            err = doc.get("error")
            parts = [doc.get("title"), doc.get("detail"),
                     err.get("message") if isinstance(err, dict) else err]
            said = " - ".join(dict.fromkeys(str(p) for p in parts if p))  # once each
            if said:
                return said[:MAX_REASON]
    text = body.decode("utf-8", "replace").strip()
    return " ".join(text.split())[:200]


def transport_reason(exc: BaseException) -> str:
    """Plain words for a failure before any HTTP status arrived."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        err = exc.certificate_error
        said = getattr(err, "verify_message", None) or str(err)
        return f"certificate verify failed: {said} (check tls.ca_file and the server name)"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # aiohttp's own text names its TLS setting ("ssl:default") even for plain http.
        where, err = f"{exc.host}:{exc.port}", exc.os_error
        if isinstance(err, ConnectionRefusedError):
            return f"connection refused by {where} (is the upstream running on that port?)"
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name {exc.host!r}: {err.strerror or err}"
        if isinstance(err, TimeoutError):
            return f"timed out connecting to {where}"
        return f"cannot connect to {where}: {err.strerror or err}"
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the upstream"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection dropped before an answer (the request may have been committed)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def delivery_for(record_id: int, v: Verdict) -> Delivery:
    """The Delivery a classified HTTP answer means, its reason cut to MAX_REASON."""
    return Delivery(record_id, v.outcome, reason=v.reason[:MAX_REASON],
                    retry_after_seconds=v.retry_after_seconds)


def created_id(answer: bytes) -> str | None:
    """The id of a created request in a 2xx answer; None when there is no usable one."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return id_of(doc)


def id_of(doc: Any) -> str | None:
    """A document's non-empty "id" (a number made text); None when it has none."""
    ident = doc.get("id") if isinstance(doc, dict) else None
    if isinstance(ident, int) and not isinstance(ident, bool):
        return str(ident)
    return ident if isinstance(ident, str) and ident else None


def found_ids(answer: bytes) -> list[str] | None:
    """Ids in a lookup answer: a JSON list, or a list under items/member/results/data."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        doc = next((doc[k] for k in ("items", "member", "results", "data")
                    if isinstance(doc.get(k), list)), None)
    if not isinstance(doc, list):
        return None
    ids = [id_of(item) for item in doc]
    return [i for i in ids if i is not None]
