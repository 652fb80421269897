"""Meta-policies and how they are judged (the records: :mod:`hlgym.records`, re-exported here)."""

from hlgym.agents.base import Agent, evaluate, run_episode
from hlgym.agents.baselines import BASELINES, GreedyNearestAgent, LookaheadAgent, RandomAgent, RoundRobinAgent
from hlgym.agents.hl_dqn import HLDQNAgent
from hlgym.records import EpisodeOutcome, EpisodeRecord, EpisodeRecorder, Evaluation, Stat, summarize

__all__ = [
    "BASELINES",
    "Agent",
    "EpisodeOutcome",
    "EpisodeRecord",
    "EpisodeRecorder",
    "Evaluation",
    "GreedyNearestAgent",
    "HLDQNAgent",
    "LookaheadAgent",
    "RandomAgent",
    "RoundRobinAgent",
    "Stat",
    "evaluate",
    "run_episode",
    "summarize",
]
