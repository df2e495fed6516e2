"""Is a candidate at most `drop` worse than the baseline on the same rows? A one-sided test.

A certificate is a promise ("within half a point"), so its test must hold its size where it is
used: at a few hundred rows, and where two networks disagree on almost none of them. A
percentile bootstrap does not: with the truth exactly on the floor it passed 12% to 32% of
candidates instead of 2.5%, and where the two networks agree on every row it gives an interval
of width zero. The tests here do:

- accuracy (rows are 0/1): Tango's score test for a paired difference of proportions (Tango,
  Stat Med 1998). The variance is taken under the null hypothesis, so rows without a single
  disagreement still leave a spread (the null says disagreements exist);
- rmse (rows are squared errors): a one-sided t test of the mean of
  e_candidate^2 - (1 + r)^2 e_baseline^2, the relative floor written as a difference;
- pr_auc (rows are (score, label) pairs): the paired bootstrap's share of resamples past the
  floor.

The interval beside the p-value is the same test inverted (95%, two-sided), so "its lower end
is above the floor" and "p < 0.025" agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from lightning_modules.metrics import metric_of_rows

__all__ = ["ALPHA", "Certificate", "noninferiority", "tango_p_value"]

# One-sided level of each test: the lower end of a two-sided 95% interval.
ALPHA = 0.025
_Z = stats.norm.ppf(1 - ALPHA)


@dataclass(frozen=True)
class Certificate:
    """One candidate against the baseline on held-out rows.

    `delta` is candidate minus baseline in the metric's units, [low, high] its 95% interval
    from the inverted test, `p_value` the one-sided p-value of "worse than the floor" (small:
    within it), `rows` how many rows it rests on, `method` the test's name.
    """

    delta: float
    low: float
    high: float
    p_value: float
    rows: int
    method: str

    def passes(self, alpha: float = ALPHA) -> bool:
        return self.p_value < alpha


def _restricted_p01(gains: int, losses: int, n: int, diff: float) -> float:
    """The maximum-likelihood share of rows only the baseline gets right (p01), given that the
    candidate's accuracy minus the baseline's is `diff` (p10 - p01 = diff)."""
    concordant = n - gains - losses
    b = gains * (1 - diff) + losses * (1 - 3 * diff) - 2 * concordant * diff
    c = losses * diff * (1 - diff)
    low, high = max(0.0, -diff), (1 - diff) / 2
    roots = np.roots([2.0 * n, -b, -c])
    real = [float(r.real) for r in roots if abs(r.imag) < 1e-12]
    inside = [min(max(r, low), high) for r in real if low - 1e-12 <= r <= high + 1e-12]
    return max(inside) if inside else low


def _tango_z(gains: int, losses: int, n: int, diff: float) -> float:
    numerator = gains - losses - n * diff
    if numerator == 0:
        return 0.0
    p01 = _restricted_p01(gains, losses, n, diff)
    variance = n * (2 * p01 + diff - diff * diff)
    if variance <= 0:
        return math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def tango_p_value(gains: int, losses: int, n: int, drop: float) -> float:
    """One-sided p-value of "the candidate's accuracy is at most the baseline's minus `drop`",
    from `gains` rows only the candidate gets right and `losses` only the baseline does."""
    return float(stats.norm.sf(_tango_z(gains, losses, n, -drop)))


def _tango(candidate: np.ndarray, baseline: np.ndarray, drop: float) -> Certificate:
    n = len(candidate)
    gains = int(np.sum(candidate > baseline))
    losses = int(np.sum(candidate < baseline))
    delta = (gains - losses) / n

    def bound(z: float) -> float:
        # Z falls as the hypothesised difference rises; the bound is where it crosses z.
        edge = 1 - 1e-9
        f = lambda d: _tango_z(gains, losses, n, d) - z  # noqa: E731
        if f(-edge) * f(edge) > 0:
            return -edge if f(-edge) < 0 else edge
        return float(optimize.brentq(f, -edge, edge, xtol=1e-10))

    p = tango_p_value(gains, losses, n, drop)
    return Certificate(delta, bound(_Z), bound(-_Z), p, n, "Tango score test")


def _squared_errors(candidate: np.ndarray, baseline: np.ndarray, drop: float) -> Certificate:
    """RMSE within (1 + drop) of the baseline's: mean(c - (1 + drop)^2 b) < 0, by a t test."""
    n = len(candidate)
    base_rmse = math.sqrt(float(np.mean(baseline)))
    delta = math.sqrt(float(np.mean(candidate))) - base_rmse

    def t_of(ratio: float) -> float:
        d = candidate - ratio**2 * baseline
        spread = float(np.std(d, ddof=1)) if n > 1 else 0.0
        mean = float(np.mean(d))
        if spread == 0:
            return -math.inf if mean < 0 else (math.inf if mean > 0 else 0.0)
        return mean / (spread / math.sqrt(n))

    p = float(stats.t.cdf(t_of(1 + drop), df=max(n - 1, 1)))
    critical = float(stats.t.ppf(1 - ALPHA, df=max(n - 1, 1)))

    def ratio_at(t: float) -> float:
        # t falls as the hypothesised ratio rises; the ratio where it crosses t.
        f = lambda r: t_of(r) - t  # noqa: E731
        low, high = 1e-6, 1e3
        if f(low) * f(high) > 0:
            return low if f(low) < 0 else high
        return float(optimize.brentq(f, low, high, xtol=1e-10))

    low = (ratio_at(critical) - 1) * base_rmse
    high = (ratio_at(-critical) - 1) * base_rmse
    return Certificate(delta, low, high, p, n, "t test on squared errors")


def _ranking(candidate: np.ndarray, baseline: np.ndarray, drop: float, seed: int) -> Certificate:
    from search.measure.uncertainty import paired_delta, paired_differences  # noqa: PLC0415

    interval = paired_delta(candidate, baseline, "pr_auc", seed=seed)
    differences = paired_differences(candidate, baseline, seed=seed)
    # A resample past the floor counts against the candidate; +1 keeps p above zero.
    p = (int(np.sum(differences <= -drop)) + 1) / (len(differences) + 1)
    return Certificate(
        interval.delta, interval.low, interval.high, p, len(candidate), "paired bootstrap"
    )


def noninferiority(
    candidate: np.ndarray, baseline: np.ndarray, metric: str, drop: float, *, seed: int = 0
) -> Certificate:
    """Whether `candidate` is at most `drop` worse than `baseline` on the same rows.

    Args:
        candidate, baseline: per-row scores of the same rows in the same order
            (`lightning_modules.evaluation.row_scores`).
        metric: "accuracy", "rmse" or "pr_auc".
        drop: the floor in `search.max_metric_drop`'s terms: absolute for accuracy and pr_auc,
            a share of the baseline's RMSE (on these rows) for rmse.
    """
    candidate = np.asarray(candidate, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    if candidate.shape != baseline.shape or len(candidate) == 0:
        raise ValueError(
            f"paired rows must be two equal, non-empty arrays, but got shapes "
            f"{candidate.shape} and {baseline.shape}."
        )
    if metric == "pr_auc":
        return _ranking(candidate, baseline, drop, seed)
    if metric == "rmse":
        return _squared_errors(candidate, baseline, drop)
    if metric != "accuracy":
        raise ValueError(f"metric must be accuracy, rmse or pr_auc, but got {metric=}.")
    certificate = _tango(candidate, baseline, drop)
    assert math.isclose(
        certificate.delta,
        float(metric_of_rows(metric, candidate) - metric_of_rows(metric, baseline)),
        abs_tol=1e-9,
    )
    return certificate
