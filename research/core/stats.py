"""Statistics for a variant against its baseline over seeds: mean, sample standard deviation, a 95% confidence
interval of the mean (Student's t), and Welch's t-test (two-sided; unequal variances).

The arithmetic is written out here; only the t distribution's quantile and tail come from `scipy.stats.t`.
"""

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as scipy_stats


class Summary(NamedTuple):
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1 in the denominator); NaN for one value
    ci_low: float  # 95% (or `confidence`) confidence interval of the mean; NaN for one value
    ci_high: float


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """mean +- t_{(1+confidence)/2, n-1} * std / sqrt(n)."""
    x = np.asarray(values, np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half_width = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half_width, mean + half_width)


class WelchTest(NamedTuple):
    t: float  # (mean(b) - mean(a)) / standard error of the difference
    df: float  # Welch-Satterthwaite degrees of freedom
    p: float  # two-sided p-value


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Welch's two-sided t-test of mean(b) != mean(a): NaN when either side has fewer than 2 values or both
    have zero variance."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return WelchTest(math.nan, math.nan, math.nan)
    se2_a, se2_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = se2_a + se2_b
    if se2 == 0:
        return WelchTest(math.nan, math.nan, math.nan)
    t = float((b.mean() - a.mean()) / math.sqrt(se2))
    df = float(se2 ** 2 / (se2_a ** 2 / (len(a) - 1) + se2_b ** 2 / (len(b) - 1)))
    p = float(2 * scipy_stats.t.sf(abs(t), df))
    return WelchTest(t, df, p)
