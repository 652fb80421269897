"""Train a meta-policy on an hlgym environment, evaluate it against the baselines, write a run folder.

    hlgym-train                                   # the default algorithm on the default env
    hlgym-train --algo hl_dqn --env hlgym/HL-FashionMNIST-v0
    hlgym-train --algo maskable_ppo --env-kwargs offline_prob=0.2 --timesteps 20000
    hlgym-train --algo greedy --eval-episodes 50  # a built-in: evaluation only
    hlgym-train --algo mypkg.agents:UCBAgent      # a plug-in Agent class
    hlgym-train --out runs/x --resume             # continue a killed run
    hlgym-train --seeds 0 1 2 3 4                 # one run per seed, summarised over the seeds
    hlgym-train --backend rllib --num-env-runners 2   # PPO on Ray RLlib (the ray extra)
    hlgym-train --env hlgym/Gossip-v0 --seeds 0 1 2   # every peer an agent: shared PPO (multiagent extra)

(``python train_meta.py`` in a checkout is the same command.) The run folder holds
config.json (the resolved arguments, hyperparameters and env config), model.zip (or model.pt
for hl_dqn), checkpoints/, episodes.csv and monitor.csv (one row per training episode), tb/
(TensorBoard) and results.json: the trained policy and every built-in baseline on the same
held-out seeds, with means and 95% confidence intervals (see hlgym.runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from hlgym.envs.registration import MULTIAGENT_PRESETS, PRESETS

__all__ = ["Args", "build_parser", "check_device", "given_options", "import_plugin", "parse_args"]

BACKENDS = ("sb3", "rllib")
# What a training uses when hyperparams/<algo>.yml has no entry for the env id.
DEFAULT_TIMESTEPS = 20_000
DEFAULT_N_ENVS = 1
DEFAULT_POLICY = "mlp"


def _help(text: str) -> dict[str, str]:
    return {"help": " ".join(text.split())}


@dataclass
class Args:
    """Command-line arguments: each field is one ``--option``, parsed by its type hint."""

    algo: str = field(
        default="ppo",
        metadata=_help(
            """Policy: dqn, ppo, a2c (SB3); maskable_ppo, recurrent_ppo (sb3-contrib); hl_dqn (the
            reference's DQN); random, round_robin, greedy, power_of_choice (built-in, no
            training; every run's table has them); lookahead (tries every peer on a copy of the
            env, n_peers env steps per step), oracle (a beam search over copies that sees the
            future: a ceiling; width*n_peers env steps per step), stay (the best fixed peer of
            the evaluation episodes; n_peers evaluations); or 'module:Class' for a plug-in
            agent built with --agent-kwargs."""
        ),
    )
    env: str = field(
        default="hlgym/PeerSelection-v0",
        metadata=_help(
            f"""Registered environment id: {", ".join(PRESETS)}; or a multi-agent id (every peer an
            agent, PettingZoo; the multiagent extra): {", ".join(MULTIAGENT_PRESETS)}."""
        ),
    )
    env_kwargs: list[str] = field(
        default_factory=list,
        metadata={
            **_help("Overrides of the environment config, as key=value (values read as JSON)."),
            "metavar": "KEY=VALUE",
        },
    )
    agent_kwargs: list[str] = field(
        default_factory=list,
        metadata={
            **_help(
                """Keyword arguments of a built-in or plug-in agent, as key=value (values read as
                JSON), e.g. --algo lookahead --agent-kwargs horizon=2 by=accuracy."""
            ),
            "metavar": "KEY=VALUE",
        },
    )
    hyperparams: list[str] = field(
        default_factory=list,
        metadata={
            **_help(
                """Overrides of the trained algorithm's settings in hyperparams/<algo>.yml, as
                key=value (values read as JSON), e.g. --hyperparams gamma=0.99 ent_coef=0.02:
                the algorithm's constructor arguments (SB3, sb3-contrib, hl_dqn), or with
                --backend rllib the names ppo.yml uses."""
            ),
            "metavar": "KEY=VALUE",
        },
    )
    policy: str | None = field(
        default=None,
        metadata=_help(
            """SB3 policy: mlp or attention (per-peer self-attention; ppo and a2c). Default: from
            hyperparams/<algo>.yml, else mlp."""
        ),
    )
    timesteps: int | None = field(
        default=None, metadata=_help(f"Training steps. Default: from hyperparams/<algo>.yml, else {DEFAULT_TIMESTEPS}.")
    )
    n_envs: int | None = field(
        default=None,
        metadata=_help(f"Parallel training environments. Default: from hyperparams/<algo>.yml, else {DEFAULT_N_ENVS}."),
    )
    seed: int = field(default=0, metadata=_help("Seed of training (environments seed, seed+1, ...) and of the policy."))
    seeds: list[int] = field(
        default_factory=list,
        metadata={
            **_help(
                """Train one run per seed (instead of --seed), each in OUT/seed_<k>/ and resumable, all
                evaluated on the same held-out episodes; OUT/results.json holds the mean over the
                seeds and its 95%% interval for every policy and metric (default OUT:
                runs/<env>_<algo>_seeds_<first>-<last>)."""
            ),
            "metavar": "SEED",
        },
    )
    eval_episodes: int = field(default=20, metadata=_help("Held-out episodes per policy in the final evaluation."))
    eval_seed: int = field(
        default=10_000,
        metadata=_help(
            """Seed of the first evaluation episode (eval_seed, eval_seed+1, ...); must not overlap
            the training seeds."""
        ),
    )
    out: str | None = field(
        default=None,
        metadata=_help(
            """Run folder; default runs/<env>_<algo>_<seed> (runs/<env>_<algo>_eval_<seed> with
            --evaluate-model), with _2, _3... appended when it exists."""
        ),
    )
    resume: bool = field(
        default=False,
        metadata=_help(
            """Continue the run in --out from its last checkpoint with its saved arguments. Given
            with it, --timesteps sets a new training budget (e.g. to extend a finished run),
            --device a new device and --progress the bars; any other option that differs from
            the saved one is refused."""
        ),
    )
    evaluate_model: str | None = field(
        default=None,
        metadata=_help(
            """Skip training: evaluate this saved model (model.zip of an SB3 --algo, or model.pt of
            hl_dqn), e.g. on another --env-kwargs n_peers=..."""
        ),
    )
    checkpoint_every: int = field(default=2000, metadata=_help("Training steps between checkpoints."))
    pretrain: str | None = field(
        default=None,
        metadata=_help(
            """Behaviour-clone the policy before it trains (ppo, a2c, maskable_ppo; the imitation
            extra: pip install -c constraints.txt -e '.[imitation]'): 'oracle' plays the oracle
            on --pretrain-episodes episodes of seeds of their own and writes them as a Minari
            dataset in OUT/demos/; a Minari dataset id (local root) or folder clones on that."""
        ),
    )
    pretrain_episodes: int = field(
        default=50, metadata=_help("--pretrain oracle: the oracle's episodes (about 4 s each on the default id).")
    )
    pretrain_epochs: int = field(default=50, metadata=_help("--pretrain: passes of behaviour cloning over the steps."))
    backend: str = field(
        default="sb3",
        metadata={
            "choices": BACKENDS,
            **_help(
                """Training engine: sb3 (this process, the batched env), or rllib (Ray RLlib's PPO with
            the attention policy; env runners on this machine or a cluster; needs the ray extra:
            pip install -c constraints-ray.txt -e '.[ray]'). The run folder, evaluation and
            results.json are the same."""
            ),
        },
    )
    num_env_runners: int = field(
        default=2,
        metadata=_help(
            """--backend rllib: Ray env runners (processes with one env and one CPU each); 0
            samples on the driver. --n-envs still sets the batch: n_steps * n_envs steps per update."""
        ),
    )
    rllib_sample_timeout: float | None = field(
        default=None,
        metadata=_help(
            """--backend rllib: seconds RLlib waits for an env runner's rollout fragment. Default: 3
            times the fragment's steps at the env's step time measured before training, at least
            60 (RLlib's own)."""
        ),
    )
    ray_address: str | None = field(
        default=None,
        metadata=_help(
            """--backend rllib: a running Ray cluster to join (auto: the one this machine is part
            of, after ray start); default: start a local Ray with this machine's cores."""
        ),
    )
    device: str = field(
        default="auto",
        metadata=_help(
            """Torch device of the meta-policy: auto (cuda when torch sees one, else cpu), cpu,
            cuda or cuda:N. The env's own device is --env-kwargs device=..."""
        ),
    )
    progress: bool = field(default=True, metadata=_help("Show progress bars."))


