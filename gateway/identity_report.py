"""What the identity check found, and where it is kept: the light half of registry_online.

The daemon, the page and `status` read reports and the cache path without loading the SAP PM
and Maximo clients that `registry_online` needs to ask; a gateway with neither upstream never
loads them (identity_probe.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rules import RuleSet

CACHE_NAME = "identity-cache.json"
ASKED_TYPES = frozenset({"sap_pm", "maximo"})  # the upstream types identities are looked up in


@dataclass(frozen=True, slots=True)
class IdentityFinding:
    asset: str
    upstream: str
    identity: str  # what was looked up, in words ("equipment 210100094")
    problem: str | None  # None: the upstream knows it as configured


@dataclass(frozen=True, slots=True)
class IdentityReport:
    checked_at: float
    findings: tuple[IdentityFinding, ...]
    unreachable: Mapping[str, str] = field(default_factory=dict)  # upstream -> why
    from_cache: tuple[str, ...] = ()  # upstreams whose findings are the cached ones
    domains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # upstream -> problems

    @property
    def problems(self) -> list[str]:
        """One line per asset the EAM does not know as configured."""
        return [f"{f.asset}: {f.problem}" for f in self.findings if f.problem is not None]

    @property
    def domain_problems(self) -> list[str]:
        """One line per rule priority or failure code an upstream does not know."""
        return [f"upstream '{name}': {p}" for name, said in sorted(self.domains.items())
                for p in said]

    def lines(self) -> list[str]:
        """The problems, then what could not be asked (and whether a cached result stood in)."""
        out = self.problems + self.domain_problems
        for name, why in sorted(self.unreachable.items()):
            cached = " (its last known findings are used)" if name in self.from_cache else ""
            out.append(f"upstream '{name}' could not be asked: {why}{cached}")
        return out


def cache_path_for(outbox_path: Path) -> Path:
    return outbox_path.with_name(CACHE_NAME)


def rule_domains(rules: RuleSet) -> tuple[set[int], set[str]]:
    """The canonical priorities (priority, else severity) and failure codes the rules give
    their requests, per-asset overrides included."""
    priorities: set[int] = set()
    codes: set[str] = set()
    for rule in rules.rules:
        for spec in (rule.spec, *rule.per_asset.values()):
            priorities.add(spec.priority or spec.severity)
            if spec.failure_code:
                codes.add(spec.failure_code)
    return priorities, codes
