"""Partitioners: which training samples each peer holds.

Every partitioner takes the training labels and a ``numpy.random.Generator`` and returns
one int64 index array per peer. All but ``hl_reference`` are disjoint across peers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hlgym.envs.fields import CoreFields

PARTITIONS = ("hl_skew", "hl_reference", "dirichlet", "shards", "iid")


def _need(field: str, value: int, available: int, what: str) -> None:
    if value > available:
        raise ValueError(f"{field}={value} asks for more samples than the data has: {what} has {available}")


def hl_reference(labels: np.ndarray, n_peers: int, n_classes: int, main: int, other: int) -> list[np.ndarray]:
    """The reference's split, exactly (it overlaps across peers).

    Peer ``n`` takes, in data set order, block ``n // n_classes`` of ``main`` samples of
    class ``n % n_classes`` and block ``n // n_classes`` of ``other`` samples of every
    other class together. With 10 peers all peers share the same first ``other`` samples
    of the other classes, as in the reference.
    """
    parts = []
    for n in range(n_peers):
        cls = n % n_classes
        block = n // n_classes
        main_idx = np.flatnonzero(labels == cls)
        sub_idx = np.flatnonzero(labels != cls)
        _need("main_samples", (block + 1) * main, main_idx.size, f"class {cls}")
        _need("other_samples", (block + 1) * other, sub_idx.size, f"the classes other than {cls}")
        parts.append(
            np.concatenate([main_idx[block * main : (block + 1) * main], sub_idx[block * other : (block + 1) * other]])
        )
    return parts


def hl_skew(
    labels: np.ndarray, n_peers: int, n_classes: int, main: int, other: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The reference's skew, disjoint and seeded.

    Peer ``n`` gets ``main`` random samples of class ``n % n_classes`` and ``other``
    random samples drawn from all other classes together; no sample goes to two peers.
    """
    # Main samples first, for every peer, so that no peer's "other" draws can eat into a
    # later peer's main class.
    taken = np.zeros(labels.shape[0], dtype=bool)
    mains = []
    for n in range(n_peers):
        cls = n % n_classes
        free_main = np.flatnonzero(~taken & (labels == cls))
        _need("main_samples", main, free_main.size, f"class {cls} (what is left when peer {n} draws)")
        main_idx = rng.choice(free_main, size=main, replace=False)
        taken[main_idx] = True
        mains.append(main_idx)
    parts = []
    for n in range(n_peers):
        free_other = np.flatnonzero(~taken & (labels != n % n_classes))
        left = f"the classes other than {n % n_classes} (what is left when peer {n} draws)"
        _need("other_samples", other, free_other.size, left)
        sub_idx = rng.choice(free_other, size=other, replace=False)
        taken[sub_idx] = True
        parts.append(np.concatenate([mains[n], sub_idx]).astype(np.int64))
    return parts


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices whose class shares match ``labels``' (largest remainders), sorted.

    Raises:
        ValueError: If ``size`` exceeds the number of labels.
    """
    _need("eval_samples", size, labels.shape[0], "the test set")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / labels.shape[0]
    take = np.floor(exact).astype(np.int64)
    extra = np.argsort(-(exact - take), kind="stable")[: size - int(take.sum())]
    take[extra] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def _pool(labels: np.ndarray, n_peers: int, samples_per_peer: int | None, rng: np.random.Generator) -> np.ndarray:
    if samples_per_peer is None:
        return rng.permutation(labels.shape[0])
    _need("samples_per_peer * n_peers", samples_per_peer * n_peers, labels.shape[0], "the training set")
    return rng.permutation(labels.shape[0])[: samples_per_peer * n_peers]


def iid(labels: np.ndarray, n_peers: int, samples_per_peer: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Equal random shares of a random pool (``samples_per_peer`` each, or all data)."""
    pool = _pool(labels, n_peers, samples_per_peer, rng)
    return [np.sort(p) for p in np.array_split(pool, n_peers)]


