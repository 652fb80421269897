"""Step time of the environments (train / evaluate / observe), achieved GFLOP/s against a
matmul measured in the same run, and memory across resets.

    python bench/bench_env.py                      # default env + the HL presets whose data is here
    python bench/bench_env.py --steps 200 --json bench/results.json

Prints tables and writes JSON. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import hlgym
from hlgym.envs import DataNotFoundError, PeerSelectionEnv


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of one sample (2 per multiply-add;
    convolutions and linear layers only, which is where the time goes)."""
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * k * output[0].numel()
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return total


def step_flops(env: PeerSelectionEnv, peer: int, per_sample: int) -> float:
    """Arithmetic of one step at ``peer``: training (forward + backward, about 3x a forward)
    on its data, evaluation of the reward's test images, and the probes."""
    cfg = env.config
    trained = 3 * per_sample * len(env._peer_y[peer]) * cfg.local_epochs
    evaluated = per_sample * (len(env._y_test) + (len(env._probe_y) if cfg.observation == "peer_features" else 0))
    return float(trained + evaluated)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of an n x n matrix multiply on this machine (median of ``repeats``)."""
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def rss_mb() -> float:
    """Resident memory of this process now [MB]."""
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def memory_across_resets(env_id: str, resets: int, **overrides: Any) -> dict[str, Any]:
    """Resident memory after the first reset and after ``resets`` more (two steps each)."""
    env = gym.make(env_id, **overrides)
    env.reset(seed=0)
    env.step(1)
    first = rss_mb()
    for i in range(resets):
        env.reset(seed=i)
        env.step(1)
        env.step(2)
    last = rss_mb()
    return {"env_id": env_id, "resets": resets, "rss_first_mb": first, "rss_last_mb": last, "growth_mb": last - first}


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
    # The architecture is fixed for the env, so its per-sample cost is counted once.
    per_sample = forward_flops(base._model, base._data.input_shape)
    flops: list[float] = []
    for _ in range(steps):
        holder = (holder + 1) % n
        flops.append(step_flops(base, holder, per_sample))
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
        "gflop_per_step": statistics.fmean(flops) / 1e9,
        "gflops": statistics.fmean(flops) / statistics.fmean(totals) / 1e9,
        **{f"{k}_ms_median": ms * statistics.median(v) for k, v in phases.items()},
    }


def main() -> None:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps timed on the default env")
    parser.add_argument("--hl-steps", type=int, default=40, help="steps timed on the HL presets")
    parser.add_argument("--resets", type=int, default=100, help="resets in the memory check (a tenth on HL presets)")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures")
    args = parser.parse_args()

    matmul = matmul_gflops()
    rows = [bench("hlgym/PeerSelection-v0", args.steps, goal=1.0)]
    memory = [memory_across_resets("hlgym/PeerSelection-v0", args.resets)]
    for env_id in ("hlgym/HL-FashionMNIST-v0", "hlgym/HL-MNIST-v0"):
        try:
            rows.append(bench(env_id, args.hl_steps, goal=1.0))
            rows.append(bench(env_id, args.hl_steps, goal=1.0, eval_samples=2000))
            memory.append(memory_across_resets(env_id, max(2, args.resets // 10)))
        except DataNotFoundError:
            print(f"{env_id}: data not found on this machine, skipped")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    header = (
        f"{'env':<26} {'eval imgs':>9} {'step ms':>8} {'mean':>8} {'steps/s':>8} {'train':>7} {'evaluate':>8}"
        f" {'observe':>7} {'GFLOP/s':>8} {'of matmul':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        imgs = r["overrides"].get("eval_samples", "all")
        print(
            f"{r['env_id']:<26} {imgs:>9} {r['step_ms_median']:>8.2f} {r['step_ms_mean']:>8.2f}"
            f" {r['steps_per_s']:>8.1f}"
            f" {r['train_ms_median']:>7.2f} {r['evaluate_ms_median']:>8.2f} {r['observe_ms_median']:>7.2f}"
            f" {r['gflops']:>8.1f} {100 * r['gflops'] / matmul:>8.0f}%"
        )
    print("(times in ms, medians; 'of matmul': achieved GFLOP/s over a 2048x2048 float32 matmul's)")
    print(f"float32 2048x2048 matmul on this machine: {matmul:.1f} GFLOP/s\n")
    print(f"{'env':<26} {'resets':>6} {'RSS first MB':>13} {'RSS last MB':>12} {'growth MB':>10}")
    for m in memory:
        print(
            f"{m['env_id']:<26} {m['resets']:>6} {m['rss_first_mb']:>13.1f} {m['rss_last_mb']:>12.1f}"
            f" {m['growth_mb']:>10.1f}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # [MB]; Linux reports kB
    print(f"peak RSS of the benchmark process: {peak:.0f} MB")

    meta = {
        "hlgym": hlgym.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    out = {"meta": meta, "matmul_gflops": matmul, "rows": rows, "memory": memory, "peak_rss_mb": peak}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
