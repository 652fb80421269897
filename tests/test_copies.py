"""Copies of an env, as the oracle and the lookahead make them by the hundred thousand."""

from __future__ import annotations

import copy
import gc
import sys

import gymnasium as gym
import numpy as np

import hlgym  # noqa: F401  (registers the ids)


def test_copying_an_env_leaks_no_reference_to_none() -> None:
    """torch 2.13's deepcopy of a torch.Generator drops a reference to None per call; an
    oracle's search makes millions of copies, and the process died (``none_dealloc``)."""
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=5).unwrapped
    env.reset(seed=0)
    env.step(1)
    for _ in range(10):
        copy.deepcopy(env)
    gc.collect()
    before = sys.getrefcount(None)
    for _ in range(200):
        copy.deepcopy(env).step(2)
    gc.collect()
    assert sys.getrefcount(None) - before > -50  # the leak took 200 or more


def test_a_copy_plays_on_exactly_as_the_env() -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=5).unwrapped
    env.reset(seed=4)
    env.step(3)
    twin = copy.deepcopy(env)
    for action in (5, 5, 1):
        a, b = twin.step(action), env.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
