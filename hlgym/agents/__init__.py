"""Meta-policies and how they are judged."""

from hlgym.agents.base import Agent, EpisodeRecord, Evaluation, Stat, evaluate, run_episode, summarize
from hlgym.agents.baselines import BASELINES, GreedyNearestAgent, RandomAgent, RoundRobinAgent

__all__ = [
    "BASELINES",
    "Agent",
    "EpisodeRecord",
    "Evaluation",
    "GreedyNearestAgent",
    "RandomAgent",
    "RoundRobinAgent",
    "Stat",
    "evaluate",
    "run_episode",
    "summarize",
]
