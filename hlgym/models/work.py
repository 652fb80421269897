"""Model work: the inner models' side of a round, behind one interface.

An environment's round is episode bookkeeping (:class:`hlgym.envs.episode.Episode`) plus
model work: draw initial weights, train on a peer's data, evaluate on the test set, run the
probes, read the weights. :class:`ModelWork` is that interface. It holds models in numbered
*slots*, each with its own weights and optimizer states, and two classes implement it:

- :class:`ModelList`: one ``nn.Module`` per slot, trained with ``torch.optim`` one slot at a
  time (a lone environment; the reference's arithmetic exactly);
- :class:`~hlgym.models.batched.StackedModels`: the slots' weights stacked, every slot of a
  call trained and evaluated in one batched pass (the vector envs).

An episode uses as many slots as it keeps models: one for HL's relay (the travelling model);
a mode where every peer keeps its own network uses one slot per peer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Alignment", "Distillation", "ModelFactory", "ModelList", "ModelSpec", "ModelWork", "TrainJob"]

import torch
from torch import nn

from hlgym.models.loss import Alignment, Distillation
from hlgym.models.training import (
    OPTIMIZERS,
    ModelFactory,
    build_model,
    count_parameters,
    fit_soft_targets,
    flat_weights,
    keras_init_model_,
    load_flat_,
    local_train,
    logits_and_features,
    make_optimizer,
    per_sample_hits,
    per_sample_loss,
)

EVAL_PRECISIONS = ("float32", "bfloat16")


def precision(name: str, device: torch.device) -> Any:
    """The context the test-set evaluation runs in: nothing for ``"float32"``; torch's
    autocast to bfloat16 for ``"bfloat16"`` (its convolutions and matrix products in
    bfloat16, losses in float32: on a CPU with AVX512-BF16 or AMX, oneDNN's fast path)."""
    if name == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class ModelSpec:
    """What every slot's model is and how it learns.

    Attributes:
        model: ``"cnn"`` or ``"mlp"`` (see :func:`~hlgym.models.training.build_model`).
        input_shape: One input's shape, ``(channels, height, width)``.
        n_classes: Number of classes.
        hidden_units: Hidden width of the MLP.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: Learning rate.
        adam_eps: Adam's epsilon.
        n_optimizers: Optimizer states per slot (one per peer for the reference's per-peer Adam).
        device: Torch device of the weights.
        factory: A component's own network in place of ``model``'s (None: ``model``'s).
        eval_precision: ``"float32"`` or ``"bfloat16"``: the arithmetic of the test-set
            evaluation (:meth:`ModelWork.per_sample_loss`; training and probes stay float32).
    """

    model: str
    input_shape: tuple[int, ...]
    n_classes: int
    hidden_units: int
    optimizer: str
    lr: float
    adam_eps: float
    n_optimizers: int
    device: str = "cpu"
    factory: ModelFactory | None = None
    eval_precision: str = "float32"

    @property
    def channels_last(self) -> bool:
        """Whether inputs and weights use the channels-last layout (convolutions run about
        4x faster in it on CPU; docs/speed.md)."""
        return self.model == "cnn"

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of inputs and convolution weights."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def build(self, generator: torch.Generator) -> nn.Module:
        """A model of this spec with weights drawn from ``generator``, on the device."""
        model = build_model(self.model, self.input_shape, self.n_classes, generator, self.hidden_units, self.factory)
        # torch's stubs lack Module.to's memory_format overload.
        return model.to(torch.device(self.device), memory_format=self.memory_format)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class TrainJob:
    """One slot's local training in a round.

    Attributes:
        slot: The model trained.
        state: Which of the slot's optimizer states it uses (the peer's, with per-peer states).
        x: Training inputs, ``(n, channels, height, width)``.
        y: Integer labels, ``(n,)``.
        generator: Source of the batch order (the episode's).
        distill: Knowledge distilled during the job (None: none).
        align: Feature alignment to a target domain (None: none).
    """

    slot: int
    state: int
    x: torch.Tensor
    y: torch.Tensor
    generator: torch.Generator
    distill: Distillation | None = None
    align: Alignment | None = None


class ModelWork(Protocol):
    """The model side of a round, over numbered slots (see the module docstring)."""

    @property
    def n_slots(self) -> int:
        """Number of slots."""
        ...

    @property
    def n_params(self) -> int:
        """Scalar parameters of one slot's model (what one transfer of it moves)."""
        ...

    def initialize(self, slots: Sequence[int], generators: Sequence[torch.Generator]) -> None:
        """Draw fresh weights for each slot from its generator and clear its optimizer states."""
        ...

    def train(self, jobs: Sequence[TrainJob], epochs: int, batch_size: int) -> None:
        """Run every job's local training (each slot at most once per call; a teacher slot
        is read as it was before the call)."""
        ...

    def outputs(self, slots: Sequence[int], xs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each slot's logits and penultimate features on its own inputs ``xs[i]``, without
        gradients: ``(len(xs[i]), n_classes)`` and ``(len(xs[i]), features)`` each."""
        ...

    def per_sample_loss(
        self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and correctness (0/1) of every sample of ``(x, y)`` for each slot: ``(len(slots), n)`` each."""
        ...

    def per_sample_hits(self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`per_sample_loss`'s correctness alone (what an accuracy reads), ``(len(slots), n)``."""
        ...

    def per_sample_loss_each(
        self, slots: Sequence[int], xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """As :meth:`per_sample_loss`, each slot on its own inputs ``xs[i], ys[i]``."""
        ...

    def flat(self, slot: int) -> torch.Tensor:
        """The slot's parameters as one 1-D tensor (a copy), in ``parameters()`` order."""
        ...

    def set_flat(self, slot: int, flat: torch.Tensor) -> None:
        """Write :meth:`flat`'s layout back into the slot (its optimizer states are kept)."""
        ...

    def module(self, slot: int) -> nn.Module:
        """An ``nn.Module`` holding the slot's current weights (for inspection; not trained by the env)."""
        ...


class ModelList:
    """:class:`ModelWork` with one ``nn.Module`` and its ``torch.optim`` optimizers per slot.

    Args:
        spec: The models' architecture and optimizer.
        n_slots: Number of slots.
    """

    def __init__(self, spec: ModelSpec, n_slots: int = 1) -> None:
        if spec.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={spec.optimizer!r} is not known; accepted: {', '.join(OPTIMIZERS)}")
        self.spec = spec
        # The modules exist from the start (seed 0) so every method works before the first
        # episode; initialize() redraws their weights in place from an episode's generator.
        self.modules = [spec.build(torch.Generator().manual_seed(0)) for _ in range(n_slots)]
        self.optimizers = [self._fresh_optimizers(m) for m in self.modules]

    def _fresh_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        spec, params = self.spec, list(model.parameters())
        return [make_optimizer(spec.optimizer, params, spec.lr, spec.adam_eps) for _ in range(spec.n_optimizers)]

    @property
    def n_slots(self) -> int:
        """Number of slots."""
        return len(self.modules)

    @property
    def n_params(self) -> int:
        """Scalar parameters of one slot's model."""
        return count_parameters(self.modules[0])

    def initialize(self, slots: Sequence[int], generators: Sequence[torch.Generator]) -> None:
        """Draw fresh weights for each slot (as ``build_model`` does) and new optimizer states."""
        for slot, generator in zip(slots, generators, strict=True):
            keras_init_model_(self.modules[slot], generator)
            self.optimizers[slot] = self._fresh_optimizers(self.modules[slot])

    def train(self, jobs: Sequence[TrainJob], epochs: int, batch_size: int) -> None:
        """``local_train`` for each job in turn (after ``fit_soft_targets`` for soft targets)."""
        # Teachers are frozen as the call found them, whichever job trains first.
        teachers = {
            j.distill.teacher: copy.deepcopy(self.modules[j.distill.teacher]).requires_grad_(False)
            for j in jobs
            if j.distill is not None and j.distill.teacher is not None
        }
        for job in jobs:
            model, optimizer, d = self.modules[job.slot], self.optimizers[job.slot][job.state], job.distill
            if d is not None and d.public_x is not None:
                assert d.public_logits is not None
                fit_soft_targets(model, optimizer, d.public_x, d.public_logits, d, epochs, batch_size, job.generator)
            teacher = None if d is None or d.teacher is None else teachers[d.teacher]
            local_train(model, optimizer, job.x, job.y, epochs, batch_size, job.generator, teacher, d, align=job.align)

    def outputs(self, slots: Sequence[int], xs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each slot's logits and penultimate features on its own inputs."""
        out = []
        for slot, x in zip(slots, xs, strict=True):
            model = self.modules[slot]
            model.eval()
            with torch.no_grad():  # not inference_mode: the logits become training targets
                out.append(logits_and_features(model, x))
        return out

    def per_sample_loss(
        self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and correctness of every sample for each slot, ``(len(slots), n)`` each."""
        with precision(self.spec.eval_precision, x.device):
            out = [per_sample_loss(self.modules[s], x, y) for s in slots]
        return torch.stack([loss for loss, _ in out]), torch.stack([hits for _, hits in out])

    def per_sample_hits(self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correctness of every sample for each slot, ``(len(slots), n)``."""
        with precision(self.spec.eval_precision, x.device):
            return torch.stack([per_sample_hits(self.modules[s], x, y) for s in slots])

    def per_sample_loss_each(
        self, slots: Sequence[int], xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each slot on its own inputs."""
        return [per_sample_loss(self.modules[s], x, y) for s, x, y in zip(slots, xs, ys, strict=True)]

    def flat(self, slot: int) -> torch.Tensor:
        """The slot's parameters as one 1-D tensor (a copy)."""
        return flat_weights(self.modules[slot])

    def set_flat(self, slot: int, flat: torch.Tensor) -> None:
        """Write flat weights into the slot's module."""
        load_flat_(self.modules[slot], flat)

    def module(self, slot: int) -> nn.Module:
        """The slot's own module (the one the env trains)."""
        return self.modules[slot]
