"""clean-fid's "clean" resize (Parmar et al., CVPR 2022, "On Aliased Resizing and Surprising Subtleties
in GAN Evaluation"): each 8-bit image resized to 299 × 299 with PIL's anti-aliased bicubic filter.

The facts, from clean-fid's ``resize.py`` (``make_resizer("PIL", quantize_after=False, "bicubic",
(299, 299))``) and ``utils.py`` (``ResizeDataset``):

- each channel is resized on its own, as a 32-bit float PIL image (mode ``F``): no rounding to 8 bits
  before or after the filter, so the interpolation is not quantised;
- the result is clipped to [0, 255] (bicubic overshoots at edges) and kept as float32, *not* quantised;
- it is fed to the Inception as floats in [0, 255] (clean-fid's torchscript Inception normalises
  internally, as torch-fidelity's network does from [0, 255]);
- images are read as RGB first, so a grey image is three equal channels; resizing each channel alone,
  the grey channel resized once and repeated gives the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

#: The Inception's input side.
INCEPTION_SIZE = (299, 299)


def clean_resize(x: Tensor, size: tuple[int, int] = INCEPTION_SIZE) -> Tensor:
    """Resize uint8 images ``[B, C, H, W]`` to float32 ``[B, C, *size]`` in [0, 255], as clean-fid's clean mode.

    Args:
        x: 8-bit images (any number of channels; clean-fid's are RGB, a grey channel stays one channel).
        size: output (height, width); clean-fid's is (299, 299).

    Returns:
        float32 images on ``x``'s device, values in [0, 255], not quantised: the Inception's input.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"clean_resize: expected uint8 images [B, C, H, W], got {x.dtype} of shape {list(x.shape)}")
    h, w = size
    planes = x.cpu().numpy().reshape(-1, *x.shape[2:])
    out = np.empty((len(planes), h, w), dtype=np.float32)
    for i, plane in enumerate(planes):
        img = Image.fromarray(plane.astype(np.float32))  # mode F: one 32-bit float channel
        out[i] = np.asarray(img.resize((w, h), resample=Image.Resampling.BICUBIC))  # PIL takes (width, height)
    np.clip(out, 0, 255, out=out)
    return torch.from_numpy(out).reshape(*x.shape[:2], h, w).to(x.device)
