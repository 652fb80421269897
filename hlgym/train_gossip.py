"""``hlgym-train --env hlgym/Gossip-v0``: the multi-agent ids
(:data:`~hlgym.envs.registration.MULTIAGENT_PRESETS`, :class:`~hlgym.envs.gossip.GossipEnv`)
through the same command, run folder, held-out evaluation, ``--seeds`` and plots as the
single-agent ids.

``--algo ppo`` trains one SB3 PPO that every agent shares (parameter sharing through
SuperSuit: :func:`hlgym.agents.gossip.shared_vec_env`); ``--timesteps`` counts agent steps
(``n_peers`` a round) and ``--n-envs`` the episodes played side by side. The built-in
policies (``random``, ``nearest``, ``power_of_choice``, ``keep``; ``oracle``, the sampled
beam search that sees the future; a plug-in ``module:Class`` with ``reset()`` and
``act(agent, obs, info)``) only play. Every run's table has the four baselines, on the same
held-out episodes. A results record of a gossip episode is the team's: its accuracy is the
team accuracy (``team_goal``), its rounds and communication every agent's sends together
(:meth:`hlgym.agents.gossip.GossipEpisode.record`); the route figure is the round-by-round
map of every agent's sends.

:func:`hlgym.train.main` sends a multi-agent ``--env`` here; this module needs PettingZoo
(and SuperSuit to train), the ``multiagent`` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from hlgym.agents import sb3
from hlgym.agents.attention import PeerSetAgent
from hlgym.agents.gossip import (
    BASELINES,
    SHARED_PPO,
    AgentPolicy,
    GossipOracle,
    GossipPolicy,
    SharedPolicy,
    evaluate,
    shared_ppo,
    shared_vec_env,
)
from hlgym.envs import PeerSelectionConfig
from hlgym.envs.config import parse_pairs
from hlgym.envs.gossip import GossipEnv
from hlgym.envs.registration import MULTIAGENT_PRESETS
from hlgym.options import BACKENDS, Args, check_device, import_plugin
from hlgym.records import EpisodeOutcome, Evaluation, summarize
from hlgym.runs import EpisodeLog, RunFolder, format_table, resume_seed

__all__ = [
    "DEFAULT_TIMESTEPS",
    "ID_TIMESTEPS",
    "TRAINED",
    "evaluate_all",
    "make_policy",
    "resolve",
    "run_config",
    "train",
    "train_and_evaluate",
    "train_rllib",
]

TRAINED = ("ppo",)
SEARCHERS = ("oracle",)
DEFAULT_TIMESTEPS = 40_000
"""Agent steps of ``--algo ppo`` when ``--timesteps`` is not given and the id has no budget
of its own in :data:`ID_TIMESTEPS`: 4,000 rounds at 10 peers (96 to 415 s of training a seed
on the 2-core machine, by how busy its cores were: docs/multiagent.md)."""
ID_TIMESTEPS: dict[str, int] = {
    # One token: one agent of ten decides a round, so 40,000 agent steps are 4,000 decisions
    # (the single-agent ids train on 50,000), and there the shared PPO played like random
    # (3 seeds: 48% at the goal against 52%). 400,000 (40,000 decisions; 12.5-15 minutes a seed
    # on one thread beside another training, 2-core Intel Xeon): 88% over 5 seeds, every seed
    # in fewer rounds and with less communication than random (docs/multiagent.md).
    "hlgym/Gossip-Relay-v0": 400_000,
}
"""The ids whose shipped budget differs from :data:`DEFAULT_TIMESTEPS` (agent steps)."""
SEEDED = ("random", "power_of_choice")
# Options of the single-agent training this one has no use for: refused when they differ
# from their defaults (a resumed run's come from its config.json, so "given" cannot tell).
UNUSED = ("pretrain",)
INSTALL = "pip install -c constraints.txt -e '.[multiagent]'"


def _accepted() -> str:
    return ", ".join((*TRAINED, *BASELINES, *SEARCHERS))


def make_policy(algo: str, seed: int, kwargs: Mapping[str, Any] | None = None) -> GossipPolicy:
    """A built-in gossip policy by name (``random`` and ``power_of_choice`` seeded with
    ``seed``; ``oracle`` bound to its env when evaluated), or a plug-in ``module:Class``,
    built with ``kwargs``."""
    kwargs = dict(kwargs or {})
    cls: Any
    if algo == "oracle":
        cls = GossipOracle
        kwargs.setdefault("seed", seed)
    elif algo in BASELINES:
        cls = BASELINES[algo]
        if algo in SEEDED:
            kwargs.setdefault("seed", seed)
    else:
        cls = import_plugin(algo, (*TRAINED, *BASELINES, *SEARCHERS))
    try:
        policy = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--agent-kwargs for --algo {algo!r}: {exc}") from exc
    if not (callable(getattr(policy, "reset", None)) and callable(getattr(policy, "act", None))):
        raise SystemExit(f"--algo {algo!r}: {type(policy).__name__} lacks reset() and act(agent, obs, info)")
    return policy  # type: ignore[no-any-return]


def env_kwargs(args: Args) -> dict[str, Any]:
    """The id's settings with ``--env-kwargs`` over them (:class:`GossipEnv`'s keywords)."""
    try:
        return {**MULTIAGENT_PRESETS[args.env], **parse_pairs(args.env_kwargs)}
    except ValueError as exc:
        raise SystemExit(f"--env-kwargs: {exc}") from exc


def resolve(args: Args) -> tuple[Args, PeerSelectionConfig, dict[str, Any]]:
    """Validate the options of a multi-agent run and fill its defaults; returns the
    arguments, the env's config (the team goal is its ``goal``) and :class:`GossipEnv`'s
    keyword arguments. Nothing is written."""
    defaults = Args()
    for name in UNUSED:
        if getattr(args, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise SystemExit(
                f"{flag} is not accepted with the multi-agent --env {args.env} (no oracle demonstrations there); "
                "accepted: --pretrain with a single-agent --env"
            )
    if args.hyperparams:
        raise SystemExit(
            f"--hyperparams is not accepted with the multi-agent --env {args.env} (its shared PPO's "
            "settings are hlgym.agents.gossip.SHARED_PPO); accepted with a single-agent --env"
        )
    trained = args.algo in TRAINED
    if args.backend not in BACKENDS:
        raise SystemExit(f"--backend {args.backend!r} is not accepted; accepted: {', '.join(BACKENDS)}")
    if not trained and args.algo not in (*BASELINES, *SEARCHERS) and ":" not in args.algo:
        raise SystemExit(f"--algo {args.algo!r} is not accepted with --env {args.env}; accepted: {_accepted()}")
    for name in ("eval_episodes", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"--{name.replace('_', '-')} {getattr(args, name)} is not accepted; accepted: an integer >= 1"
            )
    args = dataclasses.replace(
        args,
        timesteps=ID_TIMESTEPS.get(args.env, DEFAULT_TIMESTEPS) if args.timesteps is None else args.timesteps,
        n_envs=1 if args.n_envs is None else args.n_envs,
        policy="attention" if args.policy is None else args.policy,
    )
    assert args.timesteps is not None and args.n_envs is not None
    for name in ("timesteps", "n_envs"):
        if getattr(args, name) < 1:
            raise SystemExit(
                f"--{name.replace('_', '-')} {getattr(args, name)} is not accepted; accepted: an integer >= 1"
            )
    if args.backend == "rllib" and args.policy != "attention":
        raise SystemExit(
            f"--policy {args.policy} is not accepted with --backend rllib; accepted: attention (the RLModule)"
        )
    if args.policy not in ("attention", "mlp"):
        raise SystemExit(f"--policy {args.policy} is not accepted with --env {args.env}; accepted: attention, mlp")
    if args.backend == "rllib":
        _check_rllib(args, trained)
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(
            f"--seeds {' '.join(map(str, args.seeds))} is not accepted: a seed repeats; accepted: distinct seeds"
        )
    if args.evaluate_model is not None:
        if not trained:
            raise SystemExit(f"--evaluate-model needs a trained --algo; accepted: {', '.join(TRAINED)}")
        if args.seeds:
            raise SystemExit(
                "--seeds with --evaluate-model is not accepted: --seeds trains one run per seed; accepted: one of them"
            )
        if not Path(args.evaluate_model).is_file():
            raise SystemExit(f"--evaluate-model {args.evaluate_model!r}: no such file")
    if trained and args.agent_kwargs:
        raise SystemExit(
            f"--agent-kwargs is not accepted with --algo {args.algo}: accepted with built-in and plug-in policies"
        )
    # Training episodes: seed + k for SB3's copy k; seed + i for RLlib's env runner i (0: the driver's).
    copies = args.n_envs if args.backend == "sb3" else args.num_env_runners + 1
    train_seeds = {s for seed in (args.seeds or [args.seed]) for s in range(seed, seed + copies)}
    eval_seeds = set(range(args.eval_seed, args.eval_seed + args.eval_episodes))
    if trained and train_seeds & eval_seeds:
        raise SystemExit(
            f"--eval-seed {args.eval_seed} is not accepted: evaluation seeds {min(eval_seeds)}..{max(eval_seeds)} "
            f"overlap the training seeds {min(train_seeds)}..{max(train_seeds)}; accepted: seeds outside them"
        )
    check_device(args.device)
    kwargs = env_kwargs(args)
    try:
        env = GossipEnv(**kwargs)
    except (TypeError, ValueError) as exc:
        given = " with --env-kwargs" if args.env_kwargs else ""
        own_keywords = "tokens, team_goal, agent_reward, batched"
        own = f"; GossipEnv's own keywords: {own_keywords}" if isinstance(exc, TypeError) else ""
        raise SystemExit(f"--env {args.env}{given}: {exc}{own}") from None
    env.close()
    if not trained:
        try:
            make_policy(args.algo, args.seed, parse_pairs(args.agent_kwargs, "--agent-kwargs"))
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
    # After the options' own checks: a bad value is named whether or not SuperSuit is there.
    sb3_training = trained and args.backend == "sb3" and args.evaluate_model is None
    if sb3_training and importlib.util.find_spec("supersuit") is None:
        raise SystemExit(f"--algo ppo on --env {args.env} needs SuperSuit, which is not installed: {INSTALL}")
    return args, env.config, kwargs


def _check_rllib(args: Args, trained: bool) -> None:
    """``--backend rllib``: multi-agent PPO with the shared attention module, Ray installed."""
    if not trained:
        raise SystemExit(f"--backend rllib is not accepted with --algo {args.algo!r}; accepted: --algo ppo")
    if args.num_env_runners < 0:
        raise SystemExit(f"--num-env-runners {args.num_env_runners} is not accepted; accepted: an integer >= 0")
    timeout = args.rllib_sample_timeout
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise SystemExit(f"--rllib-sample-timeout {timeout} is not accepted; accepted: a number of seconds > 0")
    if args.evaluate_model is None and importlib.util.find_spec("ray") is None:
        raise SystemExit(
            "--backend rllib needs Ray, which is not installed: pip install -c constraints-ray.txt -e '.[ray]'"
        )


class TeamEpisodeLog(BaseCallback):
    """Writes every finished training episode (one per ``n_peers`` slots of the shared vector
    env) to the run's :class:`~hlgym.runs.EpisodeLog`: the team's totals
    (:class:`~hlgym.agents.gossip.EpisodeStats`) and the agents' mean return."""

    def __init__(self, log: EpisodeLog, n_peers: int) -> None:
        super().__init__()
        self.log, self.n_peers = log, n_peers

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        for first in range(0, len(infos), self.n_peers):
            if not self.locals["dones"][first] or "episode" not in infos[first]:
                continue
            team = infos[first]["episode"]
            returns = [infos[first + k]["episode"]["r"] for k in range(self.n_peers)]
            outcome = EpisodeOutcome(
                int(team["l"]),
                float(team["comm_cost"]),
                int(team["bytes_sent"]),
                float(team["team_accuracy"]),
                bool(team["reached_goal"]),
                float(np.mean(returns)),
            )
            row = self.log.append(self.num_timesteps, outcome)
            for key in ("rounds", "comm_cost", "final_accuracy", "reached_goal"):
                self.logger.record_mean(f"hl/{key}", float(row[key]))
        return True


