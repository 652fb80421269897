"""The Ray RLlib backend (``hlgym-train --backend rllib``, ``pip install -e ".[ray]"``).

The tests that train need Ray and are skipped where it is not installed (the default
install); ``.ci/run`` installs the ray extra with constraints-ray.txt and runs every test
there with ``HLGYM_TEST_RAY=1``, which turns the skip into a failure. The rest (the saved
policy, the options, the checkpoint folders) run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from hlgym import options, train
from hlgym.agents.attention import PeerSetAgent, PeerSetNet
from hlgym.runs import RunFolder, read_episodes
from tests.conftest import tiny_overrides

RAY = importlib.util.find_spec("ray") is not None
if not RAY and os.environ.get("HLGYM_TEST_RAY") == "1":
    raise ImportError("HLGYM_TEST_RAY=1 but Ray is not installed: pip install -c constraints-ray.txt -e '.[dev,ray]'")
needs_ray = pytest.mark.skipif(not RAY, reason="Ray is not installed (the ray extra)")

ENV = "hlgym/PeerSelection-v0"


def _tiny_kwargs() -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(ENV).items()]


def _saved_policy(path: Path, n_features: int = 8) -> PeerSetAgent:
    kwargs = {"d_model": 16, "n_heads": 2, "n_layers": 1}
    with torch.random.fork_rng():  # the test's own weights, leaving the global RNG as it was
        torch.manual_seed(0)
        agent = PeerSetAgent(PeerSetNet(n_features, **kwargs), n_features, kwargs)
    path.write_bytes(agent.to_bytes())
    return agent


def test_a_saved_policy_reads_back_and_acts_the_same(tmp_path: Path) -> None:
    agent = _saved_policy(tmp_path / "model.pt")
    loaded = PeerSetAgent.load(tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs = rng.normal(size=(10, 8)).astype(np.float32)
        mask = rng.random(10) < 0.6
        mask[0] = True
        info = {"action_mask": mask}
        assert loaded.act(obs, info) == agent.act(obs, info)
        assert mask[loaded.act(obs, info)], "a masked-out peer was picked"


def test_a_file_that_is_no_saved_policy_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"other\.pt: not a policy saved by the RLlib backend"):
        PeerSetAgent.load(path)
    (tmp_path / "model.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, as SB3's files are zips
    with pytest.raises(ValueError, match=r"model\.zip: not a policy saved by the RLlib backend"):
        PeerSetAgent.load(tmp_path / "model.zip")


def test_the_rllib_backends_saved_policy_evaluates_without_ray(tmp_path: Path) -> None:
    n_features = gym.make(ENV).observation_space.shape[-1]  # type: ignore[index]
    _saved_policy(tmp_path / "model.pt", n_features)
    out = tmp_path / "eval"
    results = train.main(
        [
            *("--backend", "rllib", "--algo", "ppo", "--evaluate-model", str(tmp_path / "model.pt")),
            *("--eval-episodes", "2", "--out", str(out), "--no-progress", "--env-kwargs", *_tiny_kwargs()),
        ]
    )
    assert set(results) >= {"ppo", "random", "greedy"}
    assert RunFolder(out).read_results()["backend"] == "rllib"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "tf"], r"--backend 'tf' is not accepted; accepted: sb3, rllib"),
        (
            ["--backend", "rllib", "--algo", "dqn"],
            r"--backend rllib is not accepted with --algo 'dqn'; accepted: --algo ppo",
        ),
        (["--backend", "rllib", "--policy", "mlp"], r"--policy mlp is not accepted with --backend rllib"),
        (
            ["--backend", "rllib", "--env-kwargs", "observation=hl_pca"],
            r"--backend rllib is not accepted with observation='hl_pca'; accepted: peer_features",
        ),
        (
            ["--backend", "rllib", "--num-env-runners", "-1"],
            r"--num-env-runners -1 is not accepted; accepted: an integer >= 0",
        ),
    ],
)
def test_bad_rllib_options_name_the_option_and_what_is_accepted(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        train.resolve(options.parse_args(argv))


@pytest.mark.skipif(RAY, reason="Ray is installed here")
def test_without_ray_the_backend_says_how_to_install_it() -> None:
    with pytest.raises(SystemExit, match=r"--backend rllib needs Ray.*pip install -c constraints-ray\.txt"):
        train.resolve(options.parse_args(["--backend", "rllib"]))


def test_checkpoint_folders_are_complete_before_the_manifest_names_them(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)

    def writer(tag: str) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            path.mkdir()
            (path / "state.txt").write_text(tag)

        return write

    for steps in (100, 200, 300):
        run.commit_checkpoint_dir(steps, steps // 10, writer(str(steps)))
    manifest = run.latest_checkpoint()
    assert manifest is not None and manifest["timesteps"] == 300 and manifest["backend"] == "rllib"
    assert (manifest["model"] / "state.txt").read_text() == "300"
    assert sorted(p.name for p in run.checkpoints.glob("rllib_*")) == ["rllib_200", "rllib_300"]

    def crash(path: Path) -> None:
        path.mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run.commit_checkpoint_dir(400, 40, crash)
    assert run.latest_checkpoint()["model"].name == "rllib_300"  # type: ignore[index]
    assert not (run.checkpoints / "rllib_400").exists()
    run.commit_checkpoint_dir(400, 40, writer("400"))  # the crash's leftovers go
    assert not list(run.checkpoints.glob(".rllib_*"))
    assert (run.latest_checkpoint()["model"] / "state.txt").read_text() == "400"  # type: ignore[index]


@needs_ray
def test_the_rl_module_never_samples_a_masked_peer() -> None:
    from ray.rllib.core.columns import Columns

    from hlgym.agents.rllib import PeerAttentionRLModule, make_env

    env = make_env({"env_id": ENV, "config": gym.make(ENV).unwrapped.config.to_dict()})  # type: ignore[attr-defined]
    module = PeerAttentionRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        model_config={"d_model": 16, "n_heads": 2, "n_layers": 1},
    )
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"observations", "action_mask"}
    mask = np.ones(10, dtype=np.float32)
    mask[[1, 4, 7]] = 0.0
    batch = {
        Columns.OBS: {
            "observations": torch.as_tensor(np.repeat(obs["observations"][None], 64, axis=0)),
            "action_mask": torch.as_tensor(np.repeat(mask[None], 64, axis=0)),
        }
    }
    logits = module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]
    probs = torch.softmax(logits, dim=-1)
    assert torch.all(probs[:, [1, 4, 7]] == 0)
    assert module.compute_values(batch).shape == (64,)
    # Its weights do not depend on the number of peers: 20 peers run through the same module.
    obs20 = torch.zeros(3, 20, obs["observations"].shape[-1])
    big = {Columns.OBS: {"observations": obs20, "action_mask": torch.ones(3, 20)}}
    assert module.forward_inference(big)[Columns.ACTION_DIST_INPUTS].shape == (3, 20)


@needs_ray
def test_rllib_trains_on_two_env_runners_and_resumes_in_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = [
        *("--backend", "rllib", "--num-env-runners", "2", "--n-envs", "1", "--checkpoint-every", "128"),
        *("--eval-episodes", "2", "--out", str(out), "--no-progress"),
    ]
    results = train.main([*base, "--timesteps", "200", "--env-kwargs", *_tiny_kwargs()])
    assert set(results) >= {"ppo", "random", "round_robin", "greedy"}
    run = RunFolder(out)
    saved = run.read_results()
    assert saved["backend"] == "rllib" and saved["timesteps"] == 200
    manifest = run.latest_checkpoint()
    # One PPO update samples n_steps * n_envs = 128 steps: the budget of 200 ends at 256.
    assert manifest is not None and manifest["backend"] == "rllib" and manifest["timesteps"] == 256
    assert manifest["model"].is_dir() and manifest["model"].name == "rllib_256"
    rows = read_episodes(out)
    assert len(rows) == manifest["episodes"] > 0
    assert {int(r["timesteps"]) for r in rows} <= {128, 256}
    assert isinstance(PeerSetAgent.load(run.model_file("ppo", backend="rllib")), PeerSetAgent)
    assert (out / "plots" / "training.png").is_file()

    first = rows[0]
    train.main(["--out", str(out), "--resume", "--timesteps", "384", "--no-progress"])
    manifest = run.latest_checkpoint()
    assert manifest is not None and manifest["timesteps"] == 384
    assert sorted(p.name for p in run.checkpoints.glob("rllib_*")) == ["rllib_256", "rllib_384"]
    rows = read_episodes(out)
    assert rows[0] == first and len(rows) == manifest["episodes"] > len([r for r in rows if r["timesteps"] <= 256])
    assert run.read_results()["timesteps"] == 384


@needs_ray
def test_rllib_joins_a_running_cluster_with_ray_address(tmp_path: Path) -> None:
    # The README's multi-node recipe on one machine: a head started by `ray start`, then
    # hlgym-train with --ray-address auto (it must neither start its own Ray nor stop this one).
    ray_cli = str(Path(sys.executable).with_name("ray"))
    start = [ray_cli, "start", "--head", "--num-cpus=3", "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        out = tmp_path / "run"
        train.main(
            [
                *("--backend", "rllib", "--ray-address", "auto", "--num-env-runners", "2", "--n-envs", "1"),
                *("--timesteps", "100", "--eval-episodes", "1", "--out", str(out), "--no-progress"),
                *("--env-kwargs", *_tiny_kwargs()),
            ]
        )
        assert RunFolder(out).latest_checkpoint()["timesteps"] == 128  # type: ignore[index]
        status = subprocess.run([ray_cli, "status"], capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, "hlgym-train stopped the cluster it joined"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)


@needs_ray
def test_a_hyperparameter_rllib_lacks_is_refused_before_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "load_hyperparams", lambda algo, env: {"n_steps": 64, "use_sde": True})
    with pytest.raises(SystemExit, match=r"'use_sde' has no RLlib counterpart; accepted with --backend rllib: n_steps"):
        train.main(["--backend", "rllib", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@needs_ray
def test_rllib_trains_on_a_task_distribution(tmp_path: Path) -> None:
    from tests.test_tasks import SMALL

    out = tmp_path / "tasks"
    results = train.main(
        [
            *("--backend", "rllib", "--env", "hlgym/TaskDistribution-v0", "--num-env-runners", "1", "--n-envs", "1"),
            *("--timesteps", "100", "--eval-episodes", "1", "--out", str(out), "--no-progress"),
            *("--env-kwargs", "max_rounds=4", f"tasks={json.dumps(SMALL)}"),
        ]
    )
    assert "ppo" in results and set(RunFolder(out).read_results()["families"]) == {"dir6"}
    assert read_episodes(out)


SLOW = '{"name": "tests.slow_component:SlowRounds", "seconds": 0.05}'


@needs_ray
def test_the_sample_timeout_grows_with_the_step_time() -> None:
    from hlgym.agents import rllib
    from hlgym.envs import PRESETS

    assert rllib.fragment_steps(256, 2) == 128 and rllib.fragment_steps(256, 0) == 256
    assert rllib.sample_timeout_s(0.001, 128) == rllib.MIN_SAMPLE_TIMEOUT_S  # never below RLlib's own
    assert rllib.sample_timeout_s(0.5, 128) == pytest.approx(3 * 0.5 * 128)  # a full-fidelity HL step: 192 s
    config = PRESETS[ENV].replace(max_rounds=4, components=[json.loads(SLOW)])
    assert rllib.measure_step_s(ENV, config) >= 0.05  # the slow rounds are measured


@needs_ray
@pytest.mark.parametrize("ended", [0, 1, 3])
def test_an_iteration_reads_every_episode_that_ended_in_it(ended: int) -> None:
    # RLlib compiles a one-item series to the item itself: an iteration in which one episode
    # ended once crashed the run (TypeError: string indices must be integers).
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from hlgym.agents import rllib

    class Ended:  # what on_episode_end reads of a single-agent episode
        def __init__(self, k: int) -> None:
            self.k = k

        def get_infos(self, index: int) -> dict[str, float]:
            return {"round": self.k, "comm_cost": 0.5, "bytes_sent": 10.0, "accuracy": 0.8}

        def get_return(self) -> float:
            return -1.0 - self.k

    logger = MetricsLogger()
    for k in range(ended):
        rllib.EpisodeOutcomes().on_episode_end(episode=Ended(k), metrics_logger=logger)
    runners = logger.compile() if ended else {}
    got = rllib.finished_episodes(runners)
    assert [row["round"] for row in got] == list(range(ended))
    assert [row["return"] for row in got] == [-1.0 - k for k in range(ended)]


@needs_ray
def test_env_runners_that_miss_the_timeout_stop_the_run_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray's workers import the slow component from the checkout (the driver's path).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]))
    argv = [
        *("--backend", "rllib", "--num-env-runners", "1", "--n-envs", "1", "--timesteps", "128"),
        *("--rllib-sample-timeout", "0.01", "--eval-episodes", "1", "--out", str(tmp_path / "run"), "--no-progress"),
        *("--env-kwargs", *_tiny_kwargs(), f"components=[{SLOW}]"),
    ]
    with pytest.raises(RuntimeError, match=r"returned no samples in 5 iterations in a row.*--rllib-sample-timeout"):
        train.main(argv)
    assert not (tmp_path / "run").exists()  # it had saved nothing: the folder is gone


def test_a_bad_sample_timeout_is_refused() -> None:
    with pytest.raises(SystemExit, match=r"--rllib-sample-timeout 0.0 is not accepted; accepted: a number of seconds"):
        train.resolve(options.parse_args(["--backend", "rllib", "--rllib-sample-timeout", "0"]))
