"""OPC UA source driver (asyncua): subscriptions, reconnect, security.

The names below are loaded on first use: the config union imports `drivers.opcua.config` for
every config, and importing the package must not pull in asyncua (~20 MB, ~0.5 s) where no
OPC UA source is configured. `OpcUaSourceConfig.build()` imports the driver when it is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.opcua.config import OpcUaSourceConfig
    from drivers.opcua.driver import OpcUaSource

__all__ = ["OpcUaSource", "OpcUaSourceConfig"]
_WHERE = {"OpcUaSource": "drivers.opcua.driver", "OpcUaSourceConfig": "drivers.opcua.config"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