def train(args: Args, config: PeerSelectionConfig, kwargs: dict[str, Any], run: RunFolder) -> SharedPolicy:
    """Train (or resume from ``run``'s last checkpoint) the parameter-shared PPO; writes its
    checkpoints, training log and ``model.zip`` into ``run``."""
    assert args.timesteps is not None and args.n_envs is not None and args.policy is not None
    manifest = run.latest_checkpoint() if args.resume else None
    venv = shared_vec_env(kwargs, args.n_envs)
    if manifest is not None:
        model, manifest = sb3.load_checkpoint("ppo", run, venv, args.device)
        log = run.episode_log(keep=int(manifest["episodes"]), env_id=args.env)
        # A fresh stream of episodes, so the resumed run does not replay the first ones.
        venv.seed(resume_seed(args.seed, int(manifest["timesteps"])))
        print(f"resuming {run.path} at step {manifest['timesteps']} ({manifest['episodes']} episodes logged)")
    else:
        model = shared_ppo(venv, args.seed, args.policy, device=args.device, tensorboard_log=str(run.tensorboard))
        log = run.episode_log(env_id=args.env)
    callbacks = [TeamEpisodeLog(log, config.n_peers), sb3.CheckpointCallback(run, args.checkpoint_every, log)]
    try:
        final = sb3.learn_to_budget(
            model, run, log, callbacks, args.timesteps, progress=args.progress, fresh=manifest is None
        )
    finally:
        log.close()
        venv.close()
    run.write_model("ppo", final.read_bytes())
    return SharedPolicy(model)


