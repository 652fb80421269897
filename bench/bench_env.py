"""Step time of the environments, broken down into train / evaluate / observe.

    python bench/bench_env.py                      # default env + HL-FashionMNIST (if its data is here)
    python bench/bench_env.py --steps 200 --json bench/results.json

Prints a table and writes JSON. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import hlgym
from hlgym.envs import DataNotFoundError, PeerSelectionEnv


def bench(env_id: str, steps: int, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Time ``steps`` steps of a round-robin route (episodes restart as they end).

    Returns:
        Medians and means [ms] of the whole step and of each phase.
    """
    env = gym.make(env_id, **overrides)
    base = env.unwrapped
    assert isinstance(base, PeerSelectionEnv)
    n = base.config.n_peers
    env.reset(seed=seed)
    env.step(1)  # warm-up: first-call allocations are not what a long run sees
    totals: list[float] = []
    phases: dict[str, list[float]] = {"train": [], "evaluate": [], "observe": []}
    holder = 1
    for _ in range(steps):
        holder = (holder + 1) % n
        t = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(holder)
        totals.append(time.perf_counter() - t)
        for k in phases:
            phases[k].append(base.last_timing[k])
        if terminated or truncated:
            env.reset()
    ms = 1e3
    return {
        "env_id": env_id,
        "overrides": overrides,
        "steps": steps,
        "step_ms_mean": ms * statistics.fmean(totals),
        "step_ms_median": ms * statistics.median(totals),
        "steps_per_s": 1.0 / statistics.fmean(totals),
        **{f"{k}_ms_median": ms * statistics.median(v) for k, v in phases.items()},
    }


def main() -> None:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps timed on the default env")
    parser.add_argument("--hl-steps", type=int, default=40, help="steps timed on the HL presets")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures")
    args = parser.parse_args()

    rows = [bench("hlgym/PeerSelection-v0", args.steps, goal=1.0)]
    for env_id in ("hlgym/HL-FashionMNIST-v0", "hlgym/HL-MNIST-v0"):
        try:
            rows.append(bench(env_id, args.hl_steps, goal=1.0))
        except DataNotFoundError:
            print(f"{env_id}: data not found on this machine, skipped")
    header = (
        f"{'env':<28} {'step ms (median)':>16} {'mean':>8} {'steps/s':>8} {'train':>8} {'evaluate':>9} {'observe':>8}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['env_id']:<28} {r['step_ms_median']:>16.2f} {r['step_ms_mean']:>8.2f} {r['steps_per_s']:>8.1f} "
            f"{r['train_ms_median']:>8.2f} {r['evaluate_ms_median']:>9.2f} {r['observe_ms_median']:>8.2f}"
        )
    meta = {
        "hlgym": hlgym.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
