"""Step time when the cores are shared: every id's median step idle and beside a busy
process (a pure-Python loop the bench starts and stops itself), with the env's threads
``auto`` (the default), 1 and every core.

    python bench/contention.py                     # every case, 40 steps each (CNN 8)
    python bench/contention.py --steps 60 --json bench/contention.json
    python bench/contention.py --cases PeerSelection-v0 HL-CNN

Targets (issue 25): under load, every digits id's median step within 2x of its idle figure
and under 10 ms; the HL CNN's step within 1.5x of idle. Figures only: nothing here asserts a
time. Run it alone on the machine: its "idle" column assumes nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import hlgym
from hlgym.envs import DataNotFoundError, load_dataset

# name -> (id, overrides). The HL CNN runs on Fashion-MNIST where the data is
# installed, else on the synthetic data set at the split it has room for (marked so).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "PeerSelection-v0": ("hlgym/PeerSelection-v0", {}),
    "average": ("hlgym/PeerSelection-v0", {"transfer": "average"}),
    "distill": ("hlgym/PeerSelection-v0", {"transfer": "distill"}),
    "logits": ("hlgym/PeerSelection-v0", {"transfer": "logits"}),
    "DomainShift-v1": ("hlgym/DomainShift-v1", {}),
    "ModalityExperts-v1": ("hlgym/ModalityExperts-v1", {}),
    "TaskDistribution-v1": ("hlgym/TaskDistribution-v1", {}),
    "HL-CNN": ("hlgym/HL-FashionMNIST-v0", {}),
}
SETTINGS = ("auto", 1, os.cpu_count() or 1)


def hl_overrides() -> tuple[dict[str, Any], str]:
    """The HL case's overrides and what data it ran on."""
    try:
        load_dataset("fashion_mnist")
        return {}, "Fashion-MNIST"
    except DataNotFoundError:
        return {"dataset": "synthetic", "main_samples": 150, "other_samples": 38}, "synthetic data (no Fashion-MNIST)"


@contextmanager
def busy_core() -> Any:
    """One process spinning a pure-Python loop: the other work on a shared machine."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # scheduled and spinning
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def median_step(env_id: str, overrides: dict[str, Any], threads: int | str, steps: int) -> float:
    """[ms] The median step of one episode stream (resets not counted), the goal unreachable
    so episodes run their rounds."""
    env = gym.make(env_id, **{**overrides, "goal": 1.0}, threads=threads)
    env.reset(seed=0)
    n = int(env.action_space.n)  # type: ignore[attr-defined]
    times = []
    for k in range(steps + 2):
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(k % n)
        if k >= 2:  # the first steps warm the allocator and the thread pool
            times.append(time.perf_counter() - start)
        if terminated or truncated:
            env.reset()
    env.close()
    return 1000.0 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="steps per figure (the CNN takes a fifth)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"--cases {' '.join(unknown)} is not accepted; accepted: {', '.join(CASES)}")
    hl, hl_data = hl_overrides()
    print(
        f"hlgym {hlgym.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads by default), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; HL-CNN on {hl_data}"
    )
    rows: dict[str, dict[str, float]] = {}
    for name in args.cases:
        env_id, overrides = CASES[name]
        if name == "HL-CNN":
            overrides = hl
        steps = max(4, args.steps // 5) if name == "HL-CNN" else args.steps
        row: dict[str, float] = {}
        for load in ("idle", "busy"):
            for setting in SETTINGS:
                if load == "busy":
                    with busy_core():
                        row[f"{load} {setting}"] = median_step(env_id, overrides, setting, steps)
                else:
                    row[f"{load} {setting}"] = median_step(env_id, overrides, setting, steps)
        rows[name] = row
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in row.items()), flush=True)
    cols = [f"{load} {s}" for load in ("idle", "busy") for s in SETTINGS]
    print("\nmedian step [ms]; threads auto / 1 / all; 'busy': one other core spinning")
    print("| case | " + " | ".join(cols) + " | busy/idle (auto) |")
    print("|---" * (len(cols) + 2) + "|")
    for name, row in rows.items():
        ratio = row["busy auto"] / row["idle auto"]
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in cols) + f" | {ratio:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"hl_data": hl_data, "steps": args.steps, "rows": rows}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
