"""Fixtures every suite may use. Suites put their own fixtures in their own conftest.py."""

from __future__ import annotations

import fcntl
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.harness import Mosquitto, running_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh real Mosquitto broker on a free port for one test."""
    with running_mosquitto(tmp_path) as broker:
        yield broker


# Run the long tests first: on xdist workers a 30 s crash trial that starts last keeps the whole
# run waiting while the other workers idle. Order only; what runs is unchanged.
_HEAVY_DIRS = ("e2e", "chaos", "relay", "browser", "systemd")
# The crash trials count an episode as published by the plant's own clock: when a loaded box
# makes a daemon restart outlast a HIGH phase, the episode legitimately never raises and the
# trial reports it "missing" (seen with four trials at once on 2 cores). They run one after
# another on one worker (`--dist loadgroup`), each `alone` (below).
_ONE_WORKER_DIRS = {"chaos": "crash-trials"}
_ALONE_DIRS = ("chaos",)


def _suite(item: pytest.Item) -> str | None:
    parts = item.path.relative_to(item.config.rootpath).parts  # ("tests", "e2e", "test_x.py")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else None


def _cost_class(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    return 1 if _suite(item) in _HEAVY_DIRS else 2


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _ONE_WORKER_DIRS.get(_suite(item) or "")
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if _suite(item) in _ALONE_DIRS:
            item.add_marker(pytest.mark.alone)
    items.sort(key=_cost_class)  # stable: collection order within a class


# `alone`: no other test runs on any xdist worker meanwhile (timing trials that a busy box
# distorts). A fair reader-writer lock over two files shared by the run's workers: every test
# passes the turnstile and holds the lock shared; an `alone` test holds the turnstile (no test
# starts) while it waits for the lock exclusively (running tests end). Without xdist (one
# process) nothing runs beside anything and no lock is taken.
def _run_lock_files(config: pytest.Config) -> tuple[Path, Path] | None:
    if not hasattr(config, "workerinput"):
        return None
    # pytest-N/ holds every worker's popen-gwX/ of this run, and only this run's.
    run_dir = Path(config._tmp_path_factory.getbasetemp()).parent  # type: ignore[attr-defined]
    return run_dir / "alone.turnstile", run_dir / "alone.lock"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    files = _run_lock_files(item.config)
    if files is None:
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    with open(files[0], "a+b") as turnstile, open(files[1], "a+b") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        return (yield)  # closing the files releases both locks
