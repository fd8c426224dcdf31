"""Machines and upstream APIs for tests and the demo. Production code never imports this."""
