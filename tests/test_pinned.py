"""Trajectories pinned before the round was split into episode bookkeeping and model work
(commit b9106ba): every registered id, single and batched, must still give them.

The figures live in ``pinned_trajectories.json`` beside this file. They were written by
``python -m tests.test_pinned --write`` on the code before the change and must not be
rewritten to make a test pass: a difference is a change of behaviour.

A case whose trajectory moves with the CPU's float rounding (the logits transfer: its model,
near chance, is at accuracy 0.102 after the first round on one CPU and 0.106 on another) has
its figures for a kind of CPU in ``pinned_trajectories_<capability>.json``
(``torch.backends.cpu.get_cpu_capability()``: ``AVX2``, ``AVX512``), which override the main
file's on such a CPU. They must be the code before the change's figures on that kind of CPU:
``python -m tests.test_pinned --write-cpu CASE...`` writes them, and the pinned commit's code
must give the same there (the AVX2 ``logits`` figures, written on a 2-core AMD EPYC: commit
763f3ef's ``single_trajectory`` and ``batched_trajectory`` gave them bit for bit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import hlgym  # noqa: F401  (registers the ids)

PINNED = Path(__file__).with_name("pinned_trajectories.json")
CPU_PINNED = PINNED.with_name(f"pinned_trajectories_{torch.backends.cpu.get_cpu_capability()}.json")
ACTIONS = [3, 1, 4, 1, 5, 9, 2, 6]
SEED = 7
# The HL presets on synthetic data, whatever this machine has installed, so the figures do
# not depend on which data sets are present.
SMALL_HL = {"dataset": "synthetic", "main_samples": 40, "other_samples": 10, "eval_samples": 300, "max_rounds": 6}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("hlgym/PeerSelection-v0", {"max_rounds": 6}),
    "default-offline-euclidean": (
        "hlgym/PeerSelection-v0",
        {"max_rounds": 6, "offline_prob": 0.3, "topology": "euclidean"},
    ),
    "default-hl_pca-shared-optimizer": (
        "hlgym/PeerSelection-v0",
        {"max_rounds": 6, "observation": "hl_pca", "pca_components": 4, "per_peer_optimizer": False},
    ),
    "hl-mnist": ("hlgym/HL-MNIST-v0", SMALL_HL),
    "hl-fashion-mnist": ("hlgym/HL-FashionMNIST-v0", {**SMALL_HL, "observation": "peer_features"}),
}
# Pinned on commit 763f3ef, before the scenarios, faults and transfer modes became components:
# every other registered id, every transfer mode and every fault.
SHORT = {"max_rounds": 6}
CASES.update(
    {
        "domain-shift": ("hlgym/DomainShift-v0", SHORT),
        "domain-shift-mmd-links": (
            "hlgym/DomainShift-v0",
            {**SHORT, "alignment": "mmd", "link_failure_prob": 0.3, "domain_rule": "random"},
        ),
        "modality-experts": ("hlgym/ModalityExperts-v0", SHORT),
        "modality-rows-average": (
            "hlgym/ModalityExperts-v0",
            {**SHORT, "modality_split": "rows", "modalities": 4, "modality_rule": "random", "transfer": "average"},
        ),
        "average-track": ("hlgym/PeerSelection-v0", {**SHORT, "transfer": "average", "track_peer_accuracy": True}),
        "average-hl_pca": ("hlgym/PeerSelection-v0", {**SHORT, "transfer": "average", "observation": "hl_pca"}),
        "distill": ("hlgym/PeerSelection-v0", {**SHORT, "transfer": "distill"}),
        "distill-features": ("hlgym/PeerSelection-v0", {**SHORT, "transfer": "distill", "distill_on": "features"}),
        "logits": ("hlgym/PeerSelection-v0", {**SHORT, "transfer": "logits", "offline_prob": 0.2}),
        "byzantine-noise-links": (
            "hlgym/PeerSelection-v0",
            {**SHORT, "byzantine_peers": 3, "link_failure_prob": 0.2},
        ),
        "byzantine-sign_flip": (
            "hlgym/PeerSelection-v0",
            {**SHORT, "byzantine_peers": 3, "byzantine_mode": "sign_flip"},
        ),
        "byzantine-label_flip-distill": (
            "hlgym/PeerSelection-v0",
            {**SHORT, "byzantine_peers": 3, "byzantine_mode": "label_flip", "transfer": "distill"},
        ),
        "task-distribution": ("hlgym/TaskDistribution-v0", SHORT),
        # Pinned when the id was registered (issue 23).
        "domain-shift-v1": ("hlgym/DomainShift-v1", SHORT),
    }
)
# Ids with no batched vector env (their copies differ in size): the single env is pinned.
SINGLE_ONLY = {"hlgym/TaskDistribution-v0"}


def _summary(obs: np.ndarray, reward: float | None, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "obs_sum": float(np.sum(obs, dtype=np.float64)),
        "obs_abs": float(np.abs(obs).sum(dtype=np.float64)),
        "reward": None if reward is None else float(reward),
        "accuracy": float(info["accuracy"]),
        "holder": int(info["holder"]),
        "round": int(info["round"]),
        "comm_cost": float(info["comm_cost"]),
        "bytes_sent": int(info["bytes_sent"]),
        "delivered": bool(info["delivered"]),
    }


def single_trajectory(env_id: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """One episode of fixed actions from ``reset(seed=SEED)``."""
    env = gym.make(env_id, **overrides)
    obs, info = env.reset(seed=SEED)
    out = [_summary(obs, None, info)]
    for action in ACTIONS:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(_summary(obs, float(reward), info))
        if terminated or truncated:
            break
    return out


def batched_trajectory(env_id: str, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Two copies in ``gymnasium.make_vec``'s batched env, across an auto-reset."""
    envs = gym.make_vec(env_id, num_envs=2, **overrides)
    obs, _ = envs.reset(seed=SEED)
    out: list[dict[str, Any]] = [{"obs_sum": float(np.sum(obs, dtype=np.float64))}]
    for t in range(len(ACTIONS) + 2):
        actions = np.array([ACTIONS[t % len(ACTIONS)], ACTIONS[(t + 3) % len(ACTIONS)]])
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        out.append(
            {
                "obs_sum": float(np.sum(obs, dtype=np.float64)),
                "rewards": [float(r) for r in rewards],
                "done": [bool(d) for d in terminated | truncated],
                "round": [int(r) for r in infos["round"]],
                "holder": [int(h) for h in infos["holder"]],
            }
        )
    return out


