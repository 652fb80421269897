"""Byzantine peers: peers that corrupt what they return, drawn per episode, never observed.

A byzantine receiver (``byzantine_peers`` of them, drawn at reset) corrupts what it returns
after its local training: ``noise`` adds Gaussian noise of standard deviation
``byzantine_scale`` to every weight, ``sign_flip`` returns the model moved by minus its local
update (``before - (after - before)``), and ``label_flip`` trains on labels shifted by a
per-peer class offset. The policy never sees who they are; ``env.unwrapped.byzantine`` and
the records do (for analysis and plots), and the render rings them in red.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hlgym.envs import checks
from hlgym.envs.components.base import Component, EpisodeState, Move, Training
from hlgym.envs.fields import CoreFields
from hlgym.models.work import ModelWork

BYZANTINE_MODES = ("noise", "sign_flip", "label_flip")


@dataclass(frozen=True)
class ByzantineFields(CoreFields):
    """The fields of the byzantine peers."""

    byzantine_peers: int = 0
    """Peers that corrupt what they return, drawn per episode and never observed
    (``env.unwrapped.byzantine``). In [0, n_peers - 1]."""
    byzantine_mode: str = "noise"
    """How a byzantine peer corrupts: ``"noise"`` (Gaussian noise of scale
    ``byzantine_scale`` added to the weights), ``"sign_flip"`` (returns the model moved by
    minus its local update) or ``"label_flip"`` (trains on permuted labels)."""
    byzantine_scale: float = 0.1
    """``noise``: standard deviation of the noise added to every weight. > 0."""


def validate(cfg: ByzantineFields) -> None:
    """Check the byzantine fields."""
    checks.integer(cfg, "byzantine_peers", 0, cfg.n_peers - 1)
    checks.choice(cfg, "byzantine_mode", BYZANTINE_MODES)
    checks.real(cfg, "byzantine_scale", "a number > 0", lambda v: v > 0)


class ByzantinePeers(Component):
    """``byzantine_peers`` peers drawn at reset corrupt the model they train."""

    name = "byzantine"
    exposes = ("byzantine",)

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.byzantine = np.zeros(self.config.n_peers, dtype=bool)
        """Which peers corrupt what they return this episode (never in the observation)."""
        self.flipped_y: dict[int, torch.Tensor] = {}
        """``label_flip``: the byzantine peers' training labels."""

    @classmethod
    def active(cls, config: Any) -> bool:
        return bool(config.byzantine_peers > 0)

    def begin(self, rng: np.random.Generator) -> None:
        cfg, ep, n = self.config, self.episode, self.config.n_peers
        self.byzantine = np.zeros(n, dtype=bool)
        self.byzantine[rng.choice(n, size=cfg.byzantine_peers, replace=False)] = True
        self.flipped_y = {}
        if cfg.byzantine_mode == "label_flip":
            classes = ep.data.n_classes
            for peer in np.flatnonzero(self.byzantine):
                # A class offset in [1, n_classes): every label becomes another class.
                shift = int(rng.integers(1, classes))
                self.flipped_y[int(peer)] = (ep.peer_y[peer] + shift) % classes

    def shape(self, training: Training, move: Move) -> Training:
        if not self.byzantine[move.peer]:
            return training
        if self.config.byzantine_mode == "label_flip":
            return training._replace(y=self.flipped_y[move.peer])
        return training._replace(hooks=(*training.hooks, self))

    def before_train(self, models: ModelWork, slot: int) -> Any:
        return models.flat(slot) if self.config.byzantine_mode == "sign_flip" else None

    def after_train(self, models: ModelWork, slot: int, saved: Any, generator: torch.Generator) -> None:
        """``noise``: Gaussian noise drawn on the CPU from the episode's generator (so a CUDA
        run draws what a CPU run draws); ``sign_flip``: ``before - (after - before)``."""
        after = models.flat(slot)
        if self.config.byzantine_mode == "noise":
            noise = torch.randn(after.shape, generator=generator, dtype=after.dtype)
            models.set_flat(slot, after + self.config.byzantine_scale * noise.to(after.device))
        else:
            models.set_flat(slot, saved - (after - saved))

    def decorate(self, ax: Any, positions: np.ndarray) -> None:
        """A red ring around each byzantine peer (for analysis; the policy never sees it)."""
        bad = self.byzantine
        ax.scatter(
            positions[bad, 0], positions[bad, 1], s=420, facecolors="none", edgecolors="red", linewidths=2, zorder=2
        )