def train_rllib(args: Args, config: PeerSelectionConfig, kwargs: dict[str, Any], run: RunFolder) -> AgentPolicy:
    """Train (or resume) RLlib's multi-agent PPO, every agent mapped to one attention module
    (:func:`hlgym.agents.rllib.gossip_ppo_config`); writes its checkpoints, training log and
    ``model.pt`` into ``run``."""
    from hlgym.agents import rllib

    assert args.timesteps is not None and args.n_envs is not None
    manifest = run.latest_checkpoint() if args.resume else None
    hp = rllib_settings()
    timeout = args.rllib_sample_timeout
    if timeout is None:  # sized from a round's time, as the single-agent backend's from a step's
        step_s = _round_seconds(kwargs)
        batch = rllib.rllib_hyperparams(hp, args.n_envs)["train_batch_size_per_learner"]
        timeout = rllib.sample_timeout_s(step_s, rllib.fragment_steps(batch, args.num_env_runners))
        print(f"rllib: sample_timeout_s {timeout:.0f} (a round took {step_s * 1000:.0f} ms here)")
    cfg = rllib.gossip_ppo_config(
        kwargs,
        hp,
        n_envs=args.n_envs,
        num_env_runners=args.num_env_runners,
        seed=args.seed if manifest is None else resume_seed(args.seed, int(manifest["timesteps"])),
        sample_timeout=timeout,
    )
    log = run.episode_log(keep=None if manifest is None else int(manifest["episodes"]), env_id=args.env)
    if manifest is not None:
        print(f"resuming {run.path} at step {manifest['timesteps']} ({manifest['episodes']} episodes logged)")
    try:
        agent = rllib.train(
            run,
            log,
            cfg,
            goal=config.goal,
            timesteps=args.timesteps,
            checkpoint_every=args.checkpoint_every,
            resume_from=None if manifest is None else manifest["model"],
            ray_address=args.ray_address,
            progress=args.progress,
            module_id=rllib.SHARED_MODULE,
            agents_per_step=config.n_peers,
        )
    finally:
        log.close()
    return AgentPolicy(agent)


