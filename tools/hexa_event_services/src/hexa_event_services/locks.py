"""File locks, one per service and purpose: concurrent ``up`` commands serialise."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from .config import (
    say,
)

# --------------------------------------------------------------------------------------
# Locks: one per service and purpose, flock-based so that concurrent `up`s serialise.
# Re-entrant inside one process (start() installs under its own lock).
# --------------------------------------------------------------------------------------

_lock_guard = threading.Lock()
_held: dict[tuple[str, int], tuple[int, int]] = {}


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    key = (str(path), threading.get_ident())
    with _lock_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is not None:
        try:
            yield
        finally:
            with _lock_guard:
                fd, count = _held[key]
                _held[key] = (fd, count - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            say(f"waiting for lock {path} (another services command is running)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        with _lock_guard:
            _held[key] = (fd, 1)
        try:
            yield
        finally:
            with _lock_guard:
                _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
