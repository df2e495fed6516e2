"""New rows against a model's reference profile: which columns drifted, and how much it matters.

Per column, the test that fits its type (Kolmogorov-Smirnov for numeric columns, chi-squared
for categorical ones), with p-values corrected across columns (Benjamini-Hochberg), and effect
sizes that do not grow with the number of rows: the population stability index (PSI) on the
reference bins, and the Wasserstein distance in reference standard deviations (numeric) or the
Jensen-Shannon distance (categorical). With enough rows every p-value becomes significant, so
a column counts as drifted only when its PSI also passes a threshold.

A column the data-quality check found broken (`search.monitor.quality`) is not compared: its
values are mostly what the preprocessing would impute. A column whose test cannot run (no values
on one side, constant in training) says so, with no p-value, rather than p = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from search.config.choices import DRIFT_ALPHA, DRIFT_PSI_THRESHOLD
from search.monitor.estimated import Estimated
from search.monitor.multivariate import Multivariate
from search.monitor.quality import DataQuality
from search.serving import MISSING, bin_counts

__all__ = ["ColumnDrift", "DriftReport", "Realized", "compare", "psi"]

# PSI rule of thumb: below 0.1 stable, 0.1-0.25 some shift, above 0.25 a large one.
# A share never seen in the reference gets this much instead of 0, so that logs stay finite.
_EPSILON = 1e-4
# Columns the model hardly uses still count this much in the weighted score.
_IMPORTANCE_FLOOR = 0.01


def psi(reference: np.ndarray, new: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (shares or counts)."""
    p = np.clip(reference / max(reference.sum(), 1), _EPSILON, None)
    q = np.clip(new / max(new.sum(), 1), _EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str
    test: str
    statistic: float
    p_value: float
    psi: float
    distance: float
    unseen_share: float
    missing_change: float
    importance: float
    p_adjusted: float = float("nan")
    drifted: bool = False
    # Why the column was not tested (broken, no values, constant in training); None if it was.
    note: str | None = None
    broken: bool = False

    @property
    def tested(self) -> bool:
        return self.note is None

    @property
    def verdict(self) -> str:
        """What the table's last column says: yes, no, BROKEN, or - for a column not tested."""
        if self.broken:
            return "BROKEN"
        return ("yes" if self.drifted else "no") if self.tested else "-"


@dataclass(frozen=True)
class Realized:
    """The model's metric on labelled new rows, with a 95% bootstrap interval, and on
    validation when it was logged."""

    metric: str
    value: float
    low: float
    high: float
    reference: float


@dataclass
class DriftReport:
    rows: int
    psi_threshold: float
    alpha: float
    columns: list[ColumnDrift] = field(default_factory=list)
    prediction_psi: float = float("nan")
    realized: Realized | None = None
    # Columns the model never took as features, and why (from the profile).
    dropped: dict[str, str] = field(default_factory=dict)
    # What the rows were compared with, when not the model's training data (`tabslim retrain`).
    reference_note: str | None = None
    # The classifier two-sample test against the training rows stored with the model
    # (`search.monitor.multivariate`), or why it did not run.
    multivariate: Multivariate | None = None
    multivariate_note: str | None = None
    # The metric estimated on the rows without labels (`search.monitor.estimated`), or why not.
    estimated: Estimated | None = None
    estimated_note: str | None = None
    # The data-quality section (`search.monitor.quality`), printed before the table.
    quality: DataQuality | None = None
    # What `tabslim retrain`'s decision weighed and did not count (`gate.retrain_reasons`).
    decision_notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.drifted]

    @property
    def broken(self) -> list[ColumnDrift]:
        return [c for c in self.columns if c.broken]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    @property
    def score(self) -> float:
        """Importance-weighted mean PSI: drift in the columns the model relies on weighs most.

        Over the columns with a PSI: a broken or untestable column has none to weigh.
        """
        finite = [c for c in self.columns if math.isfinite(c.psi)]
        weights = np.array([max(c.importance, _IMPORTANCE_FLOOR) for c in finite])
        values = np.array([c.psi for c in finite])
        return float(np.sum(weights * values) / np.sum(weights)) if len(values) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "psi_threshold": self.psi_threshold,
            "alpha": self.alpha,
            "share_drifted": self.share_drifted,
            "score": self.score,
            "prediction_psi": self.prediction_psi,
            "realized": dataclasses.asdict(self.realized) if self.realized else None,
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "dropped_columns": self.dropped,
            "reference": self.reference_note or "the model's training data",
            "multivariate": self.multivariate.to_dict() if self.multivariate else None,
            "multivariate_note": self.multivariate_note,
            "estimated": dataclasses.asdict(self.estimated) if self.estimated else None,
            "estimated_note": self.estimated_note,
            "quality": self.quality.to_dict() if self.quality else None,
        }

    def format_table(self) -> str:
        """Worst column first: drifted ones, then by PSI."""
        lines = [
            f"{'column':<24} {'kind':<11} {'test':<5} {'p (BH)':>8} {'PSI':>7} "
            f"{'distance':>9} {'unseen':>7} {'importance':>10}  drifted"
        ]
        for c in self.columns:
            lines.append(
                f"{c.column[:24]:<24} {c.kind:<11} {c.test:<5} {_figure(c.p_adjusted, '.2g'):>8} "
                f"{_figure(c.psi, '.3f'):>7} {_figure(c.distance, '.3f'):>9} "
                f"{c.unseen_share:>7.1%} {c.importance:>10.4f}  {c.verdict}"
            )
        return "\n".join([*lines, *self.summary()])

    def summary(self) -> list[str]:
        """The lines under the table: the verdict, what was not compared, the estimated and the
        realized metric."""
        untested = [c for c in self.columns if not c.tested and not c.broken]
        tested = len(self.columns) - len(untested) - len(self.broken)
        counted = f"{tested} columns" if tested == len(self.columns) else f"{tested} tested columns"
        broken = ", ".join(c.column for c in self.broken)
        lines = [
            f"{len(self.drifted)} of {counted} drifted (PSI >= {self.psi_threshold:g} and "
            f"corrected p < {self.alpha:g})"
            + (f"; BROKEN, so neither drifted nor stable: {broken}" if broken else "")
            + f"; importance-weighted drift score {self.score:.3f}; prediction PSI "
            f"{self.prediction_psi:.3f}"
        ]
        if untested:
            lines.append("not tested: " + "; ".join(f"{c.column} ({c.note})" for c in untested))
        if self.reference_note:
            lines.append(self.reference_note)
        if self.multivariate is not None:
            lines.append(self.multivariate.describe())
        elif self.multivariate_note:
            lines.append(self.multivariate_note)
        if self.dropped:
            lines.append(f"not features, so not compared: {', '.join(self.dropped)}")
        if self.estimated is not None:
            lines.append(self.estimated.describe())
        elif self.estimated_note:
            lines.append(self.estimated_note)
        if self.realized is not None:
            r = self.realized
            lines.append(
                f"realized {r.metric} on these rows: {r.value:.4f} [{r.low:.4f}, {r.high:.4f}] "
                f"(validation when logged: {r.reference:.4f})"
            )
        return lines + self.decision_notes


