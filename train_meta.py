"""Train a meta-policy on an hlgym environment, evaluate it against the baselines, write a run folder.

    python train_meta.py                                   # the default algorithm on the default env
    python train_meta.py --algo hl_dqn --env hlgym/HL-FashionMNIST-v0
    python train_meta.py --algo maskable_ppo --env-kwargs offline_prob=0.2 --timesteps 20000
    python train_meta.py --algo greedy --eval-episodes 50   # a built-in: evaluation only
    python train_meta.py --algo mypkg.agents:UCBAgent      # a plug-in Agent class
    python train_meta.py --out runs/x --resume             # continue a killed run

The run folder holds config.json (the resolved arguments, hyperparameters and env config),
model.zip (or model.pt for hl_dqn), checkpoints/, episodes.csv and monitor.csv (one row per
training episode), tb/ (TensorBoard) and results.json: the trained policy and every
built-in baseline on the same held-out seeds, with means and 95% confidence intervals.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

import hlgym
from hlgym.agents import BASELINES, Agent, Evaluation, evaluate
from hlgym.agents.hl_dqn import HLDQNAgent
from hlgym.atomic import write_bytes_atomic
from hlgym.envs import PRESETS, PeerSelectionConfig
from hlgym.envs.config import parse_overrides
from hlgym.runs import RESULTS_SCHEMA_VERSION, EpisodeLog, evaluation_to_dict, format_table, write_json_atomic

SB3_ALGOS = ("dqn", "ppo", "a2c", "maskable_ppo", "recurrent_ppo")
TRAINED_ALGOS = (*SB3_ALGOS, "hl_dqn")
HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"


@dataclass
class Args:
    """Command-line arguments (each field is one ``--option``)."""

    algo: str = "ppo"
    """Policy: dqn, ppo, a2c (SB3); maskable_ppo, recurrent_ppo (sb3-contrib); hl_dqn (the
    reference's DQN); random, round_robin, greedy (built-in, no training); or 'module:Class'
    for a plug-in agent built with no arguments."""
    env: str = "hlgym/PeerSelection-v0"
    """Registered environment id."""
    env_kwargs: list[str] = field(default_factory=list)
    """Overrides of the environment config, as key=value (values read as JSON)."""
    policy: str | None = None
    """SB3 policy: mlp or attention (per-peer self-attention; ppo and a2c). Default: from
    hyperparams/<algo>.yml, else mlp."""
    timesteps: int | None = None
    """Training steps. Default: from hyperparams/<algo>.yml, else 20000."""
    n_envs: int | None = None
    """Parallel training environments. Default: from hyperparams/<algo>.yml, else 1."""
    seed: int = 0
    """Seed of training (environments seed, seed+1, ...) and of the policy."""
    eval_episodes: int = 20
    """Held-out episodes per policy in the final evaluation."""
    eval_seed: int = 10_000
    """Seed of the first evaluation episode (eval_seed, eval_seed+1, ...); must not
    overlap the training seeds."""
    out: str | None = None
    """Run folder; default runs/<env>_<algo>_<seed>."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint with its saved arguments; a
    --timesteps given with it sets a new training budget (e.g. to extend a finished run)."""
    evaluate_model: str | None = None
    """Skip training: evaluate this saved model (model.zip of an SB3 --algo, or model.pt
    of hl_dqn), e.g. on another --env-kwargs n_peers=..."""
    checkpoint_every: int = 2000
    """Training steps between checkpoints."""
    device: str = "auto"
    """Torch device of the meta-policy: auto, cpu or cuda."""
    progress: bool = True
    """Show progress bars."""


def _field_docs(cls: type) -> dict[str, str]:
    # Attribute docstrings are not kept at run time: read them from the source.
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body.body):
        is_field = isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
        if is_field and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            assert isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def parse_args(argv: list[str] | None = None) -> Args:
    """Map the command line onto :class:`Args`; ``--help`` shows every field's docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = _field_docs(Args)
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs[f.name])
        elif f.name == "env_kwargs":
            parser.add_argument(flag, nargs="*", default=default, metavar="KEY=VALUE", help=docs[f.name])
        else:
            kind = int if f.type in ("int", "int | None") else str
            parser.add_argument(flag, type=kind, default=default, help=f"{docs[f.name]} (default: {default})")
    return Args(**vars(parser.parse_args(argv)))


