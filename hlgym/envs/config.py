"""PeerSelectionConfig: every setting of the environment, typed and validated."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from hlgym.envs import components, observation, threads
from hlgym.envs.checks import choice, fail, flag, integer, real
from hlgym.envs.components import ComponentFields, ComponentRef
from hlgym.envs.datasets import DATASETS
from hlgym.envs.observation import OBSERVATIONS
from hlgym.envs.partition import PARTITIONS
from hlgym.envs.tasks import SPEC_KEYS, TaskSpec
from hlgym.envs.topology import TOPOLOGIES, validate_matrix
from hlgym.models.training import MODELS, OPTIMIZERS
from hlgym.models.work import EVAL_PRECISIONS

Matrix = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class PeerSelectionConfig(ComponentFields):
    """Settings of :class:`hlgym.envs.PeerSelectionEnv`.

    The core's fields (:class:`~hlgym.envs.fields.CoreFields`: data, topology, inner model,
    reward, observation), each built-in component's (:mod:`hlgym.envs.components`: transfer
    modes, faults, scenarios), then the task
    distribution, the plug-in components and the device. Validated on construction: a bad
    value raises ``ValueError`` naming the field, the value and what is accepted. Build
    variants with :meth:`replace`.
    """

    # --- task distribution (hlgym.envs.tasks; README "Meta-learning across tasks") ----------
    tasks: TaskSpec | None = None
    """None (one task: this config), or a task distribution: a dict with ``max_peers``,
    ``split`` (``"train"``, ``"held_out"`` or a family's name), ``train`` and ``held_out``
    (lists of families: a ``name`` and config fields, each a value or ``{"choice": [...]}``).
    Every reset of :class:`~hlgym.envs.TaskDistributionEnv` draws a family of the split and a
    task of it; this config's other fields are every task's defaults. Held as a
    :class:`~hlgym.envs.tasks.TaskSpec`; ``observation="peer_features"`` only."""

    # --- plug-in components (hlgym.envs.components; docs/components.md) ----------------------
    components: Sequence[ComponentRef | str | Mapping[str, Any]] = ()
    """Components of your own, after the built-ins: each ``"package.module:Class"`` (a
    subclass of :class:`~hlgym.envs.components.Component`), a name given to
    :func:`hlgym.envs.components.register`, or ``{"name": ..., **params}`` whose other keys
    fill the class's ``params_type``. Plain JSON in a spec; held as a tuple of
    :class:`~hlgym.envs.components.ComponentRef`."""

    # --- execution -------------------------------------------------------------------------
    device: str = "cpu"
    """Torch device of data and models, e.g. ``"cpu"`` or ``"cuda"``."""
    eval_precision: str = "float32"
    """The arithmetic of the test-set evaluation (the reward's accuracy): ``"float32"``, or
    ``"bfloat16"`` (opt-in: autocast, fast on CPUs with AVX512-BF16 or AMX; training and the
    probes stay float32; its speed and fidelity: docs/speed.md)."""
    threads: int | str = "auto"
    """Intra-op threads of the env's own compute, set only while its reset and step run:
    ``"auto"`` (one for the MLP models; the CNN on torch's setting, one in a vector env's
    worker process; :mod:`hlgym.envs.threads`) or an integer >= 1. Results do not depend on
    it beyond float rounding."""

    def __post_init__(self) -> None:
        for f in fields(self):  # NumPy scalars (a parameter sweep's values) held as Python's: plain JSON
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                object.__setattr__(self, f.name, value.item())
        if not isinstance(self.topology, str):
            object.__setattr__(self, "topology", _as_matrix(self.topology, self.n_peers))
        for f in fields(self):  # JSON gives lists; the config holds tuples (hashable)
            if isinstance(f.default, tuple) and isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        refs = self.components
        if not isinstance(refs, tuple):
            fail("components", refs, "a list of 'package.module:Class' names or {'name': ..., **params} dicts")
        object.__setattr__(
            self, "components", tuple(ComponentRef.from_json(r, f"components[{i}]") for i, r in enumerate(refs))
        )
        if self.tasks is not None and not isinstance(self.tasks, TaskSpec):
            object.__setattr__(self, "tasks", TaskSpec.from_dict(self.tasks))
        _validate(self)

    def replace(self, **overrides: Any) -> PeerSelectionConfig:
        """A copy with some fields changed; an unknown name raises :class:`FieldNameError`
        (a ``TypeError``) with the nearest names. ``tasks.<key>`` (``tasks.split``,
        ``tasks.max_peers``, ...) changes one key of a task distribution's spec, as does a
        ``tasks`` dict that holds only some of the spec's keys (``tasks={"split": "held_out"}``)."""
        nested = {k.partition(".")[2]: overrides.pop(k) for k in list(overrides) if k.startswith("tasks.")}
        given = overrides.get("tasks")
        if isinstance(given, Mapping) and self.tasks is not None:
            # A partial spec changes those keys of this config's ({"split": "held_out"});
            # a whole one (all four keys) replaces it.
            unknown = [k for k in given if k not in SPEC_KEYS]
            if unknown:
                raise FieldNameError(f"'tasks.{unknown[0]}' is not a key of tasks; accepted: {', '.join(SPEC_KEYS)}")
            overrides["tasks"] = {**self.tasks.to_dict(), **given}
        elif isinstance(given, Mapping) and given and "train" not in given:
            raise ValueError(
                f"tasks={dict(given)!r} is not accepted: this config has no task spec to change; accepted: a whole "
                "spec (max_peers, split, train, held_out), or a partial one on a task distribution's config"
            )
        if nested:
            current = overrides.get("tasks", self.tasks)
            if current is None:
                key = next(iter(nested))
                raise ValueError(
                    f"tasks.{key}={nested[key]!r} is not accepted: the config has no tasks; accepted: tasks.<key> "
                    "on a task distribution (hlgym/TaskDistribution-v0)"
                )
            spec = TaskSpec.from_dict(current).to_dict()
            for key, value in nested.items():
                if key not in SPEC_KEYS:
                    raise FieldNameError(f"'tasks.{key}' is not a key of tasks; accepted: {', '.join(SPEC_KEYS)}")
                spec[key] = value
            overrides["tasks"] = spec
        check_field_names(overrides)
        return dataclasses.replace(self, **overrides)

    def max_episode_steps(self) -> int:
        """The most agent steps an episode takes: ``max_rounds``, less the round
        ``first_round_at_start`` plays inside ``reset``; with ``tasks``, the most any task of
        either split takes. Registered as the id's ``max_episode_steps`` (Gymnasium's
        ``TimeLimit`` then never cuts an episode the env would go on with)."""
        if self.tasks is None:
            return self.max_rounds - int(self.first_round_at_start is True)
        one = dataclasses.replace(self, tasks=None)
        tasks = (task for family in self.tasks.train + self.tasks.held_out for task in family.tasks())
        return max(dataclasses.replace(one, **task).max_episode_steps() for task in tasks)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeerSelectionConfig:
        """The config :meth:`to_dict` wrote (or any mapping of field names to values);
        unknown names raise a ``TypeError`` that lists the accepted ones."""
        check_field_names(data)
        return cls(**data)

    def to_dict(self, changed_only: bool = False) -> dict[str, Any]:
        """The settings as JSON-ready values (the matrix as nested lists); with
        ``changed_only``, only those that differ from the embedded default
        (``from_dict`` of either gives this config back)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if not isinstance(self.topology, str):
            out["topology"] = [list(row) for row in self.topology]
        for name, value in out.items():
            if isinstance(value, tuple) and name != "topology":
                out[name] = list(value)
        out["components"] = [ComponentRef.from_json(ref).to_json() for ref in self.components]
        out["tasks"] = None if self.tasks is None else self.tasks.to_dict()
        if changed_only:
            default = PeerSelectionConfig()
            out = {k: v for k, v in out.items() if getattr(self, k) != getattr(default, k)}
        return out


def make_config(config: PeerSelectionConfig | Mapping[str, Any] | None = None, **overrides: Any) -> PeerSelectionConfig:
    """``config`` (default: the embedded default; a mapping is read by
    :meth:`PeerSelectionConfig.from_dict`, as registered specs hold it) with ``overrides``."""
    if config is None:
        base = PeerSelectionConfig()
    elif isinstance(config, PeerSelectionConfig):
        base = config
    elif isinstance(config, Mapping):
        base = PeerSelectionConfig.from_dict(config)
    else:
        raise TypeError(
            f"config={config!r} is not accepted; accepted: a PeerSelectionConfig, a dict of its fields, or None"
        )
    return base.replace(**overrides)


def warn_if_longer(
    config: PeerSelectionConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any], built: PeerSelectionConfig
) -> None:
    """Warn when keywords given to ``gymnasium.make`` (``overrides`` of a registered id's
    ``config`` dict) make episodes longer than the id's registered ``max_episode_steps``:
    ``make``'s ``TimeLimit`` would truncate them there, unless ``max_episode_steps`` is
    given to ``make`` too (which the env cannot see)."""
    if not overrides or not isinstance(config, Mapping):
        return  # no keywords, or a config object or None: not a registered spec's kwargs
    registered = PeerSelectionConfig.from_dict(config).max_episode_steps()
    steps = built.max_episode_steps()
    if steps > registered:
        from gymnasium import logger

        logger.warn(
            f"episodes of this config take up to {steps} steps, more than the id's registered "
            f"max_episode_steps={registered}: gymnasium.make's TimeLimit truncates them at {registered} unless "
            f"gymnasium.make gets max_episode_steps={steps} too"
        )


def field_names() -> list[str]:
    """The public field names of :class:`PeerSelectionConfig`."""
    return [f.name for f in fields(PeerSelectionConfig)]


class FieldNameError(TypeError):
    """A name that is not a :class:`PeerSelectionConfig` field (a ``TypeError``, as Python
    raises for an unexpected keyword).

    ``gymnasium.make`` re-raises a ``TypeError`` from an env's constructor as
    ``type(e)(f"{e} was raised from the environment creator for {id} with kwargs ({kwargs})")``:
    every keyword, for a task distribution its whole spec (about 1,500 characters). This
    class keeps the message and the id and drops the dump.
    """

    _GYMNASIUM_SUFFIX = " was raised from the environment creator for "

    def __init__(self, message: str) -> None:
        head, sep, tail = message.partition(self._GYMNASIUM_SUFFIX)
        if sep:
            env_id = tail.partition(" with kwargs (")[0]
            message = f"{head} (gymnasium.make({env_id!r}))"
        super().__init__(message)


def check_field_names(names: Iterable[str]) -> None:
    """Raise :class:`FieldNameError` for any name that is not a config field, with the
    nearest field names and where every field is described."""
    known = field_names()
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            also = f" also near: {', '.join(close[1:])}" if len(close) > 1 else ""
            hint = f" (did you mean {close[0]!r}?{also})" if close else ""
            raise FieldNameError(
                f"{name!r} is not a PeerSelectionConfig field{hint}; every field: "
                "help(hlgym.envs.PeerSelectionConfig) or the docs' API page"
            )


def _as_matrix(value: Any, n_peers: int) -> Matrix:
    if isinstance(value, Sequence | torch.Tensor) or hasattr(value, "__array__"):
        d = validate_matrix(value, n_peers)
        return tuple(tuple(float(v) for v in row) for row in d)
    raise ValueError(
        f"topology={value!r} is not accepted; accepted: {', '.join(repr(t) for t in TOPOLOGIES)} "
        "or an n_peers x n_peers distance matrix"
    )


def _validate(cfg: PeerSelectionConfig) -> None:
    choice(cfg, "dataset", DATASETS)
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
        fail("data_dir", cfg.data_dir, "a folder path (str) or None")
    integer(cfg, "n_peers", 2)
    choice(cfg, "partition", PARTITIONS)
    integer(cfg, "main_samples", 1)
    integer(cfg, "other_samples", 0)
    if cfg.samples_per_peer is not None:
        integer(cfg, "samples_per_peer", 1)
    real(cfg, "dirichlet_alpha", "a number > 0", lambda v: v > 0)
    integer(cfg, "classes_per_peer", 1)
    if isinstance(cfg.topology, str):
        choice(cfg, "topology", TOPOLOGIES)
    real(cfg, "topology_scale", "a number > 0", lambda v: v > 0)
    choice(cfg, "model", MODELS)
    integer(cfg, "hidden_units", 1)
    choice(cfg, "optimizer", OPTIMIZERS)
    real(cfg, "lr", "a number > 0", lambda v: v > 0)
    real(cfg, "adam_eps", "a number > 0", lambda v: v > 0)
    integer(cfg, "local_epochs", 1)
    integer(cfg, "batch_size", 1)
    for name in ("per_peer_optimizer", "first_round_at_start"):
        flag(cfg, name)
    real(cfg, "goal", "a number in (0, 1]", lambda v: 0 < v <= 1)
    real(cfg, "reward_base", "a number > 1", lambda v: v > 1)
    real(cfg, "cost_weight", "a number >= 0", lambda v: v >= 0)
    integer(cfg, "max_rounds", 1 + int(cfg.first_round_at_start is True))
    integer(cfg, "start_peer", 0, cfg.n_peers - 1)
    choice(cfg, "observation", OBSERVATIONS)
    if cfg.observation == "hl_pca":
        integer(cfg, "pca_components", 1, cfg.n_peers)
    integer(cfg, "probe_size", 1)
    if cfg.eval_samples is not None:
        integer(cfg, "eval_samples", 1)
    components.validate(cfg)
    _validate_tasks(cfg)
    choice(cfg, "eval_precision", EVAL_PRECISIONS)
    n = cfg.threads
    if n != threads.AUTO and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        fail("threads", n, "'auto' or an integer >= 1")
    try:
        torch.device(cfg.device)
    except (RuntimeError, TypeError):
        fail("device", cfg.device, "a torch device such as 'cpu', 'cuda' or 'cuda:0'")


def _validate_tasks(cfg: PeerSelectionConfig) -> None:
    """Every task a family can draw is a valid config with at most ``max_peers`` peers and
    the same observation columns as the others."""
    spec = cfg.tasks
    if spec is None:
        return
    if cfg.observation != "peer_features":
        fail("observation", cfg.observation, "'peer_features' with tasks (its rows are padded to max_peers)")
    columns: dict[tuple[str, ...], str] = {}
    for family in spec.train + spec.held_out:
        for name in family.fields():
            if name in ("tasks", "observation"):
                raise ValueError(f"tasks family {family.name!r}: the field {name!r} is not accepted in a family")
            check_field_names([name])
        for task in family.tasks():
            try:
                one = dataclasses.replace(cfg, tasks=None, **task)
            except ValueError as exc:
                raise ValueError(f"tasks family {family.name!r}: {exc}") from exc
            if one.n_peers > spec.max_peers:
                raise ValueError(
                    f"tasks family {family.name!r}: n_peers={one.n_peers} is not accepted; accepted: at most "
                    f"tasks.max_peers={spec.max_peers}"
                )
            names = observation.columns(one)
            columns.setdefault(names, family.name)
    if len(columns) > 1:
        (a, fa), (b, fb) = list(columns.items())[:2]
        raise ValueError(
            f"tasks: family {fa!r} observes {', '.join(a)} but {fb!r} observes {', '.join(b)}; accepted: families "
            "whose tasks have the same observation columns (a scenario in all or none)"
        )


def parse_pairs(pairs: Sequence[str], option: str = "--env-kwargs") -> dict[str, Any]:
    """Turn ``["goal=0.7", "model=cnn"]`` into a dict of typed values.

    Values are read as JSON where they parse (numbers, ``true``, ``null``, lists), else
    as strings (``True``/``False``/``None`` as Python spells them).

    Raises:
        ValueError: If an item has no ``=`` (the message names ``option``).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} item {pair!r} is not accepted; accepted: key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = {"True": True, "False": False, "None": None}.get(raw, raw)
        out[key] = value
    return out


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``["goal=0.7", "model=cnn"]`` into typed overrides of the config
    (:func:`parse_pairs`); the config's validation then checks the values.

    Raises:
        ValueError: If an item has no ``=``.
        TypeError: If a key is not a config field.
    """
    out = parse_pairs(pairs)
    check_field_names(k for k in out if not k.startswith("tasks."))  # tasks.<key>: checked by replace
    return out
