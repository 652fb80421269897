"""Meta-policies and how they are judged."""

from hlgym.agents.base import (
    Agent,
    EpisodeOutcome,
    EpisodeRecord,
    EpisodeRecorder,
    Evaluation,
    Stat,
    evaluate,
    run_episode,
    summarize,
)
from hlgym.agents.baselines import BASELINES, GreedyNearestAgent, LookaheadAgent, RandomAgent, RoundRobinAgent
from hlgym.agents.hl_dqn import HLDQNAgent

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
