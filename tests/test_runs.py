"""The results table and run-folder files."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from hlgym.agents import Evaluation, Stat
from hlgym.atomic import write_bytes_atomic
from hlgym.runs import format_table


def _evaluation(rounds: float, comm: float, n: int) -> Evaluation:
    means = {"rounds": rounds, "comm_cost": comm, "bytes_sent": 1e6, "final_accuracy": 0.8, "reached_goal": 0.5}
    return Evaluation([], {k: Stat(v, 0.25 if n > 1 else 0.0, n) for k, v in {**means, "return": 1.0}.items()})


def test_table_signs_changes_and_says_na_without_an_interval() -> None:
    table = format_table({"ppo": _evaluation(20.8, 0.389, 20), "random": _evaluation(34.7, 1.505, 20)})
    ppo = next(line for line in table.splitlines() if line.startswith("ppo"))
    assert "-40.1%" in ppo and "-74.2%" in ppo  # fewer rounds read negative, as in the README
    assert "20.80 ± 0.25" in ppo
    single = format_table({"greedy": _evaluation(30.0, 1.0, 1), "random": _evaluation(30.0, 2.0, 1)})
    rows = single.splitlines()[2:]
    assert all(row.count("n/a") == 3 for row in rows)  # rounds, comm cost, final accuracy
    assert not any(re.search(r"±\s*0\.0", row) for row in rows)


def test_atomic_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
