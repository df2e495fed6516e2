"""Certification: the champion's interval on rows that no decision touched, with the
family-wise error held across every candidate tested.

The candidates (`search.front.champion.candidates`: every finished trial and INT8 copy smaller
than the baseline that could hold the floor) are put in a **fixed sequence** before any
certification row is read (`certification_chain`), from what the validation rows and the
number of certification rows predict. Each is tested at the full one-sided 2.5% level, and the
first that fails ends the walk (a fixed-sequence procedure, which holds the family-wise error
at 2.5% whatever the order, since the order is set in advance). The champion is the last
candidate that passed, the smallest tested. So the order decides what can be found:

- a candidate larger than one already passed can only end the walk, so the chain shrinks
  at every step;
- a small candidate that sits on the floor, likely to fail, goes last or not at all: failing
  at the end costs nothing, failing in the middle ends the walk before the likely passers.

The chain minimises the expected log size of the champion under the projected chances
(`search.study.power.chance_to_certify`), by dynamic programming over the champion's order.

An INT8 copy is tested with its source: it passes when both its own rows and its source's
pass (an intersection-union test, level 2.5% as well).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from search.front.pareto import SIZE
from search.measure import ALPHA, Certificate, noninferiority
from search.study import StudySettings, attributes, chance_to_certify

__all__ = [
    "HOLDOUT_COLUMNS",
    "Link",
    "certification_chain",
    "chance_of",
    "holdout_entries",
    "judge_chain",
    "study_source",
]


@dataclass(frozen=True)
class Link:
    """One candidate of the chain and its projected chance to pass."""

    trial: FrozenTrial
    chance: float


def certification_chain(
    ordered: Sequence[FrozenTrial],
    baseline_size: float,
    chance: Callable[[FrozenTrial], float],
    limit: int | None = None,
) -> list[Link]:
    """The fixed sequence to test, least preferred first, chosen before any certification row
    is read.

    `ordered` is the candidates in the champion's order (smallest first, then faster: an INT8
    copy of the same parameters comes before its source); `chance(trial)` its projected chance
    to pass. Among every chain that moves strictly forward in that order (each test could give
    a better champion), the one whose expected log size of the champion (the last candidate
    passed, or the baseline) is smallest; at most `limit` long.
    """
    if not ordered:
        return []
    by_size = list(reversed(ordered))
    n = len(by_size)
    # Log size, and a thousandth for the place in the order: at equal size the faster wins.
    sizes = [
        math.log(max(t.values[SIZE], 1e-12)) + 1e-3 * (n - i) / n for i, t in enumerate(by_size)
    ]
    base_size = math.log(max(baseline_size, 1e-12)) + 1e-3
    chances = [min(max(chance(t), 0.0), 1.0) for t in by_size]
    steps = limit if limit is not None else n
    # best[k][i]: the expected log size when candidate i has just passed and k more tests are
    # allowed; nxt[k][i] the candidate tested next (-1: stop).
    best = [list(sizes)]
    nxt = [[-1] * n]
    for k in range(1, steps + 1):
        row, choice = [], []
        for i in range(n):
            value, pick = sizes[i], -1
            for j in range(i + 1, n):
                v = chances[j] * best[k - 1][j] + (1 - chances[j]) * sizes[i]
                if v < value - 1e-12:
                    value, pick = v, j
            row.append(value)
            choice.append(pick)
        best.append(row)
        nxt.append(choice)
    # From the baseline: the first test is any candidate.
    start_value, start = base_size, -1
    for j in range(n):
        v = chances[j] * best[steps - 1][j] + (1 - chances[j]) * base_size
        if v < start_value - 1e-12:
            start_value, start = v, j
    chain, k, i = [], steps - 1, start
    while i != -1 and k >= 0:
        chain.append(Link(by_size[i], chances[i]))
        i, k = nxt[k][i], k - 1
    return chain


def judge_chain(
    chain: Sequence[Link],
    rows_of: Callable[[FrozenTrial], np.ndarray],
    baseline_rows: np.ndarray,
    settings: StudySettings,
    source_of: Callable[[FrozenTrial], FrozenTrial | None],
    seed: int = 0,
    stop_at_failure: bool = True,
) -> dict[int, tuple[Certificate, bool, str]]:
    """Test the chain in order, up to its first failure: trial number -> (its certificate,
    passed, why not). Candidates after the failure are not tested and not in the result.

    The floor is `max_metric_drop` on these rows: absolute for accuracy and PR AUC, a share
    of the baseline's RMSE on these very rows for regression."""
    verdicts: dict[int, tuple[Certificate, bool, str]] = {}
    drop = settings.max_metric_drop
    for link in chain:
        trial = link.trial
        certificate = noninferiority(
            rows_of(trial), baseline_rows, settings.metric, drop, seed=seed
        )
        passed, reason = certificate.passes(ALPHA), ""
        source = source_of(trial)
        if passed and source is not None:
            held = noninferiority(rows_of(source), baseline_rows, settings.metric, drop, seed=seed)
            if not held.passes(ALPHA):
                passed, reason = False, f"its source, trial {source.number}, does not hold"
        if not passed and not reason:
            reason = f"p = {certificate.p_value:.2g}, not below {ALPHA}"
        verdicts[trial.number] = (certificate, passed, reason)
        if not passed and stop_at_failure:
            break
    return verdicts


