"""Ray RLlib backend: PPO on RLlib's new API stack, whose env runners can span a cluster.

    hlgym-train --backend rllib --num-env-runners 2                 # a local Ray on this machine
    hlgym-train --backend rllib --ray-address auto ...              # a running cluster (README)

The pieces:

- :func:`make_env` is the env creator registered under :data:`ENV_NAME` (``register_env``).
  Its ``env_config`` is plain JSON: the registered id and ``PeerSelectionConfig.to_dict()``.
  Every env runner builds its environments from it and loads the data set from its own disk
  (scikit-learn's digits, or the IDX files under the config's ``data_dir``); nothing large
  is shipped between machines, only weights and sampled episodes.
- :class:`MaskedPeerObservation` turns the ``Box(n_peers, F)`` observation into RLlib's
  masking layout, ``Dict(observations=..., action_mask=...)``.
- :class:`PeerAttentionRLModule` is the per-peer attention policy (the SB3 policy's
  :class:`~hlgym.agents.attention.PeerSetNet`): scores per peer with masked-out peers at the
  lowest logit, a value from the mean embedding; its weights do not depend on ``n_peers``.
- :class:`GossipMultiAgentEnv` (creator :func:`make_gossip_env`, :data:`GOSSIP_ENV_NAME`) is
  the multi-agent gossip env as RLlib's ``MultiAgentEnv``, and :func:`gossip_ppo_config` maps
  every agent to one attention module, :data:`SHARED_MODULE` (``hlgym-train --env
  hlgym/Gossip-v0 --backend rllib``).
- :class:`EpisodeOutcomes` sends every finished episode's totals from the env runners to the
  driver, which writes them to the run's ``episodes.csv``.
- :func:`train` runs the training in a :class:`~hlgym.runs.RunFolder`: RLlib checkpoints
  (``checkpoints/rllib_<steps>/``) every ``checkpoint_every`` steps, resumable, and the final
  network as ``model.pt`` (a :class:`~hlgym.agents.attention.PeerSetAgent`, evaluated
  without Ray).

This module imports Ray: only ``hlgym-train --backend rllib`` loads it (the ``ray`` extra,
``pip install -c constraints-ray.txt -e ".[ray]"``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.tune.registry import register_env
from tqdm.auto import tqdm

from hlgym.agents.attention import PeerSetAgent, PeerSetNet
from hlgym.agents.sb3 import TENSORBOARD_KEYS
from hlgym.envs import PeerSelectionConfig, registration, threads
from hlgym.records import EpisodeOutcome
from hlgym.runs import EpisodeLog, RunFolder

__all__ = [
    "ENV_NAME",
    "GOSSIP_ENV_NAME",
    "HYPERPARAMS",
    "SHARED_MODULE",
    "EpisodeOutcomes",
    "GossipMultiAgentEnv",
    "MaskedPeerObservation",
    "PeerAttentionRLModule",
    "gossip_ppo_config",
    "make_env",
    "make_gossip_env",
    "ppo_config",
    "rllib_hyperparams",
    "train",
]

ENV_NAME = "hlgym"
GOSSIP_ENV_NAME = "hlgym_gossip"
SHARED_MODULE = "shared"
"""The one RLModule every agent of the gossip env maps to (parameter sharing)."""
# The network's keys of the RLModule's model_config (RLlib adds its own, e.g. vf_share_layers).
NET_KEYS = ("d_model", "n_heads", "n_layers")
# hyperparams/ppo.yml's keys (SB3's PPO) and RLlib's PPOConfig.training names for them.
# n_steps is per env copy in SB3: one update uses n_steps * n_envs steps, here as there.
HYPERPARAMS = {
    "batch_size": "minibatch_size",
    "n_epochs": "num_epochs",
    "learning_rate": "lr",
    "gamma": "gamma",
    "gae_lambda": "lambda_",
    "ent_coef": "entropy_coeff",
    "clip_range": "clip_param",
    "vf_coef": "vf_loss_coeff",
    "max_grad_norm": "grad_clip",
}
# The episode totals an env runner sends (EpisodeOutcome.from_final_info reads them; and
# "goal" where the info has one, a task distribution's per-task goal).
INFO_KEYS = ("round", "comm_cost", "bytes_sent", "accuracy")
# RLlib waits sample_timeout_s (60 s by default) for its env runners' rollout fragments and
# returns an iteration without their samples when they come late: a full-fidelity HL step
# (0.3-0.6 s) times a 128-step fragment passes 60 s on an idle machine, a loaded one sooner.
# The timeout is sized from the env's step time measured before training, with this margin.
MIN_SAMPLE_TIMEOUT_S = 60.0
TIMEOUT_MARGIN = 3.0
# Iterations in a row without a sample before the run stops with a message (each one already
# waited sample_timeout_s): a runner that is slow once is waited for, one that never keeps up is not.
MAX_EMPTY_ITERATIONS = 5


class MaskedPeerObservation(gym.ObservationWrapper[dict[str, Any], int, np.ndarray]):
    """``Dict(observations=Box(n_peers, F), action_mask=Box(0, 1, (n_peers,)))``: the
    observation with the env's ``action_masks()`` (1 = the peer is online), the layout RLlib's
    action-masking modules read.

    Args:
        env: An hlgym env with ``observation="peer_features"``.
    """

    def __init__(self, env: gym.Env[np.ndarray, int]) -> None:
        super().__init__(env)
        assert isinstance(env.action_space, gym.spaces.Discrete)
        n = int(env.action_space.n)
        self.observation_space = gym.spaces.Dict(
            {
                "observations": env.observation_space,
                "action_mask": gym.spaces.Box(0.0, 1.0, (n,), np.float32),
            }
        )

    def observation(self, observation: np.ndarray) -> dict[str, Any]:
        """The observation and the current action mask."""
        mask = self.env.unwrapped.action_masks()  # type: ignore[attr-defined]
        return {"observations": observation, "action_mask": np.asarray(mask, dtype=np.float32)}


def make_env(env_config: Mapping[str, Any]) -> gym.Env[dict[str, Any], int]:
    """The env creator registered as :data:`ENV_NAME`: ``env_config`` holds ``env_id`` (a
    registered id) and ``config`` (``PeerSelectionConfig.to_dict()``)."""
    import hlgym  # noqa: F401  (registers the ids in an env runner's process)

    config = PeerSelectionConfig.from_dict(env_config["config"])
    if config.threads == threads.AUTO and getattr(env_config, "worker_index", 0) > 0:
        config = config.replace(threads=1)  # an env runner: one of several processes on the cores
    return MaskedPeerObservation(registration.make(env_config["env_id"], config))


class GossipMultiAgentEnv(MultiAgentEnv):  # type: ignore[misc]  # Ray is untyped
    """:class:`hlgym.envs.gossip.GossipEnv` as RLlib's ``MultiAgentEnv``: the same agents,
    rewards and episode ends, each agent's observation in the masking layout of
    :class:`MaskedPeerObservation` (``Dict(observations=..., action_mask=...)``, the mask from
    its ``infos[agent]["action_mask"]``).

    Args:
        env_kwargs: :class:`~hlgym.envs.gossip.GossipEnv`'s keyword arguments (plain JSON).
    """

    def __init__(self, env_kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        from hlgym.envs.gossip import GossipEnv  # PettingZoo: in the dev install, beside Ray's

        self.env = GossipEnv(**dict(env_kwargs))
        self.possible_agents = list(self.env.possible_agents)
        self.agents = list(self.possible_agents)
        n = self.env.config.n_peers
        mask = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        self.observation_spaces = {
            a: gym.spaces.Dict({"observations": self.env.observation_space(a), "action_mask": mask})
            for a in self.possible_agents
        }
        self.action_spaces = {a: self.env.action_space(a) for a in self.possible_agents}

    @staticmethod
    def _masked(obs: dict[str, np.ndarray], infos: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            a: {"observations": o, "action_mask": np.asarray(infos[a]["action_mask"], dtype=np.float32)}
            for a, o in obs.items()
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """Reset the gossip env."""
        obs, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return self._masked(obs, infos), infos

    def step(self, action_dict: dict[str, Any]) -> tuple[Any, Any, Any, Any, Any]:
        """One round; ``__all__`` ends every agent together, as the gossip env does."""
        obs, rewards, terms, truncs, infos = self.env.step({a: int(v) for a, v in action_dict.items()})
        self.agents = list(self.env.agents)
        terms["__all__"] = all(terms.values())
        truncs["__all__"] = all(truncs.values())
        return self._masked(obs, infos), rewards, terms, truncs, infos

    def close(self) -> None:
        """Close the gossip env."""
        self.env.close()


def make_gossip_env(env_config: Mapping[str, Any]) -> GossipMultiAgentEnv:
    """The env creator registered as :data:`GOSSIP_ENV_NAME`: ``env_config["kwargs"]`` are
    :class:`~hlgym.envs.gossip.GossipEnv`'s."""
    return GossipMultiAgentEnv(env_config["kwargs"])


