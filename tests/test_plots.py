"""Every figure renders headless from records of a real short evaluation; the CLI on a
real run folder; the bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from hlgym import plots
from hlgym.agents import EpisodeRecord, GreedyNearestAgent, RandomAgent, evaluate

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def records() -> dict[str, list[EpisodeRecord]]:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=8, goal=0.5)
    return {
        "random": evaluate(RandomAgent(seed=0), env, 3, seed=50).records,
        "greedy": evaluate(GreedyNearestAgent(), env, 3, seed=50).records,
    }


def not_blank(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.std() > 0.02, f"{path} looks blank"


def legend_labels(ax: Axes) -> set[str]:
    legend = ax.get_legend()
    assert legend is not None
    return {t.get_text() for t in legend.get_texts()}


@pytest.mark.parametrize("unit", ["distance", "bytes"])
def test_comm_cost_curves(records: dict[str, list[EpisodeRecord]], tmp_path: Path, unit: str) -> None:
    ax = plots.comm_cost_curves(records, unit=unit)
    assert {"random", "greedy"} <= legend_labels(ax)
    assert ax.get_xlabel() == "round" and ax.get_ylabel()
    # The plotted mean at round 0 is 0 and it never decreases.
    y = np.asarray(ax.get_lines()[0].get_ydata(), dtype=float)
    assert y[0] == 0 and np.all(np.diff(y) >= 0)
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "c.png")
    not_blank(tmp_path / "c.png")


def test_cumulative_cost_in_both_units(records: dict[str, list[EpisodeRecord]]) -> None:
    rec = records["greedy"][0]
    np.testing.assert_allclose(plots.cumulative_cost(rec)[-1], rec.comm_cost)
    assert plots.cumulative_cost(rec, "bytes")[-1] == pytest.approx(rec.bytes_sent)


def test_bytes_of_failed_hops_and_byzantine_rings() -> None:
    # Failed hops send bytes without moving the model: the byte curve counts them, and the
    # route map rings the byzantine peers.
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=10, link_failure_prob=0.5, byzantine_peers=2)
    (rec,) = evaluate(RandomAgent(seed=1), env, 1, seed=7).records
    assert len(rec.round_bytes) == rec.rounds and sum(rec.round_bytes) == rec.bytes_sent
    stays = [a == b for a, b in zip(rec.route[:-1], rec.route[1:], strict=True)]
    assert any(sent > 0 and stay for sent, stay in zip(rec.round_bytes, stays, strict=True))  # a failed hop
    assert plots.cumulative_cost(rec, "bytes")[-1] == rec.bytes_sent
    assert len(rec.byzantine) == 2 and rec.byzantine == [int(p) for p in np.flatnonzero(env.unwrapped.byzantine)]  # type: ignore[attr-defined]
    ax = plots.route(rec)
    assert "byzantine" in legend_labels(ax)


def test_other_figures(records: dict[str, list[EpisodeRecord]], tmp_path: Path) -> None:
    ax = plots.accuracy_vs_cost(records)
    assert {"random", "greedy", "goal", "one episode"} <= legend_labels(ax)
    assert ax.get_ylabel() == "best test accuracy so far"
    fig = plots.distributions(records)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["random", "greedy"] and fig.axes[0].get_ylabel() == "rounds"
    ax = plots.route(records["greedy"][0])
    assert any(t.get_text() == "1" for t in ax.texts)  # hop numbers
    caption = next(t.get_text() for t in ax.texts if t.get_text().startswith("disc: a peer"))
    assert "peer i holds class i" in caption and "labelled with its rounds" in caption and "×k" in caption
    assert ax.get_legend() is None  # peer i holds class i: a class legend would repeat the discs
    rec = records["greedy"][0]
    shuffled = EpisodeRecord.from_dict({**rec.to_dict(), "main_classes": [c // 2 for c in rec.main_classes]})
    ax = plots.route(shuffled)
    assert "class 0: peers 0, 1" in legend_labels(ax) and "class 4: peers 8, 9" in legend_labels(ax)
    rows = [{"return": -float(i), "rounds": 30.0 - i, "comm_cost": 1.0, "final_accuracy": 0.8} for i in range(20)]
    fig = plots.training_curves({"run": rows}, window=5)
    assert len(fig.axes) == 4 and all(a.get_ylabel() for a in fig.axes)
    for i, f in enumerate([ax.get_figure(), fig]):
        assert isinstance(f, Figure)
        f.savefig(tmp_path / f"{i}.png")
        not_blank(tmp_path / f"{i}.png")


def test_bad_input(records: dict[str, list[EpisodeRecord]], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="records_by_policy is empty"):
        plots.comm_cost_curves({})
    with pytest.raises(ValueError, match=r"records_by_policy\['x'\] is empty"):
        plots.accuracy_vs_cost({"x": []})
    with pytest.raises(ValueError, match="unit='watts' is not accepted"):
        plots.cumulative_cost(records["random"][0], "watts")
    with pytest.raises(FileNotFoundError, match=r"results\.json is missing"):
        plots.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a run folder"):
        plots.load_run(tmp_path / "nope")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ppo"
    from hlgym import train as train_meta

    train_meta.main(
        [
            "--no-progress",
            "--algo",
            "ppo",
            "--timesteps",
            "128",
            "--n-envs",
            "1",
            "--eval-episodes",
            "2",
            "--out",
            str(out),
            "--env-kwargs",
            "max_rounds=6",
        ]
    )
    return out


def test_train_meta_draws_plots(run_dir: Path) -> None:
    names = {p.name for p in (run_dir / "plots").iterdir()}
    assert {"comm_cost.png", "accuracy_vs_cost.png", "distributions.png", "training.png", "route_ppo.png"} <= names
    for p in (run_dir / "plots").iterdir():
        not_blank(p)


def test_cli_overlays_runs_and_rejects_mixed_envs(run_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    results = json.loads((other / "results.json").read_text())
    results["policies"]["ppo"]["episodes"][0]["rounds"] += 1  # a different policy of the same name
    (other / "results.json").write_text(json.dumps(results))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hlgym.plots",
            str(run_dir),
            str(other),
            "--out",
            str(tmp_path / "figs"),
            "--format",
            "svg",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figs" / "comm_cost.svg").stat().st_size > 0
    merged = plots.merge([plots.load_run(run_dir), plots.load_run(other)])
    assert list(merged) == [
        "ppo",
        "random",
        "round_robin",
        "greedy",
        "power_of_choice",
        "ppo [other]",
    ]  # baselines once
    results["env_config"]["goal"] = 0.5
    (other / "results.json").write_text(json.dumps(results))
    proc = subprocess.run(
        [sys.executable, "-m", "hlgym.plots", str(run_dir), str(other), "--out", str(tmp_path / "figs2")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and "records of different envs cannot be overlaid" in proc.stderr
    assert "goal" in proc.stderr


def test_route_marks_stays_and_every_round_of_a_repeated_hop() -> None:
    # A route 0 -> 1 -> 1 -> 0 -> 1 -> 1 -> 1: three stays at peer 1, the hop 0->1 in rounds 1 and 4.
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=6, goal=1.0)
    (rec,) = evaluate(_Scripted([1, 1, 0, 1, 1, 1]), env, 1, seed=3).records
    assert rec.route == [0, 1, 1, 0, 1, 1, 1]
    np.testing.assert_array_equal(plots.stays(rec)[:2], [0, 3])
    texts = [t.get_text() for t in plots.route(rec).texts]
    assert "×3" in texts and "1,4" in texts and "3" in texts
    ax = plots.route(rec)
    markers = {np.asarray(c.get_paths()[0].vertices).shape[0] for c in ax.collections}
    assert len(markers) == 1  # peers 8 and 9 are discs like the others, not squares


def test_domain_legend_names_the_transform_and_its_unit() -> None:
    for env_id, label in (("hlgym/DomainShift-v0", "60°: peers"), ("hlgym/DomainShift-v1", "noise std 0.4: peers")):
        env = gym.make(env_id, max_rounds=2)
        (rec,) = evaluate(RandomAgent(seed=0), env, 1, seed=1).records
        assert any(t.startswith(label) for t in legend_labels(plots.route(rec))), env_id


def test_accuracy_vs_cost_draws_a_policy_that_stays_as_a_point(records: dict[str, list[EpisodeRecord]]) -> None:
    still = [EpisodeRecord.from_dict({**r.to_dict(), "hop_costs": [0.0] * len(r.hop_costs)}) for r in records["random"]]
    ax = plots.accuracy_vs_cost({"greedy": records["greedy"], "still": still})
    assert "still (hardly moves: its final means)" in legend_labels(ax)
    point = next(line for line in ax.get_lines() if str(line.get_label()).startswith("still"))
    xs = np.asarray(point.get_xdata(), dtype=float)
    assert xs.size == 1 and xs[0] == 0
    # The curves are the best accuracy so far: they never go down.
    bold = next(line for line in ax.get_lines() if line.get_label() == "greedy")
    assert np.all(np.diff(np.asarray(bold.get_ydata(), dtype=float)) >= 0)


def test_seed_bars_stay_inside_the_metric_range() -> None:
    per_seed = {"rounds": [30.0, 36.0, 36.0], "comm_cost": [0.1, 0.9, 0.2], "reached_goal": [1.0, 1.0, 0.5]}
    half = {"rounds": 9.0, "comm_cost": 0.9, "reached_goal": 0.9}
    summary = {k: {"mean": float(np.mean(v)), "ci95": half[k], "n": 3} for k, v in per_seed.items()}
    fig = plots.seed_spread({"ppo": {"per_seed": per_seed, "summary": summary}}, max_rounds=36)
    for ax, (low, high) in zip(fig.axes, [(1, 36), (0, np.inf), (0, 100)], strict=True):
        bar = next(c for c in ax.collections if isinstance(c, LineCollection))  # the errorbar's line
        ys = np.concatenate([seg[:, 1] for seg in bar.get_segments()])
        assert ys.min() >= low and ys.max() <= high, ax.get_ylabel()
    assert "clipped to the metric's range" in fig.get_suptitle()
    assert fig.axes[1].get_ylabel() == "comm cost [distance units]"


class _Scripted:
    """Plays a fixed list of actions."""

    def __init__(self, actions: list[int]) -> None:
        self.actions = actions

    def reset(self) -> None:
        self.k = 0

    def act(self, obs: object, info: object) -> int:
        self.k += 1
        return self.actions[self.k - 1]
