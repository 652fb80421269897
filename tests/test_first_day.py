"""A researcher's first day (issue 26): a failed start leaves no run folder, --resume says
which options it honours, errors come as one line naming what would fit, the help lists the
ids and choices."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import hlgym
from hlgym import options, train
from hlgym.envs import PeerSelectionConfig, TaskSpec
from hlgym.envs.registration import TASKS_V1
from hlgym.runs import RunFolder

from .conftest import loaded_after

QUICK = ["--no-progress", "--eval-episodes", "1", "--env-kwargs", "max_rounds=2"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--device", "gpu"], "--device 'gpu' is not accepted; accepted: auto, cpu, cuda, cuda:N"),
        (["--env-kwargs", "n_peers=20"], "this fits: main_samples=32 other_samples=32"),
        (["--env", "hlgym/HL-MNIST-v0", "--env-kwargs", "data_dir={tmp}"], "--env hlgym/HL-MNIST-v0: data_dir="),
        (["--timesteps", "-5"], "--timesteps -5 is not accepted; accepted: an integer >= 1"),
        (["--seed", "1", "--seeds", "0", "1"], "--seed 1 with --seeds 0 1 is not accepted"),
    ],
)
def test_a_refused_start_writes_nothing(
    argv: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--no-progress"])
    message = str(exc.value)
    assert said in message and "Traceback" not in message
    assert "\n" not in message
    assert not (tmp_path / "runs").exists()


def test_no_cuda_is_refused_before_sb3_raises() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match=r"--device cuda is not accepted: torch .* sees no CUDA device"):
        train.resolve(options.Args(device="cuda"))


class _Raises:
    """A plug-in agent whose act fails (the user's bug), after the folder exists."""

    def reset(self) -> None: ...

    def act(self, obs: object, info: object) -> int:
        raise RuntimeError("the plug-in's own bug")


def test_a_run_that_fails_before_saving_anything_removes_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "_Raises", _Raises, raising=False)
    with pytest.raises(RuntimeError, match="the plug-in's own bug"):
        train.main(["--algo", f"{__name__}:_Raises", *QUICK])
    assert "removed runs/PeerSelection-v0__Raises_0: the run failed before it saved anything" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "PeerSelection-v0__Raises_0").exists()
    # The next run gets the plain name, not _2.
    train.main(["--algo", "random", *QUICK])
    assert (tmp_path / "runs" / "PeerSelection-v0_random_0" / "results.json").is_file()


