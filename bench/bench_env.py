"""Step time of the environments (train / evaluate / observe), achieved GFLOP/s against a
matmul measured in the same run, the batched vector env against SB3's DummyVecEnv at
several n_envs, and memory across resets.

    python bench/bench_env.py                      # default env + the HL presets whose data is here
    python bench/bench_env.py --steps 200 --json bench/results.json
    python bench/bench_env.py --n-envs 2 4 8 16    # the vector-env table at these sizes
    python bench/bench_env.py --transfer           # only: step time of every transfer mode
    python bench/bench_env.py --tasks              # only: TaskDistribution-v1 batched against DummyVecEnv
    python bench/bench_env.py --scenarios [ID ...] # only: step time of the scenario ids (or those named)
    python bench/bench_env.py --memory             # only: 8 batched HL-FashionMNIST copies over
                                                   # resets, the heap trim on and off
    python bench/bench_env.py --bound              # only: the HL-FashionMNIST step against the
                                                   # matmul bound, float32 and bfloat16, the code
                                                   # before the bound work and after

Prints tables and writes JSON. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import hlgym
from hlgym.agents.sb3 import BatchedPeerSelectionVecEnv
from hlgym.envs import PRESETS, DataNotFoundError, Episode, PeerSelectionEnv, TaskDistributionEnv, memory
from hlgym.envs.components.transfer import TRANSFERS
from hlgym.envs.rounds import PHASES  # the keys of the envs' last_timing
from hlgym.models import pooling
from hlgym.models.work import EVAL_PRECISIONS

# Each transfer mode as the README's table names it, with its overrides.
MODES: dict[str, dict[str, Any]] = {
    **{mode: {"transfer": mode} for mode in TRANSFERS},
    "distill (features)": {"transfer": "distill", "distill_on": "features"},
}
# The domain-shift ids' settings timed by --scenarios (the registered rotation unless named).
SCENARIOS: dict[str, dict[str, Any]] = {
    "rotate": {},
    "rotate + mmd": {"alignment": "mmd"},
    "noise (random rule)": {
        "domain_shift": "noise",
        "source_domains": [0.0, 0.1, 0.2, 0.3],
        "target_domain": 0.5,
        "domain_rule": "random",
    },
    "average + mmd": {"transfer": "average", "alignment": "mmd"},
}
# The modality-experts id's settings timed by --scenarios (the registered halves unless named).
MODALITIES: dict[str, dict[str, Any]] = {
    "columns (2)": {},
    "rows (4), random rule": {"modality_split": "rows", "modalities": 4, "modality_rule": "random"},
    "average": {"transfer": "average"},
    "logits": {"transfer": "logits"},
}


def forward_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of one sample (2 per multiply-add;
    convolutions and linear layers only, which is where the time goes)."""
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * k * output[0].numel()
        elif isinstance(module, torch.nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return total


def step_flops(episode: Episode, peer: int, per_sample: int) -> float:
    """Arithmetic of one step at ``peer``: training (forward + backward, about 3x a forward)
    on its data, evaluation of the reward's test images, and the probes."""
    trained = 3 * per_sample * len(episode.peer_y[peer]) * episode.config.local_epochs
    probed = len(episode.probe_y) if episode.config.observation == "peer_features" else 0
    return float(trained + per_sample * (len(episode.data.y_eval) + probed))


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of an n x n matrix multiply on this machine: the best of ``repeats``
    (the machine's peak rate; a shared machine's slow spells only lower single runs)."""
    a = torch.rand(n, n)
    b = torch.rand(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def rss_mb() -> float:
    """Resident memory of this process now [MB]."""
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def memory_across_resets(env_id: str, resets: int, **overrides: Any) -> dict[str, Any]:
    """Resident memory after the first reset and after ``resets`` more (two steps each)."""
    env = gym.make(env_id, **overrides)
    env.reset(seed=0)
    env.step(1)
    first = rss_mb()
    seen = [first]
    for i in range(resets):
        env.reset(seed=i)
        env.step(1)
        env.step(2)
        seen.append(rss_mb())
    last = rss_mb()
    return {
        "env_id": env_id,
        "resets": resets,
        "rss_first_mb": first,
        "rss_last_mb": last,
        "growth_mb": last - first,
        "rss_max_mb": max(seen),
    }


def bench(env_id: str, steps: int, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """Time ``steps`` steps of a round-robin route (episodes restart as they end).

    Returns:
        Medians and means [ms] of the whole step and of each phase.
    """
    env = gym.make(env_id, **overrides)
    base = env.unwrapped
    assert isinstance(base, PeerSelectionEnv)
    n = base.config.n_peers
    env.reset(seed=seed)
    env.step(1)  # warm-up: first-call allocations are not what a long run sees
    totals: list[float] = []
    phases: dict[str, list[float]] = {k: [] for k in PHASES}
    holder = 1
    # The architecture is fixed for the env, so its per-sample cost is counted once.
    per_sample = forward_flops(base.model, base.episode.data.input_shape)
    flops: list[float] = []
    for _ in range(steps):
        holder = (holder + 1) % n
        flops.append(step_flops(base.episode, holder, per_sample))
        t = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(holder)
        totals.append(time.perf_counter() - t)
        for k in phases:
            phases[k].append(base.last_timing[k])
        if terminated or truncated:
            env.reset()
    ms = 1e3
    return {
        "env_id": env_id,
        "overrides": overrides,
        "steps": steps,
        "step_ms_mean": ms * statistics.fmean(totals),
        "step_ms_median": ms * statistics.median(totals),
        "steps_per_s": 1.0 / statistics.fmean(totals),
        "gflop_per_step": statistics.fmean(flops) / 1e9,
        "gflops": statistics.fmean(flops) / statistics.fmean(totals) / 1e9,
        **{f"{k}_ms_median": ms * statistics.median(v) for k, v in phases.items()},
    }


def _time_vec(
    venv: VecEnv, steps: int, rng: np.random.Generator, n_peers: int, phases: dict[str, list[float]] | None = None
) -> list[float]:
    """Wall time of ``steps`` vector steps [s]; with ``phases`` (``venv`` is then the batched
    env), also each step's train / evaluate / observe time."""
    times = []
    for _ in range(steps):
        actions = rng.integers(0, n_peers, venv.num_envs)
        t = time.perf_counter()
        venv.step(actions)
        times.append(time.perf_counter() - t)
        if phases is not None:
            assert isinstance(venv, BatchedPeerSelectionVecEnv)
            for k in PHASES:
                phases[k].append(venv.last_timing[k])
    return times


def bench_vec(env_id: str, n_envs: int, steps: int, blocks: int = 2, **overrides: Any) -> dict[str, Any]:
    """Env-steps per second of ``n_envs`` copies in SB3's DummyVecEnv and in the batched env.

    The two are timed in alternating blocks of ``steps`` vector steps (random actions, the
    same for both), so a slow spell of a shared machine falls on both.

    Returns:
        Both rates, the speed-up, and the batched env's GFLOP/s and phase medians [ms per env-step].
    """
    cfg = PRESETS[env_id].replace(**overrides)
    lone = TaskDistributionEnv if cfg.tasks is not None else PeerSelectionEnv  # a task distribution's copies
    dummy = DummyVecEnv([lambda: lone(cfg) for _ in range(n_envs)])
    batched = BatchedPeerSelectionVecEnv(cfg, n_envs)
    n_actions = int(batched.action_space.n)  # type: ignore[attr-defined]
    times: dict[str, list[float]] = {"dummy": [], "batched": []}
    phases: dict[str, list[float]] = {k: [] for k in PHASES}
    venvs: dict[str, VecEnv] = {"dummy": dummy, "batched": batched}
    for venv in venvs.values():
        venv.seed(0)
        venv.reset()
        _time_vec(venv, 1, np.random.default_rng(0), n_actions)  # warm-up
    for block in range(blocks):
        for name, venv in venvs.items():
            record = phases if venv is batched else None
            times[name] += _time_vec(venv, steps, np.random.default_rng(block), n_actions, record)
    # The batched env's arithmetic per vector step: every copy trains at a peer of equal data.
    copy = batched.envs[0]
    per_sample = forward_flops(copy.model, copy.episode.data.input_shape)
    flop = n_envs * step_flops(copy.episode, 0, per_sample)
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    return {
        "env_id": env_id,
        "overrides": overrides,
        "n_envs": n_envs,
        "steps": steps * blocks,
        "dummy_env_steps_per_s": n_envs / mean["dummy"],
        "batched_env_steps_per_s": n_envs / mean["batched"],
        "speedup": mean["dummy"] / mean["batched"],
        "gflops": flop / mean["batched"] / 1e9,
        **{f"{k}_ms_median": 1e3 * statistics.median(v) / n_envs for k, v in phases.items()},
    }


def peak_rss_mb() -> float:
    """The most resident memory this process has had [MB] (VmHWM)."""
    with open(f"/proc/{os.getpid()}/status") as fh:
        line = next(line for line in fh if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1e3  # kB


def memory_across_resets_batched(env_id: str, n_envs: int, resets: int, **overrides: Any) -> dict[str, Any]:
    """Resident memory of the batched env after its first reset and after ``resets`` more
    (a step each), with the median time of those steps."""
    venv = BatchedPeerSelectionVecEnv(PRESETS[env_id], n_envs, **overrides)
    venv.seed(0)
    venv.reset()
    first = rss_mb()
    seen, steps = [first], []
    for i in range(resets):
        venv.seed(i)
        venv.reset()
        start = time.perf_counter()
        venv.step(np.full(n_envs, 1))
        steps.append(time.perf_counter() - start)
        seen.append(rss_mb())
    last = rss_mb()
    name = f"{env_id} (batched x{n_envs})"
    return {
        "env_id": name,
        "resets": resets,
        "rss_first_mb": first,
        "rss_last_mb": last,
        "growth_mb": last - first,
        "rss_max_mb": max(seen),
        "rss_after_each_mb": seen,
        "peak_rss_mb": peak_rss_mb(),
        "step_s_median": statistics.median(steps) if steps else float("nan"),
        "heap_trim": os.environ.get("HLGYM_TRIM_HEAP", "1") != "0",
    }


def _memory_in_a_fresh_process(trim: bool, env_id: str, n_envs: int, resets: int) -> dict[str, Any]:
    os.environ["HLGYM_TRIM_HEAP"] = "1" if trim else "0"
    return memory_across_resets_batched(env_id, n_envs, resets)


def bench_memory(env_id: str, n_envs: int, resets: int) -> list[dict[str, Any]]:
    """:func:`memory_across_resets_batched` with the heap trim off and on (hlgym.envs.memory),
    each in a fresh process (a heap's history would carry over); prints a table."""
    rows = []
    for trim in (False, True):
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(_memory_in_a_fresh_process, trim, env_id, n_envs, resets).result())
        print(f"heap trim {'on' if trim else 'off'}: {[round(m) for m in rows[-1]['rss_after_each_mb']]}", flush=True)
    _table(
        rows,
        [
            ("env", -38, lambda m: m["env_id"]),
            ("trim", 4, lambda m: "on" if m["heap_trim"] else "off"),
            ("resets", 6, lambda m: str(m["resets"])),
            *[(f"RSS {k} MB", 12, lambda m, k=k: f"{m[f'rss_{k}_mb']:.0f}") for k in ("first", "last", "max")],
            ("peak MB", 8, lambda m: f"{m['peak_rss_mb']:.0f}"),
            ("step s", 7, lambda m: f"{m['step_s_median']:.2f}"),
        ],
    )
    print("(RSS after the first reset and after each reset + step; peak: VmHWM; step: median of a vector step)")
    return rows


Column = tuple[str, int, Callable[[dict[str, Any]], str]]


@contextmanager
def step_code(name: str) -> Iterator[None]:
    """A lone env's HL step as the package runs it (``"after"``) or as it ran before the
    matmul-bound work (``"before"``: torch's ``F.max_pool2d`` for the CNN's inference pooling,
    and a heap trim after every long round whatever the heaps hold), in the same process."""
    pool, free = pooling.max_pool2d, memory.heap_free_bytes
    if name == "before":
        # MaxPool2d.forward and HeapTrim look the names up at each call; F.max_pool2d takes
        # the same arguments; None is "unknown", on which every long round trims.
        pooling.max_pool2d = F.max_pool2d  # type: ignore[assignment]
        memory.heap_free_bytes = lambda: None
    try:
        yield
    finally:
        pooling.max_pool2d, memory.heap_free_bytes = pool, free


def bench_bound(env_id: str, steps: int, blocks: int) -> list[dict[str, Any]]:
    """The HL step against the matmul bound measured in the same process: each evaluation
    precision with the code before and after (:func:`step_code`), in ``blocks`` alternating
    blocks of ``steps`` steps (the machine's drift falls on every variant alike).

    Returns:
        One row per (code, precision): the median over blocks of each block's median step
        and phases [ms], the step's GFLOP, the matmul's GFLOP/s and the step over its bound.
    """
    matmul = matmul_gflops()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(blocks):
        for code in ("before", "after"):
            with step_code(code):
                for name in EVAL_PRECISIONS:
                    runs.setdefault((code, name), []).append(bench(env_id, steps, goal=1.0, eval_precision=name))
    matmul = max(matmul, matmul_gflops())  # at the start and at the end: the better of the two
    rows = []
    for (code, name), results in runs.items():
        row: dict[str, Any] = {"env_id": env_id, "code": code, "eval_precision": name, "blocks": blocks}
        for key in ("step_ms_median", *(f"{k}_ms_median" for k in PHASES)):
            row[key] = statistics.median(r[key] for r in results)
        row["gflop_per_step"] = results[0]["gflop_per_step"]
        row["matmul_gflops"] = matmul
        row["bound_ms"] = 1e3 * row["gflop_per_step"] / matmul
        row["of_bound"] = row["step_ms_median"] / row["bound_ms"]
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]], columns: list[Column]) -> None:
    """Print ``rows`` under a header; a column is (title, width, cell); negative width: left-aligned."""
    header = " ".join(f"{t:<{-w}}" if w < 0 else f"{t:>{w}}" for t, w, _ in columns)
    print(header)
    print("-" * len(header))
    for r in rows:
        print(" ".join(f"{cell(r):<{-w}}" if w < 0 else f"{cell(r):>{w}}" for _, w, cell in columns))