def make_agent(algo: str, seed: int) -> Agent:
    """A built-in agent by name, or a plug-in ``module:Class`` built with no arguments."""
    if algo == "random":
        return BASELINES["random"](seed=seed)  # type: ignore[no-any-return]
    if algo in BASELINES:
        return BASELINES[algo]()  # type: ignore[no-any-return]
    module_name, sep, class_name = algo.partition(":")
    if not sep or not module_name or not class_name:
        accepted = ", ".join((*TRAINED_ALGOS, *BASELINES))
        raise SystemExit(f"--algo {algo!r} is not accepted; accepted: {accepted} or module:Class")
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


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """``hyperparams/<algo>.yml``'s entry for ``env_id`` (empty if none)."""
    path = HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.exists():
        return {}
    table = yaml.safe_load(path.read_text()) or {}
    return dict(table.get(env_id, {}))


def resolve(args: Args) -> tuple[Args, PeerSelectionConfig, dict[str, Any]]:
    """Validate the arguments, fill defaults from the hyperparameter file, build the config."""
    if args.env not in PRESETS:
        raise SystemExit(f"--env {args.env!r} is not accepted; accepted: {', '.join(PRESETS)}")
    for name in ("eval_episodes", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"--{name.replace('_', '-')} {getattr(args, name)} is not accepted; accepted: an integer >= 1"
            )
    try:
        config = PRESETS[args.env].replace(**parse_overrides(args.env_kwargs))
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--env-kwargs: {exc}") from exc
    hp = load_hyperparams(args.algo, args.env) if args.algo in TRAINED_ALGOS else {}
    args = dataclasses.replace(
        args,
        timesteps=args.timesteps if args.timesteps is not None else int(hp.pop("n_timesteps", 20_000)),
        n_envs=args.n_envs if args.n_envs is not None else int(hp.pop("n_envs", 1)),
        policy=args.policy if args.policy is not None else str(hp.pop("policy", "mlp")),
    )
    for key in ("n_timesteps", "n_envs", "policy"):
        hp.pop(key, None)
    assert args.timesteps is not None and args.n_envs is not None
    if args.timesteps < 1 or args.n_envs < 1:
        raise SystemExit(f"--timesteps {args.timesteps} / --n-envs {args.n_envs}: accepted: integers >= 1")
    train_seeds = set(range(args.seed, args.seed + args.n_envs))
    eval_seeds = set(range(args.eval_seed, args.eval_seed + args.eval_episodes))
    if args.algo in TRAINED_ALGOS and train_seeds & eval_seeds:
        raise SystemExit(
            f"--eval-seed {args.eval_seed} is not accepted: evaluation seeds {min(eval_seeds)}..{max(eval_seeds)} "
            f"overlap the training seeds {min(train_seeds)}..{max(train_seeds)}; accepted: seeds outside them"
        )
    if args.policy == "attention" and config.observation != "peer_features":
        raise SystemExit("--policy attention is not accepted with observation='hl_pca'; accepted: peer_features")
    return args, config, hp


def resume_seed(seed: int, timesteps: int) -> int:
    """The environments' seed after a resume at ``timesteps``: a fresh stream, so the
    resumed run does not replay the first episodes (hashed, so it does not fall among the
    small consecutive evaluation seeds either)."""
    return int(np.random.SeedSequence([seed, timesteps]).generate_state(1)[0])