def _option_type(hint: Any) -> tuple[type, bool]:
    """The element type an option's values parse as, and whether it takes several values."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [p for p in params if p is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"option type {hint} is not supported: one type or None")
        return _option_type(inner[0])
    if origin is list:
        return params[0], True
    if isinstance(hint, type):
        return hint, False
    raise TypeError(f"option type {hint} is not supported")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The parser of :class:`Args`: one ``--option`` per field, typed by its type hint
    (without ``defaults``, an option not given is absent from the result: see
    :func:`given_options`)."""
    parser = argparse.ArgumentParser(
        argument_default=None if defaults else argparse.SUPPRESS,
        prog="hlgym-train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "The default run (ppo on hlgym/PeerSelection-v0, 50,000 steps) takes about 2.5-3.5 minutes\n"
            "on 2 cores. A step of the HL presets (a CNN evaluated on 10,000 test images) takes about\n"
            "0.45 s there, so their shipped budgets (2,000 steps; hl_dqn 4,320) take about 15 and 35\n"
            "minutes; --env-kwargs eval_samples=2000 makes their steps about 3 times faster."
        ),
    )
    hints = typing.get_type_hints(Args)
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not defaults:
            default = argparse.SUPPRESS
        kind, many = _option_type(hints[f.name])
        text = f.metadata["help"]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif many:
            metavar = f.metadata.get("metavar", "VALUE")
            parser.add_argument(flag, nargs="*", type=kind, default=default, metavar=metavar, help=text)
        else:
            shown = "" if default is None or "Default:" in text else f" (default: {default})"
            # The choices show as the metavar; hlgym.train.resolve refuses others in its own words.
            choices = f.metadata.get("choices")
            metavar = "{" + ",".join(choices) + "}" if choices else None
            parser.add_argument(flag, type=kind, default=default, metavar=metavar, help=text + shown)
    return parser


