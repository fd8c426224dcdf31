"""Upstream sinks (EAM/CMMS/ERP adapters) and the forwarder that drives them."""
