"""The ``rgb_array`` render: the peers on the topology and the route so far (matplotlib,
imported only when a frame is drawn)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from hlgym.envs.components import Component

RENDER_MODES = ("ansi", "rgb_array")


def check_render_mode(render_mode: str | None) -> None:
    """Raise ``ValueError`` for a render mode the env does not offer."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        accepted = ", ".join(["None", *(repr(m) for m in RENDER_MODES)])
        raise ValueError(f"render_mode={render_mode!r} is not accepted; accepted: {accepted}")


def draw(
    positions: np.ndarray,
    main_classes: np.ndarray,
    route: Sequence[int],
    title: str,
    parts: Sequence[Component],
) -> np.ndarray:
    """One frame, ``(400, 400, 3)`` uint8: peers coloured by main class (or as the first
    component with ``colours`` says), each component's overlays, and the route's hops
    numbered by round.

    Args:
        positions: ``(n_peers, 2)`` drawing positions.
        main_classes: Each peer's most frequent class.
        route: The holder after reset and after each round.
        title: The frame's title.
        parts: The episode's components.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pos = positions
    values, cmap, top = next((c for c in (p.colours() for p in parts) if c is not None), (main_classes, "tab10", 9.0))
    ax.scatter(pos[:, 0], pos[:, 1], c=values, cmap=cmap, vmin=0, vmax=top, s=200, zorder=3)
    for part in parts:
        part.decorate(ax, pos)
    for i, (x, y) in enumerate(pos):
        ax.annotate(str(i), (x, y), ha="center", va="center", fontsize=8, zorder=4)
    for k, (a, b) in enumerate(itertools.pairwise(route), start=1):
        if a != b:
            ax.annotate("", pos[b], pos[a], arrowprops={"arrowstyle": "->", "alpha": 0.6})
            mid = (pos[a] + pos[b]) / 2
            ax.text(mid[0], mid[1], str(k), fontsize=7, color="dimgray")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    canvas.draw()  # type: ignore[no-untyped-call]
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # type: ignore[no-untyped-call]
