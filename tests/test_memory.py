"""Freed heap memory goes back to the operating system after long rounds only."""

from __future__ import annotations

import pytest

from hlgym.envs import PeerSelectionEnv
from hlgym.envs.memory import HeapTrim, trim_heap

GLIBC = trim_heap()  # False where there is no malloc_trim (not Linux/glibc)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim is not available here")
def test_long_rounds_trim_and_short_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    heap = HeapTrim(after=0.5)
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
    env.reset(seed=0)
    env.step(1)
    assert env._runner.heap.trims == 2  # after the reset and after the round
