"""Domain shift: how the registered goals were chosen, and what FedKA's alignment buys.

Two parts, on one domain-shift env id:

``goals``
    The registered env (its goal and round limit) under random, round-robin, greedy and an
    oracle route that cycles over the peers whose domain is nearest the target (the two
    nearest source domains; it reads ``env.unwrapped.peer_domains``, which no policy sees).
    A goal is right when a random route seldom reaches it and the oracle route does.
``alignment``
    The target domain's accuracy after exactly ``--rounds`` rounds (the goal lifted to 1.0
    so no episode ends early), with ``alignment="none"`` and ``"mmd"``, along random and
    round-robin routes. Neither route reads the observation, so both settings train along
    the same routes and differ only in the local loss.

Each finished cell is written to ``OUT/cells.json`` at once (atomically) and a rerun skips
it, so the study can be stopped and started again.

    python bench/domain_shift_study.py                          # DomainShift-v0, 20 episodes
    python bench/domain_shift_study.py --env hlgym/DomainShift-FashionMNIST-v0 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents import BASELINES, evaluate
from hlgym.agents.base import Agent
from hlgym.atomic import write_json_atomic
from hlgym.envs import PeerSelectionEnv
from hlgym.records import Stat

GOAL_POLICIES = ("random", "round_robin", "greedy", "near_target")
ALIGNMENT_POLICIES = ("random", "round_robin")
METRICS = ("reached_goal", "rounds", "comm_cost", "final_accuracy")


Pick = Callable[[PeerSelectionEnv], np.ndarray]  # the peers an oracle route cycles over


class CycleRoute:
    """An oracle route for calibration: cycles over the peers ``pick(env)`` names (it reads
    what no policy sees, such as ``peer_domains``), in index order."""

    def __init__(self, env: gym.Env[Any, Any], pick: Pick) -> None:
        base = env.unwrapped
        assert isinstance(base, PeerSelectionEnv)
        self.env, self.pick = base, pick
        self.rounds = 0

    def reset(self) -> None:
        """Start the cycle again."""
        self.rounds = 0

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        """The next peer of the cycle."""
        peers = self.pick(self.env)
        self.rounds += 1
        return int(peers[(self.rounds - 1) % peers.size])


def near_target(env: PeerSelectionEnv) -> np.ndarray:
    """The peers whose domain is one of the two source domains nearest the target."""
    config, domains = env.config, env.peer_domains
    assert domains is not None, "the near-target route needs a domain-shift env"
    assert config.target_domain != "mixed", "the near-target route needs one target domain"
    sources = np.asarray(config.source_domains, dtype=np.float64)
    nearest = sources[np.argsort(np.abs(sources - float(config.target_domain)), kind="stable")[:2]]
    return np.flatnonzero(np.isin(domains, nearest))


def make_agent(name: str, env: gym.Env[Any, Any], pick: Pick = near_target) -> Agent:
    """A built-in baseline by name (random seeded with 0), else the oracle route over ``pick``."""
    if name in BASELINES:
        agent: Agent = BASELINES["random"](seed=0) if name == "random" else BASELINES[name]()
        return agent
    return CycleRoute(env, pick)


def play(env_id: str, policy: str, episodes: int, seed: int, **kwargs: Any) -> dict[str, Any]:
    """``episodes`` held-out episodes of ``policy``: each metric's mean and 95% interval."""
    env = gym.make(env_id, **kwargs)
    start = time.perf_counter()
    records = evaluate(make_agent(policy, env), env, episodes, seed=seed, progress=True).records
    out: dict[str, Any] = {}
    for metric in METRICS:
        stat = Stat.of([float(getattr(r, metric)) for r in records])
        out[metric] = {"mean": stat.mean, "ci95": stat.ci95, "n": stat.n}
    out["seconds"] = time.perf_counter() - start
    out["machine"] = f"{platform.processor() or platform.machine()}, {platform.system()}"
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the missing cells, then print both tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="hlgym/DomainShift-v0", help="a domain-shift env id")
    parser.add_argument("--parts", nargs="+", default=["goals", "alignment"], choices=["goals", "alignment"])
    parser.add_argument("--rounds", type=int, default=36, help="alignment: rounds per episode")
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes per cell")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first held-out episode")
    parser.add_argument("--weight", type=float, default=1.0, help="alignment_weight of the mmd cells")
    parser.add_argument("--out", type=Path, default=Path("runs/domain_shift_study"), help="results folder")
    args = parser.parse_args(argv)
    path = args.out / "cells.json"
    cells: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    where = f"{args.env}|{args.episodes}|{args.seed}"
    todo: list[tuple[str, str, dict[str, Any]]] = []
    if "goals" in args.parts:
        todo += [(f"goals|{where}|{p}", p, {}) for p in GOAL_POLICIES]
    if "alignment" in args.parts:
        for mode in ("none", "mmd"):
            kwargs: dict[str, Any] = {"goal": 1.0, "max_rounds": args.rounds, "alignment": mode}
            if mode == "mmd":
                kwargs["alignment_weight"] = args.weight
            name = "none" if mode == "none" else f"mmd (weight {args.weight:g})"
            todo += [(f"alignment|{where}|{args.rounds}|{name}|{p}", p, kwargs) for p in ALIGNMENT_POLICIES]
    for key, policy, kwargs in todo:
        if key not in cells:
            print(key, flush=True)
            cells[key] = play(args.env, policy, args.episodes, args.seed, **kwargs)
            write_json_atomic(path, cells)

    def fmt(cell: dict[str, Any], metric: str, digits: int = 3) -> str:
        return f"{cell[metric]['mean']:.{digits}f} ± {cell[metric]['ci95']:.{digits}f}"

    for key, _, _ in todo:
        part, *_, policy = key.split("|")
        cell = cells[key]
        if part == "goals":
            print(
                f"goals  {policy:<12} reached {cell['reached_goal']['mean']:4.0%}  rounds {fmt(cell, 'rounds', 2)}  "
                f"comm {fmt(cell, 'comm_cost')}  final acc {fmt(cell, 'final_accuracy')}"
            )
        else:
            setting = key.split("|")[-2]
            print(
                f"alignment {setting:<18} {policy:<12} target acc after {args.rounds} rounds "
                f"{fmt(cell, 'final_accuracy')}"
            )
    print(f"({args.env}, {args.episodes} held-out episodes from seed {args.seed}; mean ± 95% interval)")


if __name__ == "__main__":
    main()
