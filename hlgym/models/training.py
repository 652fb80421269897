"""Inner-loop learning: build, train and evaluate the peer models.

Every random draw (initial weights, batch order) comes from a ``torch.Generator`` that
the caller seeds, so two calls with equally seeded generators give the same weights bit
for bit on CPU. No global RNG is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hlgym.models.cnn import HLCNN
from hlgym.models.loss import Alignment, Distillation, local_loss, soft_fit_loss
from hlgym.models.mlp import MLP

MODELS = ("cnn", "mlp")
OPTIMIZERS = ("adam", "sgd")


class ModelFactory(Protocol):
    """A network of a component's own in place of ``"cnn"`` / ``"mlp"`` (a scenario that
    changes what the model is, as the view experts of :mod:`hlgym.envs.components`).

    Its model's ``Linear`` and ``Conv2d`` layers alone hold parameters (they are drawn as
    Keras draws them); if it is no chain of layers, it has a ``stacked_forward`` method for
    :class:`~hlgym.models.batched.StackedModels`. A factory is a frozen dataclass, so a
    :class:`~hlgym.models.work.ModelSpec` holding one stays hashable and picklable.
    """

    def build(self, input_shape: tuple[int, ...], n_classes: int, hidden_units: int) -> nn.Module:
        """The model (built on whatever device is current: ``build_model`` uses ``meta``)."""
        ...


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    generator: torch.Generator,
    hidden_units: int = 64,
    factory: ModelFactory | None = None,
) -> nn.Module:
    """Build an inner model with Keras' default initialisation.

    Keras initialises kernels Glorot-uniform and biases to zero; we do the same so the
    reference's learning curves are reproduced.

    Args:
        name: ``"cnn"`` (the reference's network) or ``"mlp"``.
        input_shape: Shape of one input, ``(channels, height, width)``.
        n_classes: Number of classes.
        generator: Source of the initial weights.
        hidden_units: Hidden width of the MLP (ignored by the CNN), or what ``factory``
            makes of it.
        factory: Build its model instead of ``name``'s (the config checks that they fit).

    Returns:
        The model, in training mode, on the CPU.
    """
    model: nn.Module
    # Built on the meta device: torch's own initialisation (which draws from the global RNG)
    # does not run; every weight is then drawn from ``generator`` below.
    with torch.device("meta"):
        if factory is not None:
            model = factory.build(input_shape, n_classes, hidden_units)
        elif name == "cnn":
            model = HLCNN(input_shape, n_classes)
        elif name == "mlp":
            model = MLP(input_shape, n_classes, hidden_units)
        else:
            raise ValueError(f"model={name!r} is not accepted; accepted: {', '.join(MODELS)}")
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
            taught = target = features = None
            distilled = distill if teacher is not None else None
            if distilled is None and align is None:
                logits = model(xb)
            else:
                logits, features = logits_and_features(model, xb)
            if teacher is not None and distilled is not None:
                with torch.no_grad():
                    taught = logits_and_features(teacher, xb)
            if align is not None:
                target = logits_and_features(model, align.target_x)[1]
            loss = local_loss(logits, features, y[idx], distilled, taught, align, target)
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
            loss = soft_fit_loss(model(x[idx]), target_logits[idx], distill)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()


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
    loss, hits = _per_sample(model, x, y, batch_size, with_loss=True)
    assert loss is not None
    return loss, hits


def per_sample_hits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Correctness (0/1 as float) of every sample, ``(n,)``: :func:`per_sample_loss`'s
    without the cross-entropy, which an accuracy does not read (torch's log-softmax over 10
    classes costs about as much as the digits MLP's forward pass and argmax: docs/speed.md)."""
    return _per_sample(model, x, y, batch_size, with_loss=False)[1]


def _per_sample(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, with_loss: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    model.eval()
    losses = []
    hits = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            if with_loss:
                losses.append(F.cross_entropy(logits, target, reduction="none"))
            hits.append((logits.argmax(dim=1) == target).float())
    return (torch.cat(losses) if with_loss else None), torch.cat(hits)


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
