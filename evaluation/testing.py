"""Fixtures shared by the evaluation tests and benchmarks: image folders and a random InceptionV3 weights file.

Offline, the real InceptionV3 weights are not available; an InceptionV3 with random weights has
the same architecture, cost and code path, so it serves to check the wiring against torch-fidelity
and to time the two implementations. It says nothing about the weights themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from evaluation.features import to_uint8


def write_pngs(folder: Path, images: Tensor) -> Path:
    """Images in [-1, 1] (``[N, C, H, W]``, 1 or 3 channels) as ``0000.png``, ``0001.png``, ... in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(to_uint8(images).numpy()):
        Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return folder


def write_random_inception(path: Path, calibration: Tensor, seed: int = 0) -> Path:
    """Save torch-fidelity's InceptionV3 with random, non-degenerate weights to ``path``.

    Convolutions are He-initialised (activations keep their scale through the 94 layers). The
    logit layer is random but orthogonal to the mean pool3 feature of ``calibration`` (images in
    [-1, 1]) and scaled to give logits of std 4 across those images, so the Inception Score
    responds to the images instead of being ≈ 1 for every input.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    load, download = cls.load_state_dict, fe.load_state_dict_from_url
    cls.load_state_dict = lambda self, *a, **k: None  # build the architecture without loading any weights
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = cls("inception-v3-compat", ["2048"])
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            net.eval()
            with torch.no_grad():
                x = to_uint8(calibration)
                f = net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)[0]
                mean = f.mean(0)
                w = torch.randn(1008, 2048)
                w -= torch.outer(w @ mean, mean) / mean.dot(mean)
                net.fc.weight.copy_(w * 4 / (f @ w.T).std(0).mean())
                net.fc.bias.zero_()
    finally:
        cls.load_state_dict, fe.load_state_dict_from_url = load, download
    torch.save(net.state_dict(), path)
    return path
