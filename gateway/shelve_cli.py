"""`plantbridge shelve`, `unshelve`, `shelved`: mute a nuisance rule or asset for a while.

They write the outbox's shelves table beside the running daemon (which reads it every second),
or with no daemon running (it reads the table at start). A shelf always has an expiry and a
reason: shelving is a temporary measure, and the page and the log say who muted what and why.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
import time
from pathlib import Path
from typing import Any

from buffer.shelves import Shelf
from gateway import config as config_mod
from gateway.messages import iso_time
from gateway.rollup import LINK_STATE, LINK_VERSION

MAX_SHELF_SECONDS = 30 * 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def duration_seconds(text: str) -> float:
    """'4h', '90m', '1h30m', '2d', '45s' -> seconds. Raises ValueError in plain words."""
    compact = text.strip().lower().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: write e.g. 4h, 90m, 1h30m, 2d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("the duration must be more than zero")
    if seconds > MAX_SHELF_SECONDS:
        raise ValueError("a shelf lasts at most 30d: shelving is temporary; fix or change the "
                         "rule for good")
    return seconds


def _load(args: argparse.Namespace) -> config_mod.LoadedConfig | None:
    from gateway.cli import load_or_report

    return load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                          config_mod.SecretScope.NONE)


def _kind(args: argparse.Namespace, loaded: config_mod.LoadedConfig) -> str:
    if args.rule:
        return "rule"
    if args.asset:
        return "asset"
    return "rule" if args.target in loaded.rules.rule_ids() else "asset"


def cmd_shelve(args: argparse.Namespace) -> int:
    from gateway.cli import run_async

    try:
        seconds = duration_seconds(args.duration)
    except ValueError as exc:
        print(f"--for: {exc}", file=sys.stderr)
        return 2
    if not args.reason.strip():
        print("--reason must say why (it is shown on the page and in the log)", file=sys.stderr)
        return 2
    loaded = _load(args)
    if loaded is None:
        return 1
    kind = _kind(args, loaded)
    now = time.time()
    shelf = Shelf(kind, args.target, now + seconds, args.reason.strip(), _who(), now)

    async def main() -> None:
        async with await loaded.config.buffer.build(loaded.config.gateway.state_dir) as store:
            await store.shelve(shelf)

    run_async(main())
    known = "" if kind == "rule" or args.asset else (
        " (no rule has that id, so it is taken as an asset; use --rule or --asset to say)")
    print(f"shelved {kind} {args.target} until {iso_time(shelf.until)}{known}")
    return 0


def cmd_unshelve(args: argparse.Namespace) -> int:
    from gateway.cli import run_async

    loaded = _load(args)
    if loaded is None:
        return 1
    kind = "rule" if args.rule else "asset" if args.asset else None

    async def main() -> int:
        async with await loaded.config.buffer.build(loaded.config.gateway.state_dir) as store:
            return await store.unshelve(args.target, kind)

    if run_async(main()) == 0:
        print(f"{args.target}: not shelved", file=sys.stderr)
        return 1
    print(f"{args.target}: no longer shelved; a condition that still holds raises now")
    return 0


def cmd_shelved(args: argparse.Namespace) -> int:
    import orjson

    from gateway.cli import run_async

    loaded = _load(args)
    if loaded is None:
        return 1

    async def main() -> list[Shelf]:
        async with await loaded.config.buffer.build(loaded.config.gateway.state_dir) as store:
            return await store.shelves()

    shelves = run_async(main())
    now = time.time()
    if args.json:
        for s in shelves:
            row: dict[str, Any] = {"kind": s.kind, "target": s.target,
                                   "until": iso_time(s.until), "reason": s.reason,
                                   "shelved_by": s.shelved_by,
                                   "shelved_at": iso_time(s.created_at)}
            print(orjson.dumps(row).decode())
        return 0
    if not shelves:
        print("nothing is shelved")
    for s in shelves:
        left = s.until - now
        print(f"{s.kind:5} {s.target:24} until {iso_time(s.until)} ({left / 3600:.1f} h left)"
              f"  {s.reason}" + (f"  [by {s.shelved_by}]" if s.shelved_by else ""))
    return 0


async def rollup_note(cfg: config_mod.PlantBridgeConfig, episode_id: str) -> str | None:
    """For `trace`: how a rolled-up episode went upstream (in its line's incident), or None."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return link_text(await store.state_row(LINK_STATE, episode_id))


def link_text(data: Any) -> str | None:
    """A link row's data in words for `trace` ("rolled up into incident ... of line ...")."""
    if not isinstance(data, list | tuple) or len(data) != 4 or data[0] != LINK_VERSION:
        return None
    _, incident, line, at = data
    return (f"rolled up into incident {incident} of line {line} at {iso_time(float(at))}: "
            f"no request of its own; listed in the incident's texts (trace {incident})")


def _who() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


def add_parsers(sub: Any, default_config: Path) -> None:
    """The three subcommands, on the main parser's subparsers."""
    sh = sub.add_parser("shelve", help="mute a nuisance rule or asset until a time")
    sh.add_argument("target", metavar="RULE|ASSET")
    sh.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                    help="how long: 4h, 90m, 1h30m, 2d (at most 30d)")
    sh.add_argument("--reason", required=True, help="why (shown on the page and in the log)")
    sh.set_defaults(func=cmd_shelve)
    un = sub.add_parser("unshelve", help="end a shelf now")
    un.add_argument("target", metavar="RULE|ASSET")
    un.set_defaults(func=cmd_unshelve)
    ls = sub.add_parser("shelved", help="list what is shelved, and until when")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    ls.set_defaults(func=cmd_shelved)
    for p in (sh, un, ls):
        p.add_argument("--config", type=Path, default=default_config)
    for p in (sh, un):
        which = p.add_mutually_exclusive_group()
        which.add_argument("--rule", action="store_true", help="the target is a rule id")
        which.add_argument("--asset", action="store_true", help="the target is an asset id")
