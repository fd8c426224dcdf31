"""Southbound drivers: protocol traffic in, Samples out. They know nothing of rules or storage.

`CONFIGS` names each driver's config model by its `type`, as "module:Class": the gateway's
config imports a driver's config module only when a `[[sources]]` entry names that type
(gateway/component_types.py), and the model's `build()` imports the driver itself.
"""

CONFIGS: dict[str, str] = {
    "mqtt": "drivers.mqtt.config:MqttSourceConfig",
    "opcua": "drivers.opcua.config:OpcUaSourceConfig",
    "modbus": "drivers.modbus.config:ModbusSourceConfig",
}
