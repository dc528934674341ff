"""Process-wide device settings applied before training."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"


def nvml_loadable() -> bool:
    """Whether NVIDIA's management library (shipped with the driver) can be loaded."""
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return False
    return True


def drop_unusable_nvml_check(loadable: Callable[[], bool] = nvml_loadable) -> bool:
    """Unset ``PYTORCH_NVML_BASED_CUDA_CHECK`` where NVML cannot be loaded; returns whether it was unset.

    Importing Lightning sets the variable to 1, so that ``torch.cuda.is_available()`` asks NVML
    and does not initialise CUDA in a process that may fork later. ``torch.optim.Adam`` asks on
    every ``step()``. Until CUDA is initialised torch does not cache the answer, so each call loads
    the library again. On a machine without an NVIDIA driver that load fails, and torch then asks
    the CUDA runtime anyway. There the variable changes no answer and protects no fork, and it costs
    29 µs per optimizer step (measured on this project's 2-core CPU machine: 1.5 % of a 2-D toy
    training step). Where NVML loads, the variable is left as Lightning set it.
    """
    if os.environ.get(NVML_CHECK) != "1" or loadable():
        return False
    del os.environ[NVML_CHECK]
    return True


def visible_cuda_gpus() -> int:
    """How many CUDA GPUs this process can use (0 without a driver or a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
