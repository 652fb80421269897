"""Observation builders: what the meta-policy sees of the peers.

- ``peer_features``: one row of :data:`PEER_FEATURES` per peer, every column in [0, 1]
  (with a ``domain_shift``, :data:`DOMAIN_FEATURES` as well, with a ``modality_split``
  :data:`MODALITY_FEATURES`: :func:`feature_names`).
- ``hl_pca``: the reference's state, PCA(k) over all peers' flattened weights.
"""

from __future__ import annotations

import numpy as np

OBSERVATIONS = ("peer_features", "hl_pca")

PEER_FEATURES = (
    "is_holder",  # 1 on the peer that holds the model
    "hop_cost",  # cost of a hop from the holder, / the topology's largest cost
    "probe_loss",  # tanh(loss / ln(n_classes)) of the current model on the peer's probe
    "probe_error",  # 1 - accuracy of the current model on the peer's probe
    "since_visit",  # rounds since the peer last trained the model, / max_rounds (1 if never)
    "visits",  # times the peer trained the model, / max_rounds
    "progress",  # round / max_rounds (the same on every row)
    "accuracy",  # the current test accuracy (the same on every row)
)
# With a domain_shift: sqrt(MMD^2 / 2) between the current model's penultimate features on the
# peer's probe and on the target-domain images (hlgym.models.training.mmd), in [0, 1].
DOMAIN_FEATURES = ("target_distance",)
# With a modality_split: the current model's test accuracy through the view the peer holds alone.
MODALITY_FEATURES = ("modality_accuracy",)


def feature_names(domain_shift: bool, modality_split: bool = False) -> tuple[str, ...]:
    """The columns of a ``peer_features`` observation (with or without a domain shift or a
    modality split)."""
    return PEER_FEATURES + DOMAIN_FEATURES * domain_shift + MODALITY_FEATURES * modality_split


def peer_features(
    holder: int,
    hop_costs: np.ndarray,
    max_cost: float,
    probe_loss: np.ndarray,
    probe_acc: np.ndarray,
    last_visit: np.ndarray,
    visits: np.ndarray,
    round_: int,
    max_rounds: int,
    accuracy: float,
    n_classes: int,
    target_distance: np.ndarray | None = None,
    view_accuracy: np.ndarray | None = None,
) -> np.ndarray:
    """Build the ``(n_peers, len(feature_names(...)))`` float32 observation.

    Args:
        holder: The peer holding the model.
        hop_costs: Cost of a hop from the holder to every peer.
        max_cost: The topology's largest cost (0 makes the column all zeros).
        probe_loss: Mean cross-entropy of the model on each peer's probe [nats].
        probe_acc: Accuracy of the model on each peer's probe.
        last_visit: Round of each peer's last training, -1 if never.
        visits: Number of rounds each peer trained the model.
        round_: Rounds played so far.
        max_rounds: The episode's round limit.
        accuracy: Current test accuracy.
        n_classes: Number of classes (sets the loss scale: ln(n_classes) is chance).
        target_distance: With a domain shift, each peer's feature distance to the target
            domain in [0, 1] (the next column); None adds no column.
        view_accuracy: With a modality split, the model's test accuracy through each peer's
            view alone (the next column); None adds no column.
    """
    n = hop_costs.shape[0]
    obs = np.empty((n, len(feature_names(target_distance is not None, view_accuracy is not None))), dtype=np.float32)
    obs[:, 0] = 0.0
    obs[holder, 0] = 1.0
    obs[:, 1] = hop_costs / max_cost if max_cost > 0 else 0.0
    obs[:, 2] = np.tanh(probe_loss / np.log(n_classes))
    obs[:, 3] = 1.0 - probe_acc
    obs[:, 4] = np.where(last_visit < 0, 1.0, (round_ - last_visit) / max_rounds)
    obs[:, 5] = visits / max_rounds
    obs[:, 6] = round_ / max_rounds
    obs[:, 7] = accuracy
    extra = [c for c in (target_distance, view_accuracy) if c is not None]
    for k, column in enumerate(extra):
        obs[:, len(PEER_FEATURES) + k] = column
    return obs


def hl_pca(weights: np.ndarray, k: int) -> np.ndarray:
    """The reference's state: PCA(k) refit over the rows of ``weights``, flattened.

    Args:
        weights: ``(n_peers, n_params)``, each peer's flattened weights.
        k: Components kept (at most ``n_peers``).

    Returns:
        float32 ``(n_peers * k,)``: each peer's coordinates on the top ``k`` components.
        Directions with no variance (the reference's 9 identical rows leave at most one)
        give zeros rather than floating-point noise, and each component's sign is fixed
        so the largest coordinate is positive.
    """
    x = weights.astype(np.float64) - weights.mean(axis=0, dtype=np.float64)
    # Gram trick: n_peers x n_peers instead of an SVD over all parameters.
    gram = x @ x.T
    vals, vecs = np.linalg.eigh(gram)
    order = np.argsort(vals)[::-1][:k]
    vals, vecs = vals[order], vecs[:, order]
    # Relative and absolute floors [squared weight units]: below them is rounding noise.
    keep = (vals > 1e-9 * float(vals[0])) & (vals > 1e-12)
    coords = vecs * np.sqrt(np.maximum(vals, 0.0))
    coords[:, ~keep] = 0.0
    big = np.argmax(np.abs(coords), axis=0)
    signs = np.sign(coords[big, np.arange(coords.shape[1])])
    signs[signs == 0] = 1.0
    out = np.zeros((weights.shape[0], k), dtype=np.float32)
    out[:, : coords.shape[1]] = coords * signs
    return out.reshape(-1)
