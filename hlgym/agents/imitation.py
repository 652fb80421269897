"""Learning from the oracle: its routes as Minari datasets, and behaviour cloning on them.

The oracle (:class:`~hlgym.agents.oracle.OracleAgent`) sees the future, so it cannot be
deployed, but its routes are the best supervision there is and env steps are expensive.
:func:`oracle_episodes` plays it on seeds of its own and :func:`write_dataset` writes the
episodes as a `Minari <https://minari.farama.org>`_ dataset (observations, actions, rewards,
terminations, truncations, each step's ``infos["action_mask"]``, the env's spec), so offline
RL and imitation libraries read them as they read any Minari dataset; :func:`read_dataset`
reads one back (a Minari id in the local Minari root, or a dataset folder).
:func:`behaviour_clone` fits an SB3 actor-critic policy to a dataset: the actor by maximum
likelihood of the demonstrated peers, the critic by the demonstrations' discounted returns
(so that RL fine-tuning starts from a critic that knows the demonstrated values rather than
one whose first updates pull the cloned actor around). ``hlgym-train --pretrain oracle``
does all three before PPO trains (docs/results.md has what it gives).

Minari is the ``imitation`` extra (``pip install -c constraints.txt -e ".[imitation]"``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import hlgym
from hlgym.agents.oracle import OracleAgent

__all__ = [
    "DEMO_ALGORITHM",
    "Demonstrations",
    "Episode",
    "behaviour_clone",
    "dataset_id_for",
    "demo_seeds",
    "oracle_episodes",
    "read_dataset",
    "write_dataset",
]

DEMO_ALGORITHM = "hlgym-oracle"
"""The ``algorithm_name`` of the datasets :func:`write_dataset` writes."""
# SeedSequence entropy of the demonstration seeds' stream (apart from training's seed + i and
# from the small consecutive evaluation seeds).
_DEMO_STREAM = 0x4D494E41  # "MINA"
INSTALL_HINT = "pip install -c constraints.txt -e '.[imitation]'"


@dataclass(frozen=True)
class Demonstrations:
    """Steps of demonstrated episodes, flattened in episode order.

    Attributes:
        observations: ``(steps, *obs_shape)`` float32: the observation each action was chosen on.
        actions: ``(steps,)`` int64: the demonstrated peer.
        rewards: ``(steps,)`` float64: the reward the step earned.
        episode_ends: ``(steps,)`` bool: whether the step was its episode's last.
        episodes: Number of episodes.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode_ends: np.ndarray
    episodes: int

    def returns(self, gamma: float) -> np.ndarray:
        """Each step's discounted return to its episode's end (``gamma`` per round)."""
        out = np.zeros(len(self.rewards))
        running = 0.0
        for i in range(len(self.rewards) - 1, -1, -1):
            if self.episode_ends[i]:
                running = 0.0
            running = float(self.rewards[i]) + gamma * running
            out[i] = running
        return out


@dataclass(frozen=True)
class Episode:
    """One played episode as Minari stores it.

    Attributes:
        seed: Its ``reset`` seed.
        observations: ``(steps + 1, *obs_shape)``: after reset and after every step.
        actions: ``(steps,)``: the peer chosen at each step.
        rewards: ``(steps,)``.
        terminations: ``(steps,)``: the goal reached (the last step only, if at all).
        truncations: ``(steps,)``: the round limit reached.
        action_masks: ``(steps + 1, n_peers)``: the online peers, as the observations.
    """

    seed: int
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    action_masks: np.ndarray


