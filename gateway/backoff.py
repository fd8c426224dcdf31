"""Exponential backoff with full jitter. Importable by every package (imports nothing of ours)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    factor: float = 2.0
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [cap/2, cap], cap growing per failure."""
        cap = min(self.max_seconds, self.initial_seconds * self.factor**self._attempt)
        self._attempt += 1
        return cap / 2 + self._rng.random() * cap / 2

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt
