"""Idempotency-Key store, after draft-ietf-httpapi-idempotency-key-header (and Stripe's variant).

(key, principal, method + path) -> fingerprint (SHA-256 of the body bytes), state in_flight|done,
the stored status, headers and body, and an expiry. Reserving a key is atomic: the event loop
runs one handler step at a time and `reserve` does not await.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_KEY_LENGTH = 255


class BadIdempotencyKey(ValueError):
    """The Idempotency-Key header is missing or not a valid sf-string."""


def parse_key(header: str | None) -> str:
    """An RFC 8941 sf-string (`"abc"`, with \\" and \\\\ escapes); a bare token is accepted too."""
    if header is None or not header.strip():
        raise BadIdempotencyKey("the Idempotency-Key header is required for this request")
    raw = header.strip()
    if raw.startswith('"'):
        out: list[str] = []
        i = 1
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                if i + 1 >= len(raw) or raw[i + 1] not in '"\\':
                    raise BadIdempotencyKey("Idempotency-Key: bad escape in sf-string")
                out.append(raw[i + 1])
                i += 2
                continue
            if ch == '"':
                if i != len(raw) - 1:
                    raise BadIdempotencyKey("Idempotency-Key: characters after the closing quote")
                key = "".join(out)
                break
            if not 0x20 <= ord(ch) <= 0x7E:
                raise BadIdempotencyKey("Idempotency-Key: non-printable character in sf-string")
            out.append(ch)
            i += 1
        else:
            raise BadIdempotencyKey("Idempotency-Key: unterminated sf-string")
    else:
        key = raw
    if not key:
        raise BadIdempotencyKey("Idempotency-Key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise BadIdempotencyKey(f"Idempotency-Key longer than {MAX_KEY_LENGTH} characters")
    return key


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class EntryState(enum.StrEnum):
    IN_FLIGHT = "in_flight"
    DONE = "done"


@dataclass(slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Entry:
    fingerprint: str
    state: EntryState
    expires_at: float
    response: StoredResponse | None = None


Scope = tuple[str, str, str]  # (key, principal, "METHOD /path")


class Verdict(enum.Enum):
    NEW = "new"  # reserved: process the request, then complete() or release()
    REPLAY = "replay"
    IN_FLIGHT = "in_flight"
    MISMATCH = "mismatch"


@dataclass(slots=True)
class IdempotencyStore:
    ttl_seconds: float
    clock: Callable[[], float] = time.monotonic
    _entries: dict[Scope, Entry] = field(default_factory=dict)

    def reserve(self, scope: Scope, fp: str) -> tuple[Verdict, Entry | None]:
        now = self.clock()
        entry = self._entries.get(scope)
        if entry is not None and entry.state is EntryState.DONE and entry.expires_at <= now:
            del self._entries[scope]  # expired: a reuse is a new request
            entry = None
        if entry is None:
            self._entries[scope] = Entry(fp, EntryState.IN_FLIGHT, now + self.ttl_seconds)
            return Verdict.NEW, None
        if entry.fingerprint != fp:
            return Verdict.MISMATCH, entry
        if entry.state is EntryState.IN_FLIGHT:
            return Verdict.IN_FLIGHT, entry
        return Verdict.REPLAY, entry

    def complete(self, scope: Scope, response: StoredResponse) -> None:
        entry = self._entries[scope]
        entry.state = EntryState.DONE
        entry.response = response
        entry.expires_at = self.clock() + self.ttl_seconds

    def release(self, scope: Scope) -> None:
        """Forget a reservation whose result must not be stored (crash, or Stripe validation)."""
        self._entries.pop(scope, None)

    def forget_key(self, key: str) -> None:
        """Drop every entry of `key` (whatever principal and route), as expiry would."""
        for scope in [s for s in self._entries if s[0] == key]:
            del self._entries[scope]

    def __len__(self) -> int:
        return len(self._entries)

    def dump(self) -> list[dict[str, Any]]:
        """Completed entries, for the simulator's state file (expiry as seconds left)."""
        now = self.clock()
        return [{"scope": list(scope), "fingerprint": e.fingerprint,
                 "ttl_left": e.expires_at - now, "status": e.response.status,
                 "headers": e.response.headers, "body": e.response.body.decode()}
                for scope, e in self._entries.items()
                if e.state is EntryState.DONE and e.response is not None]

    def load(self, items: list[dict[str, Any]]) -> None:
        now = self.clock()
        for it in items:
            scope = (str(it["scope"][0]), str(it["scope"][1]), str(it["scope"][2]))
            self._entries[scope] = Entry(
                it["fingerprint"], EntryState.DONE, now + float(it["ttl_left"]),
                StoredResponse(int(it["status"]), dict(it["headers"]), it["body"].encode()))
