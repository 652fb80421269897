"""A per-peer attention policy (SB3 and RLlib): the peers are a set, so any number of them works.

Each row of a ``peer_features`` observation is embedded, the rows attend to each other
(a Transformer encoder without positional encoding, so the policy is equivariant to the
order of the peers), and every peer gets a score: the scores are the logits of the action
distribution. The value is read from the mean of the peer embeddings. The weights never
depend on ``n_peers``: a policy trained with 10 peers runs unchanged with 5 or 20.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn


class PeerSetNet(nn.Module):
    """Scores and a value for a set of peers.

    Args:
        n_features: Columns of one peer's row.
        d_model: Width of the peer embeddings.
        n_heads: Attention heads.
        n_layers: Encoder layers.
    """

    def __init__(self, n_features: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(n_features, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.score = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1))
        self.value = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs`` ``(batch, n_peers, n_features)`` -> scores ``(batch, n_peers)``, values ``(batch, 1)``.

        A row of zeros is an absent peer (TaskDistributionEnv's padding): no peer attends to
        it, its score is the lowest float and the value averages the present peers only. A
        peer's row is never all zeros (``since_visit`` is 1 before its first visit, ``visits``
        positive after it), so the envs' own rows are always present.
        """
        present = obs.abs().sum(dim=-1) > 0
        padded = not bool(present.all())
        h = self.encoder(self.embed(obs), src_key_padding_mask=~present if padded else None)
        scores: torch.Tensor = self.score(h).squeeze(-1)
        if not padded:
            return scores, self.value(h.mean(dim=1))
        scores = scores.masked_fill(~present, torch.finfo(scores.dtype).min)
        weights = present.to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        values: torch.Tensor = self.value(pooled)
        return scores, values


class PeerAttentionPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy over ``Box(n_peers, F)`` observations and ``Discrete(n_peers)``
    actions (PPO, A2C). Pass ``policy_kwargs={"d_model": ..., "n_heads": ..., "n_layers": ...}``.
    """

    def __init__(
        self,
        observation_space: spaces.Space[Any],
        action_space: spaces.Space[Any],
        lr_schedule: Schedule,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        **kwargs: Any,
    ) -> None:
        shape = observation_space.shape
        if (
            not isinstance(action_space, spaces.Discrete)
            or shape is None
            or len(shape) != 2
            or shape[0] != action_space.n
        ):
            raise ValueError(
                f"policy='attention' needs a Box(n_peers, F) observation (observation='peer_features') and "
                f"Discrete(n_peers) actions, got {observation_space} and {action_space}"
            )
        self.net_kwargs = {"d_model": d_model, "n_heads": n_heads, "n_layers": n_layers}
        kwargs["ortho_init"] = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        shape = self.observation_space.shape
        assert shape is not None
        self.peer_net = PeerSetNet(shape[-1], **self.net_kwargs)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.net_kwargs)
        return data

    def peer_scores(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(batch, n_peers)`` and values for any number of peers."""
        return self.peer_net(obs.float())  # type: ignore[no-any-return]

    def _dist(self, scores: torch.Tensor) -> Distribution:
        return self.action_dist.proba_distribution(action_logits=scores)

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actions, values and log-probabilities (SB3's rollout interface)."""
        scores, values = self.peer_scores(obs)
        dist = self._dist(scores)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, values, dist.log_prob(actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Values, log-probabilities and entropy of ``actions`` (SB3's training interface)."""
        assert isinstance(obs, torch.Tensor)
        scores, values = self.peer_scores(obs)
        dist = self._dist(scores)
        return values, dist.log_prob(actions), dist.entropy()

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        """The action distribution for ``obs``."""
        assert isinstance(obs, torch.Tensor)
        return self._dist(self.peer_scores(obs)[0])

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        """The value estimate for ``obs``."""
        assert isinstance(obs, torch.Tensor)
        return self.peer_scores(obs)[1]


def best_online_peer(scores: torch.Tensor, mask: np.ndarray) -> int:
    """The highest-scored peer among those ``mask`` allows (scores of one observation)."""
    values = scores.detach().cpu().numpy().astype(np.float64)
    values[~np.asarray(mask, dtype=bool)] = -np.inf
    return int(np.argmax(values))


class PeerSetAgent:
    """A bare :class:`PeerSetNet` as an :class:`~hlgym.agents.Agent`: the highest-scored peer
    among ``info["action_mask"]``'s. The RLlib backend saves its final policy this way
    (``model.pt``), so evaluating it needs torch only, not Ray.

    Args:
        net: The network.
        n_features: Columns of one peer's row (what ``net`` was built for).
        net_kwargs: ``net``'s other constructor arguments (``d_model``, ``n_heads``, ``n_layers``).
    """

    FORMAT = "hlgym.PeerSetNet/1"

    def __init__(self, net: PeerSetNet, n_features: int, net_kwargs: dict[str, int]) -> None:
        self.net = net.eval()
        self.n_features = n_features
        self.net_kwargs = dict(net_kwargs)

    def reset(self) -> None:
        """Nothing to forget: the policy is memoryless."""

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The best-scored online peer for ``obs`` ``(n_peers, n_features)``."""
        with torch.inference_mode():
            scores = self.net(torch.as_tensor(np.asarray(obs, dtype=np.float32)[None]))[0][0]
        return best_online_peer(scores, info["action_mask"])

    def to_bytes(self) -> bytes:
        """The network's weights and shape, as ``torch.save`` writes them."""
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save(
            {"format": self.FORMAT, "n_features": self.n_features, "net_kwargs": self.net_kwargs, "state_dict": state},
            buf,
        )
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PeerSetAgent:
        """Read a file :meth:`to_bytes` wrote.

        Raises:
            ValueError: If the file is no saved PeerSetNet (the message names the file).
        """
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:  # an SB3 zip, hl_dqn's file, ...
            raise ValueError(f"{path}: not a policy saved by the RLlib backend ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not a policy saved by the RLlib backend (format {cls.FORMAT!r} expected)")
        net = PeerSetNet(int(data["n_features"]), **data["net_kwargs"])
        net.load_state_dict(data["state_dict"])
        return cls(net, int(data["n_features"]), data["net_kwargs"])
