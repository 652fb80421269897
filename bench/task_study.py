"""Calibrate the goals of hlgym/TaskDistribution-v0's families.

    python bench/task_study.py                   # 20 episodes per family and policy
    python bench/task_study.py --episodes 40 --json bench/tasks.json

For every family (train and held-out), random, round-robin and greedy play ``--episodes``
episodes (seeds 1000, 1001, ...; never the training seeds 0..) with the goal lifted to 1.0,
so every episode runs its 36 rounds. The goal of a family is then the median over random's
episodes of the best accuracy it reached (rounded down to 0.01): a random route reaches it
in about half of the episodes, as the default id's 0.86. The table shows, at that goal,
each policy's share of episodes that reach it and their mean rounds (36 where not reached).
A baseline's route does not depend on the goal, so one run per policy serves any goal.
Figures only: the registered goals were set from this script's output (docs/tasks.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import hlgym
from hlgym.agents import BASELINES, evaluate
from hlgym.envs.registration import TASKS

ENV = "hlgym/TaskDistribution-v0"


def at_goal(curves: list[list[float]], goal: float, max_rounds: int) -> tuple[float, float]:
    """Share of episodes whose accuracy reached ``goal`` and their mean rounds (``max_rounds``
    where it was not reached); ``curves`` start with the accuracy after ``reset``."""
    rounds = [next((r for r, acc in enumerate(c) if r > 0 and acc >= goal), max_rounds) for c in curves]
    reached = [any(acc >= goal for acc in c[1:]) for c in curves]
    return float(np.mean(reached)), float(np.mean(rounds))


def main() -> None:
    """Play the baselines on every family; print and write the calibrated goals."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--json", default="bench/tasks.json")
    args = parser.parse_args()

    lifted = copy.deepcopy(TASKS)
    for family in lifted["train"] + lifted["held_out"]:
        family["goal"] = 1.0
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for split in ("train", "held_out"):
        for family in lifted[split]:
            env = gym.make(ENV, tasks={**lifted, "split": family["name"]})
            max_rounds = env.unwrapped.config.max_rounds  # type: ignore[attr-defined]
            curves = {
                name: [rec.accuracy for rec in evaluate(cls(), env, args.episodes, seed=args.seed).records]
                for name, cls in BASELINES.items()
            }
            env.close()
            best = [max(c[1:]) for c in curves["random"]]
            goal = math.floor(float(np.median(best)) * 100) / 100
            row: dict[str, Any] = {"split": split, "family": family["name"], "goal": goal}
            for name, cs in curves.items():
                row[name] = dict(zip(("reached", "rounds"), at_goal(cs, goal, max_rounds), strict=True))
            rows.append(row)

    print(f"{ENV} ({hlgym.__version__}): {args.episodes} episodes per family and policy, seeds {args.seed}..")
    names = list(BASELINES)
    print(f"{'split':<9}{'family':<18}{'goal':>6}" + "".join(f"{n + ' reached/rounds':>27}" for n in names))
    for row in rows:
        cells = "".join(f"{row[n]['reached']:>17.0%} / {row[n]['rounds']:5.1f}" for n in names)
        print(f"{row['split']:<9}{row['family']:<18}{row['goal']:>6.2f}{cells}")
    print(f"({time.perf_counter() - start:.0f} s)")
    out = {"episodes": args.episodes, "seed": args.seed, "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
