"""The component interface: what a scenario, a fault or a transfer mode adds to an episode.

A component is a class. Its config fields live in a frozen dataclass that derives from
:class:`~hlgym.envs.fields.CoreFields` (the registry puts them into
:class:`~hlgym.envs.PeerSelectionConfig`); a plug-in component brings a ``params_type``
instead (its own dataclass, filled from the config's ``components`` entry). For a config,
the registry picks the active components in a fixed order; every :class:`~hlgym.envs.Episode`
then holds one instance of each and calls their hooks at fixed points:

========================  ===================================================================
hook                      when (``RoundRunner``'s order; every component in the registry order)
========================  ===================================================================
``validate`` (class)      at config construction, for an active plug-in (a built-in's fields
                          are checked by its module's ``validate``, active or not)
``prepare_data`` (class)  once per process and setting, on the shared data
``pool_request`` (class)  at env construction: the unassigned samples it draws from
``begin``                 at reset, after the core's draws (seed, partition, probes' rows,
                          topology); its own draws from the episode's RNG; it may replace
                          ``peer_x`` / ``peer_y`` (the probes are gathered after every
                          component's ``begin``)
``measure`` (class)       after each evaluation (reset and every round), batched over the
                          episodes of one runner
``hop``                   on a hop to another peer: extra bytes, and whether the hop fails
``shape``                 the round's :class:`Training` (labels, loss terms, hooks)
``before_train`` /        around the local training of a job whose ``hooks`` name it
``after_train``
``probe`` (class)         in the probe phase (``peer_features``), batched over the episodes
``after_round``           after the round is scored, before the observation (draws allowed)
``column``                each of its observation ``columns`` (one value per peer)
``info``                  adds its keys to ``reset``'s and ``step``'s info
``colours`` / ``decorate``  the ``rgb_array`` render: how peers are coloured, overlays
========================  ===================================================================

Hooks that draw random numbers take the episode's RNG; a component that draws only when it
is active leaves every other setting's episodes unchanged, which is why a new component goes
after the built-ins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import torch

from hlgym.envs.datasets import DeviceData
from hlgym.models.work import Alignment, ModelFactory, ModelWork

BYTES_PER_PARAM = 4  # float32 values travel (weights, logits, images)


class Move(NamedTuple):
    """One round's dispatch: who held the model, where it was sent, the hop paid."""

    prev: int
    peer: int
    hop: float
    delivered: bool
    link_failed: bool = False


class Training(NamedTuple):
    """A round's local training: which of the episode's model slots trains, with which
    optimizer state, on which data, and what it absorbs first.

    ``source`` is the slot of the arriving model in the modes where every peer keeps its own
    (None in the relay), ``public_x`` the public inputs the arriving logits are on,
    ``align`` an extra loss term over target images, and ``hooks`` the components whose
    ``before_train`` / ``after_train`` run around this job.
    """

    slot: int
    state: int
    x: torch.Tensor
    y: torch.Tensor
    source: int | None = None
    public_x: torch.Tensor | None = None
    align: Alignment | None = None
    hooks: tuple[Component, ...] = ()


class ProbeStats(NamedTuple):
    """What the observation reads of the current model on each peer's probe."""

    loss: np.ndarray
    """Mean cross-entropy per peer [nats]."""
    accuracy: np.ndarray
    """Accuracy per peer."""

    @classmethod
    def means(cls, loss: torch.Tensor, hits: torch.Tensor, starts: np.ndarray) -> ProbeStats:
        """Per-peer means of the probe samples' loss and correctness; peer ``i``'s rows start
        at ``starts[i]`` (an episode's ``probe_starts``)."""
        counts = np.diff(np.append(starts, loss.shape[0]))
        probe_loss = np.add.reduceat(loss.cpu().numpy(), starts) / counts
        return cls(probe_loss, np.add.reduceat(hits.cpu().numpy(), starts) / counts)


class EpisodeState(Protocol):
    """What a component may read (and, where marked, replace) of its episode."""

    config: Any
    """The episode's :class:`~hlgym.envs.PeerSelectionConfig`."""
    data: DeviceData
    """The shared data on the device (after every component's ``prepare_data``)."""
    peer_indices: list[np.ndarray]
    """Each peer's training samples (indices into the training split), drawn at reset."""
    peer_x: list[torch.Tensor]
    """Each peer's images as it holds them (a component's ``begin`` may replace them)."""
    peer_y: list[torch.Tensor]
    """Each peer's labels (a component's ``begin`` may replace them)."""
    probe_x: torch.Tensor
    """Every peer's probe images, peer after peer (``probe_starts``), after ``begin``."""
    probe_y: torch.Tensor
    """Their labels."""
    probe_starts: np.ndarray
    """Where each peer's rows start in ``probe_x``."""
    online: np.ndarray
    """The action mask: peers that can receive the model next round (a component may clear
    entries in ``after_round``; the holder stays online)."""
    holder: int
    round: int
    route: list[int]
    n_params: int
    """Scalar parameters of the model."""
    generator: torch.Generator
    """The episode's torch generator (initial weights, batch order, corruption noise)."""

    def unassigned(self) -> np.ndarray:
        """Training samples no peer holds this episode."""
        ...


