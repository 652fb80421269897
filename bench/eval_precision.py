"""The opt-in bfloat16 evaluation (``eval_precision="bfloat16"``) against float32: its
speed and how far its accuracies stray, on the same models.

    python bench/eval_precision.py                 # HL-FashionMNIST (if its data is here) and the default id
    python bench/eval_precision.py --rounds 30 --json bench/eval_precision.json

One episode per id (a fixed route over the peers, the goal unreachable so it runs every
round); after each round the round's model is evaluated on the reward's test images in both
precisions (the best of 3 timings each). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import hlgym
from hlgym.envs import DataNotFoundError
from hlgym.models.training import per_sample_loss
from hlgym.models.work import precision

IDS = ("hlgym/HL-FashionMNIST-v0", "hlgym/PeerSelection-v0")


def timed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str) -> tuple[float, float]:
    """[s] the best of 3 evaluations in ``name``'s precision, and the accuracy."""
    best, accuracy = float("inf"), 0.0
    for _ in range(3):
        start = time.perf_counter()
        with precision(name, x.device):
            _, hits = per_sample_loss(model, x, y)
        best = min(best, time.perf_counter() - start)
        accuracy = float(hits.mean())
    return best, accuracy


def compare(env_id: str, rounds: int) -> dict[str, float] | None:
    """Both precisions after every round of one episode (None: the id's data is not here)."""
    try:
        env = gym.make(env_id, goal=1.0)
    except DataNotFoundError:
        return None
    u = env.unwrapped
    env.reset(seed=0)
    n = int(env.action_space.n)  # type: ignore[attr-defined]
    x, y = u.episode.data.x_eval, u.episode.data.y_eval  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    gaps = []
    for k in range(rounds):
        _, _, terminated, truncated, _ = env.step((k + 1) % n)
        accs = {}
        for name in times:
            t, accs[name] = timed(u.model, x, y, name)  # type: ignore[attr-defined]
            times[name].append(t)
        gaps.append(abs(accs["float32"] - accs["bfloat16"]))
        if terminated or truncated:
            break
    return {
        "eval_images": int(x.shape[0]),
        "rounds": len(gaps),
        "float32_ms": 1000 * float(np.median(times["float32"])),
        "bfloat16_ms": 1000 * float(np.median(times["bfloat16"])),
        "max_accuracy_gap": float(max(gaps)),
        "mean_accuracy_gap": float(np.mean(gaps)),
        "final_accuracy": accs["float32"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the episode per id")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"hlgym {hlgym.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    rows = {}
    for env_id in IDS:
        row = compare(env_id, args.rounds)
        if row is None:
            print(f"  {env_id}: no data here")
            continue
        rows[env_id] = row
        print(
            f"  {env_id} ({row['eval_images']} images, {row['rounds']} rounds): float32 {row['float32_ms']:.0f} ms, "
            f"bfloat16 {row['bfloat16_ms']:.0f} ms ({row['float32_ms'] / row['bfloat16_ms']:.2f}x); accuracy gap max "
            f"{row['max_accuracy_gap']:.4f}, mean {row['mean_accuracy_gap']:.4f} "
            f"(final accuracy {row['final_accuracy']:.3f})",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