def parse_args(argv: list[str] | None = None) -> Args:
    """Map the command line onto :class:`Args`; ``--help`` shows every field's help."""
    return Args(**vars(build_parser().parse_args(argv)))


def given_options(argv: list[str] | None = None) -> set[str]:
    """The :class:`Args` fields the command line sets itself (not left to their default)."""
    return set(vars(build_parser(defaults=False).parse_args(argv)))


def import_plugin(algo: str, names: tuple[str, ...]) -> Any:
    """The class a plug-in ``--algo module:Class`` names (the working directory on the
    import path); anything else is refused with the built-in ``names`` accepted."""
    module_name, sep, class_name = algo.partition(":")
    if not sep or not module_name or not class_name:
        raise SystemExit(f"--algo {algo!r} is not accepted; accepted: {', '.join(names)} or module:Class")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # plug-ins next to where the user runs the command
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--algo {algo!r}: cannot import {class_name} from {module_name}: {exc}") from exc


def check_device(device: str) -> None:
    """``--device``: auto, or a torch device this machine has (SB3 would raise a
    traceback at the model's construction, after the run folder exists)."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise SystemExit(f"--device {device!r} is not accepted; accepted: auto, cpu, cuda, cuda:N (or mps)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {device} is not accepted: torch {torch.__version__} sees no CUDA device on this machine; "
            "accepted: auto or cpu"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit(f"--device {device} is not accepted: this machine has no MPS device; accepted: auto or cpu")
