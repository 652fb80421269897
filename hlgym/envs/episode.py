"""Episode: one episode's bookkeeping, apart from the models.

An :class:`Episode` draws what an episode is made of from its RNG (the peers' data, their
probes, a random topology, the seed of the episode's ``torch.Generator``), validates and pays
each hop, records visits, scores rounds, decides termination, and builds the observation,
the info dict and the log. It holds no ``nn.Module``: the model work of a round (training,
evaluation, probes, reading weights) happens in a :class:`~hlgym.models.work.ModelWork`, and
:class:`~hlgym.envs.rounds.RoundRunner` puts the two together in one order, for one episode
(:class:`~hlgym.envs.PeerSelectionEnv`) or many (the vector envs).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces

from hlgym.envs import observation as obs_builders
from hlgym.envs import partition, topology
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import DeviceData, device_data
from hlgym.envs.scenarios import assign_peers, domain_shift, modality_experts
from hlgym.envs.transfer import PER_PEER
from hlgym.models.training import mmd

BYTES_PER_PARAM = 4  # float32 weights travel
NO_REWARD = {"accuracy": 0.0, "communication": 0.0, "step": 0.0}  # reset's info["rewards"]

RENDER_MODES = ("ansi", "rgb_array")
StepResult = tuple[np.ndarray, float, bool, bool, dict[str, Any]]


class ProbeStats(NamedTuple):
    """What the observation reads of the current model on each peer's probe."""

    loss: np.ndarray
    """Mean cross-entropy per peer [nats]."""
    accuracy: np.ndarray
    """Accuracy per peer."""
    target_distance: np.ndarray | None = None
    """With a domain shift, per peer: sqrt(MMD^2 / 2) of the penultimate features on the
    probe and on the target images, in [0, 1]."""


class ResetNeededError(RuntimeError):
    """Raised by a method that needs an episode (``reset()``) first."""


class Move(NamedTuple):
    """One round's dispatch: who held the model, where it was sent, the hop paid."""

    prev: int
    peer: int
    hop: float
    delivered: bool
    link_failed: bool = False


class Training(NamedTuple):
    """A round's local training: which of the episode's model slots trains, with which
    optimizer state, on which data, what it absorbs first and what it returns.

    ``source`` is the slot of the arriving model in the modes where every peer keeps its own
    (None in the relay), ``public_x`` the episode's public inputs (``logits``), and
    ``corruption`` what a byzantine receiver does to its trained weights (``"noise"``,
    ``"sign_flip"``; ``label_flip`` is already in ``y``), ``align_x`` the target-domain images
    of ``alignment="mmd"``.
    """

    slot: int
    state: int
    x: torch.Tensor
    y: torch.Tensor
    source: int | None = None
    public_x: torch.Tensor | None = None
    corruption: str | None = None
    align_x: torch.Tensor | None = None


def check_render_mode(render_mode: str | None) -> None:
    """Raise ``ValueError`` for a render mode the env does not offer."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        accepted = ", ".join(["None", *(repr(m) for m in RENDER_MODES)])
        raise ValueError(f"render_mode={render_mode!r} is not accepted; accepted: {accepted}")


def spaces_for(config: PeerSelectionConfig) -> tuple[spaces.Box, spaces.Discrete]:
    """The observation and action spaces of an env with ``config``."""
    n = config.n_peers
    if config.observation == "peer_features":
        columns = obs_builders.feature_names(config.domain_shift is not None, config.modality_split is not None)
        observation = spaces.Box(0.0, 1.0, (n, len(columns)), np.float32)
    else:
        observation = spaces.Box(-np.inf, np.inf, (n * config.pca_components,), np.float32)
    return observation, spaces.Discrete(n)


@functools.lru_cache(maxsize=32)
def _fixed_topology(n_peers: int, scale: float, matrix: tuple[tuple[float, ...], ...] | None) -> tuple[np.ndarray, ...]:
    """A fixed topology's distances and drawing positions (computed once per process)."""
    d = np.asarray(matrix, dtype=np.float64) if matrix is not None else topology.hl_random(n_peers, scale)
    d.setflags(write=False)
    positions = topology.mds_positions(d)
    positions.setflags(write=False)
    return d, positions


