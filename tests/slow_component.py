"""A test component that makes every round slow, as a loaded env runner's would
(tests/test_rllib.py: RLlib's sample timeout). Named by its import path, so Ray's workers
import it too."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hlgym.envs import Component


@dataclass(frozen=True)
class SlowParams:
    seconds: float = 0.05  # added to every round


class SlowRounds(Component):
    """Sleeps ``seconds`` after every round."""

    params_type = SlowParams

    def after_round(self, rng: Any) -> None:
        time.sleep(self.params.seconds)
