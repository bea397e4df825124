"""Paired A/B statistics: mean difference, bootstrap interval, paired tests, pairs only one variant finished."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from pipeline.evaluate.ab import format_table, paired_difference


def test_mean_difference_interval_and_p_value_over_paired_values():
    rng = np.random.default_rng(0)
    base = rng.normal(80, 5, size=60)  # a large pair-to-pair spread that pairing removes
    values = base + 1.0 + rng.normal(0, 0.5, size=60)
    d = paired_difference("clip_i", "b", "a", values, base, resamples=2000, seed=1)
    diffs = values - base
    assert d.n == 60 and d.mean_difference == pytest.approx(diffs.mean())
    assert d.ci_low < diffs.mean() < d.ci_high and d.ci_low > 0.5 and d.ci_high < 1.5
    assert d.p_value == pytest.approx(scipy.stats.wilcoxon(diffs).pvalue) and d.p_value < 1e-6
    t = paired_difference("clip_i", "b", "a", values, base, test="t", resamples=2000, seed=1)
    assert t.p_value == pytest.approx(scipy.stats.ttest_rel(values, base).pvalue)
    again = paired_difference("clip_i", "b", "a", values, base, resamples=2000, seed=1)
    assert (again.ci_low, again.ci_high) == (d.ci_low, d.ci_high)


def test_only_pairs_both_variants_scored_count():
    base = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    values = np.array([2.0, np.nan, 3.0, 5.5, 6.0])
    d = paired_difference("dino_i", "b", "a", values, base, resamples=500)
    assert d.n == 3 and d.mean_difference == pytest.approx((1.0 + 1.5 + 1.0) / 3)


def test_no_difference_and_too_few_pairs():
    same = paired_difference("clip_i", "b", "a", np.ones(5), np.ones(5), resamples=500)
    assert (same.mean_difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    one = paired_difference("clip_i", "b", "a", np.array([2.0]), np.array([1.0]))
    assert (one.n, one.mean_difference, one.ci_low, one.p_value) == (1, 1.0, None, None)
    none = paired_difference("clip_i", "b", "a", np.array([np.nan]), np.array([1.0]))
    assert none.n == 0 and none.mean_difference is None
    table = format_table([same, one, none])
    assert table.splitlines()[0].split()[:3] == ["metric", "variant", "vs"] and len(table.splitlines()) == 4
