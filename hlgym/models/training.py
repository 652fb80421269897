"""Inner-loop learning: build, train and evaluate the peer models.

Every random draw (initial weights, batch order) comes from a ``torch.Generator`` that
the caller seeds, so two calls with equally seeded generators give the same weights bit
for bit on CPU. No global RNG is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hlgym.models.cnn import HLCNN
from hlgym.models.experts import ExpertsSpec, ModalityExperts
from hlgym.models.mlp import MLP

if TYPE_CHECKING:
    from hlgym.models.work import Alignment, Distillation

MODELS = ("cnn", "mlp")
OPTIMIZERS = ("adam", "sgd")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    generator: torch.Generator,
    hidden_units: int = 64,
    experts: ExpertsSpec | None = None,
) -> nn.Module:
    """Build an inner model with Keras' default initialisation.

    Keras initialises kernels Glorot-uniform and biases to zero; we do the same so the
    reference's learning curves are reproduced.

    Args:
        name: ``"cnn"`` (the reference's network) or ``"mlp"``.
        input_shape: Shape of one input, ``(channels, height, width)``.
        n_classes: Number of classes.
        generator: Source of the initial weights.
        hidden_units: Hidden width of the MLP (ignored by the CNN), or of each modality
            expert's encoder.
        experts: With ``name="mlp"``, build :class:`~hlgym.models.experts.ModalityExperts`
            (an MLP encoder per view of the image) instead of one MLP.

    Returns:
        The model, in training mode, on the CPU.
    """
    model: nn.Module
    # Built on the meta device: torch's own initialisation (which draws from the global RNG)
    # does not run; every weight is then drawn from ``generator`` below.
    with torch.device("meta"):
        if name == "mlp" and experts is not None:
            model = ModalityExperts(input_shape, n_classes, hidden_units, experts)
        elif name == "cnn" and experts is None:
            model = HLCNN(input_shape, n_classes)
        elif name == "mlp":
            model = MLP(input_shape, n_classes, hidden_units)
        else:
            accepted = "'mlp' (the experts' encoders are MLPs)" if experts is not None else ", ".join(MODELS)
            raise ValueError(f"model={name!r} is not accepted; accepted: {accepted}")
    model.to_empty(device="cpu")
    keras_init_model_(model, generator)
    return model


def keras_init_model_(model: nn.Module, generator: torch.Generator) -> None:
    """Draw every weight of ``model`` from ``generator`` as Keras initialises a new model,
    in place (layer by layer, in ``modules()`` order).

    Raises:
        TypeError: If a layer other than ``Linear`` and ``Conv2d`` has parameters.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            keras_init_(module.weight, module.bias, generator)
        elif list(module.parameters(recurse=False)):
            raise TypeError(f"{type(module).__name__} has parameters that keras_init_ does not draw")


def keras_init_(weight: torch.Tensor, bias: torch.Tensor | None, generator: torch.Generator) -> None:
    """Keras' default initialisation of one layer, in place: Glorot-uniform kernel, zero bias.

    The kernel is drawn into a contiguous CPU tensor and copied, so the values do not depend
    on ``weight``'s memory layout (channels-last) or device (the generator stays on the CPU,
    so a CUDA run draws the same weights as a CPU run).
    """
    with torch.no_grad():
        drawn = torch.empty(weight.shape, dtype=weight.dtype)
        nn.init.xavier_uniform_(drawn, generator=generator)
        weight.copy_(drawn)
        if bias is not None:
            bias.zero_()


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, adam_eps: float) -> torch.optim.Optimizer:
    """The local optimizer of one peer.

    Args:
        name: ``"adam"`` or ``"sgd"``.
        params: The parameters it updates.
        lr: Learning rate.
        adam_eps: Adam's epsilon (Keras' default is 1e-7, PyTorch's 1e-8).
    """
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=adam_eps)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"optimizer={name!r} is not known; accepted: {', '.join(OPTIMIZERS)}")


