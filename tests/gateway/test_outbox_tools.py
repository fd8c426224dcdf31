"""`plantbridge outbox list | export | drop | downgrade`, run as real processes beside a running
daemon (downgrade: after it stopped)."""

from __future__ import annotations

import asyncio
import os
import pty
import sqlite3
import subprocess
import sys
import time

import orjson

from buffer.schema import LATEST
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for


def _argv(stack: Stack, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "outbox", *args, "--config",
            str(stack.tmp / "plantbridge.toml")]


async def _cli(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *_argv(stack, *args), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def _answer_on_a_terminal(argv: list[str], answer: str) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal, type `answer` at its prompt; exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    said = b""
    try:
        while b"[y/N]" not in said:
            chunk = os.read(master, 4096)  # the child's output; EOF (OSError) if it died
            said += chunk
        os.write(master, answer.encode() + b"\n")
        code = proc.wait(60)
        try:
            while chunk := os.read(master, 4096):
                said += chunk
        except OSError:  # EIO: the child closed the terminal
            pass
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, said.decode(errors="replace")


async def test_list_export_and_drop_a_dead_letter_while_the_daemon_runs(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox
    stack.sim.faults.set("error_5xx", count=1, status=400)  # refused for good, once
    await stack.play("pump-1", [3.0] + [8.0] * 10)

    async def dead(n: int) -> bool:
        return (await outbox.stats(time.time())).dead.get("cmms", 0) == n

    await wait_for(lambda: dead(1), 20, "the request dead-lettered")
    [letter] = await outbox.dead_letters()

    code, listing = await _cli(stack, "list", "--dead")
    assert code == 0, listing
    assert f"{letter.id:>6}  dead" in listing and "pump-1" in listing and "HTTP 400" in listing
    assert "1 record(s), 1 dead letter(s)" in listing
    code, listing = await _cli(stack, "list", "--asset", "pump-7")
    assert code == 0 and "nothing undelivered" in listing, listing
    code, listing = await _cli(stack, "list", "--json", "--sink", "cmms")
    [row] = [orjson.loads(line) for line in listing.splitlines()]
    assert row["id"] == letter.id and row["state"] == "dead" and row["body"]["asset"] == "pump-1"

    export = stack.tmp / "dead.jsonl"
    code, said = await _cli(stack, "export", "--dead", str(export))
    assert code == 0 and "wrote 1 record(s)" in said, said
    [line] = export.read_text().splitlines()
    exported = orjson.loads(line)
    assert exported["key"] == letter.key and exported["last_error"].startswith("HTTP 400")
    assert exported["body"]["rule_id"] == "vib-high" and exported["body"]["value"] == 8.0
    assert exported["failed_at"] and exported["attempts"] == 1

    code, said = await _cli(stack, "drop", str(letter.id))  # no terminal, no --yes
    assert code == 2 and "refusing to drop" in said, said
    assert await dead(1)
    code, said = await _cli(stack, "drop", str(letter.id), "--yes")
    assert code == 0 and "dropped 1 record(s)" in said, said
    assert await dead(0)
    code, said = await _cli(stack, "drop", str(letter.id), "--yes")
    assert code == 1 and "dropped 0 record(s)" in said

    # the daemon never noticed: the next event is delivered as usual
    await stack.play("pump-2", [3.0] + [8.0] * 10)
    await wait_for(lambda: len(stack.requests_for("pump-2")) == 1, 20, "next request delivered")
    assert stack.task is not None and not stack.task.done()


async def test_drop_asks_a_person_at_a_terminal(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox
    stack.sim.faults.set("error_5xx", status=503)  # until cleared: the request stays pending
    await stack.play("pump-3", [3.0] + [8.0] * 10)

    async def pending() -> int:
        return (await outbox.stats(time.time())).pending.get("cmms", 0)

    await wait_for(lambda: d.forwarders[0].stats.retried >= 1, 20, "the request retried")
    code, listing = await _cli(stack, "list", "--sink", "cmms")
    assert code == 0 and "pending" in listing and "HTTP 503" in listing, listing
    rid = listing.splitlines()[1].split()[0]

    code, said = await asyncio.to_thread(_answer_on_a_terminal, _argv(stack, "drop", rid), "n")
    assert code == 1 and "nothing dropped" in said and "pump-3" in said, said
    assert await pending() == 1
    code, said = await asyncio.to_thread(_answer_on_a_terminal, _argv(stack, "drop", rid), "y")
    assert code == 0 and "dropped 1 record(s)" in said, said
    assert await pending() == 0
    stack.sim.faults.clear()
    assert stack.sim.requests == []


def _schema(path: str) -> tuple[int, str]:
    """The file's schema version and the definition of the lease's per-episode index."""
    db = sqlite3.connect(path)
    try:
        [(version,)] = db.execute("PRAGMA user_version").fetchall()
        [(sql,)] = db.execute("SELECT sql FROM sqlite_master"
                              " WHERE name = 'outbox_episode_heads'").fetchall()
        return version, " ".join(sql.split())
    finally:
        db.close()


async def test_downgrade_for_a_rollback_waits_for_the_daemon_and_keeps_what_is_pending(
        stack: Stack) -> None:
    """An admin rolls back a release: the outbox goes back to the older schema with its pending
    request, never under a running daemon, never past a step that changed data; this release,
    started again, migrates it forward and delivers the request once."""
    stack.write_config(vibration_rule())
    outbox = str(stack.tmp / "state" / "outbox.sqlite")
    d = await stack.start_daemon()
    assert d.outbox is not None
    stack.sim.faults.set("error_5xx", count=10_000, status=503)  # the request stays pending
    await stack.play("pump-1", [3.0] + [8.0] * 10)

    async def pending() -> bool:
        assert d.outbox is not None
        return (await d.outbox.stats(time.time())).pending.get("cmms", 0) == 1

    await wait_for(pending, 20, "the request pending behind 503s")
    code, said = await _cli(stack, "downgrade", "--to", "8")
    assert code == 1 and "outbox not changed" in said and "in use" in said, said
    await stack.stop_daemon()
    assert _schema(outbox) == (LATEST, "CREATE INDEX outbox_episode_heads ON outbox(sink,"
                                       " substr(episode_id, -13), episode_id, id) WHERE state = 0")

    code, said = await _cli(stack, "downgrade", "--to", "7")  # step 8 made a table
    assert code == 1 and "step 8 changed the data and cannot be undone" in said, said
    assert _schema(outbox)[0] == LATEST
    code, said = await _cli(stack, "downgrade", "--to", "8")
    assert code == 0 and f"schema {LATEST} -> 8" in said, said
    assert _schema(outbox) == (8, "CREATE INDEX outbox_episode_heads ON outbox(sink, episode_id,"
                                  " id) WHERE state = 0")
    code, said = await _cli(stack, "downgrade", "--to", "8")
    assert code == 0 and "nothing to do" in said, said

    stack.sim.faults.clear()
    await stack.start_daemon()
    await wait_for(lambda: len(stack.requests_for("pump-1")) == 1, 20, "the request delivered")
    await stack.settled()
    assert len(stack.requests_for("pump-1")) == 1
    assert _schema(outbox)[0] == LATEST