def shards(
    labels: np.ndarray,
    n_peers: int,
    classes_per_peer: int,
    samples_per_peer: int | None,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """McMahan et al.'s shards: sort by label, cut into ``n_peers * classes_per_peer``
    shards, give each peer ``classes_per_peer`` random shards."""
    pool = _pool(labels, n_peers, samples_per_peer, rng)
    pool = pool[np.argsort(labels[pool], kind="stable")]
    cuts = np.array_split(pool, n_peers * classes_per_peer)
    order = rng.permutation(len(cuts))
    return [
        np.sort(np.concatenate([cuts[k] for k in order[n * classes_per_peer : (n + 1) * classes_per_peer]]))
        for n in range(n_peers)
    ]


def dirichlet(
    labels: np.ndarray,
    n_peers: int,
    n_classes: int,
    alpha: float,
    samples_per_peer: int | None,
    rng: np.random.Generator,
    min_samples: int = 8,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Per class, split its samples across peers in ``Dirichlet(alpha)`` proportions.

    Redraws (up to ``max_tries`` times) until every peer holds at least ``min_samples``.
    """
    pool = _pool(labels, n_peers, samples_per_peer, rng)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_peers)]
        for c in range(n_classes):
            idx = pool[labels[pool] == c]
            shares = rng.dirichlet(np.full(n_peers, alpha))
            cut = (np.cumsum(shares)[:-1] * idx.size).astype(np.int64)
            for n, piece in enumerate(np.split(idx, cut)):
                parts[n].append(piece)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(r.size for r in result) >= min_samples:
            return result
    raise ValueError(
        f"dirichlet_alpha={alpha} left a peer with fewer than {min_samples} samples in {max_tries} draws; "
        "use a larger dirichlet_alpha or samples_per_peer"
    )


def split(cfg: CoreFields, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each peer's samples under ``cfg.partition`` with its settings."""
    if cfg.partition == "hl_reference":
        return hl_reference(labels, cfg.n_peers, n_classes, cfg.main_samples, cfg.other_samples)
    if cfg.partition == "hl_skew":
        return hl_skew(labels, cfg.n_peers, n_classes, cfg.main_samples, cfg.other_samples, rng)
    if cfg.partition == "dirichlet":
        return dirichlet(labels, cfg.n_peers, n_classes, cfg.dirichlet_alpha, cfg.samples_per_peer, rng)
    if cfg.partition == "shards":
        return shards(labels, cfg.n_peers, cfg.classes_per_peer, cfg.samples_per_peer, rng)
    return iid(labels, cfg.n_peers, cfg.samples_per_peer, rng)


def check(cfg: CoreFields, labels: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """A split of ``cfg`` drawn with a fixed seed (the sizes every draw asks for), at env
    construction rather than at the first reset.

    Raises:
        ValueError: If the split asks for more samples than the data has; the message says
            which sizes would fit with this ``n_peers``.
    """
    try:
        return split(cfg, labels, n_classes, np.random.default_rng(0))
    except ValueError as exc:
        raise ValueError(f"{exc}; {_what_fits(cfg, labels, n_classes)}") from None


def _fits(cfg: CoreFields, labels: np.ndarray, n_classes: int, **sizes: Any) -> bool:
    try:
        split(dataclasses.replace(cfg, **sizes), labels, n_classes, np.random.default_rng(0))
    except ValueError:
        return False
    return True


def _what_fits(cfg: CoreFields, labels: np.ndarray, n_classes: int) -> str:
    """The largest sizes of ``cfg``'s partition that fit the data with ``cfg.n_peers`` peers
    (main and other samples scaled together, keeping their ratio)."""
    n = cfg.n_peers
    if cfg.partition in ("hl_skew", "hl_reference"):

        def sizes(m: int) -> dict[str, int]:
            return {"main_samples": m, "other_samples": round(cfg.other_samples * m / cfg.main_samples)}

        low, high = 0, cfg.main_samples  # the largest main in [1, high] that fits: fits(low) holds
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if _fits(cfg, labels, n_classes, **sizes(mid)) else (low, mid - 1)
        if low == 0:
            return f"no main_samples fits {n} peers of this data set: use fewer peers"
        fit = " ".join(f"{k}={v}" for k, v in sizes(low).items())
        return f"with n_peers={n} this fits: {fit} (or fewer peers)"
    if cfg.partition == "dirichlet" and (cfg.samples_per_peer is None or cfg.samples_per_peer * n <= labels.size):
        return "use a larger dirichlet_alpha or samples_per_peer"
    return f"with n_peers={n} this fits: samples_per_peer={labels.size // n} at most (or fewer peers)"


def unassigned(n_samples: int, parts: list[np.ndarray]) -> np.ndarray:
    """Training samples no peer holds (the pool a component's extra images come from)."""
    held = np.zeros(n_samples, dtype=bool)
    for p in parts:
        held[p] = True
    return np.flatnonzero(~held)
