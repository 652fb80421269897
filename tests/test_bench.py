"""hlgym-bench: normalized scores, the shipped reference, bad input, resuming, the aggregates."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from hlgym import bench

RLIABLE = importlib.util.find_spec("rliable") is not None
# .ci/run's bench leg installs the extra and sets this: the aggregate tests' skip then fails.
NEEDS_RLIABLE = pytest.mark.skipif(
    not RLIABLE and os.environ.get("HLGYM_TEST_BENCH") != "1", reason="rliable (the bench extra) is not installed"
)
CASE = "PeerSelection-v0"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference of one case and two episodes, written as the shipped one is."""
    path = tmp_path_factory.mktemp("ref") / "reference.json"
    bench.write_reference(path, bench.select([CASE]), episodes=2, progress=False)
    return path


def test_scores_are_zero_at_random_one_at_the_oracle_and_floored() -> None:
    random = [{"rounds": 36, "comm_cost": 1.5}, {"rounds": 20, "comm_cost": 0.4}]
    oracle = [{"rounds": 16, "comm_cost": 0.5}, {"rounds": 20, "comm_cost": 0.4}]
    agent = [{"rounds": 26, "comm_cost": 1.5}, {"rounds": 19, "comm_cost": 0.39}]
    scores = bench.normalized(agent, random, oracle)
    # Seed 1: halfway in rounds, random's comm. Seed 2: the oracle did no better than random,
    # so the floors (1 round, 0.01) divide: one round better is +1, 0.01 less comm is +1.
    assert scores["rounds"] == [0.5, 1.0]
    assert scores["comm_cost"][0] == 0.0 and scores["comm_cost"][1] == pytest.approx(1.0)
    assert bench.normalized(random, random, oracle) == {"rounds": [0.0, 0.0], "comm_cost": [0.0, 0.0]}


def test_the_shipped_reference_covers_the_suite() -> None:
    ref = bench.load_reference()
    assert ref["hlgym_version"] and ref["episodes"] == bench.EPISODES and ref["seed"] == bench.SEED
    assert set(ref["cases"]) == {c.name for c in bench.SUITE}
    for per_policy in ref["cases"].values():
        assert set(per_policy) == set(bench.REFERENCE_POLICIES)
        assert all(len(eps) == bench.EPISODES for eps in per_policy.values())
    assert ref["machine"]["torch_version"]


def test_random_and_greedy_reproduce_the_shipped_figures(tmp_path: Path) -> None:
    shipped = bench.load_reference()["cases"][CASE]
    for policy in ("random", "greedy"):
        results = bench.main(
            [policy, "--ids", CASE, "--episodes", "2", "--no-progress", "--out", str(tmp_path / policy)]
        )
        mine = results["cases"][CASE][policy]["episodes"]
        assert mine == shipped[policy][:2]


