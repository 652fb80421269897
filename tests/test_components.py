"""Components: the registry's order, plug-ins named in a config, their errors, and the layers."""

from __future__ import annotations

import ast
import copy
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import hlgym  # noqa: F401  (registers the ids)
from hlgym.envs import Component, PeerSelectionConfig, PeerSelectionEnv, components
from hlgym.envs.components.base import EpisodeState

ROOT = Path(__file__).resolve().parents[1]
SMALL: dict[str, Any] = {"max_rounds": 4}


class Quiet(Component):
    """Draws nothing and changes nothing: the built-ins' trajectories must not move."""

    name = "quiet"
    exposes = ("quiet_rounds",)

    def __init__(self, episode: EpisodeState, params: Any = None) -> None:
        super().__init__(episode, params)
        self.quiet_rounds = 0

    def after_round(self, rng: np.random.Generator) -> None:
        self.quiet_rounds += 1


@dataclass(frozen=True)
class ChurnParams:
    leave: float = 0.5


class Churn(Component):
    """Peers leave for a round with ``leave`` (the holder stays), and a column says who left."""

    name = "churn"
    params_type = ChurnParams
    columns = ("away",)

    def begin(self, rng: np.random.Generator) -> None:
        self.away = np.zeros(self.config.n_peers)

    def after_round(self, rng: np.random.Generator) -> None:
        left = rng.random(self.config.n_peers) < self.params.leave
        left[self.episode.holder] = False
        self.episode.online = self.episode.online & ~left
        self.away = left.astype(np.float64)

    def column(self, name: str) -> np.ndarray:
        return self.away


def _rollout(env: gym.Env[Any, Any], actions: list[int]) -> list[np.ndarray]:
    obs, _ = env.reset(seed=3)
    out = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        out.append(obs)
    return out


def test_builtins_run_in_the_declared_order() -> None:
    config = PeerSelectionConfig(transfer="logits", offline_prob=0.1, byzantine_peers=1, domain_shift="rotate")
    names = [cls.name for cls, _ in components.for_config(config)]
    assert names == ["logits", "offline_peers", "byzantine", "domain_shift"]
    assert [cls.name for cls, _ in components.for_config(PeerSelectionConfig())] == ["relay"]


def test_a_plugin_that_draws_nothing_leaves_the_trajectory_unchanged() -> None:
    plain = _rollout(PeerSelectionEnv(**SMALL), [3, 1, 4])
    env = PeerSelectionEnv(**SMALL, components=["tests.test_components:Quiet"])
    with_quiet = _rollout(env, [3, 1, 4])
    for a, b in zip(plain, with_quiet, strict=True):
        np.testing.assert_array_equal(a, b)
    assert env.quiet_rounds == 3  # exposed through the env
    assert env.episode.quiet_rounds == 3


def test_a_plugin_with_params_a_column_and_a_mask_runs_single_and_batched() -> None:
    spec = [{"name": "tests.test_components:Churn", "leave": 0.9}]
    env = gym.make("hlgym/PeerSelection-v0", components=spec, **SMALL)
    assert env.observation_space.shape == (10, 9)
    obs, info = env.reset(seed=0)
    obs, _, _, _, info = env.step(2)
    np.testing.assert_array_equal(obs[:, -1], 1.0 - info["action_mask"])  # the column is who left
    assert not info["action_mask"].all() and info["action_mask"][info["holder"]]
    envs = gym.make_vec("hlgym/PeerSelection-v0", num_envs=2, components=spec, **SMALL)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 10, 9)
    single = PeerSelectionEnv(components=spec, **SMALL)
    first, _ = single.reset(seed=0)
    np.testing.assert_allclose(obs[0], first)


def test_a_config_with_plugins_is_plain_json_and_round_trips() -> None:
    spec: list[Any] = ["tests.test_components:Quiet", {"name": "tests.test_components:Churn", "leave": 0.25}]
    config = PeerSelectionConfig(components=spec)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["components"] == spec
    assert PeerSelectionConfig.from_dict(data) == config
    assert config.to_dict(changed_only=True) == {"components": spec}


def test_an_env_with_a_plugin_pickles_and_deep_copies() -> None:
    env = PeerSelectionEnv(components=["tests.test_components:Quiet"], **SMALL)
    env.reset(seed=1)
    env.step(4)
    twin = copy.deepcopy(env)
    assert twin.quiet_rounds == 1
    np.testing.assert_array_equal(twin.step(5)[0], env.step(5)[0])
    restored = pickle.loads(pickle.dumps(twin))
    assert restored.quiet_rounds == 2
    np.testing.assert_array_equal(restored.step(1)[0], env.step(1)[0])


def test_register_names_a_plugin() -> None:
    components.register(Quiet, "quiet_for_tests")
    env = PeerSelectionEnv(components=["quiet_for_tests"], **SMALL)
    env.reset(seed=0)
    assert env.quiet_rounds == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nope", "components[0]='nope' is not accepted; accepted: 'package.module:Class' or a registered name"),
        ("no_such_module:X", "module 'no_such_module' cannot be imported"),
        ("tests.test_components:Missing", "module 'tests.test_components' has no 'Missing'"),
        ("tests.test_components:ChurnParams", "is not accepted; accepted: a subclass of hlgym.envs.components"),
        ("hlgym.envs.components.faults:OfflinePeers", "is a built-in component"),
        ({"name": "tests.test_components:Churn", "stay": 1}, "accepted parameters of Churn: leave"),
        ({"name": "tests.test_components:Quiet", "x": 1}, "no parameters: Quiet has no params_type"),
        (3, "components[0]=3 is not accepted"),
    ],
)
def test_a_bad_plugin_entry_is_refused_at_construction(entry: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        PeerSelectionConfig(components=[entry])
    assert message in str(err.value)


# ---------------------------------------------------------------------------- layers


def _imports(path: Path) -> set[str]:
    """The hlgym modules a file imports, type-only imports included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hlgym"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("hlgym"))
    return out


def _module_graph() -> dict[str, set[str]]:
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (ROOT / "hlgym").rglob("*.py")
    }
    return {name: {m for m in _imports(p) if m in files and m != name} for name, p in files.items()}


def test_no_import_circle_in_the_package() -> None:
    graph = _module_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # A package's __init__ re-exporting its submodules is not a circle.
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("hlgym.envs", ("hlgym.agents", "hlgym.runs", "hlgym.train", "hlgym.plots", "hlgym.records")),
        ("hlgym.models", ("hlgym.envs", "hlgym.agents", "hlgym.runs", "hlgym.records")),
        ("hlgym.records", ("hlgym.agents", "hlgym.runs", "hlgym.train", "hlgym.plots")),
        ("hlgym.runs", ("hlgym.agents", "hlgym.train", "hlgym.plots")),
    ],
)
def test_imports_point_down_the_layers(layer: str, forbidden: tuple[str, ...]) -> None:
    for name, targets in _module_graph().items():
        if name == layer or name.startswith(layer + "."):
            bad = sorted(t for t in targets if t.startswith(forbidden))
            assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("word", ["byzantine", "modality"])
def test_a_component_is_named_in_its_own_module_alone(word: str) -> None:
    """A component's name appears in its module, the registry and hlgym.envs' docs-facing
    __init__, nowhere else of envs/ and models/ (adding one edits no other module)."""
    files = [p for d in ("envs", "models") for p in (ROOT / "hlgym" / d).rglob("*.py") if word in p.read_text().lower()]
    names = sorted(str(p.relative_to(ROOT / "hlgym")) for p in files)
    assert len(names) <= 3, names
