"""Run folders: every file a training run writes, written and read here.

::

    config.json          arguments, hyperparameters, resolved env config (written first)
    checkpoints/         ckpt_<steps>.zip (+ _replay.pkl for DQN) and checkpoint.json, the
                         manifest written last; hl_dqn.pt for the reference DQN; rllib_<steps>/
                         (an RLlib checkpoint folder) with --backend rllib
    episodes.csv         one row per finished training episode, flushed as it ends
    monitor.csv          the same episodes in SB3's Monitor format (r, l, t)
    tb/                  TensorBoard logs
    model.zip | model.pt the final policy (model.pt: hl_dqn's agent, or the rllib backend's
                         attention network)
    results.json         the policy and every baseline on the held-out evaluation seeds
    demos/               --pretrain oracle: the oracle's episodes, a Minari dataset
                         (demos/hlgym/<Env-vN>/oracle-v0/), written before training
    plots/               the figures of hlgym.plots

A run over several training seeds (``hlgym-train --seeds ...``) is a folder of such runs,
``seed_<k>/``, with its own ``config.json``, a ``results.json`` of kind ``"across_seeds"``
(every policy's per-seed means, their mean and 95% t-interval over the seeds, and each seed's
change against random) and ``plots/``.

Every file is written atomically (a crash leaves the old file or the new one, never half).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hlgym.atomic import write_bytes_atomic, write_json_atomic
from hlgym.records import CEILINGS, METRICS, EpisodeOutcome, EpisodeRecord, Evaluation, Stat, summarize

__all__ = [
    "EpisodeLog",
    "RunFolder",
    "across_seeds",
    "evaluation_to_dict",
    "format_seeds_table",
    "format_table",
    "fresh_run_dir",
    "read_episodes",
    "reduction",
    "resume_seed",
]

RESULTS_SCHEMA_VERSION = 1
# What a run writes at its start, before any work (RunFolder.discard_unstarted removes these).
RUN_FILES = ("config.json", "episodes.csv", "monitor.csv", "tb", "checkpoints", "plots")
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
        self.demos = self.path / "demos"
        """The root of the run's Minari datasets (``--pretrain oracle``)."""

    def model_file(self, algo: str, backend: str = "sb3") -> Path:
        """Where the final policy of ``algo`` goes: ``model.pt`` for hl_dqn and for the rllib
        backend (torch files), else ``model.zip`` (SB3's)."""
        return self.path / ("model.pt" if algo == "hl_dqn" or backend == "rllib" else "model.zip")

    def write_model(self, algo: str, data: bytes, backend: str = "sb3") -> Path:
        """Write the final policy of ``algo`` (see :meth:`model_file`); returns the file."""
        path = self.model_file(algo, backend)
        write_bytes_atomic(path, data)
        return path

    def has_run(self) -> bool:
        """Whether a run was started here (its ``config.json`` exists)."""
        return self.config_file.is_file()

    def holds_work(self) -> bool:
        """Whether the folder holds anything a run could continue from or report: a
        checkpoint (SB3's manifest, hl_dqn's, an RLlib folder), a final model, results, a
        seed's run or the oracle's demonstrations."""
        checkpoints = self.checkpoints.is_dir() and any(self.checkpoints.iterdir())
        models = any((self.path / name).is_file() for name in ("model.zip", "model.pt"))
        seeds = any(self.path.glob("seed_*"))
        demos = self.demos.is_dir() and any(self.demos.iterdir())
        return checkpoints or models or seeds or demos or self.results_file.is_file()

    def discard_unstarted(self) -> bool:
        """Remove what a run that failed before it held any work wrote (see
        :meth:`holds_work`: config.json, an empty log, TensorBoard's first file), and the
        folder when nothing else is in it (an ``--out`` folder of the user's keeps their
        files); returns whether the run's files were removed. A folder with work is kept
        for --resume."""
        if not self.path.is_dir() or self.holds_work():
            return False
        for name in RUN_FILES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        if not any(self.path.iterdir()):
            self.path.rmdir()
        return True

    # ------------------------------------------------------------------ config.json

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.json`` (the run's arguments, hyperparameters and env config)."""
        write_json_atomic(self.config_file, dict(config))

    def read_config(self) -> dict[str, Any]:
        """Read ``config.json``."""
        data: dict[str, Any] = json.loads(self.config_file.read_text())
        return data

    # ------------------------------------------------------------------ results.json

    def write_results(
        self,
        results: Mapping[str, Any],
        evaluations: Mapping[str, Evaluation],
        families: Mapping[str, Mapping[str, Evaluation]] | None = None,
    ) -> None:
        """Write ``results.json``: ``results``' fields, every policy's evaluation and, for a
        task distribution, every policy's evaluation on each held-out family (``families``)."""
        policies = {name: evaluation_to_dict(ev) for name, ev in evaluations.items()}
        body: dict[str, Any] = {"schema_version": RESULTS_SCHEMA_VERSION, **results, "policies": policies}
        if families:
            body["families"] = {
                fam: {name: evaluation_to_dict(ev) for name, ev in evs.items()} for fam, evs in families.items()
            }
        write_json_atomic(self.results_file, body)

    def read_family_evaluations(self) -> dict[str, dict[str, Evaluation]]:
        """A task distribution's evaluations per held-out family (empty for one task)."""
        return {fam: _evaluations(pols) for fam, pols in self.read_results().get("families", {}).items()}

    def write_seed_results(self, results: Mapping[str, Any], policies: Mapping[str, Any]) -> None:
        """Write the ``results.json`` of a run over several seeds: ``results``' fields and
        :func:`across_seeds`' summary of every policy."""
        write_json_atomic(
            self.results_file,
            {"schema_version": RESULTS_SCHEMA_VERSION, "kind": "across_seeds", **results, "policies": dict(policies)},
        )

    def seed_run(self, seed: int) -> RunFolder:
        """The run of training seed ``seed`` inside a run over several seeds (``seed_<k>/``)."""
        return RunFolder(self.path / f"seed_{seed}")

    def read_evaluations(self) -> dict[str, Evaluation]:
        """The evaluations of a finished run's ``results.json``, by policy name (records and
        their summary)."""
        return _evaluations(self.read_results()["policies"])

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

    def commit_checkpoint_dir(self, steps: int, episodes: int, write: Callable[[Path], object], keep: int = 2) -> Path:
        """Write a checkpoint that is a folder (RLlib's ``save_to_path``): ``write`` fills a
        temporary folder, which is renamed to ``checkpoints/rllib_<steps>`` before the manifest
        names it, so the newest checkpoint the manifest names is always complete. Folders older
        than the ``keep`` newest go after the manifest moved on. Returns the folder."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints / f"rllib_{steps}"
        tmp = self.checkpoints / f".rllib_{steps}.tmp"
        for stale in (tmp, final):  # a crash's leftovers; the manifest never names them
            if stale.exists():
                shutil.rmtree(stale)
        write(tmp)
        tmp.rename(final)
        manifest = {"timesteps": steps, "episodes": episodes, "model": final.name, "replay": None, "backend": "rllib"}
        write_json_atomic(self.checkpoints / CHECKPOINT_MANIFEST, manifest)
        old = sorted(self.checkpoints.glob("rllib_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return final

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


def _evaluations(policies: Mapping[str, Any]) -> dict[str, Evaluation]:
    """``results.json``'s policies (each with its ``episodes``) as evaluations: the records
    and their summary."""
    return {
        name: Evaluation(records, summarize(records))
        for name, pol in policies.items()
        for records in [[EpisodeRecord.from_dict(ep) for ep in pol["episodes"]]]
    }


def resume_seed(seed: int, timesteps: int) -> int:
    """The environments' seed after a resume at ``timesteps``: a fresh stream, so the
    resumed run does not replay the first episodes (hashed, so it does not fall among the
    small consecutive evaluation seeds either)."""
    return int(np.random.SeedSequence([seed, timesteps]).generate_state(1)[0])


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
        "summary": {k: _stat_dict(s) for k, s in evaluation.summary.items()},
        "episodes": [r.to_dict() for r in evaluation.records],
    }


def reduction(value: float, reference: float) -> float:
    """Relative reduction of ``value`` against ``reference`` [%]; positive is better."""
    return 100.0 * (reference - value) / reference if reference else float("nan")


def _mean_ci(stat: Stat, width: int, ci_width: int, digits: int, sign: str = "") -> str:
    """``mean ±ci95``; the interval reads ``n/a`` when fewer than two values give none;
    ``sign="+"`` writes the sign of a positive mean too."""
    ci = f"{stat.ci95:>{ci_width}.{digits}f}" if stat.n >= 2 else f"{'n/a':>{ci_width}}"
    return f"{stat.mean:>{sign}{width}.{digits}f} ±{ci}"


def across_seeds(per_seed: Mapping[int, Mapping[str, Evaluation]], reference: str = "random") -> dict[str, Any]:
    """Summarise one evaluation per training seed over the seeds.

    For every policy and :data:`~hlgym.records.SUMMARY_FIELDS` metric: each seed's mean
    over its held-out episodes (``per_seed``), and the mean of those with the half-width of
    its 95% t-interval over the seeds (``summary``); and, for rounds and comm cost, each
    seed's change against that seed's ``reference`` policy in % (``vs_reference``; negative
    is fewer), summarised the same way. A deterministic policy gives the same value on every
    seed (interval 0); a seeded one (random) gives one value per seed.
    """
    seeds = sorted(per_seed)
    names = list(per_seed[seeds[0]])
    out: dict[str, Any] = {}
    for name in names:
        means = {k: [per_seed[s][name].summary[k].mean for s in seeds] for k in per_seed[seeds[0]][name].summary}
        entry: dict[str, Any] = {
            "per_seed": means,
            "summary": {k: _stat_dict(Stat.of(v)) for k, v in means.items()},
        }
        if name != reference and all(reference in per_seed[s] for s in seeds):
            entry["vs_reference"] = {
                k: _stat_dict(
                    Stat.of(
                        [
                            -reduction(per_seed[s][name].summary[k].mean, per_seed[s][reference].summary[k].mean)
                            for s in seeds
                        ]
                    )
                )
                for k in ("rounds", "comm_cost")
            }
        out[name] = entry
    return out


def _stat_dict(stat: Stat) -> dict[str, float | int]:
    return {"mean": stat.mean, "ci95": stat.ci95, "n": stat.n}


def _stat(d: Mapping[str, Any]) -> Stat:
    return Stat(float(d["mean"]), float(d["ci95"]), int(d["n"]))


def format_table(results: dict[str, Evaluation], reference: str = "random") -> str:
    """A plain-text table: one row per policy, means ± 95% CI over the held-out episodes, and
    the change in rounds and communication cost against ``reference`` in % (negative: fewer;
    the paper's 50.8% fewer rounds reads -50.8%)."""
    ref = results.get(reference)
    rows = []
    for name, ev in results.items():
        change_r = change_c = "-"
        if ref is not None and name != reference:
            change_r, change_c = (
                f"{-reduction(ev.summary[k].mean, ref.summary[k].mean):+.1f}%" for k in ("rounds", "comm_cost")
            )
        rows.append((name, ev.summary, change_r, change_c))
    byzantine = any(r.byzantine for ev in results.values() for r in ev.records)
    return _table(rows, reference, byzantine)


def format_seeds_table(policies: Mapping[str, Any], reference: str = "random") -> str:
    """The table of :func:`across_seeds`' summary: per policy, the mean over training seeds
    of each seed's mean ± the half-width of its 95% t-interval over the seeds ("n/a" with
    one seed), and the mean change against ``reference`` on the same seed."""
    rows = []
    for name, entry in policies.items():
        summary = {k: _stat(v) for k, v in entry["summary"].items()}
        change_r = change_c = "-"
        if "vs_reference" in entry:
            change_r, change_c = (
                f"{_mean_ci(_stat(entry['vs_reference'][k]), 5, 4, 1, '+')}%" for k in ("rounds", "comm_cost")
            )
        rows.append((name, summary, change_r, change_c))
    byzantine = any(entry["summary"]["byzantine_visits"]["mean"] > 0 for entry in policies.values())
    return _table(rows, reference, byzantine)


def _table(rows: Sequence[tuple[str, Mapping[str, Stat], str, str]], reference: str, byzantine: bool) -> str:
    """The rows ``(policy, summary, change in rounds, change in comm)`` as aligned text;
    ``byzantine`` adds how often each policy trained the model at a byzantine peer."""
    header = (
        f"{'policy':<16} {'rounds':>14} {'comm cost':>16} {'MB sent':>10} {'final acc':>15} {'reached':>8}"
        f" {'rounds vs ' + reference:>17} {'comm vs ' + reference:>15}"
    )
    if byzantine:
        header += f" {'byz visits':>15}"
    lines = [header, "-" * len(header)]
    for name, s, change_r, change_c in rows:
        line = (
            f"{name:<16} {_mean_ci(s['rounds'], 7, 5, 2)} "
            f"{_mean_ci(s['comm_cost'], 8, 6, 3)} "
            f"{s['bytes_sent'].mean / 1e6:>10.2f} "
            f"{_mean_ci(s['final_accuracy'], 7, 6, 4)} "
            f"{100 * s['reached_goal'].mean:>7.0f}% {change_r:>17} {change_c:>15}"
        )
        if byzantine:
            line += f" {_mean_ci(s['byzantine_visits'], 7, 5, 2)}"
        lines.append(line)
    lines += [
        f"{name}: a search that sees the future, a ceiling (not a competitor)" for name, *_ in rows if name in CEILINGS
    ]
    return "\n".join(lines)


EPISODE_FIELDS = ("episode", "timesteps", *METRICS, "wall_time_s")
"""The columns of ``episodes.csv``: the episode's number, the training steps at its end, its
totals (:data:`hlgym.records.METRICS`) and the wall time since the log opened [s]."""


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
            **outcome.row(),
            "wall_time_s": round(time.time() - self._start, 3),
        }
        self._writer.writerow(row)
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
