"""The metrics, as torchmetrics ``Metric``s fed with features that were extracted once.

FID, IS and KID are torchmetrics' own classes, given an identity "feature extractor": the
evaluator runs the feature space once per batch and hands the same features to every metric.
Their ``compute`` follows torch-fidelity's protocol exactly (fixed-seed shuffling of the IS
splits, fixed-seed KID subsets, population standard deviations), so the numbers are
reproducible and equal to torch-fidelity's on the same features. FID's Gaussian math is in
:mod:`evaluation.frechet`; precision/recall and density/coverage are in :mod:`evaluation.manifold`.

Distributed: every state is reduced across processes by torchmetrics (sums for FID's
moments and the mode counts, concatenation for the feature lists), so with each rank feeding
its share of the samples — and the real reference fed on rank 0 only — the result equals the
single-process result on the same samples.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.utilities import dim_zero_cat

from evaluation.frechet import mean_and_cov, trace_sqrt_product


class PrecomputedFeatures(nn.Module):
    """The identity, posing as torchmetrics' feature extractor: metrics receive features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def features_state(metric: Metric, name: str) -> None:
    """A list state reduced by concatenation (one all-gather of one tensor per rank, in rank order)."""
    metric.add_state(name, [], dist_reduce_fx="cat")


#: Rows and columns of the pairwise tiles (distances, kernels) of KID and the k-NN metrics: their working memory
#: is a few tiles (1 MiB of float32 each at 512), whatever the number of samples.
TILE = 512


# --- FID ------------------------------------------------------------------------------------
class FID(FrechetInceptionDistance):
    """Fréchet distance between Gaussians fitted to real and generated features (Heusel et al. 2017):

        FID = ||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)

    The moments are accumulated as float64 sums Σf and Σffᵀ (torchmetrics' states), so the result
    does not depend on how the samples were batched. ``compute`` returns float64; a tiny negative
    value (floating-point error when the two distributions coincide) is clamped to 0 and
    ``self.clamped`` keeps the raw value for the results' notes.
    """

    def __init__(self, num_features: int, **kwargs):
        super().__init__(feature=PrecomputedFeatures(num_features), **kwargs)
        self.clamped: float | None = None
        self.real_cov_sqrt: Tensor | None = None

    def set_real_moments(self, features_sum: Tensor, cov_sum: Tensor, n: int, cov_sqrt: Tensor | None = None) -> None:
        """Load the real side from cached sums (Σf, Σffᵀ, n), and optionally Σ_r^½ (:func:`real_cov_sqrt`),
        which saves ``compute`` its largest eigendecomposition (1 s of 2.3 s at d = 2048 on a CPU)."""
        self.real_features_sum = features_sum.to(self.real_features_sum)
        self.real_features_cov_sum = cov_sum.to(self.real_features_cov_sum)
        self.real_features_num_samples = torch.tensor(int(n), device=self.real_features_num_samples.device)
        self.real_cov_sqrt = None if cov_sqrt is None else cov_sqrt.to(self.real_features_cov_sum)

    def compute(self) -> Tensor:
        n_r, n_g = self.real_features_num_samples, self.fake_features_num_samples
        if n_r < 2 or n_g < 2:
            raise ValueError(f"FID needs at least 2 real and 2 generated samples, got {int(n_r)} and {int(n_g)}")
        mu_r, cov_r = mean_and_cov(self.real_features_sum, self.real_features_cov_sum, n_r)
        mu_g, cov_g = mean_and_cov(self.fake_features_sum, self.fake_features_cov_sum, n_g)
        tr_sqrt = trace_sqrt_product(cov_r, cov_g, root_1=self.real_cov_sqrt)
        fid = (mu_r - mu_g).square().sum() + cov_r.trace() + cov_g.trace() - 2 * tr_sqrt
        self.clamped = float(fid) if fid < 0 else None
        return fid.clamp_min(0.0)


