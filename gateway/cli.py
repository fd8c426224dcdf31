"""`plantbridge`: run the daemon, check a config, replay rules on a recording, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from gateway import config as config_mod
from gateway import logs, shelve_cli
from gateway.progress import Progress
from gateway.registry import Registry

if TYPE_CHECKING:
    from rules import RuleSet

T = TypeVar("T")
DEFAULT_CONFIG = Path("/etc/plantbridge/plantbridge.toml")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (30-60% faster on the network paths)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def load_or_report(path: Path, verdict: str, secrets: config_mod.SecretScope | None = None
                   ) -> config_mod.LoadedConfig | None:
    """Load a config, or print one line per problem and the verdict, and return None.
    `secrets`: which secrets to read (default: all)."""
    from gateway import config as config_mod

    if secrets is None:
        secrets = config_mod.SecretScope.ALL
    try:
        return config_mod.load(path, secrets=secrets)
    except config_mod.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(verdict.format(n=len(exc.problems)), file=sys.stderr)
        return None


def _report(problems: Sequence[object], warnings: Sequence[object]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _check_rule_files(files: list[Path]) -> int:
    """`check --rules-only --rules FILES`: the rule files alone, no main config at all."""
    from gateway import config as config_mod
    from rules import RuleFileError, load_rule_files

    try:
        rules = load_rule_files(files)
    except RuleFileError as exc:
        _report(exc.problems, [])
        print(f"{len(exc.problems)} problem(s); the rules were not accepted", file=sys.stderr)
        return 1
    print(f"ok: {len(files)} rule file(s), {config_mod.describe_rules(rules)}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway import config as config_mod

    if args.rules is not None:
        if not args.rules_only:
            print("--rules goes with --rules-only (without it, check reads the rule files "
                  "that the config names)", file=sys.stderr)
            return 2
        return _check_rule_files(args.rules)
    if args.online and args.rules_only:
        print("--online contacts the upstreams, which --rules-only leaves out: use one",
              file=sys.stderr)
        return 2
    scope = config_mod.SecretScope.NONE if args.rules_only else config_mod.SecretScope.ALL
    found = config_mod.examine(args.config, secrets=scope, rules_only=args.rules_only)
    _report(found.problems, found.warnings)
    if found.problems:
        print(f"{len(found.problems)} problem(s); the config was not accepted", file=sys.stderr)
        return 1
    assert found.rules is not None
    if args.rules_only or found.loaded is None:
        print(f"{args.config}: rules ok: {config_mod.describe_rules(found.rules)}")
        return 0
    cfg = found.loaded.config
    print(f"{args.config}: ok: {len(cfg.sources)} source(s), {len(cfg.upstreams)} upstream(s), "
          f"{len(found.loaded.rule_files)} rule file(s), {config_mod.describe_rules(found.rules)}")
    if args.explain:
        from drivers.modbus.config import ModbusSourceConfig
        from drivers.modbus.planner import explain

        plans = [explain(src) for src in cfg.sources if isinstance(src, ModbusSourceConfig)]
        print("\n".join(plans) if plans else "no Modbus sources: no read plan to explain")
    if not args.online:
        return 0
    probed = _check_online(cfg)
    lines = validate_identities(cfg, found.loaded.registry, rules=found.loaded.rules)
    for line in lines:
        print(line, file=sys.stderr)
    if lines:
        print(f"{len(lines)} identity or domain problem(s) upstream", file=sys.stderr)
        return 1
    if cfg.upstreams:
        print("online: every mapped asset is known upstream as configured")
    return probed


def _check_online(cfg: config_mod.PlantBridgeConfig) -> int:
    """`check --online`: contact every upstream as the daemon would, and say what failed."""
    from gateway.probes import probe_configured

    if not cfg.upstreams:
        print("online: no upstreams configured; nothing to contact")
        return 0
    results = run_async(probe_configured([up.build for up in cfg.upstreams]))
    for r in results:
        if r.ok:
            print(f"online: upstream {r.sink}: ok (reachable, credentials accepted)")
        else:
            print(f"online: upstream {r.sink}: probe failed: {r.reason}", file=sys.stderr)
    failed = sum(not r.ok for r in results)
    for line in run_async(_backbone_facts(cfg)):
        print(line)
    if failed:
        print(f"{failed} upstream(s) failed the probe", file=sys.stderr)
    return 1 if failed else 0


async def _backbone_facts(cfg: config_mod.PlantBridgeConfig) -> list[str]:
    """The nats-server version each `nats` upstream finds, and what it means for production."""
    from gateway.upstream.nats import NatsCheckError, NatsSink

    out = []
    for up in cfg.upstreams:
        sink = up.build()
        try:
            if isinstance(sink, NatsSink):
                try:
                    report = await sink.inspect()
                except NatsCheckError:
                    continue  # already said by the probe
                out.append(f"online: upstream {sink.name}: nats-server "
                           f"{report.server_version}, duplicate_window "
                           f"{report.duplicate_window_seconds:g} s")
                out += [f"online: upstream {sink.name}: warning: {w}" for w in report.warnings]
        finally:
            await sink.aclose()
    return out


def validate_identities(cfg: config_mod.PlantBridgeConfig, registry: Registry,
                        timeout_seconds: float = 15.0, rules: RuleSet | None = None) -> list[str]:
    """`check --online`, identity part: one plain line per asset an EAM does not know as
    configured, or per upstream that could not be asked; empty when all is well."""
    from gateway.registry_online import validate_identities as look_up

    report = run_async(look_up(cfg, registry, timeout_seconds=timeout_seconds, rules=rules))
    return report.lines()


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, "refusing to start on an invalid config")
    if loaded is None:
        return 1
    g = loaded.config.gateway
    logs.setup(g.log_level, g.log_format)
    from buffer.errors import OutboxForeignFile, OutboxLocked, OutboxSchemaTooNew
    from gateway.daemon import Daemon

    async def main() -> int:
        try:
            await Daemon(loaded).run()
        except (OutboxSchemaTooNew, OutboxForeignFile, OutboxLocked) as exc:
            logging.getLogger("plantbridge").error("refusing to start: %s", exc)
            return 2
        return 0

    return run_async(main())


def utc_time(text: str) -> float:
    """A time on the command line: seconds since 1970, or ISO 8601 (UTC unless it says)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: write 2026-11-27T08:00 (UTC), 2026-11-27T09:00+01:00 "
            f"or seconds since 1970") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_replay(args: argparse.Namespace) -> int:
    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"--from ({_iso(args.start)}) is later than --to ({_iso(args.end)}): that window "
              "holds no data; swap them", file=sys.stderr)
        return 2
    from rules import RuleFileError, load_rule_files
    from rules.replay import RecordingError, format_comparison, format_report, pair
    from rules.slabreplay import replay_recording

    try:
        new = load_rule_files(args.rules)
        old = load_rule_files(args.compare) if args.compare else None
    except RuleFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    # Progress by phase (each replay, plot): a replay streams the recording in slabs (a week of
    # 1,000 signals fits in memory); its estimate is the time the first took, for the second.
    steps = 1 + (old is not None) + (args.plot is not None)
    with Progress("replay", total=steps, unit="steps") as bar:
        bar.update(0)
        try:
            result, warning = replay_recording(new, args.input, start=args.start, end=args.end)
            bar.update(1)
            old_result = None if old is None else replay_recording(
                old, args.input, start=args.start, end=args.end)[0]
            bar.update(1 + (old is not None))
            if args.plot is not None:  # drawing needs the samples: the window, read whole
                from gateway.plot import write_plot
                from rules.columns import between
                from rules.pbrec import load_columns

                cols = between(load_columns(args.input), args.start, args.end)
                drawn = write_plot(args.plot, cols, result, new,
                                   None if old is None or old_result is None
                                   else (old_result, old), args.asset or ())
                bar.close()
                print(f"plotted {drawn} rule(s) to {args.plot}", file=sys.stderr)
        except (RecordingError, OSError) as exc:
            bar.close()
            print(exc, file=sys.stderr)
            return 1
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if old_result is not None:
        text = format_comparison(pair(old_result, result))
    else:
        text = format_report(result)
    return _print_to_pipe(text)


