"""The variance schedules β_1 … β_T of the diffusion process, by name, and the checks of their settings.

A schedule is float64 ``[T]``; :class:`~models.diffusion.NoiseSchedule` derives every coefficient from it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genbench.checks import integer_errors, is_number

SCHEDULES = ("linear", "cosine")


def schedule_errors(
    schedule: str,
    T: object,
    beta_start: object = 1e-4,
    beta_end: object = 0.02,
    s: object = 0.008,
    prefix: str = "",
) -> list[str]:
    """Problems with a schedule's settings, one message each (``prefix`` names the config node)."""
    errors = []
    if schedule not in SCHEDULES:
        errors.append(f"{prefix}schedule={schedule!r}: must be one of {list(SCHEDULES)}")
    errors += integer_errors(prefix, ("T", T, 1))
    if schedule == "linear":
        bad = False
        for key, v in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not (is_number(v) and 0 < v < 1):
                errors.append(f"{prefix}{key}={v!r}: must be a number in the open interval (0, 1)")
                bad = True
        if not bad and not beta_start < beta_end:
            errors.append(
                f"{prefix}beta_start={beta_start!r}, {prefix}beta_end={beta_end!r}: the linear schedule must be "
                f"increasing, beta_start < beta_end"
            )
    if schedule == "cosine" and not (is_number(s) and s > 0):
        errors.append(f"{prefix}s={s!r}: must be a number > 0 (the cosine schedule's offset)")
    return errors


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_t evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020 §4), float64 ``[T]``."""
    errors = schedule_errors("linear", T, beta_start, beta_end)
    if errors:
        raise ValueError("; ".join(errors))
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17), float64 ``[T]``.

    ᾱ_t = f(t) / f(0),  f(t) = cos²((t/T + s) / (1 + s) · π/2),  β_t = 1 − ᾱ_t / ᾱ_{t−1},
    clipped to ``max_beta`` so the last steps do not become singular near t = T.
    """
    errors = schedule_errors("cosine", T, s=s)
    if errors:
        raise ValueError("; ".join(errors))
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(max=max_beta)