class PeerAttentionRLModule(TorchRLModule, ValueFunctionAPI):  # type: ignore[misc]
    """The per-peer attention policy as an RLlib RLModule (PPO).

    ``model_config`` takes ``d_model``, ``n_heads`` and ``n_layers`` (PeerSetNet's). The
    action logits are the peers' scores, with a masked-out peer's set to the lowest float, so
    it is never sampled; values come from the same encoder.
    """

    def setup(self) -> None:
        """Build the network for the observation's ``F`` columns."""
        shape = self.observation_space["observations"].shape
        self.net_kwargs = {k: int(self.model_config[k]) for k in NET_KEYS if k in self.model_config}
        self.n_features = int(shape[-1])
        self.peer_net = PeerSetNet(self.n_features, **self.net_kwargs)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        scores, _ = self.peer_net(obs["observations"].float())
        logits = scores.masked_fill(obs["action_mask"] < 0.5, torch.finfo(scores.dtype).min)
        return {Columns.ACTION_DIST_INPUTS: logits}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """The value of each observation in ``batch`` (shape ``(batch,)``)."""
        values: torch.Tensor = self.peer_net(batch[Columns.OBS]["observations"].float())[1]
        return values.squeeze(-1)

    def agent(self) -> PeerSetAgent:
        """A copy of the network as a Ray-free :class:`~hlgym.agents.attention.PeerSetAgent`."""
        net = PeerSetNet(self.n_features, **self.net_kwargs)
        net.load_state_dict({k: v.detach().cpu() for k, v in self.peer_net.state_dict().items()})
        return PeerSetAgent(net, self.n_features, self.net_kwargs)


