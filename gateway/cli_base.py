"""What every `plantbridge` subcommand module shares: the event loop, config loading with
problems printed, and the default config path."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway import config as config_mod

T = TypeVar("T")
DEFAULT_CONFIG = Path("/etc/plantbridge/plantbridge.toml")


# The cyclic GC's youngest generation is collected after this many new container objects
# (Python's default: 700). Ingest makes tuples and dicts by the hundred thousand a second, and
# at 700 the collector walked them again and again: the batched MQTT row (100 readings a
# message, into the rules) spent 2.4 CPU-us a sample at 700 and 2.0 at 5,000-20,000
# (benchmarks/mqtt_rows.py, same run). Memory is unchanged: refcounting frees acyclic garbage
# at once either way; only cycles wait a little longer.
GC_YOUNG_OBJECTS = 20_000


def tune_gc() -> None:
    """The collector thresholds of a PlantBridge process (see GC_YOUNG_OBJECTS)."""
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (30-60% faster on the network paths), with the
    collector tuned for a high allocation rate (`tune_gc`)."""
    tune_gc()
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


def report_problems(problems: Sequence[object], warnings: Sequence[object]) -> None:
    """Print each problem, then each warning, one a line on stderr."""
    for problem in problems:
        print(problem, file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
