"""Test support: the conformance suite every driver passes, and helpers for waiting.

``hexa_event.testing.conformance.DriverConformance`` is a pytest base class; a driver's
test module subclasses it and says how to build the driver (see its docstring).
"""

from .handlers import EmitCapture, Emitted, build_context, build_message, call_handler
from .waiting import Collector, eventually

__all__ = [
    "Collector",
    "EmitCapture",
    "Emitted",
    "build_context",
    "build_message",
    "call_handler",
    "eventually",
]
