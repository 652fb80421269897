"""The environment and what it is built from (Gymnasium, torch and numpy only).

The parts that vary between settings are components (:mod:`hlgym.envs.components`): the
transfer modes, offline peers, link failures, byzantine peers, the domain-shift and
modality-experts scenarios, and any user's own (:class:`Component`, named in a config's
``components``; docs/components.md).
"""

from hlgym.envs.components import Component, register
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import DataNotFoundError, Dataset, load_dataset
from hlgym.envs.episode import Episode, ResetNeededError
from hlgym.envs.peer_selection import PeerSelectionEnv
from hlgym.envs.registration import PRESETS
from hlgym.envs.task_distribution import TaskDistributionEnv
from hlgym.envs.tasks import TaskFamily, TaskSpec
from hlgym.envs.vector import BatchedPeerSelectionVectorEnv

__all__ = [
    "PRESETS",
    "BatchedPeerSelectionVectorEnv",
    "Component",
    "DataNotFoundError",
    "Dataset",
    "Episode",
    "PeerSelectionConfig",
    "PeerSelectionEnv",
    "ResetNeededError",
    "TaskDistributionEnv",
    "TaskFamily",
    "TaskSpec",
    "load_dataset",
    "register",
]
