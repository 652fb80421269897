"""Returning freed heap memory to the operating system after long rounds.

A round of a 28x28 preset allocates and frees many large tensors (a batch's activations of
8 batched CNN copies are 12-24 MB each). glibc's ``malloc`` raises its mmap threshold to the
largest block freed (up to 32 MB), so after the first round such tensors come from its heaps,
one per thread, and freed memory stays in them: eight batched copies of HL-FashionMNIST swung
between 0.8 and 1.9 GB of resident memory over resets that way. ``malloc_trim(0)`` gives the
free pages back. :class:`HeapTrim` calls it after a round that took long enough for its cost
(about 0.5 ms, and the page faults of the next round's first allocations) not to show, and
only when the heaps hold enough free memory to matter (glibc's ``mallinfo2``): eight batched
HL-FashionMNIST copies left 0.5-1.2 GB free after a step, a lone copy 10-50 MB, where a
trim made the next step's bfloat16 evaluation 10% slower (117 against 106 ms) for nothing.
The digits presets' short rounds never trim.

Linux with glibc only; elsewhere, and with ``HLGYM_TRIM_HEAP=0`` in the environment, it does
nothing; with a glibc older than 2.33 (no ``mallinfo2``) every long round trims. docs/speed.md
("Memory") has the measurements.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

TRIM_AFTER = 0.1  # [s] of a round before a trim: its cost (a few ms at most) stays small then
# [bytes] free in the heaps before a trim: above a lone HL copy's 10-50 MB, below the 0.5-1.2 GB
# that 8 batched copies leave (so what stays resident between rounds grows by at most this).
TRIM_FREE = 128 * 2**20


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (malloc.h, glibc >= 2.33): every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where there is none (macOS, Windows, a Linux without libc.so.6)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (macOS, Windows, musl)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    fn: Callable[[int], int] = trim
    return fn


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    """glibc's ``mallinfo2``, or None where there is none (glibc < 2.33, not glibc)."""
    info = getattr(_libc(), "mallinfo2", None)
    if info is None:
        return None
    info.argtypes, info.restype = [], _MallInfo2
    fn: Callable[[], _MallInfo2] = info
    return fn


def heap_free_bytes() -> int | None:
    """Bytes free in glibc's heaps, every arena (``mallinfo2``'s ``fordblks``; about 0.1 ms),
    or None where that cannot be read."""
    info = _mallinfo2()
    return None if info is None else int(info().fordblks)


def trim_heap() -> bool:
    """Give the heaps' free pages back to the operating system now; True if that was done
    (glibc's ``malloc_trim(0)``), False where it cannot be or ``HLGYM_TRIM_HEAP=0``."""
    trim = _malloc_trim()
    if trim is None or os.environ.get("HLGYM_TRIM_HEAP", "1") == "0":
        return False
    trim(0)
    return True


class HeapTrim:
    """Trims the heap after a round whose model work took at least ``after`` seconds, when
    the heaps hold at least ``free`` bytes unused (or their free bytes cannot be read).

    Args:
        after: [s] the shortest round followed by a trim.
        free: [bytes] the least free heap memory worth a trim.
    """

    def __init__(self, after: float = TRIM_AFTER, free: int = TRIM_FREE) -> None:
        self.after = after
        self.free = free
        self.trims = 0
        """Trims done so far (for the benchmark)."""

    def round_took(self, seconds: float) -> None:
        """Report a round's duration [s]; trims the heap if it was long and enough is free."""
        if seconds < self.after:
            return
        free = heap_free_bytes()
        if (free is None or free >= self.free) and trim_heap():
            self.trims += 1
