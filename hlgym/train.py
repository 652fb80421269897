"""Train a meta-policy on an hlgym environment, evaluate it against the baselines, write a run folder.

    hlgym-train                                   # the default algorithm on the default env
    hlgym-train --algo hl_dqn --env hlgym/HL-FashionMNIST-v0
    hlgym-train --algo maskable_ppo --env-kwargs offline_prob=0.2 --timesteps 20000
    hlgym-train --algo greedy --eval-episodes 50  # a built-in: evaluation only
    hlgym-train --algo mypkg.agents:UCBAgent      # a plug-in Agent class
    hlgym-train --out runs/x --resume             # continue a killed run
    hlgym-train --seeds 0 1 2 3 4                 # one run per seed, summarised over the seeds
    hlgym-train --backend rllib --num-env-runners 2   # PPO on Ray RLlib (the ray extra)

(``python train_meta.py`` in a checkout is the same command.) The run folder holds
config.json (the resolved arguments, hyperparameters and env config), model.zip (or model.pt
for hl_dqn), checkpoints/, episodes.csv and monitor.csv (one row per training episode), tb/
(TensorBoard) and results.json: the trained policy and every built-in baseline on the same
held-out seeds, with means and 95% confidence intervals (see hlgym.runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

import hlgym
from hlgym.agents import BASELINES, Agent, EpisodeRecord, Evaluation, evaluate, sb3
from hlgym.agents.attention import PeerSetAgent
from hlgym.agents.baselines import LookaheadAgent, StayAgent
from hlgym.agents.hl_dqn import HLDQNAgent
from hlgym.agents.oracle import OracleAgent
from hlgym.envs import PRESETS, PeerSelectionConfig
from hlgym.envs.config import parse_overrides, parse_pairs
from hlgym.runs import RunFolder, across_seeds, format_seeds_table, format_table, fresh_run_dir

TRAINED_ALGOS = (*sb3.ALGORITHMS, "hl_dqn")
SEEDED = ("random", "power_of_choice")  # the baselines that draw, from --seed
# Built-in agents outside every run's table: they search copies of the env (lookahead,
# oracle: n_peers or width * n_peers env steps per step) or evaluate every peer (stay).
SEARCHERS: dict[str, type] = {"lookahead": LookaheadAgent, "oracle": OracleAgent, "stay": StayAgent}
BACKENDS = ("sb3", "rllib")
# What a training uses when hyperparams/<algo>.yml has no entry for the env id.
DEFAULT_TIMESTEPS = 20_000
DEFAULT_N_ENVS = 1
DEFAULT_POLICY = "mlp"
# Keys of a hyperparameter entry that set options; the others go to the algorithm.
OPTION_KEYS = {"n_timesteps": "timesteps", "n_envs": "n_envs", "policy": "policy"}
# The shipped files are rl-zoo3's format (python -m rl_zoo3.train --conf-file reads them): a
# policy is an SB3 alias or an importable class; --policy names them mlp and attention.
YAML_POLICIES = {"MlpPolicy": "mlp", "MlpLstmPolicy": "mlp", "hlgym.agents.attention.PeerAttentionPolicy": "attention"}


def _help(text: str) -> dict[str, str]:
    return {"help": " ".join(text.split())}


@dataclass
class Args:
    """Command-line arguments: each field is one ``--option``, parsed by its type hint."""

    algo: str = field(
        default="ppo",
        metadata=_help(
            """Policy: dqn, ppo, a2c (SB3); maskable_ppo, recurrent_ppo (sb3-contrib); hl_dqn (the
            reference's DQN); random, round_robin, greedy, power_of_choice (built-in, no
            training; every run's table has them); lookahead (tries every peer on a copy of the
            env, n_peers env steps per step), oracle (a beam search over copies that sees the
            future: a ceiling; width*n_peers env steps per step), stay (the best fixed peer of
            the evaluation episodes; n_peers evaluations); or 'module:Class' for a plug-in
            agent built with --agent-kwargs."""
        ),
    )
    env: str = field(default="hlgym/PeerSelection-v0", metadata=_help("Registered environment id."))
    env_kwargs: list[str] = field(
        default_factory=list,
        metadata={
            **_help("Overrides of the environment config, as key=value (values read as JSON)."),
            "metavar": "KEY=VALUE",
        },
    )
    agent_kwargs: list[str] = field(
        default_factory=list,
        metadata={
            **_help(
                """Keyword arguments of a built-in or plug-in agent, as key=value (values read as
                JSON), e.g. --algo lookahead --agent-kwargs horizon=2 by=accuracy."""
            ),
            "metavar": "KEY=VALUE",
        },
    )
    policy: str | None = field(
        default=None,
        metadata=_help(
            """SB3 policy: mlp or attention (per-peer self-attention; ppo and a2c). Default: from
            hyperparams/<algo>.yml, else mlp."""
        ),
    )
    timesteps: int | None = field(
        default=None, metadata=_help(f"Training steps. Default: from hyperparams/<algo>.yml, else {DEFAULT_TIMESTEPS}.")
    )
    n_envs: int | None = field(
        default=None,
        metadata=_help(f"Parallel training environments. Default: from hyperparams/<algo>.yml, else {DEFAULT_N_ENVS}."),
    )
    seed: int = field(default=0, metadata=_help("Seed of training (environments seed, seed+1, ...) and of the policy."))
    seeds: list[int] = field(
        default_factory=list,
        metadata={
            **_help(
                """Train one run per seed (instead of --seed), each in OUT/seed_<k>/ and resumable, all
                evaluated on the same held-out episodes; OUT/results.json holds the mean over the
                seeds and its 95%% interval for every policy and metric (default OUT:
                runs/<env>_<algo>_seeds_<first>-<last>)."""
            ),
            "metavar": "SEED",
        },
    )
    eval_episodes: int = field(default=20, metadata=_help("Held-out episodes per policy in the final evaluation."))
    eval_seed: int = field(
        default=10_000,
        metadata=_help(
            """Seed of the first evaluation episode (eval_seed, eval_seed+1, ...); must not overlap
            the training seeds."""
        ),
    )
    out: str | None = field(
        default=None,
        metadata=_help(
            """Run folder; default runs/<env>_<algo>_<seed> (runs/<env>_<algo>_eval_<seed> with
            --evaluate-model), with _2, _3... appended when it exists."""
        ),
    )
    resume: bool = field(
        default=False,
        metadata=_help(
            """Continue the run in --out from its last checkpoint with its saved arguments; a
            --timesteps given with it sets a new training budget (e.g. to extend a finished run)."""
        ),
    )
    evaluate_model: str | None = field(
        default=None,
        metadata=_help(
            """Skip training: evaluate this saved model (model.zip of an SB3 --algo, or model.pt of
            hl_dqn), e.g. on another --env-kwargs n_peers=..."""
        ),
    )
    checkpoint_every: int = field(default=2000, metadata=_help("Training steps between checkpoints."))
    backend: str = field(
        default="sb3",
        metadata=_help(
            """Training engine: sb3 (this process, the batched env), or rllib (Ray RLlib's PPO with
            the attention policy; env runners on this machine or a cluster; needs the ray extra:
            pip install -c constraints-ray.txt -e '.[ray]'). The run folder, evaluation and
            results.json are the same."""
        ),
    )
    num_env_runners: int = field(
        default=2,
        metadata=_help(
            """--backend rllib: Ray env runners (processes with one env and one CPU each); 0
            samples on the driver. --n-envs still sets the batch: n_steps * n_envs steps per update."""
        ),
    )
    ray_address: str | None = field(
        default=None,
        metadata=_help(
            """--backend rllib: a running Ray cluster to join (auto: the one this machine is part
            of, after ray start); default: start a local Ray with this machine's cores."""
        ),
    )
    device: str = field(default="auto", metadata=_help("Torch device of the meta-policy: auto, cpu or cuda."))
    progress: bool = field(default=True, metadata=_help("Show progress bars."))


