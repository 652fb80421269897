"""Policies for the multi-agent :class:`~hlgym.envs.gossip.GossipEnv`, and their evaluation.

A gossip policy decides for each agent from that agent's own observation and info
(``act(agent, obs, info) -> peer``; its own index keeps). The baselines need no training:

- :class:`KeepPolicy`: every agent keeps its knowledge (local training only): the constant
  policy a team goal must not be reachable by;
- :class:`FixedPeerPolicy`: every agent sends to one peer (the other constant policies);
- :class:`RandomNeighbourPolicy`: a uniformly random other peer the mask allows;
- :class:`NearestPolicy`: the cheapest hop to another allowed peer (hop costs are local);
- :class:`PowerOfChoicePolicy`: ``d`` random allowed peers, then the one on whose probe the
  agent's own model has the highest loss (Cho, Wang & Joshi 2020, as the single-agent
  baseline: where its knowledge is least, which the receiver's training then complements).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pettingzoo.utils import BaseParallelWrapper

from hlgym.agents.baselines import PowerOfChoiceAgent
from hlgym.envs.gossip import COLUMNS, GossipEnv
from hlgym.records import EpisodeRecord


class GossipPolicy(Protocol):
    """What :func:`evaluate` plays: one decision per agent and round."""

    def reset(self) -> None:
        """Called at the start of every episode."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The peer ``agent`` sends to (its own index: keep)."""
        ...


def _me(obs: np.ndarray) -> int:
    return int(np.flatnonzero(obs[:, COLUMNS.index("is_self")])[0])


