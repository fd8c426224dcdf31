"""`plantbridge check`: validate a config and its rule files, and with `--online` contact
every upstream and look every mapped asset up in its EAM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import config as config_mod
from gateway.cli_base import report_problems, run_async
from gateway.registry import Registry

if TYPE_CHECKING:
    from rules import RuleSet


def _check_rule_files(files: list[Path]) -> int:
    """`check --rules-only --rules FILES`: the rule files alone, no main config at all."""
    from gateway import config as config_mod
    from rules import RuleFileError, load_rule_files

    try:
        rules = load_rule_files(files)
    except RuleFileError as exc:
        report_problems(exc.problems, [])
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
    report_problems(found.problems, found.warnings)
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