def percentile_interval(replicates: Tensor, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13): the (1 − level)/2 and
    (1 + level)/2 quantiles of the replicates (numpy's linear interpolation)."""
    low, high = np.percentile(replicates.double().cpu().numpy(), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def centred_interval(replicates: Tensor, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """:func:`percentile_interval` shifted so that the replicates' median is ``estimate``: for metrics of the
    generated *set* (recall, coverage), which a resample, holding only ≈ 63 % distinct samples, lowers
    systematically (coverage 0.51 -> 0.38 on 600 rings points): the spread is the bootstrap's, the level the estimate's."""
    low, high = percentile_interval(replicates, level)
    shift = estimate - float(replicates.double().median())
    return low + shift, high + shift


# --- IS -------------------------------------------------------------------------------------
class IS(InceptionScore):
    """Inception Score (Salimans et al. 2016), IS = exp(E_x KL(p(y|x) || p(y))), mean ± std over splits.

    torch-fidelity's protocol: the logits are permuted with ``np.random.RandomState(seed)``, cut into
    ``splits`` consecutive chunks (``i·N//splits``), and the std is the population std (ddof = 0).
    """

    def __init__(self, num_classes: int, splits: int = 10, seed: int = 2020, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features": yes, logits only
            super().__init__(feature=PrecomputedFeatures(num_classes), splits=splits, **kwargs)
        features_state(self, "features")
        self.seed = int(seed)

    def compute(self) -> tuple[Tensor, Tensor]:
        logits = dim_zero_cat(self.features).double()
        self.logits = logits  # gathered, for resampled()
        n = len(logits)
        if n < self.splits:
            raise ValueError(f"IS with {self.splits} splits needs at least {self.splits} samples, got {n}")
        logits = logits[torch.from_numpy(np.random.RandomState(self.seed).permutation(n)).to(logits.device)]
        p, log_p = logits.softmax(1), logits.log_softmax(1)
        scores = []
        for i in range(self.splits):
            part = slice(i * n // self.splits, (i + 1) * n // self.splits)
            p_y = p[part].mean(0, keepdim=True)  # marginal p(y) of the split
            # KL(p(y|x) || p(y)) per sample; classes with p(y|x) = 0 (possible with exact mode
            # posteriors, never with Inception's softmax) contribute 0 instead of 0·log 0.
            kl = torch.where(p[part] > 0, p[part] * (log_p[part] - p_y.log()), 0.0).sum(1)
            scores.append(kl.mean().exp())
        s = torch.stack(scores)
        return s.mean(), s.std(unbiased=False)

    def resampled(self, indices: Tensor) -> Tensor:
        """IS (the mean over splits) of every bootstrap resample ``indices`` ``[B, n]`` of the logits, the
        resample in drawn order cut into the same splits. Per split, E_x KL(p(y|x) || p(y)) = mean_x Σ_y p log p
        − Σ_y p(y) log p(y), so one gather of p per resample is all it costs."""
        p = self.logits.softmax(1)
        plogp = torch.where(p > 0, p * p.log(), 0.0).sum(1)  # Σ_y p(y|x) log p(y|x), per sample
        n, out = indices.shape[1], []
        for idx in indices.to(p.device):
            scores = []
            for i in range(self.splits):
                part = idx[i * n // self.splits : (i + 1) * n // self.splits]
                p_y = p[part].mean(0)
                kl = plogp[part].mean() - torch.where(p_y > 0, p_y * p_y.log(), 0.0).sum()
                scores.append(kl.exp())
            out.append(torch.stack(scores).mean())
        return torch.stack(out)


# --- KID ------------------------------------------------------------------------------------
class KID(KernelInceptionDistance):
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with the cubic kernel
    k(x, y) = (xᵀy / d + 1)³, mean ± std over ``subsets`` random subsets of ``subset_size``.

    torch-fidelity's protocol: one ``np.random.RandomState(seed)`` draws, for every subset, the
    generated indices and then the real ones (without replacement). Kernels are computed in
    float32 (as torch-fidelity), their sums in float64; in few dimensions (2-D points) no kernel is
    computed: the kernel's explicit feature map (:func:`poly_features`) is summed per subset, in float64.
    """

    def __init__(self, num_features: int, subsets: int = 100, subset_size: int = 1000, seed: int = 2020, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().__init__(feature=PrecomputedFeatures(num_features), subsets=subsets, subset_size=subset_size, **kwargs)
        features_state(self, "real_features")
        features_state(self, "fake_features")
        self.seed = int(seed)

    def compute(self) -> tuple[Tensor, Tensor]:
        real, fake = dim_zero_cat(self.real_features).float(), dim_zero_cat(self.fake_features).float()
        self.gathered = (real, fake)  # for resampled_shift()
        m = self.subset_size
        if len(real) < m or len(fake) < m:
            raise ValueError(f"KID subset size {m} is larger than the samples ({len(fake)} generated, {len(real)} real)")
        rng = np.random.RandomState(self.seed)
        idx = [(rng.choice(len(fake), m, replace=False), rng.choice(len(real), m, replace=False)) for _ in range(self.subsets)]
        fake_idx = torch.from_numpy(np.stack([i for i, _ in idx])).to(fake.device)
        real_idx = torch.from_numpy(np.stack([j for _, j in idx])).to(real.device)
        nf, nr, d = len(fake), len(real), fake.shape[1]
        pairs = nf * nf + nr * nr + nf * nr
        # Work of each route (float64 products counted twice): per subset, 3 m x m kernels; or the 3 full
        # kernel matrices once, then one indicator product per subset and matrix; or, in few dimensions, the
        # kernel's explicit feature map once, then one indicator product per subset (no kernel at all).
        per_subset = 3 * self.subsets * m * m * d
        grams = pairs * d + 2 * self.subsets * pairs
        explicit = (nf + nr) * poly_map_dim(d) * (1 + 2 * self.subsets)
        if poly_map_dim(d) <= MAX_POLY_MAP_DIM and explicit < min(per_subset, grams):
            mmds = mmd2_of_subsets_from_features(fake, real, fake_idx, real_idx)
        elif grams < per_subset:
            mmds = mmd2_of_subsets_from_grams(fake, real, fake_idx, real_idx)
        else:
            chunk = max(1, int(2**20 // (m * m)))  # subsets per batched kernel evaluation (4 MiB of float32 each)
            mmds = torch.cat([
                unbiased_mmd2(fake[fake_idx[i : i + chunk]], real[real_idx[i : i + chunk]])
                for i in range(0, self.subsets, chunk)
            ])  # fmt: skip
        return mmds.mean(), mmds.std(unbiased=False)

    def resampled_shift(self, counts: Tensor) -> Tensor:
        """T(c) − T(1) for every bootstrap resample (``counts`` ``[B, n]``) of the generated features, where
        T is the generated-dependent part of the full-set unbiased MMD² (the real-real term is fixed):

            T(c) = Σ_{i≠j} c_i c_j k(y_i, y_j) / (n² − Σ_i c_i²) − 2/(nN) Σ_i c_i Σ_a k(y_i, x_a)

        (pairs of one sample with its own copy are left out, as the diagonal of the U-statistic).
        ``KID + shift`` is then a resample's KID; the subset draw of ``compute`` is not redone."""
        real, fake = self.gathered
        n, d = fake.shape
        c = torch.cat([torch.ones(1, n, dtype=torch.float64), counts.double()]).to(fake.device)
        k_ii = poly_self_kernel(fake)
        if poly_map_dim(d) <= MAX_POLY_MAP_DIM:  # few dimensions: Σ c_i c_j k(y_i, y_j) = ‖Σ_i c_i φ(y_i)‖²
            phi = poly_features(fake)
            total = (c @ phi).square().sum(1)
            h = phi @ poly_features(real).sum(0)  # Σ_a k(y_i, x_a) = φ(y_i)ᵀ Σ_a φ(x_a)
        else:
            total, _ = _subset_kernel_sums(fake, fake, c, c, same=True)
            h = torch.zeros(n, dtype=torch.float64, device=fake.device)  # Σ_a k(y_i, x_a)
            for i in range(0, n, TILE):
                for j in range(0, len(real), TILE):
                    h[i : i + TILE] += poly_kernel(fake[i : i + TILE], real[j : j + TILE]).sum(1, dtype=torch.float64)
        yy = (total - c.square() @ k_ii) / (n * n - c.square().sum(1))
        t = yy - 2 * (c @ h) / (n * len(real))
        return t[1:] - t[0]


def _indicators(idx: Tensor, n: int) -> Tensor:
    """0/1 rows ``[subsets, n]`` (float64) marking each subset's indices (drawn without replacement)."""
    w = torch.zeros(len(idx), n, dtype=torch.float64, device=idx.device)
    return w.scatter_(1, idx.long(), 1.0)


def _subset_kernel_sums(x: Tensor, y: Tensor, wx: Tensor, wy: Tensor, same: bool, tile: int = TILE) -> tuple[Tensor, Tensor]:
    """For every subset pair s: Σ_{a∈S_s, b∈T_s} k(x_a, y_b) = (w_x K w_yᵀ)_ss, and, when ``same``
    (y is x, T = S), the diagonal part Σ_{a∈S_s} k(x_a, x_a). K is computed tile by tile (float32, as
    the per-subset route) and summed in float64. When ``same``, K is symmetric and so is the sum's
    weighting, so only the tiles on and above the diagonal are computed, those above counted twice."""
    total = torch.zeros(len(wx), dtype=torch.float64, device=x.device)
    diag = torch.zeros_like(total)
    for i in range(0, len(x), tile):
        for j in range(i if same else 0, len(y), tile):
            k = poly_kernel(x[i : i + tile], y[j : j + tile]).double()
            part = ((wx[:, i : i + tile] @ k) * wy[:, j : j + tile]).sum(1)
            total += 2 * part if same and j > i else part
            if same and i == j:
                diag += wx[:, i : i + tile] @ k.diagonal()
    return total, diag


def mmd2_of_subsets_from_grams(x: Tensor, y: Tensor, x_idx: Tensor, y_idx: Tensor, tile: int = TILE) -> Tensor:
    """:func:`unbiased_mmd2` of every subset pair ``(x[x_idx[s]], y[y_idx[s]])``, from the full kernel
    matrices computed once: cheaper than per-subset kernels when the sets are not much larger than a subset
    (e.g. 1,000 samples, 100 subsets of 500: 40x fewer operations)."""
    m = x_idx.shape[1]
    wx, wy = _indicators(x_idx, len(x)), _indicators(y_idx, len(y))
    s_xx, d_xx = _subset_kernel_sums(x, x, wx, wx, same=True, tile=tile)
    s_yy, d_yy = _subset_kernel_sums(y, y, wy, wy, same=True, tile=tile)
    s_xy, _ = _subset_kernel_sums(x, y, wx, wy, same=False, tile=tile)
    return ((s_xx - d_xx) + (s_yy - d_yy)) / (m * (m - 1)) - 2 * s_xy / (m * m)


#: Largest explicit feature map of the cubic kernel KID uses (1 + d + d² + d³ entries: d ≤ 9).
MAX_POLY_MAP_DIM = 1024


def poly_map_dim(d: int) -> int:
    """Entries of :func:`poly_features` for ``d``-dimensional features: 1 + d + d² + d³."""
    return 1 + d + d * d + d * d * d


def poly_features(x: Tensor) -> Tensor:
    """The cubic kernel's explicit feature map (float64): with u = x / √d,

        k(x, y) = (xᵀy / d + 1)³ = Σ_{k=0..3} C(3, k) (uᵀv)^k = φ(x)ᵀφ(y),
        φ(x) = [1, √3 u, √3 u⊗u, u⊗u⊗u]   (binomial expansion; ⟨u⊗u, v⊗v⟩ = (uᵀv)²),

    ``[n, 1 + d + d² + d³]``: cheaper than any kernel matrix when d is small (2-D points: 15 entries)."""
    u = x.double() / math.sqrt(x.shape[1])
    u2 = (u[:, :, None] * u[:, None, :]).flatten(1)
    u3 = (u2[:, :, None] * u[:, None, :]).flatten(1)
    return torch.cat([torch.ones_like(u[:, :1]), math.sqrt(3) * u, math.sqrt(3) * u2, u3], 1)


def poly_self_kernel(x: Tensor) -> Tensor:
    """k(x_a, x_a) = (‖x_a‖² / d + 1)³ for every row, in float64."""
    return (x.double().square().sum(1) / x.shape[1] + 1) ** 3


def mmd2_of_subsets_from_features(x: Tensor, y: Tensor, x_idx: Tensor, y_idx: Tensor) -> Tensor:
    """:func:`unbiased_mmd2` of every subset pair ``(x[x_idx[s]], y[y_idx[s]])`` from the kernel's explicit
    feature map (:func:`poly_features`), all in float64: with S = Σ_{a∈S_s} φ(x_a) and T = Σ_{b∈T_s} φ(y_b),

        Σ_{a≠a'} k(x_a, x_a') = ‖S‖² − Σ_a k(x_a, x_a),   Σ_{a,b} k(x_a, y_b) = SᵀT."""
    m = x_idx.shape[1]
    wx, wy = _indicators(x_idx, len(x)), _indicators(y_idx, len(y))
    s, t = wx @ poly_features(x), wy @ poly_features(y)
    off_diag = (s.square().sum(1) - wx @ poly_self_kernel(x)) + (t.square().sum(1) - wy @ poly_self_kernel(y))
    return off_diag / (m * (m - 1)) - 2 * (s * t).sum(1) / (m * m)


def poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x, y) = (xᵀy / d + 1)³, for batches of sets ``[..., m, d]`` (in place after the product: one allocation)."""
    return (x @ y.transpose(-1, -2)).div_(x.shape[-1]).add_(1).pow_(3)


def unbiased_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3) between equal-sized sets ``[..., m, d]``:

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] − 2/m² Σ_{i,j} k(x_i, y_j)
    """
    m = x.shape[-2]
    f64 = torch.float64  # kernels in float32, sums in float64 (no float64 copy of the kernels)
    k_xx, k_yy, k_xy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    off_diag = (k_xx.sum((-1, -2), dtype=f64) - k_xx.diagonal(0, -2, -1).sum(-1, dtype=f64)) + (
        k_yy.sum((-1, -2), dtype=f64) - k_yy.diagonal(0, -2, -1).sum(-1, dtype=f64))
    return off_diag / (m * (m - 1)) - 2 * k_xy.sum((-1, -2), dtype=f64) / (m * m)


# --- 2-D mode metrics --------------------------------------------------------------------------
class ModeMetrics(Metric):
    """Modes covered and share of high-quality samples on a known Gaussian mixture (Srivastava et al. 2017).

    A sample is *high quality* when it lies within 3σ of its nearest mode; a mode is *covered* when
    it is the nearest mode of at least one high-quality sample.
    """

    full_state_update = False

    def __init__(self, centers: Tensor, std: float, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("centers", centers.float().clone())
        self.std = float(std)
        self.add_state("mode_counts", torch.zeros(len(centers), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("high_quality", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # per sample: its nearest mode, or −1 when it is not within 3σ of it (for the bootstrap)
        features_state(self, "hit")

    def update(self, points: Tensor) -> None:
        d = torch.cdist(points.float(), self.centers)
        nearest_d, nearest = d.min(1)
        good = nearest_d <= 3 * self.std
        self.mode_counts += torch.bincount(nearest[good], minlength=len(self.centers))
        self.high_quality += good.sum()
        self.total += len(points)
        self.hit.append(torch.where(good, nearest, -1))

    def resampled(self, counts: Tensor) -> dict[str, Tensor]:
        """modes covered and the high-quality share of every bootstrap resample (``counts`` ``[B, n]``)."""
        hit = self.hits
        w = counts.to(hit.device, torch.float64)
        onehot = torch.zeros(len(hit), len(self.centers), dtype=torch.float64, device=hit.device)
        good = hit >= 0
        onehot[good, hit[good]] = 1.0
        return {"modes_covered": ((w @ onehot) > 0).sum(1).double(),
                "high_quality_share": w @ good.double() / w.shape[1]}

    def compute(self) -> dict[str, float]:
        self.hits = dim_zero_cat(self.hit)  # gathered here, where torchmetrics has synchronised the states
        return {
            "modes_covered": int((self.mode_counts > 0).sum()),
            "num_modes": len(self.centers),
            "high_quality_share": float(self.high_quality) / max(int(self.total), 1),
        }


def finite_or_none(x: float | Tensor | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
