"""An IBM Maximo Manage REST/JSON API simulator (mxapisr service requests) with faults."""

from simulators.maximo.faults import Fault, FaultMode, Faults
from simulators.maximo.server import DEMO_ASSETS, MaximoSimulator

__all__ = ["DEMO_ASSETS", "Fault", "FaultMode", "Faults", "MaximoSimulator"]
