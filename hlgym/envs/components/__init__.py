"""Components: every scenario, fault and transfer mode, and the registry that orders them.

========================  ==========================================  ======================
module                    component(s)                                turned on by
========================  ==========================================  ======================
``transfer``              ``Relay``, ``Average``, ``Distill``,        ``transfer`` (exactly
                          ``Logits``                                  one of them)
``faults``                ``OfflinePeers``, ``LinkFailures``          ``offline_prob``,
                                                                      ``link_failure_prob``
``byzantine``             ``ByzantinePeers``                          ``byzantine_peers``
``domain_shift``          ``DomainShift``                             ``domain_shift``
``modality``              ``ModalityViews``                           ``modality_split``
``insight``               ``ClassGap``, ``LossChange``: extra         the config's
                          observation columns (plug-ins)              ``components``
plug-ins                  a user's :class:`Component` subclass        the config's
                                                                      ``components``
========================  ==========================================  ======================

Each module owns its config fields (a dataclass that :class:`ComponentFields` gathers into
:class:`~hlgym.envs.PeerSelectionConfig`), their validation, its per-episode draws, what it
changes in a round, its observation columns, info keys, exposed attributes and render
colours (:mod:`hlgym.envs.components.base` lists the hooks). :data:`BUILTINS` is the order in
which an episode calls them, the order in which the episodes of every setting drew their
randomness before the components existed; plug-ins come after them, in the order the config
lists them, so adding one leaves every other draw where it was.

A plug-in is named in the config's ``components`` as ``"package.module:Class"`` (imported)
or by a name given to :func:`register`; an entry may be a dict, ``{"name": ..., **params}``,
whose other keys fill the class's ``params_type`` dataclass (docs/components.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from hlgym.envs import checks, partition
from hlgym.envs.components import byzantine, domain_shift, faults, insight, modality, transfer
from hlgym.envs.components.base import BYTES_PER_PARAM, Component, EpisodeState, Move, ProbeStats, Training
from hlgym.envs.components.transfer import TransferMode
from hlgym.envs.datasets import DeviceData
from hlgym.models.work import ModelFactory

__all__ = [
    "BUILTINS",
    "BYTES_PER_PARAM",
    "Component",
    "ComponentFields",
    "ComponentRef",
    "EpisodeState",
    "Move",
    "ProbeStats",
    "Training",
    "for_config",
    "register",
]


@dataclass(frozen=True)
class ComponentFields(
    modality.ModalityFields,
    domain_shift.DomainShiftFields,
    byzantine.ByzantineFields,
    faults.FaultFields,
    transfer.TransferFields,
):
    """Every built-in component's fields, after the core's (the bases' order, reversed, is
    the fields' order: transfer, faults, byzantine peers, domain shift, modality split)."""


BUILTINS: tuple[type[Component], ...] = (
    *transfer.MODES.values(),
    faults.OfflinePeers,
    faults.LinkFailures,
    byzantine.ByzantinePeers,
    domain_shift.DomainShift,
    modality.ModalityViews,
)
"""The built-in components in the order an episode calls them."""
_VALIDATORS = (transfer.validate, faults.validate, byzantine.validate, domain_shift.validate, modality.validate)
_SCENARIOS = (domain_shift.DomainShift, modality.ModalityViews)  # one at a time
_REGISTERED: dict[str, type[Component]] = {}
PRESETS: dict[str, dict[str, Any]] = {**modality.PRESETS}
"""Registered ids that a component declares with itself (id -> the config fields that differ
from the embedded default); :mod:`hlgym.envs.registration` registers them with the others."""


def register(cls: type[Component], name: str | None = None) -> type[Component]:
    """Make a plug-in component known by ``name`` (default: its ``name``), so a config's
    ``components`` can name it without its module path. Usable as a class decorator."""
    key = name or cls.name
    if not key or ":" in key:
        raise ValueError(f"name={key!r} is not accepted; accepted: a non-empty name without ':'")
    _check_class(cls, key)
    _REGISTERED[key] = cls
    return cls


@dataclass(frozen=True)
class ComponentRef:
    """A plug-in named in a config's ``components``: the class's name and its parameters.

    Attributes:
        name: ``"package.module:Class"`` or a name given to :func:`register`.
        params: The entry's other keys, as ``(key, value)`` pairs (JSON values).
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_json(cls, value: Any, where: str = "components") -> ComponentRef:
        """An entry of the config's ``components``: a name, or a dict with ``name`` and params."""
        if isinstance(value, ComponentRef):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping) and isinstance(value.get("name"), str):
            params = tuple((str(k), _frozen(v)) for k, v in value.items() if k != "name")
            return cls(value["name"], params)
        checks.fail(where, value, "'package.module:Class', a registered name, or {'name': ..., **params}")

    def to_json(self) -> str | dict[str, Any]:
        """The entry as plain JSON (the form :meth:`from_json` reads)."""
        if not self.params:
            return self.name
        return {"name": self.name, **{k: _thawed(v) for k, v in self.params}}

    def resolve(self, where: str = "components") -> tuple[type[Component], Any]:
        """The class and its parameters (an instance of its ``params_type``, or None).

        Raises:
            ValueError: For a name that imports no :class:`Component`, or parameters its
                ``params_type`` does not take (named as ``where``).
        """
        cls = _REGISTERED.get(self.name) or _import(self.name, where)
        _check_class(cls, where)
        kwargs = {k: _thawed(v) for k, v in self.params}
        if cls.params_type is None:
            if kwargs:
                checks.fail(where, self.to_json(), f"no parameters: {cls.__name__} has no params_type")
            return cls, None
        try:
            return cls, cls.params_type(**kwargs)
        except (TypeError, ValueError) as exc:
            accepted = [f.name for f in fields(cls.params_type)] if is_dataclass(cls.params_type) else []
            raise ValueError(
                f"{where}={self.to_json()!r} is not accepted: {exc}; accepted parameters of {cls.__name__}: "
                f"{', '.join(accepted) or 'none'}"
            ) from exc


