"""hlgym-bench: score an agent on the benchmark suite, normalized between random and the oracle.

    hlgym-bench random                       # a built-in agent (the shipped figures, replayed)
    hlgym-bench ucb:UCBAgent                 # a plug-in class (module:Class), --agent-kwargs k=v
    hlgym-bench runs/.../model.zip --ids hlgym/PeerSelection-v0   # a saved model (--algo ppo)

The suite (:data:`SUITE`) is every registered id that passes the validity test
(docs/benchmark.md) and each held-out family of the task distribution. Every case plays
:data:`EPISODES` held-out episodes (seeds :data:`SEED`..). Per episode seed, rounds and
communication are normalized between random (0) and the oracle (1) on the same seed:

    score = (random - agent) / max(random - oracle, floor)

with rounds counted as the episode played them (``max_rounds`` for one that missed the
goal) and communication as the episode's total hop cost; ``floor`` (one round; 0.01
distance units) keeps a seed on which the oracle did no better than random finite (there a
policy that matches random scores 0). A score above 1 beats the oracle's beam on that seed.
The baselines' and the oracle's episodes are deterministic: they ship as package data
(``hlgym/bench_reference.json``, written by ``hlgym-bench --write-reference``), so a run
plays only its own agent. Scores are aggregated over cases and episodes with rliable (the
``bench`` extra): interquartile mean with stratified bootstrap intervals, the probability of
improvement over each reference policy, and a performance profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from scipy import stats

import hlgym
from hlgym.agents import Agent, evaluate
from hlgym.atomic import write_json_atomic
from hlgym.envs.config import parse_pairs
from hlgym.envs.registration import TASKS_V1
from hlgym.records import CEILINGS
from hlgym.runs import fresh_run_dir

EPISODES = 20
SEED = 10_000  # hlgym-train's held-out evaluation seeds
REFERENCE_POLICIES = ("random", "round_robin", "greedy", "power_of_choice", "lookahead", "stay", "oracle")
"""What the shipped reference holds for every case (the oracle is a ceiling, not a competitor)."""
FLOORS = {"rounds": 1.0, "comm_cost": 0.01}  # [rounds], [distance units]
METRICS = tuple(FLOORS)
REFERENCE = "bench_reference.json"


class Case(NamedTuple):
    """One entry of the suite: a registered id, and for a task distribution a held-out family."""

    name: str
    env_id: str
    kwargs: dict[str, Any]


SUITE: tuple[Case, ...] = (
    Case("PeerSelection-v0", "hlgym/PeerSelection-v0", {}),
    Case("DomainShift-v1", "hlgym/DomainShift-v1", {}),
    Case("ModalityExperts-v1", "hlgym/ModalityExperts-v1", {}),
    *(Case(f"PeerSelection-{m}-v0", f"hlgym/PeerSelection-{m}-v0", {}) for m in ("Average", "Distill", "Logits")),
    *(
        Case(f"TaskDistribution-v1:{f['name']}", "hlgym/TaskDistribution-v1", {"tasks.split": f["name"]})
        for f in TASKS_V1["held_out"]
    ),
)
"""The benchmark's cases (docs/benchmark.md says why the other ids are not among them)."""


