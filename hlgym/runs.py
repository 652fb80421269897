"""Run folders: results, the results table, and the per-episode training log."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

from hlgym.agents.base import Evaluation
from hlgym.atomic import write_bytes_atomic, write_json_atomic

__all__ = ["EpisodeLog", "evaluation_to_dict", "format_table", "read_episodes", "reduction", "write_json_atomic"]

RESULTS_SCHEMA_VERSION = 1


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    """JSON-ready form of an evaluation: summary (mean, ci95, n) and every episode."""
    return {
        "summary": {k: {"mean": s.mean, "ci95": s.ci95, "n": s.n} for k, s in evaluation.summary.items()},
        "episodes": [r.to_dict() for r in evaluation.records],
    }


def reduction(value: float, reference: float) -> float:
    """Relative reduction of ``value`` against ``reference`` [%]; positive is better."""
    return 100.0 * (reference - value) / reference if reference else float("nan")


def format_table(results: dict[str, Evaluation], reference: str = "random") -> str:
    """A plain-text table: one row per policy, means ± 95% CI, and the reductions in
    rounds and communication cost against ``reference`` (as the paper reports them)."""
    header = (
        f"{'policy':<14} {'rounds':>14} {'comm cost':>16} {'MB sent':>10} {'final acc':>15} {'reached':>8}"
        f" {'rounds -%':>9} {'comm -%':>8}"
    )
    lines = [header, "-" * len(header)]
    ref = results.get(reference)
    for name, ev in results.items():
        s = ev.summary
        red_r = red_c = "-"
        if ref is not None and name != reference:
            red_r = f"{reduction(s['rounds'].mean, ref.summary['rounds'].mean):.1f}"
            red_c = f"{reduction(s['comm_cost'].mean, ref.summary['comm_cost'].mean):.1f}"
        lines.append(
            f"{name:<14} {s['rounds'].mean:>7.2f} ±{s['rounds'].ci95:>5.2f} "
            f"{s['comm_cost'].mean:>8.3f} ±{s['comm_cost'].ci95:>6.3f} "
            f"{s['bytes_sent'].mean / 1e6:>10.2f} "
            f"{s['final_accuracy'].mean:>7.4f} ±{s['final_accuracy'].ci95:>6.4f} "
            f"{100 * s['reached_goal'].mean:>7.0f}% {red_r:>9} {red_c:>8}"
        )
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

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write one finished episode: the keys of :data:`EPISODE_FIELDS` but ``episode`` and
        ``wall_time_s``, which are set here. Returns the row as written."""
        row = {**row, "episode": self.n_rows, "wall_time_s": round(time.time() - self._start, 3)}
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
