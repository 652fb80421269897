"""Domain shift: every peer's images are rendered in a style (a *domain*), the test set in
an unseen *target domain*.

The setting of FedKA (Sun, Chong & Ochiai, "Feature distribution matching for federated
domain generalization", ACML 2022), shaped as DomainBed's RotatedMNIST: the same classes
under a transform whose level names the domain. ``PeerSelectionConfig.domain_shift`` picks
the transform, ``source_domains`` the levels peers hold, ``target_domain`` the level the
reward's test images are in, ``domain_rule`` how peers get their levels
(:func:`~hlgym.envs.components.groups.assign_peers`). ``target_domain="mixed"`` renders the test
images in the source domains instead, in turn (image ``i`` in ``source_domains[i % k]``): the
reward then asks for a model that covers every peer's domain, not one that transfers to an
unseen one. :class:`DomainShift` is the component:
the peers' domains and the target images drawn per episode, the ``target_distance`` column,
FedKA's MMD alignment as a loss term, the domains' colours in the render.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hlgym.envs import checks
from hlgym.envs.components.base import BYTES_PER_PARAM, Component, EpisodeState, Move, Training
from hlgym.envs.components.groups import PEER_RULES, assign_peers
from hlgym.envs.datasets import DeviceData
from hlgym.envs.fields import CoreFields
from hlgym.models.loss import mmd
from hlgym.models.work import Alignment, ModelWork

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


MIXED = "mixed"  # target_domain: the test images in the source domains, in turn


def render_target(
    x: torch.Tensor,
    shift: str,
    target: float | str,
    sources: tuple[float, ...],
    generator: torch.Generator,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """``x`` rendered in the target domain: :func:`apply_shift` at level ``target``, or, for
    ``target="mixed"``, row ``i`` at level ``sources[i % len(sources)]``."""
    if target != MIXED:
        return apply_shift(x, shift, float(target), generator, memory_format)
    out = torch.empty_like(x).contiguous(memory_format=memory_format)
    for k, level in enumerate(sources):
        rows = torch.arange(k, x.shape[0], len(sources), device=x.device)
        out[rows] = apply_shift(x[rows], shift, float(level), generator, memory_format)
    return out


@functools.lru_cache(maxsize=8)
def target_data(data: DeviceData, shift: str, target: float | str, sources: tuple[float, ...]) -> DeviceData:
    """``data`` with its test images (``x_test``, ``x_eval``) in the target domain (cached per
    process and setting; ``sources`` matter only for ``target="mixed"``). ``noise`` draws
    from a fixed seed: the target test set is a data set, the same in every episode."""
    fmt = data.memory_format
    x_test = render_target(data.x_test, shift, target, sources, torch.Generator().manual_seed(0), fmt)
    x_eval = x_test
    if data.x_eval is not data.x_test:
        x_eval = render_target(data.x_eval, shift, target, sources, torch.Generator().manual_seed(1), fmt)
    return dataclasses.replace(data, x_test=x_test, x_eval=x_eval)


@dataclass(frozen=True)
class DomainShiftFields(CoreFields):
    """The fields of the domain-shift scenario (README "Scenarios")."""

    domain_shift: str | None = None
    """None (the images as the data set has them), or the transform whose level names a
    domain: ``"rotate"`` [degrees], ``"invert"`` [share of the negative, 0..1], ``"noise"``
    [standard deviation], ``"blur"`` [pixels of standard deviation], ``"thicken"`` [pixels]."""
    source_domains: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0)
    """``domain_shift``: the domains (levels) the peers' training images are in; distinct."""
    target_domain: float | str = 75.0
    """``domain_shift``: the domain of the test images the reward uses, not a source domain;
    or ``"mixed"``: the test images (and the starter's unlabeled target images) in the source
    domains in turn, so the reward asks for a model that knows every peer's domain."""
    domain_rule: str = "cycle"
    """``domain_shift``: which source domain a peer holds: ``"cycle"`` (peer i holds
    ``source_domains[i % k]``), ``"blocks"`` (runs of neighbouring indices share one) or
    ``"random"`` (drawn per episode)."""
    target_samples: int = 64
    """``domain_shift``: unlabeled target-domain images (training images no peer holds, drawn
    per episode) that the starter holds: the observation's ``target_distance`` reads them and
    ``alignment="mmd"`` trains on them. At least 1, at most the unassigned pool."""
    alignment: str = "none"
    """``domain_shift``: ``"none"``, or ``"mmd"``: FedKA's knowledge alignment, the target
    images travel with the model (their bytes count once, on the first hop away from the
    starter) and local training adds ``alignment_weight`` times the multi-kernel MMD between
    the penultimate features of each batch and of the target images."""
    alignment_weight: float = 1.0
    """``alignment="mmd"``: weight of the MMD term in the local loss. >= 0."""


def validate(cfg: DomainShiftFields) -> None:
    """Check the domain-shift fields (the rules and sizes with or without a shift)."""
    shift = cfg.domain_shift
    if shift is not None:
        checks.choice(cfg, "domain_shift", DOMAIN_SHIFTS)
    checks.choice(cfg, "domain_rule", PEER_RULES)
    checks.integer(cfg, "target_samples", 1)
    checks.choice(cfg, "alignment", ALIGNMENTS)
    checks.real(cfg, "alignment_weight", "a number >= 0", lambda v: v >= 0)
    sources = cfg.source_domains
    if not isinstance(sources, tuple) or not sources:
        checks.fail("source_domains", sources, "a non-empty list of domains (numbers)")
    if shift is None:
        if cfg.alignment != "none":
            checks.fail(
                "alignment", cfg.alignment, "'none' without a domain_shift (there is no target domain to align to)"
            )
        return
    for level in sources:
        why = check_level(shift, level)
        if why is not None:
            checks.fail("source_domains", list(sources), f"a list of domains of {shift!r}, each {why}")
    if len(set(sources)) != len(sources):
        checks.fail("source_domains", list(sources), "distinct domains")
    if cfg.target_domain == MIXED:
        return
    why = check_level(shift, cfg.target_domain)
    if why is not None:
        checks.fail("target_domain", cfg.target_domain, f"a domain of {shift!r} ({why}) or {MIXED!r}")
    if cfg.target_domain in sources:
        checks.fail(
            "target_domain",
            cfg.target_domain,
            f"a domain that is not a source (source_domains={list(sources)}): the target must be unseen",
        )