def machine() -> dict[str, Any]:
    """Where a figure was taken: the hlgym version and commit, torch, Python, the CPU."""
    commit = None
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = out.stdout.strip() or None
    return {
        "hlgym_version": hlgym.__version__,
        "commit": commit,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


# ---------------------------------------------------------------------------- agents


def builtin(name: str, kwargs: dict[str, Any] | None = None) -> Agent:
    """A built-in agent by name (as ``hlgym-train --algo``; ``random`` and
    ``power_of_choice`` seeded with 0)."""
    from hlgym.train import make_agent

    return make_agent(name, 0, kwargs)


def load_agent(spec: str, algo: str, kwargs: dict[str, Any]) -> tuple[str, Agent]:
    """``(name, agent)`` for AGENT: a built-in name, a plug-in ``module:Class``, or a saved
    model (``model.zip`` of an SB3 ``algo``; ``model.pt`` of hl_dqn or the RLlib backend).

    Raises:
        SystemExit: With one line naming AGENT and what is accepted.
    """
    path = Path(spec)
    label = path.parent.name if path.stem == "model" and path.parent.name else path.stem  # the run folder's name
    if path.suffix in (".zip", ".pt") or path.is_file():
        if not path.is_file():
            raise SystemExit(f"AGENT {spec!r}: no such file; accepted: a saved model.zip / model.pt")
        if path.suffix == ".zip":
            from hlgym.agents import sb3

            if algo not in sb3.ALGORITHMS:
                raise SystemExit(f"--algo {algo!r} is not accepted; accepted: {', '.join(sb3.ALGORITHMS)}")
            try:
                return label, sb3.SB3Agent(sb3.algorithm_class(algo).load(path, device="cpu"))
            except Exception as exc:  # a zip that is no SB3 model of algo
                raise SystemExit(f"AGENT {spec!r}: not a saved {algo} model ({exc})") from exc
        from hlgym.agents.attention import PeerSetAgent
        from hlgym.agents.hl_dqn import HLDQNAgent

        for loader in (PeerSetAgent.load, HLDQNAgent.load):
            try:
                return label, loader(path)
            except Exception:
                continue
        raise SystemExit(f"AGENT {spec!r}: not a model hl_dqn or the RLlib backend saved")
    if spec in REFERENCE_POLICIES or ":" in spec:
        try:
            return spec.rpartition(":")[2], builtin(spec, kwargs)
        except SystemExit as exc:  # hlgym-train's message names its --algo: here it is AGENT
            raise SystemExit(str(exc).replace(f"--algo {spec!r}", f"AGENT {spec!r}", 1)) from exc
    accepted = ", ".join(REFERENCE_POLICIES)
    raise SystemExit(f"AGENT {spec!r} is not accepted; accepted: {accepted}, module:Class, or a saved model file")


class Trained(NamedTuple):
    """One training seed's saved model of an ``hlgym-train`` run folder."""

    env_id: str
    algo: str
    seed: int
    model: Path


def trained_runs(specs: Sequence[str]) -> list[Trained]:
    """The models of ``hlgym-train`` run folders (one seed's, or ``--seeds``' with a
    ``seed_N`` folder each): together one learner over its training seeds.

    Raises:
        SystemExit: With one line naming the folder and what is accepted.
    """
    accepted = "accepted: hlgym-train run folders (config.json and model.zip / model.pt, or seed_*/ folders of them)"
    out: list[Trained] = []
    for spec in specs:
        folder = Path(spec)
        if not (folder / "config.json").is_file():
            raise SystemExit(f"AGENT {spec!r} is not a run folder; {accepted}")
        seeds = [folder] if not sorted(folder.glob("seed_*/config.json")) else sorted(folder.glob("seed_*"))
        for run in seeds:
            models = [run / name for name in ("model.zip", "model.pt") if (run / name).is_file()]
            if not models:
                raise SystemExit(f"AGENT {spec!r}: {run} holds no model.zip or model.pt (unfinished?); {accepted}")
            args = json.loads((run / "config.json").read_text())["args"]
            algo = str(args["algo"]) if args.get("backend", "sb3") == "sb3" else "rllib"
            out.append(Trained(str(args["env"]), algo, int(args["seed"]), models[0]))
    algos = sorted({t.algo for t in out})
    if len(algos) > 1:
        raise SystemExit(f"AGENT: the run folders train {', '.join(algos)}; accepted: runs of one algorithm")
    seen: set[tuple[str, int]] = set()
    for t in out:
        if (t.env_id, t.seed) in seen:
            raise SystemExit(f"AGENT: training seed {t.seed} on {t.env_id} is given twice; accepted: each seed once")
        seen.add((t.env_id, t.seed))
    return out


def fit_error(agent: Agent, env: gym.Env[Any, Any]) -> str | None:
    """Why a saved model cannot play ``env`` (None when it can, or when it cannot be told)."""
    obs_shape = tuple(env.observation_space.shape or ())
    n = int(env.action_space.n)  # type: ignore[attr-defined]
    model = getattr(agent, "model", None)
    if model is not None and hasattr(model, "observation_space"):  # SB3
        from hlgym.agents.attention import PeerAttentionPolicy

        want = tuple(model.observation_space.shape)
        if isinstance(model.policy, PeerAttentionPolicy):  # any number of peers, fixed columns
            return None if want[-1:] == obs_shape[-1:] else f"rows of {want[-1]} columns, the env has {obs_shape[-1]}"
        if want != obs_shape or int(model.action_space.n) != n:
            return f"observations {want} and {model.action_space.n} actions, the env has {obs_shape} and {n}"
        return None
    n_features = getattr(agent, "n_features", None)  # PeerSetAgent
    if n_features is not None and n_features != obs_shape[-1]:
        return f"rows of {n_features} columns, the env has {obs_shape[-1]}"
    q = getattr(agent, "q", None)  # HLDQNAgent
    if q is not None:
        layers = [m for m in q.modules() if isinstance(m, torch.nn.Linear)]
        if layers[0].in_features != int(np.prod(obs_shape)) or layers[-1].out_features != n:
            inputs, actions = layers[0].in_features, layers[-1].out_features
            return f"{inputs} inputs and {actions} actions, the env has {obs_shape} and {n}"
    return None


# ---------------------------------------------------------------------------- playing


def make_env(case: Case) -> gym.Env[Any, Any]:
    """The case's env."""
    return gym.make(case.env_id, **case.kwargs)


def episodes_of(evaluation: Any) -> list[dict[str, Any]]:
    """What the scores read of each episode."""
    return [
        {
            "seed": r.seed,
            "rounds": r.rounds,
            "comm_cost": r.comm_cost,
            "reached_goal": r.reached_goal,
            "final_accuracy": r.final_accuracy,
        }
        for r in evaluation.records
    ]


def play(name: str, agent: Agent, case: Case, episodes: int, progress: bool) -> list[dict[str, Any]]:
    """``agent`` on the case's held-out episodes (``stay``: the best fixed peer of them)."""
    from hlgym.agents import StayAgent

    env = make_env(case)
    try:
        label = f"{name} on {case.name}"
        if isinstance(agent, StayAgent):
            return episodes_of(agent.choose(env, episodes, SEED, progress))
        return episodes_of(evaluate(agent, env, episodes, SEED, progress, label=label))
    finally:
        env.close()


def write_reference(path: Path, cases: Sequence[Case], episodes: int, progress: bool) -> dict[str, Any]:
    """Play every reference policy on ``cases``; write them into ``path`` (resumable: a case
    and policy already there with the same episodes and hlgym version is kept)."""
    ref: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if ref.get("episodes") != episodes or ref.get("hlgym_version") != hlgym.__version__:
        ref = {"episodes": episodes, "seed": SEED, "hlgym_version": hlgym.__version__, "cases": {}}
    ref["machine"] = machine()
    for case in cases:
        done = ref["cases"].setdefault(case.name, {})
        for policy in REFERENCE_POLICIES:
            if policy in done:
                continue
            start = time.perf_counter()
            done[policy] = play(policy, builtin(policy), case, episodes, progress)
            ref.setdefault("seconds", {}).setdefault(case.name, {})[policy] = time.perf_counter() - start
            write_json_atomic(path, ref)
    return ref


def load_reference(path: str | None = None) -> dict[str, Any]:
    """The reference figures: ``path``, or those shipped as package data."""
    text = Path(path).read_text() if path else (resources.files("hlgym") / REFERENCE).read_text()
    return dict(json.loads(text))


# ---------------------------------------------------------------------------- scores


Episodes = Sequence[dict[str, Any]]
Scores = dict[str, dict[str, dict[str, list[float]]]]  # policy -> case -> metric -> per-episode scores


def normalized(agent: Episodes, random: Episodes, oracle: Episodes) -> dict[str, list[float]]:
    """Per episode seed and metric: ``(random - agent) / max(random - oracle, floor)``."""
    out: dict[str, list[float]] = {}
    for metric in METRICS:
        out[metric] = [
            (r[metric] - a[metric]) / max(r[metric] - o[metric], FLOORS[metric])
            for a, r, o in zip(agent, random, oracle, strict=True)
        ]
    return out


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean (the mean of the middle half), robust to the seeds on which the
    floor divides a large difference."""
    return float(stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25))


def aggregate(scores: Scores, against: str) -> dict[str, Any] | None:
    """rliable's interquartile mean over cases and episodes (stratified bootstrap 95%
    intervals) per policy and metric, and the probability that ``against`` improves on each
    other policy; None when rliable (the ``bench`` extra) is not installed.

    Args:
        scores: ``{policy: {case: {metric: per-episode scores}}}``.
        against: The policy whose probability of improvement is reported.
    """
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        return None
    out: dict[str, Any] = {}
    cases = sorted(next(iter(scores.values())))
    # rliable's StratifiedBootstrap draws from numpy's global RNG (library.py update_indices),
    # whatever random_state says: seed it for these calls, then give the caller's state back.
    state = np.random.get_state()  # noqa: NPY002  (rliable reads the legacy global RNG)
    np.random.seed(0)  # noqa: NPY002
    try:
        for metric in METRICS:
            # (episodes, cases) matrices: rliable's runs are the episode seeds here.
            matrix = {p: np.array([s[c][metric] for c in cases]).T for p, s in scores.items()}
            points, intervals = rly.get_interval_estimates(
                matrix, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=2000
            )
            out[metric] = {
                p: {"iqm": float(points[p][0]), "ci95": [float(intervals[p][0][0]), float(intervals[p][1][0])]}
                for p in matrix
            }
            for p in matrix:
                if p != against:
                    improves = metrics.probability_of_improvement(matrix[against], matrix[p])
                    out[metric][p]["prob_improvement_of_" + against] = float(improves)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return out


def profile(scores: Scores, metric: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The performance profile: for each threshold, the share of (case, episode) scores above it."""
    taus = np.linspace(-1.0, 1.5, 51)
    out = {}
    for policy, per_case in scores.items():
        values = np.concatenate([per_case[c][metric] for c in per_case])
        out[policy] = np.array([(values > t).mean() for t in taus])
    return taus, out


