"""PeerSelectionEnv: Homogeneous Learning's peer hierarchy as a Gymnasium environment."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from torch import nn

from hlgym.envs import components
from hlgym.envs.config import PeerSelectionConfig, make_config, warn_if_longer
from hlgym.envs.episode import BYTES_PER_PARAM, Episode
from hlgym.envs.face import EpisodeView
from hlgym.envs.observation import spaces_for
from hlgym.envs.render import RENDER_MODES, check_render_mode
from hlgym.envs.rounds import RoundRunner, model_spec
from hlgym.models.work import ModelList

__all__ = ["BYTES_PER_PARAM", "PeerSelectionEnv"]


class PeerSelectionEnv(EpisodeView, gym.Env[np.ndarray, np.int64]):
    """Choose which peer the travelling model trains at next.

    ## Description

    Homogeneous Learning (Sun & Ochiai, IEEE Access 2022): ``n_peers`` peers each hold
    non-IID data. One model travels from peer to peer; at each round the peer that
    receives it trains it on its local data. A meta-policy picks the next peer so that the
    model reaches a target test accuracy in few rounds and with little communication.
    What varies is a component (:mod:`hlgym.envs.components`): ``transfer`` other than
    ``"relay"`` gives every peer its own model and changes what a hop sends (weights to
    blend or distil, or logits on a public set); faults take peers offline, fail links or
    corrupt what a peer returns; scenarios render each peer's images in a domain and test
    on an unseen one, or give each peer one view of its examples; a config's
    ``components`` adds a user's own.

    ## Action Space

    ``Discrete(n_peers)``: the peer the model is sent to (and trained at) this round.
    Sending it to the holder itself costs nothing. :meth:`action_masks` gives the peers
    that are online (all of them unless ``offline_prob > 0``).

    ## Observation Space

    - ``observation="peer_features"``: ``Box(0, 1, (n_peers, 8), float32)``, one row per
      peer with the columns of :data:`hlgym.envs.observation.PEER_FEATURES`: holder flag,
      hop cost from the holder, loss and error of the current model on a fixed probe of the
      peer's data, rounds since the peer last trained, visit count, and the episode's
      progress and accuracy on every row. Each active component appends its own columns
      (:func:`hlgym.envs.observation.columns` lists them): with a ``domain_shift`` a
      ``target_distance``, the feature distance (MMD) between the peer's probe and the
      target-domain images under the current model; with a view split the model's test
      accuracy through the view the peer holds (docs/scenarios.md).
    - ``observation="hl_pca"``: ``Box(-inf, inf, (n_peers * pca_components,), float32)``:
      the reference's state, PCA refit each round over the peers' flattened weights after
      local training and before the new model is broadcast.

    ## Rewards

    ``reward_base ** (accuracy - goal) - cost_weight * hop_cost - 1`` per round, the
    reference's reward. The three terms are in ``info["rewards"]``; components add their
    keys to ``info`` (a view split: each view's own accuracy).

    ## Starting State

    A fresh model (Keras-default initialisation) at ``start_peer``; the peers' data
    (from the partitioner) and, for ``euclidean``, the topology are drawn from the seed.
    With ``first_round_at_start=True`` round 1 has already been played at ``start_peer``.

    ## Episode End

    Terminated when the test accuracy reaches ``goal``; truncated after ``max_rounds``
    rounds.

    ## Arguments

    ``PeerSelectionEnv(config=None, render_mode=None, **overrides)``: ``config`` is a
    :class:`~hlgym.envs.PeerSelectionConfig` or a dict of its fields (what the registered
    specs hold, as plain JSON; default: the embedded default), and keyword overrides replace
    its fields. ``render_mode`` is ``"ansi"`` or ``"rgb_array"``.

    The env is a :class:`~hlgym.envs.rounds.RoundRunner` over one
    :class:`~hlgym.envs.Episode` (``env.episode``: route, visits, costs, the peers' data) and
    one travelling model (``env.model``); every attribute exists from construction, and
    what a component exposes reads through (``env.unwrapped.peer_domains``, ...:
    :class:`~hlgym.envs.face.EpisodeView`).

    >>> import gymnasium as gym, hlgym
    >>> env = gym.make("hlgym/PeerSelection-v0", max_rounds=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (10, 8)
    >>> obs, reward, terminated, truncated, info = env.step(3)
    >>> info["holder"], info["round"]
    (3, 1)

    ## Version History

    * v0: Initial version.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 2}  # noqa: RUF012  (Gymnasium's plain-dict convention)

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        cfg = make_config(config, **overrides)
        warn_if_longer(config, overrides, cfg)
        if cfg.tasks is not None:
            raise ValueError(
                "tasks is not accepted by PeerSelectionEnv (one task); accepted: tasks=None, or "
                "TaskDistributionEnv (hlgym/TaskDistribution-v0) for a task distribution"
            )
        check_render_mode(render_mode)
        self.config = cfg
        self.render_mode = render_mode
        data = Episode.load_data(cfg)
        models = ModelList(model_spec(cfg, data), n_slots=components.slots(cfg))
        self.episode = Episode(cfg, models.n_params, data)
        """This env's episode bookkeeping (route, visits, costs, topology, data split)."""
        self._runner = RoundRunner([self.episode], models)
        self.observation_space, self.action_space = spaces_for(cfg)

    # ------------------------------------------------------------------ Gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: new peer data, topology (if random) and a fresh model.

        Args:
            seed: Seeds the environment's RNG, which drives every random draw.
            options: Not used; must be None or empty.
        """
        super().reset(seed=seed)
        return self._runner.reset([0], [self.np_random], [options])[0]

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Send the model to peer ``action``, train it there, evaluate, and score the round."""
        return self._runner.step([0], [action])[0]

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: one line per round so far. ``"rgb_array"``: the peers on the
        topology, coloured by main class, and the route so far (needs ``reset()`` first)."""
        return self.episode.render(self.render_mode)

    # ------------------------------------------------------------------ more than Gymnasium's

    def action_masks(self) -> np.ndarray:
        """Peers that can receive the model this round (for sb3-contrib's MaskablePPO); all
        of them before the first ``reset()``."""
        return self.episode.action_masks()

    def full_test_accuracy(self) -> float:
        """Accuracy of the current model on the whole test set (for final reports when the
        reward uses ``eval_samples``). Raises :class:`~hlgym.envs.ResetNeededError` before
        the first ``reset()``."""
        return self._runner.full_test_accuracy(0)

    @property
    def model(self) -> nn.Module:
        """The holder's model: the travelling model of the relay (the module the env trains;
        read it, do not train it)."""
        return self._runner.module(0)

    def peer_model(self, peer: int) -> nn.Module:
        """Peer ``peer``'s own model in the modes where every peer keeps one (the travelling
        model in the relay). Raises :class:`~hlgym.envs.ResetNeededError` before ``reset()``."""
        return self._runner.module(0, peer)

    @property
    def last_timing(self) -> dict[str, float]:
        """[s] wall time of the last step's train / evaluate / observe phases (read by
        ``bench/bench_env.py``)."""
        return self._runner.last_timing

    @property
    def n_params(self) -> int:
        """Scalar parameters of the model (``bytes_sent`` counts 4 bytes each per hop)."""
        return self.episode.n_params

    def viewed(self) -> Episode | None:
        """The episode (what :class:`~hlgym.envs.face.EpisodeView` shows)."""
        return self.__dict__.get("episode")