def _option_type(hint: Any) -> tuple[type, bool]:
    """The element type an option's values parse as, and whether it takes several values."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [p for p in params if p is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"option type {hint} is not supported: one type or None")
        return _option_type(inner[0])
    if origin is list:
        return params[0], True
    if isinstance(hint, type):
        return hint, False
    raise TypeError(f"option type {hint} is not supported")


def build_parser() -> argparse.ArgumentParser:
    """The parser of :class:`Args`: one ``--option`` per field, typed by its type hint."""
    parser = argparse.ArgumentParser(
        prog="hlgym-train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "The default run (ppo on hlgym/PeerSelection-v0, 50,000 steps) takes about 2.5-3.5 minutes\n"
            "on 2 cores. A step of the HL presets (a CNN evaluated on 10,000 test images) takes about\n"
            "0.45 s there, so their shipped budgets (2,000 steps; hl_dqn 4,320) take about 15 and 35\n"
            "minutes; --env-kwargs eval_samples=2000 makes their steps about 3 times faster."
        ),
    )
    hints = typing.get_type_hints(Args)
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind, many = _option_type(hints[f.name])
        text = f.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif many:
            metavar = f.metadata.get("metavar", "VALUE")
            parser.add_argument(flag, nargs="*", type=kind, default=default, metavar=metavar, help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default})")
    return parser


def parse_args(argv: list[str] | None = None) -> Args:
    """Map the command line onto :class:`Args`; ``--help`` shows every field's help."""
    return Args(**vars(build_parser().parse_args(argv)))