def draw(scores: Scores, folder: Path) -> list[Path]:
    """The performance profiles and the per-case bars (mean normalized rounds), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        taus, shares = profile(scores, metric)
        for policy, share in shares.items():
            ax.plot(taus, share, label=policy + (" (ceiling)" if policy in CEILINGS else ""))
        ax.set_xlabel(f"normalized {'rounds' if metric == 'rounds' else 'communication'} score τ (0 random, 1 oracle)")
        ax.set_ylabel("share of episodes with score > τ")
        ax.axvline(0, color="gray", lw=0.5)
        ax.axvline(1, color="gray", lw=0.5)
    axes[0].legend(fontsize=8)
    paths.append(folder / "profile.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    cases = list(next(iter(scores.values())))
    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    width = 0.8 / len(scores)
    for k, (policy, per_case) in enumerate(scores.items()):
        iqms = [iqm(per_case[c]["rounds"]) for c in cases]
        ax.bar(np.arange(len(cases)) + k * width, iqms, width, label=policy)
    ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, [c.replace(":", "\n") for c in cases], fontsize=7)
    ax.set_ylabel("normalized rounds score, IQM over episodes\n(0 random, 1 oracle)")
    ax.axhline(1, color="gray", lw=0.5)
    ax.legend(fontsize=7, ncol=4)
    paths.append(folder / "cases.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def table(results: dict[str, Any], agent: str) -> str:
    """Per case the raw figures and scores of the agent and the references, then the aggregate."""
    lines: list[str] = []
    head = f"{'case':38} {'policy':18} {'reached':>8} {'rounds':>7} {'comm':>7} {'rounds IQM':>13} {'comm IQM':>11}"
    for case, per_policy in results["cases"].items():
        lines += ["", head, "-" * len(head)]
        for policy, entry in per_policy.items():
            eps = entry["episodes"]
            name = policy + (" (ceiling)" if policy in CEILINGS else "") + (" *" if policy == agent else "")
            lines.append(
                f"{case:38} {name:18} {np.mean([e['reached_goal'] for e in eps]):8.0%} "
                f"{np.mean([e['rounds'] for e in eps]):7.2f} {np.mean([e['comm_cost'] for e in eps]):7.3f} "
                f"{iqm(entry['scores']['rounds']):13.3f} {iqm(entry['scores']['comm_cost']):11.3f}"
            )
    agg = results.get("aggregate")
    if agg is None:
        lines += ["", "aggregate: pip install -c constraints.txt -e '.[bench]' for rliable's IQM and intervals"]
    else:
        entries = results["cases"].values()
        seeds: list[int] = next((e[agent]["training_seeds"] for e in entries if "training_seeds" in e[agent]), [])
        pooled = f" (* pooled over training seeds {', '.join(map(str, seeds))})" if seeds else ""
        head = f"aggregate over {len(results['cases'])} cases x episodes: IQM [95% CI], P(* improves on it)"
        lines += ["", head + pooled]
        for policy in agg["rounds"]:
            cells = []
            for metric in METRICS:
                a = agg[metric][policy]
                p = a.get(f"prob_improvement_of_{agent}")
                cells.append(
                    f"{metric} {a['iqm']:6.3f} [{a['ci95'][0]:6.3f}, {a['ci95'][1]:6.3f}]"
                    + ("" if p is None else f" P={p:.2f}")
                )
            lines.append(f"  {policy:24} " + "   ".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hlgym-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "agent",
        nargs="*",
        metavar="AGENT",
        help="a built-in name, module:Class, a saved model file, or hlgym-train run folders (one learner: "
        "each folder's models play the cases of the id it trained on, its training seeds pooled)",
    )
    parser.add_argument(
        "--agent-kwargs", nargs="*", default=[], metavar="KEY=VALUE", help="a built-in or plug-in agent's arguments"
    )
    parser.add_argument("--algo", default="ppo", help="the SB3 algorithm of a saved model.zip (default: ppo)")
    parser.add_argument("--ids", nargs="*", help="cases of the suite to play (default: all); ids or case names")
    parser.add_argument(
        "--episodes", type=int, default=EPISODES, help=f"episodes per case (default and reference: {EPISODES})"
    )
    parser.add_argument("--out", help="the run folder (default: runs/bench_<agent>); an unfinished one resumes")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument(
        "--write-reference", metavar="FILE", help="maintainers: play every reference policy on the suite into FILE"
    )
    parser.add_argument("--reference", metavar="FILE", help="reference figures to score against (default: the shipped)")
    return parser


def select(ids: Sequence[str] | None) -> list[Case]:
    """The suite's cases named by ``ids`` (a case name, or an id: all its cases)."""
    if not ids:
        return list(SUITE)
    out = []
    for name in ids:
        found = [c for c in SUITE if name in (c.name, c.env_id)]
        if not found:
            accepted = ", ".join(c.name for c in SUITE)
            raise SystemExit(f"--ids {name!r} is not in the suite; accepted: {accepted} (or their ids)")
        out += [c for c in found if c not in out]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """The hlgym-bench command; returns the results it wrote."""
    args = build_parser().parse_args(argv)
    if args.write_reference:
        write_reference(Path(args.write_reference), select(args.ids), args.episodes, args.progress)
        print(f"wrote {args.write_reference}")
        return {}
    if not args.agent:
        raise SystemExit("AGENT is missing; accepted: a built-in name, module:Class, or a saved model file")
    if args.episodes < 1:
        raise SystemExit(f"--episodes {args.episodes} is not accepted; accepted: an integer >= 1")
    try:
        kwargs = parse_pairs(args.agent_kwargs, "--agent-kwargs")
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    cases = select(args.ids)
    trained: list[Trained] = []
    models: dict[str, list[Trained]] = {}
    if len(args.agent) > 1 or Path(args.agent[0]).is_dir():
        trained = trained_runs(args.agent)
        name = trained[0].algo
        covered = [c for c in cases if any(t.env_id == c.env_id for t in trained)]
        if not covered:
            ids = ", ".join(sorted({t.env_id for t in trained}))
            raise SystemExit(f"AGENT: the runs trained on {ids}, no case of --ids; accepted: runs on the suite's ids")
        per_case = {c.name: sum(t.env_id == c.env_id for t in trained) for c in covered}
        if len(set(per_case.values())) > 1:
            counts = ", ".join(f"{c} {k}" for c, k in per_case.items())
            raise SystemExit(f"AGENT: training seeds per case differ ({counts}); accepted: as many seeds on every id")
        skipped = [c.name for c in cases if c not in covered]
        if skipped:
            print(f"not covered by the runs (not played): {', '.join(skipped)}")
        cases = covered
        models = {c.name: [t for t in trained if t.env_id == c.env_id] for c in cases}
    else:
        name, agent = load_agent(args.agent[0], args.algo, kwargs)
    reference = load_reference(args.reference)
    if args.episodes > reference["episodes"]:
        raise SystemExit(
            f"--episodes {args.episodes} is not accepted; accepted: 1 to {reference['episodes']} (the reference's)"
        )
    missing = [c.name for c in cases if c.name not in reference["cases"]]
    if missing:
        known = ", ".join(reference["cases"])
        raise SystemExit(f"the reference has no figures for {', '.join(missing)}; accepted: --ids among {known}")
    for case in cases:  # a saved model that cannot play a case fails before anything is written
        env = make_env(case)
        players = [(str(t.model), load_agent(str(t.model), t.algo, {})[1]) for t in models.get(case.name, [])]
        for spec, player in players or [(args.agent[0], agent)]:
            why = fit_error(player, env)
            if why is not None:
                env.close()
                raise SystemExit(
                    f"AGENT {spec!r} cannot play {case.name}: the model takes {why}; accepted: --ids of cases it fits"
                )
        env.close()
    out = Path(args.out) if args.out else fresh_run_dir(f"runs/bench_{name}")
    partial = out / "results.json"
    options = {"agent": args.agent, "agent_kwargs": args.agent_kwargs, "algo": args.algo, "episodes": args.episodes}
    results: dict[str, Any] = json.loads(partial.read_text()) if partial.exists() else {}
    if results.get("options") != options:
        results = {"options": options, "cases": {}}
    results.update(machine=machine(), seed=SEED, suite=[c.name for c in cases], reference_machine=reference["machine"])
    n = args.episodes
    for case in cases:
        ref = reference["cases"][case.name]
        random, oracle = ref["random"][:n], ref["oracle"][:n]
        entry = results["cases"].setdefault(case.name, {})
        if name not in entry and trained:  # every training seed's model, its episodes and scores pooled
            played: dict[str, list[Any]] = {"episodes": [], "rounds": [], "comm_cost": [], "training_seeds": []}
            for t in models[case.name]:
                mine = play(f"{name} seed {t.seed}", load_agent(str(t.model), t.algo, {})[1], case, n, args.progress)
                seed_scores = normalized(mine, random, oracle)
                played["episodes"] += [{**e, "training_seed": t.seed} for e in mine]
                played["rounds"] += seed_scores["rounds"]
                played["comm_cost"] += seed_scores["comm_cost"]
                played["training_seeds"].append(t.seed)
            entry[name] = {
                "episodes": played["episodes"],
                "scores": {m: played[m] for m in METRICS},
                "training_seeds": played["training_seeds"],
            }
            write_json_atomic(partial, results)  # a killed run resumes from the next case
        elif name not in entry:  # a fresh agent per case, as the reference's
            fresh = agent if case is cases[0] else load_agent(args.agent[0], args.algo, kwargs)[1]
            mine = play(name, fresh, case, n, args.progress)
            entry[name] = {"episodes": mine, "scores": normalized(mine, random, oracle)}
            write_json_atomic(partial, results)  # a killed run resumes from the next case
        for policy in REFERENCE_POLICIES:
            if policy != name:
                eps = ref[policy][:n]
                entry[policy] = {"episodes": eps, "scores": normalized(eps, random, oracle)}
    scores = {
        p: {c: results["cases"][c][p]["scores"] for c in results["cases"] if c in [k.name for k in cases]}
        for p in [name, *(q for q in REFERENCE_POLICIES if q != name)]
    }
    results["aggregate"] = aggregate(scores, name)
    results["figures"] = [str(p) for p in draw(scores, out / "plots")]
    write_json_atomic(partial, results)
    print(table(results, name))
    print(f"\nwrote {partial} and {', '.join(results['figures'])}")
    return results


def cli() -> None:
    """Console entry point."""
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        raise SystemExit(130) from None
