"""Memorization and novelty of generated samples, measured on features against the training split, with
the held-out split as the control (a real sample the model never saw must score as novel).

- :func:`copy_rate`: the ratio test, share of generated samples with d₁/d₂ < 1/3 (nearest and second
  nearest training example).
- :func:`authenticity`: Alaa et al. (ICML 2022)'s A-score, share of generated samples that are not closer
  to their nearest training example than that example's own nearest training neighbour.
- :func:`data_copying_ct`: Meehan et al. (AISTATS 2020)'s C_T, a Mann-Whitney Z-score per k-means cell.
- :func:`memorization_metrics`: all of them at once, with the held-out split's scores as the control.
- :func:`nearest_training_examples`: the 3 nearest training examples of each generated sample (figures).

All distances are Euclidean, in float64, in the feature space given (its choice decides what "a copy"
means: in pixel space a shifted copy is not one, in a classifier's features it is).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from evaluation.metrics import TILE

#: The ratio test's threshold: a generated sample copies its nearest training example when it is more than
#: 3x closer to it than to the second nearest (Yoon et al. 2023, "Diffusion probabilistic models generalize
#: when they fail to memorize"; Gu et al. 2023, "On Memorization in Diffusion Models", reference code
#: ``mem_ratio.py``). The test itself is Lowe (2004)'s ratio test for SIFT matches.
COPY_RATIO_THRESHOLD = 1 / 3
#: C_T defaults: k-means cells on the training features, and the least number of generated samples a cell
#: needs to count (Meehan et al.'s Π_τ with τ = 20/m; about where the U statistic's normal
#: approximation becomes accurate). 10 cells keep ~50 held-out digits per cell with genbench's 500-digit
#: held-out split of mnist5k, and match MNIST's 10 classes.
CT_NUM_CELLS = 10
CT_MIN_GENERATED = 20


def nearest_neighbors(query: Tensor, reference: Tensor, k: int = 1, exclude_self: bool = False,
                      tile: int = TILE) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The ``k`` nearest rows of ``reference`` for every row of ``query``: distances ``[M, k]`` (float64,
    ascending) and indices ``[M, k]``.

    Candidates are found tile by tile from ||q||² + ||r||² − 2 qᵀr (working memory: a few ``tile`` ×
    ``tile`` blocks, whatever M and N); the distances returned are then recomputed directly as ||q − r||,
    which the expansion would round badly for near-copies (it cancels ||q||² against ||r||²).
    ``exclude_self``: ``query`` is ``reference`` and row i may not be its own neighbour.
    """
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(f"nearest neighbours: expected [M, D] and [N, D], got {list(query.shape)} and {list(reference.shape)}")
    available = len(reference) - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise ValueError(f"nearest neighbours: k={k} must be in [1, {available}] ({len(reference)} reference points)")
    q_all, r_all = query.double(), reference.double()
    sq_r = r_all.square().sum(1)
    dists, idxs = [], []
    for i in range(0, len(q_all), tile):
        q = q_all[i : i + tile]
        sq_q = q.square().sum(1)
        best_d = torch.empty(len(q), 0, dtype=torch.float64, device=q.device)
        best_i = torch.empty(len(q), 0, dtype=torch.long, device=q.device)
        for j in range(0, len(r_all), tile):
            d2 = (sq_q[:, None] + sq_r[None, j : j + tile]).addmm_(q, r_all[j : j + tile].T, alpha=-2)
            if exclude_self:
                rows = torch.arange(len(q), device=q.device)
                cols = rows + (i - j)
                inside = (cols >= 0) & (cols < d2.shape[1])
                d2[rows[inside], cols[inside]] = math.inf
            cand_d = torch.cat([best_d, d2], 1)
            cand_i = torch.cat([best_i, torch.arange(j, j + d2.shape[1], device=q.device).expand(len(q), -1)], 1)
            best_d, pos = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False)
            best_i = cand_i.gather(1, pos)
        exact = (q[:, None, :] - r_all[best_i]).norm(dim=-1)  # [tile, k]: exact distances of the kept ones
        exact, order = exact.sort(1)
        dists.append(exact)
        idxs.append(best_i.gather(1, order))
    return torch.cat(dists), torch.cat(idxs)


