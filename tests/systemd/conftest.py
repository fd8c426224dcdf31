"""The end-to-end stack (real Mosquitto, the CMMS simulator, the daemon) for this suite too."""

from __future__ import annotations

from tests.e2e.conftest import stack

__all__ = ["stack"]