def _others(obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The other peers ``info["action_mask"]`` allows."""
    mask = np.asarray(info["action_mask"]).astype(bool)
    mask[_me(obs)] = False
    return np.flatnonzero(mask)


class KeepPolicy:
    """Every agent keeps its knowledge: local training only."""

    def reset(self) -> None:
        """Stateless."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The agent's own index."""
        return _me(obs)


class FixedPeerPolicy:
    """Every agent sends to ``peer`` (the peer itself keeps; an offline target: keep).

    Args:
        peer: The receiver of every send.
    """

    def __init__(self, peer: int) -> None:
        self.peer = peer

    def reset(self) -> None:
        """Stateless."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """``peer`` where the mask allows it, else keep."""
        return self.peer if info["action_mask"][self.peer] else _me(obs)


class RandomNeighbourPolicy:
    """A uniformly random other peer among those the mask allows (keep if none).

    Args:
        seed: Seed of the policy's own RNG (its stream continues across episodes).
    """

    def __init__(self, seed: int | None = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """A random allowed other peer."""
        others = _others(obs, info)
        return int(self._rng.choice(others)) if others.size else _me(obs)


class NearestPolicy:
    """The cheapest hop from the agent to another allowed peer (keep if none)."""

    def reset(self) -> None:
        """Stateless."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The allowed other peer with the lowest ``hop_cost`` (ties: the lowest index)."""
        others = _others(obs, info)
        if not others.size:
            return _me(obs)
        return int(others[int(np.argmin(obs[others, COLUMNS.index("hop_cost")]))])


class PowerOfChoicePolicy:
    """``d`` allowed other peers drawn uniformly, then the highest ``probe_loss`` of them.

    Args:
        d: Candidates per decision, >= 1.
        seed: Seed of the policy's own RNG.
    """

    def __init__(self, d: int = 3, seed: int | None = 0) -> None:
        self._choice = PowerOfChoiceAgent(d, seed)  # the single-agent baseline's draw and pick

    def reset(self) -> None:
        """Nothing to forget."""

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The candidate on whose probe the agent's own model does worst."""
        others = _others(obs, info)
        if not others.size:
            return _me(obs)
        return self._choice.pick(others, obs[:, COLUMNS.index("probe_loss")])


class GossipOracle:
    """A ceiling that sees the future: a beam search over joint actions on copies of the env.

    At an episode's first decision it copies the env (``copy.deepcopy``: the copy carries the
    RNG states, so it meets the very batches, link failures and offline draws the episode
    will) and searches round by round: from each of the ``width`` beams it tries
    ``samples`` joint actions (every agent keeping, every agent to its nearest allowed peer,
    and random allowed peers for the rest, drawn from its own seeded RNG) and keeps the
    ``width`` best children, ranked by team goal reached, team accuracy, then the least
    communication. The episode then replays the best route found (bit for bit on CPU). The
    joint action space has ``n_peers ** n_peers`` members a round, so this is a sampled
    search: a lower bound of the true ceiling. It costs ``width * samples`` env steps a round.

    Args:
        env: The env it plays in; given later with :meth:`bind`.
        width: Beams kept per round, >= 1.
        samples: Joint actions tried from each beam per round, >= 2.
        seed: Seed of the random joint actions.
    """

    def __init__(self, env: GossipEnv | None = None, width: int = 2, samples: int = 8, seed: int = 0) -> None:
        for name, value, low in (("width", width, 1), ("samples", samples, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is not accepted; accepted: an integer >= {low}")
        self.env, self.width, self.samples, self.seed = env, width, samples, seed
        self._rng = np.random.default_rng(seed)
        self._plan: list[dict[str, int]] = []
        self.searched_steps = 0
        """Env steps the last search took (its cost)."""
        self.route: list[dict[str, int]] = []
        """The last search's best route: one joint action a round."""
        self.levels: list[tuple[float, float]] = []
        """The last search's best child per round: its team accuracy and communication. With
        the goal lifted out of reach this is the oracle's curve for every goal: the search
        ranks by team accuracy until a child reaches a goal ``g`` and stops there, so it
        reaches ``g`` at the first round whose best child is ``>= g`` (as
        :attr:`hlgym.agents.oracle.OracleAgent.levels`; the route it returns is the best at
        the last round, whose own curve can pass ``g`` later or never)."""

    def bind(self, env: GossipEnv) -> GossipOracle:
        """Play in ``env`` from now on; returns the oracle."""
        self.env = env
        return self

    def reset(self) -> None:
        """Forget the plan: the next decision searches the new episode."""
        self._plan = []

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The agent's action in the best route found from the episode's first decision."""
        if self.env is None:
            raise RuntimeError("GossipOracle has no env to search in: GossipOracle(env) or oracle.bind(env)")
        if not self._plan:
            self._plan = self.search(self.env)
        round_ = self.env.round
        if round_ >= len(self._plan):  # the route found ended earlier (it cannot: replayed bit for bit)
            return _me(obs)
        return self._plan[round_][agent]

    def _candidates(self, env: GossipEnv) -> list[dict[str, int]]:
        masks = {a: env.action_mask(a) for a in env.agents}
        index = env.possible_agents.index
        keep = {a: index(a) for a in env.agents}
        assert env.episode.distances is not None
        nearest = {}
        for a, mask in masks.items():
            others = np.flatnonzero(mask)
            others = others[others != index(a)]
            row = env.episode.distances[index(a)]
            nearest[a] = int(others[int(np.argmin(row[others]))]) if others.size else index(a)
        out = [keep, nearest]
        while len(out) < self.samples:
            out.append({a: int(self._rng.choice(np.flatnonzero(m))) for a, m in masks.items()})
        return out

    def search(self, env: GossipEnv) -> list[dict[str, int]]:
        """The best route (one joint action a round) from ``env``'s current state."""
        beams: list[tuple[GossipEnv, list[dict[str, int]], bool]] = [(env, [], False)]
        self.searched_steps, self.levels = 0, []

        def rank(beam: tuple[GossipEnv, list[dict[str, int]], bool]) -> tuple[bool, float, float]:
            return beam[2], beam[0].team_accuracy, -beam[0].comm_cost

        while True:
            children = []
            for sim_env, route, reached in beams:
                if reached or not sim_env.agents:
                    children.append((sim_env, route, reached))
                    continue
                for actions in self._candidates(sim_env):
                    sim = copy.deepcopy(sim_env)
                    _, _, terms, _, _ = sim.step(actions)
                    self.searched_steps += 1
                    children.append((sim, [*route, actions], any(terms.values())))
            children.sort(key=rank, reverse=True)
            beams = children[: self.width]
            self.levels.append((beams[0][0].team_accuracy, beams[0][0].comm_cost))
            if beams[0][2] or all(b[2] or not b[0].agents for b in beams):
                self.route = beams[0][1]
                return self.route


BASELINES: dict[str, Callable[[], GossipPolicy]] = {
    "random": RandomNeighbourPolicy,
    "nearest": NearestPolicy,
    "power_of_choice": PowerOfChoicePolicy,
    "keep": KeepPolicy,
}
"""The built-in gossip baselines by name (seeded with 0 where they draw)."""


@dataclass
class GossipEpisode:
    """One evaluated episode of a gossip policy."""

    seed: int
    rounds: int
    """Rounds played (``max_rounds`` when the team goal was not reached)."""
    reached_goal: bool
    team_accuracy: float
    """The team's accuracy at the end."""
    comm_cost: float
    """Every send's hop cost, summed [distance units]."""
    bytes_per_peer: float
    """Bytes sent, over the peers [B]."""
    step_seconds: float
    """Mean wall time of a round [s]."""
    team_curve: list[float] = field(default_factory=list)
    """The team's accuracy after reset and after every round."""
    sends: list[list[tuple[int, int, bool]]] = field(default_factory=list)
    """Each round's sends: ``(sender, receiver, delivered)`` (a peer that kept sends nothing)."""
    positions: list[list[float]] = field(default_factory=list)
    """2-D layout of the peers (the topology's drawing positions, set at every reset), for
    drawing the sends (:func:`hlgym.plots.gossip_sends`)."""
    main_classes: list[int] = field(default_factory=list)
    """Each peer's most frequent class."""
    round_costs: list[float] = field(default_factory=list)
    """Each round's sends' hop costs, summed [distance units]."""
    round_bytes: list[int] = field(default_factory=list)
    """Bytes sent in each round (a lost send's too) [B]."""
    rewards: list[float] = field(default_factory=list)
    """Each round's reward, the mean over the agents."""
    goal: float | None = None
    """The team goal."""

    def record(self) -> EpisodeRecord:
        """The episode as an :class:`~hlgym.records.EpisodeRecord`, the form run folders,
        results tables and plots read: its accuracy is the team's, its hop costs, bytes and
        rewards are the rounds' totals (the rewards the agents' mean), its ``route`` is empty
        (no single model travels) and its ``sends`` are this episode's."""
        return EpisodeRecord(
            seed=self.seed,
            accuracy=list(self.team_curve),
            hop_costs=list(self.round_costs),
            rewards=list(self.rewards),
            rounds=self.rounds,
            comm_cost=self.comm_cost,
            bytes_sent=int(sum(self.round_bytes)),
            reached_goal=self.reached_goal,
            positions=[list(p) for p in self.positions],
            main_classes=list(self.main_classes),
            round_bytes=list(self.round_bytes),
            goal=self.goal,
            sends=[[list(send) for send in sends] for sends in self.sends],
        )


def evaluate(
    policy: GossipPolicy, env: GossipEnv, episodes: int, seed: int, progress: bool = False, label: str | None = None
) -> list[GossipEpisode]:
    """Play ``policy`` for ``episodes`` episodes from seeds ``seed, seed + 1, ...`` (a policy
    with ``bind(env)``, the oracle, is bound first); ``progress`` shows a bar labelled
    ``label`` (default: the policy's class name)."""
    from tqdm.auto import tqdm

    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(env)
    out = []
    for k in tqdm(range(episodes), desc=label or type(policy).__name__, disable=not progress):
        policy.reset()
        obs, infos = env.reset(seed=seed + k)
        curve = [env.team_accuracy]
        costs, sent, rewards = [], [], []
        terminated, spent = False, 0.0
        while env.agents:
            actions = {a: policy.act(a, obs[a], infos[a]) for a in env.agents}
            cost, bytes_sent = env.comm_cost, env.bytes_sent
            start = time.perf_counter()
            obs, reward, terms, _, infos = env.step(actions)
            spent += time.perf_counter() - start
            curve.append(env.team_accuracy)
            costs.append(env.comm_cost - cost)
            sent.append(env.bytes_sent - bytes_sent)
            rewards.append(float(np.mean(list(reward.values()))))
            terminated = any(terms.values())
        out.append(
            GossipEpisode(
                seed=seed + k,
                rounds=env.round,
                reached_goal=terminated,
                team_accuracy=env.team_accuracy,
                comm_cost=env.comm_cost,
                bytes_per_peer=env.bytes_sent / env.config.n_peers,
                step_seconds=spent / max(env.round, 1),
                team_curve=curve,
                sends=[list(r) for r in env.sends],
                positions=np.asarray(env.episode.positions, dtype=np.float64).tolist(),
                main_classes=[int(c) for c in np.asarray(env.episode.main_classes)],
                round_costs=costs,
                round_bytes=sent,
                rewards=rewards,
                goal=float(env.config.goal),
            )
        )
    return out


# ---------------------------------------------------------------------------- a learned policy


class AgentPolicy:
    """A single-agent :class:`~hlgym.agents.Agent` deciding for every agent from that
    agent's own observation and info (``act(obs, info)``; its mask is the agent's): how the
    attention network the RLlib backend trains (a :class:`~hlgym.agents.attention.PeerSetAgent`)
    plays the gossip env.

    Args:
        agent: The shared decision maker.
    """

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def reset(self) -> None:
        """Reset the shared agent."""
        self.agent.reset()

    def act(self, agent: str, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The shared agent's action on ``agent``'s observation."""
        return int(self.agent.act(obs, info))


class SharedPolicy(AgentPolicy):
    """One SB3 model that every agent shares (parameter sharing), deciding on each agent's own
    observation as :class:`~hlgym.agents.sb3.SB3Agent` does: the attention policy's
    best-scored peer the agent's mask allows (any number of peers, so a model trained at 10
    plays at 20), an MLP's deterministic action.

    Args:
        model: A trained SB3 algorithm (for example from :func:`train_shared`).
    """

    def __init__(self, model: Any) -> None:
        from hlgym.agents.sb3 import SB3Agent

        super().__init__(SB3Agent(model))
        self.model = model


class EpisodeStats(BaseParallelWrapper):  # type: ignore[misc]  # PettingZoo is untyped
    """Adds each agent's episode totals to its info at the episode's last step, as
    ``info["episode"]`` (SB3's Monitor key, so SB3 logs ``rollout/ep_rew_mean``): ``r`` the
    agent's return, ``l`` the rounds, ``t`` the seconds since reset, and the team's
    ``comm_cost``, ``bytes_sent``, ``team_accuracy`` and ``reached_goal``. SuperSuit's
    vector env resets at once and merges the reset's infos over the last step's, so the
    totals must travel under a key the reset does not give."""

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Reset the env and the totals."""
        self._returns = dict.fromkeys(self.env.possible_agents, 0.0)
        self._start = time.perf_counter()
        return self.env.reset(seed=seed, options=options)  # type: ignore[no-any-return]

    def step(self, actions: dict[str, Any]) -> Any:
        """Step the env; at the last step, every agent's info gets its ``episode``."""
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        for agent, reward in rewards.items():
            self._returns[agent] += float(reward)
        if not self.env.agents:
            env = self.env.unwrapped
            team = {
                "l": env.round,
                "t": round(time.perf_counter() - self._start, 6),
                "comm_cost": env.comm_cost,
                "bytes_sent": env.bytes_sent,
                "team_accuracy": env.team_accuracy,
                "reached_goal": any(terms.values()),
            }
            for agent in infos:
                infos[agent]["episode"] = {"r": self._returns[agent], **team}
        return obs, rewards, terms, truncs, infos


def shared_vec_env(env_kwargs: dict[str, Any], copies: int = 1) -> Any:
    """The env as an SB3 vector env through SuperSuit: every agent of ``copies`` episodes is
    one of its ``n_peers * copies`` slots (``pettingzoo_env_to_vec_env_v1`` then
    ``concat_vec_envs_v1``), so one policy learns from every agent's experience. Its
    ``seed(s)`` seeds the next reset (copy ``k`` from ``s + k``)."""
    import supersuit as ss
    from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper

    class Seeded(SB3VecEnvWrapper):  # type: ignore[misc]  # SuperSuit is untyped
        # SB3 seeds a vec env with seed(s) before its first reset; SuperSuit's concatenated
        # env has no seed() (SuperSuit 3.11): keep it for the reset, which takes it.
        _next_seed: int | None = None

        def seed(self, seed: int | None = None) -> list[int | None]:
            self._next_seed = seed
            return [seed] * self.num_envs

        def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
            seed, self._next_seed = (self._next_seed if seed is None else seed), None
            observations, self.reset_infos = self.venv.reset(seed=seed)
            return observations

    markov = ss.pettingzoo_env_to_vec_env_v1(EpisodeStats(GossipEnv(**env_kwargs)))
    return Seeded(ss.concat_vec_envs_v1(markov, copies, num_cpus=0, base_class="gymnasium"))


SHARED_PPO = {"n_steps": 64, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.95, "ent_coef": 0.01}
"""The shared PPO's settings (SB3 ``PPO`` keywords); ``batch_size`` defaults to a quarter of
a rollout (``n_steps`` times the vector env's slots)."""


def shared_ppo(venv: Any, seed: int, policy: str = "attention", **ppo_kwargs: Any) -> Any:
    """An untrained parameter-shared SB3 PPO on ``venv`` (:func:`shared_vec_env`):
    :data:`SHARED_PPO` with ``ppo_kwargs`` over it; ``policy`` ``"attention"`` (hlgym's
    attention over the peer rows: any number of peers) or ``"mlp"`` (SB3's, one size)."""
    from stable_baselines3 import PPO

    from hlgym.agents.attention import PeerAttentionPolicy

    if policy not in ("attention", "mlp"):
        raise ValueError(f"policy={policy!r} is not accepted; accepted: 'attention', 'mlp'")
    settings: dict[str, Any] = {**SHARED_PPO, "verbose": 0, "device": "cpu", **ppo_kwargs}
    settings.setdefault("batch_size", settings["n_steps"] * venv.num_envs // 4)  # four minibatches a rollout
    return PPO(PeerAttentionPolicy if policy == "attention" else "MlpPolicy", venv, seed=seed, **settings)


def train_shared(env_kwargs: dict[str, Any], timesteps: int, seed: int, copies: int = 1, **ppo_kwargs: Any) -> Any:
    """Parameter-shared PPO (SB3) with hlgym's attention policy over the peer rows (any
    number of peers): ``timesteps`` counts agent steps (``n_peers`` per round and copy)."""
    return shared_ppo(shared_vec_env(env_kwargs, copies), seed, **ppo_kwargs).learn(timesteps)
