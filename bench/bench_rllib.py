"""Training throughput of the Ray RLlib backend against SB3 with the batched env, and what
it projects for a cluster of such machines.

    python bench/bench_rllib.py                        # HL-FashionMNIST, eval_samples=2000
    python bench/bench_rllib.py --runners 1 2 --sb3-n-envs 2 4 --iterations 3

Every measurement trains PPO with the attention policy (so the ``peer_features``
observation, not the preset's hl_pca) on the same env and the same update
size (``--batch`` env steps per update, 64 per minibatch, 10 epochs), after one update that
is not timed (data loading, process start): RLlib with 1 and 2 env runners (a local Ray,
one CPU each, the learner on the driver), and SB3 with ``hlgym-train``'s batched vector env
at several ``n_envs``. The figure is env steps per second of training (sampling and
updates). RLlib's timers split an iteration into sampling and the learner's update; the
projection for N machines of this size assumes sampling splits evenly over 2N env runners
and the update stays on one learner:

    steps/s(N) = batch / (t_sample(2 runners) / N + t_update)

Needs the ray extra (pip install -c constraints-ray.txt -e ".[dev,ray]"). Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import ray

from hlgym.agents import sb3
from hlgym.agents.rllib import ppo_config
from hlgym.envs import PRESETS, DataNotFoundError, load_dataset
from hlgym.envs.config import PeerSelectionConfig

# The update both engines run: SB3's names (hlgym.agents.rllib.HYPERPARAMS maps them).
UPDATE: dict[str, Any] = {"batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.95, "gae_lambda": 0.95}


def bench_config(env_id: str, eval_samples: int) -> tuple[PeerSelectionConfig, str]:
    """The preset with ``eval_samples`` test images and the ``peer_features`` observation, and
    the data it runs on (synthetic where the real files are not installed, said in the output)."""
    # peer_features: the attention policy's observation (the HL presets default to hl_pca).
    config = PRESETS[env_id].replace(eval_samples=eval_samples, observation="peer_features")
    try:
        load_dataset(config.dataset, config.data_dir)
        return config, config.dataset
    except DataNotFoundError:
        return config.replace(dataset="synthetic"), "synthetic (the real files are not installed)"


def time_rllib(env_id: str, config: PeerSelectionConfig, runners: int, batch: int, iterations: int) -> dict[str, Any]:
    """PPO on RLlib with ``runners`` env runners: env steps/s over ``iterations`` updates, and
    the mean sampling and update time of one."""
    cfg = ppo_config(env_id, config, {"n_steps": batch, **UPDATE}, n_envs=1, num_env_runners=runners, seed=0)
    algo = cfg.build_algo()
    try:
        algo.train()  # not timed: every runner loads the data and builds its env
        steps, sample_s, update_s = 0, 0.0, 0.0
        start = time.perf_counter()
        for i in range(iterations):
            result = algo.train()
            print(f"  rllib x{runners}: update {i + 1}/{iterations} at {time.perf_counter() - start:.1f} s", flush=True)
            steps += int(result["env_runners"]["num_env_steps_sampled"])
            timers = result["timers"]
            sample_s += float(timers["env_runner_sampling_timer"])
            update_s += float(timers["learner_update_timer"])
        wall = time.perf_counter() - start
    finally:
        algo.stop()
    return {
        "engine": f"rllib, {runners} env runner{'s' if runners > 1 else ''}",
        "runners": runners,
        "steps": steps,
        "wall_s": wall,
        "steps_per_s": steps / wall,
        "sample_s": sample_s / iterations,
        "update_s": update_s / iterations,
    }


def time_sb3(env_id: str, config: PeerSelectionConfig, n_envs: int, batch: int, iterations: int) -> dict[str, Any]:
    """PPO on SB3 with ``n_envs`` batched copies and the same update: env steps/s."""
    venv = sb3.make_vec_env(env_id, config, n_envs, seed=0)
    hp: dict[str, Any] = {"n_steps": batch // n_envs, **UPDATE}
    model = sb3.algorithm_class("ppo")(sb3.policy_for("ppo", "attention"), venv, seed=0, verbose=0, **hp)
    try:
        model.learn(batch)  # not timed, as for RLlib
        start = time.perf_counter()
        model.learn(batch * iterations, reset_num_timesteps=False)
        wall = time.perf_counter() - start
    finally:
        venv.close()
    return {
        "engine": f"sb3, batched env x{n_envs}",
        "steps": batch * iterations,
        "wall_s": wall,
        "steps_per_s": batch * iterations / wall,
    }


def main() -> None:
    """Run the measurements, print the table and the projection, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="hlgym/HL-FashionMNIST-v0")
    parser.add_argument("--eval-samples", type=int, default=2000, help="test images of the reward")
    parser.add_argument("--batch", type=int, default=64, help="env steps per PPO update")
    parser.add_argument("--iterations", type=int, default=3, help="timed updates per measurement")
    parser.add_argument("--runners", type=int, nargs="*", default=[1, 2], help="RLlib env runners")
    parser.add_argument("--sb3-n-envs", type=int, nargs="*", default=[2, 4], help="SB3 batched copies")
    parser.add_argument("--json", default="bench/rllib.json")
    args = parser.parse_args()

    config, data = bench_config(args.env, args.eval_samples)
    print(f"{args.env}, eval_samples={args.eval_samples}, data: {data}; {os.cpu_count()} cores")
    rows = [time_sb3(args.env, config, n, args.batch, args.iterations) for n in args.sb3_n_envs]
    ray.init(num_cpus=max(os.cpu_count() or 1, max(args.runners, default=1) + 1), include_dashboard=False)
    try:
        rows += [time_rllib(args.env, config, r, args.batch, args.iterations) for r in args.runners]
    finally:
        ray.shutdown()

    print(f"\n{'engine':<28}{'steps':>7}{'wall s':>9}{'steps/s':>9}{'sample s':>10}{'update s':>10}")
    print("-" * 73)
    for row in rows:
        extra = f"{row['sample_s']:>10.2f}{row['update_s']:>10.2f}" if "sample_s" in row else ""
        print(f"{row['engine']:<28}{row['steps']:>7}{row['wall_s']:>9.1f}{row['steps_per_s']:>9.2f}{extra}")
    print(f"(PPO, attention policy, {args.batch} env steps per update; sample/update: per update)")

    projection = []
    best = max((r for r in rows if "sample_s" in r), key=lambda r: r["steps_per_s"], default=None)
    if best is not None:
        runners = int(best["runners"])
        print(f"\nprojection from '{best['engine']}' per machine of {os.cpu_count()} cores (the learner on one):")
        for n in (1, 2, 4, 8, 16, 32):
            rate = args.batch / (best["sample_s"] / n + best["update_s"])
            projection.append({"machines": n, "env_runners": runners * n, "steps_per_s": rate})
            print(f"  {n:>3} machines, {runners * n:>3} env runners: {rate:7.2f} env steps/s")
        print(f"  limit (the update alone): {args.batch / best['update_s']:.2f} env steps/s")
    meta = {"env": args.env, "eval_samples": args.eval_samples, "data": data, "batch": args.batch}
    out = {"meta": meta, "machine": platform.processor(), "cores": os.cpu_count(), "rows": rows}
    Path(args.json).write_text(json.dumps({**out, "projection": projection}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
