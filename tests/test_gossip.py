"""GossipEnv: every peer an agent, as a PettingZoo ParallelEnv (and its AEC form)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
import pytest
import torch

# The dev install has PettingZoo; .ci/run's ray leg may not (HLGYM_TEST_MULTIAGENT=1: a failure).
if importlib.util.find_spec("pettingzoo") is None and os.environ.get("HLGYM_TEST_MULTIAGENT") != "1":
    pytest.skip("PettingZoo (the multiagent extra) is not installed", allow_module_level=True)

from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from hlgym.envs import gossip
from hlgym.envs.gossip import GossipEnv

SMALL: dict[str, Any] = {"n_peers": 5, "max_rounds": 4}


def _keep(env: GossipEnv) -> dict[str, int]:
    return {a: env.possible_agents.index(a) for a in env.agents}


def _play(env: GossipEnv, seed: int, rounds: list[dict[int, int]]) -> list[Any]:
    """Each round's rewards and infos; ``rounds``: the agents that send (others keep)."""
    env.reset(seed=seed)
    out = []
    for sends in rounds:
        actions = {**_keep(env), **{f"peer_{i}": j for i, j in sends.items()}}
        _, rewards, _, _, infos = env.step(actions)
        out.append((rewards, {a: {k: v for k, v in i.items() if k != "action_mask"} for a, i in infos.items()}))
    return out


def test_pettingzoo_api_and_seed_tests() -> None:
    parallel_api_test(GossipEnv(**SMALL), num_cycles=8)
    api_test(gossip.env(**SMALL), num_cycles=8, verbose_progress=False)
    parallel_seed_test(lambda: GossipEnv(**SMALL))
    seed_test(lambda: gossip.env(**SMALL), num_cycles=4)


@pytest.mark.parametrize("transfer", ["average", "distill", "logits"])
def test_the_same_seed_gives_the_same_episode(transfer: str) -> None:
    rounds = [{0: 1, 2: 1, 3: 4}, {1: 0, 4: 2}, {}]
    a = _play(GossipEnv(**SMALL, transfer=transfer), 3, rounds)
    assert a == _play(GossipEnv(**SMALL, transfer=transfer), 3, rounds)
    assert a != _play(GossipEnv(**SMALL, transfer=transfer), 4, rounds)


def test_a_round_pays_every_send_and_records_who_heard_whom() -> None:
    env = GossipEnv(**SMALL)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.possible_agents) and obs["peer_0"].shape == (5, len(gossip.COLUMNS))
    assert (obs["peer_2"][:, 3] == 1.0).all()  # never heard from anyone
    distances = env.episode.distances
    assert distances is not None
    obs, rewards, _, _, infos = env.step({**_keep(env), "peer_0": 2, "peer_3": 2})
    assert sorted(infos["peer_2"]["received_from"]) == [0, 3] and infos["peer_1"]["received_from"] == []
    assert infos["peer_0"]["comm_cost"] == pytest.approx(distances[0, 2] + distances[3, 2])
    assert infos["peer_0"]["bytes_sent"] == 2 * 4 * env.models.n_params
    assert infos["peer_0"]["hop_cost"] == pytest.approx(distances[0, 2]) and infos["peer_1"]["hop_cost"] == 0.0
    assert obs["peer_2"][0, 3] == 0.0 and obs["peer_2"][3, 3] == 0.0 and obs["peer_2"][1, 3] == 1.0
    assert np.allclose(obs["peer_4"][:, 1], distances[4] / distances.max())
    # The HL reward of each agent's own model, minus its own send.
    for i, agent in enumerate(env.possible_agents):
        acc = infos[agent]["accuracy"]
        assert rewards[agent] == pytest.approx(32.0 ** (acc - 0.86) - infos[agent]["hop_cost"] - 1.0)
        assert acc == pytest.approx(float(env.accuracies[i]))
    team = GossipEnv(**SMALL, agent_reward="team")
    team.reset(seed=0)
    _, rewards, _, _, infos = team.step({**_keep(team), "peer_0": 2})
    assert rewards["peer_1"] == pytest.approx(32.0 ** (infos["peer_1"]["team_accuracy"] - 0.86) - 1.0)
    assert infos["peer_1"]["team_accuracy"] == pytest.approx(float(np.mean(team.accuracies)))


