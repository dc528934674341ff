"""The one evaluation loop of genbench and its registered metrics (:mod:`evaluation.registry`).

Entry points: :class:`~evaluation.evaluator.Evaluator` (the loop), :class:`~evaluation.config.EvalConfig`
(``eval.*``), :class:`~evaluation.callback.EvalCallback` (during training), ``genbench-evaluate``.
"""

from evaluation.config import EvalConfig
from evaluation.evaluator import EvaluationError, Evaluator, always_result_keys
from evaluation.sources import DataReference, ModelSource, TensorReference, TensorSource

__all__ = [
    "DataReference",
    "EvalConfig",
    "EvaluationError",
    "Evaluator",
    "ModelSource",
    "TensorReference",
    "TensorSource",
    "always_result_keys",
]