class Component:
    """A part of an episode: see the module docstring for the hooks and their order.

    Args:
        episode: The episode the instance belongs to (one instance per episode object).
        params: A plug-in component's parameters (an instance of ``params_type``); None for
            the built-ins, which read their config fields.
    """

    name: ClassVar[str] = ""
    """The name a config's ``components`` entry or a legend uses."""
    columns: ClassVar[tuple[str, ...]] = ()
    """Observation columns it adds to ``peer_features`` (after the core's, in order)."""
    exposes: ClassVar[tuple[str, ...]] = ()
    """Attributes of the instance that the env shows (``env.unwrapped.<name>``)."""
    params_type: ClassVar[type | None] = None
    """A plug-in component's parameters: a dataclass built from the config entry's keys."""

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        self.episode = episode
        self.config = episode.config
        self.params = params

    # ------------------------------------------------------------------ config level

    @classmethod
    def active(cls, config: Any) -> bool:
        """Whether a config with these fields uses the component."""
        return True

    @classmethod
    def validate(cls, config: Any) -> None:
        """Check the component's fields (raise ``ValueError`` via :mod:`hlgym.envs.checks`)."""

    @classmethod
    def prepare_data(cls, config: Any, data: DeviceData) -> DeviceData:
        """The shared data as this component needs it (called while the data loads)."""
        return data

    @classmethod
    def model_factory(cls, config: Any) -> ModelFactory | None:
        """A model of its own in place of ``config.model``'s network (None: no change)."""
        return None

    @classmethod
    def pool_request(cls, config: Any) -> tuple[str, int] | None:
        """``(field, samples)`` it draws from the training samples no peer holds, checked
        against that pool when the env is built."""
        return None

    @classmethod
    def absent(cls, name: str, episode: EpisodeState) -> Any:
        """The value of an exposed attribute in an episode whose config does not use the
        component (what a fresh instance holds before its first ``begin``, by default)."""
        return getattr(cls(episode), name)

    # ------------------------------------------------------------------ model side, batched

    @classmethod
    def measure(cls, models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> None:
        """After each evaluation: ``parts`` (this class's instance of each episode) and the
        slots of their scored models."""

    @classmethod
    def probe(cls, models: ModelWork, slots: Sequence[int], parts: Sequence[Component]) -> None:
        """In the probe phase of ``peer_features`` episodes, as :meth:`measure`."""

    # ------------------------------------------------------------------ episode side

    def begin(self, rng: np.random.Generator) -> None:
        """The component's draws at reset (after the core's)."""

    def hop(self, prev: int, peer: int, rng: np.random.Generator) -> tuple[int, bool]:
        """A hop to another peer: ``(extra bytes sent, whether the hop fails)``."""
        return 0, False

    def shape(self, training: Training, move: Move) -> Training:
        """The round's training job as this component changes it."""
        return training

    def before_train(self, models: ModelWork, slot: int) -> Any:
        """Before a job that names this component in ``hooks`` trains; returns what
        :meth:`after_train` needs."""
        return None

    def after_train(self, models: ModelWork, slot: int, saved: Any, generator: torch.Generator) -> None:
        """After that job trained."""

    def after_round(self, rng: np.random.Generator) -> None:
        """After the round is scored (draws for the next round allowed)."""

    def column(self, name: str) -> np.ndarray:
        """One of its ``columns``, a value in [0, 1] per peer."""
        raise NotImplementedError(f"{type(self).__name__} declares the column {name!r} but does not build it")

    def info(self, out: dict[str, Any]) -> None:
        """Add its keys to an info dict."""

    def colours(self) -> tuple[np.ndarray, str, float] | None:
        """How the render colours the peers: ``(values, colormap, largest value)``; the first
        component that returns one wins over the main class."""
        return None

    def decorate(self, ax: Any, positions: np.ndarray) -> None:
        """Draw overlays on the render's matplotlib axes (the peers at ``positions``)."""
