"""Freed heap memory goes back to the operating system after long rounds that leave much of
it free, only."""

from __future__ import annotations

import platform
import sys

import pytest

from hlgym.envs import PeerSelectionEnv, memory
from hlgym.envs.memory import HeapTrim, heap_free_bytes, trim_heap

GLIBC = trim_heap()  # False where there is no malloc_trim (not Linux/glibc)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim is not available here")
def test_long_rounds_trim_and_short_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    heap = HeapTrim(after=0.5, free=0)
    heap.round_took(0.01)
    assert heap.trims == 0
    heap.round_took(0.6)
    assert heap.trims == 1
    monkeypatch.setenv("HLGYM_TRIM_HEAP", "0")
    assert not trim_heap()
    heap.round_took(5.0)
    assert heap.trims == 1


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim is not available here")
def test_a_slow_round_is_followed_by_a_trim() -> None:
    env = PeerSelectionEnv(max_rounds=5)
    env._runner.heap.after = 0.0  # every round counts as long
    env._runner.heap.free = 0  # and any free memory as enough
    env.reset(seed=0)
    env.step(1)
    assert env._runner.heap.trims == 2  # after the reset and after the round


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim is not available here")
def test_a_long_round_trims_only_when_much_of_the_heap_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    free: list[int | None] = [10 * 2**20]
    monkeypatch.setattr(memory, "heap_free_bytes", lambda: free[0])
    heap = HeapTrim(after=0.1)  # the default: 128 MB free
    heap.round_took(1.0)
    assert heap.trims == 0  # a lone HL copy's 10-50 MB: not worth the next round's page faults
    free[0] = 600 * 2**20
    heap.round_took(1.0)
    assert heap.trims == 1  # 8 batched copies' 0.5-1.2 GB
    free[0] = None  # no mallinfo2 (glibc < 2.33): every long round trims, as before
    heap.round_took(1.0)
    assert heap.trims == 2


def test_the_heaps_free_bytes_are_read_where_glibc_has_mallinfo2() -> None:
    free = heap_free_bytes()
    libc, version = platform.libc_ver()
    if sys.platform.startswith("linux") and libc == "glibc" and tuple(map(int, version.split(".")[:2])) >= (2, 33):
        assert isinstance(free, int) and free >= 0
    else:
        assert free is None
