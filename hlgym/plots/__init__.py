"""Figures from evaluation records and run folders (matplotlib, headless-safe).

>>> from hlgym.plots import comm_cost_curves
>>> ax = comm_cost_curves({"random": records_a, "ppo": records_b})  # doctest: +SKIP
>>> ax.get_figure().savefig("comm_cost.png")  # doctest: +SKIP

From the command line: ``python -m hlgym.plots RUN_DIR [RUN_DIR ...] --out DIR``.
"""

from hlgym.plots.figures import (
    PALETTE,
    accuracy_vs_cost,
    best_so_far,
    comm_cost_curves,
    cumulative_cost,
    distributions,
    gossip_sends,
    route,
    seed_spread,
    stays,
    training_curves,
)
from hlgym.plots.rundir import Run, load_run, merge, plot_runs

__all__ = [
    "PALETTE",
    "Run",
    "accuracy_vs_cost",
    "best_so_far",
    "comm_cost_curves",
    "cumulative_cost",
    "distributions",
    "gossip_sends",
    "load_run",
    "merge",
    "plot_runs",
    "route",
    "seed_spread",
    "stays",
    "training_curves",
]
