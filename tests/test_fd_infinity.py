"""FD∞ (Chong & Forsyth 2020): the extrapolation removes most of FD's finite-sample bias on Gaussians."""

from __future__ import annotations

import pytest
import torch

from evaluation.fd_infinity import fd_grid, fd_infinity, fit_intercept
from evaluation.ref_stats import frechet_distance, gaussian_stats


def covariance(d: int, g: torch.Generator, floor: float) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return a @ a.T + floor * torch.eye(d, dtype=torch.float64)


@pytest.fixture(scope="module")
def gaussians():
    """Real N(0, Σ_r) given by its exact statistics, generated N(0, Σ_g) by 5,000 samples, D = 128."""
    d = 128
    g = torch.Generator().manual_seed(0)
    sigma_r, sigma_g = covariance(d, g, 0.5), covariance(d, g, 0.3)
    mu = torch.zeros(d, dtype=torch.float64)
    return {"mu": mu, "sigma_r": sigma_r, "sigma_g": sigma_g, "chol_g": torch.linalg.cholesky(sigma_g),
            "true": float(frechet_distance(mu, sigma_r, mu, sigma_g))}  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fd_infinity_is_closer_to_the_closed_form_than_fd_at_all_samples(gaussians, seed):
    g = torch.Generator().manual_seed(100 + seed)
    fake = torch.randn(5000, 128, generator=g, dtype=torch.float64) @ gaussians["chol_g"].T
    result = fd_infinity((gaussians["mu"], gaussians["sigma_r"]), fake, seed=seed)
    true = gaussians["true"]  # 43.434
    err_n, err_inf = result.fds[-1] - true, result.value - true
    # Measured (seeds 0, 1, 2): FD_5000 − FD = +0.71, +0.94, +1.06; FD∞ − FD = −0.32, −0.26, +0.12.
    assert err_n > 0.5  # FD's bias is upwards, about c / n with c ≈ 4,900
    assert abs(err_inf) < 0.5 * abs(err_n)
    assert 3000 < result.slope < 7000
    assert result.ns[0] == 500 and result.ns[-1] == 5000 and len(result.ns) == 15


def test_real_features_or_statistics_give_the_same_fit(gaussians):
    g = torch.Generator().manual_seed(7)
    real = torch.randn(3000, 128, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(gaussians["sigma_r"]).T
    fake = torch.randn(2000, 128, generator=g, dtype=torch.float64) @ gaussians["chol_g"].T
    from_features = fd_infinity(real, fake, ns=[500, 1000, 2000], seed=3)
    from_stats = fd_infinity(gaussian_stats(real), fake, ns=[2000, 500, 1000], seed=3)
    assert from_features == from_stats
    assert from_features.ns == (500, 1000, 2000)


def test_the_papers_grid_and_the_default_for_fewer_samples():
    grid = fd_grid(50_000)
    assert len(grid) == 15 and grid[0] == 5000 and grid[-1] == 50_000
    assert fd_grid(5000)[:2] == [500, 821] and fd_grid(5000, num_points=4, min_n=2000) == [2000, 3000, 4000, 5000]
    with pytest.raises(ValueError, match="min_n=6000"):
        fd_grid(5000, min_n=6000)


def test_fit_intercept_recovers_a_line_in_one_over_n():
    ns = [100, 250, 1000, 4000]
    a, b = fit_intercept(ns, [3.5 + 120.0 / n for n in ns])
    assert a == pytest.approx(3.5, rel=1e-12) and b == pytest.approx(120.0, rel=1e-12)


def test_bad_inputs_are_refused(gaussians):
    fake = torch.zeros(100, 128, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"must be \[N, 128\]"):
        fd_infinity((gaussians["mu"], gaussians["sigma_r"]), fake[:, :5])
    with pytest.raises(ValueError, match="ns="):
        fd_infinity((gaussians["mu"], gaussians["sigma_r"]), fake, ns=[50, 200])
