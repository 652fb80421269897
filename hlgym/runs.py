"""Run folders: atomic writes and the results table that train_meta.py prints."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hlgym.agents.base import Evaluation

RESULTS_SCHEMA_VERSION = 1


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that a crash leaves either the old file or the new one, never half.

    The text goes to a temporary file in the same folder, is flushed to disk, then
    replaces ``path`` in one rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
