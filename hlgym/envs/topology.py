"""Communication topologies: a symmetric matrix of hop costs between peers.

A hop cost is in the topology's distance units; the reference's matrix lies in [0, 0.1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

TOPOLOGIES = ("hl_random", "euclidean")


def hl_random(n_peers: int, scale: float = 0.1) -> np.ndarray:
    """The reference's matrix: ``(b + b.T) / 2`` with ``b`` uniform from numpy seed 0,
    zero diagonal, times ``scale`` (the reference divides by 10 in its reward).

    It is fixed: the same for every episode and every environment seed, as in the
    reference.
    """
    b = np.random.RandomState(0).random_sample((n_peers, n_peers))
    d = (b + b.T) / 2 * scale
    np.fill_diagonal(d, 0.0)
    return d


def euclidean(n_peers: int, rng: np.random.Generator, scale: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Peers at uniform random positions in the unit square.

    Returns:
        ``(distances, positions)``: distances are Euclidean, divided by the square's
        diagonal and times ``scale``, so they lie in ``[0, scale]``.
    """
    pos = rng.random((n_peers, 2))
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1) / np.sqrt(2.0) * scale
    return d, pos


def validate_matrix(
    matrix: Sequence[Sequence[float]] | np.ndarray, n_peers: int, field: str = "topology"
) -> np.ndarray:
    """Check a user's distance matrix and return it as a float64 array.

    Raises:
        ValueError: If it is not ``n_peers x n_peers``, not finite, negative, not
            symmetric or has a non-zero diagonal; the message names what is wrong.
    """
    try:
        d = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: a distance matrix must be numeric, got {matrix!r}") from exc
    if d.shape != (n_peers, n_peers):
        raise ValueError(
            f"{field}: a distance matrix must be n_peers x n_peers = {n_peers}x{n_peers}, got shape {d.shape}"
        )
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{field}: a distance matrix must be finite, got {d.tolist()}")
    if np.any(d < 0):
        i, j = np.argwhere(d < 0)[0]
        raise ValueError(f"{field}: distances must be non-negative, got {d[i, j]} at [{i}][{j}]")
    if not np.allclose(d, d.T, rtol=0.0, atol=1e-12):
        i, j = np.argwhere(~np.isclose(d, d.T, rtol=0.0, atol=1e-12))[0]
        raise ValueError(
            f"{field}: a distance matrix must be symmetric, got [{i}][{j}]={d[i, j]} but [{j}][{i}]={d[j, i]}"
        )
    if np.any(np.diag(d) != 0):
        i = int(np.flatnonzero(np.diag(d))[0])
        raise ValueError(f"{field}: the diagonal must be zero, got [{i}][{i}]={d[i, i]}")
    return d


def mds_positions(distances: np.ndarray) -> np.ndarray:
    """2-D positions whose distances approximate ``distances`` (classical MDS), for drawing."""
    n = distances.shape[0]
    j = np.eye(n) - np.full((n, n), 1.0 / n)
    b = -0.5 * j @ (distances**2) @ j
    vals, vecs = np.linalg.eigh(b)
    top = np.argsort(vals)[::-1][:2]
    pos = vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))
    # Fix the signs so the drawing does not flip between calls.
    signs = np.sign(pos[np.argmax(np.abs(pos), axis=0), [0, 1]])
    signs[signs == 0] = 1.0
    return np.asarray(pos * signs)


def fixed_for(value: str | Sequence[Sequence[float]], n_peers: int, scale: float) -> tuple[np.ndarray, ...] | None:
    """A fixed topology's distances and positions (:func:`fixed`), or None for one that each
    episode draws (``euclidean``)."""
    if isinstance(value, str):
        return fixed(n_peers, scale, None) if value == "hl_random" else None
    return fixed(n_peers, scale, tuple(tuple(float(v) for v in row) for row in value))


@functools.lru_cache(maxsize=32)
def fixed(n_peers: int, scale: float, matrix: tuple[tuple[float, ...], ...] | None) -> tuple[np.ndarray, ...]:
    """A fixed topology's distances (``matrix``, or :func:`hl_random` when None) and drawing
    positions, read-only (computed once per process and setting)."""
    d = np.asarray(matrix, dtype=np.float64) if matrix is not None else hl_random(n_peers, scale)
    d.setflags(write=False)
    positions = mds_positions(d)
    positions.setflags(write=False)
    return d, positions
