"""Task families: what a task-distribution env draws a task from at every reset.

A family is plain JSON: a ``name`` and fields of :class:`~hlgym.envs.PeerSelectionConfig`,
each a value or ``{"choice": [v1, v2, ...]}`` (one drawn uniformly per task)::

    {"name": "dirichlet", "partition": "dirichlet", "n_peers": {"choice": [5, 10, 15]},
     "dirichlet_alpha": {"choice": [0.3, 1.0]}, "topology": "euclidean", "goal": 0.8}

A :class:`TaskSpec` (the config's ``tasks`` field) holds the train families, the held-out
families (never the same name, never the same fields as a train family), ``max_peers`` (the
fixed size of the spaces) and ``split``: which families a reset draws from (``"train"``,
``"held_out"`` or one family's name). This module parses and draws; the config checks every
task a family can draw (``hlgym.envs.config``) and :class:`~hlgym.envs.TaskDistributionEnv`
plays them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CHOICE", "SPEC_KEYS", "SPLITS", "TaskFamily", "TaskSpec"]

CHOICE = "choice"
SPLITS = ("train", "held_out")
SPEC_KEYS = ("max_peers", "split", "train", "held_out")


def _freeze(value: Any) -> Any:
    """Lists (JSON's) as tuples, so a spec is hashable like the rest of the config."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class TaskFamily:
    """A named set of tasks: fixed config fields and fields drawn from a list of choices.

    Attributes:
        name: The family's name (unique within a spec).
        fixed: ``(field, value)`` pairs every task of the family has.
        choices: ``(field, values)`` pairs; a task draws one value of each, uniformly.
    """

    name: str
    fixed: tuple[tuple[str, Any], ...]
    choices: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> TaskFamily:
        """Parse a family's JSON (``where`` names it in errors, e.g. ``tasks.train[0]``).

        Raises:
            ValueError: For a missing or bad name or an empty or malformed choice.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}={data!r} is not accepted; accepted: a dict with a name and config fields")
        name = data.get("name")
        if not isinstance(name, str) or not name or name in SPLITS:
            raise ValueError(
                f"{where}.name={name!r} is not accepted; accepted: a non-empty string other than {', '.join(SPLITS)}"
            )
        fixed, choices = [], []
        for key in sorted(k for k in data if k != "name"):
            value = data[key]
            if isinstance(value, Mapping):
                options = value.get(CHOICE)
                if set(value) != {CHOICE} or not isinstance(options, list | tuple) or not options:
                    raise ValueError(
                        f"{where}.{key}={value!r} is not accepted; accepted: a value, or "
                        "{'choice': [a non-empty list]}"
                    )
                choices.append((key, tuple(_freeze(v) for v in options)))
            else:
                fixed.append((key, _freeze(value)))
        return cls(name, tuple(fixed), tuple(choices))

    def to_dict(self) -> dict[str, Any]:
        """The family's JSON (``from_dict`` of it gives this family back)."""
        out: dict[str, Any] = {"name": self.name}
        out.update({k: _thaw(v) for k, v in self.fixed})
        out.update({k: {CHOICE: [_thaw(v) for v in vs]} for k, vs in self.choices})
        return out

    def fields(self) -> tuple[str, ...]:
        """Every config field the family sets."""
        return tuple(k for k, _ in self.fixed) + tuple(k for k, _ in self.choices)

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """One task's fields: the fixed ones and one draw per choice (in field order)."""
        task = {k: _thaw(v) for k, v in self.fixed}
        for key, options in self.choices:
            task[key] = _thaw(options[int(rng.integers(len(options)))])
        return task

    def tasks(self) -> Iterator[dict[str, Any]]:
        """Every task the family can draw (the product of its choices)."""
        keys = [k for k, _ in self.choices]
        for combo in itertools.product(*(vs for _, vs in self.choices)):
            yield {**{k: _thaw(v) for k, v in self.fixed}, **{k: _thaw(v) for k, v in zip(keys, combo, strict=True)}}


@dataclass(frozen=True)
class TaskSpec:
    """The families of a task distribution and which of them a reset draws from.

    Attributes:
        max_peers: Rows of the observation and actions: every task has at most this many peers.
        split: ``"train"``, ``"held_out"`` or the name of one family (of either set).
        train: The families a meta-policy trains on.
        held_out: The families it is evaluated on, never seen in training.
    """

    max_peers: int
    split: str
    train: tuple[TaskFamily, ...]
    held_out: tuple[TaskFamily, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Parse the config's ``tasks`` JSON (``max_peers``, ``split``, ``train``, ``held_out``).

        Raises:
            ValueError: Naming the key or family and what is accepted: unknown keys, no train
                family, a name used twice, a held-out family equal to a train family, an
                unknown split.
        """
        if isinstance(data, TaskSpec):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"tasks={data!r} is not accepted; accepted: None or a dict with {', '.join(SPEC_KEYS)}")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"tasks.{unknown[0]} is not accepted; accepted keys: {', '.join(SPEC_KEYS)}")
        max_peers = data.get("max_peers", 20)
        if not isinstance(max_peers, int) or isinstance(max_peers, bool) or max_peers < 2:
            raise ValueError(f"tasks.max_peers={max_peers!r} is not accepted; accepted: an integer >= 2")
        sets = {}
        for key in SPLITS:
            raw = data.get(key, [])
            if not isinstance(raw, list | tuple):
                raise ValueError(f"tasks.{key}={raw!r} is not accepted; accepted: a list of families")
            sets[key] = tuple(TaskFamily.from_dict(f, f"tasks.{key}[{i}]") for i, f in enumerate(raw))
        if not sets["train"]:
            raise ValueError("tasks.train=[] is not accepted; accepted: at least one family")
        names = [f.name for f in sets["train"] + sets["held_out"]]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"tasks: the family name {repeated[0]!r} is used twice; accepted: distinct names")
        for held in sets["held_out"]:
            for seen in sets["train"]:
                if (held.fixed, held.choices) == (seen.fixed, seen.choices):
                    raise ValueError(
                        f"tasks.held_out family {held.name!r} has the fields of train family {seen.name!r}; "
                        "accepted: held-out families that differ from every train family"
                    )
        split = data.get("split", "train")
        if split not in (*SPLITS, *names) or (split == "held_out" and not sets["held_out"]):
            raise ValueError(
                f"tasks.split={split!r} is not accepted; accepted: {', '.join((*SPLITS, *names))} (held_out needs "
                "a held-out family)"
            )
        return cls(max_peers, split, sets["train"], sets["held_out"])

    def to_dict(self) -> dict[str, Any]:
        """The spec's JSON."""
        return {
            "max_peers": self.max_peers,
            "split": self.split,
            "train": [f.to_dict() for f in self.train],
            "held_out": [f.to_dict() for f in self.held_out],
        }

    def families(self) -> tuple[TaskFamily, ...]:
        """The families a reset draws from (the split's)."""
        if self.split == "train":
            return self.train
        if self.split == "held_out":
            return self.held_out
        return tuple(f for f in self.train + self.held_out if f.name == self.split)

    def family(self, name: str) -> TaskFamily:
        """The family called ``name`` (of either set)."""
        return next(f for f in self.train + self.held_out if f.name == name)

    def key(self, family: TaskFamily, task: Mapping[str, Any]) -> str:
        """A task's identity (its family and fields, as JSON)."""
        return json.dumps([family.name, task], sort_keys=True)