def make_agent(algo: str, seed: int, kwargs: dict[str, Any] | None = None) -> Agent:
    """A built-in agent by name (``random`` and ``power_of_choice`` seeded with ``seed``;
    ``lookahead`` and ``oracle`` bound to their env when evaluated; ``stay`` choosing its
    peer on the evaluation episodes), or a plug-in ``module:Class``, built with ``kwargs``."""
    kwargs = kwargs or {}
    if algo in SEARCHERS:
        cls: Any = SEARCHERS[algo]
    elif algo in BASELINES:
        cls = BASELINES[algo]
        if algo in SEEDED:
            kwargs = {"seed": seed, **kwargs}
    else:
        module_name, sep, class_name = algo.partition(":")
        if not sep or not module_name or not class_name:
            accepted = ", ".join((*TRAINED_ALGOS, *BASELINES, *SEARCHERS))
            raise SystemExit(f"--algo {algo!r} is not accepted; accepted: {accepted} or module:Class")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # plug-ins next to where the user runs the command
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise SystemExit(f"--algo {algo!r}: cannot import {class_name} from {module_name}: {exc}") from exc
    try:
        agent = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--agent-kwargs for --algo {algo!r}: {exc}") from exc
    if not isinstance(agent, Agent):
        raise SystemExit(f"--algo {algo!r}: {type(agent).__name__} lacks reset() and act(obs, info)")
    return agent


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any] | None:
    """The entry for ``env_id`` in the shipped ``hlgym/hyperparams/<algo>.yml`` (rl-zoo3
    style), or None when there is none."""
    path = resources.files("hlgym") / "hyperparams" / f"{algo}.yml"
    if not path.is_file():
        return None
    table = yaml.safe_load(path.read_text()) or {}
    entry = table.get(env_id)
    return None if entry is None else dict(entry)


