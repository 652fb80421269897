"""The local loss, composed once: cross-entropy, distillation and alignment terms.

:class:`~hlgym.models.work.ModelList` (one model at a time) and
:class:`~hlgym.models.batched.StackedModels` (many copies in one batched pass) both call
:func:`local_loss` and :func:`soft_fit_loss`; the stacked path passes a leading copies axis
and sums the copies' losses (they are independent), the single path passes none. A new loss
term is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation in a training job (Hinton, Vinyals & Dean 2015).

    Either a frozen ``teacher`` slot, run on every local batch (the loss adds
    ``weight * T^2 * KL(teacher || student)`` at temperature ``T``, or with
    ``on="features"`` ``weight`` times the mean squared error of the penultimate features),
    or soft targets: ``public_logits`` on ``public_x``, fitted with ``weight * T^2 * KL``
    alone before the local training (``epochs`` passes over the public set).

    Attributes:
        weight: Weight of the distillation term.
        temperature: Softmax temperature ``T``.
        on: ``"logits"`` or ``"features"`` (teacher slot only).
        teacher: The teacher's slot, read before the job trains (frozen).
        public_x: Inputs of the soft targets, ``(m, channels, height, width)``.
        public_logits: The teacher's logits on them, ``(m, n_classes)``.
    """

    weight: float
    temperature: float
    on: str = "logits"
    teacher: int | None = None
    public_x: torch.Tensor | None = None
    public_logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.teacher is None) == (self.public_x is None) or (self.public_x is None) != (self.public_logits is None):
            raise ValueError("a Distillation has either a teacher slot or public_x with public_logits")
        if self.on == "features" and self.teacher is None:
            raise ValueError("on='features' needs a teacher slot (soft targets are logits)")


@dataclass(frozen=True)
class Alignment:
    """Feature alignment to a target domain in a training job (FedKA's knowledge alignment).

    Every local batch adds ``weight`` times the multi-kernel MMD
    (:func:`~hlgym.models.training.mmd`) between the penultimate features of the batch and
    of ``target_x``, unlabeled images of the target domain.

    Attributes:
        weight: Weight of the MMD term.
        target_x: The target images, ``(m, channels, height, width)``.
    """

    weight: float
    target_x: torch.Tensor


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` of every sample.

    The ``T^2`` keeps the gradients' scale independent of ``T`` (Hinton, Vinyals & Dean 2015).

    Args:
        student: Logits, ``(..., n_classes)``.
        teacher: Logits of the same shape (no gradient flows into them).
        temperature: ``T`` > 0.

    Returns:
        ``(...)``: one value per sample [nats * T^2].
    """
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    log_q = F.log_softmax(student / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1) * temperature**2


def feature_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of penultimate features, one value per sample: ``(...)``."""
    return (student - teacher).pow(2).mean(dim=-1)


def distillation_term(
    distill: Distillation,
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """A teacher's distillation term of every sample, before ``distill.weight``:
    :func:`feature_distance` with ``distill.on == "features"``, else :func:`soft_target_loss`.

    Args:
        distill: What is distilled and at which temperature.
        student: The student's ``(logits, penultimate features)``.
        teacher: The teacher's, of the same shapes.
    """
    if distill.on == "features":
        return feature_distance(student[1], teacher[1])
    return soft_target_loss(student[0], teacher[0], distill.temperature)


MMD_KERNELS = 5  # Gaussian kernels of the multi-kernel MMD, as DAN and FedKA use


def mmd(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-kernel maximum mean discrepancy (squared, biased estimate) between two samples.

    The kernel is the mean of :data:`MMD_KERNELS` Gaussian kernels whose bandwidths are the
    mean pairwise squared distance of the pooled sample times 1/4, 1/2, 1, 2 and 4 (the
    multi-kernel MMD of DAN, Long et al. 2015, which FedKA uses); the bandwidth carries no
    gradient. Each kernel lies in (0, 1], so the result lies in [0, 2].

    Args:
        source: ``(..., n, features)``.
        target: ``(..., m, features)``, the same leading dimensions.

    Returns:
        ``(...)``: one value per leading index.
    """
    x = torch.cat([source, target], dim=-2)
    gram = x @ x.transpose(-1, -2)
    sq = gram.diagonal(dim1=-2, dim2=-1)
    # Squared distances without cdist, whose gradient at a zero distance (the diagonal) is NaN.
    d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * gram).clamp_min(0.0)
    total = x.shape[-2]
    scale = (d2.detach().sum(dim=(-2, -1)) / (total * total - total)).clamp_min(1e-12)
    # The widest kernel, exp(-d2 / 4s); each narrower one (bandwidth halved) is its square.
    power = torch.exp(d2 * (-0.25 / scale)[..., None, None])
    k = power
    for _ in range(MMD_KERNELS - 1):
        power = power * power
        k = k + power
    # w' K w with w = (1/n, ..., -1/m, ...): mean K(s, s) + mean K(t, t) - 2 mean K(s, t).
    n, m = source.shape[-2], target.shape[-2]
    w = torch.cat([x.new_full((n,), 1.0 / n), x.new_full((m,), -1.0 / m)])
    return (k @ w * w).sum(dim=-1) / MMD_KERNELS


def local_loss(
    logits: torch.Tensor,
    features: torch.Tensor | None,
    y: torch.Tensor,
    distill: Distillation | None = None,
    taught: tuple[torch.Tensor, torch.Tensor] | None = None,
    align: Alignment | None = None,
    target_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one local batch: cross-entropy, plus ``distill.weight`` times the
    :func:`distillation_term` against the teacher's outputs ``taught``, plus ``align.weight``
    times the :func:`mmd` between the batch's ``features`` and the ``target_features``.

    Args:
        logits: ``(B, n_classes)``, or ``(copies, B, n_classes)`` for stacked copies.
        features: The penultimate features, ``(..., B, features)`` (needed by a
            distillation on features and by the alignment).
        y: Integer labels, ``(B,)`` or ``(copies, B)``.
        distill: The distillation term's weight and kind (with ``taught``).
        taught: The frozen teacher's ``(logits, features)`` on the batch.
        align: The alignment term's weight (with ``target_features``).
        target_features: The model's features on the target images, ``(..., m, features)``.

    Returns:
        A scalar: the batch mean, or with copies the sum of each copy's batch mean.
    """
    if logits.dim() == 2:
        loss = F.cross_entropy(logits, y)
    else:
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        loss = ce.view(logits.shape[0], -1).mean(dim=1)
    if distill is not None and taught is not None:
        assert features is not None
        loss = loss + distill.weight * distillation_term(distill, (logits, features), taught).mean(dim=-1)
    if align is not None and target_features is not None:
        assert features is not None
        loss = loss + align.weight * mmd(features, target_features)
    return loss.sum() if loss.dim() else loss


def soft_fit_loss(student: torch.Tensor, targets: torch.Tensor, distill: Distillation) -> torch.Tensor:
    """The loss of one batch of soft targets: ``distill.weight * T^2 * KL`` (batch mean;
    with a leading copies axis, the sum of each copy's)."""
    loss = distill.weight * soft_target_loss(student, targets, distill.temperature).mean(dim=-1)
    return loss.sum() if loss.dim() else loss
