"""The one evaluation loop of genbench: FID, IS, KID, precision/recall, density/coverage, mode metrics.

Entry points: :class:`~evaluation.evaluator.Evaluator` (the loop), :class:`~evaluation.config.EvalConfig`
(``eval.*``), :class:`~evaluation.callback.EvalCallback` (during training), ``genbench-evaluate``.
"""

from evaluation.config import EvalConfig
from evaluation.evaluator import RESULT_KEYS, EvaluationError, Evaluator
from evaluation.sources import DataReference, ModelSource, TensorReference, TensorSource

__all__ = [
    "RESULT_KEYS",
    "DataReference",
    "EvalConfig",
    "EvaluationError",
    "Evaluator",
    "ModelSource",
    "TensorReference",
    "TensorSource",
]
