"""Shared fixtures: tiny configurations that keep the default test run fast."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import hlgym  # noqa: F401  (registers the ids)
from hlgym.envs import DataNotFoundError, load_dataset
from hlgym.envs.registration import MULTIAGENT_PRESETS, PRESETS

# Overrides that shrink any preset to a few milliseconds per step.
TINY: dict[str, Any] = {"max_rounds": 4}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach for OpenML, whatever the machine's network.
    monkeypatch.setenv("HLGYM_OFFLINE", "1")


def tiny_overrides(env_id: str) -> dict[str, Any]:
    """Overrides for ``env_id`` that run in the test budget, with synthetic data when the
    real files are not on this machine."""
    kw = dict(TINY)
    if env_id in MULTIAGENT_PRESETS:  # the gossip env: the embedded default's data
        return kw
    cfg = PRESETS[env_id]
    if cfg.dataset in ("mnist", "fashion_mnist"):
        try:
            load_dataset(cfg.dataset, cfg.data_dir)
        except DataNotFoundError:
            kw["dataset"] = "synthetic"
        # The reference split (400 + 100 per peer) on fewer samples, same code path; the
        # reward on 300 test images instead of 10,000 (the real data may be installed).
        kw.update(main_samples=40, other_samples=10, eval_samples=300)
    return kw


def loaded_after(code: str, packages: set[str]) -> set[str]:
    """Which of ``packages`` a fresh interpreter has imported after running ``code``."""
    names = f"{{m.split('.')[0] for m in sys.modules}} & set({sorted(packages)!r})"
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({names})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())