def train_sb3(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], out: Path) -> Agent:
    """Train (or resume) an SB3 algorithm; returns the trained policy as an Agent."""
    from hlgym.agents import sb3

    assert args.timesteps is not None and args.n_envs is not None and args.policy is not None
    ckpt_dir = out / "checkpoints"
    meta = sb3.read_checkpoint(ckpt_dir) if args.resume else None
    env_seed = args.seed if meta is None else resume_seed(args.seed, int(meta["timesteps"]))
    venv = sb3.make_vec_env(args.env, config, args.n_envs, env_seed)
    if meta is not None:
        model, meta = sb3.load_checkpoint(args.algo, ckpt_dir, venv, args.device)
        log = EpisodeLog(out, keep=int(meta["episodes"]), env_id=args.env)
        print(f"resuming {out} at step {meta['timesteps']} ({meta['episodes']} episodes logged)")
    else:
        try:
            policy = sb3.policy_for(args.algo, args.policy)
        except ValueError as exc:
            raise SystemExit(f"--policy: {exc}") from exc
        model = sb3.algorithm_class(args.algo)(
            policy, venv, seed=args.seed, device=args.device, tensorboard_log=str(out / "tb"), verbose=0, **hp
        )
        log = EpisodeLog(out, env_id=args.env)
    callbacks = [sb3.EpisodeLogCallback(log, config.goal), sb3.CheckpointCallback(ckpt_dir, args.checkpoint_every, log)]
    try:
        remaining = args.timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=callbacks,
                progress_bar=args.progress,
                reset_num_timesteps=meta is None,
                tb_log_name="run",
            )
        final = sb3.save_checkpoint(model, ckpt_dir, log.n_rows)
    finally:
        log.close()
        venv.close()
    write_bytes_atomic(out / "model.zip", final.read_bytes())
    return sb3.SB3Agent(model)


def train_hl_dqn(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], out: Path) -> Agent:
    """Train (or resume) the reference's DQN; returns it as an Agent (greedy)."""
    assert args.timesteps is not None
    env = gym.make(args.env, config=config)
    ckpt = out / "checkpoints" / "hl_dqn.pt"
    if args.resume and ckpt.exists():
        agent = HLDQNAgent.load(ckpt)
        log = EpisodeLog(out, keep=agent.episodes, env_id=args.env)
        print(f"resuming {out} at step {agent.timesteps} ({agent.episodes} episodes)")
    else:
        shape = env.observation_space.shape
        assert shape is not None
        agent = HLDQNAgent(math.prod(shape), config.n_peers, seed=args.seed, **hp)
        log = EpisodeLog(out, env_id=args.env)
    last_ckpt = agent.timesteps
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(out / "tb" / "hl_dqn"))

    def on_episode(rec: Any, ag: HLDQNAgent) -> None:
        nonlocal last_ckpt
        row = {
            "timesteps": ag.timesteps,
            "rounds": rec.rounds,
            "comm_cost": rec.comm_cost,
            "bytes_sent": rec.bytes_sent,
            "final_accuracy": rec.final_accuracy,
            "reached_goal": rec.reached_goal,
            "return": rec.episode_return,
        }
        log.append(row)
        for key, value in row.items():
            if key != "timesteps":
                tb.add_scalar(f"hl/{key}", float(value), ag.timesteps)
        tb.add_scalar("hl/epsilon", ag.epsilon, ag.timesteps)
        if ag.timesteps - last_ckpt >= args.checkpoint_every:
            ag.save(ckpt)  # after the row: the log never holds fewer episodes than the checkpoint
            last_ckpt = ag.timesteps

    try:
        seed = args.seed if agent.timesteps == 0 else resume_seed(args.seed, agent.timesteps)
        agent.learn(env, args.timesteps, seed=seed, callback=on_episode, progress=args.progress)
        agent.save(ckpt)
    finally:
        log.close()
        tb.close()
        env.close()
    agent.save(out / "model.pt")
    return agent


def fresh_run_dir(base: str) -> Path:
    """``base``, or ``base_2``, ``base_3``... : the first that does not exist yet."""
    path, k = Path(base), 1
    while path.exists():
        k += 1
        path = Path(f"{base}_{k}")
    return path


