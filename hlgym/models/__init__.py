"""Inner networks and how they learn (the fast inner loop)."""

from hlgym.models.cnn import HLCNN
from hlgym.models.mlp import MLP
from hlgym.models.training import (
    EvalResult,
    build_model,
    count_parameters,
    evaluate,
    flat_weights,
    local_train,
    make_optimizer,
    per_sample_hits,
    per_sample_loss,
)

__all__ = [
    "HLCNN",
    "MLP",
    "EvalResult",
    "build_model",
    "count_parameters",
    "evaluate",
    "flat_weights",
    "local_train",
    "make_optimizer",
    "per_sample_hits",
    "per_sample_loss",
]
