"""Knowledge transfer between peers: the four transfer modes, each a component.

What travels from the holder to the receiver, and how the receiver absorbs it
(``PeerSelectionConfig.transfer``; exactly one mode is active):

``relay`` (HL's method, the default): :class:`Relay`
    One model travels; the receiver trains it on its data. The episode uses one model slot.
``average``: :class:`Average`
    Every peer keeps its own model (all start from the same seed-drawn weights). The holder
    sends its model; the receiver sets its own to ``transfer_mix * arriving +
    (1 - transfer_mix) * own``, trains it, and becomes the holder.
``distill``: :class:`Distill`
    Every peer keeps its own model. The arriving model is a frozen teacher: the receiver
    trains its own on its data with cross-entropy plus ``distill_weight * T^2 *
    KL(teacher || student)`` at temperature ``T = distill_temperature`` (Hinton, Vinyals &
    Dean 2015), or with ``distill_on="features"`` plus ``distill_weight`` times the mean
    squared error between the two models' penultimate features.
``logits``: :class:`Logits`
    No weights travel: the holder sends its logits on a public unlabeled set
    (``public_samples`` training images no peer holds, drawn per episode). The receiver
    first fits them (``distill_weight * T^2 * KL`` alone, ``local_epochs`` passes over the
    public set), then trains on its data. A hop moves ``public_samples * n_classes * 4``
    bytes instead of ``n_params * 4``.

In every mode the probes read the holder's model, and so do the reward, the goal and
``full_test_accuracy`` unless ``accuracy_of="mean_peer"`` (every peer's model, averaged).
Staying (the action is the holder) trains the holder's own model; nothing arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from hlgym.envs import checks
from hlgym.envs.components.base import BYTES_PER_PARAM, Component, EpisodeState, Move, Training
from hlgym.envs.fields import CoreFields
from hlgym.models.work import Distillation, ModelWork

TRANSFERS = ("relay", "average", "distill", "logits")
PER_PEER = ("average", "distill", "logits")  # the modes in which every peer keeps a model
DISTILL_ON = ("logits", "features")
ACCURACY_OF = ("holder", "mean_peer")


@dataclass(frozen=True)
class TransferFields(CoreFields):
    """The fields of the transfer modes (README "Transfer modes and faults")."""

    transfer: str = "relay"
    """What travels and how the receiver absorbs it: ``"relay"`` (one model travels and the
    receiver trains it, HL's method), ``"average"``, ``"distill"`` or ``"logits"`` (every
    peer keeps its own model; see :mod:`hlgym.envs.components.transfer`)."""
    transfer_mix: float = 0.5
    """``average``: the receiver's model becomes ``mix * arriving + (1 - mix) * own``. In [0, 1]."""
    distill_weight: float = 1.0
    """``distill``/``logits``: weight of the distillation term in the receiver's loss. >= 0."""
    distill_temperature: float = 2.0
    """``distill``/``logits``: softmax temperature T of the distillation term (scaled by T^2). > 0."""
    distill_on: str = "logits"
    """``distill``: what the receiver matches: the teacher's ``"logits"`` (KL at temperature T)
    or its penultimate ``"features"`` (mean squared error)."""
    public_samples: int = 100
    """``logits``: size of the public unlabeled set (training images no peer holds, drawn per
    episode) on which the holder's logits travel. At least 1, at most the unassigned pool."""
    track_peer_accuracy: bool = False
    """Add ``mean_peer_accuracy`` to ``info``: every peer model's test accuracy, averaged
    (costs one evaluation per peer model and round)."""
    accuracy_of: str = "holder"
    """Whose accuracy the reward, the goal, ``info["accuracy"]``, the observation's accuracy
    and ``full_test_accuracy()`` read: ``"holder"`` (the holder's model) or ``"mean_peer"``
    (every peer's own model, their test accuracies averaged: what the whole network knows;
    one evaluation per peer model and round). The same in the relay, whose one model every
    peer shares. The probes read the holder's model either way (the one that would travel)."""


def validate(cfg: TransferFields) -> None:
    """Check the transfer fields."""
    checks.choice(cfg, "transfer", TRANSFERS)
    checks.real(cfg, "transfer_mix", "a number in [0, 1]", lambda v: 0 <= v <= 1)
    checks.real(cfg, "distill_weight", "a number >= 0", lambda v: v >= 0)
    checks.real(cfg, "distill_temperature", "a number > 0", lambda v: v > 0)
    checks.choice(cfg, "distill_on", DISTILL_ON)
    checks.integer(cfg, "public_samples", 1)
    checks.flag(cfg, "track_peer_accuracy")
    checks.choice(cfg, "accuracy_of", ACCURACY_OF)
    if cfg.transfer in PER_PEER and cfg.per_peer_optimizer is not True:
        checks.fail(
            "per_peer_optimizer",
            cfg.per_peer_optimizer,
            f"True with transfer={cfg.transfer!r} (every peer's own model keeps its own optimizer state)",
        )