def load_trained(algo: str, path: str, device: str) -> Agent:
    """A saved model of ``algo`` as an Agent."""
    if not Path(path).is_file():
        raise SystemExit(f"--evaluate-model {path!r}: no such file")
    if algo == "hl_dqn":
        return HLDQNAgent.load(path)
    if algo not in SB3_ALGOS:
        raise SystemExit(f"--evaluate-model needs a trained --algo; accepted: {', '.join(TRAINED_ALGOS)}")
    from hlgym.agents import sb3

    return sb3.SB3Agent(sb3.algorithm_class(algo).load(path, device=device))


def main(argv: list[str] | None = None) -> dict[str, Evaluation]:
    """Run the command line; returns the evaluations by policy name."""
    args = parse_args(argv)
    if args.resume:
        if args.out is None or not (Path(args.out) / "config.json").exists():
            raise SystemExit(f"--resume needs --out pointing at a run folder with config.json, got {args.out!r}")
        run_config = Path(args.out) / "config.json"
        saved_config = json.loads(run_config.read_text())
        saved = saved_config["args"]
        timesteps = saved["timesteps"] if args.timesteps is None else args.timesteps
        args = dataclasses.replace(
            Args(**saved), resume=True, progress=args.progress, out=args.out, timesteps=timesteps
        )
    args, config, hp = resolve(args)
    if args.resume and args.timesteps != saved["timesteps"]:
        # A new budget for the run (validated by resolve): the folder records it, so a later
        # --resume keeps it.
        print(f"resume: training budget {saved['timesteps']} -> {args.timesteps} steps")
        saved_config["args"]["timesteps"] = args.timesteps
        write_json_atomic(run_config, saved_config)
    name = args.algo.rpartition(":")[2]
    out = Path(args.out) if args.out else fresh_run_dir(f"runs/{args.env.split('/')[-1]}_{name}_{args.seed}")
    if not args.resume:
        if (out / "config.json").exists():
            raise SystemExit(f"--out {str(out)!r} already holds a run; pass --resume to continue it, or another --out")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out / "config.json",
            {
                "hlgym_version": hlgym.__version__,
                "args": dataclasses.asdict(args),
                "hyperparams": hp,
                "env_config": config.to_dict(),
            },
        )

    start = time.perf_counter()
    if args.evaluate_model is not None:
        agent = load_trained(args.algo, args.evaluate_model, args.device)
    elif args.algo in SB3_ALGOS:
        agent = train_sb3(args, config, hp, out)
    elif args.algo == "hl_dqn":
        agent = train_hl_dqn(args, config, hp, out)
    else:
        agent = make_agent(args.algo, args.seed)
    train_time = time.perf_counter() - start

    env = gym.make(args.env, config=config)
    policies: dict[str, Agent] = {name: agent}
    for base in BASELINES:
        policies.setdefault(base, make_agent(base, args.seed))
    results = {
        pname: evaluate(pagent, env, args.eval_episodes, seed=args.eval_seed, progress=args.progress)
        for pname, pagent in policies.items()
    }
    env.close()
    write_json_atomic(
        out / "results.json",
        {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "env_id": args.env,
            "env_config": config.to_dict(),
            "algo": args.algo,
            "policy": args.policy if args.algo in SB3_ALGOS else None,
            "timesteps": args.timesteps if args.algo in TRAINED_ALGOS and args.evaluate_model is None else 0,
            "evaluated_model": args.evaluate_model,
            "seed": args.seed,
            "eval_seed": args.eval_seed,
            "eval_episodes": args.eval_episodes,
            "train_time_s": train_time,
            "policies": {k: evaluation_to_dict(v) for k, v in results.items()},
        },
    )
    print(f"\n{args.env}: {args.eval_episodes} held-out episodes per policy (seeds {args.eval_seed}..)")
    print(format_table(results))
    print(f"\nwrote {out / 'results.json'}")
    try:
        from hlgym.plots import plot_runs

        files = plot_runs([out], out / "plots")
        print(f"drew {len(files)} figures into {out / 'plots'}")
    except Exception as exc:  # the results are safe on disk; a figure must not fail the run
        print(
            f"could not draw the figures ({type(exc).__name__}: {exc}); try: python -m hlgym.plots {out}",
            file=sys.stderr,
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