def _print_to_pipe(text: str) -> int:
    """Print a report that may go into `| head`: a reader that stops early is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's own flush at exit finds no
        # broken pipe to complain about (the documented way for Python CLIs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway.record import NothingToRecord, choose, record

    # Only the sources run: an upstream's token is none of a recording's business.
    loaded = load_or_report(args.config, "{n} problem(s); nothing recorded",
                            config_mod.SecretScope.SOURCES)
    if loaded is None:
        return 1
    try:
        chosen, notes = choose(loaded.config, args.source)
    except NothingToRecord as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    logs.setup("warning")

    async def recording() -> int:
        # The duration is known: progress is the time recorded so far (quiet off a terminal).
        with Progress(f"recording to {args.output}", total=args.duration, unit="s") as bar:
            task = asyncio.create_task(record(chosen, args.output, args.duration))
            started = time.monotonic()
            while not task.done():
                bar.update(min(args.duration, round(time.monotonic() - started)))
                await asyncio.wait({task}, timeout=0.5)
            return task.result()

    n = run_async(recording())
    print(f"recorded {n} samples to {args.output}")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway.dead_letters import manage

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    if args.requeue and args.requeue != ["all"] and not all(x.isdigit() for x in args.requeue):
        print("--requeue takes record ids or the word all", file=sys.stderr)
        return 2
    if args.requeue:
        print(run_async(_requeue(loaded.config, args.requeue, args.sink)))
        return 0
    print(run_async(manage(loaded.config, [], args.drop or [], args.sink)))
    return 0


REQUEUE_CHUNK = 500


async def _requeue(cfg: config_mod.PlantBridgeConfig, which: list[str], sink: str | None) -> str:
    """`dead-letters --requeue`: in chunks, so a terminal shows progress on thousands."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        ids = ([d.id for d in await store.dead_letters(sink, limit=1_000_000)]
               if which == ["all"] else [int(x) for x in which])
        n = 0
        with Progress("requeueing dead letters", total=len(ids)) as bar:
            for at in range(0, len(ids), REQUEUE_CHUNK):
                n += await store.requeue_dead(ids[at:at + REQUEUE_CHUNK])
                bar.update(min(len(ids), at + REQUEUE_CHUNK))
    return f"requeued {n} dead letter(s); the daemon delivers them on its next round"