def nearest_training_examples(fake: Tensor, train: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Indices ``[M, k]`` of the ``k`` nearest training examples of every generated sample, nearest first,
    and their distances ``[M, k]`` (for a figure of samples beside their training neighbours)."""
    dist, idx = nearest_neighbors(fake, train, k)
    return idx, dist


def nn_distance_ratio(fake: Tensor, train: Tensor) -> Tensor:
    """d₁ / d₂ per generated sample ``[M]``: distance to its nearest training example over the distance to the
    second nearest (1 where both are 0: two identical training examples are not evidence of a copy)."""
    d, _ = nearest_neighbors(fake, train, 2)
    return _ratio(d)


def _ratio(d: Tensor) -> Tensor:
    return torch.where(d[:, 1] > 0, d[:, 0] / d[:, 1].clamp_min(1e-300), 1.0)


def copy_rate(fake: Tensor, train: Tensor, threshold: float = COPY_RATIO_THRESHOLD) -> float:
    """Share of generated samples that copy a training example by the ratio test: d₁ / d₂ < ``threshold``.

    A novel sample sits among training examples at comparable distances (d₁ / d₂ near 1); a copy sits on
    one of them (d₁ ≈ 0). Held-out real features score low (0 % of mnist5k's held-out digits in pixel space:
    their d₁ / d₂ is 0.71 at the 1st percentile, 0.95 at the median), a copier high.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"copy_rate: threshold={threshold} must be in (0, 1]")
    return float((nn_distance_ratio(fake, train) < threshold).double().mean())


def training_radii(train: Tensor) -> Tensor:
    """Distance of every training example to its nearest other training example ``[N]`` (float64): the
    authenticity rule's threshold, computed once per training set (the costly part of :func:`authenticity`)."""
    return nearest_neighbors(train, train, 1, exclude_self=True)[0][:, 0]


def authenticity(fake: Tensor, train: Tensor, radii: Tensor | None = None) -> float:
    """The A-score of Alaa et al. (ICML 2022, "How Faithful is your Synthetic Data?"): the share of
    authentic generated samples.

    A generated sample x̃ with nearest training example x_i* is unauthentic when it is closer to x_i* than
    x_i*'s nearest other training example is: ||x̃ − x_i*|| < min_{j ≠ i*} ||x_i* − x_j||. Alaa et al. compute it
    in their evaluation embedding; here in the features given. Real held-out data are not 100 % authentic
    by this rule (58 % of mnist5k's held-out digits are, in pixel space: a fresh sample is often closer to
    its nearest training example than that example's own neighbour), so read the score against the
    held-out control. ``radii``: :func:`training_radii` of ``train`` when already computed.
    """
    d_fake, idx = nearest_neighbors(fake, train, 1)
    radii = training_radii(train) if radii is None else radii
    return _authentic_share(d_fake[:, 0], idx[:, 0], radii)


def _authentic_share(d1: Tensor, idx1: Tensor, radii: Tensor) -> float:
    return float(1.0 - (d1 < radii[idx1]).double().mean())