def test_a_run_is_stamped_resumes_and_draws(tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    args = ["round_robin", "--reference", str(reference), "--ids", CASE, "--episodes", "2", "--no-progress"]
    args += ["--out", str(out)]
    results = bench.main(args)
    stamp = results["machine"]
    assert stamp["hlgym_version"] and stamp["torch_version"] and stamp["platform"]
    assert results["options"]["agent"] == ["round_robin"] and results["suite"] == [CASE]
    assert all(Path(p).stat().st_size > 0 for p in results["figures"])
    entry = results["cases"][CASE]
    assert entry["random"]["scores"]["rounds"] == [0.0, 0.0] and entry["oracle"]["scores"]["rounds"][0] == 1.0
    played: list[str] = []

    def record(name: str, agent: Any, case: bench.Case, episodes: int, progress: bool) -> list[dict[str, Any]]:
        played.append(case.name)
        return []

    monkeypatch.setattr(bench, "play", record)
    again = bench.main(args)  # everything is there: nothing is played again
    assert played == [] and again["cases"][CASE]["round_robin"] == entry["round_robin"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "AGENT 'nope' is not accepted; accepted: random, round_robin"),
        (["missing/model.zip"], "AGENT 'missing/model.zip': no such file"),
        (["random", "greedy"], "AGENT 'random' is not a run folder; accepted: hlgym-train run folders"),
        (["random", "--ids", "hlgym/HL-MNIST-v0"], "--ids 'hlgym/HL-MNIST-v0' is not in the suite; accepted:"),
        (["no_module_here:Agent"], "AGENT 'no_module_here:Agent': cannot import Agent from no_module_here"),
        (["random", "--episodes", "0"], "--episodes 0 is not accepted"),
        ([], "AGENT is missing"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())


def test_a_saved_model_that_does_not_fit_a_case_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gymnasium as gym
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", gym.make("hlgym/PeerSelection-v0", max_rounds=3), n_steps=8, batch_size=8, n_epochs=1)
    model.save(tmp_path / "model.zip")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        bench.main([str(tmp_path / "model.zip"), "--ids", "TaskDistribution-v1:hl_skew_20"])
    assert "cannot play TaskDistribution-v1:hl_skew_20: the model takes observations (10, 8)" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


@NEEDS_RLIABLE
def test_the_aggregate_is_rliables_iqm_with_intervals(tmp_path: Path, reference: Path) -> None:
    args = ["greedy", "--reference", str(reference), "--ids", CASE, "--episodes", "2", "--no-progress"]
    args += ["--out", str(tmp_path / "g")]
    agg: dict[str, Any] = bench.main(args)["aggregate"]
    assert agg["rounds"]["random"]["iqm"] == 0.0 and agg["rounds"]["oracle"]["iqm"] == 1.0
    low, high = agg["rounds"]["greedy"]["ci95"]
    assert low <= agg["rounds"]["greedy"]["iqm"] <= high
    assert 0.0 <= agg["comm_cost"]["random"]["prob_improvement_of_greedy"] <= 1.0
    again = bench.main(args)["aggregate"]
    assert again == json.loads(json.dumps(agg))  # the bootstrap is seeded


def _run_folder(path: Path, env_id: str, seeds: list[int]) -> Path:
    """An hlgym-train --seeds folder: config.json and a (barely trained) model.zip per seed."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    for seed in seeds:
        run = path / f"seed_{seed}"
        run.mkdir(parents=True)
        args = {"env": env_id, "algo": "ppo", "seed": seed, "backend": "sb3"}
        (run / "config.json").write_text(json.dumps({"args": args}))
        env = gym.make(env_id, max_rounds=3)
        PPO("MlpPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=seed).save(run / "model.zip")
    (path / "config.json").write_text(json.dumps({"args": {"env": env_id, "algo": "ppo", "seed": seeds[0]}}))
    return path


def test_run_folders_pool_their_training_seeds(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _run_folder(tmp_path / "runs", "hlgym/PeerSelection-v0", [0, 1])
    base = ["--reference", str(reference), "--episodes", "2", "--no-progress"]
    results = bench.main([str(runs), *base, "--out", str(tmp_path / "pooled")])
    assert "not covered by the runs (not played): DomainShift-v1" in capsys.readouterr().out
    assert results["suite"] == [CASE]
    entry = results["cases"][CASE]["ppo"]
    assert entry["training_seeds"] == [0, 1] and [e["training_seed"] for e in entry["episodes"]] == [0, 0, 1, 1]
    for k, seed in enumerate([0, 1]):  # each seed's half is what that model alone scores
        model = str(runs / f"seed_{seed}" / "model.zip")
        alone = bench.main([model, *base, "--ids", CASE, "--out", str(tmp_path / f"alone_{seed}")])
        mine = alone["cases"][CASE][f"seed_{seed}"]["scores"]
        assert entry["scores"]["rounds"][2 * k : 2 * k + 2] == mine["rounds"]
    other = _run_folder(tmp_path / "other", "hlgym/DomainShift-v1", [0])
    with pytest.raises(SystemExit) as err:
        bench.main([str(runs), str(other), *base])
    assert "training seeds per case differ (PeerSelection-v0 2, DomainShift-v1 1)" in str(err.value)
    with pytest.raises(SystemExit) as err:
        bench.main([str(runs), str(runs), *base])
    assert "training seed 0 on hlgym/PeerSelection-v0 is given twice" in str(err.value)
