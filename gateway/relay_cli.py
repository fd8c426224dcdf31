"""`plantbridge relay`, `status` and `demo`: the fleet tier, what a running gateway says, and
the bundled demonstration."""

from __future__ import annotations

import argparse
import sys

from gateway import config as config_mod
from gateway import logs
from gateway.cli_base import load_or_report, report_problems, run_async


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
        report_problems(exc.problems, [])
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
