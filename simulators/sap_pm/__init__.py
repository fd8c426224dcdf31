"""A faithful simulator of SAP S/4HANA PM's API_MAINTNOTIFICATION (OData v2, CSRF) with faults."""

from simulators.sap_pm.faults import Fault, FaultMode, Faults
from simulators.sap_pm.server import SERVICE_PATH, SapPmSimulator

__all__ = ["SERVICE_PATH", "Fault", "FaultMode", "Faults", "SapPmSimulator"]