def validate(config: Any) -> None:
    """Check every built-in's fields, that at most one scenario is on, and every plug-in."""
    for check in _VALIDATORS:
        check(config)
    on = [s for s in _SCENARIOS if s.active(config)]
    if len(on) > 1:
        first, second = on[0], on[1]
        checks.fail(
            first.switch,
            getattr(config, first.switch),
            f"None with {second.switch}={getattr(config, second.switch)!r} "
            f"(one scenario at a time: {first.title} or {second.title})",
        )
    for i, ref in enumerate(config.components):
        cls, _ = ref.resolve(f"components[{i}]")
        if cls.active(config):
            cls.validate(config)


def for_config(config: Any) -> list[tuple[type[Component], Any]]:
    """The active components of ``config`` with their parameters, in the order they run."""
    out: list[tuple[type[Component], Any]] = [(cls, None) for cls in BUILTINS if cls.active(config)]
    plugins = (ref.resolve(f"components[{i}]") for i, ref in enumerate(config.components))
    out += [(cls, params) for cls, params in plugins if cls.active(config)]
    return out


def transfer_mode(config: Any) -> type[TransferMode]:
    """The transfer mode ``config.transfer`` names."""
    return transfer.MODES[config.transfer]


def slots(config: Any) -> int:
    """Model slots an episode with ``config`` uses (its transfer mode's)."""
    return transfer_mode(config).slots(config)


def check_pool(config: Any, data: DeviceData) -> None:
    """Fail when ``config``'s split asks for more samples than ``data`` has, or a component
    draws more of the samples no peer holds than there are (at env construction)."""
    parts = partition.check(config, data.labels, data.n_classes)
    # Every partitioner leaves the same number of samples to no peer, whatever its draws.
    pool = partition.unassigned(data.labels.shape[0], parts).size
    for name, value in filter(None, (cls.pool_request(config) for cls, _ in for_config(config))):
        if value > pool:
            accepted = f"an integer in [1, {pool}]" if pool else "none: every training sample is a peer's"
            raise ValueError(
                f"{name}={value} is not accepted; accepted: {accepted} "
                f"(the training samples no peer holds under partition={config.partition!r}; "
                "samples_per_peer or fewer peers leave some)"
            )


def prepare_data(config: Any, data: DeviceData) -> DeviceData:
    """``data`` as the active components need it (each in turn)."""
    for cls, _ in for_config(config):
        data = cls.prepare_data(config, data)
    return data


def model_factory(config: Any) -> ModelFactory | None:
    """The network an active component brings (None: ``config.model``'s)."""
    return next((f for cls, _ in for_config(config) if (f := cls.model_factory(config)) is not None), None)


def absent_value(name: str, episode: EpisodeState) -> tuple[bool, Any]:
    """``(True, value)`` if a built-in exposes ``name`` (the value it has in an episode
    whose config leaves that component off), else ``(False, None)``."""
    for cls in BUILTINS:
        if name in cls.exposes:
            return True, cls.absent(name, episode)
    return False, None


EXPOSED = frozenset(name for cls in BUILTINS for name in cls.exposes)
"""The attributes a built-in component shows through the env (``env.unwrapped.<name>``)."""


def _import(name: str, where: str) -> type[Component]:
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(_REGISTERED)) or "none registered"
        checks.fail(where, name, f"'package.module:Class' or a registered name ({known})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"{where}={name!r} is not accepted: module {module_name!r} cannot be imported ({exc})"
        ) from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"{where}={name!r} is not accepted: module {module_name!r} has no {attr!r}")
    return cls  # type: ignore[no-any-return]


def _check_class(cls: Any, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise ValueError(f"{where}: {cls!r} is not accepted; accepted: a subclass of hlgym.envs.components.Component")
    if cls in BUILTINS or issubclass(cls, TransferMode):
        raise ValueError(f"{where}: {cls.__name__} is a built-in component; accepted: a plug-in's own class")


def _frozen(value: Any) -> Any:
    """A JSON value made hashable (lists as tuples, dicts as sorted pairs)."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return ("__dict__", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__dict__":
        return {k: _thawed(v) for k, v in value[1]}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


# The extra observation columns ship as plug-ins known by name (no registered id uses them).
register(insight.ClassGap)
register(insight.LossChange)
