"""Episode: one episode's bookkeeping, apart from the models.

An :class:`Episode` is the core that every setting shares: it draws the episode's seed, the
peers' data, their probes and a random topology from its RNG, validates and pays each hop,
records visits, scores rounds, decides termination, and builds the observation's base
columns, the info dict and the log. What varies (the transfer mode, faults, scenarios, a
user's own parts) is a list of :mod:`~hlgym.envs.components` whose hooks the core calls in
a fixed order. It holds no ``nn.Module``: the model work of a round happens in a
:class:`~hlgym.models.work.ModelWork`, and :class:`~hlgym.envs.rounds.RoundRunner` puts the
two together, for one episode (:class:`~hlgym.envs.PeerSelectionEnv`) or many (the vector envs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hlgym.envs import components, partition, render, topology
from hlgym.envs import observation as obs_builders
from hlgym.envs.components import BYTES_PER_PARAM, Component, Move, ProbeStats
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import DeviceData, device_data

__all__ = ["BYTES_PER_PARAM", "Episode", "Move", "ProbeStats", "ResetNeededError"]

NO_REWARD = {"accuracy": 0.0, "communication": 0.0, "step": 0.0}  # reset's info["rewards"]
StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


class ResetNeededError(RuntimeError):
    """Raised by a method that needs an episode (``reset()``) first."""


class Episode:
    """The bookkeeping of one episode of :class:`~hlgym.envs.PeerSelectionEnv` (no model).

    Args:
        config: The environment's settings.
        n_params: Scalar parameters of the model (each hop to another peer sends
            ``n_params * 4`` bytes in the modes where weights travel).
        data: The data on the device; default: :meth:`load_data` for ``config``.

    Every attribute exists from construction; before :meth:`begin` (``begun`` is False) the
    peers are all online, the route is empty and a random topology is unknown (``None``).
    A component's exposed attributes (``episode.peer_domains``, ...) read through:
    :meth:`exposed`.
    """

    def __init__(self, config: PeerSelectionConfig, n_params: int, data: DeviceData | None = None) -> None:
        self.config = config
        self.n_params = n_params
        self.data = data if data is not None else self.load_data(config)
        n = config.n_peers
        self.begun = False
        self.np_random: np.random.Generator | None = None
        self.generator = torch.Generator().manual_seed(0)  # begin() seeds one from the episode's RNG
        self.main_classes: np.ndarray | None = None
        self.peer_indices: list[np.ndarray] = []
        """Each peer's training samples (indices into the data set's training split)."""
        self.peer_x: list[torch.Tensor] = []
        self.peer_y: list[torch.Tensor] = []
        self.probe_x = self.data.x_train[:0]
        self.probe_y = self.data.y_train[:0]
        self.probe_starts = np.zeros(0, dtype=np.int64)
        self._probe_rows: list[np.ndarray] = []  # each peer's probe: positions in its own data
        self.holder, self.round, self.comm_cost, self.bytes_sent = config.start_peer, 0, 0.0, 0
        self.accuracy = self.peer_accuracy = float("nan")
        self.route: list[int] = []
        self.log: list[str] = []
        self.running = False
        self.online = np.ones(n, dtype=bool)
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.visits = np.zeros(n, dtype=np.int64)
        self.weights = obs_builders.WeightRows()  # hl_pca's rows
        self.parts: list[Component] = [cls(self, params) for cls, params in components.for_config(config)]
        """The episode's components, in the order their hooks run (the transfer mode first)."""
        transfer = self.parts[0]
        assert isinstance(transfer, components.transfer.TransferMode), "the transfer mode comes first"
        self.transfer: components.transfer.TransferMode = transfer
        # Fail at construction, not at the first reset, when the split asks for too much.
        components.check_pool(config, self.data)
        self._fixed = topology.fixed_for(config.topology, n, config.topology_scale)
        self.distances: np.ndarray | None = None if self._fixed is None else self._fixed[0]
        self.positions: np.ndarray | None = None if self._fixed is None else self._fixed[1]

    @staticmethod
    def load_data(config: PeerSelectionConfig) -> DeviceData:
        """The data ``config`` asks for, on its device (shared by every episode of the
        process), as its components need it (a domain shift's target test set, a view
        split's views)."""
        data = device_data(config.dataset, config.data_dir, config.device, config.model == "cnn", config.eval_samples)
        return components.prepare_data(config, data)

    def __getstate__(self) -> dict[str, Any]:
        # The data set is shared and cached per process: reload it rather than pickle it. The
        # generator travels as its state: deepcopy of a torch.Generator (torch 2.13) drops a
        # reference to None per call, fatal to a process that copies envs for hours (oracle).
        state = self.__dict__.copy()
        state.pop("data")
        state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator = torch.Generator()
        generator.set_state(state.pop("generator"))
        self.__dict__.update(state, generator=generator)
        self.data = self.load_data(self.config)

    def exposed(self, name: str) -> Any:
        """A component's exposed attribute (a built-in's value while it is off).

        Raises:
            AttributeError: If no component exposes ``name``.
        """
        for part in self.__dict__.get("parts", ()):
            if name in part.exposes:
                return getattr(part, name)
        known, value = components.absent_value(name, self)
        if not known:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.exposed(name)

    # ------------------------------------------------------------------ what the models need

    @property
    def model_slots(self) -> int:
        """Model slots this episode uses: 1, the travelling model of HL's relay, or one per
        peer (slot ``i`` is peer ``i``'s model) in the other transfer modes."""
        return components.slots(self.config)

    @property
    def scored_slot(self) -> int:
        """The slot whose model the reward and the probes read: the holder's."""
        return self.transfer.scored_slot()

    def slot_generators(self, slots: int | None = None) -> list[torch.Generator]:
        """The generator each of the episode's slots (or of ``slots`` slots) draws its initial
        weights from (see :meth:`~hlgym.envs.components.transfer.TransferMode.slot_generators`)."""
        return self.transfer.slot_generators(self.generator, slots)

    def unassigned(self) -> np.ndarray:
        """Training samples no peer holds this episode."""
        return partition.unassigned(self.data.labels.shape[0], self.peer_indices)

    # ------------------------------------------------------------------ phases (RoundRunner's order)

    def begin(self, rng: np.random.Generator, options: dict[str, Any] | None) -> None:
        """Draw a new episode from ``rng`` (kept for the episode's later draws): the seed of
        :attr:`generator` (initial weights, batch order), the peers' data and probes, a
        ``euclidean`` topology, then each component's draws."""
        if options:
            raise ValueError(f"options={options!r} is not accepted; accepted: None (no reset options)")
        cfg, n, data = self.config, self.config.n_peers, self.data
        self.begun = True
        self.np_random = rng
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        parts = partition.split(cfg, data.labels, data.n_classes, rng)
        self.peer_indices = parts
        fmt, device = data.memory_format, data.x_train.device
        self.peer_x = [data.x_train[torch.from_numpy(p).to(device)].contiguous(memory_format=fmt) for p in parts]
        self.peer_y = [data.y_train[torch.from_numpy(p).to(device)] for p in parts]
        self.main_classes = np.array([int(np.bincount(data.labels[p]).argmax()) for p in parts])
        self._probe_rows = [rng.permutation(p.size)[: cfg.probe_size] for p in parts]
        self.probe_starts = np.cumsum([0] + [r.size for r in self._probe_rows[:-1]])
        if self._fixed is None:
            self.distances, self.positions = topology.euclidean(n, rng, cfg.topology_scale)
        for part in self.parts:  # draws that only some settings make come after the core's
            part.begin(rng)
        # The probes: each peer's images as it holds them (after a component rendered them).
        rows = [torch.from_numpy(r).to(device) for r in self._probe_rows]
        self.probe_x = torch.cat([x[r] for x, r in zip(self.peer_x, rows, strict=True)]).contiguous(memory_format=fmt)
        self.probe_y = torch.cat([y[r] for y, r in zip(self.peer_y, rows, strict=True)])
        self.holder, self.round, self.comm_cost, self.bytes_sent = cfg.start_peer, 0, 0.0, 0
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.visits = np.zeros(n, dtype=np.int64)
        self.online = np.ones(n, dtype=bool)

    def start(self, accuracy: float, weights: np.ndarray | None) -> None:
        """Open the episode with the initial model's test accuracy (and, for ``hl_pca``, the
        flat weights of every slot, ``(model_slots, n_params)``; every peer holds the same
        initial model)."""
        self.accuracy = self.peer_accuracy = accuracy
        if weights is not None:
            self.weights.start(weights)
        self.running = True
        self.route = [self.holder]
        self.log = [f"round   0  model at peer {self.holder}  acc {self.accuracy:.4f}"]

    def opening(self, probe: ProbeStats | None) -> tuple[np.ndarray, dict[str, Any]]:
        """``reset``'s ``(obs, info)`` when no round is forced (nothing paid, nothing scored)."""
        return self.observe(probe), self.info(dict(NO_REWARD), delivered=True, hop=0.0)

    def check_step(self, action: Any) -> int:
        """The peer ``action`` names, if a step may be taken now; raises ``ValueError`` for an
        action outside the space and ``RuntimeError`` outside an episode."""
        n = self.config.n_peers
        value = np.asarray(action)
        accepted = f"accepted: an integer peer index in [0, {n - 1}]"
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"action={action!r} is not accepted; {accepted}")
        peer = int(value.reshape(()))
        if not 0 <= peer < n:
            raise ValueError(f"action={peer} is not accepted; {accepted}")
        if not self.running:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        return peer

    def dispatch(self, peer: int) -> Move:
        """Pay the hop to ``peer`` (checked by :meth:`check_step`); the model moves unless the
        peer is offline or a component fails the hop (a link failure)."""
        assert self.distances is not None and self.np_random is not None, "dispatch() runs inside an episode"
        prev = self.holder
        hop = float(self.distances[prev, peer])
        self.comm_cost += hop
        failed = False
        if peer != prev:
            self.bytes_sent += self.transfer.hop_bytes(self.n_params)  # sent, whether or not it arrives
            for part in self.parts:
                extra, part_failed = part.hop(prev, peer, self.np_random)
                self.bytes_sent += extra
                failed = failed or part_failed
        self.round += 1
        delivered = bool(self.online[peer]) and not failed
        if delivered:
            self.holder = peer
        self.route.append(self.holder)
        return Move(prev, peer, hop, delivered, failed)

    def training(self, move: Move) -> components.Training | None:
        """The local training of the round ``move`` dispatched (None: nothing arrived): the
        transfer mode's job as every component shapes it."""
        if not move.delivered:
            return None
        job = self.transfer.training(move)
        for part in self.parts:
            job = part.shape(job, move)
        return job

    def trained(self, move: Move, weights: np.ndarray | None) -> None:
        """Record the round's local training (none if the peer was offline); ``weights``:
        for ``hl_pca`` only, every slot's flat weights after the round (``WeightRows``)."""
        self.weights.trained(move.delivered, weights)
        if not move.delivered:
            return
        self.last_visit[move.peer] = self.round
        self.visits[move.peer] += 1

    def conclude(
        self, move: Move, accuracy: float, probe: ProbeStats | None, peer_accuracy: float | None
    ) -> StepResult:
        """Score the round given the holder's model's test accuracy, (``peer_features``) its
        per-peer probe statistics and (``track_peer_accuracy``) the mean accuracy of every
        peer's model; returns the step's ``(obs, reward, terminated, truncated, info)``."""
        assert self.np_random is not None
        self.accuracy = accuracy
        self.peer_accuracy = accuracy if peer_accuracy is None else peer_accuracy
        reward, terms = self.reward(accuracy, move.hop)
        terminated = accuracy >= self.config.goal
        truncated = not terminated and self.round >= self.config.max_rounds
        self.running = not (terminated or truncated)
        for part in self.parts:
            part.after_round(self.np_random)
        failure = " (link failed)" if move.link_failed else "" if move.delivered else " (offline)"
        self.log.append(
            f"round {self.round:3d}  {move.prev:>2} -> {move.peer:<2}{failure}  "
            f"hop {move.hop:.4f}  comm {self.comm_cost:.4f}  acc {accuracy:.4f}  reward {reward:+.4f}"
        )
        return self.observe(probe), reward, terminated, truncated, self.info(terms, move.delivered, move.hop)

    # ------------------------------------------------------------------ pieces of a round

    def reward(self, accuracy: float, hop: float) -> tuple[float, dict[str, float]]:
        """The reference's reward and its three terms."""
        cfg = self.config
        terms = {
            "accuracy": cfg.reward_base ** (accuracy - cfg.goal),
            "communication": -cfg.cost_weight * hop,
            "step": -1.0,
        }
        return math.fsum(terms.values()), terms

    def observe(self, probe: ProbeStats | None) -> np.ndarray:
        """The observation of the current state."""
        cfg = self.config
        assert self.distances is not None, "observe() runs inside an episode"
        if cfg.observation == "hl_pca":
            return self.weights.observe(self.holder, cfg.n_peers, cfg.pca_components, self.transfer.per_peer)
        assert probe is not None, "peer_features needs the probe statistics"
        extra = [part.column(name) for part in self.parts for name in part.columns]
        return obs_builders.peer_features(
            holder=self.holder,
            hop_costs=self.distances[self.holder],
            max_cost=float(self.distances.max()),
            probe_loss=probe.loss,
            probe_acc=probe.accuracy,
            last_visit=self.last_visit,
            visits=self.visits,
            round_=self.round,
            max_rounds=cfg.max_rounds,
            accuracy=self.accuracy,
            n_classes=self.data.n_classes,
            extra=extra,
        )

    def info(self, terms: dict[str, float], delivered: bool, hop: float) -> dict[str, Any]:
        """The info dict of ``reset`` / ``step`` (the core's keys, then each component's)."""
        assert self.distances is not None, "info() runs inside an episode"
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "hop_cost": hop,
            "comm_cost": self.comm_cost,
            "bytes_sent": self.bytes_sent,
            "round": self.round,
            "holder": self.holder,
            "delivered": delivered,
            "rewards": terms,
            "action_mask": self.online.copy(),
            "hop_costs": self.distances[self.holder].copy(),
        }
        if self.config.track_peer_accuracy:
            out["mean_peer_accuracy"] = self.peer_accuracy
        for part in self.parts:
            part.info(out)
        return out

    def action_masks(self) -> np.ndarray:
        """Peers that can receive the model this round (all of them before the first reset)."""
        return self.online.copy()

    def render(self, mode: str | None) -> str | np.ndarray | None:
        """``"ansi"``: one line per round so far (empty before the first reset).
        ``"rgb_array"``: the peers on the topology, coloured by main class (or as a
        component colours them: by domain, by view), and the route."""
        if mode == "ansi":
            return "\n".join(self.log)
        if mode != "rgb_array":
            return None
        if self.positions is None or self.main_classes is None:
            raise ResetNeededError("render() in 'rgb_array' mode needs an episode: call reset() first")
        title = f"round {self.round}  acc {self.accuracy:.3f}  comm {self.comm_cost:.3f}"
        return render.draw(self.positions, self.main_classes, self.route, title, self.parts)
