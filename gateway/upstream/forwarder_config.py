"""`[forwarding]`: how the forwarder (gateway/upstream/forwarder.py) paces, retries and judges
one sink: lease size, backoff, breaker, timeouts, hung and stuck limits."""

from __future__ import annotations

from pydantic import Field

from gateway.settings import StrictModel


class ForwardingConfig(StrictModel):
    batch_size: int = Field(default=50, ge=1)  # most records leased at once
    idle_poll_seconds: float = 1.0
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0  # a record's own backoff cap (the link's is probe_max)
    retry_after_max_seconds: float = 3600.0
    breaker_failures: int = 3  # consecutive failed requests before the breaker opens
    # while the breaker is open, one probe request at most this far apart
    probe_max_seconds: float = Field(default=10.0, gt=0)
    send_timeout_seconds: float = 60.0  # per request, beyond the sink's own HTTP timeouts
    shutdown_grace_seconds: float = 5.0  # on stop, time for in-flight deliveries to finish
    # a request without an answer for this long marks the upstream hung (logged once, shown,
    # breaker open); None: the upstream's first-byte timeout
    hung_after_seconds: float | None = Field(default=None, gt=0)
    # a record still failing this long after it was created is a problem on the status page
    # and /readyz (it keeps retrying, and holds back nothing but its own episode)
    stuck_after_seconds: float = Field(default=600.0, gt=0)
    probe_interval_seconds: float = Field(default=300.0, gt=0)  # reachability + credentials
    # the daemon's identity check (gateway/identity_probe.py); 0: only at start and reload
    identity_check_interval_seconds: float = Field(default=6 * 3600.0, ge=0)
