"""The cyclic garbage collector as every PlantBridge process runs it (daemon, MQTT workers).

Its own module so a worker process can use it without importing the CLI and config models.
"""

from __future__ import annotations

import gc

# The youngest generation is collected after this many new container objects (Python's
# default: 700). Ingest makes tuples and dicts by the hundred thousand a second, and at 700 the
# collector walked them again and again: the batched MQTT row (100 readings a message, into the
# rules) spent 2.4 CPU-us a sample at 700 and 2.0 at 5,000-20,000 (benchmarks/mqtt_rows.py, same
# run). Memory is unchanged: refcounting frees acyclic garbage at once either way; only cycles
# wait a little longer.
GC_YOUNG_OBJECTS = 20_000


def tune_gc() -> None:
    """The collector thresholds of a PlantBridge process (see GC_YOUNG_OBJECTS)."""
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
