"""Observation builders: what the meta-policy sees of the peers.

- ``peer_features``: one row per peer, every column in [0, 1]: the core's
  (:data:`PEER_FEATURES`), then each active component's (:func:`columns`).
- ``hl_pca``: the reference's state, PCA(k) over all peers' flattened weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces

from hlgym.envs import components
from hlgym.envs.fields import CoreFields

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
"""The core's ``peer_features`` columns; active components append theirs (:func:`columns`)."""


def columns(config: CoreFields) -> tuple[str, ...]:
    """The columns of a ``peer_features`` observation: the core's, then each active
    component's."""
    return PEER_FEATURES + tuple(name for cls, _ in components.for_config(config) for name in cls.columns)


def spaces_for(config: CoreFields) -> tuple[spaces.Box, spaces.Discrete]:
    """The observation and action spaces of an env with ``config``."""
    n = config.n_peers
    if config.observation == "peer_features":
        observation = spaces.Box(0.0, 1.0, (n, len(columns(config))), np.float32)
    else:
        observation = spaces.Box(-np.inf, np.inf, (n * config.pca_components,), np.float32)
    return observation, spaces.Discrete(n)


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
    extra: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Build the ``(n_peers, 8 + len(extra))`` float32 observation.

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
        extra: The components' columns, one value in [0, 1] per peer each (appended in order).
    """
    n = hop_costs.shape[0]
    base = len(PEER_FEATURES)
    obs = np.empty((n, base + len(extra)), dtype=np.float32)
    obs[:, 0] = 0.0
    obs[holder, 0] = 1.0
    obs[:, 1] = hop_costs / max_cost if max_cost > 0 else 0.0
    obs[:, 2] = np.tanh(probe_loss / np.log(n_classes))
    obs[:, 3] = 1.0 - probe_acc
    obs[:, 4] = np.where(last_visit < 0, 1.0, (round_ - last_visit) / max_rounds)
    obs[:, 5] = visits / max_rounds
    obs[:, 6] = round_ / max_rounds
    obs[:, 7] = accuracy
    for k, column in enumerate(extra):
        obs[:, base + k] = column
    return obs


class WeightRows:
    """The rows ``hl_pca`` is fitted on: every peer's flat weights, kept round by round.

    In the relay, as in the reference, the state is taken after local training and before
    the broadcast: every other peer still holds the model from before the round, the
    receiver the trained one. With a model per peer, each row is that peer's own model.
    """

    def __init__(self) -> None:
        self.before: np.ndarray | None = None  # the relay's model before the last round
        self.after: np.ndarray | None = None  # ... and after it
        self.slots: np.ndarray | None = None  # every slot's weights, (model_slots, n_params)

    def start(self, weights: np.ndarray) -> None:
        """Every peer holds the initial model (``weights``: every slot's)."""
        self.slots = weights
        self.before = self.after = weights[0]

    def trained(self, delivered: bool, weights: np.ndarray | None) -> None:
        """After a round: ``weights`` are every slot's (None: no observation reads them)."""
        if not delivered:
            self.before = self.after  # every peer holds the same model
        elif weights is not None:
            self.slots = weights
            self.before, self.after = self.after, weights[0]

    def observe(self, holder: int, n_peers: int, k: int, per_peer: bool) -> np.ndarray:
        """The ``hl_pca`` observation of these rows."""
        if per_peer:
            assert self.slots is not None
            return hl_pca(self.slots, k)
        assert self.before is not None and self.after is not None
        rows = np.repeat(self.before[None, :], n_peers, axis=0)
        rows[holder] = self.after
        return hl_pca(rows, k)


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
