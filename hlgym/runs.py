"""Run folders: every file a training run writes, written and read here.

::

    config.json          arguments, hyperparameters, resolved env config (written first)
    checkpoints/         ckpt_<steps>.zip (+ _replay.pkl for DQN) and checkpoint.json, the
                         manifest written last; hl_dqn.pt for the reference DQN
    episodes.csv         one row per finished training episode, flushed as it ends
    monitor.csv          the same episodes in SB3's Monitor format (r, l, t)
    tb/                  TensorBoard logs
    model.zip | model.pt the final policy
    results.json         the policy and every baseline on the held-out evaluation seeds
    plots/               the figures of hlgym.plots

Every file is written atomically (a crash leaves the old file or the new one, never half).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hlgym.agents.base import EpisodeOutcome, Evaluation, Stat
from hlgym.atomic import write_bytes_atomic, write_json_atomic

__all__ = [
    "EpisodeLog",
    "RunFolder",
    "evaluation_to_dict",
    "format_table",
    "fresh_run_dir",
    "read_episodes",
    "reduction",
]

RESULTS_SCHEMA_VERSION = 1
CHECKPOINT_MANIFEST = "checkpoint.json"


class RunFolder:
    """The files of one run folder (see the module docstring).

    Args:
        path: The folder (created when the first file is written).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.results_file = self.path / "results.json"
        self.checkpoints = self.path / "checkpoints"
        self.hl_dqn_checkpoint = self.checkpoints / "hl_dqn.pt"
        self.tensorboard = self.path / "tb"
        self.plots = self.path / "plots"

    def model_file(self, algo: str) -> Path:
        """Where the final policy of ``algo`` goes (``model.pt`` for hl_dqn, else ``model.zip``)."""
        return self.path / ("model.pt" if algo == "hl_dqn" else "model.zip")

    def write_model(self, algo: str, data: bytes) -> Path:
        """Write the final policy of ``algo`` (see :meth:`model_file`); returns the file."""
        path = self.model_file(algo)
        write_bytes_atomic(path, data)
        return path

    def has_run(self) -> bool:
        """Whether a run was started here (its ``config.json`` exists)."""
        return self.config_file.is_file()

    # ------------------------------------------------------------------ config.json

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.json`` (the run's arguments, hyperparameters and env config)."""
        write_json_atomic(self.config_file, dict(config))

    def read_config(self) -> dict[str, Any]:
        """Read ``config.json``."""
        data: dict[str, Any] = json.loads(self.config_file.read_text())
        return data

    # ------------------------------------------------------------------ results.json

    def write_results(self, results: Mapping[str, Any], evaluations: Mapping[str, Evaluation]) -> None:
        """Write ``results.json``: ``results``' fields and every policy's evaluation."""
        policies = {name: evaluation_to_dict(ev) for name, ev in evaluations.items()}
        write_json_atomic(
            self.results_file, {"schema_version": RESULTS_SCHEMA_VERSION, **results, "policies": policies}
        )

    def read_results(self) -> dict[str, Any]:
        """Read ``results.json``.

        Raises:
            FileNotFoundError: If the folder or the file is missing (the message names it).
        """
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a run folder (no such directory)")
        if not self.results_file.is_file():
            raise FileNotFoundError(
                f"{self.results_file} is missing: the run has not finished its evaluation (it is written last)"
            )
        data: dict[str, Any] = json.loads(self.results_file.read_text())
        return data

    # ------------------------------------------------------------------ logs

    def episode_log(self, keep: int | None = None, env_id: str = "") -> EpisodeLog:
        """Open the training log (``episodes.csv``, ``monitor.csv``); see :class:`EpisodeLog`."""
        return EpisodeLog(self.path, keep=keep, env_id=env_id)

    def training_rows(self) -> list[dict[str, float]]:
        """The rows of ``episodes.csv`` (empty if the run trained nothing)."""
        return read_episodes(self.path) if (self.path / "episodes.csv").is_file() else []

    # ------------------------------------------------------------------ checkpoints

    def commit_checkpoint(self, steps: int, episodes: int, model: bytes, replay: bytes | None, keep: int = 2) -> Path:
        """Write a checkpoint: the model (and replay buffer) files, then the manifest naming
        them, so the newest checkpoint the manifest names is always complete. Checkpoints
        older than the ``keep`` newest go after the manifest moved on. Returns the model file."""
        model_file = self.checkpoints / f"ckpt_{steps}.zip"
        write_bytes_atomic(model_file, model)
        manifest: dict[str, Any] = {"timesteps": steps, "episodes": episodes, "model": model_file.name, "replay": None}
        if replay is not None:
            replay_file = self.checkpoints / f"ckpt_{steps}_replay.pkl"
            write_bytes_atomic(replay_file, replay)
            manifest["replay"] = replay_file.name
        write_json_atomic(self.checkpoints / CHECKPOINT_MANIFEST, manifest)
        old = sorted(self.checkpoints.glob("ckpt_*.zip"), key=lambda p: int(p.stem.split("_")[1]))[:-keep]
        for path in old:
            path.unlink(missing_ok=True)
            (self.checkpoints / f"{path.stem}_replay.pkl").unlink(missing_ok=True)
        return model_file

    def write_hl_dqn_checkpoint(self, data: bytes) -> None:
        """Write the reference DQN's checkpoint (``checkpoints/hl_dqn.pt``, the whole agent)."""
        write_bytes_atomic(self.hl_dqn_checkpoint, data)

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The newest checkpoint's manifest with its files as paths (``model``, ``replay``
        or None), ``timesteps`` and ``episodes``; None if there is none."""
        manifest = self.checkpoints / CHECKPOINT_MANIFEST
        if not manifest.is_file():
            return None
        data: dict[str, Any] = json.loads(manifest.read_text())
        data["model"] = self.checkpoints / data["model"]
        data["replay"] = self.checkpoints / data["replay"] if data["replay"] else None
        return data


def fresh_run_dir(base: str | os.PathLike[str]) -> Path:
    """``base``, or ``base_2``, ``base_3``... : the first that does not exist yet."""
    path, k = Path(base), 1
    while path.exists():
        k += 1
        path = Path(f"{base}_{k}")
    return path


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    """JSON-ready form of an evaluation: summary (mean, ci95, n) and every episode."""
    return {
        "summary": {k: {"mean": s.mean, "ci95": s.ci95, "n": s.n} for k, s in evaluation.summary.items()},
        "episodes": [r.to_dict() for r in evaluation.records],
    }


def reduction(value: float, reference: float) -> float:
    """Relative reduction of ``value`` against ``reference`` [%]; positive is better."""
    return 100.0 * (reference - value) / reference if reference else float("nan")


def _mean_ci(stat: Stat, width: int, ci_width: int, digits: int) -> str:
    """``mean ±ci95``; the interval reads ``n/a`` when fewer than two episodes give none."""
    ci = f"{stat.ci95:>{ci_width}.{digits}f}" if stat.n >= 2 else f"{'n/a':>{ci_width}}"
    return f"{stat.mean:>{width}.{digits}f} ±{ci}"


def format_table(results: dict[str, Evaluation], reference: str = "random") -> str:
    """A plain-text table: one row per policy, means ± 95% CI, and the change in rounds and
    communication cost against ``reference`` in % (negative: fewer; the paper's 50.8% fewer
    rounds reads -50.8%)."""
    header = (
        f"{'policy':<14} {'rounds':>14} {'comm cost':>16} {'MB sent':>10} {'final acc':>15} {'reached':>8}"
        f" {'rounds vs ' + reference:>17} {'comm vs ' + reference:>15}"
    )
    # Runs with byzantine peers add how often each policy trained the model at one.
    byzantine = any(r.byzantine for ev in results.values() for r in ev.records)
    if byzantine:
        header += f" {'byz visits':>15}"
    lines = [header, "-" * len(header)]
    ref = results.get(reference)
    for name, ev in results.items():
        s = ev.summary
        change_r = change_c = "-"
        if ref is not None and name != reference:
            change_r = f"{-reduction(s['rounds'].mean, ref.summary['rounds'].mean):+.1f}%"
            change_c = f"{-reduction(s['comm_cost'].mean, ref.summary['comm_cost'].mean):+.1f}%"
        line = (
            f"{name:<14} {_mean_ci(s['rounds'], 7, 5, 2)} "
            f"{_mean_ci(s['comm_cost'], 8, 6, 3)} "
            f"{s['bytes_sent'].mean / 1e6:>10.2f} "
            f"{_mean_ci(s['final_accuracy'], 7, 6, 4)} "
            f"{100 * s['reached_goal'].mean:>7.0f}% {change_r:>17} {change_c:>15}"
        )
        if byzantine:
            line += f" {_mean_ci(s['byzantine_visits'], 7, 5, 2)}"
        lines.append(line)
    return "\n".join(lines)


EPISODE_FIELDS = (
    "episode",
    "timesteps",
    "rounds",
    "comm_cost",
    "bytes_sent",
    "final_accuracy",
    "reached_goal",
    "return",
    "wall_time_s",
)


class EpisodeLog:
    """The per-episode training records of a run: ``episodes.csv`` and SB3's ``monitor.csv``.

    Rows are appended and flushed one by one, so a killed run keeps every finished
    episode. On resume, ``keep`` rows (the episodes the checkpoint had seen) are kept and
    the rest, which the resumed run will play again, are dropped, atomically.

    Args:
        run_dir: The run folder.
        keep: None starts both files afresh; an integer keeps that many rows.
        env_id: Written into monitor.csv's header, as SB3's Monitor does.
    """

    def __init__(self, run_dir: str | os.PathLike[str], keep: int | None = None, env_id: str = "") -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.episodes_path = self.dir / "episodes.csv"
        self.monitor_path = self.dir / "monitor.csv"
        self._start = time.time()
        # monitor.csv as SB3's Monitor writes it: a JSON comment line, then r,l,t.
        monitor_head = f"#{json.dumps({'t_start': self._start, 'env_id': env_id})}\nr,l,t\n"
        self.n_rows = 0
        for path, head in ((self.episodes_path, ",".join(EPISODE_FIELDS) + "\n"), (self.monitor_path, monitor_head)):
            if keep is None or not path.exists():
                write_bytes_atomic(path, head.encode())
            else:
                lines = path.read_text().splitlines(keepends=True)
                n_head = head.count("\n")
                rows = lines[n_head : n_head + keep]
                if len(rows) < keep:
                    raise RuntimeError(f"{path} holds {len(rows)} episodes but the checkpoint counted {keep}")
                write_bytes_atomic(path, "".join(lines[:n_head] + rows).encode())
        self.n_rows = 0 if keep is None else keep
        self._episodes = self.episodes_path.open("a", newline="")
        self._monitor = self.monitor_path.open("a", newline="")
        self._writer = csv.DictWriter(self._episodes, fieldnames=EPISODE_FIELDS)

    def append(self, timesteps: int, outcome: EpisodeOutcome) -> dict[str, Any]:
        """Write one finished training episode, ended at ``timesteps``; returns the row as
        written (the keys of :data:`EPISODE_FIELDS`)."""
        row = {
            "episode": self.n_rows,
            "timesteps": timesteps,
            "rounds": outcome.rounds,
            "comm_cost": outcome.comm_cost,
            "bytes_sent": outcome.bytes_sent,
            "final_accuracy": outcome.final_accuracy,
            "reached_goal": outcome.reached_goal,
            "return": outcome.episode_return,
            "wall_time_s": round(time.time() - self._start, 3),
        }
        self._writer.writerow({k: row[k] for k in EPISODE_FIELDS})
        self._episodes.flush()
        self._monitor.write(f"{row['return']},{row['rounds']},{row['wall_time_s']}\n")
        self._monitor.flush()
        self.n_rows += 1
        return row

    def close(self) -> None:
        """Close both files."""
        self._episodes.close()
        self._monitor.close()


def read_episodes(run_dir: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of a run's ``episodes.csv`` as numbers."""
    with (Path(run_dir) / "episodes.csv").open(newline="") as fh:
        return [
            {k: float(v == "True") if v in ("True", "False") else float(v) for k, v in r.items()}
            for r in csv.DictReader(fh)
        ]
