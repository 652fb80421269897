"""PeerSelectionEnv: Homogeneous Learning's peer hierarchy as a Gymnasium environment."""

from __future__ import annotations

import functools
import itertools
import math
import time
from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from hlgym.envs import observation as obs_builders
from hlgym.envs import partition, topology
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import Dataset, load_dataset
from hlgym.models.training import (
    build_model,
    count_parameters,
    evaluate,
    flat_weights,
    local_train,
    make_optimizer,
    per_sample_loss,
)

BYTES_PER_PARAM = 4  # float32 weights travel
_NO_REWARD = {"accuracy": 0.0, "communication": 0.0, "step": 0.0}  # reset's info["rewards"]


class _Move(NamedTuple):
    """One round's dispatch: who held the model, where it was sent, the hop paid."""

    prev: int
    peer: int
    hop: float
    delivered: bool


@functools.lru_cache(maxsize=8)
def _device_tensors(
    data: Dataset, device: torch.device, channels_last: bool, eval_samples: int | None
) -> tuple[torch.Tensor, ...]:
    """The data set on ``device`` in the models' layout, shared by every env of the process
    (a vector env's copies would otherwise hold one copy each: 220 MB for Fashion-MNIST).

    Returns:
        ``x_train, y_train, x_test, y_test`` and the reward's test subset ``x, y``.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x_train = data.x_train.to(device).contiguous(memory_format=fmt)
    x_test = data.x_test.to(device).contiguous(memory_format=fmt)
    y_train, y_test = data.y_train.to(device), data.y_test.to(device)
    if eval_samples is None:
        return x_train, y_train, x_test, y_test, x_test, y_test
    # Fixed seed: the same subset for every episode, so accuracies are comparable.
    keep = partition.stratified_subset(data.y_test.numpy(), eval_samples, np.random.default_rng(0))
    index = torch.from_numpy(keep).to(device)
    return x_train, y_train, x_test, y_test, x_test[index].contiguous(memory_format=fmt), y_test[index]


class PeerSelectionEnv(gym.Env[np.ndarray, np.int64]):
    """Choose which peer the travelling model trains at next.

    ## Description

    Homogeneous Learning (Sun & Ochiai, IEEE Access 2022): ``n_peers`` peers each hold
    non-IID data. One model travels from peer to peer; at each round the peer that
    receives it trains it on its local data. A meta-policy picks the next peer so that the
    model reaches a target test accuracy in few rounds and with little communication.

    ## Action Space

    ``Discrete(n_peers)``: the peer the model is sent to (and trained at) this round.
    Sending it to the holder itself costs nothing. :meth:`action_masks` gives the peers
    that are online (all of them unless ``offline_prob > 0``).

    ## Observation Space

    - ``observation="peer_features"``: ``Box(0, 1, (n_peers, 8), float32)``, one row per
      peer with the columns of :data:`hlgym.envs.observation.PEER_FEATURES`: holder flag,
      hop cost from the holder, loss and error of the current model on a fixed probe of the
      peer's data, rounds since the peer last trained, visit count, and the episode's
      progress and accuracy on every row.
    - ``observation="hl_pca"``: ``Box(-inf, inf, (n_peers * pca_components,), float32)``:
      the reference's state, PCA refit each round over the peers' flattened weights after
      local training and before the new model is broadcast.

    ## Rewards

    ``reward_base ** (accuracy - goal) - cost_weight * hop_cost - 1`` per round, the
    reference's reward. The three terms are in ``info["rewards"]``.

    ## Starting State

    A fresh model (Keras-default initialisation) at ``start_peer``; the peers' data
    (from the partitioner) and, for ``euclidean``, the topology are drawn from the seed.
    With ``first_round_at_start=True`` round 1 has already been played at ``start_peer``.

    ## Episode End

    Terminated when the test accuracy reaches ``goal``; truncated after ``max_rounds``
    rounds.

    ## Arguments

    ``PeerSelectionEnv(config=None, render_mode=None, **overrides)``: ``config`` is a
    :class:`~hlgym.envs.PeerSelectionConfig` (default: the embedded default), and keyword
    overrides replace its fields. ``render_mode`` is ``"ansi"`` or ``"rgb_array"``.

    >>> import gymnasium as gym, hlgym
    >>> env = gym.make("hlgym/PeerSelection-v0", max_rounds=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape
    (10, 8)
    >>> obs, reward, terminated, truncated, info = env.step(3)
    >>> info["holder"], info["round"]
    (3, 1)

    ## Version History

    * v0: Initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 2}  # noqa: RUF012  (Gymnasium's plain-dict convention)

    def __init__(
        self, config: PeerSelectionConfig | None = None, render_mode: str | None = None, **overrides: Any
    ) -> None:
        cfg = (config or PeerSelectionConfig()).replace(**overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not accepted; accepted: None, 'ansi', 'rgb_array'")
        self.config = cfg
        self.render_mode = render_mode
        self._device = torch.device(cfg.device)
        self._attach_data(load_dataset(cfg.dataset, cfg.data_dir))
        # Fail at construction, not at the first reset, when the split asks for too much.
        self._partition(np.random.default_rng(0))
        n = cfg.n_peers
        self.action_space = spaces.Discrete(n)
        if cfg.observation == "peer_features":
            self.observation_space = spaces.Box(0.0, 1.0, (n, len(obs_builders.PEER_FEATURES)), np.float32)
        else:
            self.observation_space = spaces.Box(-np.inf, np.inf, (n * cfg.pca_components,), np.float32)
        self._fixed_topology: np.ndarray | None = None
        if not isinstance(cfg.topology, str):
            self._fixed_topology = np.asarray(cfg.topology, dtype=np.float64)
        elif cfg.topology == "hl_random":
            self._fixed_topology = topology.hl_random(n, cfg.topology_scale)
        if self._fixed_topology is not None:
            self._fixed_positions = topology.mds_positions(self._fixed_topology)
        self._running = False
        self._round = 0
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up helpers

    def _attach_data(self, data: Dataset) -> None:
        self._data = data
        # Convolutions run faster on CPU in channels-last layout: evaluation about 4x (README "Speed").
        self._memory_format = torch.channels_last if self.config.model == "cnn" else torch.contiguous_format
        tensors = _device_tensors(data, self._device, self.config.model == "cnn", self.config.eval_samples)
        self._x_train, self._y_train, self._x_test_full, self._y_test_full, self._x_test, self._y_test = tensors
        self._labels = data.y_train.numpy()

    def _partition(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg, labels, c = self.config, self._labels, self._data.n_classes
        if cfg.partition == "hl_reference":
            return partition.hl_reference(labels, cfg.n_peers, c, cfg.main_samples, cfg.other_samples)
        if cfg.partition == "hl_skew":
            return partition.hl_skew(labels, cfg.n_peers, c, cfg.main_samples, cfg.other_samples, rng)
        if cfg.partition == "dirichlet":
            return partition.dirichlet(labels, cfg.n_peers, c, cfg.dirichlet_alpha, cfg.samples_per_peer, rng)
        if cfg.partition == "shards":
            return partition.shards(labels, cfg.n_peers, cfg.classes_per_peer, cfg.samples_per_peer, rng)
        return partition.iid(labels, cfg.n_peers, cfg.samples_per_peer, rng)

    def __getstate__(self) -> dict[str, Any]:
        # The data set is shared and cached per process: reload it rather than pickle it.
        state = self.__dict__.copy()
        for key in ("_data", "_x_train", "_y_train", "_x_test", "_y_test", "_x_test_full", "_y_test_full", "_labels"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach_data(load_dataset(self.config.dataset, self.config.data_dir))

    # ------------------------------------------------------------------ Gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: new peer data, topology (if random) and a fresh model.

        Args:
            seed: Seeds the environment's RNG, which drives every random draw.
            options: Not used; must be None or empty.
        """
        self._begin_episode(seed, options)
        self._start_episode(evaluate(self._model, self._x_test, self._y_test).accuracy)
        if self.config.first_round_at_start:
            # As the reference: round 1 trains at the starter whatever the policy.
            return self._forced_first_round(self.step(self.config.start_peer))
        return self._opening(self._probe_stats())

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Send the model to peer ``action``, train it there, evaluate, and score the round."""
        move = self._dispatch(action)
        t0 = time.perf_counter()
        if move.delivered:
            before = flat_weights(self._model) if self.config.observation == "hl_pca" else None
            optimizer = self._optimizers[self._optimizer_index(move.peer)]
            cfg = self.config
            x, y = self._peer_x[move.peer], self._peer_y[move.peer]
            local_train(self._model, optimizer, x, y, cfg.local_epochs, cfg.batch_size, self._gen)
            after = flat_weights(self._model) if before is not None else None
            self._trained(move.peer, before, after)
        else:
            self._trained(None, None, None)
        t1 = time.perf_counter()
        accuracy = evaluate(self._model, self._x_test, self._y_test).accuracy
        t2 = time.perf_counter()
        out = self._conclude(move, accuracy, self._probe_stats())
        # [s] wall time of the last step's phases, read by bench/bench_env.py
        self.last_timing = {"train": t1 - t0, "evaluate": t2 - t1, "observe": time.perf_counter() - t2}
        return out

    def full_test_accuracy(self) -> float:
        """Accuracy of the current model on the whole test set (for final reports when the
        reward uses ``eval_samples``)."""
        return evaluate(self._model, self._x_test_full, self._y_test_full).accuracy

    def action_masks(self) -> np.ndarray:
        """Peers that can receive the model this round (for sb3-contrib's MaskablePPO)."""
        return self._online.copy()

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: one line per round so far. ``"rgb_array"``: the peers on the
        topology, coloured by main class, and the route so far."""
        if self.render_mode == "ansi":
            return "\n".join(self._log)
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    # ------------------------------------------------------------------ step pipeline

    def _check_action(self, action: Any) -> int:
        value = np.asarray(action)
        if value.size != 1 or not np.issubdtype(value.dtype, np.integer):
            raise ValueError(
                f"action={action!r} is not accepted; accepted: an integer peer index in [0, {self.config.n_peers - 1}]"
            )
        peer = int(value.reshape(()))
        if not 0 <= peer < self.config.n_peers:
            raise ValueError(
                f"action={peer} is not accepted; accepted: an integer peer index in [0, {self.config.n_peers - 1}]"
            )
        return peer

    # The phases below are shared with BatchedPeerSelectionVecEnv, which runs the model work
    # (initial evaluation, local training, evaluation, probes) of many envs in batched calls
    # between them: everything else about an episode happens here, once.

    def _begin_episode(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Draw the episode (peer data, probes, topology, the initial model) from the seed."""
        super().reset(seed=seed)
        if options:
            raise ValueError(f"options={options!r} is not accepted; accepted: None (no reset options)")
        cfg, n = self.config, self.config.n_peers
        rng = self.np_random
        self._gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))

        parts = self._partition(rng)
        fmt = self._memory_format
        self._peer_x = [
            self._x_train[torch.from_numpy(p).to(self._device)].contiguous(memory_format=fmt) for p in parts
        ]
        self._peer_y = [self._y_train[torch.from_numpy(p).to(self._device)] for p in parts]
        self.main_classes = np.array([int(np.bincount(self._labels[p]).argmax()) for p in parts])
        probes = [p[rng.permutation(p.size)[: cfg.probe_size]] for p in parts]
        probe_idx = torch.from_numpy(np.concatenate(probes)).to(self._device)
        self._probe_x = self._x_train[probe_idx].contiguous(memory_format=fmt)
        self._probe_y = self._y_train[probe_idx]
        self._probe_starts = np.cumsum([0] + [p.size for p in probes[:-1]])

        if self._fixed_topology is not None:
            self.distances, self.positions = self._fixed_topology, self._fixed_positions
        else:
            self.distances, self.positions = topology.euclidean(n, rng, cfg.topology_scale)

        self._model = build_model(cfg.model, self._data.input_shape, self._data.n_classes, self._gen, cfg.hidden_units)
        # torch's stubs lack Module.to's memory_format overload.
        self._model.to(self._device, memory_format=fmt)  # type: ignore[call-overload]
        self.n_params = count_parameters(self._model)
        params = list(self._model.parameters())
        n_opt = n if cfg.per_peer_optimizer else 1
        self._optimizers = [make_optimizer(cfg.optimizer, params, cfg.lr, cfg.adam_eps) for _ in range(n_opt)]

        self._holder = cfg.start_peer
        self._round = 0
        self._last_visit = np.full(n, -1, dtype=np.int64)
        self._visits = np.zeros(n, dtype=np.int64)
        self._comm_cost = 0.0
        self._bytes_sent = 0
        self._online = np.ones(n, dtype=bool)
        self._weights_before = flat_weights(self._model)
        self._weights_after = self._weights_before

    def _start_episode(self, accuracy: float) -> None:
        """Open the episode with the initial model's test accuracy."""
        self._accuracy = accuracy
        self._running = True
        self.route: list[int] = [self._holder]
        self._log = [f"round   0  model at peer {self._holder}  acc {self._accuracy:.4f}"]

    def _opening(self, probe: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, dict[str, Any]]:
        """``reset``'s ``(obs, info)`` when no round is forced (nothing paid, nothing scored)."""
        return self._observe(probe), self._info(dict(_NO_REWARD), delivered=True, hop=0.0)

    def _forced_first_round(
        self, result: tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, _, terminated, truncated, info = result
        if terminated or truncated:
            raise RuntimeError(
                f"the forced first round already ended the episode (accuracy {info['accuracy']:.4f}, "
                f"goal={self.config.goal}); raise goal or max_rounds"
            )
        return obs, info

    def _optimizer_index(self, peer: int) -> int:
        return peer if self.config.per_peer_optimizer else 0

    def _check_step(self, action: Any) -> int:
        """The peer ``action`` names, if a step may be taken now; raises otherwise."""
        peer = self._check_action(action)
        if not self._running:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        return peer

    def _dispatch(self, action: Any) -> _Move:
        """Check the action and pay the hop; the model moves unless the peer is offline."""
        peer = self._check_step(action)
        prev = self._holder
        hop = float(self.distances[prev, peer])
        self._comm_cost += hop
        if peer != prev:
            self._bytes_sent += self.n_params * BYTES_PER_PARAM
        self._round += 1
        delivered = bool(self._online[peer])
        if delivered:
            self._holder = peer
        self.route.append(self._holder)
        return _Move(prev, peer, hop, delivered)

    def _trained(self, peer: int | None, before: torch.Tensor | None, after: torch.Tensor | None) -> None:
        """Record local training at ``peer`` (None: the peer was offline, nothing trained).

        ``before`` / ``after`` are the flat weights around the training, needed by ``hl_pca``
        only: the reference's state is taken after local training, before the broadcast.
        """
        if peer is None:
            self._weights_before = self._weights_after  # every peer holds the same model
            return
        if before is not None and after is not None:
            self._weights_before, self._weights_after = before, after
        self._last_visit[peer] = self._round
        self._visits[peer] += 1

    def _conclude(
        self, move: _Move, accuracy: float, probe: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        """Score the round given the new model's test accuracy and (``peer_features``) its
        per-peer probe loss and accuracy."""
        self._accuracy = accuracy
        reward, terms = self._reward(accuracy, move.hop)
        terminated = accuracy >= self.config.goal
        truncated = not terminated and self._round >= self.config.max_rounds
        self._running = not (terminated or truncated)
        self._draw_online()
        self._log.append(
            f"round {self._round:3d}  {move.prev:>2} -> {move.peer:<2}{'' if move.delivered else ' (offline)'}  "
            f"hop {move.hop:.4f}  comm {self._comm_cost:.4f}  acc {accuracy:.4f}  reward {reward:+.4f}"
        )
        return self._observe(probe), reward, terminated, truncated, self._info(terms, move.delivered, move.hop)

    def _probe_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean loss and accuracy of the current model on each peer's probe (``peer_features``)."""
        if self.config.observation != "peer_features":
            return None
        loss, hits = per_sample_loss(self._model, self._probe_x, self._probe_y)
        return self._per_peer_means(loss, hits)

    def _per_peer_means(self, loss: torch.Tensor, hits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        counts = np.diff(np.append(self._probe_starts, loss.shape[0]))
        probe_loss = np.add.reduceat(loss.cpu().numpy(), self._probe_starts) / counts
        probe_acc = np.add.reduceat(hits.cpu().numpy(), self._probe_starts) / counts
        return probe_loss, probe_acc

    def _reward(self, accuracy: float, hop: float) -> tuple[float, dict[str, float]]:
        cfg = self.config
        terms = {
            "accuracy": cfg.reward_base ** (accuracy - cfg.goal),
            "communication": -cfg.cost_weight * hop,
            "step": -1.0,
        }
        return math.fsum(terms.values()), terms

    def _draw_online(self) -> None:
        p = self.config.offline_prob
        if p > 0:
            self._online = self.np_random.random(self.config.n_peers) >= p
            self._online[self._holder] = True

    def _observe(self, probe: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        cfg, n = self.config, self.config.n_peers
        if cfg.observation == "hl_pca":
            weights = self._weights_before.cpu().numpy()
            rows = np.repeat(weights[None, :], n, axis=0)
            rows[self._holder] = self._weights_after.cpu().numpy()
            return obs_builders.hl_pca(rows, cfg.pca_components)
        assert probe is not None, "peer_features needs the probe statistics"
        probe_loss, probe_acc = probe
        return obs_builders.peer_features(
            holder=self._holder,
            hop_costs=self.distances[self._holder],
            max_cost=float(self.distances.max()),
            probe_loss=probe_loss,
            probe_acc=probe_acc,
            last_visit=self._last_visit,
            visits=self._visits,
            round_=self._round,
            max_rounds=cfg.max_rounds,
            accuracy=self._accuracy,
            n_classes=self._data.n_classes,
        )

    def _info(self, terms: dict[str, float], delivered: bool, hop: float) -> dict[str, Any]:
        return {
            "accuracy": self._accuracy,
            "hop_cost": hop,
            "comm_cost": self._comm_cost,
            "bytes_sent": self._bytes_sent,
            "round": self._round,
            "holder": self._holder,
            "delivered": delivered,
            "rewards": terms,
            "action_mask": self._online.copy(),
            "hop_costs": self.distances[self._holder].copy(),
        }

    def _render_rgb(self) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4, 4), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        pos = self.positions
        ax.scatter(pos[:, 0], pos[:, 1], c=self.main_classes, cmap="tab10", vmin=0, vmax=9, s=200, zorder=3)
        for i, (x, y) in enumerate(pos):
            ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=8, zorder=4)
        for k, (a, b) in enumerate(itertools.pairwise(self.route), start=1):
            if a != b:
                ax.annotate("", pos[b], pos[a], arrowprops={"arrowstyle": "->", "alpha": 0.6})
                mid = (pos[a] + pos[b]) / 2
                ax.text(mid[0], mid[1], str(k), fontsize=7, color="dimgray")
        ax.set_title(f"round {self._round}  acc {self._accuracy:.3f}  comm {self._comm_cost:.3f}")
        ax.set_xticks([])
        ax.set_yticks([])
        canvas.draw()  # type: ignore[no-untyped-call]
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # type: ignore[no-untyped-call]
