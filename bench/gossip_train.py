"""Parameter-shared PPO on the gossip env against its baselines, over training seeds.

    python bench/gossip_train.py                                  # hlgym/Gossip-v0, seeds 0 1 2
    python bench/gossip_train.py --agent-reward team --seeds 0 1 2   # every agent paid the team's accuracy

Each training seed trains :func:`hlgym.agents.gossip.train_shared` (SB3 PPO through
SuperSuit, the attention policy over the peer rows, ``--timesteps`` agent steps) and plays
20 held-out episodes (seeds 10000..) with every agent acting on its own observation; the
baselines play the same episodes once (they are deterministic given their seeds). The
table gives, per policy, the share of episodes at the team goal, rounds (``max_rounds``
where missed; for the learned policy the mean over seeds with a 95% t-interval),
communication, MB sent per peer and the wall time of a round. Results are kept per id,
policy and seed in ``--json`` (resumable).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from hlgym.agents.gossip import BASELINES, GossipEpisode, SharedPolicy, evaluate, train_shared
from hlgym.atomic import write_json_atomic
from hlgym.envs import gossip

SEED = 10_000
EPISODES = 20


def summary(played: list[GossipEpisode]) -> dict[str, float]:
    """One policy's episodes, averaged."""
    return {
        "reached": float(np.mean([e.reached_goal for e in played])),
        "rounds": float(np.mean([e.rounds for e in played])),
        "comm": float(np.mean([e.comm_cost for e in played])),
        "mb_per_peer": float(np.mean([e.bytes_per_peer for e in played])) / 1e6,
        "round_s": float(np.mean([e.step_seconds for e in played])),
    }


def interval(values: list[float]) -> str:
    """``mean ± half-width`` of a 95% t-interval over training seeds."""
    if len(values) < 2:
        return f"{values[0]:6.2f}"
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return f"{np.mean(values):6.2f} ± {half:.2f}"


def main() -> None:
    """Train and play what is missing, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--id", default="hlgym/Gossip-v0", choices=list(gossip.PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=40_000, help="agent steps per training seed")
    parser.add_argument("--agent-reward", default="own", choices=gossip.AGENT_REWARDS, help="what an agent is paid")
    parser.add_argument("--json", default="bench/gossip_train.json")
    args = parser.parse_args()
    path = Path(args.json)
    store: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    reward = "" if args.agent_reward == "own" else f" agent_reward={args.agent_reward}"
    done = store.setdefault(f"{args.id} timesteps={args.timesteps}{reward}", {})
    kwargs = {**gossip.PRESETS[args.id], "agent_reward": args.agent_reward}
    env = gossip.make(args.id)
    for name, make in BASELINES.items():
        if name not in done:
            done[name] = summary(evaluate(make(), env, EPISODES, SEED))
            write_json_atomic(path, store)
            print(f"{name}: played", flush=True)
    for seed in args.seeds:
        key = f"ppo:{seed}"
        if key in done:
            continue
        start = time.perf_counter()
        model = train_shared(kwargs, args.timesteps, seed)
        trained = time.perf_counter() - start
        done[key] = {**summary(evaluate(SharedPolicy(model), env, EPISODES, SEED)), "train_s": trained}
        write_json_atomic(path, store)
        print(f"{key}: trained in {trained:.0f} s", flush=True)
    print(f"\n{args.id} ({kwargs}), {EPISODES} held-out episodes (seeds {SEED}..)")
    print(f"{'policy':18} {'reached':>8} {'rounds':>14} {'comm':>7} {'MB/peer':>8} {'round [ms]':>10}")
    seeds = [done[f"ppo:{s}"] for s in args.seeds if f"ppo:{s}" in done]
    if seeds:
        reached = np.mean([s["reached"] for s in seeds])
        rounds = interval([s["rounds"] for s in seeds])
        comm, mb = np.mean([s["comm"] for s in seeds]), np.mean([s["mb_per_peer"] for s in seeds])
        step = 1000 * np.mean([s["round_s"] for s in seeds])
        train = np.mean([s["train_s"] for s in seeds])
        label = f"ppo ({len(seeds)} seeds)"
        print(f"{label:18} {reached:8.0%} {rounds:>14} {comm:7.2f} {mb:8.2f} {step:10.0f}  train {train:.0f} s/seed")
    for name in BASELINES:
        r = done[name]
        print(
            f"{name:18} {r['reached']:8.0%} {r['rounds']:14.2f} {r['comm']:7.2f} {r['mb_per_peer']:8.2f} "
            f"{1000 * r['round_s']:10.0f}"
        )


if __name__ == "__main__":
    main()
