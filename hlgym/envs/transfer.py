"""Knowledge transfer between peers, and the corruption byzantine peers return.

What travels from the holder to the receiver, and how the receiver absorbs it
(``PeerSelectionConfig.transfer``):

``relay`` (HL's method, the default)
    One model travels; the receiver trains it on its data. The episode uses one model slot.
``average``
    Every peer keeps its own model (all start from the same seed-drawn weights). The holder
    sends its model; the receiver sets its own to ``transfer_mix * arriving +
    (1 - transfer_mix) * own``, trains it, and becomes the holder.
``distill``
    Every peer keeps its own model. The arriving model is a frozen teacher: the receiver
    trains its own on its data with cross-entropy plus ``distill_weight * T^2 *
    KL(teacher || student)`` at temperature ``T = distill_temperature`` (Hinton, Vinyals &
    Dean 2015), or with ``distill_on="features"`` plus ``distill_weight`` times the mean
    squared error between the two models' penultimate features.
``logits``
    No weights travel: the holder sends its logits on a public unlabeled set
    (``public_samples`` training images no peer holds, drawn per episode). The receiver
    first fits them (``distill_weight * T^2 * KL`` alone, ``local_epochs`` passes over the
    public set), then trains on its data. A hop moves ``public_samples * n_classes * 4``
    bytes instead of ``n_params * 4``.

In every mode the reward, the probes and ``full_test_accuracy`` read the holder's model.
Staying (the action is the holder) trains the holder's own model; nothing arrives.

A byzantine receiver (``byzantine_peers``) corrupts what it returns after its local
training: ``noise`` adds Gaussian noise of standard deviation ``byzantine_scale`` to every
weight, ``sign_flip`` returns the model moved by minus its local update (``before -
(after - before)``), and ``label_flip`` trains on labels shifted by a per-peer class offset
(:class:`~hlgym.envs.episode.Episode` hands it those labels; nothing happens here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from hlgym.models.work import Distillation, ModelWork

if TYPE_CHECKING:
    from hlgym.envs.config import PeerSelectionConfig

TRANSFERS = ("relay", "average", "distill", "logits")
PER_PEER = ("average", "distill", "logits")  # the modes in which every peer keeps a model
DISTILL_ON = ("logits", "features")
BYZANTINE_MODES = ("noise", "sign_flip", "label_flip")


def absorb(
    models: ModelWork,
    slot: int,
    source: int | None,
    public_x: torch.Tensor | None,
    config: PeerSelectionConfig,
) -> Distillation | None:
    """Bring the arriving knowledge into ``slot`` before its local training.

    Args:
        models: The model work holding both slots.
        slot: The receiver's model.
        source: The holder's model (the arriving one); None in the relay.
        public_x: ``logits``: the episode's public inputs.
        config: The episode's settings (mode, mix, distillation).

    Returns:
        The distillation of the receiver's training job (``distill``, ``logits``), else None.
    """
    mode = config.transfer
    if source is None or mode == "relay":
        return None
    if mode == "average":
        mix = config.transfer_mix
        models.set_flat(slot, mix * models.flat(source) + (1 - mix) * models.flat(slot))
        return None
    if mode == "distill":
        return Distillation(config.distill_weight, config.distill_temperature, config.distill_on, teacher=source)
    assert public_x is not None, "the logits mode needs the episode's public set"
    ((public_logits, _),) = models.outputs([source], [public_x])
    return Distillation(
        config.distill_weight, config.distill_temperature, "logits", public_x=public_x, public_logits=public_logits
    )


def corrupt(
    models: ModelWork,
    slot: int,
    mode: str,
    before: torch.Tensor | None,
    scale: float,
    generator: torch.Generator,
) -> None:
    """What a byzantine peer returns after training ``slot`` (``noise`` or ``sign_flip``).

    Args:
        models: The model work.
        slot: The model the byzantine peer trained.
        mode: ``"noise"`` or ``"sign_flip"``.
        before: ``sign_flip``: the slot's flat weights before the local training.
        scale: ``noise``: standard deviation of the noise [weight units].
        generator: The episode's generator (the noise is drawn on the CPU, so a CUDA run
            draws what a CPU run draws).
    """
    after = models.flat(slot)
    if mode == "noise":
        noise = torch.randn(after.shape, generator=generator, dtype=after.dtype)
        models.set_flat(slot, after + scale * noise.to(after.device))
    elif mode == "sign_flip":
        assert before is not None, "sign_flip needs the weights before the local training"
        models.set_flat(slot, before - (after - before))
    else:
        raise ValueError(f"byzantine_mode={mode!r} has no weight corruption; accepted: 'noise', 'sign_flip'")
