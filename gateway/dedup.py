"""Each sample once: the gate that skips resends, redeliveries and out-of-order arrivals.

A sample whose device time is not newer than the newest device time already admitted for its
(source, asset, signal) has been evaluated before (an identical resend, a broker redelivery after
a reconnect) or arrives after a newer one (out of order): evaluating it again could complete an
N-of-M window or restart a delay with old data. The gate counts and skips it.

The newest device times ("marks") must survive a restart together with the rule state they
belong to: the pipeline takes `changed_marks()` into the same commit as the rule state, and
`load()`s them at start, so a redelivery after a kill -9 is skipped too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.model import Sample, SampleMark
from gateway.timebase import DuplicatePolicy

_Key = tuple[str, str, str]  # (source, asset, signal)


class SampleGate:
    """`admit(source, sample)`: True to evaluate, False to skip (counted in `skipped`).

    Samples without a device time are always admitted: nothing orders them. Sources whose
    policy is `evaluate_all` are not gated at all.
    """

    def __init__(self, policies: Mapping[str, DuplicatePolicy] | None = None) -> None:
        self._newest: dict[_Key, float] = {}
        self._changed: set[_Key] = set()
        self._ungated: frozenset[str] = frozenset()
        self.skipped: dict[str, int] = {}  # source -> samples skipped
        self.set_policies(policies or {})

    def set_policies(self, policies: Mapping[str, DuplicatePolicy]) -> None:
        """Per-source policies (a source not named: `skip_not_newer`); also on a reload."""
        self._ungated = frozenset(name for name, policy in policies.items()
                                  if policy is DuplicatePolicy.EVALUATE_ALL)

    def admit(self, source: str, sample: Sample) -> bool:
        device_ts = sample.device_ts
        if device_ts is None or source in self._ungated:
            return True
        key = (source, sample.asset, sample.signal)
        newest = self._newest.get(key)
        if newest is not None and device_ts <= newest:
            self.skipped[source] = self.skipped.get(source, 0) + 1
            return False
        self._newest[key] = device_ts
        self._changed.add(key)
        return True

    def changed_marks(self) -> list[SampleMark]:
        """The marks changed since the last call, to be committed with the rule state."""
        newest = self._newest
        marks = [SampleMark(s, a, g, newest[(s, a, g)]) for s, a, g in self._changed]
        self._changed = set()
        return marks

    def load(self, marks: Iterable[SampleMark]) -> None:
        """Restore persisted marks at start (a later mark for the same key wins if newer)."""
        for mark in marks:
            key = (mark.source, mark.asset, mark.signal)
            current = self._newest.get(key)
            if current is None or mark.device_ts > current:
                self._newest[key] = mark.device_ts

    def __len__(self) -> int:
        """How many (source, asset, signal) marks are held."""
        return len(self._newest)
