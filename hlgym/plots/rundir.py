"""Reading run folders and drawing every figure they support."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hlgym.envs import PeerSelectionConfig
from hlgym.plots import figures
from hlgym.records import EpisodeRecord
from hlgym.runs import RunFolder

FORMATS = ("png", "svg", "pdf")


@dataclass
class Run:
    """What a run folder holds for plotting.

    Attributes:
        path: The folder.
        env_id: The environment id it ran on.
        env_config: The resolved environment config.
        records: Evaluation records by policy name (from ``results.json``).
        training: Training rows (from ``episodes.csv``), empty if it trained nothing.
        seed_runs: For a run over several seeds (``hlgym-train --seeds``), each seed's run;
            ``records`` then pools their episodes (a deterministic baseline's once).
        across_seeds: For a run over several seeds, its ``results.json`` summary by policy.
    """

    path: Path
    env_id: str
    env_config: dict[str, Any]
    records: dict[str, list[EpisodeRecord]] = field(default_factory=dict)
    training: list[dict[str, float]] = field(default_factory=list)
    seed_runs: list[Run] = field(default_factory=list)
    across_seeds: dict[str, Any] = field(default_factory=dict)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``hlgym-train`` (``train_meta.py``).

    Raises:
        FileNotFoundError: If the folder or its ``results.json`` is missing (the message
            names the file).
    """
    folder = RunFolder(path)
    results = folder.read_results()
    if results.get("kind") == "across_seeds":
        seed_runs = [load_run(folder.path / name) for name in results["runs"].values()]
        pooled: dict[str, list[EpisodeRecord]] = {}
        for seed_run in seed_runs:
            for name, recs in seed_run.records.items():
                known = pooled.setdefault(name, [])
                # A deterministic policy plays the same episodes on every seed: kept once.
                if [r.to_dict() for r in recs] != [r.to_dict() for r in known[: len(recs)]]:
                    known.extend(recs)
        return Run(folder.path, results["env_id"], results["env_config"], pooled, [], seed_runs, results["policies"])
    records = {name: ev.records for name, ev in folder.read_evaluations().items()}
    return Run(folder.path, results["env_id"], results["env_config"], records, folder.training_rows())


def merge(runs: list[Run]) -> dict[str, list[EpisodeRecord]]:
    """Overlay the policies of several runs of the same environment.

    A policy whose records repeat one already taken (the baselines, evaluated on the same
    seeds) is kept once; a different policy of the same name is labelled with its run.

    Raises:
        ValueError: If the runs are of different environments or configs.
    """
    first = runs[0]
    for run in runs[1:]:
        if run.env_id != first.env_id or run.env_config != first.env_config:
            diff = sorted(k for k in first.env_config if first.env_config.get(k) != run.env_config.get(k))
            raise ValueError(
                f"records of different envs cannot be overlaid: {first.path} is {first.env_id} and {run.path} is "
                f"{run.env_id}" + (f"; config fields that differ: {', '.join(diff)}" if diff else "")
            )
    merged: dict[str, list[EpisodeRecord]] = {}
    for run in runs:
        for name, recs in run.records.items():
            if name in merged:
                if [r.to_dict() for r in merged[name]] == [r.to_dict() for r in recs]:
                    continue
                name = f"{name} [{run.path.name}]"
            merged[name] = recs
    return merged


def save(fig: Figure, path: Path) -> Path:
    """Write a figure (Agg, no display needed)."""
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _round_limit(env_config: dict[str, Any]) -> int | None:
    """The most rounds an episode of ``env_config`` plays (None: a config this version cannot read)."""
    try:
        config = PeerSelectionConfig.from_dict(env_config)
    except (TypeError, ValueError):
        return None
    return config.max_episode_steps() + int(config.first_round_at_start is True)


def plot_runs(run_dirs: list[str | Path], out: str | Path, fmt: str = "png", unit: str = "distance") -> list[Path]:
    """Draw every figure the run folders support into ``out``; returns the files.

    Figures: ``comm_cost``, ``accuracy_vs_cost``, ``distributions`` (from the
    evaluations), ``training`` (when a run trained; one curve per seed of a run over
    seeds), ``seeds`` (a run over seeds: the spread of each policy's per-seed means),
    ``route_<policy>`` (the first evaluation episode of each policy of the first run;
    ``sends_<policy>``, every agent's sends round by round, for a multi-agent run).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not accepted; accepted: {', '.join(FORMATS)}")
    if not run_dirs:
        raise ValueError("give at least one run folder")
    runs = [load_run(p) for p in run_dirs]
    records = merge(runs)
    out = Path(out)
    files = []
    ax = figures.comm_cost_curves(records, unit=unit)
    files.append(save(ax.get_figure(root=True), out / f"comm_cost.{fmt}"))  # type: ignore[arg-type]
    ax = figures.accuracy_vs_cost(records, unit=unit)
    files.append(save(ax.get_figure(root=True), out / f"accuracy_vs_cost.{fmt}"))  # type: ignore[arg-type]
    files.append(save(figures.distributions(records, unit=unit), out / f"distributions.{fmt}"))
    # One curve per run, and per seed of a run over seeds (named by its seed folder).
    curves = [(r.path.name, r) for r in runs]
    curves += [(f"{r.path.name}/{s.path.name}" if len(runs) > 1 else s.path.name, s) for r in runs for s in r.seed_runs]
    trained = {name: r.training for name, r in curves if r.training}
    for r in runs:
        if r.across_seeds:
            name = "seeds" if len(runs) == 1 else f"seeds_{r.path.name}"
            spread = figures.seed_spread(r.across_seeds, max_rounds=_round_limit(r.env_config))
            files.append(save(spread, out / f"{name}.{fmt}"))
    if trained:
        window = max(1, min(50, min(len(v) for v in trained.values()) // 10))
        files.append(save(figures.training_curves(trained, window=window), out / f"training.{fmt}"))
    for name, recs in runs[0].records.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        if recs and recs[0].sends:  # a multi-agent episode: every agent's sends, round by round
            files.append(save(figures.gossip_sends(recs[0]), out / f"sends_{safe}.{fmt}"))
        elif recs and recs[0].positions:
            ax = figures.route(recs[0], unit=unit, title=f"{name}: seed {recs[0].seed}, {recs[0].rounds} rounds")
            files.append(save(ax.get_figure(root=True), out / f"route_{safe}.{fmt}"))  # type: ignore[arg-type]
    return files
