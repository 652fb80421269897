"""Modality experts: one encoder per modality, a shared projection, learned class embeddings.

The network of the modality-experts scenario (UniCon / BiCSL, Sun & Ochiai: contrastive
split learning across modalities). Every example is seen through ``modalities`` views, the
strips of its image (:func:`strip_bounds`); a peer holds one view of its examples. Each view
has its own encoder (``Linear -> ReLU``); a shared projection maps an encoder's output into a
``d``-dimensional space, and ``n_classes`` learned class embeddings (the "answer" embeddings)
live in the same space. A sample's logits are the cosine similarities between its embedding
and every class embedding, divided by a temperature (0.07, as BiCSL): cross-entropy on them
is the InfoNCE loss between the sample and the class embeddings, with its own class as the
positive. The prediction is the nearest class embedding.

Inputs carry which views they hold: an image with ``c`` channels arrives as ``c + 1``
channels, the last one a presence mask (1 on the pixels of the views the example has, else
0; the image channels are zero outside them). The embedding is the normalised mean of the
present views' normalised embeddings, so an example with one view is embedded by that view's
encoder alone (the others get zero gradients) and a test image with every view is the fused
prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MODALITY_SPLITS = ("columns", "rows")


@dataclass(frozen=True)
class ExpertsSpec:
    """How the modality experts cut and embed an example.

    Attributes:
        split: ``"columns"`` (vertical strips, left to right) or ``"rows"`` (top to bottom).
        modalities: Number of strips (views), at least 2.
        embedding_dim: ``d``, the dimension of the shared embedding space.
        temperature: Temperature of the cosine logits (BiCSL's 0.07).
    """

    split: str
    modalities: int
    embedding_dim: int
    temperature: float


def strip_bounds(size: int, modalities: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pixel ranges of ``modalities`` strips over ``size`` pixels (as equal
    as integers allow; 8 pixels in 3 strips: 0-2, 2-5, 5-8).

    Raises:
        ValueError: If there are more strips than pixels.
    """
    if not 1 <= modalities <= size:
        raise ValueError(f"modalities={modalities} strips do not fit {size} pixels; accepted: 1 to {size}")
    return [(m * size // modalities, (m + 1) * size // modalities) for m in range(modalities)]


def split_size(split: str, input_shape: Sequence[int]) -> int:
    """The pixels a ``split`` cuts across: the width for ``columns``, the height for ``rows``."""
    if split not in MODALITY_SPLITS:
        raise ValueError(f"modality_split={split!r} is not known; accepted: {', '.join(MODALITY_SPLITS)}")
    return int(input_shape[-1] if split == "columns" else input_shape[-2])


def cosine_logits(z: torch.Tensor, classes: torch.Tensor, temperature: float) -> torch.Tensor:
    """``cos(z, e_c) / temperature`` for every sample and class.

    Args:
        z: ``(..., B, d)`` sample embeddings.
        classes: ``(..., C, d)`` class embeddings (the same leading dimensions, or none).
        temperature: > 0.

    Returns:
        ``(..., B, C)``.
    """
    return F.normalize(z, dim=-1) @ F.normalize(classes, dim=-1).transpose(-1, -2) / temperature


class ClassEmbeddings(nn.Linear):
    """The learned class embeddings (the rows of ``weight``, ``(n_classes, d)``); calling it
    gives the cosine logits of :func:`cosine_logits`. A ``Linear`` without bias, so the
    Keras-default initialisation and the penultimate-feature hooks treat it as the head."""

    def __init__(self, embedding_dim: int, n_classes: int, temperature: float) -> None:
        super().__init__(embedding_dim, n_classes, bias=False)
        self.temperature = temperature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine logits of the embeddings ``z`` ``(B, d)``: ``(B, n_classes)``."""
        return cosine_logits(z, self.weight, self.temperature)


class ModalityExperts(nn.Module):
    """One ``Linear -> ReLU`` encoder per view, a shared ``Linear`` projection into ``d``
    dimensions and :class:`ClassEmbeddings` (see the module docstring).

    Args:
        input_shape: ``(c + 1, height, width)``: the image's channels and the presence mask.
        n_classes: Number of classes.
        hidden_units: Width of every encoder's output.
        spec: The split, the number of views, ``d`` and the temperature.

    Raises:
        ValueError: If the image cannot be cut into ``spec.modalities`` strips.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden_units: int, spec: ExpertsSpec) -> None:
        super().__init__()
        self.spec = spec
        self.channels = int(input_shape[0]) - 1
        self.bounds = strip_bounds(split_size(spec.split, input_shape), spec.modalities)
        across = int(input_shape[-2] if spec.split == "columns" else input_shape[-1])  # pixels along a strip
        self.encoders = nn.ModuleList(
            nn.Linear(self.channels * across * (stop - start), hidden_units) for start, stop in self.bounds
        )
        self.projection = nn.Linear(hidden_units, spec.embedding_dim)
        self.classes = ClassEmbeddings(spec.embedding_dim, n_classes, spec.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine logits ``(B, n_classes)`` of images ``x`` ``(B, c + 1, H, W)``."""
        z = self.embed(list(self.parameters()), x, shared=True)
        out: torch.Tensor = self.classes(z)  # the head: its input is the penultimate features
        return out

    def stacked_forward(
        self, params: Sequence[torch.Tensor], x: torch.Tensor, shared: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and embeddings of copies whose parameters are stacked along a leading axis
        (what :class:`~hlgym.models.batched.StackedModels` runs).

        Args:
            params: ``parameters()``' tensors, each ``(copies, *shape)``.
            x: ``(B, c + 1, H, W)`` read by every copy (``shared``) or ``(copies, B, c + 1, H, W)``.
            shared: Whether ``x`` is the same for every copy.

        Returns:
            ``(copies, B, n_classes)`` and ``(copies, B, d)``.
        """
        z = self.embed(params, x, shared)
        return cosine_logits(z, params[-1], self.spec.temperature), z

    def embed(self, params: Sequence[torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
        """The unit-length mean of the present views' unit-length embeddings.

        ``params`` are ``parameters()``' tensors: one model's (then ``x`` is ``(B, c + 1, H, W)``
        and the result ``(B, d)``), or stacked copies' as in :meth:`stacked_forward` (the
        result ``(copies, B, d)``).
        """
        c, columns, one = self.channels, self.spec.split == "columns", params[0].dim() == 2
        hidden, presence = [], []
        for m, (start, stop) in enumerate(self.bounds):
            if columns:
                view, present = x[..., :c, :, start:stop], x[..., c, 0, start]
            else:
                view, present = x[..., :c, start:stop, :], x[..., c, start, 0]
            hidden.append(F.relu(_linear(view.flatten(-3), params[2 * m], params[2 * m + 1], one)))
            presence.append(present)
        # Every view through the shared projection at once: (views, [copies,] B, d).
        e = F.normalize(_linear(torch.stack(hidden), params[-3], params[-2], one), dim=-1)
        weight = torch.stack(presence)  # (views, [copies,] B): 1 where the example has the view
        if not one and shared:
            weight = weight.unsqueeze(1)
        total = (weight.unsqueeze(-1) * e).sum(dim=0)
        return F.normalize(total / weight.sum(dim=0).clamp_min(1.0).unsqueeze(-1), dim=-1)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, one: bool) -> torch.Tensor:
    """``x @ w.T + b`` for one model's ``w`` ``(out, in)``, or for stacked copies' ``w``
    ``(copies, out, in)`` and ``b`` ``(copies, out)``: ``x`` ``(..., B, in)`` with the copies'
    axis third from the end, or shared by the copies, broadcasts to ``(..., copies, B, out)``."""
    if one:
        return F.linear(x, w, b)
    if x.dim() == 2:  # shared by the copies
        x = x.unsqueeze(0)
    return x @ w.transpose(1, 2) + b.unsqueeze(1)
