"""rl-zoo3 trains from the shipped hyperparameter files (``pip install -e ".[zoo]"``).

Skipped where rl-zoo3 is not installed (the default install); ``.ci/run`` installs the zoo
extra and runs this file with ``HLGYM_TEST_ZOO=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HYPERPARAMS = ROOT / "hlgym" / "hyperparams"

if importlib.util.find_spec("rl_zoo3") is None:
    if os.environ.get("HLGYM_TEST_ZOO") == "1":
        raise ImportError("HLGYM_TEST_ZOO=1 but rl_zoo3 is not installed: pip install -c constraints.txt -e '.[zoo]'")
    pytest.skip("rl-zoo3 is not installed (the zoo extra)", allow_module_level=True)


# rl-zoo3's algorithm names and hlgym's file for each (rl-zoo3 2.9 has no MaskablePPO; hl_dqn
# is hlgym's own).
@pytest.mark.parametrize(
    ("zoo_algo", "file"), [("ppo", "ppo"), ("a2c", "a2c"), ("dqn", "dqn"), ("ppo_lstm", "recurrent_ppo")]
)
def test_rl_zoo3_trains_from_the_shipped_file(tmp_path: Path, zoo_algo: str, file: str) -> None:
    conf = HYPERPARAMS / f"{file}.yml"
    command = [
        *(sys.executable, "-m", "rl_zoo3.train", "--algo", zoo_algo, "--env", "hlgym/PeerSelection-v0"),
        *("--gym-packages", "hlgym", "--conf-file", str(conf), "-n", "256", "--eval-freq", "-1"),
        *("--env-kwargs", "max_rounds:4", "-f", str(tmp_path / "logs"), "--seed", "0"),
    ]
    proc = subprocess.run(
        command, cwd=tmp_path, env={**os.environ, "HLGYM_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = (tmp_path / "logs" / zoo_algo).iterdir()
    assert (run / "hlgym-PeerSelection-v0.zip").is_file()
    saved = dict(yaml.unsafe_load((run / "hlgym-PeerSelection-v0" / "config.yml").read_text()))
    assert saved["policy"] == yaml.safe_load(conf.read_text())["hlgym/PeerSelection-v0"]["policy"]
