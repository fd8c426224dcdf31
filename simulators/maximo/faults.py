"""Run-time fault switches of the Maximo simulator: one fault, for N requests or until cleared."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from simulators import httpsim


class FaultMode(enum.StrEnum):
    NONE = "none"
    SLOW = "slow"  # wait delay_seconds, then handle the request (a POST commits late)
    ERROR_5XX = "error_5xx"  # answer `status` with the Error JSON before doing anything
    RATE_429 = "rate_429"  # answer 429 with Retry-After, as a MAS ingress would
    DROP_AFTER_COMMIT = "drop_after_commit"  # writes only: commit, then drop the connection
    CONFLICT_412 = "conflict_412"  # writes to a member: another user saves it just before


@dataclass(frozen=True, slots=True)
class Fault(httpsim.Fault):
    """The fault one request meets."""

    writes_only: bool = False  # slow, error_5xx, rate_429: only POSTs meet it

    def extra_json(self) -> dict[str, Any]:
        return {"writes_only": self.writes_only}


class Faults(httpsim.FaultSwitch[Fault]):
    """`set(mode, count=None, ...)` arms a fault for the next `count` API requests (None: until
    `clear()`). Write-only faults count only the requests they apply to (POSTs that create or
    update; for conflict_412, updates of a member)."""

    extra_fields = frozenset({"writes_only"})

    def __init__(self) -> None:
        super().__init__(Fault(FaultMode.NONE))

    def set(self, mode: str | FaultMode, count: int | None = None, *, delay_seconds: float = 1.0,
            status: int = 503, retry_after: float | int | str | None = 1,
            writes_only: bool = False) -> None:
        self._arm(Fault(FaultMode(mode), delay_seconds, status,
                        httpsim.retry_after_header(retry_after), bool(writes_only)), count)

    def take(self, *, write: bool, member_write: bool = False) -> Fault | None:
        """The fault one API request meets, counting it down."""
        return self._meet(lambda f: (write or not (f.mode is FaultMode.DROP_AFTER_COMMIT
                                                   or f.writes_only))
                          and (member_write or f.mode is not FaultMode.CONFLICT_412))