def rllib_settings() -> dict[str, Any]:
    """:data:`~hlgym.agents.gossip.SHARED_PPO` for RLlib: ``n_steps`` rounds per env copy and
    update; RLlib's minibatch (64 agent steps) in place of SB3's quarter of a rollout."""
    return {k: v for k, v in SHARED_PPO.items() if k != "batch_size"}


def _round_seconds(kwargs: dict[str, Any], rounds: int = 3) -> float:
    """[s] The median of ``rounds`` rounds of random sends in this process (after a reset)."""
    env = GossipEnv(**kwargs)
    try:
        policy = make_policy("random", 0)
        obs, infos = env.reset(seed=0)
        times = []
        for _ in range(rounds):
            actions = {a: policy.act(a, obs[a], infos[a]) for a in env.agents}
            start = time.perf_counter()
            obs, _, _, _, infos = env.step(actions)
            times.append(time.perf_counter() - start)
            if not env.agents:
                obs, infos = env.reset()
        return float(np.median(times))
    finally:
        env.close()


def evaluate_all(args: Args, kwargs: dict[str, Any], policies: Mapping[str, GossipPolicy]) -> dict[str, Evaluation]:
    """Every policy on the same ``args.eval_episodes`` held-out episodes (seeds
    ``args.eval_seed``..), as team records."""
    env = GossipEnv(**kwargs)
    try:
        out = {}
        for name, policy in policies.items():
            played = evaluate(policy, env, args.eval_episodes, args.eval_seed, progress=args.progress, label=name)
            records = [episode.record() for episode in played]
            out[name] = Evaluation(records, summarize(records))
        return out
    finally:
        env.close()


