"""Fréchet distance and KID against closed forms and direct computations; CLIP-I's cosine by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.evaluate.metrics import (
    MIN_UNBIASED_IMAGES,
    cosine_score,
    frechet_distance,
    frechet_distance_low_rank,
    frechet_metric,
    gaussian_stats,
    kernel_inception_distance,
    kid_metric,
    mmd2_unbiased,
)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root by eigendecomposition: a different computation from scipy's sqrtm of a product."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _closed_form(mu1, s1, mu2, s2) -> float:
    """W2^2 between Gaussians: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)."""
    r = _psd_sqrt(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _psd_sqrt(r @ s2 @ r)))


def test_frechet_distance_of_1d_gaussians_is_mean_and_sigma_differences_squared():
    # N(1, 2^2) vs N(4, 5^2): (1 - 4)^2 + (2 - 5)^2 = 18
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([4.0]), np.array([[25.0]])) == \
        pytest.approx(18.0)


def test_frechet_distance_of_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # 5 + (1 + 1 + 4)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    assert expected == pytest.approx(11.0)


def test_frechet_distance_of_full_non_commuting_covariances_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_metric_of_samples_approaches_the_gaussians_distance():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    s1, s2 = np.diag([1.0, 2.0, 0.5]), np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 2.0]])
    x = rng.multivariate_normal(mu1, s1, size=40_000)
    y = rng.multivariate_normal(mu2, s2, size=40_000)
    metric = frechet_metric("fd", x, y)
    assert metric.value == pytest.approx(_closed_form(mu1, s1, mu2, s2), abs=0.05)
    assert metric.n_generated == metric.n_real == 40_000 and not metric.biased and metric.note == ""


def test_small_sets_are_reported_with_their_n_and_marked_biased():
    rng = np.random.default_rng(2)
    metric = frechet_metric("fd_dinov2", rng.normal(size=(10, 4)), rng.normal(size=(7, 4)))
    assert metric.biased and (metric.n_generated, metric.n_real) == (10, 7)
    assert str(MIN_UNBIASED_IMAGES) in metric.note and "n=10" in metric.note
    assert frechet_metric("fd", rng.normal(size=(1, 4)), rng.normal(size=(7, 4))).value is None


def _kid_by_loops(x: np.ndarray, y: np.ndarray) -> float:
    """KID's unbiased MMD^2, term by term: mean over i != j of k(x_i, x_j) and k(y_i, y_j), minus twice k(x, y)."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_unbiased_estimator_equals_the_direct_computation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.2, size=(6, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_kid_by_loops(x, y), rel=1e-12)
    mean, std = kernel_inception_distance(x, y, subset_size=1000)
    assert (mean, std) == (pytest.approx(_kid_by_loops(x, y), rel=1e-12), 0.0)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    same = [mmd2_unbiased(rng.normal(size=(20, 8)), rng.normal(size=(20, 8))) for _ in range(400)]
    # An unbiased estimator of 0 averages to 0 within its standard error (a biased one, V-statistic, would not).
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert min(same) < 0 < max(same)
    shifted = mmd2_unbiased(rng.normal(size=(200, 8)), rng.normal(1.0, 1.0, size=(200, 8)))
    assert shifted > 10 * np.std(same)


def test_kid_over_subsets_is_close_to_kid_over_everything():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(600, 6)), rng.normal(0.3, 1.0, size=(500, 6))
    mean, std = kernel_inception_distance(x, y, subset_size=200, subsets=50, seed=0)
    assert std > 0
    assert mean == pytest.approx(mmd2_unbiased(x, y), abs=3 * std / np.sqrt(50) + 1e-3)
    metric = kid_metric("kid", x, y, subset_size=200, subsets=50, seed=0)
    assert (metric.value, metric.std, metric.biased) == (mean, std, False)
    assert "n=600" in metric.note


def test_cosine_score_is_100_times_the_cosine():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine_score(a, b), [0.0, 100.0, -100.0], atol=1e-12)


def test_the_low_rank_frechet_distance_equals_the_closed_form_below_as_many_images_as_dimensions():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 40)), rng.normal(1.0, 2.0, size=(6, 40))
    mu1, s1 = gaussian_stats(x)
    mu2, s2 = gaussian_stats(y)
    assert np.linalg.matrix_rank(s1) == 8  # singular: n - 1 < d
    # The closed form takes square roots of the ~1e-15 eigenvalues of the singular product: good to ~1e-8 only.
    expected = _closed_form(mu1, s1, mu2, s2)
    assert frechet_distance_low_rank(x, y) == pytest.approx(expected, rel=1e-7)
    metric = frechet_metric("fid", x, y)  # the route frechet_metric takes at n < d
    assert metric.value == pytest.approx(expected, rel=1e-7) and metric.biased
    assert frechet_distance_low_rank(x, x) == pytest.approx(0.0, abs=1e-9)
    # Above d images both routes are exact: the low-rank form agrees with the d x d square root.
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) @ rng.normal(size=(5, 5))
    assert frechet_distance_low_rank(a, b) == pytest.approx(frechet_distance(*gaussian_stats(a), *gaussian_stats(b)),
                                                            rel=1e-9)
