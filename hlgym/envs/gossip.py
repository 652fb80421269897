"""GossipEnv: every peer an agent, every model in flight at once (a PettingZoo ParallelEnv).

In :class:`~hlgym.envs.PeerSelectionEnv` one central meta-policy decides where a single
model goes next. Here every peer decides for itself, as in gossip learning: each peer keeps
its own model (the per-peer transfer modes ``average``, ``distill`` and ``logits``), and in
every round every agent picks a neighbour to send its knowledge to, or keeps it (its own
index). All the sends of a round happen together; then every peer trains.

A round, in this order:

1. **Sends.** Agent ``i``'s action ``j != i`` sends what ``transfer`` sends (its weights,
   or its logits on the public set) from its model as the round found it: every hop is
   paid (``distances[i, j]``, the bytes), whether or not it arrives. It arrives unless
   ``j`` or ``i`` is offline or the link fails (``link_failure_prob``, one draw per send,
   in ascending order of the sender). The action mask (``infos[agent]["action_mask"]``)
   says which sends would not meet an offline peer; a send outside it is paid and lost,
   as a send to an offline peer is in the single-agent env.
2. **Absorbing.** A peer that receives ``k`` models absorbs them one after the other, in an
   order drawn from the episode's RNG (receivers in ascending order), each followed by one
   local training on its own data: ``average`` blends the arriving weights in first,
   ``distill`` trains with the arriving model as a frozen teacher, ``logits`` fits the
   arriving logits first (docs/transfer.md). A peer that receives nothing trains once on
   its own data. Every peer trains at least once a round, so a round costs ``n_peers`` or
   more local trainings, batched (``batched=True``, the default) or in turn (docs/multiagent.md).
3. **Scores.** Every peer's model is evaluated on the reward's test images.

What an agent sees is local (``Box(0, 1, (n_peers, 5))``, one row per peer ``j``): whether
``j`` is itself, the hop cost from it to ``j`` (its own row of the topology, scaled by the
largest cost), its own model's loss on ``j``'s probe (``tanh(loss / ln(n_classes))``: the
probes are the samples ``j`` would score a model on, as in the single-agent env's
``probe_loss``), the rounds since it last received from ``j`` (``/ max_rounds``, 1 if never),
and the round (``/ max_rounds``). No agent sees another's model, the test accuracy or the
other agents' actions.

Rewards (``agent_reward``): ``"own"``: the HL reward of its own model,
``reward_base ** (accuracy_i - goal) - cost_weight * hop_i - 1`` with ``hop_i`` the cost of
its own send (0 when it keeps); ``"team"``: the same with the team's accuracy in place of its
own. The team outcome (``team_goal``): the mean (``"mean"``) or the minimum (``"min"``) of the
peers' accuracies; every agent terminates when it reaches ``goal``, and every agent is
truncated after ``max_rounds`` rounds.

**Tokens** (``transfer="relay"``, ``tokens=K``): ``K`` models travel instead, as HL's one
model does in the single-agent env, and no peer keeps a model of its own. They start at ``K``
distinct peers drawn from the seed. A peer holds its tokens in a queue (oldest first); its
action moves the first one (its own index keeps it); the others stay and train there. A
token trains once a round at the peer that holds it after the sends, on that peer's data;
one whose send was lost (an offline peer, a failed link) stays with its sender and does not
train that round, as the single-agent env's lost round. A peer that receives several tokens
queues them in an order drawn from the seed. An agent that holds no token has nothing to
send: the mask allows it to keep only, and any action it takes is ignored (no send, no
cost). The observation gains a sixth column, ``tokens_held`` (the tokens in its queue over
``K``), and ``probe_loss`` is its first token's (0 where it holds none). The team's
accuracy is the tokens'; ``agent_reward="own"`` pays an agent the HL reward of the token its
action moved or kept (0 to an agent that held none: it decided nothing).

Faults are the single-agent env's components: ``offline_prob`` (as there, the component
keeps ``start_peer`` online), ``link_failure_prob`` and the peers that corrupt the model they
train. Components that add observation columns (the scenarios) and ``hl_pca`` are not
offered here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from hlgym.envs import components
from hlgym.envs.components.base import Move
from hlgym.envs.components.transfer import PER_PEER
from hlgym.envs.config import PeerSelectionConfig, make_config
from hlgym.envs.episode import Episode, ProbeStats
from hlgym.envs.registration import MULTIAGENT_PRESETS
from hlgym.envs.rounds import model_spec
from hlgym.models.batched import StackedModels
from hlgym.models.work import ModelList, ModelWork, TrainJob

try:
    from pettingzoo import ParallelEnv
    from pettingzoo.utils import conversions
except ImportError as exc:  # the multiagent extra
    raise ImportError("hlgym.envs.gossip needs PettingZoo: pip install -c constraints.txt -e '.[multiagent]'") from exc

__all__ = [
    "AGENT_REWARDS",
    "COLUMNS",
    "PRESETS",
    "RELAY_COLUMNS",
    "TEAM_GOALS",
    "GossipEnv",
    "env",
    "make",
    "parallel_env",
]

TEAM_GOALS = ("mean", "min")
AGENT_REWARDS = ("own", "team")
COLUMNS = ("is_self", "hop_cost", "probe_loss", "since_heard", "progress")
"""An agent's observation columns, one row per peer (see the module docstring)."""
RELAY_COLUMNS = (*COLUMNS, "tokens_held")
"""The columns with tokens (``transfer="relay"``): :data:`COLUMNS` and the share of the
tokens in the agent's queue."""
# Settings of the single-agent env this env does not offer, and why (checked at construction).
_REFUSED = {
    "observation": ("peer_features", "every agent sees its own local view (COLUMNS)"),
    "first_round_at_start": (False, "no peer starts with the model: every peer holds one"),
}


