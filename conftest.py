"""Root pytest configuration: how README.md's and docs/*.md's code fences run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def pytest_markdown_docs_globals() -> dict[str, Any]:
    """Fences run as a script does (``python file.py``): ``if __name__ == "__main__":`` blocks run too."""
    return {"__name__": "__main__"}


@pytest.fixture
def default_run(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``runs/PeerSelection-v0_ppo_0`` as ``python train_meta.py`` writes it,
    trained for 64 steps on 4-round episodes; the fence runs with it as the working folder."""
    from hlgym import train

    folder = tmp_path_factory.mktemp("default_run")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HLGYM_OFFLINE", "1")
    train.main(
        [
            *("--out", "runs/PeerSelection-v0_ppo_0", "--timesteps", "64", "--eval-episodes", "2"),
            *("--no-progress", "--env-kwargs", "max_rounds=4"),
        ]
    )
    return folder


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder for a fence that writes files (a figure), thrown away after."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
