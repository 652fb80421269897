"""Domain shift: every peer's images are rendered in a style (a *domain*), the test set in
an unseen *target domain*.

The setting of FedKA (Sun, Chong & Ochiai, "Feature distribution matching for federated
domain generalization", ACML 2022), shaped as DomainBed's RotatedMNIST: the same classes
under a transform whose level names the domain. ``PeerSelectionConfig.domain_shift`` picks
the transform, ``source_domains`` the levels peers hold, ``target_domain`` the level the
reward's test images are in, ``domain_rule`` how peers get their levels (:func:`~hlgym.envs.scenarios.assign_peers`).

Transforms (``level`` is the domain's value), on the images' device:

``rotate``
    Rotation by ``level`` degrees (counter-clockwise, bilinear, zero fill).
``invert``
    ``(1 - level) * x + level * (1 - x)``: 0 is the original, 1 the negative. In [0, 1].
``noise``
    Additive Gaussian noise of standard deviation ``level``, clipped to [0, 1]. >= 0.
``blur``
    Gaussian blur of standard deviation ``level`` pixels. >= 0.
``thicken``
    Strokes dilated by ``level`` pixels (a max over a ``2 * level + 1`` square). An integer >= 0.

Only ``noise`` draws random numbers: from the generator it is given (the episode's for the
peers' images; a fixed seed for the target test set, which is a data set, not episode
randomness).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from hlgym.envs.datasets import DeviceData

DOMAIN_SHIFTS = ("rotate", "invert", "noise", "blur", "thicken")
ALIGNMENTS = ("none", "mmd")


def check_level(shift: str, level: object) -> str | None:
    """Why ``level`` is not a domain of ``shift`` (None if it is)."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level):
        return "a finite number"
    if shift == "invert" and not 0 <= level <= 1:
        return "a number in [0, 1] (the share of the negative)"
    if shift in ("noise", "blur") and level < 0:
        return "a number >= 0"
    if shift == "thicken" and (level < 0 or level != int(level)):
        return "an integer >= 0 (pixels of dilation)"
    return None


def apply_shift(
    x: torch.Tensor,
    shift: str,
    level: float,
    generator: torch.Generator,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """``x`` ``(n, c, h, w)`` in [0, 1] rendered in domain ``level`` of ``shift`` (a new
    tensor on ``x``'s device).

    Args:
        x: Images in [0, 1].
        shift: One of :data:`DOMAIN_SHIFTS`.
        level: The domain (see the module docstring for each shift's unit).
        generator: A CPU generator; only ``noise`` draws from it.
        memory_format: The layout of the result (the models' layout).
    """
    if shift == "rotate":
        out = _rotate(x, float(level))
    elif shift == "invert":
        out = (1.0 - level) * x + level * (1.0 - x)
    elif shift == "noise":
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        out = (x + float(level) * noise).clamp_(0.0, 1.0)
    elif shift == "blur":
        out = _blur(x, float(level))
    elif shift == "thicken":
        r = int(level)
        out = F.max_pool2d(x, 2 * r + 1, stride=1, padding=r) if r > 0 else x.clone()
    else:
        raise ValueError(f"domain_shift={shift!r} is not known; accepted: {', '.join(DOMAIN_SHIFTS)}")
    return out.contiguous(memory_format=memory_format)


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    if degrees == 0:
        return x.clone()
    a = math.radians(degrees)
    # affine_grid maps each output pixel to where it samples the input, in (x right, y down)
    # coordinates: sampling at R(-a) of the output turns the picture by a counter-clockwise
    # as it is displayed (torch.rot90's sense; tests/test_scenarios.py).
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x.contiguous(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma == 0:
        return x.clone()
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    c = x.shape[1]
    # Separable: a row pass then a column pass, one filter per channel; zero padding.
    h = F.conv2d(x.contiguous(), k1.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(h, k1.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


@functools.lru_cache(maxsize=8)
def target_data(data: DeviceData, shift: str, level: float) -> DeviceData:
    """``data`` with its test images (``x_test``, ``x_eval``) in the target domain (cached per
    process and setting). ``noise`` draws from a fixed seed: the target test set is a data
    set, the same in every episode."""
    fmt = data.memory_format
    x_test = apply_shift(data.x_test, shift, level, torch.Generator().manual_seed(0), fmt)
    x_eval = x_test
    if data.x_eval is not data.x_test:
        x_eval = apply_shift(data.x_eval, shift, level, torch.Generator().manual_seed(1), fmt)
    return dataclasses.replace(data, x_test=x_test, x_eval=x_eval)