def _fail(field: str, value: Any, accepted: str) -> None:
    raise ValueError(f"{field}={value!r} is not accepted by GossipEnv; accepted: {accepted}")


class GossipEnv(ParallelEnv[str, np.ndarray, np.int64]):  # type: ignore[misc]  # PettingZoo is untyped
    """Every peer an agent: each round every agent sends its knowledge to a neighbour or
    keeps it (see the module docstring for the round, the observation and the rewards).

    Args:
        config: A :class:`~hlgym.envs.PeerSelectionConfig` or a dict of its fields (default:
            the embedded default with ``transfer="average"``); ``transfer`` must be a per-peer
            mode, or ``"relay"`` with ``tokens``. ``goal`` is the team's goal.
        tokens: With ``transfer="relay"`` (and only then): how many models travel, 1 to
            ``n_peers`` (see the module docstring).
        team_goal: ``"mean"`` or ``"min"``: what of the peers' (the tokens') accuracies must
            reach ``goal``.
        agent_reward: ``"own"`` (each agent's own model's accuracy) or ``"team"`` (the team's).
        render_mode: ``"ansi"`` (each round's sends) or None.
        batched: Train the peers' models of a round in batched calls
            (:class:`~hlgym.models.batched.StackedModels`, the default: 2.2x faster at 10 peers)
            or one after the other (``False``: :class:`~hlgym.models.work.ModelList`); the
            episodes are the same (each peer draws its batches from a generator of its own).
        **overrides: Config fields that replace ``config``'s.

    >>> from hlgym.envs.gossip import GossipEnv
    >>> env = GossipEnv(n_peers=4, max_rounds=3)
    >>> obs, infos = env.reset(seed=0)
    >>> sorted(obs), obs["peer_0"].shape
    (['peer_0', 'peer_1', 'peer_2', 'peer_3'], (4, 5))
    >>> obs, rewards, terms, truncs, infos = env.step({"peer_0": 1, "peer_1": 1, "peer_2": 3, "peer_3": 0})
    >>> info = infos["peer_1"]
    >>> info["round"], info["received_from"]
    (1, [0])
    """

    metadata = {"name": "hlgym_gossip_v0", "render_modes": ["ansi"], "is_parallelizable": True}  # noqa: RUF012

    def __init__(
        self,
        config: PeerSelectionConfig | dict[str, Any] | None = None,
        *,
        tokens: int | None = None,
        team_goal: str = "mean",
        agent_reward: str = "own",
        render_mode: str | None = None,
        batched: bool = True,
        **overrides: Any,
    ) -> None:
        if config is None and "transfer" not in overrides:
            overrides = {"transfer": "average", **overrides}
        cfg = make_config(config, **overrides)
        if cfg.transfer not in (*PER_PEER, "relay"):
            accepted = ", ".join(repr(m) for m in PER_PEER)
            _fail("transfer", cfg.transfer, f"{accepted} (every peer keeps a model), 'relay' (with tokens)")
        if cfg.transfer == "relay":
            if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= cfg.n_peers:
                travel = "the models that travel, one start peer each"
                _fail("tokens", tokens, f"an integer 1..{cfg.n_peers} with transfer='relay' ({travel})")
        elif tokens is not None:
            why = "every peer keeps its own model; tokens travel with transfer='relay'"
            _fail("tokens", tokens, f"None with transfer={cfg.transfer!r} ({why})")
        if cfg.tasks is not None:
            _fail("tasks", "a task distribution", "None (one task)")
        for field, (allowed, why) in _REFUSED.items():
            if getattr(cfg, field) != allowed:
                _fail(field, getattr(cfg, field), f"{allowed!r} ({why})")
        for cls, _ in components.for_config(cfg):  # a scenario: its columns read one holder's model
            if cls.columns:
                _fail("components", cls.name, "the transfer modes and components without observation columns")
        if team_goal not in TEAM_GOALS:
            _fail("team_goal", team_goal, ", ".join(repr(g) for g in TEAM_GOALS))
        if agent_reward not in AGENT_REWARDS:
            _fail("agent_reward", agent_reward, ", ".join(repr(r) for r in AGENT_REWARDS))
        if render_mode not in (None, "ansi"):
            _fail("render_mode", render_mode, "None, 'ansi'")
        self.config, self.team_goal, self.agent_reward, self.render_mode = cfg, team_goal, agent_reward, render_mode
        self.tokens = tokens
        """The travelling models (``transfer="relay"``), or None: every peer keeps its own."""
        n = cfg.n_peers
        self._n_models = n if tokens is None else tokens
        self.possible_agents = [f"peer_{i}" for i in range(n)]
        self.agents: list[str] = []
        data = Episode.load_data(cfg)
        # Slots 0..n-1: the peers' models; n..2n-1: the round's snapshot of each sender's model
        # (what it sends, as the round found it, whatever trains first). With tokens: one slot
        # a token (a token travels whole, so nothing needs a snapshot).
        spec = model_spec(cfg, data)
        slots = 2 * n if tokens is None else tokens
        self.models: ModelWork = StackedModels.from_spec(spec, slots) if batched else ModelList(spec, n_slots=slots)
        self.episode = Episode(cfg, self.models.n_params, data)
        """The draws and bookkeeping shared with the single-agent env (data, probes, topology,
        faults); its holder and route are not used here."""
        self.columns = COLUMNS if tokens is None else RELAY_COLUMNS
        """The observation's columns (:data:`COLUMNS`, or :data:`RELAY_COLUMNS` with tokens)."""
        self._observation_space = spaces.Box(0.0, 1.0, (n, len(self.columns)), np.float32)
        self._action_space = spaces.Discrete(n)
        self.np_random = np.random.default_rng()
        self._seeded = False
        self.round = 0
        self.comm_cost = 0.0
        self.bytes_sent = 0
        self.accuracies = np.zeros(self._n_models)
        """Every model's test accuracy: each peer's, or each token's."""
        self.heard = np.full((n, n), -1, dtype=np.int64)
        """``heard[i, j]``: the round in which ``i`` last absorbed ``j``'s model (-1: never)."""
        self.queues: list[list[int]] = [[] for _ in range(n)]
        """With tokens: the tokens each peer holds, oldest first (its action moves the first)."""
        self.sends: list[list[tuple[int, int, bool]]] = []
        """Every round's sends ``(sender, receiver, delivered)`` (for render and analysis)."""
        self._probe_loss = np.zeros((n, n))
        self._generators = [torch.Generator().manual_seed(i) for i in range(n)]

    def __getstate__(self) -> dict[str, Any]:
        # The generators travel as their states: copy.deepcopy of a torch.Generator (torch
        # 2.13) drops a reference to None per call, fatal to the oracle's many copies.
        state = self.__dict__.copy()
        state["_generators"] = [g.get_state() for g in self._generators]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generators = []
        for saved in state.pop("_generators"):
            generator = torch.Generator()
            generator.set_state(saved)
            generators.append(generator)
        self.__dict__.update(state, _generators=generators)

    # ------------------------------------------------------------------ PettingZoo API

    def observation_space(self, agent: str) -> spaces.Box:
        """Every agent's: ``Box(0, 1, (n_peers, 5), float32)`` (:data:`COLUMNS`; with tokens
        six, :data:`RELAY_COLUMNS`)."""
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """Every agent's: ``Discrete(n_peers)``, the peer to send to (its own index: keep)."""
        return self._action_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start an episode: the peers' data, probes, topology and faults from the seed, and
        every peer's model (every token, at start peers drawn from the seed) from the same
        seed-drawn weights."""
        if seed is not None or not self._seeded:  # as Gymnasium: a seed restarts the RNG, None goes on
            self.np_random, self._seeded = np.random.default_rng(seed), True
        ep, n = self.episode, self.config.n_peers
        ep.begin(self.np_random, None)  # options: not used (PettingZoo's api test passes some)
        self.models.initialize(list(range(self._n_models)), ep.slot_generators(self._n_models))
        # Each peer's batch order (and a corrupting peer's noise) from a generator of its own,
        # so a round's trainings draw the same whether they run one after the other or batched.
        self._generators = [torch.Generator().manual_seed(int(self.np_random.integers(2**63 - 1))) for _ in range(n)]
        self.round, self.comm_cost, self.bytes_sent = 0, 0.0, 0
        self.heard = np.full((n, n), -1, dtype=np.int64)
        self.queues = [[] for _ in range(n)]
        if self.tokens is not None:
            for token, peer in enumerate(self.np_random.choice(n, self.tokens, replace=False)):
                self.queues[int(peer)].append(token)
        self.sends = []
        self.agents = list(self.possible_agents)
        self._score()
        zero = np.zeros(n)
        return self._observations(), self._infos(zero, np.zeros(n, dtype=bool), [[] for _ in range(n)])

    def step(
        self, actions: dict[str, Any]
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, float],
        dict[str, bool],
        dict[str, bool],
        dict[str, dict[str, Any]],
    ]:
        """One round: every agent's send, the absorbing and training, the scores."""
        if not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        cfg, ep, n = self.config, self.episode, self.config.n_peers
        targets = self._targets(actions)
        rng = self.np_random
        if self.tokens is None:
            hops, delivered, arrivals = self._per_peer_round(targets, rng)
            judged = np.arange(n)
        else:
            judged = np.array([q[0] if q else -1 for q in self.queues])  # the token each action moves
            hops, delivered, arrivals = self._relay_round(targets, rng)
        self._score()
        team = self.team_accuracy
        terminated = team >= cfg.goal
        truncated = not terminated and self.round >= cfg.max_rounds
        for part in ep.parts:
            part.after_round(rng)
        own = self.agent_reward == "own"
        accuracy = self.accuracies[np.maximum(judged, 0)] if own else np.full(n, team)
        rewards = cfg.reward_base ** (accuracy - cfg.goal) - cfg.cost_weight * hops - 1.0
        if own:
            rewards[judged < 0] = 0.0  # with tokens: an agent that held none decided nothing
        agents = self.agents
        out = (
            self._observations(),
            {a: float(rewards[i]) for i, a in enumerate(agents)},
            {a: bool(terminated) for a in agents},
            {a: bool(truncated) for a in agents},
            self._infos(hops, delivered, arrivals),
        )
        if terminated or truncated:
            self.agents = []
        return out

    def _send(self, i: int, j: int, rng: np.random.Generator) -> tuple[float, bool]:
        """Pay the hop ``i -> j`` and its bytes; returns the hop's cost and whether it arrived."""
        ep = self.episode
        assert ep.distances is not None
        self.bytes_sent += ep.transfer.hop_bytes(self.models.n_params)
        failed = False
        for part in ep.parts:
            extra, part_failed = part.hop(i, j, rng)
            self.bytes_sent += extra
            failed = failed or part_failed
        return float(ep.distances[i, j]), bool(ep.online[i] and ep.online[j]) and not failed

    def _per_peer_round(
        self, targets: list[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """Every peer keeps a model: the sends, then each receiver absorbs and trains."""
        n = self.config.n_peers
        hops, delivered = np.zeros(n), np.zeros(n, dtype=bool)
        arrivals: list[list[int]] = [[] for _ in range(n)]
        for i, j in enumerate(targets):
            if j == i:
                continue
            hops[i], delivered[i] = self._send(i, j, rng)
            if delivered[i]:
                arrivals[j].append(i)
        self.comm_cost += float(hops.sum())
        self.round += 1
        for j in range(n):  # the order each receiver absorbs in, drawn receiver by receiver
            if len(arrivals[j]) > 1:
                arrivals[j] = [arrivals[j][k] for k in rng.permutation(len(arrivals[j]))]
        senders = sorted({i for got in arrivals for i in got})
        for i in senders:
            self.models.set_flat(n + i, self.models.flat(i))
        waves = max(1, *(len(a) for a in arrivals))
        for wave in range(waves):
            self._train_wave(
                [(j, j, arrivals[j][wave] if arrivals[j] else j) for j in range(n) if wave < max(1, len(arrivals[j]))]
            )
        self.sends.append([(i, int(j), bool(delivered[i])) for i, j in enumerate(targets) if j != i])
        return hops, delivered, arrivals

    def _relay_round(
        self, targets: list[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """Tokens travel: each holder's first token goes where its action says, then every
        token not lost this round trains at its holder."""
        n = self.config.n_peers
        hops, delivered = np.zeros(n), np.zeros(n, dtype=bool)
        arriving: list[list[tuple[int, int]]] = [[] for _ in range(n)]  # (sender, token) at each peer
        came_from: dict[int, int] = {}
        lost: set[int] = set()
        sends = []
        for i, j in enumerate(targets):
            if j == i or not self.queues[i]:  # keeping, or nothing to send
                continue
            hops[i], delivered[i] = self._send(i, j, rng)
            sends.append((i, int(j), bool(delivered[i])))
            if delivered[i]:
                arriving[j].append((i, self.queues[i].pop(0)))
            else:
                lost.add(self.queues[i][0])
        self.comm_cost += float(hops.sum())
        self.round += 1
        for j in range(n):  # the order a receiver queues its arrivals in, drawn receiver by receiver
            if len(arriving[j]) > 1:
                arriving[j] = [arriving[j][k] for k in rng.permutation(len(arriving[j]))]
            for i, token in arriving[j]:
                self.heard[j, i] = self.round
                self.queues[j].append(token)
                came_from[token] = i
        training = [[t for t in q if t not in lost] for q in self.queues]
        for wave in range(max(len(t) for t in training)):
            self._train_wave([(t[wave], p, came_from.get(t[wave], p)) for p, t in enumerate(training) if wave < len(t)])
        self.sends.append(sends)
        return hops, delivered, [[i for i, _ in got] for got in arriving]

    def _train_wave(self, trainings: list[tuple[int, int, int]]) -> None:
        """One local training each ``(slot, peer, source)``: ``slot``'s model on ``peer``'s
        data, ``source`` where it came from (``peer``: nowhere); in the per-peer modes the
        source's snapshot (slot ``n_peers + source``) is absorbed first."""
        cfg, ep, n = self.config, self.episode, self.config.n_peers
        jobs, hooked = [], []
        for slot, peer, source in trainings:
            training = ep.training(Move(source, peer, 0.0, True))
            assert training is not None
            distill = None
            if training.source is not None:  # per-peer modes only (the relay's has none)
                distill = ep.transfer.absorb(self.models, slot, n + source, training.public_x)
                self.heard[peer, source] = self.round
            generator = self._generators[peer]
            job = TrainJob(slot, training.state, training.x, training.y, generator, distill, training.align)
            jobs.append(job)
            hooked += [(part, job, part.before_train(self.models, slot)) for part in training.hooks]
        self.models.train(jobs, cfg.local_epochs, cfg.batch_size)
        for part, job, saved in hooked:
            part.after_train(self.models, job.slot, saved, job.generator)

    def render(self) -> str | None:
        """``"ansi"``: one line per round, its sends (``i->j``, ``x`` for one that did not arrive)."""
        if self.render_mode is None:
            return None
        lines = []
        for r, sends in enumerate(self.sends, start=1):
            shown = " ".join(f"{i}->{j}" + ("" if ok else "x") for i, j, ok in sends) or "(every peer kept)"
            lines.append(f"round {r:3d}  {shown}")
        return "\n".join(lines)

    def close(self) -> None:
        """Nothing to release (the data set is shared per process)."""

    # ------------------------------------------------------------------ more than PettingZoo's

    @property
    def team_accuracy(self) -> float:
        """What the team goal reads: the mean or the minimum of the peers' (the tokens')
        accuracies."""
        return float(self.accuracies.mean() if self.team_goal == "mean" else self.accuracies.min())

    def action_mask(self, agent: str) -> np.ndarray:
        """The peers a send from ``agent`` would reach this round, offline peers aside (itself,
        to keep, always), as ``int8`` 1/0 (Gymnasium's ``Discrete.sample(mask)`` form)."""
        i = self.possible_agents.index(agent)
        online = self.episode.online
        holds = self.tokens is None or bool(self.queues[i])  # with tokens, one without has nothing to send
        mask = online.astype(np.int8) if online[i] and holds else np.zeros(online.shape, dtype=np.int8)
        mask[i] = 1
        return mask

    def peer_model(self, peer: int) -> Any:
        """Peer ``peer``'s own model (an ``nn.Module``; read it, do not train it).

        Raises:
            ValueError: With tokens (no peer keeps a model: :meth:`token_model`).
        """
        if self.tokens is not None:
            why = "no peer keeps a model"
            raise ValueError(f"peer_model({peer}) is not accepted with tokens ({why}); accepted: token_model")
        return self.models.module(peer)

    def token_model(self, token: int) -> Any:
        """Token ``token``'s model (an ``nn.Module``; read it, do not train it).

        Raises:
            ValueError: Without tokens, or for a token outside ``0..tokens - 1``.
        """
        if self.tokens is None or not 0 <= token < self.tokens:
            accepted = "none (every peer keeps its own: peer_model)" if self.tokens is None else f"0..{self.tokens - 1}"
            raise ValueError(f"token={token!r} is not accepted; accepted: {accepted}")
        return self.models.module(token)

    @property
    def holders(self) -> list[int]:
        """With tokens: the peer that holds each token (empty without)."""
        return [p for token in range(self.tokens or 0) for p, q in enumerate(self.queues) if token in q]

    # ------------------------------------------------------------------ helpers

    def _targets(self, actions: dict[str, Any]) -> list[int]:
        """Each agent's peer, checked (a bad action leaves the episode as it was)."""
        n = self.config.n_peers
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.agents]
        if missing or unknown:
            raise ValueError(
                f"actions for {sorted(actions)} are not accepted; accepted: one action for each of {self.agents}"
            )
        targets = []
        for agent in self.possible_agents:
            value = np.asarray(actions[agent])
            if value.size != 1 or not np.issubdtype(value.dtype, np.integer) or not 0 <= int(value) < n:
                raise ValueError(
                    f"actions[{agent!r}]={actions[agent]!r} is not accepted; accepted: a peer index in [0, {n - 1}]"
                )
            targets.append(int(value.reshape(())))
        return targets

    def _score(self) -> None:
        """Every model's test accuracy, and its loss on every peer's probe."""
        ep, slots = self.episode, list(range(self._n_models))
        hits = self.models.per_sample_hits(slots, ep.data.x_eval, ep.data.y_eval)
        self.accuracies = hits.mean(dim=1).cpu().numpy().astype(np.float64)
        loss, hits = self.models.per_sample_loss(slots, ep.probe_x, ep.probe_y)
        self._probe_loss = np.stack([ProbeStats.means(loss[i], hits[i], ep.probe_starts).loss for i in slots])

    def _observations(self) -> dict[str, np.ndarray]:
        cfg, ep, n = self.config, self.episode, self.config.n_peers
        assert ep.distances is not None
        scale = float(ep.distances.max()) or 1.0
        since = np.where(self.heard < 0, 1.0, (self.round - self.heard) / cfg.max_rounds)
        out = {}
        for i, agent in enumerate(self.possible_agents):
            obs = np.empty((n, len(self.columns)), dtype=np.float32)
            obs[:, 0] = 0.0
            obs[i, 0] = 1.0
            obs[:, 1] = ep.distances[i] / scale
            model = i if self.tokens is None else self.queues[i][0] if self.queues[i] else -1
            obs[:, 2] = np.tanh(self._probe_loss[model] / np.log(ep.data.n_classes)) if model >= 0 else 0.0
            obs[:, 3] = np.clip(since[i], 0.0, 1.0)
            obs[:, 4] = self.round / cfg.max_rounds
            if self.tokens is not None:
                obs[:, 5] = len(self.queues[i]) / self.tokens
            out[agent] = obs
        return out

    def _infos(self, hops: np.ndarray, delivered: np.ndarray, arrivals: list[list[int]]) -> dict[str, dict[str, Any]]:
        team = self.team_accuracy
        if self.tokens is None:
            accuracy = self.accuracies
        else:  # the token an agent's next action moves; the team's where it holds none
            accuracy = np.array([self.accuracies[q[0]] if q else team for q in self.queues])
        return {
            agent: {
                "accuracy": float(accuracy[i]),
                "team_accuracy": team,
                "hop_cost": float(hops[i]),
                "delivered": bool(delivered[i]),
                "received_from": list(arrivals[i]),
                **({} if self.tokens is None else {"tokens": list(self.queues[i])}),
                "comm_cost": self.comm_cost,
                "bytes_sent": self.bytes_sent,
                "round": self.round,
                "action_mask": self.action_mask(agent),
            }
            for i, agent in enumerate(self.possible_agents)
            if agent in self.agents
        }


PRESETS = MULTIAGENT_PRESETS
"""The named settings :func:`make` builds (:data:`hlgym.envs.registration.MULTIAGENT_PRESETS`)."""


def make(env_id: str = "hlgym/Gossip-v0", **kwargs: Any) -> GossipEnv:
    """The parallel env of a named setting (:data:`PRESETS`); ``kwargs`` as :class:`GossipEnv`
    (config fields, ``team_goal``, ``agent_reward``, ``render_mode``) replace its values.

    Raises:
        ValueError: For a name outside :data:`PRESETS`.
    """
    if env_id not in PRESETS:
        raise ValueError(f"env_id={env_id!r} is not accepted; accepted: {', '.join(PRESETS)}")
    return GossipEnv(**{**PRESETS[env_id], **kwargs})


def parallel_env(**kwargs: Any) -> GossipEnv:
    """The parallel env (PettingZoo's ``parallel_env()`` convention): ``hlgym/Gossip-v0``'s
    settings, ``kwargs`` as :class:`GossipEnv`. That id fails the validity test (its oracle is
    within the episodes' spread of random); to compare policies, ``make`` one that passes it:
    ``hlgym/Gossip-Distill-v0``, ``hlgym/Gossip-Distill-20-v0`` or ``hlgym/Gossip-Relay-v0``
    (docs/multiagent.md)."""
    return make("hlgym/Gossip-v0", **kwargs)


def env(**kwargs: Any) -> Any:
    """The AEC form of :func:`parallel_env`, through PettingZoo's own conversion (``parallel_to_aec``)."""
    return conversions.parallel_to_aec(parallel_env(**kwargs))