class EpisodeOutcomes(RLlibCallback):  # type: ignore[misc]
    """Logs every finished episode's totals (:data:`INFO_KEYS` of its last info and its
    return; of a gossip episode, the team's accuracy and the agents' mean return) under
    ``("hlgym", "episodes")`` of the env runners' metrics, as a series that the driver reads
    once per training iteration."""

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        info = episode.get_infos(-1)
        episode_return = float(episode.get_return())
        if isinstance(episode, MultiAgentEpisode):  # the gossip env: the team's totals, the agents' mean return
            infos = list(info.values())
            info = {**infos[0], "accuracy": infos[0]["team_accuracy"]}
            episode_return /= len(infos)
        totals = {key: float(info[key]) for key in INFO_KEYS}
        totals["return"] = episode_return
        if "goal" in info:  # a task distribution's per-task goal
            totals["goal"] = float(info["goal"])
        metrics_logger.log_value(("hlgym", "episodes"), totals, reduce="item_series")


def finished_episodes(runners: Mapping[str, Any]) -> list[dict[str, float]]:
    """The episode totals :class:`EpisodeOutcomes` logged, from an iteration's ``env_runners``
    result.

    RLlib's ``MetricsLogger.compile`` (Ray 2.60) hands a one-item series back as the item
    itself, so an iteration in which exactly one episode ended holds a dict, not a list of
    them; an iteration without any holds none.
    """
    episodes = (runners.get("hlgym") or {}).get("episodes")
    if isinstance(episodes, Mapping):
        return [dict(episodes)]
    return list(episodes) if isinstance(episodes, list) else []


