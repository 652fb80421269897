"""Meta-policies and how they are judged (the records: :mod:`hlgym.records`, re-exported here)."""

from hlgym.agents.base import Agent, evaluate, run_episode
from hlgym.agents.baselines import (
    BASELINES,
    FixedPeerAgent,
    GreedyNearestAgent,
    LookaheadAgent,
    PowerOfChoiceAgent,
    RandomAgent,
    RoundRobinAgent,
    StayAgent,
    best_fixed_peer,
)
from hlgym.agents.hl_dqn import HLDQNAgent
from hlgym.agents.oracle import OracleAgent
from hlgym.records import EpisodeOutcome, EpisodeRecord, EpisodeRecorder, Evaluation, Stat, summarize

__all__ = [
    "BASELINES",
    "Agent",
    "EpisodeOutcome",
    "EpisodeRecord",
    "EpisodeRecorder",
    "Evaluation",
    "FixedPeerAgent",
    "GreedyNearestAgent",
    "HLDQNAgent",
    "LookaheadAgent",
    "OracleAgent",
    "PowerOfChoiceAgent",
    "RandomAgent",
    "RoundRobinAgent",
    "Stat",
    "StayAgent",
    "best_fixed_peer",
    "evaluate",
    "run_episode",
    "summarize",
]
