"""``hlgym-train``: train a meta-policy on an hlgym environment, evaluate it against the
baselines on held-out episodes, write a run folder (:mod:`hlgym.runs`).

The command line (:class:`~hlgym.options.Args`, its usage and the console script's entry)
is :mod:`hlgym.options`, which imports no trainer, so ``--help`` and a refused option come
back fast; this module resolves and checks the options, picks the backend
(:data:`TRAINERS`) and runs it. A multi-agent ``--env`` (the gossip ids) goes to
:mod:`hlgym.train_gossip`, in a run folder this module opens the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

import hlgym
from hlgym.agents import BASELINES, Agent, EpisodeRecord, Evaluation, evaluate, imitation, sb3
from hlgym.agents.attention import PeerSetAgent
from hlgym.agents.baselines import LookaheadAgent, StayAgent
from hlgym.agents.hl_dqn import HLDQNAgent
from hlgym.agents.oracle import OracleAgent
from hlgym.envs import PRESETS, PeerSelectionConfig, registration
from hlgym.envs.config import parse_overrides, parse_pairs
from hlgym.envs.datasets import DataNotFoundError
from hlgym.envs.registration import MULTIAGENT_PRESETS
from hlgym.options import (
    BACKENDS,
    DEFAULT_N_ENVS,
    DEFAULT_POLICY,
    DEFAULT_TIMESTEPS,
    Args,
    check_device,
    given_options,
    import_plugin,
    parse_args,
)
from hlgym.runs import RunFolder, across_seeds, format_seeds_table, format_table, fresh_run_dir, resume_seed

TRAINED_ALGOS = (*sb3.ALGORITHMS, "hl_dqn")
# The actor-critics --pretrain clones (a policy of action probabilities and values, no recurrent state).
PRETRAINED_ALGOS = ("ppo", "a2c", "maskable_ppo")
SEEDED = ("random", "power_of_choice")  # the baselines that draw, from --seed
# Built-in agents outside every run's table: they search copies of the env (lookahead,
# oracle: n_peers or width * n_peers env steps per step) or evaluate every peer (stay).
SEARCHERS: dict[str, type] = {"lookahead": LookaheadAgent, "oracle": OracleAgent, "stay": StayAgent}
# Keys of a hyperparameter entry that set options; the others go to the algorithm.
OPTION_KEYS = {"n_timesteps": "timesteps", "n_envs": "n_envs", "policy": "policy"}
# The shipped files are rl-zoo3's format (python -m rl_zoo3.train --conf-file reads them): a
# policy is an SB3 alias or an importable class; --policy names them mlp and attention.
YAML_POLICIES = {"MlpPolicy": "mlp", "MlpLstmPolicy": "mlp", "hlgym.agents.attention.PeerAttentionPolicy": "attention"}


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
        cls = import_plugin(algo, (*TRAINED_ALGOS, *BASELINES, *SEARCHERS))
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
        accepted = ", ".join((*PRESETS, *MULTIAGENT_PRESETS))
        raise SystemExit(f"--env {args.env!r} is not accepted; accepted: {accepted}")
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
            defaults = [
                f"{name} {value}"
                for name, value in (
                    ("timesteps", DEFAULT_TIMESTEPS),
                    ("n_envs", DEFAULT_N_ENVS),
                    ("policy", DEFAULT_POLICY),
                )
                if getattr(args, name) is None
            ]
            used = ", ".join([*defaults, "the algorithm's own settings"])
            print(f"hyperparams/{args.algo}.yml has no entry for {args.env}: using the defaults ({used})")
        hp = entry or {}
    overrides = _hyperparam_overrides(args)
    hp.update(overrides)
    options = {opt: hp.pop(key) for key, opt in OPTION_KEYS.items() if key in hp}
    if "policy" in options:
        options["policy"] = YAML_POLICIES.get(options["policy"], options["policy"])
    given = {name for name in ("timesteps", "n_envs") if getattr(args, name) is not None}
    args = dataclasses.replace(
        args,
        timesteps=args.timesteps if args.timesteps is not None else int(options.get("timesteps", DEFAULT_TIMESTEPS)),
        n_envs=args.n_envs if args.n_envs is not None else int(options.get("n_envs", DEFAULT_N_ENVS)),
        policy=args.policy
        if args.policy is not None
        else str(options.get("policy", "attention" if args.backend == "rllib" else DEFAULT_POLICY)),
    )
    assert args.timesteps is not None and args.n_envs is not None and args.policy is not None
    for name in ("timesteps", "n_envs"):
        value = getattr(args, name)
        if value < 1:
            where = "" if name in given else f" (from hyperparams/{args.algo}.yml for {args.env})"
            raise SystemExit(f"--{name.replace('_', '-')} {value}{where} is not accepted; accepted: an integer >= 1")
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
    check_device(args.device)
    trainer.check(args, config, hp)
    _check_hyperparams(args, config, hp, overrides)
    if args.pretrain is not None:
        _check_pretrain(args, config)
    check_env(args.env, config)
    return args, config, hp


def _hyperparam_overrides(args: Args) -> dict[str, Any]:
    """``--hyperparams``' pairs, refused where nothing trains and for the keys other options set."""
    if not args.hyperparams:
        return {}
    if args.algo not in TRAINED_ALGOS:
        raise SystemExit(
            f"--hyperparams is not accepted with --algo {args.algo}: nothing trains; accepted with: "
            f"{', '.join(TRAINED_ALGOS)}"
        )
    if args.evaluate_model is not None:
        raise SystemExit("--hyperparams with --evaluate-model is not accepted: nothing trains; accepted: one of them")
    try:
        overrides = parse_pairs(args.hyperparams, "--hyperparams")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    for key, option in OPTION_KEYS.items():
        if key in overrides or option in overrides:
            raise SystemExit(
                f"--hyperparams {key if key in overrides else option}=... is not accepted: "
                f"--{option.replace('_', '-')} sets it; accepted: the algorithm's other settings"
            )
    return overrides


