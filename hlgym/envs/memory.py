"""Returning freed heap memory to the operating system after long rounds.

A round of a 28x28 preset allocates and frees many large tensors (a batch's activations of
8 batched CNN copies are 12-24 MB each). glibc's ``malloc`` raises its mmap threshold to the
largest block freed (up to 32 MB), so after the first round such tensors come from its heaps,
one per thread, and freed memory stays in them: eight batched copies of HL-FashionMNIST swung
between 0.8 and 1.9 GB of resident memory over resets that way. ``malloc_trim(0)`` gives the
free pages back. :class:`HeapTrim` calls it after every round that took long enough for
its cost (about 0.5 ms, and the page faults of the next round's first allocations) not to
show, and never after the short rounds of the digits presets, where it would.

Linux with glibc only; elsewhere, and with ``HLGYM_TRIM_HEAP=0`` in the environment, it does
nothing. docs/speed.md ("Memory") has the measurements.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

TRIM_AFTER = 0.1  # [s] of a round before a trim: its cost (a few ms at most) stays small then


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    fn: Callable[[int], int] = trim
    return fn


def trim_heap() -> bool:
    """Give the heaps' free pages back to the operating system now; True if that was done
    (glibc's ``malloc_trim(0)``), False where it cannot be or ``HLGYM_TRIM_HEAP=0``."""
    trim = _malloc_trim()
    if trim is None or os.environ.get("HLGYM_TRIM_HEAP", "1") == "0":
        return False
    trim(0)
    return True


class HeapTrim:
    """Trims the heap after a round whose model work took at least ``after`` seconds.

    Args:
        after: [s] the shortest round followed by a trim.
    """

    def __init__(self, after: float = TRIM_AFTER) -> None:
        self.after = after
        self.trims = 0
        """Trims done so far (for the benchmark)."""

    def round_took(self, seconds: float) -> None:
        """Report a round's duration [s]; trims the heap if it was long."""
        if seconds >= self.after and trim_heap():
            self.trims += 1
