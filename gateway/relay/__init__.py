"""`plantbridge relay`: the fleet tier between the NATS backbone and the EAM/CMMS.

Many gateways publish events to one JetStream stream; relays share one durable pull consumer
on it and forward each event with the existing sinks (REST, SAP PM, Maximo). Edge boxes then
hold NATS credentials only. See docs/fleet.md.
"""
