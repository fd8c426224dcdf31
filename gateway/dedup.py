"""Each sample once: the gate that skips resends, redeliveries and out-of-order arrivals.

A sample whose device time is not newer than the newest device time already admitted for its
(source, asset, signal) has been evaluated before (an identical resend, a broker redelivery after
a reconnect) or arrives after a newer one (out of order): evaluating it again could complete an
N-of-M window or restart a delay with old data. The gate counts and skips it.

The newest device times ("marks") must survive a restart together with the rule state they
belong to: the pipeline takes `changed_marks()` into the same commit as the rule state, and
`load()`s them at start, so a redelivery after a kill -9 is skipped too. With the rule
engine's journal (rules/journal.py) that commit is its checkpoint; in between, the journal
rows hold the samples with their sources, and the engine reads the marks back from them
(`load_journaled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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

    def admit_all(self, source: str, samples: Sequence[Sample]) -> list[Sample]:
        """`admit` for each of `samples` in order: the ones to evaluate (the same marks and
        counts as one `admit` per sample). A batch usually holds one signal's readings (a
        payload of one topic): its mark is looked up once per run of the same asset and
        signal, not once per sample."""
        if source in self._ungated:
            return list(samples)
        newest, changed = self._newest, self._changed
        admitted: list[Sample] = []
        append = admitted.append
        key: _Key = (source, "", "")  # the signal of the current run (none yet: no sample
        mark: float | None = None  # has an empty name); its newest device time so far
        moved = False  # `mark` is newer than what `_newest` holds for `key`
        skipped = 0
        for sample in samples:
            device_ts = sample.device_ts
            if device_ts is None:
                append(sample)
                continue
            if sample.asset != key[1] or sample.signal != key[2]:
                if moved and mark is not None:
                    newest[key] = mark
                    changed.add(key)
                key = (source, sample.asset, sample.signal)
                mark, moved = newest.get(key), False
            if mark is not None and device_ts <= mark:
                skipped += 1
                continue
            mark, moved = device_ts, True
            append(sample)
        if moved and mark is not None:
            newest[key] = mark
            changed.add(key)
        if skipped:
            self.skipped[source] = self.skipped.get(source, 0) + skipped
        return admitted

    def changed_marks(self) -> list[SampleMark]:
        """The marks changed since the last call, to be committed with the rule state."""
        newest = self._newest
        marks = [SampleMark(s, a, g, newest[(s, a, g)]) for s, a, g in self._changed]
        self._changed = set()
        return marks

    def load(self, marks: Iterable[SampleMark]) -> None:
        """Restore persisted marks at start (a later mark for the same key wins if newer)."""
        for mark in marks:
            self._raise_to((mark.source, mark.asset, mark.signal), mark.device_ts)

    def load_journaled(self, marks: Mapping[_Key, float]) -> None:
        """At start, after `load`: the marks the rule engine read from its journal (samples
        committed since its last checkpoint, whose marks were not stored on their own). They
        are stored at the next checkpoint, which deletes that journal."""
        for key, device_ts in marks.items():
            self._raise_to(key, device_ts)
            self._changed.add(key)

    def _raise_to(self, key: _Key, device_ts: float) -> None:
        current = self._newest.get(key)
        if current is None or device_ts > current:
            self._newest[key] = device_ts

    def __len__(self) -> int:
        """How many (source, asset, signal) marks are held."""
        return len(self._newest)
