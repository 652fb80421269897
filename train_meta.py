"""Evaluate a meta-policy on an hlgym environment and write a run folder.

    python train_meta.py                                  # greedy + every baseline, default env
    python train_meta.py --algo random --env hlgym/HL-FashionMNIST-v0 --eval-episodes 10
    python train_meta.py --algo mypkg.agents:UCBAgent --env-kwargs goal=0.8 n_peers=20

The run folder gets ``config.json`` (the resolved arguments and environment config) and
``results.json``: the chosen policy and every built-in baseline evaluated on the same
held-out seeds, with means and 95% confidence intervals.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym

import hlgym
from hlgym.agents import BASELINES, Agent, Evaluation, evaluate
from hlgym.envs import PRESETS, PeerSelectionConfig
from hlgym.envs.config import parse_overrides
from hlgym.runs import RESULTS_SCHEMA_VERSION, evaluation_to_dict, format_table, write_json_atomic


@dataclass
class Args:
    """Command-line arguments (each field is one ``--option``)."""

    algo: str = "greedy"
    """Policy: a built-in (random, round_robin, greedy) or a plug-in 'module:Class'
    whose class, built with no arguments, has reset() and act(obs, info)."""
    env: str = "hlgym/PeerSelection-v0"
    """Registered environment id."""
    env_kwargs: list[str] = field(default_factory=list)
    """Overrides of the environment config, as key=value (values read as JSON)."""
    seed: int = 0
    """Seed of the policy's own randomness."""
    eval_episodes: int = 20
    """Episodes per policy in the evaluation."""
    eval_seed: int = 10_000
    """Seed of the first evaluation episode (episodes use eval_seed, eval_seed+1, ...)."""
    out: str | None = None
    """Run folder; default runs/<env>_<algo>_<seed>."""
    progress: bool = True
    """Show progress bars."""


def parse_args(argv: list[str] | None = None) -> Args:
    """Map the command line onto :class:`Args`; ``--help`` shows every field's docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = _field_docs(Args)
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs[f.name])
        elif f.name == "env_kwargs":
            parser.add_argument(flag, nargs="*", default=default, metavar="KEY=VALUE", help=docs[f.name])
        else:
            kind = int if f.type in ("int", int) else str
            parser.add_argument(flag, type=kind, default=default, help=f"{docs[f.name]} (default: {default})")
    return Args(**vars(parser.parse_args(argv)))


def _field_docs(cls: type) -> dict[str, str]:
    # Attribute docstrings are not kept at run time: read them from the source.
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        is_field = isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        if is_field and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def make_agent(algo: str, seed: int) -> Agent:
    """A built-in agent by name, or a plug-in ``module:Class`` built with no arguments."""
    if algo == "random":
        return BASELINES["random"](seed=seed)  # type: ignore[no-any-return]
    if algo in BASELINES:
        return BASELINES[algo]()  # type: ignore[no-any-return]
    module_name, sep, class_name = algo.partition(":")
    if not sep or not module_name or not class_name:
        raise SystemExit(f"--algo {algo!r} is not accepted; accepted: {', '.join(BASELINES)} or module:Class")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # plug-ins next to where the user runs the command
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--algo {algo!r}: cannot import {class_name} from {module_name}: {exc}") from exc
    agent = cls()
    if not isinstance(agent, Agent):
        raise SystemExit(f"--algo {algo!r}: {class_name} lacks reset() and act(obs, info)")
    return agent


def main(argv: list[str] | None = None) -> dict[str, Evaluation]:
    """Run the command line; returns the evaluations by policy name."""
    args = parse_args(argv)
    if args.env not in PRESETS:
        raise SystemExit(f"--env {args.env!r} is not accepted; accepted: {', '.join(PRESETS)}")
    if args.eval_episodes < 1:
        raise SystemExit(f"--eval-episodes {args.eval_episodes} is not accepted; accepted: an integer >= 1")
    try:
        overrides = parse_overrides(args.env_kwargs)
        config: PeerSelectionConfig = PRESETS[args.env].replace(**overrides)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--env-kwargs: {exc}") from exc
    agent = make_agent(args.algo, args.seed)
    name = args.algo.rpartition(":")[2] if ":" in args.algo else args.algo
    out = Path(args.out or f"runs/{args.env.split('/')[-1]}_{name}_{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / "config.json",
        {"hlgym_version": hlgym.__version__, "args": dataclasses.asdict(args), "env_config": config.to_dict()},
    )

    env = gym.make(args.env, config=config)
    policies: dict[str, Agent] = {name: agent}
    for base in BASELINES:
        if base not in policies:
            policies[base] = make_agent(base, args.seed)
    results: dict[str, Evaluation] = {}
    start = time.perf_counter()
    for pname, pagent in policies.items():
        results[pname] = evaluate(pagent, env, args.eval_episodes, seed=args.eval_seed, progress=args.progress)
    env.close()
    write_json_atomic(
        out / "results.json",
        {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "env_id": args.env,
            "env_config": config.to_dict(),
            "algo": args.algo,
            "eval_seed": args.eval_seed,
            "eval_episodes": args.eval_episodes,
            "wall_time_s": time.perf_counter() - start,
            "policies": {k: evaluation_to_dict(v) for k, v in results.items()},
        },
    )
    print(f"\n{args.env}: {args.eval_episodes} held-out episodes per policy (seeds {args.eval_seed}..)")
    print(format_table(results))
    print(f"\nwrote {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
