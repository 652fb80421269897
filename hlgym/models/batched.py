"""Many independent copies of an inner model, trained and evaluated in single batched calls.

A vector env holds one travelling model per copy. Looping over them calls the small
convolutions of :class:`~hlgym.models.cnn.HLCNN` once per copy and per mini-batch; here the
copies' weights are stacked along a leading axis and each layer runs once for all of them:
convolutions as grouped convolutions (one group per copy, or one wide convolution when the
copies read the same images, as in the test-set evaluation), linear layers as batched
matrix products. The architecture is read from the model itself (its leaf layers in order),
so :func:`~hlgym.models.training.build_model` stays the one definition of every network. A
model that is no chain of layers (a component's own network) brings its own batched pass, a
``stacked_forward(params, x, shared)`` method, which its ``forward`` shares.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hlgym.models.loss import local_loss, soft_fit_loss
from hlgym.models.pooling import max_pool2d
from hlgym.models.training import OPTIMIZERS, keras_init_
from hlgym.models.work import ModelSpec, TrainJob, precision

# Adam's defaults, as torch.optim.Adam in make_optimizer.
_BETA1, _BETA2 = 0.9, 0.999
# [images x copies] per evaluation chunk: activations of about this many images stay in the
# CPU caches (on 2 cores, 8 copies x 64 images ran 1.5x faster than 8 x 128).
_EVAL_IMAGES = 512
_SUPPORTED = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten)

# Layouts of the activations between layers:
_SHARED = "shared"  # (B, ...): the same inputs for every copy (nothing copy-specific yet)
_STACKED = "stacked"  # (copies, B, ...): one batch per copy
_GROUPED = "grouped"  # (B, copies * C, H, W): channel groups, one per copy, for conv layers


class StackedModels:
    """``k`` copies of ``template``'s architecture with their own weights and optimizer states:
    the batched :class:`~hlgym.models.work.ModelWork` (a slot is a copy).

    Args:
        template: A model of the architecture (its weights are not used). Its leaf layers,
            in registration order, must be its forward pass: ``Conv2d``, ``Linear``, ``ReLU``,
            ``MaxPool2d`` and ``Flatten`` are supported; or it has a ``stacked_forward(params,
            x, shared) -> (logits, features)`` method (as :meth:`forward_features`), and
            ``Linear`` layers alone hold its parameters.
        k: Number of copies (slots).
        n_optimizers: Optimizer states per copy (one per peer for the reference's per-peer Adam).
        optimizer: ``"adam"`` or ``"sgd"``, updated as ``torch.optim.Adam`` / ``SGD`` with
            default settings besides ``lr`` and ``adam_eps``.
        lr: Learning rate.
        adam_eps: Adam's epsilon.
        channels_last: Run convolutions in channels-last layout (faster on CPU).

    Raises:
        TypeError: If the model has a layer that cannot be batched.
    """

    def __init__(
        self,
        template: nn.Module,
        k: int,
        n_optimizers: int,
        optimizer: str,
        lr: float,
        adam_eps: float,
        channels_last: bool,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r} is not known; accepted: {', '.join(OPTIMIZERS)}")
        self.eval_precision = "float32"
        """The test-set evaluation's arithmetic (ModelSpec.eval_precision)."""
        self.template = template
        # A model's own batched pass, if it is not a chain of layers.
        self._stacked_forward = getattr(template, "stacked_forward", None)
        self._plan: list[tuple[nn.Module, list[int]]] = []
        offset = 0
        for module in template.modules():
            if len(list(module.children())) > 0:
                continue
            if not isinstance(module, _SUPPORTED):
                raise TypeError(
                    f"{type(module).__name__} layers cannot be batched; supported: "
                    + ", ".join(t.__name__ for t in _SUPPORTED)
                )
            n_own = len(list(module.parameters(recurse=False)))
            self._plan.append((module, list(range(offset, offset + n_own))))
            offset += n_own
        linear = [i for i, (module, _) in enumerate(self._plan) if isinstance(module, nn.Linear)]
        self._head = linear[-1] if linear else -1  # the layer whose input is the penultimate features
        shapes = [p.shape for p in template.parameters()]
        first = next(template.parameters())
        device, dtype = first.device, first.dtype
        self.optimizer = optimizer
        self.lr = lr
        self.adam_eps = adam_eps
        self.channels_last = channels_last
        self.params = [torch.zeros((k, *s), device=device, dtype=dtype) for s in shapes]
        self._m = [torch.zeros((k, n_optimizers, *s), device=device, dtype=dtype) for s in shapes]
        self._v = [torch.zeros((k, n_optimizers, *s), device=device, dtype=dtype) for s in shapes]
        self._steps = np.zeros((k, n_optimizers), dtype=np.int64)  # Adam's step count per state

    @classmethod
    def from_spec(cls, spec: ModelSpec, k: int) -> StackedModels:
        """``k`` slots of the models ``spec`` describes (weights drawn by :meth:`initialize`)."""
        template = spec.build(torch.Generator().manual_seed(0))
        stacked = cls(
            template, k, spec.n_optimizers, spec.optimizer, spec.lr, spec.adam_eps, channels_last=spec.channels_last
        )
        stacked.eval_precision = spec.eval_precision
        return stacked

    # ------------------------------------------------------------------ slots

    @property
    def n_slots(self) -> int:
        """Number of slots (copies)."""
        return int(self.params[0].shape[0])

    @property
    def n_params(self) -> int:
        """Scalar parameters of one copy."""
        return sum(p[0].numel() for p in self.params)

    def initialize(self, slots: Sequence[int], generators: Sequence[torch.Generator]) -> None:
        """Draw each slot's weights from its generator, exactly as ``build_model`` draws a
        model's, and clear its optimizer states."""
        for slot, generator in zip(slots, generators, strict=True):
            for module, idx in self._plan:
                if isinstance(module, nn.Linear | nn.Conv2d):
                    bias = self.params[idx[1]][slot] if len(idx) > 1 else None
                    keras_init_(self.params[idx[0]][slot], bias, generator)
            self._clear_states(slot)

    def _clear_states(self, slot: int) -> None:
        with torch.no_grad():
            for m, v in zip(self._m, self._v, strict=True):
                m[slot].zero_()
                v[slot].zero_()
        self._steps[slot] = 0

    def module(self, slot: int) -> nn.Module:
        """A new module with ``slot``'s weights (a copy of the template)."""
        out = copy.deepcopy(self.template)
        self.store(slot, out)
        return out

    def load(self, slot: int, model: nn.Module) -> None:
        """Put ``model``'s weights in ``slot`` and clear the slot's optimizer states."""
        with torch.no_grad():
            for stacked, p in zip(self.params, model.parameters(), strict=True):
                stacked[slot].copy_(p)
        self._clear_states(slot)

    def store(self, slot: int, model: nn.Module) -> None:
        """Copy ``slot``'s weights into ``model`` (same architecture)."""
        with torch.no_grad():
            for stacked, p in zip(self.params, model.parameters(), strict=True):
                p.copy_(stacked[slot])

    def flat(self, slot: int) -> torch.Tensor:
        """``slot``'s parameters as one 1-D tensor, in ``flat_weights``' order (a copy)."""
        return torch.cat([p[slot].reshape(-1) for p in self.params])

    def set_flat(self, slot: int, flat: torch.Tensor) -> None:
        """Write :meth:`flat`'s layout back into ``slot`` (its optimizer states are kept)."""
        if flat.shape != (self.n_params,):
            raise ValueError(f"flat weights of shape {tuple(flat.shape)} do not fit {self.n_params} parameters")
        with torch.no_grad():
            offset = 0
            for p in self.params:
                size = p[slot].numel()
                p[slot].copy_(flat[offset : offset + size].view(p.shape[1:]))
                offset += size

    def outputs(self, slots: Sequence[int], xs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each slot's logits and penultimate features on its own inputs, without gradients;
        slots with as many inputs run in one pass."""
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():  # not inference_mode: the logits become training targets
            for members in _by_size(xs):
                sl = torch.tensor([slots[j] for j in members], device=xs[members[0]].device)
                x = torch.stack([xs[j] for j in members])
                logits, features = self.forward_features([p[sl] for p in self.params], x, False)
                for row, j in enumerate(members):
                    out[j] = (logits[row], features[row])
        return [out[j] for j in range(len(xs))]

    # ------------------------------------------------------------------ compute

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits of every copy in ``params`` (each of shape ``(copies, *param_shape)``).

        Args:
            params: Stacked parameters of the copies to run.
            x: ``(B, C, H, W)`` images every copy reads (``shared``) or ``(copies, B, C, H, W)``.
            shared: Whether ``x`` is the same for every copy.

        Returns:
            ``(copies, B, n_classes)``.
        """
        return self.forward_features(params, x, shared)[0]

    def forward_features(
        self, params: Sequence[torch.Tensor], x: torch.Tensor, shared: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`forward`, with the penultimate features (the last ``Linear``'s input):
        ``(copies, B, n_classes)`` and ``(copies, B, features)`` (``(B, features)`` while the
        copies still share it)."""
        if self._stacked_forward is not None:
            own: tuple[torch.Tensor, torch.Tensor] = self._stacked_forward(params, x, shared)
            return own
        a = params[0].shape[0]
        h, layout = x, _SHARED if shared else _STACKED
        features = h
        for step, (module, idx) in enumerate(self._plan):
            if step == self._head:
                features = h
            if isinstance(module, nn.Conv2d):
                w = params[idx[0]]
                bias = params[idx[1]].reshape(-1) if len(idx) > 1 else None
                groups = 1 if layout == _SHARED else a
                if layout == _STACKED:
                    h = self._group(h)
                w = w.reshape(a * w.shape[1], *w.shape[2:])
                if self.channels_last:
                    # A 1-channel input is both layouts and so is this weight unless restrided: the
                    # weight's strides decide oneDNN's output layout (pooling an NCHW one ran 10x slower).
                    w = torch.empty_like(w, memory_format=torch.channels_last).copy_(w)
                h = F.conv2d(
                    h,
                    w,
                    bias,
                    module.stride,
                    module.padding,
                    module.dilation,
                    groups,
                )
                layout = _GROUPED
            elif isinstance(module, nn.Linear):
                w = params[idx[0]].transpose(1, 2)
                if layout == _GROUPED:
                    raise TypeError("a Linear layer after a Conv2d needs a Flatten between them")
                out = torch.matmul(h, w) if layout == _SHARED else torch.bmm(h, w)
                h = out + params[idx[1]].unsqueeze(1) if len(idx) > 1 else out
                layout = _STACKED
            elif isinstance(module, nn.Flatten):
                if layout == _GROUPED:
                    h = h.reshape(h.shape[0], a, -1).transpose(0, 1)
                    layout = _STACKED
                else:
                    h = h.flatten(1 if layout == _SHARED else 2)
            elif isinstance(module, nn.MaxPool2d):
                if layout == _STACKED:
                    h, layout = self._group(h), _GROUPED
                h = max_pool2d(h, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
            else:  # ReLU
                h = F.relu(h)
        if layout != _STACKED:
            raise TypeError("the model must end in a Linear layer to be batched")
        return h, features

    def _group(self, h: torch.Tensor) -> torch.Tensor:
        """``(copies, B, C, H, W)`` -> ``(B, copies * C, H, W)``."""
        a, b = h.shape[:2]
        out = h.transpose(0, 1).reshape(b, a * h.shape[2], *h.shape[3:])
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def train(self, jobs: Sequence[TrainJob], epochs: int, batch_size: int) -> None:
        """Run every job's local training, as ``local_train`` does for one model.

        Jobs whose data have as many samples train together in one batched pass (they share
        batch shapes); plain jobs (no teacher, no alignment) of different sizes train together
        too, in padded batches whose padding weighs nothing and where a copy whose data ran
        out takes no step. Each slot shuffles with its own job's generator, so it sees the
        same batches, and takes the same steps, as a lone model with that generator.
        """
        groups: dict[tuple[object, ...], list[TrainJob]] = {}
        for job in jobs:
            d = job.distill
            plain = (d is None or d.teacher is None) and job.align is None
            key: tuple[object, ...] = ("plain",) if plain else (int(job.y.shape[0]),)
            if d is not None and d.teacher is not None:  # a group's jobs all have teachers or none has
                key = (*key, d.weight, d.temperature, d.on)
            if job.align is not None:  # ... and all align, with as many target images, or none does
                key = (*key, "align", job.align.weight, int(job.align.target_x.shape[0]))
            groups.setdefault(key, []).append(job)
        # Teachers are frozen as the call found them, before any copy trains.
        teachers = {
            key: self._stack([t for t in map(_teacher, group) if t is not None])
            for key, group in groups.items()
            if _teacher(group[0]) is not None
        }
        # Soft targets first: each copy fits its public logits, then trains on its data.
        soft: dict[tuple[int, float, float], list[TrainJob]] = {}
        for job in jobs:
            d = job.distill
            if d is not None and d.public_x is not None:
                soft.setdefault((d.public_x.shape[0], d.weight, d.temperature), []).append(job)
        for group in soft.values():
            self._train_group(group, epochs, batch_size, public=True)
        for key, group in groups.items():
            self._train_group(group, epochs, batch_size, teachers=teachers.get(key))

    def _stack(self, slots: Sequence[int]) -> list[torch.Tensor]:
        """The parameters of ``slots`` stacked, one row per slot (a copy)."""
        return [p[torch.tensor(slots, device=p.device)] for p in self.params]

    def _train_group(
        self,
        jobs: Sequence[TrainJob],
        epochs: int,
        batch_size: int,
        public: bool = False,
        teachers: list[torch.Tensor] | None = None,
    ) -> None:
        """Train the copies of ``jobs`` (distinct slots, data of one size) in one batched pass.

        Args:
            jobs: The copies' jobs.
            epochs: Passes over the data.
            batch_size: Samples per gradient step; the last batch may be smaller.
            public: Fit the jobs' soft targets (their ``distill.public_x`` and
                ``public_logits``) instead of their labelled data.
            teachers: The frozen teachers' stacked parameters, one row per job (their
                ``distill`` says how the loss uses them).
        """
        slots, states = [j.slot for j in jobs], [j.state for j in jobs]
        distill, align = jobs[0].distill, jobs[0].align
        target_x = None if public or align is None else torch.stack([_target(j) for j in jobs])
        if public:
            assert distill is not None
            x = torch.stack([_public(j)[0] for j in jobs])
            targets = torch.stack([_public(j)[1] for j in jobs])
        else:
            sizes = [int(j.y.shape[0]) for j in jobs]
            x, targets = _padded([j.x for j in jobs]), _padded([j.y for j in jobs])
        device = x.device
        sl = torch.tensor(slots, device=device)
        st = torch.tensor(states, device=device)
        params = [p.requires_grad_() for p in self._stack(slots)]
        m = [s[sl, st] for s in self._m]
        v = [s[sl, st] for s in self._v]
        steps = self._steps[slots, states]
        a, n = targets.shape[:2]
        ragged = not public and len(set(sizes)) > 1
        rows = torch.arange(a, device=device).unsqueeze(1)
        plan = _ragged_batches(sizes, batch_size, device, x.dtype) if ragged else []
        for _ in range(epochs):
            if ragged:  # each copy's own permutation of its own samples, then padding
                order = _padded([torch.randperm(k, generator=j.generator) for j, k in zip(jobs, sizes, strict=True)])
            else:
                order = torch.stack([torch.randperm(n, generator=j.generator) for j in jobs])
            order = order.to(device)
            for b, start in enumerate(range(0, n, batch_size)):
                idx = order[:, start : start + batch_size]
                xb, tb = x[rows, idx], targets[rows, idx]
                if ragged:
                    batch = plan[b]
                    logits, _ = self.forward_features(params, xb, shared=False)
                    ce = F.cross_entropy(logits.flatten(0, 1), tb.flatten(), reduction="none").view(a, -1)
                    # Each copy's mean over its own samples of the batch (lone: the batch mean).
                    loss = ((ce * batch.weight).sum(dim=1) / batch.counts).sum()
                    grads = torch.autograd.grad(loss, params)
                    steps += 1 if batch.on is None else batch.on
                    with torch.no_grad():
                        self._update(params, grads, m, v, steps, batch)
                    continue
                # Every term is a per-copy mean over the batch; copies are independent, so the
                # loss is the sum of theirs (local_loss / soft_fit_loss sum them).
                if public:
                    assert distill is not None
                    loss = soft_fit_loss(self.forward(params, xb, shared=False), tb, distill)
                else:
                    logits, features = self.forward_features(params, xb, shared=False)
                    taught = target = None
                    if teachers is not None:
                        with torch.no_grad():
                            taught = self.forward_features(teachers, xb, shared=False)
                    if target_x is not None:
                        target = self.forward_features(params, target_x, shared=False)[1]
                    loss = local_loss(
                        logits, features, tb, distill if teachers is not None else None, taught, align, target
                    )
                grads = torch.autograd.grad(loss, params)
                steps += 1
                with torch.no_grad():
                    self._update(params, grads, m, v, steps)
        with torch.no_grad():
            for p, stacked in zip(params, self.params, strict=True):
                stacked[sl] = p
            for s, new in zip(self._m, m, strict=True):
                s[sl, st] = new
            for s, new in zip(self._v, v, strict=True):
                s[sl, st] = new
        self._steps[slots, states] = steps

    def _update(
        self,
        params: list[torch.Tensor],
        grads: Sequence[torch.Tensor],
        m: list[torch.Tensor],
        v: list[torch.Tensor],
        steps: np.ndarray,
        batch: _RaggedBatch | None = None,
    ) -> None:
        # The arithmetic of torch.optim's single-tensor Adam / SGD, with one step count per copy;
        # in a ragged ``batch`` the copies whose data ran out keep their weights and moments (no
        # step). Their gradients are zero (their samples weigh nothing in the loss), so SGD
        # leaves them as they are, and Adam does with per-copy coefficients: a moment weight of
        # 0, a decay of 1, a step size of 0. The active copies' coefficients are the scalars'
        # values and give their bits (tests/test_batched.py); this replaced copies of every
        # weight and moment and a torch.where per tensor (a step of 8 task copies: 19.5 ms
        # before, 18.6 after).
        if self.optimizer == "sgd":
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-self.lr)
            return
        device, dtype = params[0].device, params[0].dtype
        taken = np.maximum(steps, 1)  # a copy without a step yet: any finite bias correction (discarded)
        step_size = self.lr / (1 - _BETA1**taken)
        per_copy = None if batch is None else batch.coefficients
        if batch is not None and batch.on is not None:
            step_size = np.where(batch.on, step_size, 0.0)
        step = torch.from_numpy(step_size).to(device, dtype)
        bc2_sqrt = torch.from_numpy(np.sqrt(1 - _BETA2**taken)).to(device, dtype)
        for p, g, m_, v_ in zip(params, grads, m, v, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if per_copy is None:
                m_.lerp_(g, 1 - _BETA1)
                v_.mul_(_BETA2)
            else:
                m_.lerp_(g, per_copy[0].view(shape))
                v_.mul_(per_copy[1].view(shape))
            v_.addcmul_(g, g, value=1 - _BETA2)
            denom = (v_.sqrt() / bc2_sqrt.view(shape)).add_(self.adam_eps)
            p.sub_(step.view(shape) * m_ / denom)

    def per_sample_loss(
        self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and correctness of every sample of ``(x, y)`` for each slot (inputs every slot
        reads: the first convolution runs as one wide convolution), ``(len(slots), n)`` each."""
        with precision(self.eval_precision, x.device):
            loss, hits = self._losses(slots, x, y, shared=True)
        assert loss is not None
        return loss, hits

    def per_sample_hits(self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`per_sample_loss`'s correctness alone, ``(len(slots), n)``: no cross-entropy (an
        accuracy does not read it; 8 digits MLPs on the 500 evaluation images: 1.6 ms with it,
        0.87 ms without, one thread; docs/speed.md)."""
        with precision(self.eval_precision, x.device):
            return self._losses(slots, x, y, shared=True, with_loss=False)[1]

    def per_sample_loss_each(
        self, slots: Sequence[int], xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each slot on its own inputs; slots with as many samples run in one batched pass."""
        out: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for members in _by_size(ys):
            loss, hits = self._losses(
                [slots[j] for j in members],
                torch.stack([xs[j] for j in members]),
                torch.stack([ys[j] for j in members]),
                shared=False,
            )
            assert loss is not None
            for row, j in enumerate(members):
                out[j] = (loss[row], hits[row])
        return [out[j] for j in range(len(slots))]

    def _losses(
        self, slots: Sequence[int], x: torch.Tensor, y: torch.Tensor, shared: bool, with_loss: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Cross-entropy and correctness of every sample for the copies in ``slots``.

        Args:
            slots: The copies to run.
            x: ``(B, C, H, W)`` read by all of them (``shared``) or ``(len(slots), B, C, H, W)``.
            y: ``(B,)`` or ``(len(slots), B)`` labels.
            shared: Whether ``x`` and ``y`` are the same for every copy.
            with_loss: Whether to compute the cross-entropy (else ``loss`` is None).

        Returns:
            ``(loss, correct)``, both ``(len(slots), B)``; ``correct`` is 0/1 as float.
        """
        sl = torch.tensor(list(slots), device=x.device)
        params = [p[sl] for p in self.params]
        a = len(slots)
        chunk = max(16, min(256, _EVAL_IMAGES // a))
        n = x.shape[0] if shared else x.shape[1]
        losses, hits = [], []
        with torch.inference_mode():
            for start in range(0, n, chunk):
                xb = x[start : start + chunk] if shared else x[:, start : start + chunk]
                yb = y[start : start + chunk] if shared else y[:, start : start + chunk]
                logits = self.forward(params, xb, shared)
                target = yb.expand(a, -1) if shared else yb
                if with_loss:
                    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
                    losses.append(ce.view(a, -1))
                hits.append((logits.argmax(dim=2) == target).float())
        return (torch.cat(losses, dim=1) if with_loss else None), torch.cat(hits, dim=1)


@dataclass(frozen=True)
class _RaggedBatch:
    """One batch position of a group whose copies hold different sample counts: what its
    loss and its Adam update need, the same in every epoch, so computed once per group
    instead of every batch (docs/speed.md, "A task distribution in the batched engine")."""

    weight: torch.Tensor
    """``(copies, batch)``: 1 on a copy's own samples, 0 on its padding."""
    counts: torch.Tensor
    """``(copies,)``: each copy's own samples in the batch, at least 1 (the mean's divisor)."""
    on: np.ndarray | None
    """The copies that take a step (some data left), or None where all do."""
    coefficients: tuple[torch.Tensor, torch.Tensor] | None
    """Adam's moment weight and second-moment decay per copy (0 and 1 where a copy takes no
    step); None where all step (the scalars)."""


def _ragged_batches(
    sizes: Sequence[int], batch_size: int, device: torch.device, dtype: torch.dtype
) -> list[_RaggedBatch]:
    """The batch positions of copies with ``sizes`` samples, padded to the largest."""
    out = []
    sizes_ = np.asarray(sizes)
    n = int(sizes_.max())
    for start in range(0, n, batch_size):
        width = min(batch_size, n - start)
        counts = np.clip(sizes_ - start, 0, width)
        on = counts > 0
        weight = torch.from_numpy(np.arange(width) < counts[:, None]).to(device, dtype)
        coefficients = None
        if not on.all():
            coefficients = (
                torch.from_numpy(np.where(on, 1 - _BETA1, 0.0)).to(device, dtype),
                torch.from_numpy(np.where(on, _BETA2, 1.0)).to(device, dtype),
            )
        divisor = torch.from_numpy(np.maximum(counts, 1)).to(device)
        out.append(_RaggedBatch(weight, divisor, None if on.all() else on, coefficients))
    return out


def _padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``tensors`` stacked along a new first axis, each padded to the longest with copies of
    its first row (padding that a weight of zero, or an index never read, leaves out)."""
    n = max(int(t.shape[0]) for t in tensors)
    if all(int(t.shape[0]) == n for t in tensors):
        return torch.stack(list(tensors))
    return torch.stack(
        [torch.cat([t, t[:1].expand(n - t.shape[0], *t.shape[1:])]) if t.shape[0] < n else t for t in tensors]
    )


def _public(job: TrainJob) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft-target job's public inputs and the teacher's logits on them."""
    d = job.distill
    assert d is not None and d.public_x is not None and d.public_logits is not None
    return d.public_x, d.public_logits


def _target(job: TrainJob) -> torch.Tensor:
    """An aligning job's target images."""
    assert job.align is not None
    return job.align.target_x


def _teacher(job: TrainJob) -> int | None:
    """The slot of a job's frozen teacher, if it has one."""
    return None if job.distill is None else job.distill.teacher


def _by_size(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by their first dimension (what one batched pass can stack)."""
    groups: dict[int, list[int]] = {}
    for j, t in enumerate(tensors):
        groups.setdefault(int(t.shape[0]), []).append(j)
    return list(groups.values())
