"""Is each registered id a benchmark? Random, the best fixed peer and the oracle on held-out episodes.

    python bench/validity.py                                  # every digits id, 20 episodes
    python bench/validity.py --ids hlgym/DomainShift-v0 --episodes 10
    python bench/validity.py --ids hlgym/DomainShift-v1 --goals   # and the goals that would pass
    python bench/validity.py --ids hlgym/HL-FashionMNIST-v0 --episodes 10 --registered

An id is valid (docs/benchmark.md) when, on ``--episodes`` held-out episodes (seeds 10000..):
a random route reaches the goal in 20-60% of them; the best fixed peer (every peer tried as
a constant policy, the best kept: most often at the goal, then fewest rounds) reaches it no
more often than random and takes no fewer rounds on average; the oracle (a beam search over
copies of the env, ``--width`` beams) reaches it in at least 95%. The task distribution is
checked per split: its train families together and each held-out family.

Every policy plays with the goal lifted out of reach, so its episodes run all their rounds
and one run gives its accuracy curve for any goal: a policy whose route ignores the goal
(random, a fixed peer) reaches goal ``g`` where its curve first does, and the oracle's beams
are ranked by accuracy until a child reaches ``g``, so it reaches ``g`` at the first round
whose best child is ``>= g`` (``OracleAgent.levels``). ``--goals`` prints the goals at which
each criterion holds. Results are kept per case and policy in ``--json`` (resumable: a
killed run goes on where it stopped); the table is printed from that file.

``--registered`` plays every policy at the registered goal instead (episodes end there, the
oracle stops searching there): the same verdict at that goal for a fraction of the steps, for
ids whose goal is not to be moved (the ``HL-*`` ids reproduce the reference; their step is
0.3-0.6 s), without ``--goals``.

``--policies`` plays some of the three only (``random``, ``fixed``: every fixed peer,
``oracle``), so that two processes share the cores: ``--policies oracle`` in one and
``--policies random fixed`` in the other, with the same ``--json``; the table is printed
by the run that finds all three in the file.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import hlgym
from hlgym.agents import RandomAgent, evaluate
from hlgym.agents.baselines import FixedPeerAgent
from hlgym.agents.oracle import OracleAgent
from hlgym.atomic import write_json_atomic
from hlgym.envs import PRESETS
from hlgym.envs.datasets import DataNotFoundError

DIGITS = tuple(i for i in PRESETS if PRESETS[i].dataset == "digits")  # every id on the bundled data
SEED = 10_000  # the held-out evaluation seeds of hlgym-train
LIFTED = 1.0  # a goal no episode reaches: every episode runs its rounds
POLICIES = ("random", "fixed", "oracle")


def cases(env_id: str, registered: bool = False) -> list[tuple[str, dict[str, Any], dict[str, float]]]:
    """``(case name, gym.make kwargs with the goal lifted, the registered goal of each
    family)`` of an id: one case (family ``""``), or for a task distribution its train
    split (its families' own goals) and each held-out family. ``registered``: the goals
    stay where they are registered."""
    config = PRESETS[env_id]
    if config.tasks is None:
        return [(env_id, {} if registered else {"goal": LIFTED}, {"": config.goal})]
    spec = config.tasks.to_dict()
    lifted = copy.deepcopy(spec)
    for family in lifted["train"] + lifted["held_out"]:
        if not registered:
            family["goal"] = LIFTED
    out = []
    for split, families in [("train", spec["train"]), *((f["name"], [f]) for f in spec["held_out"])]:
        goals = {f["name"]: float(f.get("goal", config.goal)) for f in families}
        out.append((f"{env_id}:{split}", {"tasks": {**lifted, "split": split}}, goals))
    return out


def curves(agent: Any, env: gym.Env[Any, Any], episodes: int) -> list[dict[str, Any]]:
    """Each episode's accuracy and communication after every round (``accuracy[0]``: after
    reset) and the rounds played inside reset."""
    out = []
    for k in range(episodes):
        if isinstance(agent, OracleAgent):
            agent.reset()
            _, info = env.reset(seed=SEED + k)
            agent.search(env.unwrapped, info)
            levels = agent.levels
            out.append(
                {
                    "accuracy": [float(info["accuracy"])] + [a for a, _ in levels],
                    "comm": [0.0] + [c for _, c in levels],
                    "forced": int(info["round"]),
                    "family": info.get("task", {}).get("family", ""),
                    "steps": agent.searched_steps,
                }
            )
            continue
        rec = evaluate(agent, env, 1, SEED + k).records[0]
        family = getattr(env.unwrapped, "task", {}).get("family", "")  # a task distribution's episode
        comm = np.cumsum([0.0, *rec.hop_costs]).tolist()
        out.append({"accuracy": rec.accuracy, "comm": comm, "forced": rec.forced_rounds, "family": family})
    return out


def at_goal(runs: list[dict[str, Any]], goals: dict[str, float], max_rounds: int) -> dict[str, float]:
    """Share of episodes that reach their family's goal, mean rounds (``max_rounds`` where
    not) and mean communication at the goal (at the end where not)."""
    reached, rounds, comm = [], [], []
    for run in runs:
        goal = goals[run.get("family", "")]
        hit = next((r for r, acc in enumerate(run["accuracy"]) if r > 0 and acc >= goal), None)
        reached.append(hit is not None)
        rounds.append(max_rounds if hit is None else hit + run["forced"])
        comm.append(run["comm"][-1 if hit is None else hit])
    return {"reached": float(np.mean(reached)), "rounds": float(np.mean(rounds)), "comm": float(np.mean(comm))}


def verdict(policies: dict[str, list[dict[str, Any]]], goals: dict[str, float], max_rounds: int) -> dict[str, Any]:
    """The three figures at the families' ``goals`` and whether each criterion holds."""
    goal = next(iter(goals.values())) if len(goals) == 1 else None  # None: each family its own
    random = at_goal(policies["random"], goals, max_rounds)
    fixed = {int(k.split(":")[1]): at_goal(v, goals, max_rounds) for k, v in policies.items() if k.startswith("fixed:")}
    best = min(fixed, key=lambda k: (-fixed[k]["reached"], fixed[k]["rounds"], fixed[k]["comm"], k))
    oracle = at_goal(policies["oracle"], goals, max_rounds)
    checks = {
        "random 20-60%": 0.2 <= random["reached"] <= 0.6,
        "fixed <= random": fixed[best]["reached"] <= random["reached"] and fixed[best]["rounds"] >= random["rounds"],
        "oracle >= 95%": oracle["reached"] >= 0.95,
    }
    return {
        "goal": goal,
        "random": random,
        "fixed_peer": best,
        "fixed": fixed[best],
        "oracle": oracle,
        "checks": checks,
    }


