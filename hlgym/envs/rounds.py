"""RoundRunner: the order of a round's phases, written once for one episode or many.

:class:`~hlgym.envs.PeerSelectionEnv` is a runner over one :class:`~hlgym.envs.episode.Episode`
and a :class:`~hlgym.models.work.ModelList`; the vector envs are a runner over n episodes and
a :class:`~hlgym.models.batched.StackedModels`. Both go through the same phases:

``reset``
    1. ``Episode.begin`` for each episode (every draw from its RNG: the core's, then each
       component's ``begin``);
    2. ``ModelWork.initialize``: each episode's model from its generator;
    3. one evaluation of every model on the reward's test images (and, for ``hl_pca``, the
       weights), the components' ``measure``, then ``Episode.start``;
    4. with ``first_round_at_start``, one ``step`` at the start peer
       (it must not end the episode); else the probes and ``Episode.opening``.

``step``
    1. ``Episode.check_step`` for every action (a bad one leaves every episode as it was);
    2. ``Episode.dispatch``: pay the hop (the components' ``hop``: extra bytes, a failed
       link), move the model unless the peer is offline;
    3. ``Episode.training``: the transfer mode's job as each component ``shape``s it; the
       transfer mode's ``absorb`` brings the arriving knowledge in (``average`` blends
       weights; ``distill`` and ``logits`` hand the job a teacher or soft targets); the
       job's hooks' ``before_train``; ``ModelWork.train``: every job, in one call; then
       their ``after_train`` (a corrupting receiver's damage);
    4. ``Episode.trained`` (with the slots' weights for ``hl_pca``);
    5. one evaluation of every scored model (the holder's; every peer's with
       ``accuracy_of="mean_peer"``) on the test images, with ``track_peer_accuracy`` of
       every peer's model; the components' ``measure``;
    6. the probes (``peer_features``) and the components' ``probe``, then
       ``Episode.conclude``: reward, termination, the components' ``after_round`` (the next
       round's offline peers), log, observation (the components' columns), info.

The runner also times the model phases (``last_timing``, read by ``bench/bench_env.py``),
and after a long reset or round that left much of the heap free gives its free pages back to
the operating system (:class:`~hlgym.envs.memory.HeapTrim`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from hlgym.envs import components, threads
from hlgym.envs.config import PeerSelectionConfig
from hlgym.envs.datasets import DeviceData
from hlgym.envs.episode import Episode, ProbeStats, ResetNeededError, StepResult
from hlgym.envs.memory import HeapTrim
from hlgym.models.work import ModelSpec, ModelWork, TrainJob

PHASES = ("train", "evaluate", "observe")  # the keys of last_timing


def model_spec(config: PeerSelectionConfig, data: DeviceData) -> ModelSpec:
    """The inner models ``config`` asks for, on ``data``'s images."""
    return ModelSpec(
        model=config.model,
        input_shape=data.input_shape,
        n_classes=data.n_classes,
        hidden_units=config.hidden_units,
        optimizer=config.optimizer,
        lr=config.lr,
        adam_eps=config.adam_eps,
        n_optimizers=components.transfer_mode(config).n_optimizers(config),
        device=config.device,
        factory=components.model_factory(config),
        eval_precision=config.eval_precision,
    )