def test_a_receiver_absorbs_its_arrivals_in_an_order_drawn_from_the_seed() -> None:
    orders = set()
    for seed in range(6):
        env = GossipEnv(**SMALL)
        env.reset(seed=seed)
        _, _, _, _, infos = env.step({**_keep(env), "peer_0": 4, "peer_1": 4, "peer_2": 4})
        orders.add(tuple(infos["peer_4"]["received_from"]))
    assert len(orders) > 1 and all(sorted(o) == [0, 1, 2] for o in orders)


def test_every_send_carries_the_model_as_the_round_found_it() -> None:
    # Round 2: peer 1 sends to 2 while peer 0 sends to 1. What 2 gets is 1's model from before
    # 1 absorbed 0's, so 2 ends the round as if 0 had kept.
    models = []
    for first_send in ({0: 1}, {}):
        env = GossipEnv(**SMALL, transfer_mix=1.0)
        _play(env, 5, [{}])  # a round of local training: the models differ
        env.step({**_keep(env), **{f"peer_{i}": j for i, j in first_send.items()}, "peer_1": 2})
        models.append([p.detach().clone() for p in env.peer_model(2).parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*models, strict=True))


def test_the_team_goal_ends_every_agent_and_the_round_limit_truncates() -> None:
    env = GossipEnv(**SMALL, goal=0.01)
    env.reset(seed=0)
    _, _, terms, truncs, _ = env.step(_keep(env))
    assert all(terms.values()) and not any(truncs.values()) and env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({})
    low = GossipEnv(**SMALL, goal=0.99, team_goal="min")
    low.reset(seed=0)
    for _ in range(4):
        _, _, terms, truncs, _ = low.step(_keep(low))
    assert all(truncs.values()) and not any(terms.values())
    assert low.team_accuracy == pytest.approx(float(low.accuracies.min()))


def test_faults_come_through_the_components() -> None:
    env = GossipEnv(**SMALL, offline_prob=0.6, link_failure_prob=0.5, byzantine_peers=1)
    env.reset(seed=1)
    assert env.episode.byzantine.sum() == 1
    seen_offline = failed = False
    for _ in range(4):
        masks = {a: env.action_mask(a) for a in env.agents}
        offline = [i for i in range(5) if not env.episode.online[i]]
        for i in offline:
            assert masks[f"peer_{i}"].tolist() == [int(k == i) for k in range(5)]
        seen_offline = seen_offline or bool(offline)
        # Everyone sends to the next peer: a send from or to an offline peer is paid and lost.
        actions = {a: (i + 1) % 5 for i, a in enumerate(env.possible_agents)}
        online = env.episode.online.copy()  # this round's (the step draws the next round's)
        _, _, _, _, infos = env.step(actions)
        for i in offline:
            assert not infos[f"peer_{i}"]["delivered"] and not infos[f"peer_{(i - 1) % 5}"]["delivered"]
            assert infos[f"peer_{i}"]["hop_cost"] > 0
        failed = failed or any(
            not i["delivered"] and online[k] and online[(k + 1) % 5] for k, i in enumerate(infos.values())
        )
    assert seen_offline and failed


def test_render_shows_each_rounds_sends() -> None:
    env = GossipEnv(**SMALL, render_mode="ansi", link_failure_prob=0.99)
    env.reset(seed=0)
    env.step({**_keep(env), "peer_0": 3})
    env.step(_keep(env))
    assert env.render() == "round   1  0->3x\nround   2  (every peer kept)"
    assert GossipEnv(**SMALL).render() is None