def resolve(args: Args) -> tuple[Args, PeerSelectionConfig, dict[str, Any]]:
    """Validate every argument and fill defaults from the hyperparameter file; returns the
    arguments, the env config and the algorithm's keyword arguments. Nothing is written."""
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
    hp: dict[str, Any] = {}
    if args.algo in TRAINED_ALGOS:
        entry = load_hyperparams(args.algo, args.env)
        if entry is None and args.evaluate_model is None:
            print(
                f"hyperparams/{args.algo}.yml has no entry for {args.env}: using the defaults (timesteps "
                f"{DEFAULT_TIMESTEPS}, n_envs {DEFAULT_N_ENVS}, policy {DEFAULT_POLICY}, the algorithm's own settings)"
            )
        hp = entry or {}
    options = {opt: hp.pop(key) for key, opt in OPTION_KEYS.items() if key in hp}
    if "policy" in options:
        options["policy"] = YAML_POLICIES.get(options["policy"], options["policy"])
    args = dataclasses.replace(
        args,
        timesteps=args.timesteps if args.timesteps is not None else int(options.get("timesteps", DEFAULT_TIMESTEPS)),
        n_envs=args.n_envs if args.n_envs is not None else int(options.get("n_envs", DEFAULT_N_ENVS)),
        policy=args.policy
        if args.policy is not None
        else str(options.get("policy", "attention" if args.backend == "rllib" else DEFAULT_POLICY)),
    )
    assert args.timesteps is not None and args.n_envs is not None and args.policy is not None
    if args.timesteps < 1 or args.n_envs < 1:
        raise SystemExit(f"--timesteps {args.timesteps} / --n-envs {args.n_envs}: accepted: integers >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(
            f"--seeds {' '.join(map(str, args.seeds))} is not accepted: a seed repeats; accepted: distinct seeds"
        )
    if args.seeds and args.evaluate_model is not None:
        raise SystemExit(
            "--seeds with --evaluate-model is not accepted: --seeds trains one run per seed; accepted: one of them"
        )
    if args.backend not in BACKENDS:
        raise SystemExit(f"--backend {args.backend!r} is not accepted; accepted: {', '.join(BACKENDS)}")
    trainer = trainer_for(args)
    # The envs' seeds: seed + i for SB3's copy i; seed + i for RLlib's env runner i (0: the driver's).
    copies = args.n_envs if args.backend == "sb3" else args.num_env_runners + 1
    train_seeds = {s for seed in (args.seeds or [args.seed]) for s in range(seed, seed + copies)}
    eval_seeds = set(range(args.eval_seed, args.eval_seed + args.eval_episodes))
    if args.algo in TRAINED_ALGOS and train_seeds & eval_seeds:
        raise SystemExit(
            f"--eval-seed {args.eval_seed} is not accepted: evaluation seeds {min(eval_seeds)}..{max(eval_seeds)} "
            f"overlap the training seeds {min(train_seeds)}..{max(train_seeds)}; accepted: seeds outside them"
        )
    if args.evaluate_model is not None:
        if trainer.load is None:
            raise SystemExit(f"--evaluate-model needs a trained --algo; accepted: {', '.join(TRAINED_ALGOS)}")
        if not Path(args.evaluate_model).is_file():
            raise SystemExit(f"--evaluate-model {args.evaluate_model!r}: no such file")
    if args.agent_kwargs and args.algo in TRAINED_ALGOS:
        raise SystemExit(
            f"--agent-kwargs is not accepted with --algo {args.algo}: a trained algorithm's settings come from "
            f"hyperparams/{args.algo}.yml; accepted with built-in and plug-in agents"
        )
    trainer.check(args, config, hp)
    return args, config, hp


@dataclass(frozen=True)
class Trainer:
    """One way a run gets its policy, behind :func:`trainer_for`: the options it checks
    (after the ones every run shares, in :func:`resolve`), how it trains (or builds) the
    policy into a run folder, and how it loads a saved one (None: it saves none)."""

    name: str
    handles: Callable[[Args], bool]
    check: Callable[[Args, PeerSelectionConfig, dict[str, Any]], None]
    train: Callable[[Args, PeerSelectionConfig, dict[str, Any], RunFolder], Agent]
    load: Callable[[Args, str], Agent] | None = None


def trainer_for(args: Args) -> Trainer:
    """The first of :data:`TRAINERS` that handles ``args`` (the last handles any --algo)."""
    return next(t for t in TRAINERS if t.handles(args))


def _check_sb3(args: Args, config: PeerSelectionConfig, hp: dict[str, Any]) -> None:
    """An SB3 or sb3-contrib algorithm: the policy must suit it and the observation."""
    if args.evaluate_model is None:
        assert args.policy is not None
        try:
            sb3.policy_for(args.algo, args.policy)
        except ValueError as exc:
            raise SystemExit(f"--policy: {exc}") from exc
    if args.policy == "attention" and config.observation != "peer_features":
        raise SystemExit("--policy attention is not accepted with observation='hl_pca'; accepted: peer_features")


def _check_nothing(args: Args, config: PeerSelectionConfig, hp: dict[str, Any]) -> None:
    """hl_dqn: the shared checks are all it needs."""


def _check_agent(args: Args, config: PeerSelectionConfig, hp: dict[str, Any]) -> None:
    """A built-in or plug-in agent that cannot be built fails here, before any file."""
    _build_agent(args)


def _build_agent(args: Args, *_: Any) -> Agent:
    try:
        kwargs = parse_pairs(args.agent_kwargs, "--agent-kwargs")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    return make_agent(args.algo, args.seed, kwargs)


