"""The ``classifier`` feature space: a small CNN trained on the data set's own train split.

Offline, the standard InceptionV3 weights may be missing, and on 28×28 digits they are a poor
judge anyway. genbench then trains a LeNet-style classifier on the datamodule's labelled train
split (a few seconds on a CPU), measures its accuracy on the held-out split, and caches it
under ``$GENBENCH_CACHE/classifiers`` keyed by the data fingerprint, the architecture and the
training settings. Its penultimate activations play the role of Inception's pool3 features
(FID, KID, precision/recall) and its softmax the role of Inception's class posterior (IS).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from evaluation.cache import TensorCache
from genbench.checks import integer_errors, positive_errors

log = logging.getLogger("genbench.evaluation")

#: Part of the cache key: bump when SmallCNN or its training changes.
ARCH_VERSION = "lenet5-relu-v1-1thread"


@dataclass(frozen=True)
class ClassifierSettings:
    """Architecture and training of the feature classifier (``eval.classifier.*``)."""

    width: int = 16
    feature_dim: int = 128
    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ClassifierSettings:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"eval.classifier: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    @staticmethod
    def errors(d: Any) -> list[str]:
        d = dict(d or {})
        errors = []
        allowed = {f.name for f in fields(ClassifierSettings)}
        for key in sorted(set(d) - allowed):
            errors.append(f"eval.classifier.{key}: unknown key; allowed: {sorted(allowed)}")
        counts = [(key, d.get(key, 1), 1) for key in ("width", "feature_dim", "epochs", "batch_size")]
        errors += integer_errors("eval.classifier.", *counts, ("seed", d.get("seed", 0), 0))
        errors += positive_errors("eval.classifier.", ("lr", d.get("lr", 1e-3)))
        return errors


class SmallCNN(nn.Module):
    """LeNet-5-style classifier (LeCun et al. 1998, with ReLU and max-pooling): two blocks of
    conv 5×5 - ReLU - max-pool 2×2, then a ReLU feature layer and a linear head.

    Args:
        in_channels, image_size: shape of the (square) input images; the side must be divisible by 4.
        num_classes: size of the softmax.
        width: channels of the first block (the second has twice as many).
        feature_dim: size of the penultimate layer, the feature space of FID/KID/P&R.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, width: int = 16, feature_dim: int = 128):
        super().__init__()
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(2 * width * side * side, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim
        self.num_classes = num_classes
        # Features are divided by this scale (fixed after training) so that their mean squared
        # value per dimension is 1 on the train split, the scale KID's cubic kernel expects.
        self.register_buffer("feature_scale", torch.ones(()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images in [-1, 1] -> (penultimate features, class logits)."""
        h = self.body(x)
        return h / self.feature_scale, self.head(h)


@torch.no_grad()
def accuracy(net: SmallCNN, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (net(x[i : i + batch_size])[1].argmax(1) == y[i : i + batch_size]).sum().item()
    return correct / max(len(x), 1)


def train_classifier(
    x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, settings: ClassifierSettings, device: torch.device
) -> tuple[SmallCNN, float]:
    """Train :class:`SmallCNN` with Adam and cross-entropy; returns it (eval mode) and its held-out accuracy."""
    num_classes = int(max(y_train.max().item(), y_val.max().item() if len(y_val) else 0)) + 1
    threads = torch.get_num_threads()
    # One CPU thread: the sums of a convolution's backward pass are split between threads, so the weights
    # (and every FID in this feature space) would depend on how many threads the first run on a machine had.
    # The feature scale too: its mean over all training features is a reduction that threads split differently.
    torch.set_num_threads(1)
    try:
        net = _train(x_train, y_train, num_classes, settings, device)
        net.eval()
        with torch.no_grad():
            h = torch.cat([net.body(x_train[i : i + 500].to(device)) for i in range(0, len(x_train), 500)])
            net.feature_scale.fill_(h.square().mean().sqrt().clamp_min(1e-8).item())
    finally:
        torch.set_num_threads(threads)
    acc = accuracy(net, x_val.to(device), y_val.to(device))
    return net.requires_grad_(False), acc


def _train(x_train: Tensor, y_train: Tensor, num_classes: int, settings: ClassifierSettings, device: torch.device) -> SmallCNN:
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG stream untouched
        torch.manual_seed(settings.seed)
        net = SmallCNN(x_train.shape[1], x_train.shape[-1], num_classes, settings.width, settings.feature_dim).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
        steps = settings.epochs * ((len(x_train) + settings.batch_size - 1) // settings.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
        g = torch.Generator().manual_seed(settings.seed)
        for _ in range(settings.epochs):
            net.train()
            order = torch.randperm(len(x_train), generator=g)
            for i in range(0, len(x_train), settings.batch_size):
                idx = order[i : i + settings.batch_size]
                xb, yb = x_train[idx].to(device), y_train[idx].to(device)
                loss = nn.functional.cross_entropy(net(xb)[1], yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return net


def classifier_key(fingerprint: str, data_name: str, data_shape: tuple[int, ...], settings: ClassifierSettings) -> dict[str, Any]:
    return {"what": "classifier", "arch": ARCH_VERSION, "data": data_name, "fingerprint": fingerprint, "shape": list(data_shape), **asdict(settings)}


def load_or_train_classifier(reference: Any, settings: ClassifierSettings, device: torch.device) -> tuple[SmallCNN, dict[str, Any]]:
    """The cached classifier of ``reference``'s data set, trained first if needed.

    Args:
        reference: a :class:`~evaluation.sources.DataReference` (train split with labels).
        settings: architecture and training settings (part of the cache key).
        device: where to train and run it.
    Returns:
        the network (eval mode, on ``device``) and ``{"accuracy", "weights_sha1", "cached", "train_time_s"}``.
    """
    key = classifier_key(reference.fingerprint, reference.name, reference.data_shape, settings)

    def compute() -> dict[str, Any]:
        x_train, y_train = reference.labelled("train")
        x_val, y_val = reference.labelled("val")
        log.info("training the evaluation classifier on %s (%d images)", reference.name, len(x_train))
        start = time.perf_counter()
        net, acc = train_classifier(x_train, y_train, x_val, y_val, settings, device)
        seconds = time.perf_counter() - start
        log.info("classifier held-out accuracy %.4f (%.1f s)", acc, seconds)
        return {
            "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
            "num_classes": net.num_classes,
            "accuracy": acc,
            "train_time_s": seconds,
        }

    entry, cached = TensorCache("classifiers").get_or_compute(key, compute)
    c, size = reference.data_shape[0], reference.data_shape[-1]
    net = SmallCNN(c, size, int(entry["num_classes"]), settings.width, settings.feature_dim)
    net.load_state_dict(entry["state_dict"])
    info = {
        "accuracy": float(entry["accuracy"]),
        "cached": cached,
        "train_time_s": float(entry["train_time_s"]),
        "weights_sha1": state_dict_sha1(entry["state_dict"]),
    }
    return net.to(device).eval().requires_grad_(False), info


def state_dict_sha1(state_dict: dict[str, Tensor]) -> str:
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