class RoundRunner:
    """Rounds of ``episodes`` whose models live in ``models``.

    Args:
        episodes: The episodes; episode ``i`` owns the model slots from
            ``i * episodes[i].model_slots`` on.
        models: Their model work, with at least as many slots as the episodes use.
    """

    def __init__(self, episodes: Sequence[Episode], models: ModelWork) -> None:
        self.episodes = list(episodes)
        self.models = models
        self._base = [0] * len(self.episodes)
        offset = 0
        for i, episode in enumerate(self.episodes):
            self._base[i] = offset
            offset += episode.model_slots
        if offset > models.n_slots:
            raise ValueError(f"the episodes use {offset} model slots but the model work has {models.n_slots}")
        self.last_timing: dict[str, float] = {}
        self.heap = HeapTrim()
        first = self.episodes[0].config
        self.threads = threads.count(first.threads, first.model)
        """The intra-op threads of this runner's compute (None: torch's; hlgym.envs.threads)."""

    # ------------------------------------------------------------------ phases

    def reset(
        self,
        indices: Sequence[int],
        rngs: Sequence[np.random.Generator],
        options: Sequence[dict[str, Any] | None],
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Start new episodes in ``indices`` from their RNGs; returns their ``(obs, info)``."""
        with threads.limited(self.threads):
            return self._reset(indices, rngs, options)

    def _reset(
        self,
        indices: Sequence[int],
        rngs: Sequence[np.random.Generator],
        options: Sequence[dict[str, Any] | None],
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        if len(indices) == 0:
            return []
        start = time.perf_counter()
        episodes = [self.episodes[i] for i in indices]
        for episode, rng, opts in zip(episodes, rngs, options, strict=True):
            episode.begin(rng, opts)
        slots = [self._slot(i, local) for i, e in zip(indices, episodes, strict=True) for local in range(e.model_slots)]
        generators = [g for e in episodes for g in e.slot_generators()]
        self.models.initialize(slots, generators)
        accuracies = self._accuracies(indices)
        self._each_component("measure", indices)
        for i, episode, accuracy in zip(indices, episodes, accuracies, strict=True):
            episode.start(accuracy, self._weights(i))
        first = self.episodes[indices[0]].config
        if first.first_round_at_start:
            # As the reference: round 1 trains at the starter whatever the policy (the step
            # trims the heap after itself, the reset's allocations included).
            results = self.step(indices, [self.episodes[i].config.start_peer for i in indices])
            return [self._forced_first_round(e, r) for e, r in zip(episodes, results, strict=True)]
        opened = [e.opening(p) for e, p in zip(episodes, self._probes(indices), strict=True)]
        self.heap.round_took(time.perf_counter() - start)
        return opened

    def step(self, indices: Sequence[int], actions: Sequence[Any]) -> list[StepResult]:
        """One round in each episode of ``indices``; returns their step tuples."""
        if len(indices) != len(actions):
            raise ValueError(f"{len(actions)} actions for {len(indices)} episodes; accepted: one action per episode")
        with threads.limited(self.threads):
            return self._step(indices, actions)

    def _step(self, indices: Sequence[int], actions: Sequence[Any]) -> list[StepResult]:
        if len(indices) == 0:
            return []
        start = time.perf_counter()
        episodes = [self.episodes[i] for i in indices]
        peers = [e.check_step(a) for e, a in zip(episodes, actions, strict=True)]
        moves = [e.dispatch(p) for e, p in zip(episodes, peers, strict=True)]
        with self._timed("train"):
            jobs, hooked = [], []
            for i, episode, move in zip(indices, episodes, moves, strict=True):
                training = episode.training(move)
                if training is None:
                    continue
                slot = self._slot(i, training.slot)
                distill = None
                if training.source is not None:
                    source = self._slot(i, training.source)
                    distill = episode.transfer.absorb(self.models, slot, source, training.public_x)
                job = TrainJob(slot, training.state, training.x, training.y, episode.generator, distill, training.align)
                jobs.append(job)
                hooked += [(part, job, part.before_train(self.models, slot)) for part in training.hooks]
            cfg = episodes[0].config
            self.models.train(jobs, cfg.local_epochs, cfg.batch_size)
            for part, job, saved in hooked:
                part.after_train(self.models, job.slot, saved, job.generator)
        for i, episode, move in zip(indices, episodes, moves, strict=True):
            episode.trained(move, self._weights(i) if move.delivered else None)
        with self._timed("evaluate"):
            accuracies = self._accuracies(indices)
            peer_accuracies = self._peer_accuracies(indices, accuracies)
            self._each_component("measure", indices)
        with self._timed("observe"):
            probes = self._probes(indices)
            results = [
                e.conclude(m, a, p, pa)
                for e, m, a, p, pa in zip(episodes, moves, accuracies, probes, peer_accuracies, strict=True)
            ]
        self.heap.round_took(time.perf_counter() - start)
        return results

    # ------------------------------------------------------------------ reads of the models

    def full_test_accuracy(self, index: int) -> float:
        """Accuracy of episode ``index``'s current model on the whole test set."""
        episode = self._begun(index, "full_test_accuracy()")
        with threads.limited(self.threads):
            hits = self.models.per_sample_hits(self._accuracy_slots(index), episode.data.x_test, episode.data.y_test)
        return float(hits.mean(dim=1).mean())

    def module(self, index: int, peer: int | None = None) -> nn.Module:
        """Episode ``index``'s current model (the holder's), or with ``peer`` that peer's own
        model (the travelling one in the relay), as an ``nn.Module`` (see ``ModelWork.module``)."""
        episode = self._begun(index, "the model")
        if peer is None:
            return self.models.module(self._scored(index))
        n = episode.config.n_peers
        if isinstance(peer, bool) or not isinstance(peer, int | np.integer) or not 0 <= peer < n:
            raise ValueError(f"peer={peer!r} is not accepted; accepted: an integer peer index in [0, {n - 1}]")
        return self.models.module(self._slot(index, episode.transfer.peer_slot(int(peer))))

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _forced_first_round(episode: Episode, result: StepResult) -> tuple[np.ndarray, dict[str, Any]]:
        """``reset``'s ``(obs, info)`` after the round ``first_round_at_start`` plays."""
        obs, _, terminated, truncated, info = result
        if terminated or truncated:
            raise RuntimeError(
                f"the forced first round already ended the episode (accuracy {info['accuracy']:.4f}, "
                f"goal={episode.config.goal}); raise goal or max_rounds"
            )
        return obs, info

    def _begun(self, index: int, what: str) -> Episode:
        episode = self.episodes[index]
        if not episode.begun:
            raise ResetNeededError(f"{what} needs an episode: call reset() first")
        return episode

    def _slot(self, index: int, local: int) -> int:
        return self._base[index] + local

    def _scored(self, index: int) -> int:
        return self._slot(index, self.episodes[index].scored_slot)

    def _accuracy_slots(self, index: int) -> list[int]:
        """The slots whose models episode ``index``'s accuracy reads: the holder's, or with
        ``accuracy_of="mean_peer"`` every peer's."""
        episode = self.episodes[index]
        if episode.config.accuracy_of == "mean_peer":
            return [self._slot(index, local) for local in range(episode.model_slots)]
        return [self._scored(index)]

    def _accuracies(self, indices: Sequence[int]) -> list[float]:
        """Each episode's accuracy on the reward's test images (its slots' mean), in one call."""
        data = self.episodes[indices[0]].data  # episodes of one runner share the data
        groups = [self._accuracy_slots(i) for i in indices]
        hits = self.models.per_sample_hits([s for g in groups for s in g], data.x_eval, data.y_eval)
        per_slot = hits.mean(dim=1)
        out, start = [], 0
        for group in groups:
            out.append(float(per_slot[start : start + len(group)].mean()))
            start += len(group)
        return out

    def _each_component(self, hook: str, indices: Sequence[int]) -> None:
        """Call a batched component hook (``measure`` or ``probe``) once per component class,
        with that class's instance in each of the episodes ``indices`` and their scored slots."""
        groups: dict[type[components.Component], list[tuple[int, components.Component]]] = {}
        for i in indices:
            for part in self.episodes[i].parts:
                groups.setdefault(type(part), []).append((i, part))
        for cls, members in groups.items():
            getattr(cls, hook)(self.models, [self._scored(i) for i, _ in members], [p for _, p in members])

    def _peer_accuracies(self, indices: Sequence[int], accuracies: Sequence[float]) -> list[float | None]:
        """With ``track_peer_accuracy``, the mean test accuracy of every peer's model (in
        the relay every peer holds the scored model); else None."""
        out: list[float | None] = []
        for i, accuracy in zip(indices, accuracies, strict=True):
            episode = self.episodes[i]
            if not episode.config.track_peer_accuracy:
                out.append(None)
            elif episode.model_slots == 1 or episode.config.accuracy_of == "mean_peer":
                out.append(accuracy)  # what the accuracy already reads
            else:
                slots = [self._slot(i, local) for local in range(episode.model_slots)]
                hits = self.models.per_sample_hits(slots, episode.data.x_eval, episode.data.y_eval)
                out.append(float(hits.mean()))
        return out

    def _weights(self, index: int) -> np.ndarray | None:
        """Every slot's flat weights of episode ``index``, ``(model_slots, n_params)``, if its
        observation reads them (``hl_pca``)."""
        episode = self.episodes[index]
        if episode.config.observation != "hl_pca":
            return None
        return torch.stack([self.models.flat(self._slot(index, s)) for s in range(episode.model_slots)]).cpu().numpy()

    def _probes(self, indices: Sequence[int]) -> list[ProbeStats | None]:
        probing = [i for i in indices if self.episodes[i].config.observation == "peer_features"]
        out: dict[int, ProbeStats] = {}
        if probing:
            episodes = [self.episodes[i] for i in probing]
            xs, ys = [e.probe_x for e in episodes], [e.probe_y for e in episodes]
            losses = self.models.per_sample_loss_each([self._scored(i) for i in probing], xs, ys)
            for i, episode, (loss, hits) in zip(probing, episodes, losses, strict=True):
                out[i] = ProbeStats.means(loss, hits, episode.probe_starts)
            self._each_component("probe", probing)
        return [out.get(i) for i in indices]

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.last_timing[phase] = time.perf_counter() - start  # [s]
