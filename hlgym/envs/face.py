"""EpisodeView: what an env shows of its episode, written once for every env face.

:class:`~hlgym.envs.PeerSelectionEnv`, :class:`~hlgym.envs.TaskDistributionEnv` (the current
task's episode) and a batched vector env's copies (:class:`~hlgym.envs.vector.EnvCopy`) show
the same read-only view: the route, the topology, the peers' main classes, and every
attribute a component exposes (``peer_domains``, a plug-in's own: each component's
``exposes``), read through :meth:`~hlgym.envs.Episode.exposed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hlgym.envs import components

if TYPE_CHECKING:
    from hlgym.envs.episode import Episode


class EpisodeView:
    """The read-only view of an episode; a face names its episode in :meth:`viewed`."""

    def viewed(self) -> Episode | None:
        """The episode this face shows (None before a task distribution's first reset)."""
        raise NotImplementedError

    @property
    def route(self) -> list[int]:
        """The holder after ``reset`` and after each round (empty before the first reset)."""
        episode = self.viewed()
        return [] if episode is None else episode.route

    @property
    def distances(self) -> np.ndarray | None:
        """Hop costs between peers [distance units]; None before the first reset of a
        ``euclidean`` topology, which each episode draws."""
        episode = self.viewed()
        return None if episode is None else episode.distances

    @property
    def positions(self) -> np.ndarray | None:
        """2-D positions of the peers for drawing (as :attr:`distances`)."""
        episode = self.viewed()
        return None if episode is None else episode.positions

    @property
    def main_classes(self) -> np.ndarray | None:
        """Each peer's most frequent class in this episode (None before the first reset)."""
        episode = self.viewed()
        return None if episode is None else episode.main_classes

    def __getattr__(self, name: str) -> Any:
        """A component's exposed attribute (``peer_domains``, ...)."""
        if name.startswith("_"):
            raise AttributeError(name)
        episode = self.viewed()
        if episode is None:
            if name in components.EXPOSED:
                return None
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return episode.exposed(name)
