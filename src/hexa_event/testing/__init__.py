"""Test support: the conformance suite every driver passes, and helpers for waiting.

``hexa_event.testing.conformance.DriverConformance`` is a pytest base class; a driver's
test module subclasses it and says how to build the driver (see its docstring).
"""

from .waiting import Collector, eventually

__all__ = ["Collector", "eventually"]
