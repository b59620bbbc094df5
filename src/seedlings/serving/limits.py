"""Budgets for what requests hold in memory, and giving freed memory back to the system.

Two budgets use :class:`Budget`: request bodies in flight (bytes, ``max_body_bytes_in_flight``) and
decoded pixels in flight (``max_decode_pixels``). Both refuse at once instead of waiting: a refused
request gets 503 + Retry-After before it costs anything.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading


class Budget:
    """Units (bytes, pixels) in flight in this process; ``take`` never waits: over budget is refused at once.
    A lone request is always admitted (``in_use`` 0), so a limit below one request's size does not lock
    everyone out: it only stops a second one from joining it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        self._lock = threading.Lock()

    def take(self, units: int) -> bool:
        with self._lock:
            if self.in_use and self.in_use + units > self.limit:
                return False
            self.in_use += units
            return True

    def give(self, units: int) -> None:
        with self._lock:
            self.in_use -= units


_libc = None


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    if _libc and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)
