"""The figures: each takes records (or training rows) and returns matplotlib objects.

Every function draws into ``ax`` when given one, so users can compose their own figures;
without it a new Figure is made. Colours follow the Okabe-Ito palette (colour-blind safe),
and lines also differ in style so a grey-scale print still tells policies apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from hlgym.records import EpisodeRecord

# Okabe & Ito (2008), "Color Universal Design".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# Ten discs' colours (the presets' ten main classes): Okabe-Ito without black, and three of
# Paul Tol's muted set, so that no class needs a second marker shape.
CLASS_COLOURS = (*PALETTE[:7], "#882255", "#999933", "#888888")
LIGHT = ("#F0E442", "#56B4E9", "#E69F00")  # discs whose index reads better in black
# How a domain's level reads, per domain_shift (its unit; hlgym.envs.components.domain_shift).
DOMAIN_LABELS = {
    "rotate": "{:g}°",
    "noise": "noise std {:g}",
    "invert": "inverted {:g}",
    "blur": "blur {:g} px",
    "thicken": "thicken {:g} px",
}
LINESTYLES = ("-", "--", "-.", ":")
UNITS = ("distance", "bytes")
Records = Mapping[str, Sequence[EpisodeRecord]]


def _check(records_by_policy: Records) -> None:
    if not records_by_policy:
        raise ValueError("records_by_policy is empty; give at least one policy with records")
    for name, recs in records_by_policy.items():
        if not recs:
            raise ValueError(f"records_by_policy[{name!r}] is empty; evaluate at least one episode")


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=figsize, layout="constrained").add_subplot()


def style(i: int) -> dict[str, Any]:
    """Colour and line style of the ``i``-th policy."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _bytes_per_hop(rec: EpisodeRecord) -> float:
    moves = sum(1 for a, b in zip(rec.route[:-1], rec.route[1:], strict=True) if a != b)
    return rec.bytes_sent / moves if moves else 0.0


def cumulative_cost(rec: EpisodeRecord, unit: str = "distance") -> np.ndarray:
    """Cumulative communication cost after each round of one episode (index 0: 0).

    Args:
        rec: The episode.
        unit: ``"distance"`` (the topology's units) or ``"bytes"`` (what the hops sent:
            weights, or logits in the ``logits`` transfer mode).
    """
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} is not accepted; accepted: {', '.join(UNITS)}")
    if unit == "distance":
        steps = np.asarray(rec.hop_costs, dtype=np.float64)
    elif len(rec.round_bytes) == len(rec.hop_costs):
        steps = np.asarray(rec.round_bytes, dtype=np.float64)
    else:  # records of hlgym < 0.2 hold no per-round bytes: the moves of the route
        size = _bytes_per_hop(rec)
        steps = np.array([size if a != b else 0.0 for a, b in zip(rec.route[:-1], rec.route[1:], strict=True)])
    return np.concatenate([[0.0], np.cumsum(steps)])