def rllib_hyperparams(hp: Mapping[str, Any], n_envs: int) -> dict[str, Any]:
    """``PPOConfig.training`` keywords from a hyperparams/ppo.yml entry (SB3's names).

    Raises:
        ValueError: For a key RLlib's PPO has no counterpart for (named, with the accepted ones).
    """
    unknown = sorted(set(hp) - {*HYPERPARAMS, "n_steps"})
    if unknown:
        raise ValueError(
            f"hyperparameter {unknown[0]!r} has no RLlib counterpart; accepted with --backend rllib: "
            f"n_steps, {', '.join(HYPERPARAMS)}"
        )
    out = {HYPERPARAMS[k]: v for k, v in hp.items() if k in HYPERPARAMS}
    # SB3's defaults where the entry is silent, so both backends train with the same settings.
    out.setdefault("minibatch_size", 64)
    out.setdefault("num_epochs", 10)
    out.setdefault("lr", 3e-4)
    out.setdefault("gamma", 0.99)
    out.setdefault("lambda_", 0.95)
    out.setdefault("entropy_coeff", 0.0)
    out.setdefault("clip_param", 0.2)
    out.setdefault("vf_loss_coeff", 0.5)
    out.setdefault("grad_clip", 0.5)
    out["train_batch_size_per_learner"] = int(hp.get("n_steps", 2048)) * n_envs
    if out["minibatch_size"] > out["train_batch_size_per_learner"]:
        raise ValueError(
            f"batch_size={out['minibatch_size']} is not accepted with n_steps * n_envs = "
            f"{out['train_batch_size_per_learner']}; accepted: at most the steps of one update"
        )
    return out


def ppo_config(
    env_id: str,
    config: PeerSelectionConfig,
    hp: Mapping[str, Any],
    *,
    n_envs: int,
    num_env_runners: int,
    seed: int,
    net_kwargs: Mapping[str, int] | None = None,
    sample_timeout: float | None = None,
) -> PPOConfig:
    """RLlib's PPO config for ``env_id`` with ``config``.

    Args:
        env_id: A registered hlgym id.
        config: The env's resolved config (sent as plain JSON).
        hp: The hyperparams/ppo.yml entry (SB3's names, see :func:`rllib_hyperparams`).
        n_envs: The SB3 entry's env copies: one update uses ``n_steps * n_envs`` steps.
        num_env_runners: Env runners (one env and one CPU each); 0 samples on the driver.
        seed: Env runner i seeds its env with ``seed + i`` at its first reset (RLlib's rule).
        net_kwargs: PeerSetNet's ``d_model``, ``n_heads``, ``n_layers`` (its defaults if None).
        sample_timeout: [s] RLlib's ``sample_timeout_s`` (see :func:`sample_timeout_s`);
            None: RLlib's own (60 s).
    """
    register_env(ENV_NAME, make_env)
    spec = RLModuleSpec(module_class=PeerAttentionRLModule, model_config=dict(net_kwargs or {}))
    env_config = {"env_id": env_id, "config": config.to_dict()}
    return _ppo(ENV_NAME, env_config, hp, n_envs, num_env_runners, seed, sample_timeout).rl_module(rl_module_spec=spec)