def _load(args: Args) -> GossipPolicy:
    """The saved model of ``--evaluate-model``: SB3's model.zip, or the RLlib backend's model.pt."""
    assert args.evaluate_model is not None
    if args.backend == "rllib":
        try:
            return AgentPolicy(PeerSetAgent.load(args.evaluate_model))
        except ValueError as exc:
            raise SystemExit(f"--evaluate-model: {exc}") from exc
    from stable_baselines3 import PPO

    return SharedPolicy(PPO.load(args.evaluate_model, device=args.device))


def run_config(args: Args, config: PeerSelectionConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a multi-agent run's ``config.json`` holds: the version, the arguments, the PPO
    settings, :class:`GossipEnv`'s keyword arguments and the resolved env config."""
    from hlgym import __version__

    trained = args.algo in TRAINED
    settings = ({**SHARED_PPO} if args.backend == "sb3" else rllib_settings()) if trained else {}
    return {
        "hlgym_version": __version__,
        "args": dataclasses.asdict(args),
        "hyperparams": settings,
        "env_kwargs": kwargs,
        "env_config": config.to_dict(),
    }


def train_and_evaluate(
    args: Args, config: PeerSelectionConfig, kwargs: dict[str, Any], run: RunFolder
) -> dict[str, Evaluation]:
    """Train (or build, or load) the policy into ``run``, evaluate it and every baseline on
    the held-out episodes, write ``results.json`` and print the table (:func:`hlgym.train.run_one`
    opens the run folder, removes it on an early failure, and draws the plots)."""
    trained = args.algo in TRAINED
    start = time.perf_counter()
    agent: GossipPolicy
    if not trained:
        agent = make_policy(args.algo, args.seed, parse_pairs(args.agent_kwargs, "--agent-kwargs"))
    elif args.evaluate_model is not None:
        agent = _load(args)
    elif args.backend == "rllib":
        agent = train_rllib(args, config, kwargs, run)
    else:
        agent = train(args, config, kwargs, run)
    train_time = time.perf_counter() - start
    policies: dict[str, GossipPolicy] = {args.algo.rpartition(":")[2]: agent}
    for name in BASELINES:
        policies.setdefault(name, make_policy(name, args.seed))
    results = evaluate_all(args, kwargs, policies)
    run.write_results(
        {
            "env_id": args.env,
            "env_config": config.to_dict(),
            "env_kwargs": kwargs,
            "algo": args.algo,
            "policy": args.policy if trained else None,
            "backend": args.backend,
            "timesteps": args.timesteps if trained and args.evaluate_model is None else 0,
            "evaluated_model": args.evaluate_model,
            "seed": args.seed,
            "eval_seed": args.eval_seed,
            "eval_episodes": args.eval_episodes,
            "train_time_s": train_time,
        },
        results,
    )
    shown = f", --env-kwargs {' '.join(args.env_kwargs)}" if args.env_kwargs else ""
    print(
        f"\n{args.env}{shown}: {args.eval_episodes} held-out episodes per policy (seeds {args.eval_seed}..); "
        f"every agent acting on its own view; rounds, comm and accuracy are the team's ({config.n_peers} peers)"
    )
    print(format_table(results))
    print(f"\nwrote {run.results_file}")
    return results
