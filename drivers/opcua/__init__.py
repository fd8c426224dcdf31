"""OPC UA source driver (asyncua): subscriptions, reconnect, security."""

from drivers.opcua.config import OpcUaSourceConfig
from drivers.opcua.driver import OpcUaSource

__all__ = ["OpcUaSource", "OpcUaSourceConfig"]
