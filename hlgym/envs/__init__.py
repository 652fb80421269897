"""The environment and what it is built from."""

from hlgym.envs.batched import BatchedPeerSelectionVecEnv, BatchedPeerSelectionVectorEnv
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import DataNotFoundError, Dataset, load_dataset
from hlgym.envs.peer_selection import PeerSelectionEnv
from hlgym.envs.registration import PRESETS

__all__ = [
    "PRESETS",
    "BatchedPeerSelectionVecEnv",
    "BatchedPeerSelectionVectorEnv",
    "DataNotFoundError",
    "Dataset",
    "PeerSelectionConfig",
    "PeerSelectionEnv",
    "load_dataset",
]
