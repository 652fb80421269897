"""The env's intra-op threads (hlgym.envs.threads): chosen per model, set only inside reset
and step, one per worker process, and results that do not depend on them."""

from __future__ import annotations

import dataclasses
import multiprocessing
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import hlgym  # noqa: F401  (registers the ids)
from hlgym.envs import Episode, PeerSelectionConfig, threads
from hlgym.envs.rounds import model_spec
from hlgym.models.batched import StackedModels
from hlgym.models.work import ModelList


def test_auto_is_one_thread_for_the_mlp_and_torchs_for_the_cnn() -> None:
    assert threads.count("auto", "mlp") == 1
    assert threads.count("auto", "cnn") is None  # torch's setting, as the process left it
    assert threads.count(3, "mlp") == 3 and threads.count(1, "cnn") == 1


def test_a_worker_process_gets_one_thread() -> None:
    assert not threads.in_worker()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(threads.in_worker) is True
        assert pool.apply(threads.count, ("auto", "cnn")) == 1


def test_the_count_holds_inside_reset_and_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    real = torch.set_num_threads

    def recorded(n: int) -> None:
        seen.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", recorded)
    env = gym.make("hlgym/PeerSelection-v0", max_rounds=3, threads=2 if before == 1 else 1)
    env.reset(seed=0)
    env.step(1)
    assert torch.get_num_threads() == before  # the caller's setting, untouched
    inner = 2 if before == 1 else 1
    assert seen == [inner, before, inner, before]  # set for reset, restored; set for step, restored


def test_results_do_not_depend_on_the_threads() -> None:
    def accuracies(n: int) -> list[float]:
        env = gym.make("hlgym/PeerSelection-v0", max_rounds=6, goal=1.0, threads=n)
        env.reset(seed=4)
        return [float(env.step(k % 10)[4]["accuracy"]) for k in range(6)]

    np.testing.assert_array_equal(accuracies(1), accuracies(2))


@pytest.mark.parametrize("value", ["many", 0, True, 1.5])
def test_bad_threads_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"^threads=.* is not accepted; accepted: 'auto' or an integer >= 1$"):
        PeerSelectionConfig(threads=value)  # type: ignore[arg-type]


def test_bfloat16_evaluation_is_opt_in_and_close_to_float32() -> None:
    def accuracies(**kw: Any) -> list[float]:
        env = gym.make("hlgym/PeerSelection-v0", max_rounds=6, goal=1.0, **kw)
        env.reset(seed=4)
        return [float(env.step(k % 10)[4]["accuracy"]) for k in range(6)]

    exact, fast = accuracies(), accuracies(eval_precision="bfloat16")
    assert PeerSelectionConfig().eval_precision == "float32"
    # The reward's accuracy only is evaluated in bfloat16 (training stays float32, so the models
    # are the same): a sample near the decision boundary may flip.
    np.testing.assert_allclose(fast, exact, atol=0.02)
    envs = gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, max_rounds=6, goal=1.0, eval_precision="bfloat16")
    envs.reset(seed=4)
    _, _, _, _, infos = envs.step(np.array([0, 0]))
    np.testing.assert_allclose(infos["accuracy"][0], fast[0], atol=0.02)
    # The precision is applied: the same models' test-set losses differ from float32's, in the
    # single and the stacked model work (a setting that changed nothing would leave them equal).
    config = PeerSelectionConfig()
    data = Episode.load_data(config)
    for work in (ModelList, StackedModels.from_spec):
        losses = []
        for name in ("float32", "bfloat16"):
            models = work(dataclasses.replace(model_spec(config, data), eval_precision=name), 1)
            models.initialize([0], [torch.Generator().manual_seed(0)])
            losses.append(models.per_sample_loss([0], data.x_eval, data.y_eval)[0])
        assert not torch.equal(losses[0], losses[1]), work
        torch.testing.assert_close(losses[0], losses[1], atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match=r"^eval_precision='fp16' is not accepted; accepted: 'float32', 'bfloat16'$"):
        PeerSelectionConfig(eval_precision="fp16")
