"""Modality experts: how the registered goal was chosen.

Every policy plays the same held-out episodes of ``hlgym/ModalityExperts-v0`` with the goal
lifted to 1.0 (so none ends early) for the whole round limit; for each candidate goal the
table gives the share of episodes whose fused test accuracy reached it, and the mean round
it was first reached (the round limit when never). Policies: random, round-robin, greedy
nearest-unvisited, and an oracle ``one_view`` route that cycles over the peers holding view
0 only (it reads ``env.unwrapped.peer_modalities``, which no policy sees): it covers half the
classes' main peers in one view, so it shows what ignoring a modality costs. A goal is right
when a random route often misses it and a route that covers the peers reaches it.

Each policy's accuracy curves are written to ``OUT/curves.json`` at once (atomically) and a
rerun skips them, so the study can be stopped and started again.

    python bench/modality_study.py                 # 20 held-out episodes per policy (about 2 minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents import evaluate
from hlgym.atomic import write_json_atomic
from hlgym.envs import PeerSelectionEnv

# Run as a script, bench/ is on the path: the oracle routes' cycle lives with the domain-shift study.
from domain_shift_study import make_agent  # isort: skip

POLICIES = ("random", "round_robin", "greedy", "one_view")
GOALS = (0.72, 0.74, 0.76, 0.78, 0.8, 0.82)


def one_view(env: PeerSelectionEnv) -> np.ndarray:
    """The peers that hold view 0."""
    views = env.peer_modalities
    assert views is not None, "the one-view route needs a modality-experts env"
    return np.flatnonzero(views == 0)


def main(argv: list[str] | None = None) -> None:
    """Play the missing policies, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="hlgym/ModalityExperts-v0", help="a modality-experts env id")
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes per policy")
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first held-out episode")
    parser.add_argument("--out", type=Path, default=Path("runs/modality_study"), help="results folder")
    args = parser.parse_args(argv)
    path = args.out / "curves.json"
    curves: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    limit = gym.spec(args.env).kwargs["config"].get("max_rounds", 36)
    for policy in POLICIES:
        key = f"{args.env}|{args.episodes}|{args.seed}|{policy}"
        if key not in curves:
            print(key, flush=True)
            env = gym.make(args.env, goal=1.0)
            records = evaluate(
                make_agent(policy, env, one_view), env, args.episodes, seed=args.seed, progress=True
            ).records
            curves[key] = {
                "accuracy": [r.accuracy[1:] for r in records],
                "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
            }
            write_json_atomic(path, curves)
    print(f"{'policy':<12} {'final acc':>9}  " + "  ".join(f"{g:>12}" for g in GOALS))
    for policy in POLICIES:
        acc = np.asarray(curves[f"{args.env}|{args.episodes}|{args.seed}|{policy}"]["accuracy"])
        cells = []
        for goal in GOALS:
            hit = acc >= goal
            first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, limit)
            cells.append(f"{hit.any(axis=1).mean():4.0%} r{first.mean():5.1f}")
        print(f"{policy:<12} {acc[:, -1].mean():9.3f}  " + "  ".join(f"{c:>12}" for c in cells))
    print(
        f"({args.env}, {args.episodes} held-out episodes from seed {args.seed}, goal lifted to 1.0: per goal, "
        "the share of episodes that reached it and the mean first round, the limit when never)"
    )


if __name__ == "__main__":
    main()
