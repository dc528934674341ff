"""Memorization metrics on real digits: a copier (training digits + small noise) against held-out digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from datamodules.mnist5k import load_mnist5k
from evaluation.memorization import (
    authenticity,
    copy_rate,
    data_copying_ct,
    kmeans,
    mann_whitney_z,
    memorization_metrics,
    nearest_neighbors,
    nearest_training_examples,
    nn_distance_ratio,
)


@pytest.fixture(scope="module")
def digits():
    """mnist5k as 14 x 14 pixel features in [0, 1] (196-d: 4x cheaper than 28 x 28, same neighbourhoods):
    4,500 training digits, 250 held-out as the control, 250 held-out posing as a generalising model,
    and a copier: 500 training digits plus N(0, 0.01²) per pixel (a shift of ~0.14 against a median
    nearest-neighbour distance of 1.84)."""
    x, _ = load_mnist5k()
    f = F.avg_pool2d(x.double() / 255, 2).flatten(1)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(f), generator=g)
    train, held = f[perm[:4500]], f[perm[4500:]]
    source = torch.randperm(len(train), generator=g)[:500]
    copier = train[source] + 0.01 * torch.randn(500, f.shape[1], generator=g, dtype=torch.float64)
    return {"train": train, "control": held[:250], "novel": held[250:], "copier": copier, "source": source}


def test_copier_and_heldout_are_told_apart(digits):
    train, control = digits["train"], digits["control"]
    copier = memorization_metrics(train, control, digits["copier"])
    novel = memorization_metrics(train, control, digits["novel"])
    # Measured: copier copy rate 1.0, authenticity 0.0, C_T -7.12; held-out 0.0, 0.62, -0.10; control 0.0, 0.556.
    assert copier["copy_rate"] >= 0.9 and novel["copy_rate"] <= 0.1
    assert copier["authenticity"] <= 0.05 and novel["authenticity"] >= 0.4
    assert copier["ct"] < -5 and abs(novel["ct"]) < 1.5
    # The held-out control scores alike in both runs (it does not depend on the generated samples).
    assert copier["copy_rate_heldout"] == novel["copy_rate_heldout"] <= 0.1
    assert copier["authenticity_heldout"] == novel["authenticity_heldout"] >= 0.4
    # The single-metric functions agree with the combined one.
    assert copy_rate(digits["copier"], train) == copier["copy_rate"]
    assert authenticity(digits["novel"], train) == novel["authenticity"]


def test_copy_rate_follows_the_noise_and_the_threshold(digits):
    train, source = digits["train"], digits["source"][:200]
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(200, train.shape[1], generator=g, dtype=torch.float64)
    rates = [copy_rate(train[source] + s * noise, train) for s in (0.0, 0.01, 0.05, 0.2)]
    assert rates[0] == 1.0 and rates == sorted(rates, reverse=True) and rates[-1] < 0.1
    ratio = nn_distance_ratio(digits["novel"], train)
    assert copy_rate(digits["novel"], train, threshold=1.0) == 1.0 - float((ratio == 1).double().mean())
    with pytest.raises(ValueError, match="threshold=1.5"):
        copy_rate(digits["novel"], train, threshold=1.5)


def test_nearest_training_examples_of_a_copier_start_with_its_source(digits):
    idx, dist = nearest_training_examples(digits["copier"][:50], digits["train"])
    assert idx.shape == dist.shape == (50, 3)
    assert torch.equal(idx[:, 0], digits["source"][:50])
    assert (dist[:, 1:] >= dist[:, :-1]).all()


def test_nearest_neighbors_equal_brute_force_over_tiles():
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(150, 7, generator=g), torch.randn(230, 7, generator=g)
    want_d, want_i = torch.cdist(q.double(), r.double()).topk(4, largest=False)
    d, i = nearest_neighbors(q, r, 4, tile=64)  # tiles that do not divide 150 or 230
    assert torch.equal(i, want_i) and torch.allclose(d, want_d, rtol=1e-12)
    full = torch.cdist(r.double(), r.double()).fill_diagonal_(float("inf"))
    want_d, want_i = full.topk(2, largest=False)
    d, i = nearest_neighbors(r, r, 2, exclude_self=True, tile=64)
    assert torch.equal(i, want_i) and torch.allclose(d, want_d, rtol=1e-12)


def test_nearest_neighbors_keep_tiny_distances_exact():
    """A near-copy 8e-9 away from a point of norm ~25: the expansion ||q||² + ||r||² − 2qᵀr rounds it to 0."""
    g = torch.Generator().manual_seed(3)
    r = 3 + torch.randn(100, 64, generator=g, dtype=torch.float64)
    d, i = nearest_neighbors(r[5:6] + 1e-9, r, 1)
    assert i.item() == 5 and d.item() == pytest.approx(1e-9 * 8, rel=1e-6)


def test_mann_whitney_u_is_scipys():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(4)
    q = torch.randint(0, 30, (40,), generator=g).double()  # ties, within and across the samples
    p = torch.randint(5, 35, (55,), generator=g).double()
    u = stats.mannwhitneyu(q.numpy(), p.numpy()).statistic
    m, n = len(q), len(p)
    assert mann_whitney_z(q, p) == pytest.approx((u - m * n / 2 + 0.5) / (m * n * (m + n + 1) / 12) ** 0.5, rel=1e-12)
    assert mann_whitney_z(q, p) < -2  # q is shifted below p


def test_kmeans_finds_separated_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(5)
    centres = 20 * torch.randn(4, 3, generator=g)
    x = (centres[:, None] + torch.randn(4, 50, 3, generator=g)).reshape(200, 3)
    c1, l1 = kmeans(x, 4, seed=0)
    c2, l2 = kmeans(x, 4, seed=0)
    assert torch.equal(l1, l2) and torch.equal(c1, c2)
    truth = torch.arange(4).repeat_interleave(50)
    # every true cluster is one k-means cell, and the cells are distinct
    assert all(len(set(l1[truth == t].tolist())) == 1 for t in range(4)) and len(set(l1.tolist())) == 4


def test_ct_refuses_when_no_cell_has_enough_generated_samples(digits):
    with pytest.raises(ValueError, match="holds 20 generated samples"):
        data_copying_ct(digits["train"], digits["control"], digits["novel"][:15])