def _check_rllib(args: Args, config: PeerSelectionConfig, hp: dict[str, Any]) -> None:
    """What ``--backend rllib`` accepts: PPO with the attention policy on a peer_features
    observation, Ray installed, at least 0 env runners, hyperparameters RLlib's PPO has."""
    if args.algo != "ppo":
        raise SystemExit(f"--backend rllib is not accepted with --algo {args.algo!r}; accepted: --algo ppo")
    if args.policy != "attention":
        raise SystemExit(
            f"--policy {args.policy} is not accepted with --backend rllib; accepted: attention (the RLModule)"
        )
    if config.observation != "peer_features":
        raise SystemExit(
            f"--backend rllib is not accepted with observation={config.observation!r}; accepted: peer_features"
        )
    if args.num_env_runners < 0:
        raise SystemExit(f"--num-env-runners {args.num_env_runners} is not accepted; accepted: an integer >= 0")
    if args.evaluate_model is not None:
        return  # a saved model.pt is evaluated without Ray
    if importlib.util.find_spec("ray") is None:
        raise SystemExit(
            "--backend rllib needs Ray, which is not installed: pip install -c constraints-ray.txt -e '.[ray]'"
        )
    from hlgym.agents import rllib

    try:
        rllib.rllib_hyperparams({k: v for k, v in hp.items() if k != "policy_kwargs"}, args.n_envs or 1)
    except ValueError as exc:
        raise SystemExit(f"hyperparams/ppo.yml for {args.env}: {exc}") from exc


def resume_seed(seed: int, timesteps: int) -> int:
    """The environments' seed after a resume at ``timesteps``: a fresh stream, so the
    resumed run does not replay the first episodes (hashed, so it does not fall among the
    small consecutive evaluation seeds either)."""
    return int(np.random.SeedSequence([seed, timesteps]).generate_state(1)[0])


def train_sb3(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], run: RunFolder) -> Agent:
    """Train (or resume) an SB3 algorithm; returns the trained policy as an Agent."""
    assert args.timesteps is not None and args.n_envs is not None and args.policy is not None
    manifest = run.latest_checkpoint() if args.resume else None
    env_seed = args.seed if manifest is None else resume_seed(args.seed, int(manifest["timesteps"]))
    venv = sb3.make_vec_env(args.env, config, args.n_envs, env_seed)
    if manifest is not None:
        model, manifest = sb3.load_checkpoint(args.algo, run, venv, args.device)
        log = run.episode_log(keep=int(manifest["episodes"]), env_id=args.env)
        print(f"resuming {run.path} at step {manifest['timesteps']} ({manifest['episodes']} episodes logged)")
    else:
        model = sb3.algorithm_class(args.algo)(
            sb3.policy_for(args.algo, args.policy),
            venv,
            seed=args.seed,
            device=args.device,
            tensorboard_log=str(run.tensorboard),
            verbose=0,
            **hp,
        )
        log = run.episode_log(env_id=args.env)
    callbacks = [sb3.EpisodeLogCallback(log, config.goal), sb3.CheckpointCallback(run, args.checkpoint_every, log)]
    try:
        remaining = args.timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=callbacks,
                progress_bar=args.progress,
                reset_num_timesteps=manifest is None,
                tb_log_name="run",
            )
        final = sb3.save_checkpoint(model, run, log.n_rows)
    finally:
        log.close()
        venv.close()
    run.write_model(args.algo, final.read_bytes())
    return sb3.SB3Agent(model)


def train_rllib(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], run: RunFolder) -> Agent:
    """Train (or resume) PPO on Ray RLlib (:mod:`hlgym.agents.rllib`); returns the final
    attention network as an Agent."""
    from hlgym.agents import rllib

    assert args.timesteps is not None and args.n_envs is not None
    manifest = run.latest_checkpoint() if args.resume else None
    hp = dict(hp)
    net_kwargs = hp.pop("policy_kwargs", None)
    cfg = rllib.ppo_config(  # resolve checked the hyperparameters
        args.env,
        config,
        hp,
        n_envs=args.n_envs,
        num_env_runners=args.num_env_runners,
        seed=args.seed if manifest is None else resume_seed(args.seed, int(manifest["timesteps"])),
        net_kwargs=net_kwargs,
    )
    log = run.episode_log(keep=None if manifest is None else int(manifest["episodes"]), env_id=args.env)
    if manifest is not None:
        print(f"resuming {run.path} at step {manifest['timesteps']} ({manifest['episodes']} episodes logged)")
    try:
        return rllib.train(
            run,
            log,
            cfg,
            goal=config.goal,
            timesteps=args.timesteps,
            checkpoint_every=args.checkpoint_every,
            resume_from=None if manifest is None else manifest["model"],
            ray_address=args.ray_address,
            progress=args.progress,
        )
    finally:
        log.close()


