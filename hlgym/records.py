"""Records of episodes and their summaries: what agents, run folders and plots share.

This module sits below :mod:`hlgym.agents` and :mod:`hlgym.runs` (both import it; it imports
neither). :data:`METRICS` is the one list of an episode's totals: the columns of a run's
``episodes.csv`` (:data:`hlgym.runs.EPISODE_FIELDS`) and, with :data:`SUMMARY_FIELDS`' extra,
the keys of every results table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np

METRICS = ("rounds", "comm_cost", "bytes_sent", "final_accuracy", "reached_goal", "return")
"""An episode's totals, as a training log's row and a results table name them."""
SUMMARY_FIELDS = (*METRICS, "byzantine_visits")
CEILINGS = ("oracle",)
"""Policies that see the future (tables label them a ceiling, not a competitor)."""
"""What :func:`summarize` gives a mean and an interval of: :data:`METRICS` and the rounds
trained at a byzantine peer (0 without byzantine peers)."""


@dataclass
class EpisodeRecord:
    """What happened in one episode.

    Attributes:
        seed: The ``reset`` seed.
        route: The holder after ``reset`` and after each step.
        accuracy: Test accuracy after ``reset`` and after each step.
        hop_costs: Hop cost paid in each round [distance units].
        rewards: Reward of each round.
        rounds: Rounds played.
        comm_cost: Total hop cost [distance units].
        bytes_sent: Total model bytes moved.
        reached_goal: Whether the accuracy reached the goal (terminated).
        forced_rounds: Rounds the environment played inside ``reset`` (1 with
            ``first_round_at_start``); ``rounds`` counts them, ``route`` starts after them.
        positions: 2-D layout of the peers (the topology's positions, else MDS of its
            distances), for drawing the route.
        main_classes: Each peer's most frequent class.
        round_bytes: Bytes sent in each round (a failed or offline hop's too).
        byzantine: The episode's byzantine peers (``byzantine_peers``; empty if none).
        byzantine_visits: Rounds in which the model trained at a byzantine peer.
        peer_domains: Each peer's domain (``domain_shift``; empty if none).
        goal: The accuracy that ends the episode (the task's on a task distribution; None
            in records of hlgym < 0.3).
        domain_shift: The transform whose level ``peer_domains`` hold (``"rotate"``
            [degrees], ``"noise"`` [std], ...; empty if none).
        peer_modalities: The view each peer holds (``modality_split``; empty if none).
        sends: A multi-agent episode's sends, round by round, each ``[sender, receiver,
            delivered]`` (:class:`hlgym.envs.gossip.GossipEnv`; its ``route`` is empty and
            its ``accuracy`` the team's); empty for one travelling model.
    """

    seed: int
    route: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    hop_costs: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    rounds: int = 0
    comm_cost: float = 0.0
    bytes_sent: int = 0
    reached_goal: bool = False
    forced_rounds: int = 0
    positions: list[list[float]] = field(default_factory=list)
    main_classes: list[int] = field(default_factory=list)
    round_bytes: list[int] = field(default_factory=list)
    byzantine: list[int] = field(default_factory=list)
    byzantine_visits: int = 0
    peer_domains: list[float] = field(default_factory=list)
    goal: float | None = None
    domain_shift: str = ""
    peer_modalities: list[int] = field(default_factory=list)
    sends: list[list[list[Any]]] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        """Accuracy after the last round."""
        return self.accuracy[-1]

    @property
    def episode_return(self) -> float:
        """Sum of the rewards."""
        return math.fsum(self.rewards)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with ``final_accuracy`` and ``return`` added)."""
        out = asdict(self)
        out["final_accuracy"] = self.final_accuracy
        out["return"] = self.episode_return
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        """Inverse of :meth:`to_dict` (derived keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def metric(self, name: str) -> float:
        """The value of one of :data:`SUMMARY_FIELDS` (``reached_goal`` as 0 or 1)."""
        if name == "return":
            return self.episode_return
        return float(getattr(self, name))

    def outcome(self) -> EpisodeOutcome:
        """The episode's totals."""
        return EpisodeOutcome(
            self.rounds, self.comm_cost, self.bytes_sent, self.final_accuracy, self.reached_goal, self.episode_return
        )


@dataclass(frozen=True)
class EpisodeOutcome:
    """The totals of a finished episode (a row of a run's training log).

    Attributes:
        rounds: Rounds played.
        comm_cost: Total hop cost [distance units].
        bytes_sent: Total model bytes moved.
        final_accuracy: Accuracy after the last round.
        reached_goal: Whether the accuracy reached the goal.
        episode_return: Sum of the rewards.
    """

    rounds: int
    comm_cost: float
    bytes_sent: int
    final_accuracy: float
    reached_goal: bool
    episode_return: float

    def row(self) -> dict[str, Any]:
        """The totals keyed by :data:`METRICS` (a training log's columns)."""
        values = (self.rounds, self.comm_cost, self.bytes_sent, self.final_accuracy, self.reached_goal)
        return {**dict(zip(METRICS[:-1], values, strict=True)), "return": self.episode_return}

    @classmethod
    def from_final_info(cls, info: dict[str, Any], episode_return: float, goal: float) -> EpisodeOutcome:
        """The outcome from the info dict of an episode's last step (``info["goal"]``, a task
        distribution's per-task goal, wins over ``goal``)."""
        accuracy = float(info["accuracy"])
        goal = float(info.get("goal", goal))
        return cls(
            int(info["round"]),
            float(info["comm_cost"]),
            int(info["bytes_sent"]),
            accuracy,
            accuracy >= goal,
            float(episode_return),
        )


class EpisodeRecorder:
    """Fills an :class:`EpisodeRecord` from an episode's ``reset`` and ``step`` results.

    Args:
        seed: The ``reset`` seed (-1 when the env continued its RNG).
        info: ``reset``'s info.
        env: The env (its ``positions``, ``main_classes``, ``byzantine``,
            ``peer_domains`` and ``peer_modalities`` are recorded for drawing).
    """

    def __init__(self, seed: int, info: dict[str, Any], env: gym.Env[Any, Any]) -> None:
        base = env.unwrapped
        positions = getattr(base, "positions", None)
        main_classes = getattr(base, "main_classes", None)
        byzantine = getattr(base, "byzantine", None)
        domains = getattr(base, "peer_domains", None)
        modalities = getattr(base, "peer_modalities", None)
        config = getattr(base, "config", None)
        shift = getattr(config, "domain_shift", None)
        goal = info.get("goal", getattr(config, "goal", None))  # a task distribution's info holds the task's
        self.record = EpisodeRecord(
            seed=seed,
            route=[int(info["holder"])],
            accuracy=[float(info["accuracy"])],
            # Rounds the env played in reset (first_round_at_start).
            forced_rounds=int(info["round"]),
            positions=[] if positions is None else np.asarray(positions).tolist(),
            main_classes=[] if main_classes is None else [int(c) for c in main_classes],
            byzantine=[] if byzantine is None else [int(p) for p in np.flatnonzero(byzantine)],
            peer_domains=[] if domains is None else [float(d) for d in domains],
            goal=None if goal is None else float(goal),
            domain_shift=str(shift) if shift and domains is not None else "",
            peer_modalities=[] if modalities is None else [int(m) for m in modalities],
        )
        self._bytes = int(info["bytes_sent"])

    def step(self, reward: float, terminated: bool, info: dict[str, Any]) -> None:
        """Record one step's result."""
        rec = self.record
        rec.route.append(int(info["holder"]))
        rec.accuracy.append(float(info["accuracy"]))
        rec.hop_costs.append(float(info["hop_cost"]))
        rec.rewards.append(float(reward))
        rec.reached_goal = bool(terminated)
        rec.round_bytes.append(int(info["bytes_sent"]) - self._bytes)
        self._bytes = int(info["bytes_sent"])
        if info["delivered"] and rec.route[-1] in rec.byzantine:
            rec.byzantine_visits += 1

    def finish(self, info: dict[str, Any]) -> EpisodeRecord:
        """The record, with the totals of the last step's ``info``."""
        rec = self.record
        rec.rounds = int(info["round"])
        rec.comm_cost = float(info["comm_cost"])
        rec.bytes_sent = int(info["bytes_sent"])
        return rec


@dataclass(frozen=True)
class Stat:
    """Mean of a quantity over episodes and the half-width of its 95% confidence interval
    (Student's t; 0 for a single episode)."""

    mean: float
    ci95: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """Summarise ``values``."""
        a = np.asarray(values, dtype=np.float64)
        if a.size < 2:
            return cls(float(a.mean()) if a.size else float("nan"), 0.0, int(a.size))
        from scipy import stats  # here: scipy.stats takes 0.3 s to import, and most imports of hlgym need none

        half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size))
        return cls(float(a.mean()), half, int(a.size))


def summarize(records: list[EpisodeRecord]) -> dict[str, Stat]:
    """Means and 95% confidence intervals of :data:`SUMMARY_FIELDS`.

    ``rounds`` counts every episode, those that missed the goal at the round limit
    (censored); ``reached_goal`` is the share of episodes that reached it.
    """
    if not records:
        raise ValueError("records is empty; evaluate at least one episode")
    return {name: Stat.of([r.metric(name) for r in records]) for name in SUMMARY_FIELDS}


@dataclass
class Evaluation:
    """The records of an evaluation and their summary."""

    records: list[EpisodeRecord]
    summary: dict[str, Stat]