# Constructor arguments hlgym-train passes itself, which --hyperparams cannot set.
_SET_BY_TRAIN = {"self", "policy", "env", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model"}
_SET_BY_TRAIN_HL_DQN = {"self", "obs_dim", "n_actions", "seed"}


def _check_hyperparams(args: Args, config: PeerSelectionConfig, hp: dict[str, Any], given: dict[str, Any]) -> None:
    """``--hyperparams`` (``given``) with an SB3 algorithm or hl_dqn: every key is a constructor
    argument, and the algorithm, built once on one copy of the env (nothing written), takes
    ``hp``, the file's settings with them."""
    if not given or args.backend != "sb3":
        return  # the RLlib backend's check maps and checks the keys itself
    target: Callable[..., Any] = HLDQNAgent if args.algo == "hl_dqn" else sb3.algorithm_class(args.algo)
    own = _SET_BY_TRAIN_HL_DQN if args.algo == "hl_dqn" else _SET_BY_TRAIN
    parameters = inspect.signature(target.__init__).parameters
    accepted = sorted(set(parameters) - own)
    for key, value in given.items():
        if key not in accepted:
            raise SystemExit(
                f"--hyperparams {key}=... is not accepted: {args.algo} has no setting {key!r}; "
                f"accepted: {', '.join(accepted)}"
            )
        default = parameters[key].default
        # A number's setting (SB3 checks few of them before training starts) gets a number.
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SystemExit(f"--hyperparams {key}={value!r} is not accepted; accepted: a number")
    env = registration.make(args.env, config)
    try:
        if args.algo == "hl_dqn":
            shape = env.observation_space.shape
            assert shape is not None and isinstance(env.action_space, gym.spaces.Discrete)
            HLDQNAgent(math.prod(shape), int(env.action_space.n), seed=args.seed, **hp)
        else:
            assert args.policy is not None
            target(sb3.policy_for(args.algo, args.policy), env, seed=args.seed, device="cpu", verbose=0, **hp)
    except (TypeError, ValueError, AssertionError) as exc:
        pairs = " ".join(args.hyperparams)
        raise SystemExit(f"--hyperparams {pairs} is not accepted by {args.algo}: {exc or type(exc).__name__}") from None
    finally:
        env.close()


def check_env(env_id: str, config: PeerSelectionConfig) -> None:
    """Build the env once, so that what only the data can tell (data that is not on disk, a
    split that asks for more samples than the data set has, a device the data cannot move
    to: the env checks them at construction) fails as one line before the run folder exists."""
    try:
        registration.make(env_id, config).close()
    except DataNotFoundError as exc:
        raise SystemExit(f"--env {env_id}: {exc}") from None
    except (ValueError, TypeError, RuntimeError) as exc:
        kwargs = " with --env-kwargs" if config != PRESETS[env_id] else ""
        raise SystemExit(f"--env {env_id}{kwargs}: {exc}") from None


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


def _check_pretrain(args: Args, config: PeerSelectionConfig) -> None:
    """``--pretrain``: an actor-critic algorithm, Minari installed, counts >= 1, and a dataset
    whose observations are the env's (read once here, so that a wrong one fails before any file)."""
    if args.algo not in PRETRAINED_ALGOS or args.backend != "sb3":
        algo = args.algo if args.backend == "sb3" else f"{args.algo} --backend {args.backend}"
        raise SystemExit(
            f"--pretrain is not accepted with --algo {algo}; accepted with: {', '.join(PRETRAINED_ALGOS)} (sb3)"
        )
    if args.evaluate_model is not None:
        raise SystemExit("--pretrain with --evaluate-model is not accepted: nothing trains; accepted: one of them")
    for name in ("pretrain_episodes", "pretrain_epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"--{name.replace('_', '-')} {getattr(args, name)} is not accepted; accepted: an integer >= 1"
            )
    if importlib.util.find_spec("minari") is None:
        raise SystemExit(f"--pretrain needs Minari, which is not installed: {imitation.INSTALL_HINT}")
    if args.pretrain != "oracle":
        assert args.pretrain is not None
        env = registration.make(args.env, config)
        try:
            imitation.read_dataset(args.pretrain, env.observation_space)
        except ValueError as exc:
            raise SystemExit(f"--pretrain: {exc}; accepted: oracle, a Minari dataset id or folder") from None
        finally:
            env.close()


def pretrain(args: Args, config: PeerSelectionConfig, run: RunFolder, model: Any) -> None:
    """Behaviour-clone ``model``'s policy (``--pretrain``) before it trains: on the oracle's
    episodes (played and written to ``run.demos`` unless a run that stopped wrote them
    already), or on the dataset given."""
    source: str | Path = args.pretrain or ""
    if args.pretrain == "oracle":
        dataset_id = imitation.dataset_id_for(args.env)
        source = run.demos / dataset_id
        if not source.is_dir():
            env = registration.make(args.env, config)
            try:
                evaluation = range(args.eval_seed, args.eval_seed + args.eval_episodes)
                seeds = imitation.demo_seeds(args.seed, args.pretrain_episodes, avoid=evaluation)
                start = time.perf_counter()
                episodes = imitation.oracle_episodes(env, seeds, progress=args.progress)
                # Written aside and moved in whole: a run killed while it writes leaves no half dataset.
                staging = run.path / ".demos.partial"
                shutil.rmtree(staging, ignore_errors=True)
                try:
                    imitation.write_dataset(episodes, env, dataset_id, root=staging)
                    os.replace(staging, run.demos)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            finally:
                env.close()
            steps = sum(len(ep.actions) for ep in episodes)
            print(f"pretrain: {len(episodes)} oracle episodes ({steps} steps) in {time.perf_counter() - start:.0f} s")
    demos = imitation.read_dataset(source, model.observation_space)
    fit = imitation.behaviour_clone(model.policy, demos, gamma=model.gamma, epochs=args.pretrain_epochs, seed=args.seed)
    print(
        f"pretrain: cloned {len(demos.actions)} steps of {demos.episodes} episodes ({args.pretrain_epochs} epochs): "
        f"nll {fit['nll']:.3f}, the demonstrated peer is the policy's first choice on {fit['accuracy']:.0%}"
    )


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
    timeout = args.rllib_sample_timeout
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise SystemExit(f"--rllib-sample-timeout {timeout} is not accepted; accepted: a number of seconds > 0")
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
        given = f" with --hyperparams {' '.join(args.hyperparams)}" if args.hyperparams else ""
        raise SystemExit(f"hyperparams/ppo.yml for {args.env}{given}: {exc}") from exc


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
        if manifest is None and args.pretrain is not None:
            pretrain(args, config, run, model)
        final = sb3.learn_to_budget(
            model, run, log, callbacks, args.timesteps, progress=args.progress, fresh=manifest is None
        )
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
    timeout = args.rllib_sample_timeout
    if timeout is None:  # sized from this env's step time (a full-fidelity HL step passes RLlib's 60 s)
        batch = rllib.rllib_hyperparams(hp, args.n_envs)["train_batch_size_per_learner"]
        step_s = rllib.measure_step_s(args.env, config)
        timeout = rllib.sample_timeout_s(step_s, rllib.fragment_steps(batch, args.num_env_runners))
        print(f"rllib: sample_timeout_s {timeout:.0f} (a step took {step_s * 1000:.0f} ms here)")
    cfg = rllib.ppo_config(  # resolve checked the hyperparameters
        args.env,
        config,
        hp,
        n_envs=args.n_envs,
        num_env_runners=args.num_env_runners,
        seed=args.seed if manifest is None else resume_seed(args.seed, int(manifest["timesteps"])),
        net_kwargs=net_kwargs,
        sample_timeout=timeout,
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
    env = registration.make(args.env, config)
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


# What --resume takes from its own command line; every other option is the saved run's.
RESUME_HONOURS = ("timesteps", "device", "progress")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) if value else "(none)"
    return "(none)" if value is None else str(value)


def _resumed_args(args: Args, given: set[str]) -> tuple[Args, RunFolder, dict[str, Any]]:
    """The saved arguments of the run ``--resume`` continues, with the options of
    :data:`RESUME_HONOURS` this command line ``given``; another given option that differs
    from the saved one is refused (the run could not honour it halfway)."""
    if args.out is None or not RunFolder(args.out).has_run():
        raise SystemExit(f"--resume needs --out pointing at a run folder with config.json, got {args.out!r}")
    run = RunFolder(args.out)
    saved = run.read_config()
    base = Args(**saved["args"])
    for name in sorted(given - {"resume", "out", *RESUME_HONOURS}):
        if getattr(args, name) != getattr(base, name):
            flag = "--" + name.replace("_", "-")
            raise SystemExit(
                f"{flag} {_shown(getattr(args, name))} is not accepted with --resume: {run.path} continues with "
                f"its saved {flag} {_shown(getattr(base, name))}; accepted with --resume: --timesteps, --device, "
                "--progress (start a new run for other options)"
            )
    honoured = {name: getattr(args, name) for name in RESUME_HONOURS if name in given and name != "progress"}
    resumed = dataclasses.replace(base, resume=True, progress=args.progress, out=args.out, **honoured)
    return resumed, run, saved


# A resumed run: its folder and the config.json it was started with.
Resumed = tuple[RunFolder, dict[str, Any]]


def main(argv: list[str] | None = None) -> dict[str, Evaluation]:
    """Run the command line; returns the evaluations by policy name (with ``--seeds``, the
    last seed's; the across-seed summary is in the run folder's ``results.json``)."""
    args = parse_args(argv)
    given = given_options(argv)
    if {"seed", "seeds"} <= given and args.seeds:
        raise SystemExit(
            f"--seed {args.seed} with --seeds {_shown(args.seeds)} is not accepted: --seeds sets every run's "
            "seed; accepted: one of them"
        )
    resumed: Resumed | None = None
    if args.resume:
        args, run, saved = _resumed_args(args, given)
        resumed = (run, saved)
    return run_seeds(args, resumed) if args.seeds else run_one(args, resumed)


def _open_run(args: Args, resumed: Resumed | None, config: dict[str, Any], what: str = "") -> RunFolder:
    """The run's folder: the resumed one, whose config.json records a new ``--timesteps``
    budget or ``--device`` (validated by resolve) so that a later --resume keeps them; or a
    fresh one, refused if it holds a run, with ``config`` written first."""
    if resumed is not None:
        run, saved = resumed
        changes = [
            f"{label} {saved['args'][name]} -> {getattr(args, name)}{unit}"
            for name, label, unit in (("timesteps", "training budget", " steps"), ("device", "device", ""))
            if getattr(args, name) != saved["args"][name]
        ]
        if changes:
            print(f"resume: {', '.join(changes)}{what}")
            saved["args"].update(timesteps=args.timesteps, device=args.device)
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
    resolved, config, _ = _multiagent(args).resolve(args) if is_multiagent(args) else resolve(args)
    args = dataclasses.replace(args, timesteps=resolved.timesteps, n_envs=resolved.n_envs, policy=resolved.policy)
    run = _open_run(
        args,
        resumed,
        {"hlgym_version": hlgym.__version__, "args": dataclasses.asdict(args)},
        " (one run per seed in seed_<k>/)" if resumed is None else " for every seed",
    )
    with _removed_on_failure(run, fresh=resumed is None):
        return _run_each_seed(args, config, run)


@contextlib.contextmanager
def _removed_on_failure(run: RunFolder, fresh: bool) -> Iterator[None]:
    """A fresh run's folder is removed when the run fails (an exception, Ctrl-C) before it
    holds any work (:meth:`~hlgym.runs.RunFolder.discard_unstarted`), so the next run gets
    the same name and ``load_run`` never finds a dead folder; one with a checkpoint stays
    for --resume."""
    try:
        yield
    except BaseException:
        if fresh and run.discard_unstarted():
            what = f"its files in {run.path} (the folder's other files stay)" if run.path.exists() else str(run.path)
            print(f"removed {what}: the run failed before it saved anything to resume", file=sys.stderr)
        raise


def _run_each_seed(args: Args, config: PeerSelectionConfig, run: RunFolder) -> dict[str, Evaluation]:
    per_seed: dict[int, dict[str, Evaluation]] = {}
    for k, seed in enumerate(args.seeds):
        sub = run.seed_run(seed)
        print(f"\n== seed {seed} ({k + 1} of {len(args.seeds)}): {sub.path}")
        one = dataclasses.replace(args, seed=seed, seeds=[], out=str(sub.path), resume=sub.has_run())
        if sub.results_file.is_file() and _finished(sub, one.timesteps):
            per_seed[seed] = sub.read_evaluations()
            print("finished earlier: read its results.json")
        elif sub.has_run():
            one, _, saved = _resumed_args(one, {"timesteps", "device"})
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


def is_multiagent(args: Args) -> bool:
    """Whether ``--env`` is a multi-agent id (:data:`~hlgym.envs.registration.MULTIAGENT_PRESETS`)."""
    return args.env in MULTIAGENT_PRESETS


def _multiagent(args: Args) -> Any:
    """:mod:`hlgym.train_gossip`, which runs a multi-agent ``--env`` (PettingZoo needed)."""
    try:
        from hlgym import train_gossip
    except ImportError as exc:
        raise SystemExit(f"--env {args.env}: {exc}") from None
    return train_gossip


def run_one(args: Args, resumed: Resumed | None) -> dict[str, Evaluation]:
    """Train (or continue the ``resumed`` run) and evaluate one run; returns the evaluations
    by policy name."""
    if is_multiagent(args):
        multi = _multiagent(args)
        args, config, kwargs = multi.resolve(args)
        run = _open_run(args, resumed, multi.run_config(args, config, kwargs))
        with _removed_on_failure(run, fresh=resumed is None):
            results: dict[str, Evaluation] = multi.train_and_evaluate(args, config, kwargs, run)
            _draw(run)
            return results
    args, config, hp = resolve(args)
    body = {"hlgym_version": hlgym.__version__, "args": dataclasses.asdict(args), "hyperparams": hp}
    run = _open_run(args, resumed, {**body, "env_config": config.to_dict()})
    with _removed_on_failure(run, fresh=resumed is None):
        return _train_and_evaluate(args, config, hp, run)


def _train_and_evaluate(
    args: Args, config: PeerSelectionConfig, hp: dict[str, Any], run: RunFolder
) -> dict[str, Evaluation]:
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
    env = registration.make(args.env, config)
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


if __name__ == "__main__":
    main(sys.argv[1:])