def train_hl_dqn(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], run: RunFolder) -> Agent:
    """Train (or resume) the reference's DQN; returns it as an Agent (greedy)."""
    assert args.timesteps is not None
    env = gym.make(args.env, config=config)
    if args.resume and run.hl_dqn_checkpoint.exists():
        agent = HLDQNAgent.load(run.hl_dqn_checkpoint)
        log = run.episode_log(keep=agent.episodes, env_id=args.env)
        print(f"resuming {run.path} at step {agent.timesteps} ({agent.episodes} episodes)")
    else:
        shape = env.observation_space.shape
        assert shape is not None
        assert isinstance(env.action_space, gym.spaces.Discrete)
        agent = HLDQNAgent(math.prod(shape), int(env.action_space.n), seed=args.seed, **hp)  # max_peers with tasks
        log = run.episode_log(env_id=args.env)
    last_ckpt = agent.timesteps
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(run.tensorboard / "hl_dqn"))

    def on_episode(rec: EpisodeRecord, ag: HLDQNAgent) -> None:
        nonlocal last_ckpt
        row = log.append(ag.timesteps, rec.outcome())
        for key in sb3.TENSORBOARD_KEYS:
            tb.add_scalar(f"hl/{key}", float(row[key]), ag.timesteps)
        tb.add_scalar("hl/epsilon", ag.epsilon, ag.timesteps)
        if ag.timesteps - last_ckpt >= args.checkpoint_every:
            run.write_hl_dqn_checkpoint(ag.to_bytes())  # after the row: the log never holds fewer episodes
            last_ckpt = ag.timesteps

    try:
        seed = args.seed if agent.timesteps == 0 else resume_seed(args.seed, agent.timesteps)
        agent.learn(env, args.timesteps, seed=seed, callback=on_episode, progress=args.progress)
        run.write_hl_dqn_checkpoint(agent.to_bytes())
    finally:
        log.close()
        tb.close()
        env.close()
    run.write_model("hl_dqn", agent.to_bytes())
    return agent


def _load_rllib(args: Args, path: str) -> Agent:
    try:
        return PeerSetAgent.load(path)
    except ValueError as exc:
        raise SystemExit(f"--evaluate-model: {exc}") from exc


def _load_sb3(args: Args, path: str) -> Agent:
    return sb3.SB3Agent(sb3.algorithm_class(args.algo).load(path, device=args.device))


TRAINERS: tuple[Trainer, ...] = (
    Trainer("rllib", lambda a: a.backend == "rllib", _check_rllib, train_rllib, _load_rllib),
    Trainer("sb3", lambda a: a.algo in sb3.ALGORITHMS, _check_sb3, train_sb3, _load_sb3),
    Trainer(
        "hl_dqn", lambda a: a.algo == "hl_dqn", _check_nothing, train_hl_dqn, lambda a, path: HLDQNAgent.load(path)
    ),
    Trainer("agent", lambda a: True, _check_agent, _build_agent),
)
"""The training backends, in the order :func:`trainer_for` asks them."""


def default_run_dir(args: Args) -> str:
    """``runs/<env>_<algo>_<seed>``, ``runs/<env>_<algo>_eval_<seed>`` for an evaluation of a
    saved model, or ``runs/<env>_<algo>_seeds_<first>-<last>`` for a run over several seeds;
    :func:`~hlgym.runs.fresh_run_dir` appends ``_2``, ``_3``... when it exists."""
    base = f"runs/{args.env.split('/')[-1]}_{args.algo.rpartition(':')[2]}"
    if args.seeds:
        return f"{base}_seeds_{args.seeds[0]}-{args.seeds[-1]}"
    kind = "_eval" if args.evaluate_model is not None else ""
    return f"{base}{kind}_{args.seed}"


def _resumed_args(args: Args) -> tuple[Args, RunFolder, dict[str, Any]]:
    """The saved arguments of the run ``--resume`` continues, with this call's budget."""
    if args.out is None or not RunFolder(args.out).has_run():
        raise SystemExit(f"--resume needs --out pointing at a run folder with config.json, got {args.out!r}")
    run = RunFolder(args.out)
    saved = run.read_config()
    timesteps = saved["args"]["timesteps"] if args.timesteps is None else args.timesteps
    resumed = dataclasses.replace(
        Args(**saved["args"]), resume=True, progress=args.progress, out=args.out, timesteps=timesteps
    )
    return resumed, run, saved


