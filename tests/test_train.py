"""hlgym.train: options from type hints, shipped hyperparameters, the console script, and a
non-editable install run from another folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hlgym import options, train
from hlgym.options import Args, parse_args
from hlgym.runs import RunFolder, reduction
from hlgym.train import load_hyperparams, resolve

ROOT = Path(__file__).resolve().parents[1]


def test_options_parse_by_their_type_hints() -> None:
    args = parse_args(
        ["--timesteps", "64", "--env-kwargs", "goal=0.5", "max_rounds=4", "--no-progress", "--policy", "mlp"]
    )
    assert args.timesteps == 64 and isinstance(args.timesteps, int)
    assert args.env_kwargs == ["goal=0.5", "max_rounds=4"]
    assert args.progress is False and args.policy == "mlp" and args.n_envs is None
    assert parse_args([]) == Args()
    with pytest.raises(SystemExit):
        parse_args(["--seed", "1.5"])


def test_option_types_come_from_the_hints_not_the_source() -> None:
    assert options._option_type(float) == (float, False)
    assert options._option_type(float | None) == (float, False)
    assert options._option_type(list[int]) == (int, True)
    with pytest.raises(TypeError, match="not supported"):
        options._option_type(int | str)


def test_hyperparams_ship_with_the_package() -> None:
    entry = load_hyperparams("ppo", "hlgym/PeerSelection-v0")
    assert entry is not None and entry["n_timesteps"] == 50_000
    assert entry["policy"] == "hlgym.agents.attention.PeerAttentionPolicy"  # rl-zoo3 imports it
    assert load_hyperparams("a2c", "hlgym/HL-FashionMNIST-v0") is None
    assert load_hyperparams("no_such_algo", "hlgym/PeerSelection-v0") is None


def test_a_missing_entry_uses_the_defaults_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    args, _, hp = resolve(Args(algo="a2c", env="hlgym/DomainShift-v1"))
    assert "hyperparams/a2c.yml has no entry for hlgym/DomainShift-v1: using the defaults" in capsys.readouterr().out
    defaults: tuple[object, ...] = (options.DEFAULT_TIMESTEPS, options.DEFAULT_N_ENVS, "mlp", {})
    assert (args.timesteps, args.n_envs, args.policy, hp) == defaults
    args, _, hp = resolve(Args(algo="ppo"))
    assert capsys.readouterr().out == ""
    assert args.policy == "attention" and hp["n_steps"] == 128 and "n_timesteps" not in hp


def test_hyperparams_override_the_file_and_reach_the_model(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    out = tmp_path / "gamma"
    common = [
        "--timesteps",
        "64",
        "--n-envs",
        "1",
        "--eval-episodes",
        "1",
        "--no-progress",
        "--env-kwargs",
        "max_rounds=4",
    ]
    train.main(["--hyperparams", "gamma=0.99", "ent_coef=0.02", "--out", str(out), *common])
    hp = json.loads((out / "config.json").read_text())["hyperparams"]
    assert (hp["gamma"], hp["ent_coef"], hp["n_steps"]) == (0.99, 0.02, 128)  # n_steps: ppo.yml's
    model = PPO.load(out / "model.zip")
    assert (model.gamma, model.ent_coef) == (0.99, 0.02)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--hyperparams", "gama=0.99"],
            "--hyperparams gama=... is not accepted: ppo has no setting 'gama'; accepted: ",
        ),
        (["--hyperparams", "gamma=abc"], "--hyperparams gamma='abc' is not accepted; accepted: a number"),
        (["--hyperparams", "batch_size=0"], "--hyperparams batch_size=0 is not accepted by ppo: `batch_size` must be"),
        (["--hyperparams", "n_timesteps=5"], "--hyperparams n_timesteps=... is not accepted: --timesteps sets it"),
        (["--hyperparams", "policy=mlp"], "--hyperparams policy=... is not accepted: --policy sets it"),
        (["--algo", "greedy", "--hyperparams", "gamma=0.9"], "--hyperparams is not accepted with --algo greedy"),
        (["--algo", "hl_dqn", "--hyperparams", "minibatch=0"], "not accepted by hl_dqn: minibatch=0 is not accepted"),
        (
            ["--env", "hlgym/Gossip-v0", "--hyperparams", "gamma=0.9"],
            "--hyperparams is not accepted with the multi-agent",
        ),
        (["--hyperparams", "gamma"], "--hyperparams item 'gamma' is not accepted; accepted: key=value"),
    ],
)
def test_bad_hyperparams_are_refused_before_any_file(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train.main([*argv, "--out", str(out), "--no-progress"])
    assert message in str(exc.value)
    assert not out.exists()


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HLGYM_OFFLINE": "1", **(env or {})}
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


ARGS = ["--algo", "random", "--eval-episodes", "2", "--no-progress", "--env-kwargs", "max_rounds=4"]


def test_console_script_from_another_folder(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hlgym-train"
    assert script.is_file(), "hlgym-train is not installed: pip install -e '.[dev]' (README)"
    proc = _run([str(script), *ARGS, "--out", str(tmp_path / "run")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((tmp_path / "run" / "results.json").read_text())["policies"]) >= {"random", "greedy"}


@pytest.mark.slow
def test_non_editable_install_runs_from_another_folder(tmp_path: Path) -> None:
    """``pip install .`` (a built wheel, not the checkout) finds its hyperparameters and runs."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("hlgym-*.whl"))
    done = _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (target / "hlgym" / "hyperparams" / "ppo.yml").is_file()
    where = _run([sys.executable, "-c", "import hlgym; print(hlgym.__file__)"], tmp_path, {"PYTHONPATH": str(target)})
    assert where.stdout.strip().startswith(str(target))
    proc = _run(
        [str(target / "bin" / "hlgym-train"), *ARGS, "--out", str(tmp_path / "run")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "results.json").is_file()


def test_default_run_folders_are_announced_and_never_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["--algo", "random", "--eval-episodes", "1", "--no-progress", "--env-kwargs", "max_rounds=2"]
    train.main(argv)
    train.main(argv)
    said = capsys.readouterr().out
    assert "run folder: runs/PeerSelection-v0_random_0\n" in said
    assert "run folder: runs/PeerSelection-v0_random_0_2\n" in said
    assert (tmp_path / "runs" / "PeerSelection-v0_random_0_2" / "results.json").is_file()
    evaluation = Args(algo="ppo", evaluate_model="model.zip", seed=3)
    assert train.default_run_dir(evaluation) == "runs/PeerSelection-v0_ppo_eval_3"


def test_seeds_train_a_run_per_seed_and_summarise_over_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "over_seeds"
    common = ["--no-progress", "--timesteps", "64", "--n-envs", "1", "--eval-episodes", "3"]
    train.main(["--seeds", "0", "1", "2", "--out", str(out), *common, "--env-kwargs", "max_rounds=4"])
    said = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "across_seeds" and results["seeds"] == [0, 1, 2] and results["timesteps"] == 64
    per_seed = [RunFolder(out / f"seed_{k}").read_evaluations() for k in (0, 1, 2)]
    ppo = results["policies"]["ppo"]
    # Each seed's mean over the same held-out episodes; their mean and t-interval over seeds.
    rounds = [ev["ppo"].summary["rounds"].mean for ev in per_seed]
    assert ppo["per_seed"]["rounds"] == rounds
    assert ppo["summary"]["rounds"]["mean"] == pytest.approx(np.mean(rounds))
    half = stats.t.ppf(0.975, 2) * np.std(rounds, ddof=1) / np.sqrt(3)
    assert ppo["summary"]["rounds"]["ci95"] == pytest.approx(half) and ppo["summary"]["rounds"]["n"] == 3
    # The change against random is taken seed by seed, against that seed's random agent.
    comm = [-reduction(ev["ppo"].summary["comm_cost"].mean, ev["random"].summary["comm_cost"].mean) for ev in per_seed]
    assert ppo["vs_reference"]["comm_cost"]["mean"] == pytest.approx(np.mean(comm))
    assert [ev["greedy"].records[0].seed for ev in per_seed] == [10_000] * 3  # the same episodes
    assert results["policies"]["greedy"]["summary"]["rounds"]["ci95"] == 0  # deterministic
    assert "vs_reference" not in results["policies"]["random"]
    assert "3 training seeds (0 1 2)" in said and "-" * 40 in said
    assert (out / "plots" / "seeds.png").is_file() and (out / "seed_2" / "plots" / "route_ppo.png").is_file()

    # A crash lost seed 1's evaluation: --resume reads seeds 0 and 2 back and finishes seed 1.
    (out / "seed_1" / "results.json").unlink()
    (out / "results.json").unlink()
    train.main(["--out", str(out), "--resume", "--no-progress"])
    said = capsys.readouterr().out
    assert said.count("finished earlier: read its results.json") == 2
    assert json.loads((out / "results.json").read_text())["policies"] == results["policies"]
