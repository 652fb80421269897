"""hlgym.agents.imitation: the oracle's episodes as Minari datasets, behaviour cloning, and
``hlgym-train --pretrain``."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# Minari is the imitation extra (.ci/run's imitation leg; HLGYM_TEST_IMITATION=1: a failure).
if importlib.util.find_spec("minari") is None and os.environ.get("HLGYM_TEST_IMITATION") != "1":
    pytest.skip("Minari (the imitation extra) is not installed", allow_module_level=True)

import minari

from hlgym import train
from hlgym.agents import imitation
from hlgym.envs import PRESETS, registration
from hlgym.options import Args
from hlgym.runs import RunFolder

ENV = "hlgym/PeerSelection-v0"
TINY = PRESETS[ENV].replace(max_rounds=4)


@pytest.fixture(scope="module")
def episodes() -> list[imitation.Episode]:
    env = registration.make(ENV, TINY)
    return imitation.oracle_episodes(env, [5, 6], width=2)


def test_demo_seeds_are_their_own_stream_and_avoid_the_evaluation() -> None:
    seeds = imitation.demo_seeds(0, 30)
    assert seeds == imitation.demo_seeds(0, 30) and len(set(seeds)) == 30
    assert seeds != imitation.demo_seeds(1, 30)
    assert not set(seeds) & set(range(0, 100))  # not the training envs' seed + i
    avoided = imitation.demo_seeds(0, 30, avoid=seeds[:5])
    assert not set(avoided) & set(seeds[:5]) and avoided[:25] == seeds[5:]
    with pytest.raises(ValueError, match="episodes=0 is not accepted"):
        imitation.demo_seeds(0, 0)


def test_oracle_episodes_replay_the_route_the_oracle_plays(episodes: list[imitation.Episode]) -> None:
    from hlgym.agents import OracleAgent, run_episode

    env = registration.make(ENV, TINY)
    record = run_episode(OracleAgent(env, width=2), env, 5)
    ep = episodes[0]
    assert ep.seed == 5 and list(ep.actions) == record.route[1:]
    assert np.allclose(ep.rewards, record.rewards)
    assert len(ep.observations) == len(ep.actions) + 1 == len(ep.action_masks)
    assert ep.terminations[-1] or ep.truncations[-1]


def test_a_dataset_round_trips_through_minari(
    tmp_path: Path, episodes: list[imitation.Episode], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = registration.make(ENV, TINY)
    dataset_id = imitation.dataset_id_for(ENV)
    assert dataset_id == "hlgym/PeerSelection-v0/oracle-v0"
    folder = imitation.write_dataset(episodes, env, dataset_id, root=tmp_path)
    assert folder == tmp_path / dataset_id and (folder / "data" / "main_data.hdf5").is_file()
    demos = imitation.read_dataset(folder, env.observation_space)
    assert demos.episodes == 2 and list(demos.actions) == [*episodes[0].actions, *episodes[1].actions]
    assert np.array_equal(demos.observations[: len(episodes[0].actions)], episodes[0].observations[:-1])
    assert demos.episode_ends.sum() == 2 and demos.episode_ends[-1]
    # Minari's own reader finds it by id in its root, with the masks and the env's spec.
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path)
    try:
        dataset = minari.load_dataset(dataset_id)
        assert dataset.total_episodes == 2 and dataset.storage.metadata["algorithm_name"] == imitation.DEMO_ALGORITHM
        first = next(iter(dataset.iterate_episodes()))
        assert first.infos["action_mask"].shape == (len(first.actions) + 1, 10)
        assert dataset.recover_environment().spec.id == ENV
        assert imitation.read_dataset(dataset_id).episodes == 2
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    # A relative folder (hlgym-train's --out runs/...) reads back too.
    monkeypatch.chdir(tmp_path)
    assert imitation.read_dataset(Path(dataset_id)).episodes == 2
    with pytest.raises(FileExistsError, match="exists"):
        imitation.write_dataset(episodes, env, dataset_id, root=tmp_path)
    other = registration.make("hlgym/PeerSelection-v0", TINY.replace(n_peers=6)).observation_space
    with pytest.raises(ValueError, match="holds observations"):
        imitation.read_dataset(folder, other)
    with pytest.raises(ValueError, match="neither a Minari dataset folder nor a local dataset id"):
        imitation.read_dataset(tmp_path / "nothing")


def test_a_failed_write_leaves_no_dataset(
    tmp_path: Path, episodes: list[imitation.Episode], monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(minari.utils, "MinariDataset", disk_full)  # the last call: the files are written
    env = registration.make(ENV, TINY)
    with pytest.raises(OSError, match="No space left"):
        imitation.write_dataset(episodes, env, "hlgym/PeerSelection-v0/broken-v0", root=tmp_path)
    assert not (tmp_path / "hlgym/PeerSelection-v0/broken-v0").exists()


def _policy(seed: int = 0) -> Any:
    from stable_baselines3 import PPO

    from hlgym.agents import sb3
    from hlgym.agents.attention import PeerAttentionPolicy

    venv = sb3.make_vec_env(ENV, TINY, 1, seed)
    return PPO(PeerAttentionPolicy, venv, seed=seed, n_steps=16, batch_size=16, device="cpu")


def test_behaviour_cloning_fits_the_demonstrations(tmp_path: Path, episodes: list[imitation.Episode]) -> None:
    env = registration.make(ENV, TINY)
    demos = imitation.read_dataset(imitation.write_dataset(episodes, env, "hlgym/x/y-v0", root=tmp_path))
    model = _policy()
    obs, actions = torch.as_tensor(demos.observations), torch.as_tensor(demos.actions)
    returns = torch.as_tensor(demos.returns(model.gamma), dtype=torch.float32)
    with torch.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(obs, actions)
        before = (-log_prob.mean().item(), ((values.flatten() - returns) ** 2).mean().item())
    optimizer_state = json.dumps(str(model.policy.optimizer.state_dict()))
    fit = imitation.behaviour_clone(model.policy, demos, gamma=model.gamma, epochs=100, seed=0)
    assert fit["nll"] < 0.5 * before[0] and fit["value_loss"] < 0.5 * before[1]
    assert fit["accuracy"] > 0.9  # a handful of steps: memorised
    assert json.dumps(str(model.policy.optimizer.state_dict())) == optimizer_state  # PPO's own Adam untouched
    # The discounted returns run backwards within an episode and restart at its end.
    first_end = int(np.flatnonzero(demos.episode_ends)[0])
    r = demos.returns(0.5)
    assert r[first_end] == pytest.approx(demos.rewards[first_end])
    assert r[first_end - 1] == pytest.approx(demos.rewards[first_end - 1] + 0.5 * demos.rewards[first_end])


def _pretrain_args(out: Path, *extra: str) -> list[str]:
    return [
        "--pretrain", "oracle", "--pretrain-episodes", "2", "--pretrain-epochs", "2", "--timesteps", "64",
        "--n-envs", "1", "--eval-episodes", "2", "--env-kwargs", "max_rounds=4", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_hlgym_train_pretrains_on_the_oracle_and_keeps_its_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train.main(_pretrain_args(out))
    text = capsys.readouterr().out
    assert "pretrain: 2 oracle episodes" in text and "pretrain: cloned" in text
    run = RunFolder(out)
    folder = run.demos / "hlgym/PeerSelection-v0/oracle-v0"
    assert (folder / "data" / "main_data.hdf5").is_file() and run.results_file.is_file()
    assert sorted(p.name for p in run.demos.iterdir()) == ["hlgym"] and not (out / ".demos.partial").exists()
    assert json.loads(run.config_file.read_text())["args"]["pretrain"] == "oracle"
    # A dataset on disk is cloned on again, not played again (a run that stopped before its first checkpoint).
    args, config, _ = train.resolve(Args(**{**json.loads(run.config_file.read_text())["args"]}))
    train.pretrain(args, config, run, _policy())
    again = capsys.readouterr().out
    assert "oracle episodes" not in again and "cloned" in again
    # --pretrain also takes a dataset folder.
    train.main([*_pretrain_args(tmp_path / "run2")[2:], "--pretrain", str(folder)])
    assert "cloned" in capsys.readouterr().out and not (tmp_path / "run2" / "demos").exists()


def test_a_run_that_fails_while_it_writes_its_dataset_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(episodes: Any, env: Any, dataset_id: str, root: Path) -> Path:
        (root / dataset_id).mkdir(parents=True)  # half written
        raise OSError("No space left on device")

    monkeypatch.setattr(imitation, "write_dataset", disk_full)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        train.main(_pretrain_args(out))
    assert not out.exists()  # no half dataset, and the unstarted run's files went with it


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "dqn", "--pretrain", "oracle"], "--pretrain is not accepted with --algo dqn; accepted with: ppo"),
        (["--algo", "greedy", "--pretrain", "oracle"], "--pretrain is not accepted with --algo greedy"),
        (["--pretrain", "oracle", "--pretrain-episodes", "0"], "--pretrain-episodes 0 is not accepted"),
        (["--pretrain", "oracle", "--pretrain-epochs", "0"], "--pretrain-epochs 0 is not accepted"),
        (["--pretrain", "no/such/set-v0"], "--pretrain: 'no/such/set-v0' is neither a Minari dataset folder"),
    ],
)
def test_bad_pretrain_options_fail_in_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--out", str(out), "--no-progress"])
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not out.exists()
