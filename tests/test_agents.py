"""Baselines, the Agent protocol, evaluate() and train_meta.py end to end."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from hlgym.agents import Agent, GreedyNearestAgent, LookaheadAgent, RandomAgent, RoundRobinAgent, Stat, evaluate
from hlgym.records import SUMMARY_FIELDS

ROOT = Path(__file__).resolve().parents[1]


def test_baselines_satisfy_the_protocol() -> None:
    for agent in (RandomAgent(), RoundRobinAgent(), GreedyNearestAgent()):
        assert isinstance(agent, Agent)


def test_round_robin_and_greedy_routes() -> None:
    info: dict[str, Any] = {"holder": 8, "action_mask": np.ones(10, bool), "hop_costs": np.arange(10.0)}
    assert RoundRobinAgent().act(None, info) == 9
    info["action_mask"][9] = False
    assert RoundRobinAgent().act(None, info) == 0
    g = GreedyNearestAgent()
    g.reset()
    costs = np.array([0.0, 0.5, 0.1, 0.3])
    route = [0]
    for _ in range(3):
        info = {"holder": route[-1], "action_mask": np.ones(4, bool), "hop_costs": costs}
        route.append(g.act(None, info))
    assert route == [0, 2, 3, 1]  # nearest not-yet-visited each time (costs here do not depend on the holder)


def test_random_agent_respects_the_mask_and_its_seed() -> None:
    mask = np.zeros(10, bool)
    mask[[2, 7]] = True
    picks = {RandomAgent(seed=0).act(None, {"action_mask": mask}) for _ in range(20)}
    assert picks <= {2, 7}
    a = [RandomAgent(seed=5).act(None, {"action_mask": np.ones(10, bool)})]
    b = [RandomAgent(seed=5).act(None, {"action_mask": np.ones(10, bool)})]
    assert a == b


def test_random_agent_evaluation_end_to_end() -> None:
    env = gym.make("hlgym/PeerSelection-v0")
    ev = evaluate(RandomAgent(seed=0), env, episodes=3, seed=0)
    assert len(ev.records) == 3
    for rec in ev.records:
        assert len(rec.route) == rec.rounds + 1 == len(rec.accuracy)
        assert len(rec.hop_costs) == rec.rounds
        assert rec.comm_cost == pytest.approx(sum(rec.hop_costs))
        assert rec.reached_goal == (rec.final_accuracy >= 0.86)
        assert rec.rounds <= 36
    assert ev.summary["rounds"].n == 3
    again = evaluate(RandomAgent(seed=0), env, episodes=3, seed=0)
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in ev.records]


def test_stat_confidence_interval() -> None:
    s = Stat.of([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; sd = 1; half-width = 4.3027 / sqrt(3)
    assert s.mean == 2.0 and s.ci95 == pytest.approx(4.302652729911275 / 3**0.5)
    assert Stat.of([5.0]).ci95 == 0.0


def test_evaluate_rejects_bad_input() -> None:
    env = gym.make("hlgym/PeerSelection-v0")
    with pytest.raises(ValueError, match="episodes=0 is not accepted"):
        evaluate(RandomAgent(), env, episodes=0)
    with pytest.raises(TypeError, match="does not satisfy the Agent protocol"):
        evaluate(object(), env, episodes=1)  # type: ignore[arg-type]


class FirstValidAgent:
    """A plug-in agent for the command-line test."""

    def reset(self) -> None:
        pass

    def act(self, obs: Any, info: dict[str, Any]) -> int:
        return int((info["holder"] + 1) % len(info["action_mask"]))


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "train_meta.py"), "--no-progress", "--out", str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "HLGYM_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


@pytest.mark.parametrize("algo", ["random", "round_robin", "greedy", "tests.test_agents:FirstValidAgent"])
def test_train_meta_cli(tmp_path: Path, algo: str) -> None:
    proc = run_cli(tmp_path, "--algo", algo, "--eval-episodes", "2", "--env-kwargs", "max_rounds=5", "goal=0.95")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    name = algo.rpartition(":")[2]
    assert set(results["policies"]) == {name, "random", "round_robin", "greedy", "power_of_choice"}
    assert results["env_config"]["max_rounds"] == 5 and results["eval_episodes"] == 2
    for pol in results["policies"].values():
        assert set(pol["summary"]) == set(SUMMARY_FIELDS)
        assert len(pol["episodes"]) == 2 and all(ep["rounds"] <= 5 for ep in pol["episodes"])
    assert "rounds vs random" in proc.stdout and name in proc.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["algo"] == algo


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "nope"], "--algo 'nope' is not accepted"),
        (["--env", "hlgym/Nope-v0"], "--env 'hlgym/Nope-v0' is not accepted"),
        (["--env-kwargs", "gaol=0.5"], "did you mean 'goal'"),
        (["--env-kwargs", "goal=2"], "goal=2 is not accepted"),
        (["--algo", "collections:OrderedDict"], "lacks reset() and act(obs, info)"),
        (["--algo", "lookahead", "--agent-kwargs", "by=loss"], "by='loss' is not accepted; accepted: 'reward'"),
        (["--algo", "lookahead", "--agent-kwargs", "horizon=0"], "horizon=0 is not accepted"),
        (["--algo", "lookahead", "--agent-kwargs", "depth=2"], "unexpected keyword argument 'depth'"),
        (["--algo", "greedy", "--agent-kwargs", "window"], "--agent-kwargs item 'window' is not accepted"),
        (["--algo", "ppo", "--agent-kwargs", "horizon=2"], "--agent-kwargs is not accepted with --algo ppo"),
    ],
)
def test_train_meta_cli_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    from hlgym import train as train_meta

    with pytest.raises(SystemExit) as err:
        train_meta.main(["--no-progress", "--out", str(tmp_path / "run"), *args])
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_records_count_the_forced_first_round() -> None:
    env = gym.make("hlgym/PeerSelection-v0", first_round_at_start=True, max_rounds=4, goal=1.0)
    rec = evaluate(RoundRobinAgent(), env, episodes=1).records[0]
    assert rec.forced_rounds == 1 and rec.rounds == 4
    assert len(rec.route) == rec.rounds - rec.forced_rounds + 1 == len(rec.accuracy)
    assert rec.route[0] == 0 and len(rec.positions) == 10 and len(rec.main_classes) == 10


@pytest.mark.parametrize("by", ["reward", "accuracy"])
def test_lookahead_takes_the_best_simulated_round(by: str) -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=6, link_failure_prob=0.2)
    obs, info = env.reset(seed=3)
    obs, _, _, _, info = env.step(4)
    agent = LookaheadAgent(env, by=by)
    before = copy.deepcopy(env.unwrapped)
    choice = agent.act(obs, info)
    scores = []
    for peer in range(10):
        _, reward, _, _, sim_info = copy.deepcopy(before).step(peer)
        scores.append(float(reward) if by == "reward" else float(sim_info["accuracy"]))
    assert choice == int(np.argmax(scores))  # the first of equal scores
    # Looking ahead left the env as it was: the real round is the simulated one.
    _, reward, _, _, info = env.step(choice)
    assert (reward if by == "reward" else info["accuracy"]) == scores[choice]


def test_lookahead_horizon_and_bad_input() -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=5)
    ev = evaluate(LookaheadAgent(env, horizon=2), env, episodes=1, seed=1)
    assert ev.records[0].rounds <= 5
    with pytest.raises(RuntimeError, match="no env to look ahead in"):
        LookaheadAgent().act(None, {"action_mask": np.ones(10, bool)})
    for kwargs, message in [
        ({"horizon": 0}, "horizon=0"),
        ({"horizon": True}, "horizon=True"),
        ({"by": "x"}, "by='x'"),
    ]:
        with pytest.raises(ValueError, match=message):
            LookaheadAgent(**kwargs)  # type: ignore[arg-type]


def test_lookahead_from_the_command_line(tmp_path: Path) -> None:
    from hlgym import train as train_meta

    results = train_meta.main(
        [
            *("--algo", "lookahead", "--agent-kwargs", "horizon=2", "by=accuracy", "--out", str(tmp_path / "run")),
            *("--eval-episodes", "2", "--no-progress", "--env-kwargs", "max_rounds=4"),
        ]
    )
    assert set(results) == {"lookahead", "random", "round_robin", "greedy", "power_of_choice"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["agent_kwargs"] == ["horizon=2", "by=accuracy"]
