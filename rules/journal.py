"""The rule engine's input journal: what a commit stores instead of every changed instance.

Most rule state changes with every sample it sees (a rate window, a stale rule's last-seen time,
a combination's latest values), so storing each changed instance at every commit wrote ~6,000
rows a second at 10,000 signals, and SQLite writes whole pages: ~2.5 MB a second for every
1,000 signals at 1 Hz, which wears out the flash of an edge box within a year or two. Instead,
a commit in which state changed stores one journal row: the samples and ticks the engine
evaluated in that group, in order, each batch after the name of its source (the sample marks
of gateway/dedup.py are read back from them). Now and then (`RuleEngine.take_dirty`, by size) a
*checkpoint* stores every instance changed since the last one and deletes the journal rows.

After a crash, state is the checkpoint plus the journal evaluated again in order: the engine is
deterministic in its inputs (samples and tick times), so that is exactly the state the last
commit had. The transitions it makes again are already in the outbox (the journal row was
committed with them) and are dropped. A journal row is stored under the rule id `JOURNAL`
(rule ids start with a letter or digit), numbered by its `asset` field, and tagged with the
fingerprint of the whole rule set: replayed against other rules it would not say what happened.

A group whose inputs changed no stored state (a quiet plant: thresholds far from their levels)
stores nothing, as before: by the dirty contract (rules/state.py) those inputs changed nothing a
restart needs, so leaving them out of the journal changes nothing either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from gateway.model import Quality, RuleState, Sample
from rules.state import StateError, as_list

JOURNAL = "*journal"  # the rule id of journal rows
JOURNAL_VERSION = 1
# A checkpoint is due once the journal since the last one holds this many samples per
# instance changed since then (so a checkpoint costs a small part of what the journal saved)...
SAMPLES_PER_CHANGED = 100
FLOOR_SAMPLES = 2_000  # ...but never sooner than this many samples
MAX_ROWS = 1_000  # or this many journal rows (many tiny groups)
Input = Sample | float | str  # a sample, the time of a tick, or the source of what follows
_QUALITIES = frozenset(int(q) for q in Quality)
_NUMBER = float | int


def row_key(seq: int) -> str:
    """The `asset` field of journal row `seq`: zero-padded, so stored rows sort in order."""
    return f"{seq:012d}"


def encode(seq: int, fingerprint: str, inputs: list[Input]) -> RuleState:
    """One journal row: the inputs as they are (the list is the row's now). msgpack writes a
    sample as an array of its fields (a named tuple is a tuple; quality an int), a tick as a
    float and a source name as a string, in C: no Python work per sample here, thousands per
    commit."""
    return RuleState(JOURNAL, row_key(seq), fingerprint, (JOURNAL_VERSION, inputs))


def decode(data: Any) -> list[Input]:
    """The inputs of a stored journal row, in order; StateError when it does not fit."""
    version, items = as_list(data, 2, "journal row")
    if version != JOURNAL_VERSION:
        raise StateError(f"journal version {version!r}, expected {JOURNAL_VERSION}")
    out: list[Input] = []
    for item in as_list(items, None, "journal inputs"):
        if isinstance(item, float | str):
            out.append(item)
            continue
        fields = as_list(item, 6, "journal sample")
        asset, signal, value, quality, ts, device_ts = fields
        if not (isinstance(asset, str) and isinstance(signal, str) and quality in _QUALITIES
                and isinstance(ts, _NUMBER) and (value is None or isinstance(value, _NUMBER))
                and (device_ts is None or isinstance(device_ts, _NUMBER))):
            raise StateError(f"journal sample {fields!r}: does not fit")
        out.append(Sample(asset, signal, None if value is None else float(value),
                          Quality(quality), float(ts),
                          None if device_ts is None else float(device_ts)))
    return out


def rules_fingerprint(parts: Sequence[Any]) -> str:
    """The fingerprint of a whole rule set (whatever decides behaviour, as JSON-able parts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