def test_a_failure_keeps_a_folder_that_holds_work(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.write_config({"args": {}})
    run.checkpoints.mkdir()
    (run.checkpoints / "ckpt_64.zip").write_bytes(b"x")
    assert run.holds_work() and not run.discard_unstarted() and run.config_file.is_file()
    bare = RunFolder(tmp_path / "bare")
    bare.write_config({"args": {}})
    (bare.path / "episodes.csv").write_text("timesteps\n")
    assert bare.discard_unstarted() and not bare.path.exists()
    mine = RunFolder(tmp_path / "mine")  # an --out folder that holds a file of the user's
    mine.path.mkdir()
    (mine.path / "notes.txt").write_text("keep me")
    mine.write_config({"args": {}})
    assert mine.discard_unstarted() and not mine.config_file.exists()
    assert (mine.path / "notes.txt").read_text() == "keep me"


def test_resume_refuses_other_options_and_honours_device_and_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train.main(["--algo", "random", "--out", str(out), *QUICK])
    with pytest.raises(SystemExit) as exc:
        train.main(["--out", str(out), "--resume", "--env-kwargs", "n_peers=5"])
    assert str(exc.value) == (
        f"--env-kwargs n_peers=5 is not accepted with --resume: {out} continues with its saved --env-kwargs "
        "max_rounds=2; accepted with --resume: --timesteps, --device, --progress (start a new run for other options)"
    )
    with pytest.raises(SystemExit, match="--seed 3 is not accepted with --resume"):
        train.main(["--out", str(out), "--resume", "--seed", "3"])
    # An option given with its saved value is no change; --device is honoured and recorded.
    capsys.readouterr()
    train.main(["--out", str(out), "--resume", "--env-kwargs", "max_rounds=2", "--device", "cpu", "--no-progress"])
    assert "resume: device auto -> cpu" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["args"]["device"] == "cpu"


def test_the_defaults_message_names_only_the_defaults_used(capsys: pytest.CaptureFixture[str]) -> None:
    train.resolve(options.Args(algo="a2c", env="hlgym/DomainShift-v1", timesteps=2048))
    said = capsys.readouterr().out
    assert "using the defaults (n_envs 1, policy mlp, the algorithm's own settings)" in said
    assert "timesteps" not in said


def test_help_lists_the_ids_and_choices_without_clutter() -> None:
    text = options.build_parser().format_help()
    for env_id in ("hlgym/PeerSelection-v0", "hlgym/TaskDistribution-v1", "hlgym/DomainShift-v1"):
        assert env_id in " ".join(text.split())
    assert "{sb3,rllib}" in text and "cuda:N" in text and "(default: None)" not in text


def test_help_loads_no_trainer() -> None:
    code = "from hlgym import options\noptions.build_parser().format_help()"
    assert loaded_after(code, {"stable_baselines3", "matplotlib", "scipy"}) == set()


def test_a_split_too_big_fails_at_construction_with_what_fits() -> None:
    with pytest.raises(ValueError, match=r"with n_peers=20 this fits: main_samples=32 other_samples=32"):
        gym.make("hlgym/PeerSelection-v0", n_peers=20)
    with pytest.raises(ValueError, match=r"this fits: samples_per_peer=64 at most"):
        gym.make("hlgym/PeerSelection-v0", n_peers=20, partition="iid", samples_per_peer=100)
    env = gym.make("hlgym/PeerSelection-v0", n_peers=20, main_samples=32, other_samples=32)
    for seed in range(5):  # what it suggests fits whatever the draw
        env.reset(seed=seed)


def test_unknown_fields_get_near_matches_not_every_field_and_kwarg() -> None:
    with pytest.raises(TypeError) as err:
        gym.make("hlgym/TaskDistribution-v1", n_peer=5)
    message = str(err.value)
    assert message == (
        "'n_peer' is not a PeerSelectionConfig field (did you mean 'n_peers'? also near: start_peer); every field: "
        "help(hlgym.envs.PeerSelectionConfig) or the docs' API page (gymnasium.make('hlgym/TaskDistribution-v1'))"
    )
    with pytest.raises(TypeError, match=r"^'tasks.splt' is not a key of tasks; accepted: max_peers, split, train"):
        gym.make("hlgym/TaskDistribution-v1", tasks={"splt": "held_out"})


def test_a_partial_tasks_dict_changes_only_its_keys() -> None:
    env = gym.make("hlgym/TaskDistribution-v1", tasks={"split": "held_out"})
    spec = env.unwrapped.config.tasks  # type: ignore[attr-defined]
    assert spec.split == "held_out" and [f.name for f in spec.held_out] == ["dirichlet_20", "shards_20", "hl_skew_20"]
    same = PeerSelectionConfig(tasks=TaskSpec.from_dict(TASKS_V1)).replace(tasks={"max_peers": 25})
    assert same.tasks is not None and same.tasks.max_peers == 25 and same.tasks.split == "train"
    with pytest.raises(ValueError, match=r"^tasks=\{'split': 'held_out'\} is not accepted: this config has no"):
        PeerSelectionConfig().replace(tasks={"split": "held_out"})
    assert PeerSelectionConfig(n_peers=np.int64(5)).n_peers == 5  # type: ignore[arg-type]  # a sweep's value


def test_every_id_states_its_episode_length_and_the_time_limit_never_cuts_first() -> None:
    for env_id in [i for i in gym.registry if i.startswith("hlgym/")]:
        config = hlgym.envs.PRESETS[env_id]
        assert gym.spec(env_id).max_episode_steps == config.max_episode_steps(), env_id
    assert gym.spec("hlgym/PeerSelection-v0").max_episode_steps == 36
    assert gym.spec("hlgym/HL-MNIST-v0").max_episode_steps == 35  # round 1 plays inside reset
    env = gym.make("hlgym/PeerSelection-v0", goal=1.0)  # never reached: the episode runs out
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(steps % 10)
        steps += 1
        assert not terminated
    assert steps == 36 and env.unwrapped.episode.round == 36  # type: ignore[attr-defined]


def test_a_longer_episode_through_make_warns_and_the_batched_env_follows_max_rounds() -> None:
    with pytest.warns(UserWarning, match=r"take up to 50 steps, more than the id's registered max_episode_steps=36"):
        gym.make("hlgym/PeerSelection-v0", max_rounds=50)
    envs = gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, max_rounds=50)  # no TimeLimit there
    assert envs.unwrapped.engine.config.max_episode_steps() == 50  # type: ignore[attr-defined]
    refused = r"^max_episode_steps=20 is not accepted: this config's episodes take up to 36 steps"
    with pytest.raises(ValueError, match=refused):
        gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, max_episode_steps=20)
