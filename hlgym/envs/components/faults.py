"""Faults of the network: peers that go offline, links that fail.

``offline_prob``: :class:`OfflinePeers`
    After every round each peer but the holder is offline for the next one with this chance
    (the action mask says which); sending the model to an offline peer pays the hop and
    trains nothing.
``link_failure_prob``: :class:`LinkFailures`
    A hop to another peer fails with this chance (a draw per hop): the hop is paid, nothing
    arrives, the holder keeps the model (``info["delivered"]`` is False).

Peers that corrupt what they return are a component of their own (its module is next to this one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hlgym.envs import checks
from hlgym.envs.components.base import Component
from hlgym.envs.fields import CoreFields


@dataclass(frozen=True)
class FaultFields(CoreFields):
    """The fields of the network's faults."""

    offline_prob: float = 0.0
    """Chance that a peer is offline in a round (never the holder); sending the model to
    an offline peer fails: the hop is paid, nothing trains. In [0, 1)."""
    link_failure_prob: float = 0.0
    """Chance that a hop to another peer fails: the hop is paid, nothing arrives, the holder
    keeps the model (``info["delivered"]`` is False). In [0, 1)."""


def validate(cfg: FaultFields) -> None:
    """Check the fault fields."""
    checks.real(cfg, "offline_prob", "a number in [0, 1)", lambda v: 0 <= v < 1)
    checks.real(cfg, "link_failure_prob", "a number in [0, 1)", lambda v: 0 <= v < 1)


class OfflinePeers(Component):
    """Peers offline for a round, drawn after every round (the holder stays online)."""

    name = "offline_peers"

    @classmethod
    def active(cls, config: Any) -> bool:
        return bool(config.offline_prob > 0)

    def after_round(self, rng: np.random.Generator) -> None:
        ep = self.episode
        ep.online = rng.random(self.config.n_peers) >= self.config.offline_prob
        ep.online[ep.holder] = True


class LinkFailures(Component):
    """A hop to another peer fails with ``link_failure_prob``."""

    name = "link_failures"

    @classmethod
    def active(cls, config: Any) -> bool:
        return bool(config.link_failure_prob > 0)

    def hop(self, prev: int, peer: int, rng: np.random.Generator) -> tuple[int, bool]:
        return 0, bool(rng.random() < self.config.link_failure_prob)