def local_train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    teacher: nn.Module | None = None,
    distill: Distillation | None = None,
    align: Alignment | None = None,
) -> float:
    """Train ``model`` on one peer's data, reshuffled every epoch as Keras' ``fit`` does.

    Args:
        model: The model; updated in place.
        optimizer: The peer's optimizer, bound to ``model``'s parameters.
        x: Inputs, ``(n, channels, height, width)``.
        y: Integer labels, ``(n,)``.
        epochs: Passes over the data.
        batch_size: Samples per gradient step; the last batch may be smaller.
        generator: Source of the batch order.
        teacher: A frozen model whose knowledge ``distill`` adds to the loss on every batch.
        distill: The distillation term's weight, temperature and target (logits or features).
        align: Unlabeled target-domain images: every batch adds ``align.weight`` times the
            :func:`mmd` between the batch's and their penultimate features.

    Returns:
        The mean training loss of the last epoch.
    """
    model.train()
    n = x.shape[0]
    last = 0.0
    for _ in range(epochs):
        # The generator lives on the CPU so a CUDA run draws the same batches as a CPU run.
        order = torch.randperm(n, generator=generator).to(x.device)
        total = torch.zeros((), device=x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            xb = x[idx]
            if (teacher is None or distill is None) and align is None:
                loss = F.cross_entropy(model(xb), y[idx])
            else:
                logits, features = logits_and_features(model, xb)
                loss = F.cross_entropy(logits, y[idx])
                if teacher is not None and distill is not None:
                    with torch.no_grad():
                        taught = logits_and_features(teacher, xb)
                    term = distillation_term(distill, (logits, features), taught)
                    loss = loss + distill.weight * term.mean()
                if align is not None:
                    target = logits_and_features(model, align.target_x)[1]
                    loss = loss + align.weight * mmd(features, target)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += loss.detach() * idx.numel()
        last = float(total) / n
    return last


def fit_soft_targets(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    target_logits: torch.Tensor,
    distill: Distillation,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """Fit ``model`` to a teacher's logits on unlabeled inputs: ``weight * T^2 * KL`` alone,
    ``epochs`` passes, batches drawn as in :func:`local_train`.

    Args:
        model: The student; updated in place.
        optimizer: Its optimizer.
        x: The unlabeled inputs, ``(m, channels, height, width)``.
        target_logits: The teacher's logits on them, ``(m, n_classes)``.
        distill: Weight and temperature.
        epochs: Passes over ``x``.
        batch_size: Samples per gradient step.
        generator: Source of the batch order.
    """
    model.train()
    m = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(m, generator=generator).to(x.device)
        for start in range(0, m, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            term = soft_target_loss(model(x[idx]), target_logits[idx], distill.temperature)
            loss = distill.weight * term.mean()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()


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


def head_layer(model: nn.Module) -> nn.Linear:
    """The model's last ``Linear`` layer: its input is the penultimate features."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise TypeError(f"{type(model).__name__} has no Linear layer to read penultimate features before")
    return heads[-1]


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the penultimate features (the input of :func:`head_layer`), flattened
    to ``(batch, features)``."""
    seen: list[torch.Tensor] = []
    handle = head_layer(model).register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and mean cross-entropy of a model on a labelled set."""

    accuracy: float
    loss: float


def per_sample_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and correctness of every sample, without gradients.

    ``batch_size`` 256 keeps a CNN's activations in the CPU caches: on 2 cores it
    evaluates the 10,000 Fashion-MNIST test images about 2x faster than 2,048.

    Returns:
        ``(loss, correct)``, both of shape ``(n,)``; ``correct`` is 0/1 as float.
    """
    model.eval()
    losses = []
    hits = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            losses.append(F.cross_entropy(logits, target, reduction="none"))
            hits.append((logits.argmax(dim=1) == target).float())
    return torch.cat(losses), torch.cat(hits)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> EvalResult:
    """Accuracy and mean loss of ``model`` on ``(x, y)``."""
    loss, hits = per_sample_loss(model, x, y)
    return EvalResult(accuracy=float(hits.mean()), loss=float(loss.mean()))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (what one transfer of the model moves)."""
    return sum(p.numel() for p in model.parameters())


def flat_weights(model: nn.Module) -> torch.Tensor:
    """All parameters concatenated into one 1-D tensor (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat_(model: nn.Module, flat: torch.Tensor) -> None:
    """Write :func:`flat_weights`' layout back into ``model``'s parameters, in place.

    Raises:
        ValueError: If ``flat`` does not have one value per parameter.
    """
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    if flat.shape != (total,):
        raise ValueError(f"flat weights of shape {tuple(flat.shape)} do not fit a model of {total} parameters")
    with torch.no_grad():
        offset = 0
        for p in params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