def gossip_ppo_config(
    env_kwargs: Mapping[str, Any],
    hp: Mapping[str, Any],
    *,
    n_envs: int,
    num_env_runners: int,
    seed: int,
    net_kwargs: Mapping[str, int] | None = None,
    sample_timeout: float | None = None,
) -> PPOConfig:
    """RLlib's multi-agent PPO for the gossip env: every agent maps to the one attention
    module :data:`SHARED_MODULE` (parameter sharing, as the SB3 backend's SuperSuit slots).

    Args:
        env_kwargs: :class:`~hlgym.envs.gossip.GossipEnv`'s keyword arguments (plain JSON).
        hp: SB3's PPO names (see :func:`rllib_hyperparams`); ``n_steps`` counts rounds per
            env copy, so an update holds ``n_steps * n_envs`` rounds of every agent's steps.
        n_envs, num_env_runners, seed, net_kwargs, sample_timeout: As :func:`ppo_config`'s.
    """
    register_env(GOSSIP_ENV_NAME, make_gossip_env)
    spec = RLModuleSpec(module_class=PeerAttentionRLModule, model_config=dict(net_kwargs or {}))
    env_config = {"kwargs": dict(env_kwargs)}
    return (
        _ppo(GOSSIP_ENV_NAME, env_config, hp, n_envs, num_env_runners, seed, sample_timeout)
        .multi_agent(policies={SHARED_MODULE}, policy_mapping_fn=lambda agent_id, episode, **kw: SHARED_MODULE)
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={SHARED_MODULE: spec}))
    )


def _ppo(
    env_name: str,
    env_config: Mapping[str, Any],
    hp: Mapping[str, Any],
    n_envs: int,
    num_env_runners: int,
    seed: int,
    sample_timeout: float | None,
) -> PPOConfig:
    """The settings both PPO configs share: the env, one env and CPU per runner, the driver
    learning, the hyperparameters, the episode log and the seed."""
    return (
        PPOConfig()
        .environment(env_name, env_config=dict(env_config))
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=1,
            num_cpus_per_env_runner=1,
            **({} if sample_timeout is None else {"sample_timeout_s": float(sample_timeout)}),
        )
        .learners(num_learners=0)
        .training(**rllib_hyperparams(hp, n_envs))
        .callbacks(EpisodeOutcomes)
        .debugging(seed=seed)
    )


