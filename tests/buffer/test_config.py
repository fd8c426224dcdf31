"""The outbox config model: strict, units in names, builds a working store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from buffer.config import OutboxConfig
from buffer.store import Synchronous
from tests.buffer.conftest import message, pragma


async def test_builds_a_store_with_the_given_settings(tmp_path: Path) -> None:
    cfg = OutboxConfig.model_validate(
        {"path": "box.sqlite", "synchronous": "normal", "max_bytes": 10_000,
         "retention_seconds": 60})
    async with await cfg.build(tmp_path) as store:
        assert store.path == tmp_path / "box.sqlite"
        assert await pragma(store, "synchronous") == 1
        assert (await store.stats(0.0)).budget_bytes == 10_000
        assert store.retention_seconds == 60
        assert await store.commit([], [message("a")]) == 1


def test_defaults_and_absolute_path(tmp_path: Path) -> None:
    cfg = OutboxConfig()
    assert cfg.synchronous is Synchronous.FULL and cfg.max_bytes == 512 * 1024 * 1024
    assert OutboxConfig(path=tmp_path / "x.sqlite").resolved_path(Path("/elsewhere")) == (
        tmp_path / "x.sqlite")
    assert OutboxConfig(max_bytes=None).max_bytes is None


@pytest.mark.parametrize("bad", [{"synchronous": "off"}, {"max_bytes": 0},
                                 {"retention_seconds": -1}, {"max_size": 5},
                                 {"type": "postgres"}])
def test_rejects_bad_values_in_plain_words(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OutboxConfig.model_validate(bad)
