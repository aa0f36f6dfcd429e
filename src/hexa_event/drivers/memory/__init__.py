"""The in-memory driver: a process-local broker for tests and demos (not persistent)."""

from .broker import MemoryBroker
from .driver import MemoryDriver

__all__ = ["MemoryBroker", "MemoryDriver"]
