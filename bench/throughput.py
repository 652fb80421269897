"""The whole meta-training loop's speed and every id's raw step rate.

    python bench/throughput.py                     # PPO at n_envs 1, 4, 8 + benchmark_step of every id
    python bench/throughput.py --timesteps 4096 --json bench/throughput.json
    python bench/throughput.py --only training     # or: --only steps

Training: PPO with the default id's shipped hyperparameters (hyperparams/ppo.yml: the
attention policy, n_steps 128, 10 epochs), its updates included, at n_envs 1 (one env in
SB3's DummyVecEnv), 4 and 8 (the batched vector env): env steps per second of wall time.
Steps: Gymnasium's ``gymnasium.utils.performance.benchmark_step`` (random actions, resets
counted) for every registered id whose data is on this machine. Figures only: nothing here
asserts a time. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import torch
from gymnasium.utils.performance import benchmark_step

import hlgym
from hlgym.agents import sb3
from hlgym.envs import PRESETS, DataNotFoundError
from hlgym.train import load_hyperparams

ENV = "hlgym/PeerSelection-v0"


def training(timesteps: int, n_envs: int) -> float:
    """Env steps per second of ``timesteps`` PPO steps at ``n_envs`` copies (updates included)."""
    hp = dict(load_hyperparams("ppo", ENV) or {})
    for key in ("n_timesteps", "n_envs", "policy"):
        hp.pop(key, None)
    venv = sb3.make_vec_env(ENV, PRESETS[ENV], n_envs, seed=0)
    try:
        model = sb3.algorithm_class("ppo")(sb3.policy_for("ppo", "attention"), venv, seed=0, device="cpu", **hp)
        start = time.perf_counter()
        model.learn(timesteps)
        return timesteps / (time.perf_counter() - start)
    finally:
        venv.close()


def steps(duration: int) -> dict[str, float | str]:
    """benchmark_step's steps per second for every registered id (why not, where its data is missing)."""
    out: dict[str, float | str] = {}
    for env_id in PRESETS:
        try:
            env = gym.make(env_id)
        except DataNotFoundError:
            out[env_id] = "no data here"
            continue
        out[env_id] = benchmark_step(env, target_duration=duration, seed=0)
        env.close()
        print(f"  {env_id}: {out[env_id]:.1f} steps/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=4096, help="PPO steps per figure (a multiple of 128 x 8)")
    parser.add_argument("--duration", type=int, default=5, help="benchmark_step's seconds per id")
    parser.add_argument("--only", choices=("training", "steps"), default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    print(
        f"hlgym {hlgym.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    result: dict[str, object] = {}
    if args.only in (None, "training"):
        rates = {}
        for n in (1, 4, 8):
            rates[n] = training(args.timesteps, n)
            print(f"  PPO, n_envs {n}: {rates[n]:.1f} env steps/s", flush=True)
        result["training"] = rates
        print(f"\nPPO on {ENV} ({args.timesteps} steps, updates included), env steps/s of wall time")
        print("| n_envs | 1 | 4 | 8 |\n|---|---|---|---|")
        print("| env steps/s | " + " | ".join(f"{rates[n]:.0f}" for n in (1, 4, 8)) + " |")
    if args.only in (None, "steps"):
        rates_by_id = steps(args.duration)
        result["steps"] = rates_by_id
        print(f"\nbenchmark_step ({args.duration} s each, random actions, resets counted), steps/s")
        print("| id | steps/s |\n|---|---|")
        for env_id, rate in rates_by_id.items():
            print(f"| {env_id} | {rate if isinstance(rate, str) else f'{rate:.0f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