class TransferMode(Component):
    """A transfer mode: which slot trains, what arrives, what a hop sends."""

    per_peer: ClassVar[bool] = True
    """Whether every peer keeps its own model (one slot per peer)."""

    @classmethod
    def active(cls, config: Any) -> bool:
        return bool(config.transfer == cls.name)

    @classmethod
    def slots(cls, config: Any) -> int:
        """Model slots an episode uses: one per peer, or the relay's one travelling model."""
        return int(config.n_peers) if cls.per_peer else 1

    @classmethod
    def n_optimizers(cls, config: Any) -> int:
        """Optimizer states per slot: as the reference's per-peer Keras models, each peer keeps
        its own (with a model per peer, the peer's model has one: its slot's)."""
        return int(config.n_peers) if config.per_peer_optimizer and not cls.per_peer else 1

    def slot_generators(self, generator: torch.Generator, slots: int | None = None) -> list[torch.Generator]:
        """The generator each slot (of the mode's, or of ``slots``) draws its initial weights
        from: every peer's model starts from the same seed-drawn weights, so the other slots
        draw from copies of the episode's generator's state (which then advances as for one
        model)."""
        copies = []
        for _ in range((self.slots(self.config) if slots is None else slots) - 1):
            twin = torch.Generator()
            twin.set_state(generator.get_state())
            copies.append(twin)
        return [generator, *copies]

    def peer_slot(self, peer: int) -> int:
        """The slot of ``peer``'s own model (the travelling one in the relay)."""
        return peer if self.per_peer else 0

    def scored_slot(self) -> int:
        """The slot whose model the reward and the probes read: the holder's."""
        return self.peer_slot(self.episode.holder)

    def hop_bytes(self, n_params: int) -> int:
        """Bytes one hop to another peer moves: the model's weights (float32)."""
        return n_params * BYTES_PER_PARAM

    def training(self, move: Move) -> Training:
        """The delivered round's job: the receiver trains its own model on its data, after
        absorbing the holder's (staying: nothing arrives)."""
        peer, ep = move.peer, self.episode
        source = None if move.prev == peer else move.prev
        return Training(peer, 0, ep.peer_x[peer], ep.peer_y[peer], source)

    def absorb(self, models: ModelWork, slot: int, source: int, public_x: torch.Tensor | None) -> Distillation | None:
        """Bring the arriving model (slot ``source``) into ``slot`` before its training;
        returns the job's distillation, if any."""
        return None


class Relay(TransferMode):
    """HL's relay: one model travels and trains at each receiver."""

    name = "relay"
    per_peer = False

    def training(self, move: Move) -> Training:
        ep, peer = self.episode, move.peer
        state = peer if self.config.per_peer_optimizer else 0
        return Training(0, state, ep.peer_x[peer], ep.peer_y[peer])


class Average(TransferMode):
    """The receiver blends the arriving weights into its own."""

    name = "average"

    def absorb(self, models: ModelWork, slot: int, source: int, public_x: torch.Tensor | None) -> Distillation | None:
        mix = self.config.transfer_mix
        models.set_flat(slot, mix * models.flat(source) + (1 - mix) * models.flat(slot))
        return None


class Distill(TransferMode):
    """The arriving model is a frozen teacher of the receiver's."""

    name = "distill"

    def absorb(self, models: ModelWork, slot: int, source: int, public_x: torch.Tensor | None) -> Distillation | None:
        cfg = self.config
        return Distillation(cfg.distill_weight, cfg.distill_temperature, cfg.distill_on, teacher=source)


class Logits(TransferMode):
    """The holder's logits on a public set travel; the receiver fits them."""

    name = "logits"
    exposes = ("public_indices", "public_x")

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.public_indices = np.zeros(0, dtype=np.int64)
        """The public set's training samples (held by no peer; drawn per episode)."""
        self.public_x = episode.data.x_train[:0]

    @classmethod
    def pool_request(cls, config: Any) -> tuple[str, int] | None:
        return "public_samples", int(config.public_samples)

    def begin(self, rng: np.random.Generator) -> None:
        data = self.episode.data
        self.public_indices = rng.choice(self.episode.unassigned(), size=self.config.public_samples, replace=False)
        public = torch.from_numpy(self.public_indices).to(data.x_train.device)
        self.public_x = data.x_train[public].contiguous(memory_format=data.memory_format)

    def hop_bytes(self, n_params: int) -> int:
        """The holder's logits on the public set (float32), not the weights."""
        return int(self.config.public_samples) * self.episode.data.n_classes * BYTES_PER_PARAM

    def training(self, move: Move) -> Training:
        job = super().training(move)
        return job if job.source is None else job._replace(public_x=self.public_x)

    def absorb(self, models: ModelWork, slot: int, source: int, public_x: torch.Tensor | None) -> Distillation | None:
        assert public_x is not None, "the logits mode needs the episode's public set"
        ((public_logits, _),) = models.outputs([source], [public_x])
        cfg = self.config
        return Distillation(
            cfg.distill_weight, cfg.distill_temperature, "logits", public_x=public_x, public_logits=public_logits
        )


MODES: dict[str, type[TransferMode]] = {mode.name: mode for mode in (Relay, Average, Distill, Logits)}
