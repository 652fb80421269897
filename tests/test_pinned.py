"""Trajectories pinned before the round was split into episode bookkeeping and model work
(commit b9106ba): every registered id, single and batched, must still give them.

The figures live in ``pinned_trajectories.json`` beside this file. They were written by
``python -m tests.test_pinned --write`` on the code before the change and must not be
rewritten to make a test pass: a difference is a change of behaviour.

A case whose trajectory moves with the CPU's float rounding (``FLOAT_SENSITIVE``: the logits
transfer, whose model, near chance, is at accuracy 0.102 after the first round on one CPU and
0.106 on another) has its figures for a kind of CPU, the vendor and
``torch.backends.cpu.get_cpu_capability()`` (``AuthenticAMD-AVX2``, ``AuthenticAMD-AVX512``),
in ``pinned_trajectories_<kind>.json``, which overrides the main file's on such a CPU; the main
file's are a ``GenuineIntel-AVX512`` CPU's. They must be the code before the change's figures on
that kind of CPU: ``python -m tests.test_pinned --write-cpu CASE...`` writes them, and the pinned
commit's code must give the same there (commit 763f3ef's ``single_trajectory`` and
``batched_trajectory`` gave the AMD figures on 2-core AMD EPYCs, bit for bit on the AVX2 one and
within 5e-9 relative on the AVX512 one). On a kind of CPU with no figures of its own such a case
is held to the spread measured across those three kinds, not to the last bits: its integers
(holders, rounds, bytes) exactly, its floats within ``CROSS_CPU`` (twice the widest difference
seen: 0.8% of an observation's sum, 0.055 in a reward).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import hlgym  # noqa: F401  (registers the ids)


def cpu_kind() -> str:
    """This CPU's vendor and the instruction set torch's kernels use, as in ``AuthenticAMD-AVX2``."""
    vendor = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}"


PINNED = Path(__file__).with_name("pinned_trajectories.json")
# The kind of CPU the main file's float-sensitive figures were written on.
MAIN_KIND = "GenuineIntel-AVX512"
CPU_PINNED = PINNED.with_name(f"pinned_trajectories_{cpu_kind()}.json")
FLOAT_SENSITIVE = {"logits"}
# (rel, abs) for a float-sensitive case on a kind of CPU with no figures of its own.
CROSS_CPU = (0.02, 0.11)
# Same code path, same arithmetic: equal up to the last bits a different summation order
# inside a BLAS call could move.
SAME_CPU = (1e-6, 1e-6)
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


def _assert_close(got: Any, want: Any, where: str, tolerance: tuple[float, float] = SAME_CPU) -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}", tolerance)
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} entries, pinned {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]", tolerance)
    elif isinstance(want, float):
        rel, abs_ = tolerance
        assert got == pytest.approx(want, rel=rel, abs=abs_), where
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
    figures = pinned_figures()
    pinned = figures[case]
    own = cpu_kind() == MAIN_KIND or (CPU_PINNED.exists() and case in json.loads(CPU_PINNED.read_text()))
    tolerance = CROSS_CPU if case in FLOAT_SENSITIVE and not own else SAME_CPU
    env_id, overrides = CASES[case]
    _assert_close(single_trajectory(env_id, overrides), pinned["single"], f"{case}.single", tolerance)
    if env_id not in SINGLE_ONLY:
        _assert_close(batched_trajectory(env_id, overrides), pinned["batched"], f"{case}.batched", tolerance)


def test_the_cross_cpu_tolerance_covers_the_kinds_seen_and_no_more() -> None:
    kinds = [json.loads(PINNED.read_text())] + [
        json.loads(path.read_text()) for path in sorted(PINNED.parent.glob("pinned_trajectories_*.json"))
    ]
    for case in FLOAT_SENSITIVE:
        seen = [figures[case] for figures in kinds if case in figures]
        assert len(seen) >= 3, case
        for got in seen:
            for want in seen:
                _assert_close(got, want, case, CROSS_CPU)
        moved = json.loads(json.dumps(seen[0]))
        moved["single"][1]["reward"] += 0.2
        with pytest.raises(AssertionError):
            _assert_close(moved, seen[0], case, CROSS_CPU)


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