# One row per candidate of the chain in certification.csv.
HOLDOUT_COLUMNS = [
    "position",
    "trial",
    "approach",
    "precision",
    "widths",
    "chance",
    "certify_delta",
    "certify_ci_low",
    "certify_ci_high",
    "p_value",
    "rows",
    "passed",
    "reason",
]


def holdout_entries(
    chain: Sequence[Link], verdicts: dict[int, tuple[Certificate, bool, str]]
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """The verdicts as the study stores them (what `search.front.champion` reads: the same
    keys as an out-of-fold verdict) and the chain as a table, untested links included."""
    summary: dict[str, dict[str, Any]] = {}
    rows = []
    for position, link in enumerate(chain, start=1):
        trial = link.trial
        judged = verdicts.get(trial.number)
        row: dict[str, Any] = {
            "position": position,
            "trial": trial.number,
            "approach": attributes.approach(trial),
            "precision": attributes.precision_label(trial),
            "widths": attributes.widths_text(trial),
            "chance": link.chance,
        }
        if judged is None:
            rows.append(row | {"reason": "not tested: the sequence ended before it"})
            continue
        certificate, passed, reason = judged
        summary[str(trial.number)] = {
            "by": "holdout",
            "runs": 1,
            "val_delta_mean": certificate.delta,
            "cv_delta_ci_low": certificate.low,
            "cv_delta_ci_high": certificate.high,
            "cv_rows": certificate.rows,
            "p_value": certificate.p_value,
            "position": position,
            "passed": passed,
            "reason": "" if passed else reason,
        }
        rows.append(
            row
            | {
                "certify_delta": certificate.delta,
                "certify_ci_low": certificate.low,
                "certify_ci_high": certificate.high,
                "p_value": certificate.p_value,
                "rows": certificate.rows,
                "passed": passed,
                "reason": "" if passed else reason,
            }
        )
    return summary, pd.DataFrame(rows, columns=HOLDOUT_COLUMNS)


def study_source(study: optuna.Study) -> Callable[[FrozenTrial], FrozenTrial | None]:
    """An INT8 copy's fp32 source trial; None for an fp32 trial."""

    def source_of(trial: FrozenTrial) -> FrozenTrial | None:
        number = attributes.variant_of(trial)
        return None if number is None else study.trials[int(number)]

    return source_of


def chance_of(
    settings: StudySettings, val_rows: int, certify_rows: int, study: optuna.Study
) -> Callable[[FrozenTrial], float]:
    """A candidate's projected chance to pass; a copy's is at most its source's."""
    source_of = study_source(study)

    def chance(trial: FrozenTrial) -> float:
        own = chance_to_certify(trial, settings, val_rows, certify_rows)
        source = source_of(trial)
        if source is None:
            return own
        return min(own, chance_to_certify(source, settings, val_rows, certify_rows))

    return chance
