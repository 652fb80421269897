"""The benchmark's references: fixed peers and stay, power-of-choice, the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import hlgym  # noqa: F401  (registers the ids)
from hlgym.agents import (
    Agent,
    FixedPeerAgent,
    OracleAgent,
    PowerOfChoiceAgent,
    StayAgent,
    best_fixed_peer,
    evaluate,
)

SHORT: dict[str, Any] = {"max_rounds": 5}


def test_the_new_agents_satisfy_the_protocol() -> None:
    for agent in (FixedPeerAgent(3), StayAgent(), PowerOfChoiceAgent(), OracleAgent()):
        assert isinstance(agent, Agent)


def test_a_fixed_peer_goes_to_its_peer_and_stays() -> None:
    env = gym.make("hlgym/PeerSelection-v0", **SHORT)
    record = evaluate(FixedPeerAgent(4), env, 1, seed=3).records[0]
    assert record.route == [0, 4, 4, 4, 4, 4]
    assert record.hop_costs[1:] == [0.0] * 4


def test_stay_keeps_the_best_fixed_peer_of_the_episodes() -> None:
    env = gym.make("hlgym/PeerSelection-v0", **SHORT)
    peer, best = best_fixed_peer(env, 2, seed=5)
    every = [evaluate(FixedPeerAgent(k), env, 2, seed=5).summary for k in range(10)]
    key = [(-s["reached_goal"].mean, s["rounds"].mean, s["comm_cost"].mean, k) for k, s in enumerate(every)]
    assert peer == min(key)[3]
    assert best.summary["final_accuracy"].mean == every[peer]["final_accuracy"].mean
    stay = StayAgent()
    assert stay.choose(env, 2, seed=5).summary["rounds"].mean == best.summary["rounds"].mean and stay.peer == peer


def test_power_of_choice_takes_the_highest_probe_loss_among_its_candidates() -> None:
    obs = np.zeros((6, 8), np.float32)
    obs[:, 2] = [0.1, 0.9, 0.3, 0.8, 0.2, 0.5]
    mask = np.array([True, False, True, True, True, True])
    info = {"action_mask": mask}
    assert PowerOfChoiceAgent(d=6).act(obs, info) == 3  # every online peer: the highest online loss
    a, b = PowerOfChoiceAgent(d=2, seed=7), PowerOfChoiceAgent(d=2, seed=7)
    picks = [a.act(obs, info) for _ in range(20)]
    assert picks == [b.act(obs, info) for _ in range(20)] and 1 not in picks  # seeded; never offline
    with pytest.raises(ValueError, match="power_of_choice needs the peer_features observation"):
        PowerOfChoiceAgent().act(np.zeros(100), info)
    with pytest.raises(ValueError, match="d=0 is not accepted"):
        PowerOfChoiceAgent(d=0)


def test_the_oracle_replays_its_search_and_its_lifted_curve_gives_every_goal() -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=6, goal=1.0)
    oracle = OracleAgent(width=2)
    _, info = env.reset(seed=11)
    route = oracle.search(env.unwrapped, info)
    assert len(route) == 6 and len(oracle.levels) == 6
    assert oracle.searched_steps <= 2 * 10 * 6
    best = [acc for acc, _ in oracle.levels]
    # A goal the lifted search's best child reaches at round r: the oracle with that goal
    # reaches it at round r (its beams were ranked the same way until then).
    r = int(np.argmax(np.asarray(best) >= sorted(best)[len(best) // 2])) + 1
    goal = best[r - 1]
    played = evaluate(OracleAgent(width=2), gym.make("hlgym/PeerSelection-v0", max_rounds=6, goal=goal), 1, 11)
    assert played.records[0].reached_goal and played.records[0].rounds == r
    # The route is played as searched: the real episode's accuracy is the search's.
    assert played.records[0].accuracy[r] == pytest.approx(goal)


def test_evaluate_binds_an_agent_that_asks_for_the_env() -> None:
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=3)
    oracle = OracleAgent()  # no env given: evaluate binds it
    evaluate(oracle, env, 1, seed=0)
    assert oracle.env is env


@pytest.mark.parametrize(("algo", "kwargs"), [("oracle", ["width=1"]), ("stay", []), ("power_of_choice", ["d=2"])])
def test_the_references_from_the_command_line(tmp_path: Path, algo: str, kwargs: list[str]) -> None:
    from hlgym import train

    args = ["--algo", algo, "--out", str(tmp_path / algo), "--eval-episodes", "2", "--no-progress"]
    args += ["--env-kwargs", "max_rounds=4", *(["--agent-kwargs", *kwargs] if kwargs else [])]
    results = train.main(args)
    assert set(results) == {algo, "random", "round_robin", "greedy", "power_of_choice"}
    assert results[algo].summary["rounds"].n == 2


def test_power_of_choice_sits_out_an_observation_it_cannot_read(tmp_path: Path) -> None:
    from hlgym import train

    args = ["--algo", "greedy", "--out", str(tmp_path / "run"), "--eval-episodes", "1", "--no-progress"]
    results = train.main([*args, "--env-kwargs", "max_rounds=3", "observation=hl_pca"])
    assert set(results) == {"greedy", "random", "round_robin"}
