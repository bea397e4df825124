"""The paper's metrics on embeddings: CLIP-I / DINO-I per pair, Fréchet distance and KID between two sets.

Pure numpy/scipy on float arrays (one row per image): no I/O, no torch, no Ray, so each is checked against a closed
form in the tests.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg

# Below this many images the Fréchet distance's covariance is rank-deficient for 2048-d Inception features and the
# estimate is biased upwards by sample size (Chong & Forsyth, 2020): such figures carry their n and `biased: true`.
MIN_UNBIASED_IMAGES = 2048


def cosine_score(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """100 x the cosine of matching rows of `a` and `b` (N, D): CLIP-I / DINO-I as Paint-by-Example reports them."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return 100.0 * np.sum(a * b, axis=-1)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, n - 1) covariance of the rows, as pytorch-fid and dgm-eval compute them."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature rows, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2): the Fréchet distance between two Gaussians.

    A singular product (fewer images than dimensions) gets `eps` on both diagonals before the square root, as
    pytorch-fid does; the square root's imaginary part is numerical noise and dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    with warnings.catch_warnings():
        # Singular products are expected below n = dimensions; the figure then says it is biased.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_low_rank(x: np.ndarray, y: np.ndarray) -> float:
    """The Fréchet distance of the Gaussians fitted to the rows of `x` (n, d) and `y` (m, d), exact at any rank.

    With centred rows X, Y, the non-zero eigenvalues of S1 S2 are the squared singular values of X Y^T divided by
    (n - 1)(m - 1), so Tr (S1 S2)^1/2 is the nuclear norm of X Y^T over sqrt((n - 1)(m - 1)): an n x m problem instead
    of a d x d matrix square root, and no `eps` is needed where the covariances are singular (n < d).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"a covariance needs at least 2 feature rows, got {n} and {m}")
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    diff = x.mean(axis=0) - y.mean(axis=0)
    trace_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    return float(diff @ diff + (xc * xc).sum() / (n - 1) + (yc * yc).sum() / (m - 1) - 2.0 * trace_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel, (x . y / d + 1)^3 (Bińkowski et al., 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of the squared MMD with KID's kernel: the diagonals of k(x, x) and k(y, y) left out."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, *, subset_size: int = 1000, subsets: int = 100,
                              seed: int = 0) -> tuple[float, float]:
    """KID's mean and standard deviation over random subsets (without replacement within a subset), as
    torch-fidelity computes it; when both sets are no larger than `subset_size`, one estimate over all of them."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[0] <= subset_size and y.shape[0] <= subset_size:
        return mmd2_unbiased(x, y), 0.0
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(x[rng.choice(x.shape[0], size, replace=False)],
                            y[rng.choice(y.shape[0], size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


@dataclass(frozen=True)
class SetMetric:
    """A distribution metric of one set of generated images against the real set, with what it rests on."""

    name: str
    value: float | None
    n_generated: int
    n_real: int
    biased: bool  # fewer than MIN_UNBIASED_IMAGES images on either side (Fréchet distances only: KID is unbiased)
    std: float | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def frechet_metric(name: str, generated: np.ndarray, real: np.ndarray) -> SetMetric:
    """The Fréchet distance of two feature sets, `None` with a note when either has fewer than 2 rows. Below as many
    images as dimensions it is computed in the low-rank form (exact there, and far cheaper than a d x d sqrtm)."""
    n_gen, n_real = len(generated), len(real)
    biased = min(n_gen, n_real) < MIN_UNBIASED_IMAGES
    note = f"biased: fewer than {MIN_UNBIASED_IMAGES} images (n={n_gen} generated, {n_real} real)" if biased else ""
    if n_gen < 2 or n_real < 2:
        return SetMetric(name, None, n_gen, n_real, biased, note="needs at least 2 images on each side")
    if min(n_gen, n_real) < np.shape(generated)[1]:
        return SetMetric(name, frechet_distance_low_rank(generated, real), n_gen, n_real, biased, note=note)
    mu1, s1 = gaussian_stats(generated)
    mu2, s2 = gaussian_stats(real)
    return SetMetric(name, frechet_distance(mu1, s1, mu2, s2), n_gen, n_real, biased, note=note)


def kid_metric(name: str, generated: np.ndarray, real: np.ndarray, *, subset_size: int, subsets: int,
               seed: int) -> SetMetric:
    """KID of two feature sets; unbiased at any n, but noisy at small n: the n is always reported with it."""
    n_gen, n_real = len(generated), len(real)
    if n_gen < 2 or n_real < 2:
        return SetMetric(name, None, n_gen, n_real, False, note="needs at least 2 images on each side")
    mean, std = kernel_inception_distance(generated, real, subset_size=subset_size, subsets=subsets, seed=seed)
    note = f"unbiased estimator; n={n_gen} generated, {n_real} real" + (
        f" (fewer than {MIN_UNBIASED_IMAGES}: high variance)" if min(n_gen, n_real) < MIN_UNBIASED_IMAGES else "")
    return SetMetric(name, mean, n_gen, n_real, False, std=std, note=note)