def test_the_route_map_draws_every_agents_sends_in_a_round() -> None:
    from matplotlib.text import Annotation

    from hlgym.agents.gossip import RandomNeighbourPolicy, evaluate
    from hlgym.plots import gossip_sends

    env = GossipEnv(**SMALL, link_failure_prob=0.3)
    (episode,) = evaluate(RandomNeighbourPolicy(), env, 1, seed=3)
    assert len(episode.sends) == episode.rounds and len(episode.positions) == SMALL["n_peers"]
    assert episode.sends == env.sends and episode.main_classes == [int(c) for c in np.asarray(env.episode.main_classes)]
    fig = gossip_sends(episode, rounds=[1, 2, 3], cols=2)
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 3 and len(fig.axes) == 4  # 2 x 2 panels, the fourth blank
    for ax, sends in zip(drawn, episode.sends, strict=False):
        arrows = [t for t in ax.texts if isinstance(t, Annotation)]
        assert len(arrows) == len(sends) and len(ax.texts) - len(arrows) == SMALL["n_peers"]  # + the peers' labels
        lost = sum(1 for *_, ok in sends if not ok)
        assert sum(a.arrow_patch is not None and a.arrow_patch.get_linestyle() == ":" for a in arrows) == lost
        assert ax.get_title().startswith(f"round {drawn.index(ax) + 1}: {len(sends)} sends")
        assert (f"{lost} lost" in ax.get_title()) == (lost > 0)
    with pytest.raises(ValueError, match=r"rounds=\[0\] is not accepted; accepted: rounds 1\.\."):
        gossip_sends(episode, rounds=[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transfer": "relay"}, "tokens=None is not accepted by GossipEnv; accepted: an integer 1..10 with transfer="),
        ({"transfer": "relay", "tokens": 11}, "tokens=11 is not accepted by GossipEnv; accepted: an integer 1..10"),
        ({"transfer": "relay", "tokens": 0}, "tokens=0 is not accepted by GossipEnv; accepted: an integer 1..10"),
        ({"tokens": 2}, "tokens=2 is not accepted by GossipEnv; accepted: None with transfer='average'"),
        ({"team_goal": "median"}, "team_goal='median' is not accepted by GossipEnv; accepted: 'mean', 'min'"),
        ({"agent_reward": "mine"}, "agent_reward='mine' is not accepted by GossipEnv; accepted: 'own', 'team'"),
        ({"observation": "hl_pca"}, "observation='hl_pca' is not accepted by GossipEnv; accepted: 'peer_features'"),
        ({"domain_shift": "rotate"}, "components='domain_shift' is not accepted by GossipEnv; accepted: the transfer"),
        ({"modality_split": "columns"}, "components='modality_experts' is not accepted by GossipEnv"),
        ({"render_mode": "human"}, "render_mode='human' is not accepted by GossipEnv; accepted: None, 'ansi'"),
        ({"n_peers": 0}, "n_peers=0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        GossipEnv(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_actions_are_refused_and_leave_the_round_unplayed() -> None:
    env = GossipEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions for \['peer_0'\] are not accepted; accepted: one action for each"):
        env.step({"peer_0": 1})
    with pytest.raises(ValueError, match=r"actions\['peer_1'\]=7 is not accepted; accepted: a peer index in \[0, 4\]"):
        env.step({**_keep(env), "peer_1": 7})
    assert env.round == 0 and env.comm_cost == 0.0


NEEDS_SUPERSUIT = pytest.mark.skipif(
    importlib.util.find_spec("supersuit") is None and os.environ.get("HLGYM_TEST_MULTIAGENT") != "1",
    reason="SuperSuit (the multiagent extra) is not installed",
)


@NEEDS_SUPERSUIT
def test_parameter_shared_ppo_trains_through_supersuit_and_plays() -> None:
    from hlgym.agents.gossip import SharedPolicy, evaluate, train_shared

    kwargs = {**SMALL, "max_rounds": 3}
    model = train_shared(kwargs, 64, seed=0, copies=2, n_steps=8, n_epochs=1)
    assert model.get_env().num_envs == 2 * 5  # every agent of every copy is a slot
    again = train_shared(kwargs, 64, seed=0, copies=2, n_steps=8, n_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(model.policy.parameters(), again.policy.parameters(), strict=True))
    played = evaluate(SharedPolicy(model), GossipEnv(**kwargs), 2, 10_000)
    assert [e.seed for e in played] == [10_000, 10_001] and all(e.rounds <= 3 for e in played)
    again_played = evaluate(SharedPolicy(again), GossipEnv(**kwargs), 2, 10_000)
    assert [e.team_curve for e in played] == [e.team_curve for e in again_played]


def test_the_baselines_decide_from_each_agents_own_view() -> None:
    from hlgym.agents.gossip import BASELINES, FixedPeerPolicy, evaluate

    env = GossipEnv(**SMALL, goal=1.0)
    obs, infos = env.reset(seed=0)
    distances = env.episode.distances
    assert distances is not None
    assert BASELINES["keep"]().act("peer_2", obs["peer_2"], infos["peer_2"]) == 2
    nearest = BASELINES["nearest"]().act("peer_2", obs["peer_2"], infos["peer_2"])
    assert nearest == int(np.argmin(np.where(np.arange(5) == 2, np.inf, distances[2])))
    assert FixedPeerPolicy(4).act("peer_1", obs["peer_1"], infos["peer_1"]) == 4
    poc = BASELINES["power_of_choice"]()
    assert all(poc.act("peer_0", obs["peer_0"], infos["peer_0"]) != 0 for _ in range(10))
    keep = evaluate(BASELINES["keep"](), env, 1, 10_000)[0]
    assert keep.comm_cost == 0.0 and keep.bytes_per_peer == 0.0 and keep.rounds == 4 and not keep.reached_goal
    assert len(keep.team_curve) == 5


def test_the_oracle_replays_the_route_it_found() -> None:
    from hlgym.agents.gossip import GossipOracle, evaluate

    env = GossipEnv(**SMALL, goal=1.0)
    oracle = GossipOracle(env, width=2, samples=3)
    played = evaluate(oracle, env, 1, 10_000)[0]
    assert len(oracle.route) == 4 and oracle.searched_steps == 3 + 3 * 2 * 3  # one beam, then two
    replay = GossipEnv(**SMALL, goal=1.0)  # a fresh env, the same seed, the route found
    replay.reset(seed=10_000)
    for actions in oracle.route:
        replay.step(actions)
    assert played.team_accuracy == replay.team_accuracy and played.comm_cost == replay.comm_cost
    # The best child per round: at or above the returned route's own curve, and its end.
    assert len(oracle.levels) == 4 and oracle.levels[-1] == (played.team_accuracy, played.comm_cost)
    assert all(best >= acc for (best, _), acc in zip(oracle.levels, played.team_curve[1:], strict=True))
    with pytest.raises(ValueError, match="samples=1 is not accepted; accepted: an integer >= 2"):
        GossipOracle(samples=1)


def test_named_settings_are_made_by_name() -> None:
    env = gossip.make("hlgym/Gossip-v0", n_peers=4)
    assert env.config.goal == gossip.PRESETS["hlgym/Gossip-v0"]["goal"] and env.config.n_peers == 4
    assert gossip.parallel_env(max_rounds=3).config.transfer == "average"
    with pytest.raises(
        ValueError,
        match="env_id='hlgym/Gossip-v9' is not accepted; accepted: hlgym/Gossip-v0, hlgym/Gossip-Distill-v0, "
        "hlgym/Gossip-Distill-20-v0, hlgym/Gossip-Relay-v0",
    ):
        gossip.make("hlgym/Gossip-v9")
    distill = gossip.make("hlgym/Gossip-Distill-v0")
    assert (distill.config.transfer, distill.config.max_rounds, distill.config.goal) == ("distill", 34, 0.80)
    wide = gossip.make("hlgym/Gossip-Distill-20-v0")
    cfg = wide.config
    assert (cfg.n_peers, cfg.main_samples, cfg.other_samples, cfg.max_rounds, cfg.goal) == (20, 32, 32, 30, 0.74)
    assert len(wide.possible_agents) == 20
    relay = gossip.make("hlgym/Gossip-Relay-v0")
    assert (relay.config.transfer, relay.tokens, relay.config.max_rounds, relay.config.goal) == ("relay", 1, 36, 0.855)
    assert relay.agent_reward == "team"


@pytest.mark.parametrize("env_id", list(gossip.PRESETS))
def test_every_named_setting_passes_the_parallel_api_test(env_id: str) -> None:
    parallel_api_test(gossip.make(env_id, **SMALL), num_cycles=4)


@pytest.mark.parametrize(("transfer", "tokens"), [("average", None), ("distill", None), ("logits", None), ("relay", 3)])
def test_batched_and_one_at_a_time_training_give_the_same_episode(transfer: str, tokens: int | None) -> None:
    rounds = [{0: 1, 2: 1, 3: 4}, {1: 0, 4: 2, 0: 2}, {}]
    kwargs = {**SMALL, "transfer": transfer, "tokens": tokens, "byzantine_peers": 1}
    batched = _play(GossipEnv(**kwargs, batched=True), 2, rounds)
    single = _play(GossipEnv(**kwargs, batched=False), 2, rounds)
    for (rew_b, info_b), (rew_s, info_s) in zip(batched, single, strict=True):
        assert rew_b == pytest.approx(rew_s, abs=1e-6)
        for agent in info_s:
            assert info_b[agent]["accuracy"] == pytest.approx(info_s[agent]["accuracy"], abs=1e-6)
            assert info_b[agent]["received_from"] == info_s[agent]["received_from"]


# ---------------------------------------------------------------------------- tokens (the relay)

RELAY: dict[str, Any] = {**SMALL, "transfer": "relay", "tokens": 2}


def test_the_relay_with_tokens_passes_pettingzoos_tests() -> None:
    parallel_api_test(GossipEnv(**RELAY), num_cycles=8)
    api_test(gossip.env(**RELAY), num_cycles=8, verbose_progress=False)
    parallel_seed_test(lambda: GossipEnv(**RELAY))
    rounds = [{0: 1, 1: 2, 2: 3, 3: 4, 4: 0}, {0: 2, 1: 2, 3: 2}, {}]
    assert _play(GossipEnv(**RELAY), 3, rounds) == _play(GossipEnv(**RELAY), 3, rounds)


def test_tokens_travel_and_only_their_holders_decide() -> None:
    env = GossipEnv(**{**RELAY, "tokens": 3})
    obs, infos = env.reset(seed=0)
    holders = env.holders
    assert len(set(holders)) == 3 and sum(len(q) for q in env.queues) == 3
    assert obs["peer_0"].shape == (5, len(gossip.RELAY_COLUMNS)) and gossip.RELAY_COLUMNS[-1] == "tokens_held"
    assert env.accuracies.shape == (3,) and env.team_accuracy == pytest.approx(float(env.accuracies.mean()))
    idle = next(p for p in range(5) if p not in holders)
    assert infos[f"peer_{idle}"]["action_mask"].tolist() == [int(k == idle) for k in range(5)]
    assert (obs[f"peer_{idle}"][:, 5] == 0).all() and (obs[f"peer_{holders[0]}"][:, 5] == pytest.approx(1 / 3))
    assert infos[f"peer_{holders[1]}"]["tokens"] == [1] and infos[f"peer_{idle}"]["tokens"] == []
    # Token 0 moves to the idle peer; a peer without a token that "sends" is ignored.
    other = next(p for p in range(5) if p not in holders and p != idle)
    distances = env.episode.distances
    assert distances is not None
    _, rewards, _, _, infos = env.step({**_keep(env), f"peer_{holders[0]}": idle, f"peer_{other}": holders[1]})
    assert env.holders == [idle, holders[1], holders[2]] and env.sends == [[(holders[0], idle, True)]]
    assert env.comm_cost == pytest.approx(distances[holders[0], idle])
    assert env.bytes_sent == 4 * env.models.n_params  # one model moved
    assert infos[f"peer_{idle}"]["received_from"] == [holders[0]] and env.heard[idle, holders[0]] == 1
    # The HL reward of the token each holder moved or kept; 0 for an agent that held none.
    acc = env.accuracies
    assert rewards[f"peer_{holders[0]}"] == pytest.approx(32.0 ** (acc[0] - 0.86) - distances[holders[0], idle] - 1)
    assert rewards[f"peer_{holders[2]}"] == pytest.approx(32.0 ** (acc[2] - 0.86) - 1)
    assert rewards[f"peer_{other}"] == 0.0 and rewards[f"peer_{holders[0]}"] != 0.0
    assert infos[f"peer_{idle}"]["accuracy"] == pytest.approx(float(acc[0]))
    with pytest.raises(ValueError, match=r"peer_model\(0\) is not accepted with tokens"):
        env.peer_model(0)
    with pytest.raises(ValueError, match=r"token=3 is not accepted; accepted: 0\.\.2"):
        env.token_model(3)
    assert sum(p.numel() for p in env.token_model(2).parameters()) == env.models.n_params


def test_a_peer_holding_several_tokens_moves_the_oldest_and_trains_them_all() -> None:
    env = GossipEnv(**RELAY)
    env.reset(seed=1)
    a, b = env.holders
    target = next(p for p in range(5) if p not in (a, b))
    env.step({**_keep(env), f"peer_{a}": target, f"peer_{b}": target})  # both arrive, in a drawn order
    queue = list(env.queues[target])
    assert sorted(queue) == [0, 1] and env.holders == [target, target]
    before = [flat.clone() for flat in (env.models.flat(0), env.models.flat(1))]
    env.step({**_keep(env), f"peer_{target}": a})  # the first queued token moves on, the other stays
    assert env.queues[target] == [queue[1]] and env.queues[a] == [queue[0]]
    assert all(not torch.equal(env.models.flat(t), before[t]) for t in (0, 1))  # both trained


def test_a_token_whose_send_is_lost_stays_with_its_sender_untrained() -> None:
    env = GossipEnv(**{**RELAY, "link_failure_prob": 0.99})
    env.reset(seed=0)
    a, b = env.holders
    target = next(p for p in range(5) if p not in (a, b))
    before = env.models.flat(0).clone(), env.models.flat(1).clone()
    _, _, _, _, infos = env.step({**_keep(env), f"peer_{a}": target})
    assert not infos[f"peer_{a}"]["delivered"] and env.holders == [a, b] and env.comm_cost > 0
    assert torch.equal(env.models.flat(0), before[0]) and not torch.equal(env.models.flat(1), before[1])


def test_every_token_starts_from_the_same_weights_and_the_baselines_play_it() -> None:
    from hlgym.agents.gossip import BASELINES, GossipOracle, evaluate

    env = GossipEnv(**{**RELAY, "tokens": 5, "goal": 1.0})
    env.reset(seed=2)
    assert sorted(env.holders) == list(range(5))
    assert all(torch.equal(env.models.flat(t), env.models.flat(0)) for t in range(5))
    for name in ("random", "nearest", "power_of_choice"):
        (episode,) = evaluate(BASELINES[name](), GossipEnv(**RELAY, goal=1.0), 1, 10_000)
        assert episode.rounds == 4 and all(len(sends) <= 2 for sends in episode.sends)  # two holders at most
    env = GossipEnv(**RELAY, goal=1.0)
    oracle = GossipOracle(env, width=2, samples=3)
    played = evaluate(oracle, env, 1, 10_000)[0]
    replay = GossipEnv(**RELAY, goal=1.0)
    replay.reset(seed=10_000)
    for actions in oracle.route:
        replay.step(actions)
    assert len(oracle.route) == 4 and played.team_accuracy == replay.team_accuracy
