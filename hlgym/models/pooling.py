"""2x2 max-pooling without gradients in fewer passes over memory than ``F.max_pool2d``.

torch's CPU ``max_pool2d`` kernel was a fifth of the HL-FashionMNIST step (its 10,000-image
evaluation pools 10,000 x 20 x 24 x 24 values each round): on a channels-last batch of
256 x 20 x 24 x 24 it took 0.9-1.6 ms in float32 and 1.5 ms in bfloat16, where two
element-wise maxima over strided views take 0.4-0.7 ms (docs/speed.md). A maximum does no
arithmetic, so the values are the same bits (NaN propagates in both). Where a gradient is
needed, torch's kernel runs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaxPool2d", "max_pool2d"]


def _pair(value: Any) -> tuple[Any, Any]:
    return (value[0], value[1]) if isinstance(value, tuple | list) else (value, value)


def _is_plain_2x2(kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> bool:
    """Whether the pooling is 2x2 windows at stride 2, no padding, dilation 1, floor mode."""
    stride = kernel_size if stride is None or stride == [] else stride
    return (
        _pair(kernel_size) == (2, 2)
        and _pair(stride) == (2, 2)
        and _pair(padding) == (0, 0)
        and _pair(dilation) == (1, 1)
        and not ceil_mode
    )


def _max_2x2(x: torch.Tensor) -> torch.Tensor:
    # Rows first: one pass writes half the input, the second a quarter (three maxima of the
    # four corners wrote more and ran 5-8% slower in the HL-FashionMNIST evaluation). An odd
    # last row or column is dropped, as floor mode does.
    h, w = x.shape[-2] - x.shape[-2] % 2, x.shape[-1] - x.shape[-1] % 2
    rows = torch.maximum(x[..., 0:h:2, 0:w], x[..., 1:h:2, 0:w])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def max_pool2d(
    x: torch.Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """``F.max_pool2d`` (same arguments, same values), faster for 2x2 windows at stride 2 on
    4-D inputs that need no gradient; any other call is ``F.max_pool2d`` itself."""
    fast = (
        x.dim() == 4
        and min(x.shape[-2:]) >= 2  # smaller: torch's error, not an empty tensor
        and _is_plain_2x2(kernel_size, stride, padding, dilation, ceil_mode)
        # Training keeps torch's kernel: it returns the windows' indices in the same pass, and
        # an autograd function routing gradients by equality ran 5x slower forward and back.
        and not (torch.is_grad_enabled() and x.requires_grad)
    )
    return _max_2x2(x) if fast else F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` computed by :func:`max_pool2d` (the same values and gradients)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            return super().forward(input)  # type: ignore[no-any-return]
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
