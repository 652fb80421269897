"""Observation columns beyond the core's, as plug-in components (issue 24's "what the policy
sees" ablation): no registered id uses them, so every id's observation stays as it was.

``class_gap`` (:class:`ClassGap`)
    How much of what the current model gets wrong a peer's data holds: the model's error on
    each class, measured on every peer's probe pooled, averaged with the peer's own class
    shares (its training labels): ``sum_c share[p, c] * error[c]``, in [0, 1].
``loss_change`` (:class:`LossChange`)
    How the last round moved the model's loss on each peer's probe:
    ``0.5 + 0.5 * tanh((loss - loss_before) / ln(n_classes))`` (0.5: unchanged; below:
    the model improved there), 0.5 on the episode's first observation.

Turn one on with the config's ``components`` (``--env-kwargs 'components=["class_gap"]'``);
each reads the probes once more in the probe phase (one more forward pass of the probes,
batched over the episodes of one runner).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from hlgym.envs.components.base import Component, EpisodeState, ProbeStats
from hlgym.models.work import ModelWork


def _probe_results(models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> list[Any]:
    """Per-sample loss and correctness of each part's scored model on its episode's probes."""
    return models.per_sample_loss_each(
        list(slots), [p.episode.probe_x for p in parts], [p.episode.probe_y for p in parts]
    )


class ClassGap(Component):
    """The ``class_gap`` column (see the module docstring)."""

    name = "class_gap"
    columns: ClassVar[tuple[str, ...]] = ("class_gap",)

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.shares = np.zeros((self.config.n_peers, episode.data.n_classes))
        """Each peer's class shares of its training labels this episode."""
        self.gap = np.zeros(self.config.n_peers)
        """The column of the last probe phase."""

    def begin(self, rng: np.random.Generator) -> None:
        n_classes = self.episode.data.n_classes
        for p, labels in enumerate(self.episode.peer_y):
            counts = torch.bincount(labels.long().cpu(), minlength=n_classes).numpy()
            self.shares[p] = counts / max(counts.sum(), 1)

    @classmethod
    def probe(cls, models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> None:
        for part, (_, hits) in zip(parts, _probe_results(models, slots, parts), strict=True):
            assert isinstance(part, ClassGap)
            labels = part.episode.probe_y.long().cpu().numpy()
            wrong = 1.0 - hits.cpu().numpy().astype(np.float64).reshape(-1)
            n_classes = part.shares.shape[1]
            seen = np.bincount(labels, minlength=n_classes)
            # A class no probe holds gets the probes' overall error.
            error = np.where(seen > 0, np.bincount(labels, wrong, n_classes) / np.maximum(seen, 1), wrong.mean())
            part.gap = np.clip(part.shares @ error, 0.0, 1.0)

    def column(self, name: str) -> np.ndarray:
        return self.gap


class LossChange(Component):
    """The ``loss_change`` column (see the module docstring)."""

    name = "loss_change"
    columns: ClassVar[tuple[str, ...]] = ("loss_change",)

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.before: np.ndarray | None = None
        self.change = np.full(self.config.n_peers, 0.5)
        """The column of the last probe phase."""

    def begin(self, rng: np.random.Generator) -> None:
        self.before = None

    @classmethod
    def probe(cls, models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> None:
        for part, (loss, hits) in zip(parts, _probe_results(models, slots, parts), strict=True):
            assert isinstance(part, LossChange)
            now = ProbeStats.means(loss.reshape(-1), hits.reshape(-1), part.episode.probe_starts).loss
            scale = np.log(part.episode.data.n_classes)
            before = now if part.before is None else part.before
            part.change = 0.5 + 0.5 * np.tanh((now - before) / scale)
            part.before = now

    def column(self, name: str) -> np.ndarray:
        return self.change
