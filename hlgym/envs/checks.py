"""One shape for every configuration error: ``name=value is not accepted; accepted: ...``.

The core config (:mod:`hlgym.envs.config`) and every component's fields
(:mod:`hlgym.envs.components`) check their values with these, so a user reads the same
sentence whichever part refused the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn


def fail(name: str, value: Any, accepted: str) -> NoReturn:
    """Raise the ``ValueError`` that names the field, the value and what is accepted."""
    raise ValueError(f"{name}={value!r} is not accepted; accepted: {accepted}")


def integer(cfg: object, name: str, low: int, high: int | None = None) -> None:
    """``cfg.name`` is an integer (not a bool) in ``[low, high]``."""
    value = getattr(cfg, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        fail(name, value, f"an integer >= {low}" + ("" if high is None else f" and <= {high}"))


def real(cfg: object, name: str, accepted: str, test: Callable[[float], bool]) -> None:
    """``cfg.name`` is a finite number (not a bool) that passes ``test``."""
    value = getattr(cfg, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and test(value)
    if not ok:
        fail(name, value, accepted)


def choice(cfg: object, name: str, options: Sequence[str]) -> None:
    """``cfg.name`` is one of ``options``."""
    value = getattr(cfg, name)
    if value not in options:
        fail(name, value, ", ".join(repr(o) for o in options))


def flag(cfg: object, name: str) -> None:
    """``cfg.name`` is True or False."""
    if not isinstance(getattr(cfg, name), bool):
        fail(name, getattr(cfg, name), "True or False")