def demo_seeds(seed: int, episodes: int, avoid: Iterable[int] = ()) -> list[int]:
    """``episodes`` reset seeds for the demonstrations of training seed ``seed``: a hashed
    stream of 32-bit seeds (not ``seed + i``, which the training envs use), none in ``avoid``
    (the evaluation seeds)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is not accepted; accepted: an integer >= 1")
    banned = set(avoid)
    out: list[int] = []
    draw = 0
    while len(out) < episodes:
        state = np.random.SeedSequence([_DEMO_STREAM, seed, draw]).generate_state(episodes)
        out.extend(s for s in (int(v) for v in state) if s not in banned and s not in out)
        draw += 1
    return out[:episodes]


def oracle_episodes(
    env: gym.Env[Any, Any], seeds: Sequence[int], width: int = 4, progress: bool = False
) -> list[Episode]:
    """Play the oracle (beam ``width``) in ``env`` once from each of ``seeds``."""
    agent = OracleAgent(env, width=width)
    episodes = []
    for seed in tqdm(seeds, desc="oracle demonstrations", disable=not progress):
        agent.reset()
        obs, info = env.reset(seed=int(seed))
        observations, masks = [obs], [info["action_mask"]]
        actions: list[int] = []
        rewards: list[float] = []
        terminations: list[bool] = []
        truncations: list[bool] = []
        done = False
        while not done:
            action = int(agent.act(obs, info))
            obs, reward, terminated, truncated, info = env.step(action)
            observations.append(obs)
            masks.append(info["action_mask"])
            actions.append(action)
            rewards.append(float(reward))
            terminations.append(bool(terminated))
            truncations.append(bool(truncated))
            done = terminated or truncated
        episodes.append(
            Episode(
                int(seed),
                np.asarray(observations, dtype=np.float32),
                np.asarray(actions, dtype=np.int64),
                np.asarray(rewards, dtype=np.float64),
                np.asarray(terminations, dtype=bool),
                np.asarray(truncations, dtype=bool),
                np.asarray(masks, dtype=bool),
            )
        )
    return episodes


def dataset_id_for(env_id: str, name: str = "oracle", version: int = 0) -> str:
    """The Minari id ``namespace/env/name-vN`` of an hlgym env's dataset:
    ``hlgym/PeerSelection-v0`` gives ``hlgym/PeerSelection-v0/oracle-v0``."""
    namespace, _, env_name = env_id.rpartition("/")
    return f"{namespace or 'hlgym'}/{env_name}/{name}-v{version}"


def _minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise ImportError(f"Minari datasets need the imitation extra, which is not installed: {INSTALL_HINT}") from exc
    return minari


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Minari reads its datasets' root from ``MINARI_DATASETS_PATH`` on every call."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def write_dataset(
    episodes: Sequence[Episode],
    env: gym.Env[Any, Any],
    dataset_id: str,
    root: str | os.PathLike[str] | None = None,
    description: str | None = None,
) -> Path:
    """Write ``episodes`` (played in ``env``, a ``gymnasium.make`` env: its spec goes in) as
    the Minari dataset ``dataset_id``; returns its folder.

    Args:
        episodes: From :func:`oracle_episodes`.
        env: The env they were played in.
        dataset_id: Minari's ``namespace/env/name-vN`` (:func:`dataset_id_for`).
        root: The datasets' root (Minari's ``MINARI_DATASETS_PATH``; default: Minari's, so
            ``minari.load_dataset(dataset_id)`` finds it). A write that fails removes the
            dataset's folder: no half dataset is left.
        description: The dataset's description.
    """
    if not episodes:
        raise ValueError("episodes=[] is not accepted; accepted: at least one episode")
    minari = _minari()
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.storage.datasets_root_dir import get_dataset_path

    # Absolute: Minari joins a relative dataset path onto itself when it reads the files back.
    final_root = Path(get_dataset_path() if root is None else root).absolute()
    target = final_root / dataset_id
    if target.exists():
        raise FileExistsError(f"dataset_id={dataset_id!r}: {target} exists; accepted: an id not yet written")
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=list(ep.observations),
            actions=[int(a) for a in ep.actions],
            rewards=[float(r) for r in ep.rewards],
            terminations=[bool(t) for t in ep.terminations],
            truncations=[bool(t) for t in ep.truncations],
            infos={"action_mask": ep.action_masks},
        )
        for i, ep in enumerate(episodes)
    ]
    try:
        with _datasets_root(final_root), warnings.catch_warnings():
            # Minari asks for an author's e-mail and a code permalink; hlgym has neither to give.
            warnings.filterwarnings("ignore", message=r"`(author_email|code_permalink)` is set to None")
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env,
                eval_env=env.spec,
                algorithm_name=DEMO_ALGORITHM,
                author="hlgym",
                description=description or f"{len(episodes)} episodes of hlgym's oracle (a beam search over copies)",
                requirements=[f"hlgym=={hlgym.__version__}"],
                jpeg_encoding=False,
            )
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half dataset (Minari's namespace files may stay)
        raise
    return target


def read_dataset(source: str | os.PathLike[str], observation_space: gym.Space[Any] | None = None) -> Demonstrations:
    """The steps of a Minari dataset: ``source`` is a dataset folder (the one holding
    ``data/``, or ``data/`` itself) or a dataset id in the local Minari root.

    Args:
        source: Where the dataset is.
        observation_space: When given, the dataset's must equal it (else ValueError).
    """
    minari = _minari()
    path = Path(source).absolute()  # (see write_dataset)
    if (path / "data" / "metadata.json").is_file():
        path = path / "data"
    try:
        if (path / "metadata.json").is_file():
            dataset = minari.MinariDataset(str(path))
        else:
            dataset = minari.load_dataset(str(source))
    except (FileNotFoundError, ValueError) as exc:
        raise ValueError(f"{source!r} is neither a Minari dataset folder nor a local dataset id: {exc}") from exc
    if observation_space is not None and dataset.spec.observation_space != observation_space:
        raise ValueError(
            f"{source!r} holds observations {dataset.spec.observation_space}, the env's are {observation_space}"
        )
    obs, actions, rewards, ends = [], [], [], []
    for ep in dataset.iterate_episodes():
        steps = len(ep.actions)
        obs.append(np.asarray(ep.observations, dtype=np.float32)[:steps])
        actions.append(np.asarray(ep.actions, dtype=np.int64).reshape(steps))
        rewards.append(np.asarray(ep.rewards, dtype=np.float64).reshape(steps))
        end = np.zeros(steps, dtype=bool)
        end[-1] = True
        ends.append(end)
    if not actions:
        raise ValueError(f"{source!r} holds no episodes")
    return Demonstrations(
        np.concatenate(obs), np.concatenate(actions), np.concatenate(rewards), np.concatenate(ends), len(actions)
    )


def behaviour_clone(
    policy: Any,
    demos: Demonstrations,
    gamma: float,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    value_weight: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Fit an SB3 ``ActorCriticPolicy`` to ``demos`` in place.

    The loss of a minibatch is the negative log-likelihood of the demonstrated actions plus
    ``value_weight`` times the squared error of the values against the discounted returns
    (``gamma``, the RL algorithm's own). Adam (``lr``) of its own: the policy's optimizer,
    whose state the RL algorithm goes on with, is left as it was.

    Args:
        policy: The policy (``model.policy``).
        demos: The demonstrations.
        gamma: Discount of the returns the critic fits.
        epochs: Passes over the demonstrations (>= 1).
        batch_size: Steps per minibatch.
        lr: Adam's learning rate.
        value_weight: Weight of the critic's loss.
        seed: Seeds the minibatches' order.

    Returns:
        The last epoch's mean ``nll`` and ``value_loss``, and ``accuracy``: the share of
        demonstrated steps whose action is the policy's most probable one afterwards.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is not accepted; accepted: an integer >= 1")
    device = policy.device
    obs = torch.as_tensor(demos.observations, device=device)
    actions = torch.as_tensor(demos.actions, device=device)
    returns = torch.as_tensor(demos.returns(gamma), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    order = torch.Generator().manual_seed(int(seed))
    n = len(actions)
    policy.set_training_mode(True)
    nll_sum = value_sum = 0.0
    for _ in range(epochs):
        nll_sum = value_sum = 0.0
        perm = torch.randperm(n, generator=order)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            values, log_prob, _ = policy.evaluate_actions(obs[idx], actions[idx])
            nll = -log_prob.mean()
            value_loss = ((values.flatten() - returns[idx]) ** 2).mean()
            opt.zero_grad()
            (nll + value_weight * value_loss).backward()
            opt.step()
            nll_sum += float(nll.detach()) * len(idx)
            value_sum += float(value_loss.detach()) * len(idx)
    policy.set_training_mode(False)
    with torch.no_grad():
        probs = policy.get_distribution(obs).distribution.probs
        accuracy = float((probs.argmax(dim=1) == actions).float().mean())
    return {"nll": nll_sum / n, "value_loss": value_sum / n, "accuracy": accuracy}