def cmd_trace(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway import trace

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    found = run_async(trace.load(loaded.config, args.id))
    if found is None:
        print(f"{args.id}: no episode, idempotency key or upstream id of that name in the "
              "outbox (or it is past the retention)", file=sys.stderr)
        return 1
    upstream = run_async(trace.upstream_history(loaded.config, found.episode_id))
    rolled_up = run_async(shelve_cli.rollup_note(loaded.config, found.episode_id))
    if args.json:
        doc = trace.as_dict(found, upstream) | ({"rolled_up": rolled_up} if rolled_up else {})
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(trace.format_text(found, upstream) + (f"\n  {rolled_up}" if rolled_up else ""))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway import outbox_tools as tools

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    cfg = loaded.config
    if args.action == "drop":
        return _outbox_drop(cfg, args.ids, args.yes)
    if args.action == "acknowledge":
        n = run_async(tools.acknowledge(cfg))
        print(f"acknowledged {n} notice(s)" if n else "no notice to acknowledge")
        return 0
    exporting = args.action == "export"
    found = run_async(tools.records(cfg, sink=args.sink, asset=args.asset, dead=args.dead,
                                    bodies=exporting or args.json))
    if exporting:
        try:
            tools.write_json_lines(found, args.file)
        except OSError as exc:
            print(f"cannot write {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(found)} record(s) to {args.file}")
    elif args.json:
        for rec in found:
            print(orjson.dumps(tools.as_dict(rec), default=str).decode())
    else:
        print(tools.format_list(found))
    return 0


def _outbox_drop(cfg: config_mod.PlantBridgeConfig, ids: list[int], yes: bool) -> int:
    """Drop undelivered records, after a yes from a person at a terminal (or --yes)."""
    from gateway import outbox_tools as tools

    if not yes:
        if not sys.stdin.isatty():
            print("refusing to drop without confirmation: no terminal to ask; pass --yes",
                  file=sys.stderr)
            return 2
        wanted = set(ids)
        found = [r for r in run_async(tools.records(cfg)) if r.id in wanted]
        if not found:
            print("none of these ids is an undelivered record; nothing dropped")
            return 1
        print(tools.format_list(found))
        answer = input(f"drop these {len(found)} record(s) for good? They will never be "
                       "delivered. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return 1
    n = run_async(tools.drop(cfg, ids))
    print(f"dropped {n} record(s) for good")
    return 0 if n else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    from gateway import reconcile

    try:
        window = reconcile.parse_window(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    loaded = load_or_report(args.config, "{n} problem(s); nothing was compared")
    if loaded is None:
        return 1
    logs.setup("warning")

    bar = Progress("comparing requests", enabled=None if not args.json else False)

    def progress(n: int, total: int) -> None:
        bar.update(n, total)

    with bar:
        report = run_async(reconcile.run_reconcile(
            loaded, window, fix=args.fix, now=time.time(),
            progress=progress if bar.enabled else None))
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(reconcile.format_text(report))
    # 0: all agree; 1: differences (or an upstream not checked): a cron job can alert on it
    return 1 if report.findings or report.errors else 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway.status_cli import show

    loaded = load_or_report(args.config, "{n} problem(s); cannot tell where the gateway listens",
                            config_mod.SecretScope.NONE)
    return 1 if loaded is None else show(loaded.config, as_json=args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo, scenario_problem

    problem = scenario_problem(args.scenario)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    logs.setup("warning")
    return run_async(run_demo(args.duration, args.scenario))


def cmd_relay(args: argparse.Namespace) -> int:
    """The fleet tier (gateway/relay): consume the hub stream, forward to the EAM."""
    from gateway.relay.config import load_relay_config
    from gateway.relay.main import print_fleet, run_relay

    try:
        cfg = load_relay_config(args.config)
    except config_mod.ConfigError as exc:
        _report(exc.problems, [])
        print("refusing to start on an invalid relay config", file=sys.stderr)
        return 1
    if args.fleet:
        return run_async(print_fleet(cfg, args.json))
    if args.trace:
        from gateway.relay.trace import print_trace

        return run_async(print_trace(cfg, args.trace, args.json))
    if args.dead_letters or args.requeue:
        from gateway.relay.dead_letters import dead_text, list_dead, requeue

        if args.requeue:
            print("\n".join(run_async(requeue(cfg, args.requeue))))
            return 0
        print(dead_text(run_async(list_dead(cfg))))
        return 0
    logs.setup(cfg.relay.log_level, cfg.relay.log_format)
    run_async(run_relay(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantbridge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the gateway in the foreground")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a config and its rule files")
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    c.add_argument("--explain", action="store_true", help="print the Modbus read plan")
    c.add_argument("--online", action="store_true",
                   help="also contact every upstream (reachable, credentials accepted) and "
                        "look every mapped asset up in its EAM (SAP, Maximo)")
    c.add_argument("--rules-only", action="store_true",
                   help="only the rules: no secrets, no other part of the config is judged")
    c.add_argument("--rules", type=Path, nargs="+", metavar="FILE",
                   help="with --rules-only: these rule files, without any main config")
    c.set_defaults(func=cmd_check)

    rp = sub.add_parser("replay", help="run rules on a recording and print what they do")
    rp.add_argument("--rules", type=Path, nargs="+", required=True)
    rp.add_argument("--input", type=Path, required=True,
                    help="recording: .pbrec (what `record` writes), JSON lines or .csv")
    rp.add_argument("--compare", type=Path, nargs="+", help="old rule files to compare with")
    rp.add_argument("--from", dest="start", type=utc_time, metavar="TIME",
                    help="only data from this time on (ISO such as 2026-11-27T08:00, UTC unless "
                         "it names an offset; or seconds since 1970); rules start clean there")
    rp.add_argument("--to", dest="end", type=utc_time, metavar="TIME",
                    help="only data up to this time")
    rp.add_argument("--plot", type=Path, metavar="FILE",
                    help="also draw each rule that raised (or the rules of --asset): its signal, "
                         "levels and raises/clears; FILE.html or FILE.svg")
    rp.add_argument("--asset", nargs="+", metavar="ASSET",
                    help="with --plot: draw every rule of these assets (raised or not), only")
    rp.set_defaults(func=cmd_replay)

    rec = sub.add_parser("record", help="capture live telemetry to a recording file")
    rec.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rec.add_argument("--output", type=Path, required=True,
                     help=".pbrec (compact, fast to replay), .csv, or JSON lines (any other name)")
    rec.add_argument("--duration", type=float, default=60.0, help="seconds")
    rec.add_argument("--source", nargs="+", metavar="NAME",
                     help="only these sources (default: all but serial Modbus lines)")
    rec.set_defaults(func=cmd_record)

    dl = sub.add_parser("dead-letters", help="list, requeue or drop what an upstream refused")
    dl.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dl.add_argument("--sink", help="only this upstream")
    what = dl.add_mutually_exclusive_group()
    what.add_argument("--requeue", nargs="+", metavar="ID", help="record ids, or: all")
    what.add_argument("--drop", nargs="+", type=int, metavar="ID", help="record ids")
    dl.set_defaults(func=cmd_dead_letters)

    tr = sub.add_parser("trace", help="one event's whole life: raise, deliveries, receipt, clear")
    tr.add_argument("id", metavar="ID",
                    help="episode id, idempotency key, PB... reference or upstream id (WR-1)")
    tr.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    add_outbox_parser(sub)
    shelve_cli.add_parsers(sub, DEFAULT_CONFIG)  # shelve, unshelve, shelved

    st = sub.add_parser("status", help="what the running gateway says: problems, upstreams, "
                                       "open conditions, dead letters")
    st.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    st.add_argument("--json", action="store_true", help="the daemon's /status as it is")
    st.set_defaults(func=cmd_status)
    rl = sub.add_parser("relay", help="fleet tier: forward events from NATS JetStream to the EAM")
    rl.add_argument("--config", type=Path, default=Path("/etc/plantbridge/relay.toml"))
    rl.add_argument("--fleet", action="store_true",
                    help="print the gateways the running relay has seen, and exit")
    rl.add_argument("--dead-letters", action="store_true",
                    help="list the dead-letter stream (sequence, subject, upstream, reason)")
    rl.add_argument("--requeue", nargs="+", type=int, metavar="SEQ",
                    help="send these dead letters to the hub stream again")
    rl.add_argument("--trace", metavar="EPISODE_OR_KEY",
                    help="what the relays did with one event (episode id, outbox key or "
                         "Nats-Msg-Id): received, attempts, upstream answers, ack, dead letter")
    rl.add_argument("--json", action="store_true", help="with --trace or --fleet: JSON")
    rl.set_defaults(func=cmd_relay)

    rc = sub.add_parser("reconcile", help="compare the requests of a window with what each "
                                          "upstream holds; --fix sends missing ones again")
    rc.add_argument("--since", default="7d", help="window: 7d, 12h, 30m (default 7d)")
    rc.add_argument("--fix", action="store_true",
                    help="re-enqueue requests missing upstream (the running gateway sends them)")
    rc.add_argument("--json", action="store_true")
    rc.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rc.set_defaults(func=cmd_reconcile)

    d = sub.add_parser("demo", help="play a bearing failure against bundled simulators")
    d.add_argument("--duration", type=float, default=30.0, help="seconds")
    d.add_argument("--scenario", default="bearing-failure")
    d.set_defaults(func=cmd_demo)
    return p


def add_outbox_parser(sub: Any) -> None:
    ob = sub.add_parser("outbox", help="list, export or drop undelivered records")
    acts = ob.add_subparsers(dest="action", required=True)
    for name, helptext in (("list", "what is not delivered yet (pending and dead)"),
                           ("export", "write records as JSON lines with body and last error")):
        a = acts.add_parser(name, help=helptext)
        a.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        a.add_argument("--sink", help="only this upstream")
        a.add_argument("--asset", help="only this asset")
        a.add_argument("--dead", action="store_true", help="only dead letters")
        if name == "export":
            a.add_argument("file", metavar="FILE", type=Path)
            a.set_defaults(json=False)
        else:
            a.add_argument("--json", action="store_true", help="one JSON object a line")
    ack = acts.add_parser("acknowledge", help="clear the notices of a damaged outbox from the "
                          "status page, once you have read them")
    ack.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dr = acts.add_parser("drop", help="delete undelivered records for good")
    dr.add_argument("ids", nargs="+", type=int, metavar="ID")
    dr.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dr.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    ob.set_defaults(func=cmd_outbox)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
