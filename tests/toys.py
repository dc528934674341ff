"""A plug-in for the registry tests: a fourth family, a new metric and a new feature space, defined only here.

Loaded by ``GENBENCH_PLUGINS=tests.toys`` (or imported by a test); each is one spec and one
registration call, and nothing else in genbench is edited for them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from evaluation.features import FeatureSpace, FeatureSpaceSpec, register_feature_space
from evaluation.registry import Batch, MetricContext, MetricSpec, MetricState, ResultKey, register_metric
from models.base import GenerativeModule
from models.registry import FamilySpec, register_family


class GaussianFamily(GenerativeModule):
    """A diagonal Gaussian fitted to the data by maximum likelihood: the simplest generative model."""

    family = "gaussian"

    def __init__(self, data_shape: list[int], lr: float = 0.05, optimizer: Any = None, compile: bool = False):
        super().__init__(data_shape, lr=lr, optimizer=optimizer, compile=compile)
        self.mu = nn.Parameter(torch.zeros(self.data_shape))
        self.log_sigma = nn.Parameter(torch.zeros(self.data_shape))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = self.batch_images(batch)
        nll = (self.log_sigma + 0.5 * ((x - self.mu) / self.log_sigma.exp()).square()).mean()  # − log N(x; μ, σ²) + const
        self.log_train({"train/loss": nll})
        return nll

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        eps = self.randn(n, *self.data_shape, generator=generator)
        return self.to_data_range(self.mu + self.log_sigma.exp() * eps)


register_family(FamilySpec(
    name="gaussian", target="tests.toys.GaussianFamily", display_name="Gaussian", color="tab:purple", order=40,
    config={"_target_": "tests.toys.GaussianFamily", "data_shape": "${data.shape}", "lr": 0.05},
))  # fmt: skip


class MeanOffset(MetricState):
    """‖mean of the generated features − mean of the real features‖₂."""

    def __init__(self, ctx: MetricContext):
        self.real_mean = ctx.real["features"].double().mean(0)
        self.total = torch.zeros_like(self.real_mean)
        self.count = 0

    def update(self, batch: Batch) -> None:
        self.total += batch.features.double().sum(0).cpu()
        self.count += len(batch.features)

    def compute(self) -> dict[str, Any]:
        return {"mean_offset": float((self.total / self.count - self.real_mean).norm())}


register_metric(MetricSpec(
    name="mean_offset", build=MeanOffset, needs=frozenset({"features", "real_features"}),
    keys=(ResultKey("mean_offset", log_name="val/mean_offset", column="mean offset", fmt="{:.3f}", better="lower",
                    order=70),),
    description="distance between the mean generated and mean real feature",
))  # fmt: skip


class PixelMeans(FeatureSpace):
    """Means of 4×4 pixel blocks: a fixed, weight-free feature space."""

    name = "pixel_means"

    def __init__(self, data_shape: tuple[int, ...]):
        super().__init__()
        c, h, w = data_shape
        self.num_features = c * (h // 4) * (w // 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return torch.nn.functional.avg_pool2d(x.float(), 4).flatten(1), None

    def cache_id(self) -> str:
        return "pixel_means-v1"


register_feature_space(FeatureSpaceSpec(
    name="pixel_means", kinds=frozenset({"image"}), resizes=False, input_size=None,
    build=lambda reference, cfg, device: PixelMeans(reference.data_shape), errors=lambda cfg: [],
    description="means of 4x4 pixel blocks",
))  # fmt: skip
