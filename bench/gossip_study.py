"""The gossip env's team goal: the baselines' team-accuracy curves on held-out episodes.

    python bench/gossip_study.py                         # 10 peers, average, 20 episodes
    python bench/gossip_study.py --peers 20 --episodes 10 --fixed 5
    python bench/gossip_study.py --transfer distill
    python bench/gossip_study.py --horizons 12 20 28 36      # the goals at shorter round limits
    python bench/gossip_study.py --env-kwargs team_goal=min   # GossipEnv's other settings
    python bench/gossip_study.py --transfer relay --env-kwargs tokens=3   # models that travel
    python bench/gossip_study.py --oracle-width 4 --oracle-samples 16   # a stronger search
    python bench/gossip_study.py --seed 10020 && python bench/gossip_study.py --also-seed 10020   # 40 episodes

Every policy plays with the goal lifted out of reach (each episode runs its ``max_rounds``
rounds), so one run gives the round at which it would reach any goal. For each goal the
table shows, per policy, the share of episodes that reach it and the mean rounds
(``max_rounds`` where not); a goal passes the validity test of docs/benchmark.md where
random reaches it in 20-60% of the episodes and no constant policy (every agent keeping, or
every agent sending to one fixed peer) does as often in as few rounds, and the oracle
(:class:`~hlgym.agents.gossip.GossipOracle`: a beam search over sampled joint actions, a
lower bound of the ceiling; with the goal lifted it ranks by team accuracy until a child
reaches a goal and would stop there, so its best child per round, ``GossipOracle.levels``,
gives every goal; the first studies in docs/multiagent.md read the curve of the route it
returned, the best at the last round, which can pass a goal later or never) reaches it in
at least 95%. Results are kept per setting and policy in ``--json`` (resumable).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hlgym.agents.gossip import BASELINES, FixedPeerPolicy, GossipOracle, GossipPolicy, evaluate
from hlgym.atomic import write_json_atomic
from hlgym.envs.config import parse_pairs
from hlgym.envs.gossip import GossipEnv

SEED = 10_000  # the held-out seeds of hlgym-train and hlgym-bench


def at_goal(curves: list[list[float]], goal: float, max_rounds: int) -> tuple[float, float]:
    """Share of episodes whose team accuracy reaches ``goal`` within ``max_rounds`` rounds,
    and mean rounds to it (``max_rounds`` where not)."""
    rounds = [next((r for r, a in enumerate(c[: max_rounds + 1]) if r > 0 and a >= goal), None) for c in curves]
    reached = [r is not None for r in rounds]
    return float(np.mean(reached)), float(np.mean([max_rounds if r is None else r for r in rounds]))


def main() -> None:
    """Play the missing policies, then print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--transfer", default="average", choices=["average", "distill", "logits", "relay"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--fixed", type=int, help="fixed peers tried: 0..FIXED-1 (default: every peer)")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="leave the oracle out")
    parser.add_argument("--oracle-width", type=int, default=2, help="the oracle's beams (part of the study's key)")
    parser.add_argument(
        "--oracle-samples", type=int, default=8, help="joint actions the oracle tries from each beam (part of the key)"
    )
    parser.add_argument("--json", default="bench/gossip_study.json")
    parser.add_argument("--seed", type=int, default=SEED, help="the first episode's seed (a second set checks a goal)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="POLICY",
        help="play only these (random, fixed:3, oracle, ...): split a study over processes, one --json each",
    )
    parser.add_argument(
        "--also-seed",
        nargs="+",
        type=int,
        metavar="SEED",
        help="tables over these sets of episodes too (the same setting from these --seed, in the same --json)",
    )
    parser.add_argument(
        "--horizons",
        nargs="+",
        type=int,
        metavar="ROUNDS",
        help="tables at these round limits (each curve cut there), goals where random reaches 20-60%%",
    )
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="GossipEnv's other keywords (config fields, team_goal, agent_reward), part of the study's key",
    )
    args = parser.parse_args()
    try:
        kwargs = parse_pairs(args.env_kwargs)
    except ValueError as exc:
        parser.error(f"--env-kwargs: {exc}")
    path = Path(args.json)
    store: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    key = study_key(args, args.seed)
    # The default's samples per peer fit 10 peers; 20 take 32 + 32 (what PeerSelectionConfig says fits).
    samples: dict[str, Any] = {} if args.peers <= 10 else {"main_samples": 32, "other_samples": 32}
    env = GossipEnv(n_peers=args.peers, transfer=args.transfer, **{**samples, **kwargs, "goal": 1.0})
    policies: dict[str, GossipPolicy] = {name: make() for name, make in BASELINES.items()}
    policies.update({f"fixed:{k}": FixedPeerPolicy(k) for k in range(args.fixed or args.peers)})
    if args.oracle:
        policies["oracle"] = GossipOracle(env, args.oracle_width, args.oracle_samples)  # last: it costs the most
    unknown = sorted(set(args.only or []) - set(policies))
    if unknown:
        parser.error(f"--only {unknown[0]!r} is not accepted; accepted: {', '.join(policies)}")
    for name, policy in policies.items():
        done = store.setdefault(key, {})
        stale = name == "oracle" and name in done and "route_curves" not in done[name]  # a route's curve only
        if (name in done and not stale) or (args.only and name not in args.only):
            continue
        start = time.perf_counter()
        played, levels = [], []
        for k in range(args.episodes):  # one at a time: the oracle's levels are its last search's
            played += evaluate(policy, env, 1, args.seed + k)
            if isinstance(policy, GossipOracle):
                levels.append([a for a, _ in policy.levels])
        done[name] = {
            "curves": [e.team_curve for e in played],
            "comm": float(np.mean([e.comm_cost for e in played])),
            "bytes_per_peer": float(np.mean([e.bytes_per_peer for e in played])),
            "step_s": float(np.mean([e.step_seconds for e in played])),
            "seconds": time.perf_counter() - start,
        }
        if isinstance(policy, GossipOracle):  # its best child per round: the curve every goal reads
            done[name]["curves"] = [[e.team_curve[0], *best] for e, best in zip(played, levels, strict=True)]
            done[name]["route_curves"] = [e.team_curve for e in played]
        write_json_atomic(path, store)
        print(f"{name}: {done[name]['seconds']:.0f} s ({1000 * done[name]['step_s']:.0f} ms a round)", flush=True)
    done, max_rounds = store[key], env.config.max_rounds
    for seed in args.also_seed or []:  # another set of episodes of the same setting: one table over all
        other = store.get(study_key(args, seed), {})
        if set(other) != set(done):
            print(f"--also-seed {seed}: {path} needs the same policies played from seed {seed} (--seed {seed})")
            return
        means = ("comm", "bytes_per_peer")  # per episode, and both sets have --episodes of them
        done = {
            n: {**r, "curves": r["curves"] + other[n]["curves"], **{m: (r[m] + other[n][m]) / 2 for m in means}}
            for n, r in done.items()
        }
        key += f" + seed={seed}"
    missing = [n for n in ("random", "keep", "fixed:0") if n not in done]
    if missing:  # a split study: the table once one --json holds every part
        print(f"{key}: the table needs {', '.join(missing)} in {path} too")
        return
    finals = {name: float(np.mean([c[-1] for c in r["curves"]])) for name, r in done.items()}
    print(f"\n{key}: mean team accuracy after {max_rounds} rounds, communication, bytes per peer")
    for name, r in done.items():
        print(f"  {name:16} {finals[name]:.3f}  comm {r['comm']:6.2f}  {r['bytes_per_peer'] / 1e6:6.2f} MB/peer")
    for horizon in args.horizons or [max_rounds]:
        table(done, horizon, band=args.horizons is not None)


