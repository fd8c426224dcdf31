"""Modbus source (TCP, RTU, RTU over TCP): register maps, coalesced polling, per-device health."""