# A resumed run: its folder and the config.json it was started with.
Resumed = tuple[RunFolder, dict[str, Any]]


def main(argv: list[str] | None = None) -> dict[str, Evaluation]:
    """Run the command line; returns the evaluations by policy name (with ``--seeds``, the
    last seed's; the across-seed summary is in the run folder's ``results.json``)."""
    args = parse_args(argv)
    resumed: Resumed | None = None
    if args.resume:
        args, run, saved = _resumed_args(args)
        resumed = (run, saved)
    return run_seeds(args, resumed) if args.seeds else run_one(args, resumed)


def _open_run(args: Args, resumed: Resumed | None, config: dict[str, Any], what: str = "") -> RunFolder:
    """The run's folder: the resumed one, whose config.json records a new ``--timesteps``
    budget (validated by resolve) so that a later --resume keeps it; or a fresh one, refused
    if it holds a run, with ``config`` written first."""
    if resumed is not None:
        run, saved = resumed
        if args.timesteps != saved["args"]["timesteps"]:
            print(f"resume: training budget {saved['args']['timesteps']} -> {args.timesteps} steps{what}")
            saved["args"]["timesteps"] = args.timesteps
            run.write_config(saved)
        return run
    run = RunFolder(args.out or fresh_run_dir(default_run_dir(args)))
    if run.has_run():
        raise SystemExit(f"--out {str(run.path)!r} already holds a run; pass --resume to continue it, or another --out")
    print(f"run folder: {run.path}{what}")
    run.write_config(config)
    return run


def run_seeds(args: Args, resumed: Resumed | None) -> dict[str, Evaluation]:
    """Train one run per seed of ``args.seeds`` in ``seed_<k>/`` of one folder (each resumed
    where it stopped; a finished one with this budget is read back, not redone), then write
    and print the across-seed summary; ``resumed`` is a resumed run over seeds."""
    # Every option, for every seed, is checked before anything is written; the budget, envs
    # and policy are resolved from the hyperparameter file once, for every seed.
    resolved, config, _ = resolve(args)
    args = dataclasses.replace(args, timesteps=resolved.timesteps, n_envs=resolved.n_envs, policy=resolved.policy)
    run = _open_run(
        args,
        resumed,
        {"hlgym_version": hlgym.__version__, "args": dataclasses.asdict(args)},
        " (one run per seed in seed_<k>/)" if resumed is None else " for every seed",
    )
    per_seed: dict[int, dict[str, Evaluation]] = {}
    for k, seed in enumerate(args.seeds):
        sub = run.seed_run(seed)
        print(f"\n== seed {seed} ({k + 1} of {len(args.seeds)}): {sub.path}")
        one = dataclasses.replace(args, seed=seed, seeds=[], out=str(sub.path), resume=sub.has_run())
        if sub.results_file.is_file() and _finished(sub, one.timesteps):
            per_seed[seed] = sub.read_evaluations()
            print("finished earlier: read its results.json")
        elif sub.has_run():
            one, _, saved = _resumed_args(one)
            per_seed[seed] = run_one(one, (sub, saved))
        else:
            per_seed[seed] = run_one(one, None)
    policies = across_seeds(per_seed)
    # A task distribution: the same summary for each held-out family.
    by_family = {seed: run.seed_run(seed).read_family_evaluations() for seed in args.seeds}
    families = {
        name: across_seeds({seed: by_family[seed][name] for seed in args.seeds}) for name in by_family[args.seeds[0]]
    }
    run.write_seed_results(
        {
            "env_id": args.env,
            "env_config": config.to_dict(),
            "algo": args.algo,
            "timesteps": args.timesteps,
            "seeds": list(args.seeds),
            "runs": {str(seed): run.seed_run(seed).path.name for seed in args.seeds},
            "eval_seed": args.eval_seed,
            "eval_episodes": args.eval_episodes,
            **({"families": families} if families else {}),
        },
        policies,
    )
    n = len(args.seeds)
    print(
        f"\n{args.env}: {n} training seeds ({' '.join(map(str, args.seeds))}), each evaluated on the same "
        f"{args.eval_episodes} held-out episodes (seeds {args.eval_seed}..).\nThe mean over the seeds of each "
        f"seed's mean ± the half-width of its 95% t-interval (n = {n}); changes against the same seed's random."
    )
    print(format_seeds_table(policies))
    for name, summary in families.items():
        print(f"\nheld-out family {name}, over the {n} seeds:")
        print(format_seeds_table(summary))
    print(f"\nwrote {run.results_file}")
    _draw(run)
    return per_seed[args.seeds[-1]]