def cell(stats: dict[str, float]) -> str:
    """``reached rounds`` of a policy at a goal."""
    return f"{stats['reached']:4.0%} {stats['rounds']:5.1f}"


def passing_goals(policies: dict[str, list[dict[str, Any]]], max_rounds: int) -> list[float]:
    """The goals (0.01 apart) at which all three criteria hold."""
    goals = [float(g) for g in np.round(np.arange(0.05, 1.0, 0.01), 2)]
    return [g for g in goals if all(verdict(policies, {"": g}, max_rounds)["checks"].values())]


def save(path: Path, key: str, case: str, policy: str, done: dict[str, Any]) -> None:
    """Write one (case, policy) run into ``path``, re-read first: runs of other ids in other
    processes (``--ids`` side by side) write the same file, and each keeps the others'."""
    store: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    entry = store.setdefault(key, {}).setdefault(case, {})
    entry[policy] = done[policy]
    entry.setdefault("_seconds", {})[policy] = done["_seconds"][policy]
    write_json_atomic(path, store)


def main() -> None:
    """Play the missing (case, policy) runs, then print the validity table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", nargs="*", default=list(DIGITS), help="registered ids (default: the digits ids)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--width", type=int, default=4, help="the oracle's beams")
    parser.add_argument("--json", default="bench/validity.json")
    parser.add_argument("--goals", action="store_true", help="also print the goals at which every criterion holds")
    parser.add_argument("--registered", action="store_true", help="play at the registered goals (no --goals)")
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=list(POLICIES),
        help="play only these (the others' runs are read from --json; default: all three)",
    )
    args = parser.parse_args()
    if args.goals and args.registered:
        parser.error("--goals needs the lifted goal: give one of --goals and --registered")
    unknown = sorted(set(args.ids) - set(PRESETS))
    if unknown:
        parser.error(f"--ids {unknown}: accepted: {', '.join(PRESETS)}")
    path = Path(args.json)
    store: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    key = f"episodes={args.episodes} width={args.width} hlgym={hlgym.__version__}"
    key += " registered" if args.registered else ""
    results = store.setdefault(key, {})
    rows = []
    for env_id in args.ids:
        for name, kwargs, goal in cases(env_id, args.registered):
            try:
                env = gym.make(env_id, **kwargs)
            except DataNotFoundError as exc:
                print(f"{name}: skipped, its data is missing ({str(exc).splitlines()[0]})")
                continue
            max_rounds = int(env.unwrapped.config.max_rounds)  # type: ignore[attr-defined]
            n = int(env.action_space.n)  # type: ignore[attr-defined]
            done = results.setdefault(name, {})
            agents: dict[str, Any] = {"random": RandomAgent(0)}  # the oracle last: it costs the most
            agents.update({f"fixed:{k}": FixedPeerAgent(k) for k in range(n)})
            agents["oracle"] = OracleAgent(env, args.width)
            for policy, agent in agents.items():
                if policy in done or policy.split(":")[0] not in args.policies:
                    continue
                start = time.perf_counter()
                done[policy] = curves(agent, env, args.episodes)
                seconds = time.perf_counter() - start
                done.setdefault("_seconds", {})[policy] = seconds
                save(path, key, name, policy, done)
                print(f"{name} {policy}: {seconds:.0f} s", flush=True)
            env.close()
            if path.exists():  # what another process (--policies) has played meanwhile
                done = json.loads(path.read_text()).get(key, {}).get(name, done)
            policies = {k: v for k, v in done.items() if not k.startswith("_")}
            if not set(agents) <= set(policies):  # another process plays the rest
                print(f"{name}: {len(set(agents) - set(policies))} policies still to play; no verdict yet")
                continue
            row = verdict(policies, goal, max_rounds)
            row["case"], row["oracle_s_per_episode"] = name, done["_seconds"]["oracle"] / args.episodes
            if args.goals and list(goal) == [""]:  # one goal to move (not a task split's several)
                row["passing_goals"] = passing_goals(policies, max_rounds)
            rows.append(row)
    print(f"\n{args.episodes} held-out episodes (seeds {SEED}..), oracle width {args.width}; reached / mean rounds")
    head = f"{'case':44} {'goal':>5} {'random':>12} {'best fixed peer':>18} {'oracle':>12} {'oracle s/ep':>11}  valid"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        ok = all(r["checks"].values())
        failed = ", ".join(k for k, v in r["checks"].items() if not v)
        fixed = f"{r['fixed_peer']:>2}: {cell(r['fixed'])}"
        shown = "fam." if r["goal"] is None else f"{r['goal']:.2f}"  # fam.: each family's own goal
        print(
            f"{r['case']:44} {shown:>5} {cell(r['random']):>12} {fixed:>18} {cell(r['oracle']):>12} "
            f"{r['oracle_s_per_episode']:11.1f}  {'yes' if ok else 'NO: ' + failed}"
        )
        if "passing_goals" in r:
            goals = r["passing_goals"]
            print(
                f"{'':44} passing goals: {goals[0]:.2f}..{goals[-1]:.2f}" if goals else f"{'':44} passing goals: none"
            )


if __name__ == "__main__":
    main()
