"""Modality experts: every example is seen through several views; each peer holds one view.

The setting of UniCon / BiCSL (Sun & Ochiai, contrastive split learning across modalities):
``PeerSelectionConfig.modality_split`` cuts each image into ``modalities`` strips
(``"columns"``: left to right, so 2 are the left and the right half; ``"rows"``: top to
bottom), and ``modality_rule`` says which strip each peer holds of its examples (with the
label skew of the partition as usual). The travelling model is
:class:`~hlgym.models.experts.ModalityExperts`: an encoder per view, a shared projection and
learned class embeddings, trained with the InfoNCE loss between sample and class embeddings.

Images carry the views they hold in a presence channel (see :mod:`hlgym.models.experts`):
a peer's images have its strip and a mask of it; the reward's test images have every view
(the fused prediction), and the ``modality_accuracy`` info key measures the model on the
test images through each view alone.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from hlgym.envs.datasets import DeviceData
from hlgym.models.experts import MODALITY_SPLITS, split_size, strip_bounds

__all__ = ["MODALITY_SPLITS", "full_views", "modality_data", "split_size", "view"]


def full_views(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(n, c, h, w)`` as the modality experts read an example with every view:
    ``(n, c + 1, h, w)``, a last channel of ones (a new, contiguous tensor on ``x``'s device)."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1).contiguous()


def view(x: torch.Tensor, split: str, modalities: int, modality: int) -> torch.Tensor:
    """Examples in the experts' layout (:func:`full_views`) through the view ``modality``
    alone: every channel, the presence mask too, zeroed outside its strip (a new tensor)."""
    start, stop = strip_bounds(split_size(split, x.shape), modalities)[modality]
    mask = torch.zeros(x.shape[-2:], dtype=x.dtype, device=x.device)
    if split == "columns":
        mask[:, start:stop] = 1.0
    else:
        mask[start:stop, :] = 1.0
    return (x * mask).contiguous()


@functools.lru_cache(maxsize=8)
def modality_data(data: DeviceData, split: str, modalities: int) -> DeviceData:
    """``data`` with every image in the experts' layout, all views present (cached per process
    and setting), and ``eval_views``: the reward's test images through each view alone."""
    x_test = full_views(data.x_test)
    x_eval = x_test if data.x_eval is data.x_test else full_views(data.x_eval)
    return dataclasses.replace(
        data,
        x_train=full_views(data.x_train),
        x_test=x_test,
        x_eval=x_eval,
        eval_views=tuple(view(x_eval, split, modalities, m) for m in range(modalities)),
    )
