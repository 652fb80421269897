"""The reference's convolutional network (Sun & Ochiai, homogeneous-learning-tensorflow)."""

from __future__ import annotations

import torch
from torch import nn

from hlgym.models.pooling import MaxPool2d


def _conv_out(size: int, kernel: int) -> int:
    # 'valid' convolution followed by a 2x2 max-pool, as Keras' defaults do.
    return (size - kernel + 1) // 2


class HLCNN(nn.Module):
    """Conv(20, 5x5, ReLU), MaxPool 2, Conv(50, 5x5, ReLU), MaxPool 2, Dense(n_classes).

    On 28x28 inputs this is the reference's network exactly (33,580 parameters).

    Args:
        input_shape: Shape of one input, ``(channels, height, width)``.
        n_classes: Number of output logits.

    Raises:
        ValueError: If the images are too small for two 5x5 convolutions and pools.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        h = _conv_out(_conv_out(height, 5), 5)
        w = _conv_out(_conv_out(width, 5), 5)
        if h < 1 or w < 1:
            raise ValueError(
                f"model='cnn' needs images of at least 16x16 pixels, got input_shape={input_shape}; "
                "use model='mlp' for small images"
            )
        # Pooling before the ReLU computes the same values (max and ReLU commute) with the
        # ReLU on a 4x smaller tensor; the convolutions stay at indices 0 and 3. The pooling
        # is torch's values by a faster path where no gradient is needed (models/pooling.py).
        self.features = nn.Sequential(
            nn.Conv2d(channels, 20, 5),
            MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, 5),
            MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(50 * h * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, n_classes)``."""
        out: torch.Tensor = self.head(self.features(x))
        return out