def _mean_band(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval per round over episodes of different lengths.

    An episode that ended keeps its last value (no more cost is spent once the goal is
    reached), so every round averages over all episodes.
    """
    length = max(r.size for r in rows)
    grid = np.stack([np.concatenate([r, np.full(length - r.size, r[-1])]) for r in rows])
    mean = grid.mean(axis=0)
    if len(rows) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(rows) - 1) * grid.std(axis=0, ddof=1) / np.sqrt(len(rows))
    return mean, mean - half, mean + half


def _cost_label(unit: str) -> str:
    return "cumulative communication cost [distance units]" if unit == "distance" else "cumulative bytes sent [MB]"


def comm_cost_curves(records_by_policy: Records, ax: Axes | None = None, unit: str = "distance") -> Axes:
    """Cumulative communication cost against round, one line per policy with a 95% band
    across episodes (an episode that ended keeps its total); a star marks the mean round
    at which episodes reached the goal.

    Args:
        records_by_policy: Episode records by policy name.
        ax: Axes to draw into; a new figure's when None.
        unit: ``"distance"`` or ``"bytes"`` (shown in MB).
    """
    _check(records_by_policy)
    ax = _axes(ax)
    scale = 1e-6 if unit == "bytes" else 1.0
    for i, (name, recs) in enumerate(records_by_policy.items()):
        mean, lo, hi = _mean_band([cumulative_cost(r, unit) * scale for r in recs])
        first = recs[0].forced_rounds
        rounds = np.arange(first, first + mean.size)
        st = style(i)
        ax.plot(rounds, mean, label=name, **st)
        ax.fill_between(rounds, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
        reached = [r.rounds for r in recs if r.reached_goal]
        if reached:
            at = float(np.mean(reached))
            k = min(round(at) - first, mean.size - 1)
            ax.plot([at], [mean[k]], marker="*", markersize=12, color=st["color"], linestyle="none")
    ax.plot([], [], marker="*", color="gray", linestyle="none", label="mean goal round")
    ax.set_xlabel("round")
    ax.set_ylabel(_cost_label(unit))
    ax.set_title("Communication cost per round (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return ax


def best_so_far(rec: EpisodeRecord) -> np.ndarray:
    """The best test accuracy an episode had reached after each round (index 0: reset's)."""
    return np.maximum.accumulate(np.asarray(rec.accuracy, dtype=np.float64))


def accuracy_vs_cost(records_by_policy: Records, ax: Axes | None = None, unit: str = "distance") -> Axes:
    """The trade-off curve: the best test accuracy reached against the communication spent,
    per round. Each policy's bold line joins its per-round means of both over the episodes
    (an episode that ended keeps its last values); thin lines are single episodes. A policy
    that hardly spends (its mean cost grows by less than 5% of the widest policy's: it
    stays, after a hop or none) would be a vertical spike: a diamond at its final means.

    Args:
        records_by_policy: Episode records by policy name.
        ax: Axes to draw into; a new figure's when None.
        unit: ``"distance"`` or ``"bytes"`` (shown in MB).
    """
    _check(records_by_policy)
    ax = _axes(ax)
    scale = 1e-6 if unit == "bytes" else 1.0
    curves = {
        name: ([cumulative_cost(r, unit) * scale for r in recs], [best_so_far(r) for r in recs])
        for name, recs in records_by_policy.items()
    }
    means = {name: (_mean_band(c)[0], _mean_band(a)[0]) for name, (c, a) in curves.items()}
    widest = max(float(c[-1] - c[0]) for c, _ in means.values())
    for i, (name, (costs, accs)) in enumerate(curves.items()):
        st = style(i)
        mean_cost, mean_acc = means[name]
        if mean_cost[-1] - mean_cost[0] <= 0.05 * widest:
            ax.plot(
                [mean_cost[-1]],
                [mean_acc[-1]],
                marker="D",
                markersize=8,
                linestyle="none",
                label=f"{name} (hardly moves: its final means)",
                color=st["color"],
                markeredgecolor="black",
            )
            continue
        for c, a in zip(costs, accs, strict=True):
            ax.plot(c, a, color=st["color"], alpha=0.12, linewidth=0.7)
        ax.plot(mean_cost, mean_acc, label=name, linewidth=2, **st)
    goals = {r.goal for recs in records_by_policy.values() for r in recs if r.goal is not None}
    if len(goals) == 1:
        ax.axhline(goals.pop(), color="0.4", linewidth=1, linestyle=(0, (4, 3)), label="goal")
    ax.plot([], [], color="0.5", alpha=0.4, linewidth=0.7, label="one episode")
    ax.set_xlabel(_cost_label(unit))
    ax.set_ylabel("best test accuracy so far")
    ax.set_title("Accuracy against communication (per-round means)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return ax


def distributions(records_by_policy: Records, fig: Figure | None = None, unit: str = "distance") -> Figure:
    """Rounds played and total communication cost per policy as box plots, means as diamonds."""
    _check(records_by_policy)
    fig = fig or Figure(figsize=(9.0, 4.0), layout="constrained")
    ax_r, ax_c = fig.subplots(1, 2)
    names = list(records_by_policy)
    scale = 1e-6 if unit == "bytes" else 1.0
    panels = (
        (ax_r, "rounds", [[float(r.rounds) for r in records_by_policy[n]] for n in names]),
        (
            ax_c,
            _cost_label(unit).replace("cumulative ", "total "),
            [[float(cumulative_cost(r, unit)[-1]) * scale for r in records_by_policy[n]] for n in names],
        ),
    )
    for ax, label, data in panels:
        box = ax.boxplot(data, patch_artist=True, widths=0.6, medianprops={"color": "black"})
        ax.set_xticks(range(1, len(names) + 1), names)
        for i, patch in enumerate(box["boxes"]):
            patch.set_facecolor(style(i)["color"])
            patch.set_alpha(0.35)
        for i, values in enumerate(data):
            ax.plot(i + 1, np.mean(values), marker="D", color=style(i)["color"], markeredgecolor="black")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    ax_r.plot([], [], marker="D", color="gray", markeredgecolor="black", linestyle="none", label="mean")
    ax_r.legend(frameon=False)
    fig.suptitle("Rounds and communication per episode")
    return fig


SEED_PANELS = (
    ("rounds", "rounds", 1.0),
    ("comm_cost", "comm cost [distance units]", 1.0),
    ("reached_goal", "reached goal [%]", 100.0),
)


def seed_spread(
    policies: Mapping[str, Mapping[str, Any]], fig: Figure | None = None, max_rounds: int | None = None
) -> Figure:
    """The spread of a run over several training seeds: per policy, each seed's mean over
    the held-out episodes (dots) and the mean over seeds ± the half-width of its 95%
    t-interval (bar), for rounds, comm cost and the share of episodes that reached the goal.
    A bar is clipped to what its metric can be (rounds in [1, ``max_rounds``], comm cost >= 0,
    reached goal in [0, 100]%): a t-interval over 3 seeds reaches past them; the title says
    when it clipped one.

    Args:
        policies: ``results.json``'s ``policies`` of a run over seeds
            (:func:`hlgym.runs.across_seeds`).
        fig: Figure to draw into.
        max_rounds: The episodes' round limit (None: rounds are clipped below only).
    """
    if not policies:
        raise ValueError("policies is empty; give the policies of a run over seeds")
    fig = fig or Figure(figsize=(11.0, 3.8), layout="constrained")
    axes = fig.subplots(1, len(SEED_PANELS))
    names = list(policies)
    n_seeds = len(next(iter(policies.values()))["per_seed"]["rounds"])
    ranges = {"rounds": (1.0, math.inf if max_rounds is None else float(max_rounds)), "comm_cost": (0.0, math.inf)}
    ranges["reached_goal"] = (0.0, 100.0)
    clipped = False
    for ax, (key, label, scale) in zip(axes, SEED_PANELS, strict=True):
        low, high = ranges[key]
        for i, name in enumerate(names):
            color = style(i)["color"]
            values = scale * np.asarray(policies[name]["per_seed"][key], dtype=np.float64)
            summary = policies[name]["summary"][key]
            mean, half = scale * summary["mean"], scale * summary["ci95"]
            lo, hi = max(mean - half, low), min(mean + half, high)
            clipped |= lo > mean - half or hi < mean + half
            # Seeds side by side (no random jitter: the figure is the same on every draw).
            ax.scatter(i - 0.12 + np.linspace(-0.08, 0.08, values.size), values, s=16, color=color, alpha=0.75)
            ax.errorbar(i + 0.15, mean, yerr=[[mean - lo], [hi - mean]], fmt="D", color=color, capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    note = ", clipped to the metric's range" if clipped else ""
    fig.suptitle(f"{n_seeds} training seeds: each seed's held-out mean (dots), their mean ± 95% t-interval (bar{note})")
    return fig


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start), the same length as ``values``."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return np.asarray((c[idx] - c[lo]) / (idx - lo))


TRAINING_PANELS = (
    ("return", "episode return"),
    ("rounds", "rounds"),
    ("comm_cost", "communication cost [distance units]"),
    ("final_accuracy", "final test accuracy"),
)


def training_curves(
    runs: Mapping[str, Sequence[Mapping[str, float]]], fig: Figure | None = None, window: int = 50
) -> Figure:
    """Meta-training curves over episodes: return, rounds, comm cost and final accuracy,
    raw (faint) and smoothed over ``window`` episodes, one colour per run.

    Args:
        runs: Training rows (``episodes.csv``) by run name.
        fig: Figure to draw into.
        window: Moving-average window [episodes].
    """
    if not runs or any(not rows for rows in runs.values()):
        raise ValueError("runs is empty or holds a run without training episodes (episodes.csv has no rows)")
    fig = fig or Figure(figsize=(10.0, 6.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for i, (name, rows) in enumerate(runs.items()):
        st = style(i)
        episodes = np.arange(len(rows))
        for ax, (key, label) in zip(axes, TRAINING_PANELS, strict=True):
            values = [float(r[key]) for r in rows]
            ax.plot(episodes, values, color=st["color"], alpha=0.2, linewidth=0.6)
            ax.plot(episodes, smooth(values, window), label=name, linewidth=1.8, **st)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("training episode")
    axes[0].legend(frameon=False)
    fig.suptitle(f"Meta-training (raw and {window}-episode mean)")
    return fig


def stays(rec: EpisodeRecord) -> np.ndarray:
    """Per peer, the rounds in which the model stayed there (the action was the holder)."""
    out = np.zeros(len(rec.positions) or (max(rec.route, default=0) + 1), dtype=np.int64)
    for a, b in zip(rec.route[:-1], rec.route[1:], strict=True):
        if a == b:
            out[b] += 1
    return out


def _group_label(kind: str, shift: str, value: Any) -> str:
    if kind == "domain":
        return DOMAIN_LABELS.get(shift, "domain {:g}").format(value)
    return f"{kind} {value}"


def _arrow(
    ax: Axes, start: np.ndarray, end: np.ndarray, color: str, lw: float, alpha: float, shrink: float, style: str = "-"
) -> None:
    """An arrow from ``start`` to ``end`` that stops ``shrink`` points short of each disc."""
    ax.annotate(
        "",
        xy=(float(end[0]), float(end[1])),
        xytext=(float(start[0]), float(start[1])),
        arrowprops={
            "arrowstyle": "-|>",
            "color": color,
            "linestyle": style,
            "lw": lw,
            "alpha": alpha,
            "shrinkA": shrink,
            "shrinkB": shrink,
        },
    )


def route(rec: EpisodeRecord, ax: Axes | None = None, unit: str = "distance", title: str | None = None) -> Axes:
    """One episode's route on the topology: peers at their layout positions, coloured by
    main class (by domain when the episode had a ``domain_shift``, by the view a peer holds
    with a ``modality_split``), hops as numbered arrows whose width grows with the hop's
    cost, and a peer's stays (rounds the model trained there again without moving) as a
    count beside its disc; byzantine peers (if the episode had any) are ringed in red. A
    caption says what the marks mean; the legend lists each domain's or main class's peers
    (unless peer i holds class i)."""
    if not rec.positions:
        raise ValueError(
            "the record has no peer positions (records from hlgym < 0.1 or a custom env); cannot draw the route"
        )
    ax = _axes(ax, (6.4, 5.6))
    pos = np.asarray(rec.positions, dtype=np.float64)
    classes = np.asarray(rec.main_classes) if rec.main_classes else np.zeros(len(pos), dtype=int)
    hops = np.diff(cumulative_cost(rec, unit))
    widest = hops.max() if hops.size and hops.max() > 0 else 1.0
    # One arrow per directed pair, labelled with every round that took it (a pair hopped
    # again would hide the earlier label); the label sits 40% along, so a pair's two
    # directions keep apart.
    taken: dict[tuple[int, int], list[int]] = {}
    for k, (a, b) in enumerate(zip(rec.route[:-1], rec.route[1:], strict=True), start=1):
        if a != b:
            taken.setdefault((a, b), []).append(k)
    for (a, b), ks in taken.items():
        _arrow(ax, pos[a], pos[b], "0.35", 0.6 + 3.0 * max(hops[k - 1] for k in ks) / widest, 0.7, 9)
        at = pos[a] + 0.4 * (pos[b] - pos[a])
        ax.text(
            at[0],
            at[1],
            ",".join(str(k + rec.forced_rounds) for k in ks),
            fontsize=7,
            color="0.15",
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )
    # Peer i holding class i (the presets) makes a class legend a list of the labels on the
    # discs: the caption says so instead, and the legend names only what is not on the disc.
    # With a domain shift the colour is the peer's domain; with a modality split, its view.
    kind, groups = "class", classes
    if rec.peer_domains:
        kind, groups = "domain", np.asarray(rec.peer_domains)
    elif rec.peer_modalities:
        kind, groups = "modality", np.asarray(rec.peer_modalities)
    by_group = kind != "class"
    own_class = not by_group and bool(rec.main_classes) and np.array_equal(classes, np.arange(len(pos)))
    disc_colour: dict[int, str] = {}
    for rank, c in enumerate(np.unique(groups)):
        shade = rank if by_group else int(c)  # a class keeps its colour across figures
        sel = groups == c
        peers = np.flatnonzero(sel)
        disc_colour.update(dict.fromkeys(peers.tolist(), CLASS_COLOURS[shade % len(CLASS_COLOURS)]))
        label = f"{_group_label(kind, rec.domain_shift, c)}: peer{'s' if peers.size > 1 else ''} "
        label += ", ".join(str(i) for i in peers)
        ax.scatter(
            pos[sel, 0],
            pos[sel, 1],
            s=260,
            color=CLASS_COLOURS[shade % len(CLASS_COLOURS)],
            marker="os^Dv<>p"[shade // len(CLASS_COLOURS) % 8],  # a shape only past ten groups
            edgecolor="black",
            zorder=3,
            label=None if own_class else label,
        )
    if rec.byzantine:
        bad = pos[rec.byzantine]
        ax.scatter(
            bad[:, 0],
            bad[:, 1],
            s=560,
            facecolors="none",
            edgecolors="#D55E00",
            linewidths=2.5,
            zorder=2,
            label="byzantine",
        )
    for i, (x, y) in enumerate(pos):
        ink = "black" if disc_colour.get(i) in LIGHT else "white"
        ax.text(x, y, str(i), ha="center", va="center", fontsize=8, color=ink, fontweight="bold", zorder=4)
    stayed = stays(rec)
    for p in np.flatnonzero(stayed):
        ax.annotate(
            f"×{int(stayed[p])}",
            pos[p],
            xytext=(9, -9),
            textcoords="offset points",
            fontsize=7,
            color="black",
            zorder=5,
            bbox={"boxstyle": "round,pad=0.15", "fc": "#FFF3C4", "ec": "0.5", "lw": 0.5},
        )
    ax.set_title(title or f"Route of episode seed {rec.seed}: {rec.rounds} rounds, cost {rec.comm_cost:.3f}")
    colour = (
        "colour: main class (peer i holds class i)"
        if own_class
        else f"colour: {kind if by_group else 'main class'} (legend)"
    )
    ax.text(
        0.5,
        -0.02,
        f"disc: a peer (its index); {colour}\narrow: a hop, labelled with its rounds, as wide as its cost\n"
        "×k: rounds the model stayed at that peer (no hop)",
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=7,
        color="0.3",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.margins(0.12)  # room for the discs and stay counts at the frame
    ax.set_aspect("equal", adjustable="datalim")
    if ax.get_legend_handles_labels()[0]:
        title = None if own_class else (kind if by_group else "main class")
        ax.legend(title=title, fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax


def gossip_sends(episode: Any, rounds: Sequence[int] | None = None, cols: int = 4) -> Figure:
    """Every agent's sends in the rounds of one gossip episode
    (:class:`hlgym.agents.gossip.GossipEpisode`): one panel per round, the peers at their
    layout positions coloured by main class, an arrow per send (grey: delivered; dotted
    black: lost to an offline peer or a failed link); a peer that kept its knowledge has none.

    Args:
        episode: The episode (its ``sends``, ``positions`` and ``main_classes``).
        rounds: The rounds to draw, from 1 (default: the first eight played).
        cols: Panels per row.
    """
    sends = list(getattr(episode, "sends", []))
    if not sends or not getattr(episode, "positions", None):
        raise ValueError("the episode has no sends or no peer positions (GossipEpisode of hlgym >= 0.3 records them)")
    chosen = list(rounds) if rounds is not None else list(range(1, min(len(sends), 8) + 1))
    bad = [r for r in chosen if not 1 <= r <= len(sends)]
    if not chosen or bad:
        raise ValueError(f"rounds={chosen!r} is not accepted; accepted: rounds 1..{len(sends)} (at least one)")
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols={cols!r} is not accepted; accepted: an integer >= 1")
    pos = np.asarray(episode.positions, dtype=np.float64)
    classes = np.asarray(episode.main_classes or [0] * len(pos))
    colours = [CLASS_COLOURS[int(c) % len(CLASS_COLOURS)] for c in classes]
    ncols = min(cols, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig = Figure(figsize=(2.8 * ncols, 2.9 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(chosen):
            ax.set_axis_off()
            continue
        r = chosen[k]
        for i, j, delivered in sends[r - 1]:
            _arrow(ax, pos[i], pos[j], "0.45" if delivered else "black", 1.0, 0.8, 7, "-" if delivered else ":")
        ax.scatter(pos[:, 0], pos[:, 1], s=170, color=colours, edgecolor="black", zorder=3)
        for i, (x, y) in enumerate(pos):
            ink = "black" if colours[i] in LIGHT else "white"
            ax.text(x, y, str(i), ha="center", va="center", fontsize=7, color=ink, fontweight="bold", zorder=4)
        lost = sum(1 for *_, ok in sends[r - 1] if not ok)
        ax.set_title(f"round {r}: {len(sends[r - 1])} sends" + (f", {lost} lost" if lost else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.margins(0.12)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(
        f"Gossip episode seed {episode.seed}: every agent's sends "
        "(grey: delivered, dotted black: lost; colour: main class)",
        fontsize=9,
    )
    return fig