def fingerprints(names: list[str] | None = None) -> dict[str, Any]:
    """Every case's (or ``names``') single and batched trajectories."""
    out: dict[str, Any] = {}
    for name in names or list(CASES):
        env_id, kw = CASES[name]
        out[name] = {"single": single_trajectory(env_id, kw)}
        if env_id not in SINGLE_ONLY:
            out[name]["batched"] = batched_trajectory(env_id, kw)
    return out


def _assert_close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} entries, pinned {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        # Same code path, same arithmetic: equal up to the last bits a different summation
        # order inside a BLAS call could move.
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6), where
    else:
        assert got == want, where


def pinned_figures() -> dict[str, Any]:
    """The main file's figures, with this kind of CPU's where it has its own."""
    figures: dict[str, Any] = json.loads(PINNED.read_text())
    if CPU_PINNED.exists():
        figures.update(json.loads(CPU_PINNED.read_text()))
    return figures


@pytest.mark.parametrize("case", list(CASES))
def test_trajectories_equal_the_pinned_ones(case: str) -> None:
    pinned = pinned_figures()[case]
    env_id, overrides = CASES[case]
    _assert_close(single_trajectory(env_id, overrides), pinned["single"], f"{case}.single")
    if env_id not in SINGLE_ONLY:
        _assert_close(batched_trajectory(env_id, overrides), pinned["batched"], f"{case}.batched")


USAGE = (
    "usage: python -m tests.test_pinned --write  (rewrites the pinned figures) | "
    "--write-cpu CASE...  (this kind of CPU's figures for CASE)"
)

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PINNED.write_text(json.dumps(fingerprints(), indent=1) + "\n")
        print(f"wrote {PINNED}")
    elif sys.argv[1:2] == ["--write-cpu"] and sys.argv[2:]:
        unknown = sorted(set(sys.argv[2:]) - set(CASES))
        if unknown:
            raise SystemExit(f"case {unknown[0]!r} is not accepted; accepted: {', '.join(CASES)}")
        figures = json.loads(CPU_PINNED.read_text()) if CPU_PINNED.exists() else {}
        figures.update(fingerprints(sys.argv[2:]))
        CPU_PINNED.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
        print(f"wrote {CPU_PINNED}")
    else:
        raise SystemExit(USAGE)
