"""hlgym's 2x2 max-pooling (hlgym/models/pooling.py): torch's values bit for bit, in every
layout, size, dtype and special value; torch's own kernel wherever a gradient is needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hlgym.models.cnn import HLCNN
from hlgym.models.pooling import MaxPool2d, max_pool2d


def inputs(shape: tuple[int, ...], dtype: torch.dtype, layout: torch.memory_format, ties: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # Values in {-2..2} put ties in most windows (as an image's blank background does).
    x = torch.randint(-2, 3, shape, generator=g).to(dtype) if ties else torch.randn(shape, generator=g).to(dtype)
    return x.contiguous(memory_format=layout)


@pytest.mark.parametrize("shape", [(8, 20, 24, 24), (3, 5, 25, 27), (4, 1, 9, 8), (2, 3, 2, 3)])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("ties", [True, False], ids=["ties", "distinct"])
def test_values_and_layout_are_torchs(
    shape: tuple[int, ...], layout: torch.memory_format, dtype: torch.dtype, ties: bool
) -> None:
    x = inputs(shape, dtype, layout, ties)
    with torch.inference_mode():
        mine, theirs = max_pool2d(x, 2), F.max_pool2d(x, 2)
    assert torch.equal(mine, theirs) and mine.dtype == theirs.dtype
    # The next convolution's algorithm (so its bits) follows its input's strides.
    assert mine.stride() == theirs.stride()


def test_an_input_too_small_gets_torchs_error() -> None:
    x = torch.zeros(2, 3, 1, 5)
    with pytest.raises(RuntimeError) as theirs:
        F.max_pool2d(x, 2)
    with pytest.raises(RuntimeError) as mine:
        max_pool2d(x, 2)
    assert str(mine.value) == str(theirs.value)


def test_nan_and_infinities_are_torchs() -> None:
    x = torch.randn(2, 3, 6, 6)
    x[0, 0, 0, 1] = float("nan")
    x[0, 1, 2:4, 2:4] = float("-inf")
    x[1, 2, 4, 5] = float("inf")
    mine, theirs = max_pool2d(x, 2), F.max_pool2d(x, 2)
    assert torch.equal(mine.isnan(), theirs.isnan()) and mine.isnan().sum() == 1
    finite = ~theirs.isnan()
    assert torch.equal(mine[finite], theirs[finite])


@pytest.mark.parametrize(
    "options",
    [
        {"kernel_size": 2},
        {"kernel_size": 2, "stride": 2},
        {"kernel_size": (2, 2), "stride": [2, 2], "padding": (0, 0), "dilation": (1, 1)},
        {"kernel_size": 3},
        {"kernel_size": 2, "stride": 1},
        {"kernel_size": 2, "padding": 1},
        {"kernel_size": 2, "ceil_mode": True},
        {"kernel_size": 2, "dilation": 2},
    ],
)
def test_every_pooling_matches_torchs_with_and_without_gradients(options: dict[str, Any]) -> None:
    x = inputs((2, 4, 11, 12), torch.float32, torch.channels_last, ties=True)
    with torch.no_grad():
        assert torch.equal(max_pool2d(x, **options), F.max_pool2d(x, **options))
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_mine, out_theirs = max_pool2d(mine, **options), F.max_pool2d(theirs, **options)
    weight = torch.randn(out_theirs.shape, generator=torch.Generator().manual_seed(1))
    (grad_mine,) = torch.autograd.grad((out_mine * weight).sum(), mine)
    (grad_theirs,) = torch.autograd.grad((out_theirs * weight).sum(), theirs)
    assert torch.equal(out_mine, out_theirs)
    # Ties go where torch's kernel sends them (it runs whenever a gradient is needed).
    assert torch.equal(grad_mine, grad_theirs)


def test_the_module_keeps_nn_maxpool2ds_interface() -> None:
    x = inputs((2, 3, 8, 8), torch.float32, torch.contiguous_format, ties=True)
    pool = MaxPool2d(2, return_indices=True)
    assert isinstance(pool, nn.MaxPool2d)
    out, indices = pool(x)
    expected, expected_indices = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(out, expected) and torch.equal(indices, expected_indices)


def test_the_reference_cnn_evaluates_as_with_torchs_pooling() -> None:
    model = HLCNN((1, 28, 28), 10).eval()
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    with_torchs = copy.deepcopy(model)
    for i in (1, 4):
        with_torchs.features[i] = nn.MaxPool2d(2)
    # A blank border, as Fashion-MNIST's: the first convolution's outputs tie there.
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 6:22, 6:22] = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(model(x), with_torchs(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(x), with_torchs(x))
