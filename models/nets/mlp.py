"""Multi-layer perceptrons for the 2-D benchmarks."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from genbench.checks import integer_errors
from models.nets.checks import CheckedNet

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh}


class MLP(CheckedNet, nn.Module):
    """``depth`` hidden layers of width ``hidden`` between ``in_features`` and ``out_features``
    (``depth = 0``: one linear map)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 256, depth: int = 3, activation: str = "silu"):
        super().__init__()
        self.check_arguments(in_features, out_features, hidden, depth, activation)
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))

    # --- configuration checks ---------------------------------------------------------
    @staticmethod
    def argument_errors(
        in_features: Any, out_features: Any, hidden: Any, depth: Any, activation: Any, prefix: str = ""
    ) -> list[str]:
        """Problems with the arguments, one message each (``prefix`` names the config node)."""
        errors = integer_errors(prefix, ("in_features", in_features, 1), ("out_features", out_features, 1),
                                ("hidden", hidden, 1), ("depth", depth, 0))  # fmt: skip
        if activation not in ACTIVATIONS:
            errors.append(f"{prefix}activation={activation!r}: must be one of {sorted(ACTIVATIONS)}")
        return errors
