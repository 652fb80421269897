"""Intra-op threads for the env's own compute: how many, and set only while it runs.

torch's intra-op pool is process-wide, and its default (one thread per core) fights any
other work on the machine: on 2 cores, a default step took 5.4 ms with one thread and 5.2 ms
with two when idle, but 6.4 vs 14.7 ms beside one busy Python loop and 310-843 ms vs 6-14 ms
under heavy load (issue 25's table; ``bench/contention.py`` measures it on this machine).
The digits ids' inner models (64-unit MLPs, batches of 32) gain nothing from a second
thread, and their results are bit-identical with one; the reference's CNN does gain.

``threads="auto"`` (the config's default) therefore runs the MLP models on one thread, and
the CNN on torch's setting as the process left it, except in a worker process (SB3's
SubprocVecEnv, Gymnasium's async vector env: a multiprocessing child), where every copy gets
one thread so that the copies do not oversubscribe the cores. An integer sets the count.
The count applies only inside the env's reset and step: the caller's
``torch.get_num_threads()`` is the same after them as before.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager

import torch

AUTO = "auto"
# Models whose work gains nothing from intra-op parallelism (bench/contention.py).
SERIAL_MODELS = ("mlp",)


def in_worker() -> bool:
    """Whether this process is a multiprocessing child (a vector env's worker)."""
    return multiprocessing.parent_process() is not None


def count(setting: int | str, model: str) -> int | None:
    """The intra-op threads the env's compute runs on (None: torch's setting, untouched).

    Args:
        setting: The config's ``threads``: ``"auto"`` or an integer >= 1.
        model: The config's ``model`` (``"mlp"`` or ``"cnn"``).
    """
    if setting != AUTO:
        return int(setting)
    if model in SERIAL_MODELS or in_worker():
        return 1
    return None


@contextmanager
def limited(threads: int | None) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads, then give torch its setting back."""
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