def bench_settings(
    plan: list[tuple[str, dict[str, dict[str, Any]]]],
    steps: int,
    hl_steps: int,
    vec_steps: int,
    n_envs: int,
) -> list[dict[str, Any]]:
    """Step time of each id's settings in ``plan``, alone and in the batched env (an id on
    28x28 data, if its data is here, with ``hl_steps`` and ``vec_steps``; a digits id with
    ``steps`` and ten times ``vec_steps``); prints a table and returns its rows."""
    rows = []
    for env_id, settings in plan:
        digits = PRESETS[env_id].dataset == "digits"
        n_steps, n_vec = (steps, 10 * vec_steps) if digits else (hl_steps, vec_steps)
        for name, overrides in settings.items():
            try:
                single = bench(env_id, n_steps, goal=1.0, **overrides)
            except DataNotFoundError:
                print(f"{env_id}: data not found on this machine, skipped")
                break
            vec = bench_vec(env_id, n_envs, n_vec, goal=1.0, **overrides)
            rows.append({"env_id": env_id, "mode": name, "single": single, "vec": vec})
            print(f"{env_id} {name}: {single['step_ms_median']:.2f} ms", flush=True)
    _table(
        rows,
        [
            ("env", -34, lambda r: r["env_id"]),
            ("setting", -19, lambda r: r["mode"]),
            ("step ms", 8, lambda r: f"{r['single']['step_ms_median']:.2f}"),
            ("train ms", 8, lambda r: f"{r['single']['train_ms_median']:.2f}"),
            ("evaluate", 8, lambda r: f"{r['single']['evaluate_ms_median']:.2f}"),
            ("observe", 8, lambda r: f"{r['single']['observe_ms_median']:.2f}"),
            (f"Dummy x{n_envs}", 9, lambda r: f"{1e3 / r['vec']['dummy_env_steps_per_s']:.2f}"),
            (f"batched x{n_envs}", 11, lambda r: f"{1e3 / r['vec']['batched_env_steps_per_s']:.2f}"),
        ],
    )
    print(f"(medians of a lone env's step [ms]; x{n_envs}: mean ms per env-step of DummyVecEnv and the batched env)")
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write one mode's rows as JSON with the versions, threads and machine."""
    meta = {"hlgym": hlgym.__version__, "torch": torch.__version__, "threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "machine": platform.processor(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="steps timed on the default env")
    parser.add_argument("--hl-steps", type=int, default=40, help="steps timed on the HL presets")
    parser.add_argument("--resets", type=int, default=100, help="resets in the memory check (a tenth on HL presets)")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[2, 4, 8], help="vector-env sizes compared")
    parser.add_argument("--vec-steps", type=int, default=4, help="vector steps per timed block on the HL presets")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures")
    parser.add_argument("--transfer", action="store_true", help="only time every transfer mode (alone and batched)")
    parser.add_argument(
        "--tasks", action="store_true", help="only: TaskDistribution-v1 in DummyVecEnv against the batched engine"
    )
    parser.add_argument(
        "--scenarios",
        nargs="*",
        metavar="ID",
        default=None,
        help="only time the scenario ids (alone and batched): all of them, or those named",
    )
    parser.add_argument(
        "--memory", action="store_true", help="only: batched HL-FashionMNIST over --resets / 10 resets, trim off and on"
    )
    parser.add_argument(
        "--bound",
        action="store_true",
        help="only: the HL-FashionMNIST step (--hl-steps a block, 3 blocks) against the matmul bound, "
        "float32 and bfloat16, the code before the bound work and after",
    )
    args = parser.parse_args()
    if any(n < 1 for n in args.n_envs):
        parser.error(f"--n-envs {args.n_envs}: accepted: integers >= 1")
    if args.bound:
        try:
            rows = bench_bound("hlgym/HL-FashionMNIST-v0", args.hl_steps, blocks=3)
        except DataNotFoundError as error:
            parser.exit(1, f"--bound needs Fashion-MNIST: {error}\n")
        machine = platform.processor() or platform.machine()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}")
        print(
            f"matmul {rows[0]['matmul_gflops']:.1f} GFLOP/s; the step's {rows[0]['gflop_per_step']:.1f} GFLOP: "
            f"bound {rows[0]['bound_ms']:.0f} ms"
        )
        _table(
            rows,
            [
                ("code", -6, lambda r: r["code"]),
                ("evaluation", -10, lambda r: r["eval_precision"]),
                ("step ms", 8, lambda r: f"{r['step_ms_median']:.1f}"),
                *[(k, 8, lambda r, k=k: f"{r[k + '_ms_median']:.1f}") for k in PHASES],
                ("of bound", 8, lambda r: f"{r['of_bound']:.2f}x"),
            ],
        )
        print("(medians over 3 alternating blocks of each block's median step; target: at most 1.5x the bound)")
        _write_rows(Path(args.json).with_name("bound.json"), rows)
        return
    if args.memory:
        env_id, n = "hlgym/HL-FashionMNIST-v0", max(args.n_envs)
        rows = bench_memory(env_id, n, max(2, args.resets // 10))
        _write_rows(Path(args.json).with_name("memory.json"), rows)
        return
    if args.tasks:
        rows = [bench_vec("hlgym/TaskDistribution-v1", n, 10 * args.vec_steps) for n in args.n_envs]
        print("TaskDistribution-v1, env steps/s: n_envs, DummyVecEnv of TaskDistributionEnv, batched, speed-up")
        for row in rows:
            print(
                f"  {row['n_envs']}: {row['dummy_env_steps_per_s']:.0f}, {row['batched_env_steps_per_s']:.0f}, "
                f"{row['speedup']:.2f}x"
            )
        path = Path(args.json).with_name("tasks_vec.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"hlgym": hlgym.__version__, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")
        return
    if args.transfer or args.scenarios is not None:
        n = max(args.n_envs)
        if args.transfer:
            plan, name = [("hlgym/PeerSelection-v0", MODES), ("hlgym/HL-FashionMNIST-v0", MODES)], "transfer"
        else:
            plan = [
                ("hlgym/DomainShift-v0", SCENARIOS),
                ("hlgym/DomainShift-FashionMNIST-v0", SCENARIOS),
                ("hlgym/ModalityExperts-v0", MODALITIES),
            ]
            unknown = set(args.scenarios) - {env_id for env_id, _ in plan}
            if unknown:
                parser.error(f"--scenarios {sorted(unknown)}: accepted: {', '.join(env_id for env_id, _ in plan)}")
            plan = [(env_id, settings) for env_id, settings in plan if not args.scenarios or env_id in args.scenarios]
            name = "scenarios"
        rows = bench_settings(plan, args.steps, args.hl_steps, args.vec_steps, n)
        _write_rows(Path(args.json).with_name(f"{name}.json"), rows)
        return

    matmul = matmul_gflops()
    rows = [bench("hlgym/PeerSelection-v0", args.steps, goal=1.0)]
    memory = [memory_across_resets("hlgym/PeerSelection-v0", args.resets)]
    vec = [bench_vec("hlgym/PeerSelection-v0", n, 10 * args.vec_steps, goal=1.0) for n in args.n_envs]
    memory.append(memory_across_resets_batched("hlgym/PeerSelection-v0", max(args.n_envs), args.resets))
    for env_id in ("hlgym/HL-FashionMNIST-v0", "hlgym/HL-MNIST-v0"):
        try:
            rows.append(bench(env_id, args.hl_steps, goal=1.0))
            rows.append(bench(env_id, args.hl_steps, goal=1.0, eval_samples=2000))
            memory.append(memory_across_resets(env_id, max(2, args.resets // 10)))
            vec += [bench_vec(env_id, n, args.vec_steps, goal=1.0) for n in args.n_envs]
            vec += [bench_vec(env_id, n, args.vec_steps, goal=1.0, eval_samples=2000) for n in args.n_envs]
            memory.append(memory_across_resets_batched(env_id, max(args.n_envs), max(2, args.resets // 10)))
        except DataNotFoundError:
            print(f"{env_id}: data not found on this machine, skipped")

    matmul = max(matmul, matmul_gflops())  # at the start and at the end: the better of the two
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    imgs: Column = ("eval imgs", 9, lambda r: str(r["overrides"].get("eval_samples", "all")))
    # Phase medians [ms] (per env-step for the batched env), achieved GFLOP/s and its share of the matmul's.
    tail: list[Column] = [
        *[(k, 8, lambda r, k=k: f"{r[k + '_ms_median']:.2f}") for k in PHASES],
        ("GFLOP/s", 8, lambda r: f"{r['gflops']:.1f}"),
        ("of matmul", 9, lambda r: f"{100 * r['gflops'] / matmul:.0f}%"),
    ]
    _table(
        rows,
        [
            ("env", -26, lambda r: r["env_id"]),
            imgs,
            ("step ms", 8, lambda r: f"{r['step_ms_median']:.2f}"),
            ("mean", 8, lambda r: f"{r['step_ms_mean']:.2f}"),
            ("steps/s", 8, lambda r: f"{r['steps_per_s']:.1f}"),
            *tail,
        ],
    )
    print("(times in ms, medians; 'of matmul': achieved GFLOP/s over a 2048x2048 float32 matmul's, best of 10)")
    print(f"float32 2048x2048 matmul on this machine: {matmul:.1f} GFLOP/s\n")
    _table(
        vec,
        [
            ("env", -26, lambda r: r["env_id"]),
            imgs,
            ("n_envs", 6, lambda r: str(r["n_envs"])),
            ("Dummy st/s", 10, lambda r: f"{r['dummy_env_steps_per_s']:.1f}"),
            ("batched st/s", 12, lambda r: f"{r['batched_env_steps_per_s']:.1f}"),
            ("speed-up", 8, lambda r: f"{r['speedup']:.2f}x"),
            *tail,
        ],
    )
    print("(env-steps per second; the batched env's phases in ms per env-step and its GFLOP/s, medians)\n")
    _table(
        memory,
        [
            ("env", -38, lambda m: m["env_id"]),
            ("resets", 6, lambda m: str(m["resets"])),
            *[(f"RSS {k} MB", 12, lambda m, k=k: f"{m[f'rss_{k}_mb']:.1f}") for k in ("first", "last", "max")],
            ("growth MB", 10, lambda m: f"{m['growth_mb']:.1f}"),
        ],
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # [MB]; Linux reports kB
    print(f"peak RSS of the benchmark process: {peak:.0f} MB")

    meta = {
        "hlgym": hlgym.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    out = {"meta": meta, "matmul_gflops": matmul, "rows": rows, "vec": vec, "memory": memory, "peak_rss_mb": peak}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
