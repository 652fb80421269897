"""Registered specs travel as JSON; importing the package loads no trainer and no plotting."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
from gymnasium.envs.registration import EnvSpec

from hlgym.envs import PeerSelectionConfig, PeerSelectionEnv, TaskDistributionEnv
from hlgym.envs.registration import PRESETS

from .conftest import loaded_after, tiny_overrides


@pytest.mark.parametrize("env_id", list(PRESETS))
def test_spec_survives_json_and_makes_the_same_config(env_id: str) -> None:
    spec = gym.spec(env_id)
    json.dumps(spec.kwargs)  # plain values only
    restored = EnvSpec.from_json(spec.to_json())
    assert restored.kwargs == spec.kwargs
    overrides = tiny_overrides(env_id)
    a = gym.make(restored, **overrides).unwrapped
    b = gym.make(env_id, **overrides).unwrapped
    kind = TaskDistributionEnv if PRESETS[env_id].tasks is not None else PeerSelectionEnv
    assert isinstance(a, kind) and isinstance(b, kind)
    assert a.config == b.config == PRESETS[env_id].replace(**overrides)


def test_registered_kwargs_hold_only_what_differs_from_the_default() -> None:
    # Gymnasium repeats the kwargs in its error messages: a typo's message stays short.
    assert gym.spec("hlgym/PeerSelection-v0").kwargs == {"config": {}}
    for env_id, config in PRESETS.items():
        changed = config.to_dict(changed_only=True)
        assert PeerSelectionConfig.from_dict(changed) == config, env_id
    with pytest.raises(TypeError) as err:
        gym.make("hlgym/PeerSelection-v0", gaol=0.5)
    message = str(err.value)
    assert message.startswith("'gaol' is not a PeerSelectionConfig field (did you mean 'goal'?)")
    assert len(message.partition("with kwargs")[2]) < 60  # Gymnasium's dump: no whole config


def test_a_config_object_replaces_the_registered_one() -> None:
    cfg = PeerSelectionConfig(n_peers=4, goal=0.5)
    env = gym.make("hlgym/PeerSelection-v0", config=cfg).unwrapped
    assert isinstance(env, PeerSelectionEnv) and env.config == cfg


def test_config_dicts_are_checked_like_keywords() -> None:
    with pytest.raises(TypeError, match=r"'gaol' is not a PeerSelectionConfig field \(did you mean 'goal'\?\)"):
        PeerSelectionEnv(config={"gaol": 0.5})
    with pytest.raises(TypeError, match=r"config=3 is not accepted; accepted: a PeerSelectionConfig, a dict"):
        PeerSelectionEnv(config=3)  # type: ignore[arg-type]


def test_importing_the_package_loads_no_trainer_and_no_plotting() -> None:
    code = "import hlgym, hlgym.envs, gymnasium as gym\ngym.make('hlgym/PeerSelection-v0').reset(seed=0)"
    assert loaded_after(code, {"stable_baselines3", "sb3_contrib", "matplotlib"}) == set()