def memorization_metrics(train: Tensor, heldout: Tensor, fake: Tensor, threshold: float = COPY_RATIO_THRESHOLD,
                         num_cells: int = CT_NUM_CELLS, min_generated: int = CT_MIN_GENERATED,
                         seed: int = 0, notes: list[str] | None = None) -> dict[str, float | None]:  # fmt: skip
    """Every memorization metric of ``fake`` against ``train``, and the held-out control, sharing the searches.

    Returns:
        ``copy_rate``, ``authenticity`` (of the generated samples), ``copy_rate_heldout``,
        ``authenticity_heldout`` (of the held-out split: what real novel data score) and ``ct``
        (:func:`data_copying_ct`; the held-out split is its control by construction). With ``notes`` given, a
        C_T that is undefined for so few samples is None and the reason is appended to ``notes``; else it raises.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"copy_rate: threshold={threshold} must be in (0, 1]")
    radii = training_radii(train)
    out: dict[str, float] = {}
    for name, x in (("", fake), ("_heldout", heldout)):
        d, idx = nearest_neighbors(x, train, 2)
        out["copy_rate" + name] = float((_ratio(d) < threshold).double().mean())
        out["authenticity" + name] = _authentic_share(d[:, 0], idx[:, 0], radii)
    try:
        out["ct"] = data_copying_ct(train, heldout, fake, num_cells=num_cells, min_generated=min_generated, seed=seed)
    except ValueError as e:
        if notes is None:
            raise
        out["ct"] = None
        notes.append(str(e))
    return out


# --- C_T ----------------------------------------------------------------------------------------------------
def kmeans(x: Tensor, k: int, iters: int = 100, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), deterministic for a ``seed``:
    centres ``[k, D]`` (float64) and the cell of every row ``[N]``. An emptied cell is re-seeded with the
    point farthest from its centre."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means: k={k} cells must be in [1, {len(x)}] (the number of points)")
    x = x.double()
    g = torch.Generator().manual_seed(int(seed))
    centres = x[torch.randint(len(x), (1,), generator=g)]
    d2 = nearest_neighbors(x, centres, 1)[0][:, 0].square()
    for _ in range(1, k):  # k-means++: the next centre with probability ∝ d² to the nearest chosen centre
        nxt = x[torch.multinomial(d2.cpu() + 1e-300, 1, generator=g).to(x.device)]
        centres = torch.cat([centres, nxt])
        d2 = torch.minimum(d2, (x - nxt).square().sum(1))
    dist, labels = (t[:, 0] for t in nearest_neighbors(x, centres, 1))
    for _ in range(iters):
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        for c in torch.nonzero(counts == 0).flatten().tolist():
            far = int(dist.argmax())
            centres[c], dist[far] = x[far], 0.0
        dist, new = (t[:, 0] for t in nearest_neighbors(x, centres, 1))
        if torch.equal(new, labels):
            break
        labels = new
    return centres, labels


def mann_whitney_z(generated: Tensor, heldout: Tensor) -> float:
    """Z-score of the Mann-Whitney U of ``generated`` against ``heldout`` distances, as Meehan et al.'s code:

        U = Σ_i Σ_j 1[q_i > p_j] + ½ 1[q_i = p_j],   Z = (U − mn/2 + ½) / √(mn(m + n + 1)/12)

    (U is scipy's ``mannwhitneyu(q, p).statistic``; the ½ is the continuity correction of the one-sided
    "less" test.) Z << 0: the generated samples lie closer to the training set than held-out data do.
    """
    q, p = generated.double().flatten(), heldout.double().flatten().sort().values
    m, n = len(q), len(p)
    below = torch.searchsorted(p, q, right=False)  # p_j < q_i
    not_above = torch.searchsorted(p, q, right=True)  # p_j <= q_i
    u = (below + (not_above - below).double() / 2).sum()
    return float((u - m * n / 2 + 0.5) / math.sqrt(m * n * (m + n + 1) / 12))


def data_copying_ct(train: Tensor, heldout: Tensor, fake: Tensor, num_cells: int = CT_NUM_CELLS,
                    min_generated: int = CT_MIN_GENERATED, seed: int = 0) -> float:  # fmt: skip
    """C_T of Meehan et al. (AISTATS 2020, "A Non-Parametric Test to Detect Data-Copying in Generative
    Models"): the held-out-weighted mean of per-cell Mann-Whitney Z-scores,

        C_T = Σ_{π ∈ Π_τ} P_n(π) Z_U(π) / Σ_{π ∈ Π_τ} P_n(π)

    The cells π are a k-means partition of the training features (``num_cells``, fixed ``seed``); every point
    belongs to the cell of its nearest centre. In a cell, Z_U compares the distances of the generated
    samples to their nearest training example *of that cell* with those of the held-out samples (as the
    reference code). Π_τ: the cells with at least ``min_generated`` generated samples; P_n(π): the share of
    held-out samples in π (a cell without any has weight 0 and is skipped).

    Returns:
        C_T: about 0 when the model generalises like held-out data, << 0 (e.g. −3 and below) when it copies,
        >> 0 when its samples lie farther from the training data than real data (underfitting).
    """
    centres, train_cells = kmeans(train, num_cells, seed=seed)
    held_cells = nearest_neighbors(heldout, centres, 1)[1][:, 0]
    fake_cells = nearest_neighbors(fake, centres, 1)[1][:, 0]
    num, den = 0.0, 0.0
    for c in range(num_cells):
        held_c, fake_c, train_c = heldout[held_cells == c], fake[fake_cells == c], train[train_cells == c]
        if len(fake_c) < min_generated or len(held_c) == 0 or len(train_c) == 0:
            continue
        l_fake = nearest_neighbors(fake_c, train_c, 1)[0][:, 0]
        l_held = nearest_neighbors(held_c, train_c, 1)[0][:, 0]
        weight = len(held_c) / len(heldout)
        num += weight * mann_whitney_z(l_fake, l_held)
        den += weight
    if den == 0:
        raise ValueError(
            f"C_T: no cell of {num_cells} holds {min_generated} generated samples and a held-out one "
            f"({len(fake)} generated, {len(heldout)} held-out); generate more samples or use fewer cells"
        )
    return num / den