def _finished(run: RunFolder, timesteps: int | None) -> bool:
    """Whether ``run``'s results are of a training with ``timesteps`` steps (a built-in trains none)."""
    done = run.read_results()
    return done.get("timesteps") in (timesteps, 0)


def run_one(args: Args, resumed: Resumed | None) -> dict[str, Evaluation]:
    """Train (or continue the ``resumed`` run) and evaluate one run; returns the evaluations
    by policy name."""
    args, config, hp = resolve(args)
    body = {"hlgym_version": hlgym.__version__, "args": dataclasses.asdict(args), "hyperparams": hp}
    run = _open_run(args, resumed, {**body, "env_config": config.to_dict()})

    start = time.perf_counter()
    trainer = trainer_for(args)
    if args.evaluate_model is not None:
        assert trainer.load is not None  # resolve checked it
        agent = trainer.load(args, args.evaluate_model)
    else:
        agent = trainer.train(args, config, hp, run)
    train_time = time.perf_counter() - start

    policies: dict[str, Agent] = {args.algo.rpartition(":")[2]: agent}
    for base, cls in BASELINES.items():
        if config.observation in getattr(cls, "observations", (config.observation,)):
            policies.setdefault(base, make_agent(base, args.seed))
    results = evaluate_all(args, config, policies)
    families: dict[str, dict[str, Evaluation]] = {}
    if config.tasks is not None:  # a task distribution: also each held-out family on its own
        for family in config.tasks.held_out:
            only = config.replace(tasks=dataclasses.replace(config.tasks, split=family.name))
            families[family.name] = evaluate_all(args, only, policies)
    run.write_results(
        {
            "env_id": args.env,
            "env_config": config.to_dict(),
            "algo": args.algo,
            "policy": args.policy if args.algo in sb3.ALGORITHMS else None,
            "backend": args.backend,
            "timesteps": args.timesteps if args.algo in TRAINED_ALGOS and args.evaluate_model is None else 0,
            "evaluated_model": args.evaluate_model,
            "seed": args.seed,
            "eval_seed": args.eval_seed,
            "eval_episodes": args.eval_episodes,
            "train_time_s": train_time,
        },
        results,
        families,
    )
    split = f" (tasks of the {config.tasks.split} split)" if config.tasks is not None else ""
    kwargs = f", --env-kwargs {' '.join(args.env_kwargs)}" if args.env_kwargs else ""
    print(f"\n{args.env}{kwargs}: {args.eval_episodes} held-out episodes per policy{split} (seeds {args.eval_seed}..)")
    print(format_table(results))
    for name, evaluations in families.items():
        print(f"\nheld-out family {name}: {args.eval_episodes} episodes per policy (seeds {args.eval_seed}..)")
        print(format_table(evaluations))
    print(f"\nwrote {run.results_file}")
    _draw(run)
    return results


def evaluate_all(args: Args, config: PeerSelectionConfig, policies: Mapping[str, Agent]) -> dict[str, Evaluation]:
    """Every policy on the same ``args.eval_episodes`` held-out episodes of ``config``'s env."""
    env = gym.make(args.env, config=config)
    try:
        out = {}
        for name, agent in policies.items():
            if isinstance(agent, StayAgent):
                out[name] = agent.choose(env, args.eval_episodes, seed=args.eval_seed, progress=args.progress)
                continue
            out[name] = evaluate(
                agent, env, args.eval_episodes, seed=args.eval_seed, progress=args.progress, label=name
            )
        return out
    finally:
        env.close()


def _draw(run: RunFolder) -> None:
    """Draw the run's figures into its ``plots/``; a failure is reported, never raised."""
    try:
        from hlgym.plots import plot_runs

        files = plot_runs([run.path], run.plots)
        print(f"drew {len(files)} figures into {run.plots}")
    except Exception as exc:  # the results are safe on disk; a figure must not fail the run
        print(
            f"could not draw the figures ({type(exc).__name__}: {exc}); try: python -m hlgym.plots {run.path}",
            file=sys.stderr,
        )


def cli() -> None:
    """The ``hlgym-train`` console script."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
