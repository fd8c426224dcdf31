"""What `check` says about the asset registry, offline: can every upstream map every rule asset?

A rule whose asset an upstream cannot map raises requests that upstream rejects for good at
delivery time; `check` says so before the gateway runs. With an asset registry configured that
is an error (the technician opted in to one table of identities); without one it is a warning,
so that configs from before the registry keep passing. Also said, as warnings: registry entries
no rule uses, pattern rules (their assets cannot be enumerated before data arrives), and assets
that an upstream's own `asset_map` and the registry name differently.

The online part (looking identities up in the EAM) is `gateway/registry_online.py`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.registry import (
    Registry,
    RegistryProblem,
    map_conflicts,
    maximo_config,
    sap_config,
    with_registry,
)
from rules import RuleSet

if TYPE_CHECKING:
    from gateway.upstream.maximo_config import MaximoSinkConfig

_SHOWN = 6


def _cannot_map(upstream: object, asset: str) -> str | None:
    """Why this upstream cannot map the asset, or None when it can."""
    if (sap := sap_config(upstream)) is not None and asset not in sap.asset_map:
        return (f"upstream '{sap.name}' (SAP) has no technical object for it: give it "
                "`sap = { equipment = \"...\" }` in the asset registry")
    if (mx := maximo_config(upstream)) is not None and asset not in mx.asset_map \
            and _rejects_unknown(mx):
        return (f"upstream '{mx.name}' (Maximo) has no asset for it: give it "
                "`maximo = { assetnum = \"...\", siteid = \"...\" }` in the asset registry")
    return None


def _rejects_unknown(upstream: MaximoSinkConfig) -> bool:
    from gateway.upstream.maximo_config import UnknownAssetPolicy

    return upstream.unknown_asset is UnknownAssetPolicy.REJECT


def _maps(upstream: object) -> bool:
    """Does this upstream need an identity per asset (rather than taking the canonical id)?"""
    return sap_config(upstream) is not None or (
        (mx := maximo_config(upstream)) is not None and _rejects_unknown(mx))


def _comment_on_sap(upstreams: Sequence[object], rules: RuleSet) -> list[RegistryProblem]:
    """`closed_upstream = "comment"` meets SAP's read-only completed notifications (NOCO)."""
    saps = [sap.name for u in upstreams if (sap := sap_config(u)) is not None]
    if not saps:
        return []
    return [RegistryProblem(
        rule.file, rule.line, None, f"rule '{rule.rule_id}'",
        f"closed_upstream = \"comment\": SAP makes a completed notification read-only "
        f"(system status NOCO), so upstream '{saps[0]}' will likely refuse the note, which is "
        "then kept as a dead letter quoting SAP; \"new_request\" raises a new notification")
        for rule in rules.rules if getattr(rule.spec, "closed_upstream", "") == "comment"]


def registry_findings(registry: Registry, upstreams: Sequence[object], rules: RuleSet, *,
                      config_file: str, registry_configured: bool
                      ) -> tuple[list[RegistryProblem], list[RegistryProblem]]:
    """(problems, warnings) about mapping the rules' assets onto the upstreams in use."""
    problems: list[RegistryProblem] = []
    warnings: list[RegistryProblem] = []
    merged = [with_registry(u, registry) for u in upstreams]
    for i, upstream in enumerate(upstreams):
        for asset, words in map_conflicts(upstream, registry):
            name = getattr(upstream, "name", "?")
            warnings.append(RegistryProblem(config_file, None, asset,
                                            f"upstreams[{i}] '{name}'", words))
    said = problems if registry_configured else warnings
    for rule in rules.rules:
        for asset in rule.assets:
            for upstream in merged:
                why = _cannot_map(upstream, asset)
                if why is not None:
                    said.append(RegistryProblem(rule.file, rule.line, asset,
                                                f"rule '{rule.rule_id}'", why))
        if rule.pattern is not None and any(_maps(u) for u in merged):
            known = sorted(a for a in registry if fnmatch.fnmatchcase(a, rule.pattern))
            shown = ", ".join(known[:_SHOWN]) + (" ..." if len(known) > _SHOWN else "")
            warnings.append(RegistryProblem(
                rule.file, rule.line, None, f"rule '{rule.rule_id}'",
                f"asset_pattern {rule.pattern!r} cannot be listed before data arrives, so "
                "whether every upstream can map its assets shows only then"
                + (f" (the registry has {shown})" if known else "")))
    warnings += _comment_on_sap(upstreams, rules)
    for asset in registry:
        if not any(rule.matches(asset) for rule in rules.rules):
            warnings.append(RegistryProblem(registry.file, None, asset, "",
                                            "no rule watches this asset"))
    return problems, warnings