def slots_for(config: PeerSelectionConfig) -> int:
    """Model slots an episode with ``config`` uses: 1 for the relay's travelling model, one
    per peer in the modes where every peer keeps its own model."""
    return config.n_peers if config.transfer in PER_PEER else 1


def _failure(move: Move) -> str:
    """The log's note on a hop that delivered nothing."""
    if move.link_failed:
        return " (link failed)"
    return "" if move.delivered else " (offline)"


class Episode:
    """The bookkeeping of one episode of :class:`~hlgym.envs.PeerSelectionEnv` (no model).

    Args:
        config: The environment's settings.
        n_params: Scalar parameters of the model (each hop to another peer sends
            ``n_params * 4`` bytes).
        data: The data on the device; default: :func:`device_data` for ``config``.

    Every attribute exists from construction; before :meth:`begin` (``begun`` is False) the
    peers are all online, the route is empty and a random topology is unknown (``None``).
    """

    def __init__(self, config: PeerSelectionConfig, n_params: int, data: DeviceData | None = None) -> None:
        self.config = config
        self.n_params = n_params
        self.data = data if data is not None else self.load_data(config)
        # Fail at construction, not at the first reset, when the split asks for too much.
        parts = self._partition(np.random.default_rng(0))
        # Every partitioner leaves the same number of samples to no peer, whatever its draws.
        pool = self._unassigned(parts).size
        for name, used in (("public_samples", config.transfer == "logits"), ("target_samples", self.shifted)):
            if used and getattr(config, name) > pool:
                accepted = f"an integer in [1, {pool}]" if pool else "none: every training sample is a peer's"
                raise ValueError(
                    f"{name}={getattr(config, name)} is not accepted; accepted: {accepted} "
                    f"(the training samples no peer holds under partition={config.partition!r}; "
                    "samples_per_peer or fewer peers leave some)"
                )
        n = config.n_peers
        self._fixed: tuple[np.ndarray, ...] | None = None
        if not isinstance(config.topology, str):
            self._fixed = _fixed_topology(n, config.topology_scale, config.topology)
        elif config.topology == "hl_random":
            self._fixed = _fixed_topology(n, config.topology_scale, None)
        self.distances: np.ndarray | None = None if self._fixed is None else self._fixed[0]
        self.positions: np.ndarray | None = None if self._fixed is None else self._fixed[1]
        self.begun = False
        self.np_random: np.random.Generator | None = None
        # Replaced by begin() with one seeded from the episode's RNG.
        self.generator = torch.Generator().manual_seed(0)
        self.main_classes: np.ndarray | None = None
        self.peer_indices: list[np.ndarray] = []
        """Each peer's training samples (indices into the data set's training split)."""
        self.peer_x: list[torch.Tensor] = []
        self.peer_y: list[torch.Tensor] = []
        self.probe_x = self.data.x_train[:0]
        self.probe_y = self.data.y_train[:0]
        self.public_indices = np.zeros(0, dtype=np.int64)
        """``logits``: the public set's training samples (held by no peer; drawn per episode)."""
        self.public_x = self.data.x_train[:0]
        self.peer_domains: np.ndarray | None = None
        """With a ``domain_shift``: each peer's domain (its level, e.g. degrees) this episode."""
        self.target_indices = np.zeros(0, dtype=np.int64)
        """With a ``domain_shift``: the unlabeled target images' training samples (held by no peer)."""
        self.target_x = self.data.x_train[:0]
        """With a ``domain_shift``: those images in the target domain."""
        self._targets_sent = False  # alignment="mmd": the target images have left the starter
        self.peer_modalities: np.ndarray | None = None
        """With a ``modality_split``: the view (modality index) each peer holds this episode."""
        self.modality_accuracy: np.ndarray | None = None
        """With a ``modality_split``: the current model's test accuracy through each view alone."""
        self._probe_rows: list[np.ndarray] = []  # each peer's probe: positions in its own data
        self.byzantine = np.zeros(n, dtype=bool)
        """Which peers corrupt what they return this episode (never in the observation)."""
        self._train_y: dict[int, torch.Tensor] = {}  # label_flip: the byzantine peers' training labels
        self.peer_accuracy = float("nan")
        self._probe_starts = np.zeros(0, dtype=np.int64)
        self.holder = config.start_peer
        self.round = 0
        self.accuracy = float("nan")
        self.comm_cost = 0.0
        self.bytes_sent = 0
        self.route: list[int] = []
        self.log: list[str] = []
        self.running = False
        self.online = np.ones(n, dtype=bool)
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.visits = np.zeros(n, dtype=np.int64)
        self._weights_before: np.ndarray | None = None
        self._weights_after: np.ndarray | None = None
        self._peer_weights: np.ndarray | None = None  # hl_pca with a model per peer: one row each

    @staticmethod
    def load_data(config: PeerSelectionConfig) -> DeviceData:
        """The data ``config`` asks for, on its device (shared by every episode of the process);
        with a ``domain_shift``, its test images are in the target domain; with a
        ``modality_split``, every image carries the views it holds (a presence channel).

        Raises:
            ValueError: If the images cannot be cut into ``modalities`` strips.
        """
        data = device_data(config.dataset, config.data_dir, config.device, config.model == "cnn", config.eval_samples)
        if config.domain_shift is not None:
            return domain_shift.target_data(data, config.domain_shift, float(config.target_domain))
        split = config.modality_split
        if split is None:
            return data
        most = modality_experts.split_size(split, data.input_shape)
        if config.modalities > most:
            across = "wide" if split == "columns" else "high"
            raise ValueError(
                f"modalities={config.modalities} is not accepted; accepted: an integer in [2, {most}] "
                f"(the {config.dataset} images are {most} pixels {across}: modality_split={split!r} "
                "cuts them into strips of one pixel at least)"
            )
        return modality_experts.modality_data(data, split, config.modalities)

    def __getstate__(self) -> dict[str, Any]:
        # The data set is shared and cached per process: reload it rather than pickle it.
        state = self.__dict__.copy()
        state.pop("data")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.data = self.load_data(self.config)

    # ------------------------------------------------------------------ what the models need

    @property
    def shifted(self) -> bool:
        """Whether peers hold their images in domains and the test set is a target domain."""
        return self.config.domain_shift is not None

    @property
    def has_views(self) -> bool:
        """Whether each peer holds one view (modality) of its examples (``modality_split``)."""
        return self.config.modality_split is not None

    @property
    def target_bytes(self) -> int:
        """Bytes of the target images (float32) that travel once with ``alignment="mmd"``."""
        if self.config.alignment != "mmd":
            return 0
        return self.config.target_samples * int(np.prod(self.data.input_shape)) * BYTES_PER_PARAM

    @property
    def per_peer(self) -> bool:
        """Whether every peer keeps its own model (``average``, ``distill``, ``logits``)."""
        return self.config.transfer in PER_PEER

    @property
    def model_slots(self) -> int:
        """Model slots this episode uses: 1, the travelling model of HL's relay, or one per
        peer (slot ``i`` is peer ``i``'s model) in the other transfer modes."""
        return slots_for(self.config)

    @property
    def scored_slot(self) -> int:
        """The slot (of this episode's) whose model the reward and the probes read: the
        holder's model. In the relay that is the one travelling model."""
        return self.holder if self.per_peer else 0

    @property
    def hop_bytes(self) -> int:
        """Bytes one hop to another peer moves: the model's weights (float32), or in the
        ``logits`` mode the holder's logits on the public set (float32)."""
        if self.config.transfer == "logits":
            return self.config.public_samples * self.data.n_classes * BYTES_PER_PARAM
        return self.n_params * BYTES_PER_PARAM

    def slot_generators(self) -> list[torch.Generator]:
        """The generator each of the episode's slots draws its initial weights from.

        Every peer's model starts from the same seed-drawn weights: the other slots draw
        from copies of the generator's state, so the generator advances as for one model.
        """
        copies = []
        for _ in range(self.model_slots - 1):
            twin = torch.Generator()
            twin.set_state(self.generator.get_state())
            copies.append(twin)
        return [self.generator, *copies]

    @property
    def needs_weights(self) -> bool:
        """Whether the observation reads the model's weights (``hl_pca``)."""
        return self.config.observation == "hl_pca"

    @property
    def needs_probes(self) -> bool:
        """Whether the observation reads the model's loss on each peer's probe (``peer_features``)."""
        return self.config.observation == "peer_features"

    def training(self, move: Move) -> Training | None:
        """The local training of the round ``move`` dispatched (None: nothing arrived)."""
        if not move.delivered:
            return None
        cfg, peer = self.config, move.peer
        corruption = None
        if self.byzantine[peer] and cfg.byzantine_mode != "label_flip":
            corruption = cfg.byzantine_mode
        y = self._train_y.get(peer, self.peer_y[peer])
        align = self.target_x if cfg.alignment == "mmd" else None
        if not self.per_peer:
            state = peer if cfg.per_peer_optimizer else 0
            return Training(0, state, self.peer_x[peer], y, corruption=corruption, align_x=align)
        if move.prev == peer:  # staying: the holder trains its own model, nothing arrives
            return Training(peer, 0, self.peer_x[peer], y, corruption=corruption, align_x=align)
        public = self.public_x if cfg.transfer == "logits" else None
        return Training(peer, 0, self.peer_x[peer], y, move.prev, public, corruption, align)

    def probe_means(
        self,
        loss: torch.Tensor,
        hits: torch.Tensor,
        features: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
    ) -> ProbeStats:
        """Per-peer means of the probe samples' loss and correctness (``probe_x`` order),
        and with a domain shift each peer's distance to the target domain: the MMD between
        the penultimate ``features`` of its probe and the ``target_features`` of
        :attr:`target_x`."""
        starts = self._probe_starts
        counts = np.diff(np.append(starts, loss.shape[0]))
        probe_loss = np.add.reduceat(loss.cpu().numpy(), starts) / counts
        probe_acc = np.add.reduceat(hits.cpu().numpy(), starts) / counts
        if features is None or target_features is None:
            return ProbeStats(probe_loss, probe_acc)
        squared = torch.empty(counts.size, dtype=features.dtype, device=features.device)
        for count in np.unique(counts):  # peers with as many probe samples in one batched call
            peers = np.flatnonzero(counts == count)
            rows = torch.from_numpy((starts[peers, None] + np.arange(count)).reshape(-1)).to(features.device)
            probe = features[rows].view(peers.size, int(count), -1)
            target = target_features.expand(peers.size, *target_features.shape)
            squared[torch.from_numpy(peers).to(features.device)] = mmd(probe, target)
        squared = squared.clamp_min(0.0)
        # MMD^2 of kernels in (0, 1] lies in [0, 2]: the column is its root over sqrt(2).
        return ProbeStats(probe_loss, probe_acc, (squared / 2).sqrt().clamp_max(1.0).cpu().numpy())

    # ------------------------------------------------------------------ phases (RoundRunner's order)

    def begin(self, rng: np.random.Generator, options: dict[str, Any] | None) -> None:
        """Draw a new episode from ``rng`` (kept for the episode's later draws): the seed of
        :attr:`generator` (initial weights, batch order), the peers' data and probes, and a
        ``euclidean`` topology."""
        if options:
            raise ValueError(f"options={options!r} is not accepted; accepted: None (no reset options)")
        cfg, n, data = self.config, self.config.n_peers, self.data
        self.begun = True
        self.np_random = rng
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        parts = self._partition(rng)
        self.peer_indices = parts
        fmt, device = data.memory_format, data.x_train.device
        self.peer_x = [data.x_train[torch.from_numpy(p).to(device)].contiguous(memory_format=fmt) for p in parts]
        self.peer_y = [data.y_train[torch.from_numpy(p).to(device)] for p in parts]
        self.main_classes = np.array([int(np.bincount(data.labels[p]).argmax()) for p in parts])
        self._probe_rows = [rng.permutation(p.size)[: cfg.probe_size] for p in parts]
        self._probe_starts = np.cumsum([0] + [r.size for r in self._probe_rows[:-1]])
        if self._fixed is None:
            self.distances, self.positions = topology.euclidean(n, rng, cfg.topology_scale)
        # Draws that only some settings make come last, so the others' episodes are unchanged.
        if cfg.transfer == "logits":
            self.public_indices = rng.choice(self._unassigned(parts), size=cfg.public_samples, replace=False)
            public = torch.from_numpy(self.public_indices).to(device)
            self.public_x = data.x_train[public].contiguous(memory_format=fmt)
        self.byzantine = np.zeros(n, dtype=bool)
        self._train_y = {}
        if cfg.byzantine_peers > 0:
            self.byzantine[rng.choice(n, size=cfg.byzantine_peers, replace=False)] = True
            if cfg.byzantine_mode == "label_flip":
                for peer in np.flatnonzero(self.byzantine):
                    # A class offset in [1, n_classes): every label becomes another class.
                    shift = int(rng.integers(1, data.n_classes))
                    self._train_y[int(peer)] = (self.peer_y[peer] + shift) % data.n_classes
        if self.shifted:
            self._shift_domains(parts, rng)
        if self.has_views:
            self._split_views(rng)
        self._probe()  # from the peers' images as they hold them (after a domain shift's rendering)
        self._targets_sent = False
        self.holder = cfg.start_peer
        self.round = 0
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.visits = np.zeros(n, dtype=np.int64)
        self.comm_cost = 0.0
        self.bytes_sent = 0
        self.online = np.ones(n, dtype=bool)

    def start(self, accuracy: float, weights: np.ndarray | None, modality_accuracy: np.ndarray | None = None) -> None:
        """Open the episode with the initial model's test accuracy (and, for ``hl_pca``, the
        flat weights of every slot, ``(model_slots, n_params)``; every peer holds the same
        initial model; with a ``modality_split``, its accuracy through each view alone)."""
        self.accuracy = self.peer_accuracy = accuracy
        self.modality_accuracy = modality_accuracy
        if weights is not None:
            self._peer_weights = weights
            self._weights_before = self._weights_after = weights[0]
        self.running = True
        self.route = [self.holder]
        self.log = [f"round   0  model at peer {self.holder}  acc {self.accuracy:.4f}"]

    def opening(self, probe: ProbeStats | None) -> tuple[np.ndarray, dict[str, Any]]:
        """``reset``'s ``(obs, info)`` when no round is forced (nothing paid, nothing scored)."""
        return self.observe(probe), self.info(dict(NO_REWARD), delivered=True, hop=0.0)

    def forced_first_round(self, result: StepResult) -> tuple[np.ndarray, dict[str, Any]]:
        """``reset``'s ``(obs, info)`` after the round ``first_round_at_start`` plays."""
        obs, _, terminated, truncated, info = result
        if terminated or truncated:
            raise RuntimeError(
                f"the forced first round already ended the episode (accuracy {info['accuracy']:.4f}, "
                f"goal={self.config.goal}); raise goal or max_rounds"
            )
        return obs, info

    def check_step(self, action: Any) -> int:
        """The peer ``action`` names, if a step may be taken now; raises ``ValueError`` for an
        action outside the space and ``RuntimeError`` outside an episode."""
        n = self.config.n_peers
        value = np.asarray(action)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"action={action!r} is not accepted; accepted: an integer peer index in [0, {n - 1}]")
        peer = int(value.reshape(()))
        if not 0 <= peer < n:
            raise ValueError(f"action={peer} is not accepted; accepted: an integer peer index in [0, {n - 1}]")
        if not self.running:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        return peer

    def dispatch(self, peer: int) -> Move:
        """Pay the hop to ``peer`` (checked by :meth:`check_step`); the model moves unless the
        peer is offline or the link fails (``link_failure_prob``, a draw per hop to another peer)."""
        assert self.distances is not None and self.np_random is not None, "dispatch() runs inside an episode"
        prev = self.holder
        hop = float(self.distances[prev, peer])
        self.comm_cost += hop
        failed = False
        if peer != prev:
            self.bytes_sent += self.hop_bytes  # sent, whether or not it arrives
            if not self._targets_sent:  # alignment's target images leave the starter once
                self.bytes_sent += self.target_bytes
                self._targets_sent = True
            p = self.config.link_failure_prob
            failed = p > 0 and bool(self.np_random.random() < p)
        self.round += 1
        delivered = bool(self.online[peer]) and not failed
        if delivered:
            self.holder = peer
        self.route.append(self.holder)
        return Move(prev, peer, hop, delivered, failed)

    def trained(self, move: Move, weights: np.ndarray | None) -> None:
        """Record the round's local training (none if the peer was offline).

        ``weights``: for ``hl_pca`` only, every slot's flat weights after the round,
        ``(model_slots, n_params)``. In the relay, as in the reference, the state is taken
        after local training and before the broadcast: every other peer still holds the model
        from before the round. With a model per peer, each row is that peer's own model.
        """
        if not move.delivered:
            self._weights_before = self._weights_after  # every peer holds the same model
            return
        if weights is not None:
            self._peer_weights = weights
            self._weights_before, self._weights_after = self._weights_after, weights[0]
        self.last_visit[move.peer] = self.round
        self.visits[move.peer] += 1

    def conclude(
        self,
        move: Move,
        accuracy: float,
        probe: ProbeStats | None,
        peer_accuracy: float | None = None,
        modality_accuracy: np.ndarray | None = None,
    ) -> StepResult:
        """Score the round given the holder's model's test accuracy, (``peer_features``) its
        per-peer probe statistics, (``track_peer_accuracy``) the mean accuracy of every
        peer's model and (``modality_split``) its accuracy through each view alone; returns
        the step's ``(obs, reward, terminated, truncated, info)``."""
        self.accuracy = accuracy
        self.modality_accuracy = modality_accuracy
        self.peer_accuracy = accuracy if peer_accuracy is None else peer_accuracy
        reward, terms = self.reward(accuracy, move.hop)
        terminated = accuracy >= self.config.goal
        truncated = not terminated and self.round >= self.config.max_rounds
        self.running = not (terminated or truncated)
        self._draw_online()
        self.log.append(
            f"round {self.round:3d}  {move.prev:>2} -> {move.peer:<2}{_failure(move)}  "
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
        cfg, n = self.config, self.config.n_peers
        assert self.distances is not None, "observe() runs inside an episode"
        if cfg.observation == "hl_pca":
            if self.per_peer:
                assert self._peer_weights is not None
                return obs_builders.hl_pca(self._peer_weights, cfg.pca_components)
            assert self._weights_before is not None and self._weights_after is not None
            rows = np.repeat(self._weights_before[None, :], n, axis=0)
            rows[self.holder] = self._weights_after
            return obs_builders.hl_pca(rows, cfg.pca_components)
        assert probe is not None, "peer_features needs the probe statistics"
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
            target_distance=probe.target_distance,
            view_accuracy=self._view_accuracy(),
        )

    def info(self, terms: dict[str, float], delivered: bool, hop: float) -> dict[str, Any]:
        """The info dict of ``reset`` / ``step``."""
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
        if self.modality_accuracy is not None:
            out["modality_accuracy"] = self.modality_accuracy.copy()
        return out

    def _view_accuracy(self) -> np.ndarray | None:
        """Each peer's row of the ``modality_accuracy`` column: the current model's test
        accuracy through the view the peer holds (None without a modality split)."""
        if self.modality_accuracy is None or self.peer_modalities is None:
            return None
        column: np.ndarray = self.modality_accuracy[self.peer_modalities]
        return column

    def action_masks(self) -> np.ndarray:
        """Peers that can receive the model this round (all of them before the first reset)."""
        return self.online.copy()

    def render(self, mode: str | None) -> str | np.ndarray | None:
        """``"ansi"``: one line per round so far (empty before the first reset).
        ``"rgb_array"``: the peers on the topology, coloured by main class (by domain with a
        ``domain_shift``, by modality with a ``modality_split``), and the route."""
        if mode == "ansi":
            return "\n".join(self.log)
        if mode == "rgb_array":
            return self._draw()
        return None

    def _partition(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg, labels, c = self.config, self.data.labels, self.data.n_classes
        if cfg.partition == "hl_reference":
            return partition.hl_reference(labels, cfg.n_peers, c, cfg.main_samples, cfg.other_samples)
        if cfg.partition == "hl_skew":
            return partition.hl_skew(labels, cfg.n_peers, c, cfg.main_samples, cfg.other_samples, rng)
        if cfg.partition == "dirichlet":
            return partition.dirichlet(labels, cfg.n_peers, c, cfg.dirichlet_alpha, cfg.samples_per_peer, rng)
        if cfg.partition == "shards":
            return partition.shards(labels, cfg.n_peers, cfg.classes_per_peer, cfg.samples_per_peer, rng)
        return partition.iid(labels, cfg.n_peers, cfg.samples_per_peer, rng)

    def _probe(self) -> None:
        """Gather the probes (``_probe_rows`` of each peer's images, as the peer holds them)."""
        self.probe_x = torch.cat(
            [x[torch.from_numpy(r).to(x.device)] for x, r in zip(self.peer_x, self._probe_rows, strict=True)]
        )
        self.probe_x = self.probe_x.contiguous(memory_format=self.data.memory_format)
        self.probe_y = torch.cat(
            [y[torch.from_numpy(r).to(y.device)] for y, r in zip(self.peer_y, self._probe_rows, strict=True)]
        )

    def _shift_domains(self, parts: list[np.ndarray], rng: np.random.Generator) -> None:
        """Draw the peers' domains and the target images; render the peers' images in their
        domains and the target images in the target domain."""
        cfg, data = self.config, self.data
        assert cfg.domain_shift is not None
        sources = np.asarray(cfg.source_domains, dtype=np.float64)
        self.peer_domains = sources[assign_peers(cfg.domain_rule, cfg.n_peers, sources.size, rng, "domain_rule")]
        self.target_indices = rng.choice(self._unassigned(parts), size=cfg.target_samples, replace=False)
        # The transforms' own draws (noise) come from a generator seeded here, on the device.
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        shift, fmt = cfg.domain_shift, data.memory_format
        self.peer_x = [
            domain_shift.apply_shift(x, shift, float(level), generator, fmt)
            for x, level in zip(self.peer_x, self.peer_domains, strict=True)
        ]
        target = data.x_train[torch.from_numpy(self.target_indices).to(data.x_train.device)]
        self.target_x = domain_shift.apply_shift(target, shift, float(cfg.target_domain), generator, fmt)

    def _split_views(self, rng: np.random.Generator) -> None:
        """Draw the view each peer holds and keep only that strip of its images."""
        cfg = self.config
        assert cfg.modality_split is not None
        self.peer_modalities = assign_peers(cfg.modality_rule, cfg.n_peers, cfg.modalities, rng, "modality_rule")
        self.peer_x = [
            modality_experts.view(x, cfg.modality_split, cfg.modalities, int(m))
            for x, m in zip(self.peer_x, self.peer_modalities, strict=True)
        ]

    def _unassigned(self, parts: list[np.ndarray]) -> np.ndarray:
        """Training samples no peer holds (the pool of the ``logits`` mode's public set and of
        a domain shift's target images)."""
        held = np.zeros(self.data.labels.shape[0], dtype=bool)
        for p in parts:
            held[p] = True
        return np.flatnonzero(~held)

    def _draw_online(self) -> None:
        p = self.config.offline_prob
        if p > 0:
            assert self.np_random is not None
            self.online = self.np_random.random(self.config.n_peers) >= p
            self.online[self.holder] = True

    def _draw(self) -> np.ndarray:
        if self.positions is None or self.main_classes is None:
            raise ResetNeededError("render() in 'rgb_array' mode needs an episode: call reset() first")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 4), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        pos = self.positions
        if self.peer_modalities is not None:  # coloured by the view a peer holds
            top = max(self.config.modalities - 1, 1)
            ax.scatter(pos[:, 0], pos[:, 1], c=self.peer_modalities, cmap="viridis", vmin=0, vmax=top, s=200, zorder=3)
        elif self.peer_domains is None:
            ax.scatter(pos[:, 0], pos[:, 1], c=self.main_classes, cmap="tab10", vmin=0, vmax=9, s=200, zorder=3)
        else:  # coloured by domain, light to dark in the order of source_domains
            top = max(len(self.config.source_domains) - 1, 1)
            index = [self.config.source_domains.index(d) for d in self.peer_domains]
            ax.scatter(pos[:, 0], pos[:, 1], c=index, cmap="viridis", vmin=0, vmax=top, s=200, zorder=3)
        bad = self.byzantine
        if bad.any():  # byzantine peers: a red ring (for analysis; the policy never sees it)
            ax.scatter(pos[bad, 0], pos[bad, 1], s=420, facecolors="none", edgecolors="red", linewidths=2, zorder=2)
        for i, (x, y) in enumerate(pos):
            ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=8, zorder=4)
        for k, (a, b) in enumerate(itertools.pairwise(self.route), start=1):
            if a != b:
                ax.annotate("", pos[b], pos[a], arrowprops={"arrowstyle": "->", "alpha": 0.6})
                mid = (pos[a] + pos[b]) / 2
                ax.text(mid[0], mid[1], str(k), fontsize=7, color="dimgray")
        ax.set_title(f"round {self.round}  acc {self.accuracy:.3f}  comm {self.comm_cost:.3f}")
        ax.set_xticks([])
        ax.set_yticks([])
        canvas.draw()  # type: ignore[no-untyped-call]
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # type: ignore[no-untyped-call]
