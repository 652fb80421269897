"""Transfer modes and byzantine peers on hlgym/PeerSelection-v0: PPO over training seeds.

For each setting and training seed this trains the default algorithm (``hlgym-train``'s PPO,
its YAML hyperparameters) into ``OUT/<setting>/seed<k>``, which also evaluates random,
round-robin and greedy on the same held-out seeds. A finished run (``results.json``) is
skipped and a killed one resumed, so the study can be stopped and started again. It then
prints one table: for PPO the mean over training seeds of each seed's mean over held-out
episodes, with the 95% t-interval over seeds; for random (seeded with the training seed)
the mean over every run's held-out episodes; for round-robin and greedy (deterministic) the
mean over one run's held-out episodes; intervals are 95% t-intervals.

    python bench/transfer_study.py                      # every setting, 3 seeds
    python bench/transfer_study.py --settings relay average --seeds 0 1 2 3 4
    python bench/transfer_study.py --report-only        # the table from the finished runs
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from hlgym import train
from hlgym.atomic import write_json_atomic
from hlgym.records import Stat
from hlgym.runs import RunFolder

SETTINGS: dict[str, list[str]] = {
    "relay": [],
    "average": ["transfer=average"],
    "distill": ["transfer=distill"],
    "logits": ["transfer=logits"],
    "byzantine-noise": ["byzantine_peers=2", "byzantine_mode=noise"],
    "byzantine-sign_flip": ["byzantine_peers=2", "byzantine_mode=sign_flip"],
    "byzantine-label_flip": ["byzantine_peers=2", "byzantine_mode=label_flip"],
}
POLICIES = ("ppo", "random", "round_robin", "greedy")
FIELDS = ("rounds", "comm_cost", "bytes_sent", "reached_goal", "final_accuracy", "byzantine_visits")


def run(setting: str, seed: int, out: Path, timesteps: int | None) -> Path:
    """Train (or resume, or skip) one setting and seed; returns its run folder."""
    folder = out / setting / f"seed{seed}"
    runs = RunFolder(folder)
    if runs.results_file.is_file():
        return folder
    if runs.has_run():
        argv = ["--out", str(folder), "--resume", "--no-progress"]
    else:
        argv = ["--seed", str(seed), "--out", str(folder), "--no-progress"]
        if SETTINGS[setting]:
            argv += ["--env-kwargs", *SETTINGS[setting]]
        if timesteps is not None:
            argv += ["--timesteps", str(timesteps)]
    start = time.perf_counter()
    train.main(argv)  # raises on failure; writes results.json last
    print(f"{setting} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def summarize(folders: list[Path]) -> dict[str, dict[str, Stat]]:
    """Per policy and field: PPO over training seeds (each seed's mean over the held-out
    episodes); random over the episodes of every run (hlgym-train seeds it with the training
    seed); round-robin and greedy, deterministic, over one run's episodes."""
    results = [RunFolder(f).read_results()["policies"] for f in folders]
    out: dict[str, dict[str, Stat]] = {}
    for policy in POLICIES:
        if policy == "ppo":
            out[policy] = {k: Stat.of([r[policy]["summary"][k]["mean"] for r in results]) for k in FIELDS}
        elif policy == "random":
            episodes = [e for r in results for e in r[policy]["episodes"]]
            out[policy] = {k: Stat.of([float(e[k]) for e in episodes]) for k in FIELDS}
        else:
            s = results[0][policy]["summary"]
            out[policy] = {k: Stat(s[k]["mean"], s[k]["ci95"], s[k]["n"]) for k in FIELDS}
    return out


def _cell(stat: Stat, digits: int, scale: float = 1.0) -> str:
    """``mean ± ci95``, the interval ``n/a`` when one value gives none."""
    ci = f"{scale * stat.ci95:.{digits}f}" if stat.n >= 2 else "n/a"
    return f"{scale * stat.mean:.{digits}f} ± {ci}"


def table(summaries: dict[str, dict[str, dict[str, Stat]]]) -> str:
    """A Markdown table of every setting and policy."""
    lines = [
        "| setting | policy | rounds | comm cost | MB sent | reached | final acc | byzantine visits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, policies in summaries.items():
        for policy, s in policies.items():
            byz = _cell(s["byzantine_visits"], 2) if "byz" in setting else "-"
            lines.append(
                f"| {setting} | {policy} | {_cell(s['rounds'], 2)} | {_cell(s['comm_cost'], 3)} "
                f"| {_cell(s['bytes_sent'], 3, 1e-6)} | {_cell(s['reached_goal'], 0, 100)} "
                f"| {_cell(s['final_accuracy'], 3)} | {byz} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the study (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=None, help="training steps (default: the YAML's)")
    parser.add_argument("--out", type=Path, default=Path("runs/transfer_study"))
    parser.add_argument("--report-only", action="store_true", help="only tabulate the finished runs")
    args = parser.parse_args(argv)
    summaries = {}
    for setting in args.settings:
        if args.report_only:
            folders = [args.out / setting / f"seed{s}" for s in args.seeds]
            folders = [f for f in folders if RunFolder(f).results_file.is_file()]
            if not folders:
                continue
        else:
            folders = [run(setting, s, args.out, args.timesteps) for s in args.seeds]
        summaries[setting] = summarize(folders)
    text = table(summaries)
    print(text)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "seeds": args.seeds,
        "summaries": {
            setting: {p: {k: vars(v) for k, v in s.items()} for p, s in policies.items()}
            for setting, policies in summaries.items()
        },
    }
    write_json_atomic(args.out / "study.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