def _figure(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "-"


def _untestable(training: np.ndarray, new: np.ndarray) -> str | None:
    """Why a two-sample test on these values cannot run; None when it can."""
    if not len(training):
        return "no values in training"
    if not len(new):
        return "no values in these rows"
    if len(np.unique(training)) == 1:
        return "constant in training"
    return None


def _numeric(name: str, ref: dict[str, Any], values: pd.Series, importance: float) -> ColumnDrift:
    x = pd.to_numeric(values, errors="coerce")
    present = x.dropna().to_numpy(dtype=float)
    sample = np.asarray(ref["sample"], dtype=float)
    note = _untestable(sample, present)
    if note is not None:
        return _not_tested(name, "numeric", importance, note)
    test = stats.ks_2samp(sample, present)
    statistic, p_value = float(test.statistic), float(test.pvalue)
    distance = float(stats.wasserstein_distance(sample, present)) / (ref["std"] or 1.0)
    shift = psi(np.asarray(ref["bin_counts"], float), bin_counts(present, ref["bin_edges"]))
    return ColumnDrift(
        name,
        "numeric",
        "ks",
        statistic,
        p_value,
        shift,
        distance,
        0.0,
        float(x.isna().mean()) - ref["missing_rate"],
        importance,
    )


def _categorical(
    name: str, ref: dict[str, Any], values: pd.Series, importance: float
) -> ColumnDrift:
    labels = values.astype("string").fillna(MISSING)
    counts = labels.value_counts()
    known = list(ref["frequencies"])
    unseen = float(counts[~counts.index.isin(known)].sum())
    # Unseen categories pooled into one bin: the preprocessing maps them all to one index.
    observed = np.array([float(counts.get(k, 0)) for k in known] + [unseen])
    expected_share = np.array([ref["frequencies"][k] for k in known] + [0.0])
    expected_share = np.clip(expected_share, _EPSILON, None)
    expected_share /= expected_share.sum()
    total = observed.sum()
    if total > 0:
        test = stats.chisquare(observed, expected_share * total)
        statistic, p_value = float(test.statistic), float(test.pvalue)
        distance = float(jensenshannon(expected_share, observed / total, base=2))
    else:
        statistic, p_value, distance = float("nan"), 1.0, float("nan")
    return ColumnDrift(
        name,
        "categorical",
        "chi2",
        statistic,
        p_value,
        psi(expected_share, observed),
        distance,
        unseen / total if total else 0.0,
        float(values.isna().mean()) - ref["missing_rate"],
        importance,
    )


def distribution_psi(reference: dict[str, Any], values: pd.Series) -> float:
    """PSI of a profiled distribution (numeric bins or categories) against new values."""
    if reference["type"] == "numeric":
        x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
        edges = reference["bin_edges"]
        return psi(np.asarray(reference["bin_counts"], float), bin_counts(x, edges))
    return _categorical("", reference, values, 0.0).psi


def compare(
    profile: dict[str, Any],
    frame: pd.DataFrame,
    *,
    predictions: pd.Series | None = None,
    realized: Realized | None = None,
    psi_threshold: float = DRIFT_PSI_THRESHOLD,
    alpha: float = DRIFT_ALPHA,
    quality: DataQuality | None = None,
) -> DriftReport:
    """The drift of `frame`'s columns against `profile`, worst column first.

    Args:
        quality: the data-quality check of the same rows; its broken columns are not compared.
    """
    importance = profile.get("importance", {})
    broken = {c.column: c.problem for c in quality.broken} if quality else {}
    found = []
    for name, ref in profile["columns"].items():
        weight = float(importance.get(name, 0.0))
        if name in broken:
            found.append(_not_tested(name, ref["type"], weight, f"broken: {broken[name]}", True))
        elif ref["type"] == "numeric":
            found.append(_numeric(name, ref, frame[name], weight))
        elif len(ref["frequencies"]) == 1:
            found.append(_not_tested(name, "categorical", weight, "constant in training"))
        else:
            found.append(_categorical(name, ref, frame[name], weight))
    columns = _corrected(found, psi_threshold, alpha)
    # Drifted first, then broken, then by PSI; the untested last.
    columns.sort(
        key=lambda c: (not c.drifted, not c.broken, -c.psi if math.isfinite(c.psi) else math.inf)
    )
    report = DriftReport(
        len(frame),
        psi_threshold,
        alpha,
        columns,
        realized=realized,
        dropped=dict(profile.get("dropped_columns", {})),
    )
    report.quality = quality
    if predictions is not None:
        report.prediction_psi = distribution_psi(profile["prediction_distribution"], predictions)
    return report


def _not_tested(
    name: str, kind: str, importance: float, note: str, broken: bool = False
) -> ColumnDrift:
    """A column without a test: no statistic, p-value or PSI, and `note` saying why."""
    nan = float("nan")
    return ColumnDrift(
        name, kind, "-", nan, nan, nan, nan, 0.0, nan, importance, note=note, broken=broken
    )


def _corrected(found: list[ColumnDrift], psi_threshold: float, alpha: float) -> list[ColumnDrift]:
    """Benjamini-Hochberg over the columns that were tested, and the rule the report states:
    drifted when the corrected p is below `alpha` and the PSI at least `psi_threshold`."""
    tested = [c for c in found if c.tested]
    adjusted = iter(
        stats.false_discovery_control([c.p_value for c in tested], method="bh") if tested else []
    )
    columns = []
    for c in found:
        if not c.tested:
            columns.append(c)
            continue
        p = float(next(adjusted))
        columns.append(
            dataclasses.replace(c, p_adjusted=p, drifted=bool(p < alpha and c.psi >= psi_threshold))
        )
    return columns
