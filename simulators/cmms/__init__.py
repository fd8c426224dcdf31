"""A generic SaaS CMMS HTTP API simulator with Idempotency-Key semantics and fault injection."""

from simulators.cmms.faults import Fault, FaultMode, Faults
from simulators.cmms.server import CmmsSimulator

__all__ = ["CmmsSimulator", "Fault", "FaultMode", "Faults"]
