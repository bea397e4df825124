"""Paired A/B statistics: each variant against the first, over the pairs both finished (same pair, same seed).

Pairing removes the pair-to-pair spread (some products are hard in every variant) from the comparison, so the mean
of per-pair differences, its bootstrap interval and a paired test say more than two unpaired means would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import scipy.stats

PairedTest = Literal["wilcoxon", "t"]


@dataclass(frozen=True)
class PairedDifference:
    """`variant` minus `baseline` for one metric, over `n` pairs both variants scored."""

    metric: str
    variant: str
    baseline: str
    n: int
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(diffs: np.ndarray, *, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap): no normality assumed, and defined for
    constant differences, where BCa's acceleration is not."""
    if np.all(diffs == diffs[0]):
        return float(diffs[0]), float(diffs[0])
    result = scipy.stats.bootstrap((diffs,), np.mean, confidence_level=confidence, n_resamples=resamples,
                                   method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_p_value(diffs: np.ndarray, test: PairedTest) -> float:
    """Two-sided p-value that the paired differences are centred on 0: Wilcoxon signed-rank (no normality
    assumed) or the paired t-test. All-zero differences give 1.0 (no evidence of any difference)."""
    if not np.any(diffs):
        return 1.0
    if test == "wilcoxon":
        return float(scipy.stats.wilcoxon(diffs).pvalue)
    if np.all(diffs == diffs[0]):
        return 0.0  # a constant non-zero difference: t is infinite
    return float(scipy.stats.ttest_1samp(diffs, 0.0).pvalue)


def paired_difference(metric: str, variant: str, baseline: str, values: np.ndarray, base_values: np.ndarray, *,
                      test: PairedTest = "wilcoxon", confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> PairedDifference:
    """Statistics of `values - base_values`, two arrays aligned pair by pair (NaN where a variant has no score)."""
    diffs = np.asarray(values, np.float64) - np.asarray(base_values, np.float64)
    diffs = diffs[np.isfinite(diffs)]
    n = len(diffs)
    if n == 0:
        return PairedDifference(metric, variant, baseline, 0, None, None, None, None, test)
    low = high = p = None
    if n >= 2:
        low, high = bootstrap_ci(diffs, confidence=confidence, resamples=resamples, seed=seed)
        p = paired_p_value(diffs, test)
    return PairedDifference(metric, variant, baseline, n, float(diffs.mean()), low, high, p, test)


def format_table(rows: list[PairedDifference]) -> str:
    """A short fixed-width table of the differences, for the job's log."""
    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'metric':<10} {'variant':<16} {'vs':<16} {'n':>6} {'mean diff':>10} {'95% CI':>22} {'p':>8}"]
    for r in rows:
        ci = "-" if r.ci_low is None else f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        lines.append(f"{r.metric:<10} {r.variant:<16} {r.baseline:<16} {r.n:>6} {num(r.mean_difference, '+.3f'):>10} "
                     f"{ci:>22} {num(r.p_value, '.4f'):>8}")
    return "\n".join(lines)
