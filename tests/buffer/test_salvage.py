"""Salvage, not amnesia: a damaged outbox is moved aside and what can still be read is carried
into the fresh one (open episodes, receipts, pending, dead and delivered rows, rule state, sample
marks), the rest is counted, and a notice stays until acknowledged."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import aiosqlite
import msgpack

from buffer.opening import move_aside
from buffer.salvage import ADD_NOTICE, SALVAGE_PENDING
from buffer.schema import migrate
from buffer.store import OutboxStore
from gateway.model import Delivery, MessageKind, Outcome, RuleState, SampleMark, TransitionKind
from tests.buffer.conftest import message, transition

PENDING = 300
PAD = "p" * 400  # ~10 rows per 4 KiB page: the outbox table spans many pages


async def fill(path: Path) -> None:
    """An outbox mid-life: an open episode whose request was delivered (receipt SR-1), a closed
    one, PENDING pending records, one dead letter, rule state and sample marks."""
    async with await OutboxStore.open(path) as store:
        await store.commit([transition(TransitionKind.RAISED, "ep-open", asset="pump-1")],
                           [message("req-open", episode_id="ep-open")],
                           states=[RuleState("vib-high", "pump-1", "fp", {"since": 5.0})],
                           marks=[SampleMark("plc", "pump-1", "vibration", 99.5)])
        await store.commit([transition(TransitionKind.RAISED, "ep-closed", rule_id="temp"),
                            transition(TransitionKind.CLEARED, "ep-closed", rule_id="temp")], [])
        [rec] = await store.lease("cmms", 10, 2000.0)
        await store.settle([Delivery(rec.id, Outcome.ACCEPTED, receipt="SR-1")], 2000.0)
        await store.commit([], [message("dead", asset="pump-9", episode_id="ep-dead")])
        [dead] = await store.lease("cmms", 10, 2000.0)
        await store.settle([Delivery(dead.id, Outcome.REJECTED, reason="400")], 2000.0)
        await store.commit([], [message(f"k{i:04d}", asset=f"a{i}", episode_id=f"e{i}",
                                        body={"i": i, "pad": PAD}) for i in range(PENDING)])


def pages_of(path: Path, table: str) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,))]
    finally:
        db.close()


def rows_on_page(path: Path, table: str, page: int) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT ncell FROM dbstat WHERE name = ? AND pageno = ?",
                              (table, page)).fetchone()[0])
    finally:
        db.close()


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def write_new(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def scribble_page(path: Path, page: int, page_size: int = 4096) -> None:
    overwrite(path, (page - 1) * page_size, bytes((i * 37 + 11) % 256 for i in range(page_size)))


def file_size(path: Path) -> int:
    return path.stat().st_size


def cut(path: Path, n: int) -> None:
    """Truncate the last `n` bytes."""
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - n)


async def assert_clear_finds_the_salvaged_receipt(store: OutboxStore) -> None:
    """A clear committed after salvage references the request the salvaged raise created."""
    assert await store.commit([transition(TransitionKind.CLEARED, "ep-open", ts=3000.0)],
                              [message("clear-open", episode_id="ep-open",
                                       kind=MessageKind.STATUS_UPDATE)]) == 1
    leased = {r.message.key: r for r in await store.lease("cmms", 1000, 3000.0)}
    assert leased["clear-open"].upstream_ref == "SR-1"
    assert "ep-open" not in {e.episode_id for e in await store.open_episodes()}


async def test_a_damaged_outbox_page_loses_only_its_rows(db_path: Path) -> None:
    await fill(db_path)
    pages = pages_of(db_path, "outbox")
    victim = pages[len(pages) // 2]
    lost = rows_on_page(db_path, "outbox", victim)
    assert lost > 0
    scribble_page(db_path, victim)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None and store.recovered_from == report.moved_to
        assert report.moved_to.exists() and report.moved_to.name.startswith("outbox.sqlite.")
        assert report.unreadable == {"outbox": lost}
        assert report.carried == {
            "open_episodes": 1, "closed_episodes": 1, "pending": PENDING - lost, "dead": 1,
            "delivered": 1, "receipts": 1, "rule_state": 1, "sample_marks": 1, "notices": 0}
        assert [e.episode_id for e in await store.open_episodes()] == ["ep-open"]
        assert await store.load_rule_states() == [
            RuleState("vib-high", "pump-1", "fp", {"since": 5.0})]
        assert await store.load_marks() == [SampleMark("plc", "pump-1", "vibration", 99.5)]
        assert [d.key for d in await store.dead_letters()] == ["dead"]
        # a delivered key stays a no-op; a surviving pending key too
        assert await store.commit([], [message("req-open", episode_id="ep-open")]) == 0
        recs = await store.lease("cmms", 1000, 3000.0)
        assert len(recs) == PENDING - lost
        survivor = recs[0].message
        assert survivor.body == {"i": int(survivor.key[1:]), "pad": PAD}
        assert await store.commit([], [survivor]) == 0
        await assert_clear_finds_the_salvaged_receipt(store)
        [notice] = await store.notices()
        assert notice.kind == "salvage"
        assert notice.message == (
            f"outbox was damaged (kept at {report.moved_to}): 1 open episodes and "
            f"{PENDING - lost} pending records carried over; {lost} rows unreadable")
        assert notice.detail["unreadable"] == {"outbox": lost}
    # the notice stays across restarts until acknowledged, and the file is healthy now
    async with await OutboxStore.open(db_path) as store:
        assert store.salvage is None
        assert [n.kind for n in await store.notices()] == ["salvage"]
        assert await store.acknowledge_notices() == 1
        assert await store.notices() == [] and await store.acknowledge_notices() == 0


async def test_damaged_episode_and_receipt_pages(db_path: Path) -> None:
    await fill(db_path)
    for table in ("episodes", "receipts"):
        [page] = pages_of(db_path, table)  # small tables: one page each
        scribble_page(db_path, page)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None
        assert report.carried["pending"] == PENDING
        assert report.carried["open_episodes"] == 0 and report.carried["receipts"] == 0
        # the receipts table has no index to count through: its loss is described, not counted
        assert set(report.unreadable) == {"episodes", "receipts"}
        assert report.unreadable["episodes"] == 2  # counted through its primary-key index
        assert isinstance(report.unreadable["receipts"], str)
        assert "unreadable" in (await store.notices())[0].message


async def test_a_destroyed_header_is_rebuilt_and_everything_carried(db_path: Path) -> None:
    await fill(db_path)
    overwrite(db_path, 0, b"\xff" * 100)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None
        assert set(report.unreadable) == {"header"}  # said, though no row was lost
        assert report.carried["pending"] == PENDING and report.carried["open_episodes"] == 1
        assert report.carried["receipts"] == 1 and report.carried["rule_state"] == 1
        await assert_clear_finds_the_salvaged_receipt(store)
    assert not list(db_path.parent.glob("*.rebuilt"))  # the scratch copy is gone


async def test_a_file_of_garbage_is_reported_plainly_and_starts_fresh(db_path: Path) -> None:
    write_new(db_path, bytes((i * 131 + 7) % 256 for i in range(4 * 4096)))
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None and set(report.unreadable) == {"file"}
        assert "not readable as SQLite" in str(report.unreadable["file"])
        assert all(n == 0 for n in report.carried.values())
        [notice] = await store.notices()
        assert "0 open episodes and 0 pending records carried over; file: not readable" in (
            notice.message)
        assert await store.commit([], [message("after")]) == 1
    assert not list(db_path.parent.glob("*.rebuilt"))


def crash_copy(path: Path, to: Path) -> None:
    """The outbox and its WAL as a kill -9 would leave them (copied while still open)."""
    to.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{path}{suffix}", f"{to}{suffix}")


async def wal_case(tmp_path: Path) -> tuple[Path, int]:
    """A checkpointed outbox (fill) plus 5 commits still only in the WAL, as a crash leaves it;
    returns the copy and its WAL frame size."""
    live = tmp_path / "live" / "outbox.sqlite"
    await fill(live)
    store = await OutboxStore.open(live)
    try:
        for b in range(5):
            await store.commit([transition(TransitionKind.RAISED, f"wal-ep{b}", asset=f"w{b}")],
                               [message(f"wal-{b}-{i}", asset=f"w{b}", episode_id=f"wal-ep{b}")
                                for i in range(20)])
        copy = tmp_path / "crashed" / "outbox.sqlite"
        crash_copy(live, copy)
        page_size = await store._db.execute_fetchall("PRAGMA page_size")
    finally:
        await store.close()
    return copy, 24 + int(next(iter(page_size))[0])


async def assert_checkpointed_data_kept(store: OutboxStore) -> None:
    assert store.salvage is None  # the main file is sound: nothing to move aside
    assert "ep-open" in {e.episode_id for e in await store.open_episodes()}
    assert (await store.stats(0.0)).pending["cmms"] >= PENDING
    await assert_clear_finds_the_salvaged_receipt(store)


async def test_an_intact_wal_after_a_crash_is_replayed_without_a_notice(tmp_path: Path) -> None:
    copy, _ = await wal_case(tmp_path)
    async with await OutboxStore.open(copy) as store:
        assert store.wal_damage is None and await store.notices() == []
        assert (await store.stats(0.0)).pending["cmms"] == PENDING + 100


async def test_garbage_in_the_wal_is_kept_aside_and_noticed(tmp_path: Path) -> None:
    copy, frame = await wal_case(tmp_path)
    wal = Path(f"{copy}-wal")
    overwrite(wal, 32 + 3 * frame + 100, b"\xa5" * 2000)
    async with await OutboxStore.open(copy) as store:
        damage = store.wal_damage
        assert damage is not None and damage.kept_at is not None
        kept = damage.kept_at.read_bytes()  # kept as found, for forensics
        assert kept[32 + 3 * frame + 100:][:2000] == b"\xa5" * 2000 and len(kept) > 3 * frame
        assert "WAL frame 4 of" in damage.detail and damage.frames_dropped > 0
        [notice] = await store.notices()
        assert notice.kind == "wal-damage" and notice.message == damage.detail
        assert notice.detail["frames_dropped"] == damage.frames_dropped
        await assert_checkpointed_data_kept(store)


async def test_a_wal_with_a_destroyed_header_is_noticed(tmp_path: Path) -> None:
    copy, _ = await wal_case(tmp_path)
    overwrite(Path(f"{copy}-wal"), 0, b"\x00" * 32)
    async with await OutboxStore.open(copy) as store:
        assert store.wal_damage is not None and "header" in store.wal_damage.detail
        await assert_checkpointed_data_kept(store)


async def test_a_truncated_wal_keeps_every_whole_commit(tmp_path: Path) -> None:
    copy, frame = await wal_case(tmp_path)
    cut(Path(f"{copy}-wal"), frame // 2)  # the last commit's last frame is cut in half
    async with await OutboxStore.open(copy) as store:
        assert store.wal_damage is not None and "partial frame" in store.wal_damage.detail
        pending = (await store.stats(0.0)).pending["cmms"]
        assert pending == PENDING + 80  # the first four WAL commits are whole, the last is gone
        assert {e.episode_id for e in await store.open_episodes()} >= {
            "ep-open", "wal-ep0", "wal-ep3"}
        await assert_checkpointed_data_kept(store)


async def test_two_damaged_outbox_pages_lose_only_their_rows(db_path: Path) -> None:
    """Rows between two damaged pages are found one rowid at a time."""
    await fill(db_path)
    pages = pages_of(db_path, "outbox")
    victims = [pages[len(pages) // 4], pages[3 * len(pages) // 4]]
    lost = sum(rows_on_page(db_path, "outbox", p) for p in victims)
    for page in victims:
        scribble_page(db_path, page)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None and report.unreadable == {"outbox": lost}
        assert report.carried["pending"] == PENDING - lost
        assert len(await store.lease("cmms", 1000, 3000.0)) == PENDING - lost


async def test_a_damaged_page_of_a_without_rowid_table(db_path: Path) -> None:
    """rule_state has no rowid: read from both ends up to the damage; the loss is described."""
    states = [RuleState(f"rule-{i:04d}", "pump-1", "fp", {"i": i, "pad": "s" * 60})
              for i in range(1000)]
    async with await OutboxStore.open(db_path) as store:
        await store.commit([transition(TransitionKind.RAISED, "ep-open")], [], states=states)
    pages = pages_of(db_path, "rule_state")
    victim = pages[len(pages) // 2]
    lost = rows_on_page(db_path, "rule_state", victim)
    scribble_page(db_path, victim)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None
        assert report.carried["rule_state"] == 1000 - lost and report.carried["open_episodes"] == 1
        assert "between keys" in str(report.unreadable["rule_state"])
        loaded = await store.load_rule_states()
        assert len(loaded) == 1000 - lost
        assert all(s == states[int(s.rule_id[5:])] for s in loaded)  # intact, not garbled


async def test_a_salvage_cut_short_runs_again_at_next_open(db_path: Path) -> None:
    """Killed mid-salvage, the fresh file holds only the committed intent (the salvage's own
    transaction rolled back): the next open carries everything over."""
    await fill(db_path)
    scribble_page(db_path, pages_of(db_path, "outbox")[3])
    moved = move_aside(db_path)
    async with await OutboxStore.open(db_path) as store:  # the fresh file, as created
        assert store.salvage is None
    mark_pending(db_path, moved)
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None and report.moved_to == moved
        assert report.carried["open_episodes"] == 1 and report.carried["pending"] > 0
        assert [n.kind for n in await store.notices()] == ["salvage"]
    async with await OutboxStore.open(db_path) as store:
        assert store.salvage is None  # done once: not again
        assert [n.kind for n in await store.notices()] == ["salvage"]


def mark_pending(path: Path, moved: Path) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(ADD_NOTICE, (SALVAGE_PENDING, 0.0, str(moved), msgpack.packb({})))
        db.commit()
    finally:
        db.close()


async def test_a_damaged_file_of_the_first_schema_version_is_salvaged(db_path: Path) -> None:
    """Older files lack later columns and tables: what they have is carried."""
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        await migrate(db, target=1)
        await db.executemany(
            "INSERT INTO outbox (key, sink, asset, episode_id, kind, class, created_at, body,"
            " size) VALUES (?, 'cmms', 'p1', ?, 'maintenance_request', 2, 5.0, ?, 100)",
            [(f"old{i}", f"ep{i}", msgpack.packb({"pad": PAD})) for i in range(100)])
        await db.execute("INSERT INTO episodes VALUES ('ep1', 'vib-high', 'p1', 5.0, 2, NULL)")
    pages = pages_of(db_path, "outbox")
    lost = rows_on_page(db_path, "outbox", pages[1])
    scribble_page(db_path, pages[1])
    async with await OutboxStore.open(db_path) as store:
        report = store.salvage
        assert report is not None and report.unreadable == {"outbox": lost}
        assert report.carried["pending"] == 100 - lost and report.carried["open_episodes"] == 1
        recs = await store.lease("cmms", 1000, 10.0)
        assert len(recs) == 100 - lost and recs[0].unsettled_send_at is None


async def test_a_reused_wal_with_an_older_generation_behind_is_not_damage(
        tmp_path: Path) -> None:
    """After a checkpoint SQLite writes the WAL from its start again with new salts; the older
    frames left behind are normal and must not raise a false alarm."""
    live = tmp_path / "live" / "outbox.sqlite"
    store = await OutboxStore.open(live)
    try:
        await store.commit([], [message(f"big{i}", asset=f"a{i}", body={"pad": PAD * 3})
                                for i in range(200)])
        await store._db.execute_fetchall("PRAGMA wal_checkpoint(RESTART)")  # read: done
        await store.commit([], [message("small", asset="z")])
        copy = tmp_path / "crashed" / "outbox.sqlite"
        crash_copy(live, copy)
    finally:
        await store.close()
    assert file_size(Path(f"{copy}-wal")) > 50 * 4096  # the older generation is still there
    async with await OutboxStore.open(copy) as store:
        assert store.wal_damage is None and await store.notices() == []
        assert (await store.stats(0.0)).pending == {"cmms": 201}
