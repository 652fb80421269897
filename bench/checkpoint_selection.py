"""Does a checkpoint picked on validation episodes beat the shipped learner's last one? (issue 24)

    python bench/checkpoint_selection.py --seeds 0 1 2 3 4
    python bench/checkpoint_selection.py --seeds 0 --train-args --hyperparams gamma=0.99

Each seed trains as ``hlgym-train --env ENV --seed K`` does (options after ``--train-args``
pass to it; the run folder is ``OUT/seed_K``). Every ``--every`` training steps, and at the
end, the policy plays ``--val-episodes`` validation episodes deterministically (seeds
``--val-seed``.., away from the training seeds and from the held-out 10000..) and is kept in
memory. After training, every kept policy plays the held-out episodes (``--eval-episodes``
from 10000, as hlgym-train's table). The table compares, per seed and on average, the last
policy (what hlgym-train ships) with the one validation picks, among the kept policies past
the first third (at the defaults, from 20,000 steps on), by mean return (the HL reward) and by
mean rounds (ties: less communication), and gives the best held-out figure among the
kept policies (a choice that sees the held-out episodes: what selection could gain at most).

The validation games draw from no global RNG and leave the training as it is: the last
policy's weights are those a plain ``hlgym-train`` run trains (checked on 10,240 steps:
identical). A seed whose ``snapshots.json`` exists is read back, not retrained. Figures only.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

import hlgym.train
from hlgym.agents import evaluate, sb3
from hlgym.atomic import write_json_atomic
from hlgym.records import EpisodeRecord
from hlgym.runs import EpisodeLog, RunFolder


def _figures(records: list[EpisodeRecord]) -> dict[str, float]:
    return {
        "rounds": float(np.mean([r.rounds for r in records])),
        "comm": float(np.mean([r.comm_cost for r in records])),
        "return": float(np.mean([sum(r.rewards) for r in records])),
        "reached": float(np.mean([r.reached_goal for r in records])),
    }


class Snapshots(BaseCallback):
    """Every ``every`` steps: the policy's validation figures and its saved bytes."""

    def __init__(self, env_id: str, every: int, episodes: int, seed: int) -> None:
        super().__init__()
        self.env_id, self.every, self.episodes, self.seed = env_id, every, episodes, seed
        self.kept: list[tuple[int, dict[str, float], bytes]] = []
        self._last = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            self.keep(self.model)
        return True

    def keep(self, model: BaseAlgorithm) -> None:
        """Play the validation episodes with ``model`` and keep it."""
        env = gym.make(self.env_id)
        try:
            val = _figures(evaluate(sb3.SB3Agent(model), env, self.episodes, seed=self.seed).records)
        finally:
            env.close()
        buf = io.BytesIO()
        model.save(buf)
        self.kept.append((int(model.num_timesteps), val, buf.getvalue()))
        print(f"  step {model.num_timesteps}: validation rounds {val['rounds']:.2f}, return {val['return']:.3f}")


def train_seed(args: argparse.Namespace, seed: int, folder: Path) -> list[dict[str, Any]]:
    """Train one seed with the snapshots, then play each kept policy on the held-out episodes."""
    snaps = Snapshots(args.env, args.every, args.val_episodes, args.val_seed)
    plain = sb3.learn_to_budget

    def with_snapshots(
        model: BaseAlgorithm,
        run: RunFolder,
        log: EpisodeLog,
        callbacks: list[BaseCallback],
        timesteps: int,
        *,
        progress: bool,
        fresh: bool,
    ) -> Path:
        final = plain(model, run, log, [*callbacks, snaps], timesteps, progress=progress, fresh=fresh)
        if not snaps.kept or snaps.kept[-1][0] != model.num_timesteps:
            snaps.keep(model)  # the last policy, as hlgym-train saves it
        return final

    sb3.learn_to_budget = with_snapshots  # hlgym.train calls it through the module
    try:
        seeded = ["--env", args.env, "--seed", str(seed), "--out", str(folder)]
        hlgym.train.main([*seeded, "--eval-episodes", str(args.eval_episodes), "--no-progress", *args.train_args])
    finally:
        sb3.learn_to_budget = plain
    algo = sb3.algorithm_class(json.loads((folder / "config.json").read_text())["args"]["algo"])
    env = gym.make(args.env)
    rows = []
    try:
        for steps, val, data in snaps.kept:
            model = algo.load(io.BytesIO(data), device="cpu")
            held = _figures(evaluate(sb3.SB3Agent(model), env, args.eval_episodes, seed=10_000).records)
            rows.append({"steps": steps, "validation": val, "held_out": held})
    finally:
        env.close()
    write_json_atomic(folder / "snapshots.json", rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--train-args" in argv:
        at = argv.index("--train-args")
        argv, extra = argv[:at], argv[at + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="hlgym/PeerSelection-v0")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--every", type=int, default=5000, help="training steps between kept policies")
    p.add_argument("--val-episodes", type=int, default=20)
    p.add_argument("--val-seed", type=int, default=20_000)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/checkpoint_selection"))
    args = p.parse_args(argv)
    fixed = sorted({"--env", "--env-kwargs", "--seed", "--seeds", "--out", "--eval-episodes"} & set(extra))
    if fixed:
        # The validation and held-out games play the registered id as it is, with this script's seeds.
        p.error(f"--train-args {' '.join(fixed)} is not accepted; accepted: hlgym-train's other options")
    args.train_args = extra
    picks: dict[str, list[dict[str, float]]] = {"last": [], "by return": [], "by rounds": [], "best held-out": []}
    print(f"{args.env}: held-out episodes 10000..{10_000 + args.eval_episodes - 1}, validation {args.val_seed}..")
    for seed in args.seeds:
        run = args.out / f"seed_{seed}"
        done = run / "snapshots.json"
        rows = json.loads(done.read_text()) if done.is_file() else train_seed(args, seed, run)
        late = rows[len(rows) // 3 :] or rows  # past the first third of training
        chosen = {
            "last": rows[-1],
            "by return": max(late, key=lambda r: r["validation"]["return"]),
            "by rounds": min(late, key=lambda r: (r["validation"]["rounds"], r["validation"]["comm"])),
            "best held-out": min(rows, key=lambda r: (r["held_out"]["rounds"], r["held_out"]["comm"])),
        }
        cells = []
        for name, row in chosen.items():
            picks[name].append(row["held_out"])
            cells.append(f"{name} @{row['steps']}: {row['held_out']['rounds']:.2f} / {row['held_out']['comm']:.3f}")
        print(f"seed {seed}: " + "; ".join(cells))
    print("\npolicy kept      held-out rounds   comm    reached  (mean over seeds)")
    for name, held in picks.items():
        r, c, g = (np.mean([h[k] for h in held]) for k in ("rounds", "comm", "reached"))
        print(f"{name:<16} {r:>8.2f}        {c:.3f}   {g:.0%}")


if __name__ == "__main__":
    main()