def fragment_steps(train_batch: int, num_env_runners: int) -> int:
    """The env steps one env runner samples per iteration (RLlib's ``"auto"`` rollout
    fragment: the batch shared among the runners; the driver samples it all with none)."""
    return -(-train_batch // max(1, num_env_runners))


def sample_timeout_s(step_s: float, fragment: int) -> float:
    """[s] How long RLlib waits for a rollout fragment of ``fragment`` steps of ``step_s``
    seconds each: :data:`TIMEOUT_MARGIN` times that, at least :data:`MIN_SAMPLE_TIMEOUT_S`."""
    return max(MIN_SAMPLE_TIMEOUT_S, TIMEOUT_MARGIN * step_s * fragment)


def measure_step_s(env_id: str, config: PeerSelectionConfig, steps: int = 3) -> float:
    """[s] The median of ``steps`` env steps of ``config`` in this process (after a reset)."""
    env = registration.make(env_id, config)
    try:
        env.reset(seed=0)
        n = int(env.action_space.n)  # type: ignore[attr-defined]
        times = []
        for k in range(steps):
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(k % n)
            times.append(time.perf_counter() - start)
            if terminated or truncated:
                env.reset()
        return float(np.median(times))
    finally:
        env.close()


def _start_ray(address: str | None, num_env_runners: int) -> bool:
    """Connect to ``address``, or start a local Ray with this machine's cores (at least one
    per env runner and one for the driver). Returns whether this call started Ray."""
    if ray.is_initialized():
        return False
    if address is not None:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        cpus = max(os.cpu_count() or 1, num_env_runners + 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return True


def train(
    run: RunFolder,
    log: EpisodeLog,
    cfg: PPOConfig,
    *,
    goal: float,
    timesteps: int,
    checkpoint_every: int,
    resume_from: Path | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    module_id: str | None = None,
    agents_per_step: int = 1,
) -> PeerSetAgent:
    """Train (or resume) PPO until ``timesteps`` env steps were sampled, writing each
    finished episode to ``log``, a checkpoint every ``checkpoint_every`` steps and at the end,
    and the final network to ``run``'s ``model.pt``; returns that network as an Agent.

    Args:
        run: The run folder.
        log: Its training log (cut back to the checkpoint's episodes on a resume).
        cfg: :func:`ppo_config`'s config.
        goal: The env's goal accuracy (whether an episode reached it).
        timesteps: The training budget [env steps]; RLlib samples whole batches, so a run
            ends at the first iteration that reaches it.
        checkpoint_every: Env steps between checkpoints.
        resume_from: A checkpoint folder to continue from (its manifest's ``model``).
        ray_address: A running cluster's address (``auto``: the one this machine joined);
            None starts a local Ray.
        progress: Show a progress bar.
        module_id: The RLModule to save (:data:`SHARED_MODULE` for the gossip env; None:
            the single agent's).
        agents_per_step: Agent steps per env step (the gossip env's ``n_peers``: every
            agent acts every round); ``timesteps`` and ``checkpoint_every`` count agent steps.
    """
    started = _start_ray(ray_address, int(cfg.num_env_runners))
    algo: Algorithm = cfg.build_algo()
    try:
        steps = 0
        if resume_from is not None:
            algo.restore_from_path(str(Path(resume_from).resolve()))
            manifest = run.latest_checkpoint()
            assert manifest is not None
            steps = int(manifest["timesteps"])
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(run.tensorboard / "rllib"))
        last_ckpt = steps
        bar = tqdm(total=timesteps, initial=min(steps, timesteps), disable=not progress, unit="step")
        empty = 0
        try:
            while steps < timesteps:
                result = algo.train()
                # An iteration whose runners missed the timeout has no "env_runners" entry.
                runners = result.get("env_runners") or {}
                sampled = int(runners.get("num_env_steps_sampled") or 0) * agents_per_step
                empty = 0 if sampled else empty + 1
                if empty >= MAX_EMPTY_ITERATIONS:
                    raise RuntimeError(
                        f"RLlib's env runners returned no samples in {empty} iterations in a row, each after "
                        f"waiting sample_timeout_s={cfg.sample_timeout_s:.0f} s: they are slower than the step time "
                        "measured before training (a loaded machine or cluster). Raise --rllib-sample-timeout, or "
                        "run fewer --num-env-runners than there are free cores"
                    )
                steps += sampled
                bar.update(min(sampled, timesteps - bar.n))
                for totals in finished_episodes(runners):
                    info = {key: totals[key] for key in (*INFO_KEYS, "goal") if key in totals}
                    row = log.append(steps, EpisodeOutcome.from_final_info(info, totals["return"], goal))
                    for key in TENSORBOARD_KEYS:
                        tb.add_scalar(f"hl/{key}", float(row[key]), steps)
                if steps - last_ckpt >= checkpoint_every or steps >= timesteps:
                    run.commit_checkpoint_dir(steps, log.n_rows, lambda path: algo.save_to_path(str(path.resolve())))
                    last_ckpt = steps
        finally:
            bar.close()
            tb.close()
        module = algo.get_module() if module_id is None else algo.get_module(module_id)
        assert isinstance(module, PeerAttentionRLModule)
        agent = module.agent()
    finally:
        algo.stop()
        if started:
            ray.shutdown()
    run.write_model("ppo", agent.to_bytes(), backend="rllib")
    return agent
