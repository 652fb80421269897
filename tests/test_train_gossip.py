"""hlgym-train on a multi-agent id: the shared PPO's run folder, held-out evaluation against
the gossip baselines, --seeds, --resume, --evaluate-model, plots and one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("pettingzoo") is None and os.environ.get("HLGYM_TEST_MULTIAGENT") != "1":
    pytest.skip("PettingZoo (the multiagent extra) is not installed", allow_module_level=True)

from hlgym import train
from hlgym.agents.gossip import BASELINES, RandomNeighbourPolicy, evaluate
from hlgym.envs.gossip import GossipEnv
from hlgym.runs import RunFolder, read_episodes

# .ci/run's multiagent leg runs this file with SuperSuit (HLGYM_TEST_MULTIAGENT=1: no skip).
NEEDS_SUPERSUIT = pytest.mark.skipif(
    importlib.util.find_spec("supersuit") is None and os.environ.get("HLGYM_TEST_MULTIAGENT") != "1",
    reason="SuperSuit (the multiagent extra) is not installed",
)
# Four peers, three rounds: a PPO rollout (n_steps 64 x 4 agents) is 64 rounds.
SMALL = ["--env", "hlgym/Gossip-v0", "--env-kwargs", "n_peers=4", "max_rounds=3", "--no-progress"]


def _main(*argv: str) -> dict[str, Any]:
    return train.main([*SMALL, *argv])


def test_a_baseline_runs_over_seeds_with_the_team_records(tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = _main("--algo", "nearest", "--seeds", "0", "1", "--eval-episodes", "2", "--out", str(out))
    assert set(results) == {"nearest", *BASELINES}
    summary = json.loads((out / "results.json").read_text())
    assert summary["kind"] == "across_seeds" and summary["env_id"] == "hlgym/Gossip-v0"
    assert set(summary["policies"]) == {"nearest", *BASELINES}
    assert summary["policies"]["random"]["summary"]["rounds"]["n"] == 2
    # A record is the team's: its accuracy the team accuracy, its sends every agent's.
    played = evaluate(RandomNeighbourPolicy(seed=0), GossipEnv(n_peers=4, max_rounds=3, goal=0.872), 2, 10_000)
    records = RunFolder(out / "seed_0").read_evaluations()["random"].records
    assert [r.to_dict() for r in records] == [e.record().to_dict() for e in played]
    first = records[0]
    assert first.route == [] and len(first.sends) == first.rounds == len(first.hop_costs)
    assert first.accuracy == played[0].team_curve and first.comm_cost == pytest.approx(sum(first.hop_costs))
    assert (out / "seed_0" / "plots" / "sends_nearest.png").is_file()
    assert (out / "plots" / "seeds.png").is_file()


@NEEDS_SUPERSUIT
def test_shared_ppo_trains_into_a_run_folder_and_its_model_evaluates_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    results = _main("--timesteps", "256", "--eval-episodes", "2", "--out", str(out))
    assert set(results) == {"ppo", *BASELINES}
    run = RunFolder(out)
    config = run.read_config()
    assert config["env_kwargs"] == {"transfer": "average", "goal": 0.872, "n_peers": 4, "max_rounds": 3}
    assert config["args"]["policy"] == "attention" and config["hyperparams"]["n_steps"] == 64
    rows = read_episodes(out)
    # One training episode per team episode: 64 rounds of 3 -> 21 episodes, 12 agent steps each.
    assert len(rows) == 21 and rows[0]["timesteps"] == 12 and {r["rounds"] for r in rows} == {3}
    assert all(0 <= r["final_accuracy"] <= 1 for r in rows)
    assert run.read_results()["timesteps"] == 256 and (out / "model.zip").is_file()
    assert (out / "plots" / "sends_ppo.png").is_file() and (out / "plots" / "training.png").is_file()
    again = _main("--evaluate-model", str(out / "model.zip"), "--eval-episodes", "2", "--out", str(tmp_path / "e"))
    assert [r.to_dict() for r in again["ppo"].records] == [r.to_dict() for r in results["ppo"].records]
    # The attention policy takes any number of peers: the model trained at 4 plays at 6.
    bigger = _main(
        *("--evaluate-model", str(out / "model.zip"), "--eval-episodes", "1", "--out", str(tmp_path / "six")),
        *("--env-kwargs", "n_peers=6", "max_rounds=3"),
    )
    assert all(len(sends) <= 6 for sends in bigger["ppo"].records[0].sends)


@NEEDS_SUPERSUIT
def test_a_killed_training_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    commit = RunFolder.commit_checkpoint

    def commit_then_die(self: RunFolder, *args: Any, **kwargs: Any) -> Path:
        commit(self, *args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after the first checkpoint

    monkeypatch.setattr(RunFolder, "commit_checkpoint", commit_then_die)
    argv = ["--timesteps", "512", "--checkpoint-every", "200", "--eval-episodes", "1", "--out", str(out)]
    with pytest.raises(KeyboardInterrupt):
        _main(*argv)
    manifest = RunFolder(out).latest_checkpoint()
    assert manifest is not None and manifest["timesteps"] == 200  # counted in agent steps, 4 a round
    before = read_episodes(out)[: manifest["episodes"]]
    monkeypatch.setattr(RunFolder, "commit_checkpoint", commit)
    train.main(["--resume", "--out", str(out), "--no-progress"])
    after = read_episodes(out)
    assert after[: len(before)] == before and after[-1]["timesteps"] >= 512  # whole rollouts
    assert RunFolder(out).read_results()["timesteps"] == 512


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (the ray extra)")
def test_rllib_multi_agent_ppo_shares_one_module_resumes_and_its_model_evaluates(tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["--backend", "rllib", "--num-env-runners", "1", "--eval-episodes", "1", "--out", str(out)]
    results = _main(*base, "--timesteps", "200")
    assert set(results) == {"ppo", *BASELINES}
    run = RunFolder(out)
    manifest = run.latest_checkpoint()
    # One update: n_steps 64 rounds of 4 agents = 256 agent steps (the budget of 200 ends there).
    assert manifest is not None and manifest["backend"] == "rllib" and manifest["timesteps"] == 256
    rows = read_episodes(out)
    assert len(rows) == manifest["episodes"] == 21 and {r["rounds"] for r in rows} == {3}
    assert run.read_results()["backend"] == "rllib" and (out / "model.pt").is_file()
    train.main(["--out", str(out), "--resume", "--timesteps", "512", "--no-progress"])
    manifest = run.latest_checkpoint()
    assert manifest is not None and manifest["timesteps"] == 512
    assert read_episodes(out)[: len(rows)] == rows and len(read_episodes(out)) == manifest["episodes"]
    # The saved module plays without Ray's training: every agent decides with it.
    evaluated = _main(
        "--backend",
        "rllib",
        "--evaluate-model",
        str(out / "model.pt"),
        "--eval-episodes",
        "1",
        "--out",
        str(tmp_path / "e"),
    )
    assert evaluated["ppo"].records[0].rounds == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "dqn"], "--algo 'dqn' is not accepted with --env hlgym/Gossip-v0; accepted: ppo, random"),
        (["--backend", "rllib", "--algo", "keep"], "--backend rllib is not accepted with --algo 'keep'; accepted: "),
        (["--backend", "rllib", "--policy", "mlp"], "--policy mlp is not accepted with --backend rllib"),
        (["--backend", "ray"], "--backend 'ray' is not accepted; accepted: sb3, rllib"),
        (["--pretrain", "oracle"], "--pretrain is not accepted with the multi-agent --env hlgym/Gossip-v0"),
        (["--policy", "lstm"], "--policy lstm is not accepted with --env hlgym/Gossip-v0; accepted: attention, mlp"),
        (["--env-kwargs", "transfer=relay"], "tokens=None is not accepted by GossipEnv; accepted: an integer 1..10"),
        (["--env-kwargs", "tokens=2"], "tokens=2 is not accepted by GossipEnv; accepted: None with transfer='average'"),
        (["--env-kwargs", "team_goal=max"], "team_goal='max' is not accepted by GossipEnv; accepted: 'mean', 'min'"),
        (["--env-kwargs", "colour=1"], "GossipEnv's own keywords: tokens, team_goal, agent_reward, batched"),
        (["--algo", "random", "--agent-kwargs", "d=2"], "--agent-kwargs for --algo 'random'"),
        (["--algo", "ppo", "--agent-kwargs", "d=2"], "--agent-kwargs is not accepted with --algo ppo"),
        (["--eval-seed", "0"], "--eval-seed 0 is not accepted: evaluation seeds 0..19 overlap the training seeds"),
        (["--algo", "keep", "--evaluate-model", "m.zip"], "--evaluate-model needs a trained --algo; accepted: ppo"),
        (["--n-envs", "0"], "--n-envs 0 is not accepted; accepted: an integer >= 1"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_any_file(
    tmp_path: Path, argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--env", "hlgym/Gossip-v0", *argv, "--out", "run"])
    text = str(exit_.value)
    assert message in text and "\n" not in text
    assert not (tmp_path / "run").exists()


def test_training_without_supersuit_is_refused_after_the_options_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "supersuit" else find_spec(name, *a)
    )
    with pytest.raises(
        SystemExit, match=r"^--algo ppo on --env hlgym/Gossip-v0 needs SuperSuit, which is not installed: pip install"
    ):
        train.main(["--env", "hlgym/Gossip-v0", "--out", "run"])
    with pytest.raises(SystemExit, match="tokens=None is not accepted by GossipEnv"):
        train.main(["--env", "hlgym/Gossip-v0", "--env-kwargs", "transfer=relay", "--out", "run"])
    train.main([*SMALL, "--algo", "keep", "--eval-episodes", "1", "--out", "run"])  # playing needs none
    assert (tmp_path / "run" / "results.json").exists()


def test_an_unknown_id_names_the_multi_agent_ones_too() -> None:
    with pytest.raises(SystemExit, match=r"accepted: .*hlgym/PeerSelection-v0.*hlgym/Gossip-v0"):
        train.main(["--env", "hlgym/Gossip-v9"])


@NEEDS_SUPERSUIT  # resolve refuses --algo ppo without it
def test_the_one_token_id_ships_a_larger_budget() -> None:
    from hlgym import train_gossip
    from hlgym.options import parse_args

    def timesteps(*argv: str) -> int | None:
        return train_gossip.resolve(parse_args(list(argv)))[0].timesteps

    # One holder decides a round there: 400,000 agent steps are 40,000 decisions.
    assert timesteps("--env", "hlgym/Gossip-Relay-v0") == train_gossip.ID_TIMESTEPS["hlgym/Gossip-Relay-v0"] == 400_000
    assert timesteps("--env", "hlgym/Gossip-v0") == timesteps("--env", "hlgym/Gossip-Distill-v0") == 40_000
    assert timesteps("--env", "hlgym/Gossip-Relay-v0", "--timesteps", "512") == 512
