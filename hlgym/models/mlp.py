"""A small multilayer perceptron for the embedded default (8x8 digits)."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten -> Linear(hidden) -> ReLU -> Linear(n_classes).

    Args:
        input_shape: Shape of one input, ``(channels, height, width)``.
        n_classes: Number of output logits.
        hidden_units: Width of the hidden layer.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden_units: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden_units),
            nn.ReLU(),
            nn.Linear(hidden_units, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, n_classes)``."""
        out: torch.Tensor = self.net(x)
        return out