class DomainShift(Component):
    """Each peer's images in a source domain, the reward's test set in the target domain."""

    name = "domain_shift"
    switch = "domain_shift"  # the field that turns the scenario on
    title = "domain shift"
    columns = ("target_distance",)
    # sqrt(MMD^2 / 2) between the current model's penultimate features on the peer's probe
    # and on the target-domain images (hlgym.models.loss.mmd), in [0, 1].
    exposes = ("peer_domains", "target_indices", "target_x")

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.peer_domains: np.ndarray | None = None
        """Each peer's domain (its level, e.g. degrees) this episode."""
        self.target_indices = np.zeros(0, dtype=np.int64)
        """The unlabeled target images' training samples (held by no peer)."""
        self.target_x = episode.data.x_train[:0]
        """Those images in the target domain."""
        self.distance = np.zeros(0)
        """The ``target_distance`` column of the last probe phase."""
        self._targets_sent = False  # alignment="mmd": the target images have left the starter

    @classmethod
    def active(cls, config: Any) -> bool:
        return config.domain_shift is not None

    @classmethod
    def prepare_data(cls, config: Any, data: DeviceData) -> DeviceData:
        return target_data(data, config.domain_shift, config.target_domain, config.source_domains)

    @classmethod
    def pool_request(cls, config: Any) -> tuple[str, int] | None:
        return "target_samples", int(config.target_samples)

    def begin(self, rng: np.random.Generator) -> None:
        """Draw the peers' domains and the target images; render the peers' images in their
        domains and the target images in the target domain."""
        cfg, ep, data = self.config, self.episode, self.episode.data
        sources = np.asarray(cfg.source_domains, dtype=np.float64)
        self.peer_domains = sources[assign_peers(cfg.domain_rule, cfg.n_peers, sources.size, rng, "domain_rule")]
        self.target_indices = rng.choice(ep.unassigned(), size=cfg.target_samples, replace=False)
        # The transforms' own draws (noise) come from a generator seeded here, on the device.
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        shift, fmt = cfg.domain_shift, data.memory_format
        ep.peer_x = [
            apply_shift(x, shift, float(level), generator, fmt)
            for x, level in zip(ep.peer_x, self.peer_domains, strict=True)
        ]
        target = data.x_train[torch.from_numpy(self.target_indices).to(data.x_train.device)]
        self.target_x = render_target(target, shift, cfg.target_domain, cfg.source_domains, generator, fmt)
        self._targets_sent = False

    def hop(self, prev: int, peer: int, rng: np.random.Generator) -> tuple[int, bool]:
        """With ``alignment="mmd"`` the target images (float32) leave the starter once."""
        if self._targets_sent:
            return 0, False
        self._targets_sent = True
        if self.config.alignment != "mmd":
            return 0, False
        return self.config.target_samples * int(np.prod(self.episode.data.input_shape)) * BYTES_PER_PARAM, False

    def shape(self, training: Training, move: Move) -> Training:
        if self.config.alignment != "mmd":
            return training
        return training._replace(align=Alignment(self.config.alignment_weight, self.target_x))

    @classmethod
    def probe(cls, models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> None:
        """The scored models' features on each episode's probes and target images, in one call."""
        shifted = [p for p in parts if isinstance(p, DomainShift)]
        outputs = models.outputs(list(slots) * 2, [p.episode.probe_x for p in shifted] + [p.target_x for p in shifted])
        k = len(shifted)  # outputs: every episode's probes, then their targets'
        for m, part in enumerate(shifted):
            part.distance = part.target_distance(outputs[m][1], outputs[k + m][1])

    def target_distance(self, features: torch.Tensor, target_features: torch.Tensor) -> np.ndarray:
        """Each peer's distance to the target domain: the MMD between the penultimate
        ``features`` of its probe rows and the ``target_features``, as sqrt(MMD^2 / 2)."""
        starts = self.episode.probe_starts
        counts = np.diff(np.append(starts, features.shape[0]))
        squared = torch.empty(counts.size, dtype=features.dtype, device=features.device)
        for count in np.unique(counts):  # peers with as many probe samples in one batched call
            peers = np.flatnonzero(counts == count)
            rows = torch.from_numpy((starts[peers, None] + np.arange(count)).reshape(-1)).to(features.device)
            probe = features[rows].view(peers.size, int(count), -1)
            target = target_features.expand(peers.size, *target_features.shape)
            squared[torch.from_numpy(peers).to(features.device)] = mmd(probe, target)
        squared = squared.clamp_min(0.0)
        # MMD^2 of kernels in (0, 1] lies in [0, 2]: the column is its root over sqrt(2).
        column: np.ndarray = (squared / 2).sqrt().clamp_max(1.0).cpu().numpy()
        return column

    def column(self, name: str) -> np.ndarray:
        return self.distance

    def colours(self) -> tuple[np.ndarray, str, float] | None:
        """By domain, light to dark in the order of ``source_domains``."""
        if self.peer_domains is None:
            return None
        index = np.array([self.config.source_domains.index(d) for d in self.peer_domains])
        return index, "viridis", float(max(len(self.config.source_domains) - 1, 1))