def study_key(args: argparse.Namespace, seed: int) -> str:
    """The ``--json`` key of a setting's study whose episodes start at ``seed``."""
    key = f"peers={args.peers} transfer={args.transfer} episodes={args.episodes}"
    key += "" if seed == SEED else f" seed={seed}"
    key += "".join(f" {pair}" for pair in args.env_kwargs)
    if (args.oracle_width, args.oracle_samples) != (2, 8):
        key += f" oracle={args.oracle_width}x{args.oracle_samples}"
    return key


def table(done: dict[str, Any], horizon: int, band: bool = False) -> None:
    """Each goal's cells at a round limit of ``horizon``: share at the goal and mean rounds per
    policy, the best fixed peer's, and whether the goal is valid. ``band``: only the goals at
    which random reaches 20-60%."""
    names = [n for n in done if not n.startswith("fixed:")]
    print(f"\nround limit {horizon}")
    print(f"{'goal':>5} " + " ".join(f"{n:>16}" for n in [*names, "best fixed peer"]) + "  valid")
    for goal in np.round(np.arange(0.30, 0.95, 0.005 if band else 0.01), 3):
        cells = {n: at_goal(done[n]["curves"], goal, horizon) for n in done}
        fixed = min((n for n in done if n.startswith("fixed:")), key=lambda n: (-cells[n][0], cells[n][1]))
        rand, keep = cells["random"], cells["keep"]
        if band and not 0.2 <= rand[0] <= 0.6:
            continue
        constant = [keep, cells[fixed]]
        ok = 0.2 <= rand[0] <= 0.6 and all(c[0] <= rand[0] and c[1] >= rand[1] for c in constant)
        ok = ok and ("oracle" not in cells or cells["oracle"][0] >= 0.95)
        row = " ".join(f"{cells[n][0]:5.0%} {cells[n][1]:5.1f}     " for n in names)
        print(f"{goal:5.3f} {row} {fixed:>7} {cells[fixed][0]:4.0%} {cells[fixed][1]:5.1f}  {'yes' if ok else ''}")


if __name__ == "__main__":
    main()
